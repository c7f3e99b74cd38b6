/*
 * Recovery: the worker killed with SIGKILL in the middle of a batch and
 * restarted finishes the batch with no item counted twice and none lost;
 * manual retry re-drives failed items once the provider recovers; SIGTERM
 * with a slow push in flight lets it finish and exits 0.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "check_main.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "harness.h"

static const char *const slow_queue =
    "{\"name\":\"q\",\"rateLimits\":{\"maxDispatchesPerSecond\":200,"
    "\"maxConcurrentDispatches\":8},\"retryConfig\":{\"maxAttempts\":20,"
    "\"minBackoff\":\"0.2s\",\"maxBackoff\":\"2s\",\"maxDoublings\":3},"
    "\"dispatchDeadline\":\"15s\"}";

START_TEST(worker_killed_mid_batch)
{
    static const char *const sim[] = {"SIM_LATENCY_MS=400", NULL};
    static const char *const worker[] = {"ITEM_LEASE_S=4", NULL};
    struct stack_opts o = {.queue_json = slow_queue, .sim_env = sim, .worker_env = worker};
    struct stack s;
    long status;
    char id[128];
    json_t *doc = NULL;
    int64_t deadline;

    stack_start(&s, &o);
    strncpy(id, create_demo_batch(&s, 60, NULL, &status), sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    ck_assert_int_eq(status, 201);
    /* Kill the worker once some items are done and others are in flight. */
    deadline = time_mono_ms() + 60000;
    for (;;) {
        char url[256];

        snprintf(url, sizeof(url), "%s/api/batch/status/%s", s.creator_url, id);
        json_decref(doc);
        doc = http_json_call(&s, "GET", url, NULL, NULL, &status);
        if (jint(doc, "processedImages") >= 10)
            break;
        ck_assert(time_mono_ms() < deadline);
        time_sleep_ms(50);
    }
    json_decref(doc);
    proc_kill(&s.worker, SIGKILL);
    ck_assert_int_lt(db_count(&s, "SELECT SUM(processed) FROM shards"), 60);
    stack_start_worker(&s);
    doc = wait_batch(&s, id, 240);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed");
    ck_assert_int_eq(jint(doc, "processedImages"), 60);
    ck_assert_int_eq(jint(doc, "successCount"), 60);
    ck_assert_int_eq(db_count(&s, "SELECT SUM(processed) FROM shards"), 60);
    ck_assert_int_eq(db_count(&s, "SELECT COUNT(*) FROM items WHERE status='completed'"), 60);
    assert_results_are_images(&s, doc);
    json_decref(doc);
    stack_stop(&s);
}
END_TEST

START_TEST(manual_retry_after_recovery)
{
    static const char *const queue =
        "{\"name\":\"q\",\"rateLimits\":{\"maxDispatchesPerSecond\":200,"
        "\"maxConcurrentDispatches\":10},\"retryConfig\":{\"maxAttempts\":3,"
        "\"minBackoff\":\"0.1s\",\"maxBackoff\":\"0.2s\",\"maxDoublings\":1},"
        "\"dispatchDeadline\":\"15s\"}";
    /* The failing provider opens its circuit; it must be able to close once it recovers. */
    static const char *const worker[] = {"BREAKER_OPEN_MS=300", NULL};
    struct stack_opts o = {.queue_json = queue, .worker_env = worker};
    struct stack s;
    long status;
    char id[128], url[256];
    json_t *doc, *res;

    stack_start(&s, &o);
    sim_control(&s, "{\"failRate\": 1.0}");
    strncpy(id, create_demo_batch(&s, 12, NULL, &status), sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    ck_assert_int_eq(status, 201);
    doc = wait_batch(&s, id, 120);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed_with_failures");
    ck_assert_int_eq(jint(doc, "failureCount"), 12);
    json_decref(doc);

    sim_control(&s, "{\"failRate\": 0.0}");
    time_sleep_ms(400); /* past the breaker's open period */
    snprintf(url, sizeof(url), "%s/api/batch/%s/retry", s.creator_url, id);
    res = http_json_call(&s, "POST", url, NULL, NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_int_eq(jint(res, "retriedImages"), 12);
    ck_assert_int_eq(jint(res, "generation"), 2);
    json_decref(res);
    doc = wait_batch(&s, id, 120);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed");
    ck_assert_int_eq(jint(doc, "successCount"), 12);
    ck_assert_int_eq(jint(doc, "failureCount"), 0);
    ck_assert_int_eq(jint(doc, "processedImages"), 12);
    assert_results_are_images(&s, doc);
    json_decref(doc);
    /* Nothing left to retry: harmless. */
    res = http_json_call(&s, "POST", url, NULL, NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_int_eq(jint(res, "retriedImages"), 0);
    json_decref(res);
    stack_stop(&s);
}
END_TEST

START_TEST(sigterm_lets_the_slow_push_finish)
{
    static const char *const sim[] = {"SIM_LATENCY_MS=3000", NULL};
    struct stack_opts o = {.queue_json = slow_queue, .sim_env = sim};
    struct stack s;
    long status;
    char id[128];
    json_t *doc;
    int w;

    stack_start(&s, &o);
    strncpy(id, create_demo_batch(&s, 1, NULL, &status), sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    ck_assert_int_eq(status, 201);
    time_sleep_ms(1000); /* the push is in flight, the provider answers after 3 s */
    w = proc_kill(&s.worker, SIGTERM);
    ck_assert_msg(WIFEXITED(w) && WEXITSTATUS(w) == 0, "worker exit status %d", w);
    ck_assert_int_ge(log_count(&s.worker, "worker stopped"), 1);
    doc = wait_batch(&s, id, 10);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed");
    json_decref(doc);
    stack_stop(&s);
}
END_TEST

static Suite *suite(void)
{
    Suite *su = suite_create("e2e_recovery");
    TCase *tc = tcase_create("recovery");

    tcase_set_timeout(tc, 400);
    tcase_add_test(tc, worker_killed_mid_batch);
    tcase_add_test(tc, manual_retry_after_recovery);
    tcase_add_test(tc, sigterm_lets_the_slow_push_finish);
    suite_add_tcase(su, tc);
    return su;
}
