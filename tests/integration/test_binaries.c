/*
 * The binaries as processes: --help prints the configuration table, a bad
 * setting exits non-zero naming the variable, /healthz /readyz /metrics
 * answer, and SIGTERM exits 0.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "core/json.h"
#include "harness.h"

/* Runs bin with one extra environment variable and captures stderr+stdout. */
static int run_capture(const char *bin, const char *arg, const char *env, char *out, size_t cap)
{
    char cmd[1024];
    FILE *p;
    size_t n;
    int status;

    snprintf(cmd, sizeof(cmd), "env %s %s %s 2>&1", env ? env : "", bin, arg ? arg : "");
    p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static const struct {
    const char *env;
    const char *message;
} bad_config[] = {
    {"PORT=abc", "invalid PORT=\"abc\": must be an integer in [1, 65535]"},
    {"PORT=70000", "invalid PORT=\"70000\""},
    {"BACKEND=aws", "invalid BACKEND=\"aws\": must be one of local|gcp"},
    {"MAX_BODY_BYTES=12", "invalid MAX_BODY_BYTES=\"12\""},
    {"ALLOW_INSECURE_URLS=perhaps",
     "invalid ALLOW_INSECURE_URLS=\"perhaps\": must be true or false"},
    {"QUEUE_CONFIG=/nonexistent/queue.json",
     "cannot open queue definition /nonexistent/queue.json"},
};

START_TEST(bad_configuration_exits_with_a_clear_message)
{
    const char *bins[] = {CREATOR_BIN, WORKER_BIN};
    char out[4096];
    int b;

    for (b = 0; b < 2; b++) {
        char env[512];

        snprintf(env, sizeof(env), "DATA_DIR=/tmp/batchd-badcfg PORT=18999 %s", bad_config[_i].env);
        int code = run_capture(bins[b], NULL, env, out, sizeof(out));

        ck_assert_msg(code != 0, "%s accepted %s", bins[b], bad_config[_i].env);
        ck_assert_msg(strstr(out, bad_config[_i].message) != NULL, "%s with %s said: %s", bins[b],
                      bad_config[_i].env, out);
    }
}
END_TEST

START_TEST(help_lists_the_variables)
{
    char out[32768];

    ck_assert_int_eq(run_capture(CREATOR_BIN, "--help", NULL, out, sizeof(out)), 0);
    ck_assert(strstr(out, "PORT") && strstr(out, "MAX_IMAGES_PER_BATCH") && strstr(out, "BACKEND"));
    ck_assert_int_eq(run_capture(WORKER_BIN, "--help", NULL, out, sizeof(out)), 0);
    ck_assert(strstr(out, "GEMINI_API_KEY") && strstr(out, "ITEM_LEASE_S"));
    ck_assert(strstr(out, "MAX_IMAGES_PER_BATCH") == NULL); /* creator-only */
    ck_assert_int_ne(run_capture(CREATOR_BIN, "--bogus", NULL, out, sizeof(out)), 0);
}
END_TEST

START_TEST(health_ready_metrics_and_sigterm)
{
    struct stack s;
    const char *urls[] = {"/healthz", "/readyz", "/metrics"};
    char url[128];
    long status;
    size_t i;
    int w;

    stack_start(&s, NULL);
    for (i = 0; i < 3; i++) {
        json_t *j;

        snprintf(url, sizeof(url), "%s%s", s.creator_url, urls[i]);
        j = http_json_call(&s, "GET", url, NULL, NULL, &status);
        ck_assert_msg(status == 200, "%s answered %ld", url, status);
        json_decref(j);
        snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s.worker_port, urls[i]);
        j = http_json_call(&s, "GET", url, NULL, NULL, &status);
        ck_assert_msg(status == 200, "%s answered %ld", url, status);
        json_decref(j);
    }
    {
        size_t len;
        char *text;

        snprintf(url, sizeof(url), "%s/metrics", s.creator_url);
        text = http_get_bytes(&s, url, &len, &status);
        ck_assert_int_eq(status, 200);
        ck_assert_msg(strstr(text, "http_requests_total{route=\"/healthz\",method=\"GET\","
                                   "status=\"200\"} ") != NULL,
                      "no http_requests_total for /healthz in %.300s", text);
        free(text);
    }
    snprintf(url, sizeof(url), "%s/nope", s.creator_url);
    json_decref(http_json_call(&s, "GET", url, NULL, NULL, &status));
    ck_assert_int_eq(status, 404);
    w = proc_kill(&s.creator, SIGTERM);
    ck_assert(WIFEXITED(w) && WEXITSTATUS(w) == 0);
    ck_assert_int_ge(log_count(&s.creator, "creator stopped"), 1);
    stack_stop(&s);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("binaries");
    TCase *tc = tcase_create("binaries");

    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, bad_configuration_exits_with_a_clear_message, 0,
                        sizeof(bad_config) / sizeof(bad_config[0]));
    tcase_add_test(tc, help_lists_the_variables);
    tcase_add_test(tc, health_ready_metrics_and_sigterm);
    suite_add_tcase(s, tc);
    return s;
}
