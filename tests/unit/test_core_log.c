#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "core/json.h"
#include "core/log.h"

/* Captures log output in a temporary file and returns its lines parsed. */
static FILE *capture;

static void capture_start(const char *project)
{
    capture = tmpfile();
    ck_assert_ptr_nonnull(capture);
    log_init("svc", project, LOG_DEBUG, fileno(capture));
}

static json_t *capture_lines(void)
{
    json_t *lines = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;

    fflush(capture);
    rewind(capture);
    while ((n = getline(&line, &cap, capture)) > 0) {
        json_t *v = json_parse(line, (size_t)n, NULL);

        ck_assert_msg(v != NULL, "not json: %s", line);
        json_array_append_new(lines, v);
    }
    free(line);
    fclose(capture);
    log_init("svc", NULL, LOG_INFO, 1);
    return lines;
}

START_TEST(fields_and_trace)
{
    struct trace_ctx t;
    json_t *lines, *l;

    capture_start("proj-1");
    ck_assert(trace_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL, &t));
    log_context_set_trace(&t);
    log_context_add_str("batchId", "b_1");
    log_write(LOG_WARNING, json_pack("{s:s}", "itemId", "i_7"), "cannot fetch %s", "x");
    log_context_clear();
    log_debug("plain");
    lines = capture_lines();
    ck_assert_uint_eq(json_array_size(lines), 2);
    l = json_array_get(lines, 0);
    ck_assert_str_eq(json_str_or(l, "severity", ""), "WARNING");
    ck_assert_str_eq(json_str_or(l, "message", ""), "cannot fetch x");
    ck_assert_str_eq(json_str_or(l, "batchId", ""), "b_1");
    ck_assert_str_eq(json_str_or(l, "itemId", ""), "i_7");
    ck_assert_str_eq(json_str_or(l, "service", ""), "svc");
    ck_assert_str_eq(json_str_or(l, "logging.googleapis.com/trace", ""),
                     "projects/proj-1/traces/4bf92f3577b34da6a3ce929d0e0e4736");
    ck_assert_str_eq(json_str_or(l, "logging.googleapis.com/spanId", ""), "00f067aa0ba902b7");
    ck_assert(json_is_true(json_object_get(l, "logging.googleapis.com/trace_sampled")));
    ck_assert(json_str_or(l, "time", NULL) != NULL);
    l = json_array_get(lines, 1);
    ck_assert_ptr_null(json_object_get(l, "batchId"));
    ck_assert_ptr_null(json_object_get(l, "logging.googleapis.com/trace"));
    json_decref(lines);
}
END_TEST

START_TEST(min_severity)
{
    json_t *lines;

    capture = tmpfile();
    log_init("svc", NULL, LOG_WARNING, fileno(capture));
    ck_assert(!log_enabled(LOG_INFO));
    log_info("dropped");
    log_error("kept");
    lines = capture_lines();
    ck_assert_uint_eq(json_array_size(lines), 1);
    ck_assert_str_eq(json_str_or(json_array_get(lines, 0), "message", ""), "kept");
    json_decref(lines);
}
END_TEST

static void *writer(void *arg)
{
    int i;

    for (i = 0; i < 200; i++)
        log_write(LOG_INFO,
                  json_pack("{s:i, s:s}", "thread", (int)(intptr_t)arg, "pad",
                            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
                  "line %d", i);
    return NULL;
}

START_TEST(threads_do_not_interleave)
{
    pthread_t th[8];
    json_t *lines;
    intptr_t i;

    capture_start(NULL);
    for (i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, writer, (void *)i);
    for (i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    lines = capture_lines(); /* every line parsed as JSON, or the test failed */
    ck_assert_uint_eq(json_array_size(lines), 1600);
    json_decref(lines);
}
END_TEST

static const struct {
    const char *traceparent, *cloud;
    bool ok;
    const char *trace, *span;
    bool sampled;
} traces[] = {
    {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL, true,
     "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", true},
    {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-00", NULL, true,
     "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", false},
    {NULL, "105445aa7843bc8bf206b12000100000/1;o=1", true, "105445aa7843bc8bf206b12000100000",
     "0000000000000001", true},
    {NULL, "105445aa7843bc8bf206b12000100000/18446744073709551615;o=0", true,
     "105445aa7843bc8bf206b12000100000", "ffffffffffffffff", false},
    {NULL, "105445aa7843bc8bf206b12000100000", true, "105445aa7843bc8bf206b12000100000", "", false},
    {"garbage", "105445aa7843bc8bf206b12000100000/7", true, "105445aa7843bc8bf206b12000100000",
     "0000000000000007", false},
    {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", NULL, false, "", "", false},
    {"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", NULL, false, "", "", false},
    {NULL, "xyz/1", false, "", "", false},
    {NULL, NULL, false, "", "", false},
};

START_TEST(trace_headers)
{
    struct trace_ctx t;

    ck_assert_int_eq(trace_parse(traces[_i].traceparent, traces[_i].cloud, &t), traces[_i].ok);
    ck_assert_str_eq(t.trace_id, traces[_i].trace);
    ck_assert_str_eq(t.span_id, traces[_i].span);
    ck_assert_int_eq(t.sampled, traces[_i].sampled);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("core_log");
    TCase *tc = tcase_create("log");

    tcase_add_test(tc, fields_and_trace);
    tcase_add_test(tc, min_severity);
    tcase_add_test(tc, threads_do_not_interleave);
    tcase_add_loop_test(tc, trace_headers, 0, sizeof(traces) / sizeof(traces[0]));
    suite_add_tcase(s, tc);
    return s;
}
