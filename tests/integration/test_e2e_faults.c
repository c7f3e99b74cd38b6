/*
 * At-least-once delivery and unreliable providers: duplicated pushes never
 * change the counts; 30% provider failures and some timeouts still end every
 * item completed or failed with consistent counts; permanent failures fail
 * at once; the final attempt of a transient failure writes a dead letter.
 */
#include <string.h>

#include "check_main.h"
#include "core/json.h"
#include "harness.h"

static void assert_consistent(const json_t *doc, long long n)
{
    ck_assert_int_eq(jint(doc, "processedImages"), n);
    ck_assert_int_eq(jint(doc, "successCount") + jint(doc, "failureCount"), n);
}

START_TEST(duplicated_pushes_never_change_counts)
{
    static const char *const dup[] = {"DISPATCHER_DUPLICATE_RATE=1", NULL};
    struct stack_opts o = {.worker_env = dup};
    struct stack s;
    long status;
    const char *id;
    json_t *doc, *stats;

    stack_start(&s, &o);
    id = create_demo_batch(&s, 40, NULL, &status);
    ck_assert_int_eq(status, 201);
    doc = wait_batch(&s, id, 120);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed");
    assert_consistent(doc, 40);
    ck_assert_int_eq(jint(doc, "successCount"), 40);
    /* Every item's task was pushed twice; the second push found the outcome stored. */
    ck_assert_int_ge(log_count(&s.worker, "\"outcome\":\"duplicate\"") +
                         log_count(&s.worker, "\"outcome\":\"busy\""),
                     40);
    stats = sim_stats(&s);
    ck_assert_int_le(
        json_integer_value(json_object_get(json_object_get(stats, "generateContent"), "calls")),
        40 + 5); /* the lease keeps concurrent duplicates off the provider */
    json_decref(stats);
    ck_assert_int_eq(db_count(&s, "SELECT SUM(processed) FROM shards"), 40);
    json_decref(doc);
    stack_stop(&s);
}
END_TEST

START_TEST(unreliable_provider)
{
    static const char *const faults[] = {"SIM_FAIL_RATE=0.3", "SIM_TIMEOUT_RATE=0.05",
                                         "SIM_TIMEOUT_MS=4000", NULL};
    static const char *const worker[] = {"PROVIDER_TIMEOUT_MS=1500", "ITEM_LEASE_S=5", NULL};
    struct stack_opts o = {.sim_env = faults, .worker_env = worker};
    struct stack s;
    long status;
    const char *id;
    json_t *doc;

    stack_start(&s, &o);
    id = create_demo_batch(&s, 60, NULL, &status);
    ck_assert_int_eq(status, 201);
    doc = wait_batch(&s, id, 240);
    ck_assert_msg(strcmp(json_str_or(doc, "status", ""), "completed") == 0 ||
                      strcmp(json_str_or(doc, "status", ""), "completed_with_failures") == 0,
                  "status %s", json_str_or(doc, "status", ""));
    assert_consistent(doc, 60);
    ck_assert_int_eq(db_count(&s, "SELECT COUNT(*) FROM items WHERE status NOT IN "
                                  "('completed','failed')"),
                     0);
    ck_assert_int_eq(db_count(&s, "SELECT SUM(processed) FROM shards"),
                     db_count(&s, "SELECT COUNT(*) FROM items WHERE status IN "
                                  "('completed','failed','cancelled')"));
    json_decref(doc);
    stack_stop(&s);
}
END_TEST

START_TEST(permanent_and_final_failures)
{
    static const char *const queue =
        "{\"name\":\"q\",\"rateLimits\":{\"maxDispatchesPerSecond\":100,"
        "\"maxConcurrentDispatches\":10},\"retryConfig\":{\"maxAttempts\":3,"
        "\"minBackoff\":\"0.1s\",\"maxBackoff\":\"0.5s\",\"maxDoublings\":2},"
        "\"dispatchDeadline\":\"30s\"}";
    struct stack_opts o = {.queue_json = queue};
    struct stack s;
    json_t *body, *res, *doc, *stats, *by;
    char url[256];
    long status;
    const char *id;

    stack_start(&s, &o);
    body = json_pack("{s:[{s:o, s:{s:s}}, {s:o, s:{s:s}}, {s:o}], s:s}", "images", "url",
                     json_sprintf("%s/demo/1.png", s.sim_url), "metadata", "prompt",
                     "stage it [block]", "url", json_sprintf("%s/demo/2.png", s.sim_url),
                     "metadata", "prompt", "stage it [fail503]", "url",
                     json_sprintf("%s/demo/3.png", s.sim_url), "userId", "u");
    snprintf(url, sizeof(url), "%s/api/batch/create", s.creator_url);
    res = http_json_call(&s, "POST", url, body, NULL, &status);
    ck_assert_int_eq(status, 201);
    id = json_str_or(res, "batchId", "");
    doc = wait_batch(&s, id, 120);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed_with_failures");
    ck_assert_int_eq(jint(doc, "successCount"), 1);
    ck_assert_int_eq(jint(doc, "failureCount"), 2);
    {
        const json_t *images = json_object_get(doc, "images");

        ck_assert_str_eq(
            json_str_or(json_object_get(json_array_get(images, 0), "error"), "code", ""),
            "provider_blocked");
        ck_assert_int_eq(json_int_or(json_array_get(images, 0), "attempts", 0), 1);
        ck_assert_int_eq(json_int_or(json_array_get(images, 1), "attempts", 0), 3);
        ck_assert(json_is_true(
            json_object_get(json_object_get(json_array_get(images, 1), "error"), "retryable")));
    }
    /* Blocked: one call, no retry. Transient: maxAttempts calls, then a dead letter. */
    stats = sim_stats(&s);
    by = json_object_get(stats, "generateContent");
    ck_assert_int_eq(json_integer_value(json_object_get(by, "calls")), 1 + 3 + 1);
    json_decref(stats);
    ck_assert_int_eq(db_count(&s, "SELECT COUNT(*) FROM dead_letters"), 1);
    json_decref(doc);
    json_decref(res);
    json_decref(body);
    stack_stop(&s);
}
END_TEST

static Suite *suite(void)
{
    Suite *su = suite_create("e2e_faults");
    TCase *tc = tcase_create("faults");

    tcase_set_timeout(tc, 400);
    tcase_add_test(tc, duplicated_pushes_never_change_counts);
    tcase_add_test(tc, unreliable_provider);
    tcase_add_test(tc, permanent_and_final_failures);
    suite_add_tcase(su, tc);
    return su;
}
