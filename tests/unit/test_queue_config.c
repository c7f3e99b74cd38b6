#include <stdio.h>
#include <string.h>

#include "check_main.h"
#include "queue/queue_config.h"

START_TEST(parses_the_shipped_definition)
{
    struct queue_config qc;
    struct error err;

    ck_assert_msg(queue_config_load(SOURCE_DIR "/deploy/queue.json", &qc, &err) == ST_OK, "%s",
                  err.message);
    ck_assert_str_eq(qc.name, "batch-processing-queue");
    ck_assert_double_eq(qc.max_dispatches_per_second, 60);
    ck_assert_int_eq(qc.max_concurrent_dispatches, 100);
    ck_assert_int_eq(qc.retry.max_attempts, 5);
    ck_assert_double_eq(qc.retry.max_retry_duration, 3600);
    ck_assert_double_eq(qc.retry.min_backoff, 10);
    ck_assert_double_eq(qc.retry.max_backoff, 300);
    ck_assert_int_eq(qc.retry.max_doublings, 4);
    ck_assert_double_eq(qc.dispatch_deadline_s, 600);
}
END_TEST

START_TEST(defaults_fill_gaps)
{
    struct queue_config qc;
    struct error err;

    ck_assert_int_eq(queue_config_parse("{}", 2, &qc, &err), ST_OK);
    ck_assert_int_eq(qc.retry.max_attempts, 100);
    ck_assert_double_eq(qc.retry.min_backoff, 0.1);
    ck_assert_int_eq(qc.max_concurrent_dispatches, 1000);
}
END_TEST

static const struct {
    const char *text;
    const char *message;
} bad[] = {
    {"{\"retryConfig\":{\"minBackoff\":\"10\"}}", "must be a duration"},
    {"{\"retryConfig\":{\"minBackoff\":\"10s\",\"maxBackoff\":\"1s\"}}", "below"},
    {"{\"retryConfig\":{\"maxAttempts\":0}}", "cannot be 0"},
    {"{\"rateLimits\":{\"maxDispatchesPerSecond\":501}}", "maxDispatchesPerSecond"},
    {"{\"rateLimits\":{\"maxConcurrentDispatches\":0}}", "maxConcurrentDispatches"},
    {"{\"dispatchDeadline\":\"5s\"}", "dispatchDeadline"},
    {"[", "malformed json"},
};

START_TEST(rejects)
{
    struct queue_config qc;
    struct error err;

    ck_assert_int_eq(queue_config_parse(bad[_i].text, strlen(bad[_i].text), &qc, &err), ST_INVALID);
    ck_assert_msg(strstr(err.message, bad[_i].message) != NULL, "%s", err.message);
}
END_TEST

START_TEST(durations)
{
    double d;

    ck_assert(duration_parse("0.100s", &d));
    ck_assert_double_eq(d, 0.1);
    ck_assert(duration_parse("600s", &d));
    ck_assert(!duration_parse("600", &d));
    ck_assert(!duration_parse("s", &d));
    ck_assert(!duration_parse("-1s", &d));
}
END_TEST

START_TEST(durations_format)
{
    static const struct {
        double s;
        const char *text;
    } cases[] = {{600, "600s"}, {15, "15s"},         {1800, "1800s"}, {15.5, "15.5s"},
                 {0.1, "0.1s"}, {15.125, "15.125s"}, {0, "0s"}};
    char out[32];
    double back;
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        duration_format(cases[i].s, out, sizeof(out));
        ck_assert_str_eq(out, cases[i].text);
        ck_assert(duration_parse(out, &back));
        ck_assert_double_eq_tol(back, cases[i].s, 1e-9);
    }
}
END_TEST

/* The other deploy/ definitions are at least valid JSON of the expected shape. */
START_TEST(deploy_files_parse)
{
    static const char *const files[] = {"/deploy/monitoring/alerts.json",
                                        "/deploy/monitoring/dashboard.json",
                                        "/deploy/firestore.indexes.json"};
    json_error_t jerr;
    size_t i;

    for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[1024];
        json_t *v;

        snprintf(path, sizeof(path), "%s%s", SOURCE_DIR, files[i]);
        v = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
        ck_assert_msg(v != NULL, "%s: %s", path, jerr.text);
        ck_assert(json_is_array(v) || json_is_object(v));
        json_decref(v);
    }
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("queue_config");
    TCase *tc = tcase_create("config");

    tcase_add_test(tc, parses_the_shipped_definition);
    tcase_add_test(tc, defaults_fill_gaps);
    tcase_add_loop_test(tc, rejects, 0, sizeof(bad) / sizeof(bad[0]));
    tcase_add_test(tc, durations);
    tcase_add_test(tc, deploy_files_parse);
    tcase_add_test(tc, durations_format);
    suite_add_tcase(s, tc);
    return s;
}
