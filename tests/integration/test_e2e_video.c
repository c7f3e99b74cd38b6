/*
 * Video providers and provider resilience, end to end on the embedded
 * runtime with the simulator's Runway and PixVerse.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "harness.h"
#include "providers/pricing.h"

static const char *const fast_queue =
    "{\"name\":\"q\",\"rateLimits\":{\"maxDispatchesPerSecond\":200,"
    "\"maxConcurrentDispatches\":20},\"retryConfig\":{\"maxAttempts\":10,"
    "\"minBackoff\":\"0.1s\",\"maxBackoff\":\"1s\",\"maxDoublings\":3},"
    "\"dispatchDeadline\":\"15s\"}";

/* Creates a batch of n demo images of a type with per-image prompts (NULL: default). */
static char *create(struct stack *s, const char *type, int n, const char *const *prompts,
                    json_t *options, long *status)
{
    json_t *body = json_pack("{s:[], s:s, s:s}", "images", "userId", "it-user", "type", type);
    json_t *res;
    char url[128], *id;
    int i;

    for (i = 0; i < n; i++) {
        json_t *img = json_pack("{s:o}", "url", json_sprintf("%s/demo/%d.png", s->sim_url, i));

        if (prompts && prompts[i])
            json_object_set_new(img, "metadata", json_pack("{s:s}", "prompt", prompts[i]));
        json_array_append_new(json_object_get(body, "images"), img);
    }
    if (options)
        json_object_set_new(body, "options", options);
    snprintf(url, sizeof(url), "%s/api/batch/create", s->creator_url);
    res = http_json_call(s, "POST", url, body, NULL, status);
    id = strdup(json_str_or(res, "batchId", ""));
    json_decref(res);
    json_decref(body);
    return id;
}

static json_t *status_doc(struct stack *s, const char *id)
{
    char url[256];
    long status;

    snprintf(url, sizeof(url), "%s/api/batch/status/%s?limit=1000", s->creator_url, id);
    return http_json_call(s, "GET", url, NULL, NULL, &status);
}

static int count_items(const json_t *doc, const char *status)
{
    const json_t *img;
    size_t i;
    int n = 0;

    json_array_foreach(json_object_get(doc, "images"), i, img)
    {
        if (strcmp(json_str_or(img, "status", ""), status) == 0)
            n++;
    }
    return n;
}

/* Waits until at least n items of the batch are polling (their jobs exist). */
static void wait_polling(struct stack *s, const char *id, int n)
{
    int64_t deadline = time_mono_ms() + 60000;

    for (;;) {
        json_t *doc = status_doc(s, id);
        int got = count_items(doc, "polling");

        json_decref(doc);
        if (got >= n)
            return;
        ck_assert_msg(time_mono_ms() < deadline, "only %d items polling", got);
        time_sleep_ms(100);
    }
}

static void assert_videos(struct stack *s, const json_t *doc)
{
    const json_t *img;
    size_t i;

    json_array_foreach(json_object_get(doc, "images"), i, img)
    {
        const json_t *result = json_object_get(img, "result");
        const char *url = json_str_or(result, "url", "");
        size_t len = 0;
        long status;
        char *bytes;

        ck_assert_str_eq(json_str_or(img, "status", ""), "completed");
        ck_assert_str_eq(json_str_or(result, "contentType", ""), "video/mp4");
        bytes = http_get_bytes(s, url, &len, &status);
        ck_assert_int_eq(status, 200);
        ck_assert_msg(len > 16 && memcmp(bytes + 4, "ftyp", 4) == 0, "%s is not an MP4", url);
        free(bytes);
    }
}

static json_int_t sim_count(struct stack *s, const char *provider, const char *field)
{
    json_t *stats = sim_stats(s);
    json_int_t v = json_integer_value(json_object_get(json_object_get(stats, provider), field));

    json_decref(stats);
    return v;
}

START_TEST(videos_of_each_type)
{
    static const char *const sim[] = {"SIM_JOB_MS=800", "SIM_RUNWAY_CONCURRENCY=50",
                                      "SIM_PIXVERSE_CONCURRENCY=50", NULL};
    struct stack_opts o = {.queue_json = fast_queue, .sim_env = sim};
    struct stack s;
    const char *types[] = {"video-runway", "video-pixverse"};
    long status;
    int t;

    stack_start(&s, &o);
    for (t = 0; t < 2; t++) {
        char *id = create(&s, types[t], 20, NULL, NULL, &status);
        json_t *doc;

        ck_assert_int_eq(status, 201);
        doc = wait_batch(&s, id, 180);
        ck_assert_str_eq(json_str_or(doc, "status", ""), "completed");
        ck_assert_int_eq(jint(doc, "successCount"), 20);
        assert_videos(&s, doc);
        ck_assert_double_gt(json_real_value(json_object_get(doc, "actualCost")), 0);
        json_decref(doc);
        free(id);
    }
    ck_assert_int_eq(sim_count(&s, "runway", "submits"), 20);
    ck_assert_int_eq(sim_count(&s, "pixverse", "submits"), 20);
    stack_stop(&s);
}
END_TEST

START_TEST(transient_job_failure_retried_moderation_not)
{
    static const char *const sim[] = {"SIM_JOB_MS=500", NULL};
    static const char *const prompts[] = {"a slow dolly [internal]", "a slow dolly [moderation]",
                                          NULL};
    struct stack_opts o = {.queue_json = fast_queue, .sim_env = sim};
    struct stack s;
    long status;
    char *id;
    json_t *doc, *images, *by;

    stack_start(&s, &o);
    id = create(&s, "video-runway", 3, prompts, NULL, &status);
    ck_assert_int_eq(status, 201);
    doc = wait_batch(&s, id, 180);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed_with_failures");
    images = json_object_get(doc, "images");
    ck_assert_str_eq(json_str_or(json_array_get(images, 0), "status", ""), "completed");
    ck_assert_str_eq(json_str_or(json_array_get(images, 1), "status", ""), "failed");
    ck_assert_str_eq(json_str_or(json_object_get(json_array_get(images, 1), "error"), "code", ""),
                     "provider_moderation");
    ck_assert_str_eq(json_str_or(json_array_get(images, 2), "status", ""), "completed");
    json_decref(doc);
    {
        json_t *stats = sim_stats(&s);
        char u0[128], u1[128];

        by = json_object_get(json_object_get(stats, "runway"), "byImage");
        snprintf(u0, sizeof(u0), "%s/demo/0.png", s.sim_url);
        snprintf(u1, sizeof(u1), "%s/demo/1.png", s.sim_url);
        ck_assert_int_eq(json_integer_value(json_object_get(by, u0)), 2); /* resubmitted once */
        ck_assert_int_eq(json_integer_value(json_object_get(by, u1)), 1); /* not retried */
        json_decref(stats);
    }
    free(id);
    stack_stop(&s);
}
END_TEST

START_TEST(worker_restart_resumes_polling_without_submitting_again)
{
    static const char *const sim[] = {"SIM_JOB_MS=6000", "SIM_RUNWAY_CONCURRENCY=50", NULL};
    struct stack_opts o = {.queue_json = fast_queue, .sim_env = sim};
    struct stack s;
    long status;
    char *id;
    json_t *doc, *stats, *by, *v;
    const char *key;

    stack_start(&s, &o);
    id = create(&s, "video-runway", 8, NULL, NULL, &status);
    ck_assert_int_eq(status, 201);
    wait_polling(&s, id, 8);
    proc_kill(&s.worker, SIGKILL);
    stack_start_worker(&s);
    doc = wait_batch(&s, id, 180);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed");
    ck_assert_int_eq(jint(doc, "successCount"), 8);
    assert_videos(&s, doc);
    json_decref(doc);
    stats = sim_stats(&s);
    by = json_object_get(json_object_get(stats, "runway"), "byImage");
    ck_assert_int_eq(json_object_size(by), 8);
    json_object_foreach(by, key, v)
    {
        ck_assert_msg(json_integer_value(v) == 1, "%s submitted %lld times", key,
                      (long long)json_integer_value(v));
    }
    json_decref(stats);
    free(id);
    stack_stop(&s);
}
END_TEST

START_TEST(breaker_opens_and_fallback_serves)
{
    static const char *const sim[] = {"SIM_JOB_MS=300", "SIM_PIXVERSE_CONCURRENCY=50", NULL};
    static const char *const worker[] = {"PROVIDER_FALLBACKS=video-runway=pixverse",
                                         "BREAKER_FAILURES=2", "BREAKER_OPEN_MS=60000", NULL};
    struct stack_opts o = {.queue_json = fast_queue, .sim_env = sim, .worker_env = worker};
    struct stack s;
    long status;
    char *id;
    json_t *doc, *img;
    size_t i;
    int by_pixverse = 0;

    stack_start(&s, &o);
    sim_control(&s, "{\"runwayDown\": true}");
    id = create(&s, "video-runway", 10, NULL, NULL, &status);
    ck_assert_int_eq(status, 201);
    doc = wait_batch(&s, id, 180);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed");
    ck_assert_int_eq(jint(doc, "successCount"), 10);
    json_array_foreach(json_object_get(doc, "images"), i, img)
    {
        const char *p = json_str_or(json_object_get(img, "result"), "provider", "");

        if (strcmp(p, "pixverse") == 0)
            by_pixverse++;
    }
    ck_assert_int_eq(by_pixverse, 10); /* runway never answered */
    ck_assert_int_ge(log_count(&s.worker, "circuit breaker of runway: closed -> open"), 1);
    /* Once open, the breaker kept the items off Runway. */
    ck_assert_int_le(sim_count(&s, "runway", "calls"), 2 + 20);
    json_decref(doc);
    free(id);
    stack_stop(&s);
}
END_TEST

START_TEST(cached_item_makes_no_provider_call)
{
    struct stack_opts o = {.queue_json = fast_queue};
    struct stack s;
    long status;
    char *a, *b;
    json_t *doc, *stats;

    stack_start(&s, &o);
    a = create(&s, "virtual-staging", 1, NULL, json_pack("{s:b}", "cache", 1), &status);
    doc = wait_batch(&s, a, 60);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed");
    json_decref(doc);
    b = create(&s, "virtual-staging", 1, NULL, json_pack("{s:b}", "cache", 1), &status);
    doc = wait_batch(&s, b, 60);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed");
    ck_assert(json_is_true(json_object_get(
        json_object_get(json_array_get(json_object_get(doc, "images"), 0), "result"), "cached")));
    ck_assert_double_eq(json_real_value(json_object_get(doc, "actualCost")), 0);
    assert_results_are_images(&s, doc);
    json_decref(doc);
    stats = sim_stats(&s);
    ck_assert_int_eq(
        json_integer_value(json_object_get(json_object_get(stats, "generateContent"), "calls")), 1);
    json_decref(stats);
    free(a);
    free(b);
    stack_stop(&s);
}
END_TEST

START_TEST(cancel_with_jobs_in_flight)
{
    static const char *const sim[] = {"SIM_JOB_MS=60000", "SIM_RUNWAY_CONCURRENCY=50", NULL};
    struct stack_opts o = {.queue_json = fast_queue, .sim_env = sim};
    struct stack s;
    long status;
    char *id, url[256];
    json_t *res, *body, *doc;
    int64_t deadline;

    stack_start(&s, &o);
    id = create(&s, "video-runway", 6, NULL, NULL, &status);
    wait_polling(&s, id, 6);
    snprintf(url, sizeof(url), "%s/api/batch/%s/cancel", s.creator_url, id);
    body = json_pack("{s:s}", "userId", "not-the-owner");
    res = http_json_call(&s, "POST", url, body, NULL, &status);
    ck_assert_int_eq(status, 404);
    json_decref(res);
    json_decref(body);
    body = json_pack("{s:s}", "userId", "it-user");
    res = http_json_call(&s, "POST", url, body, NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_int_eq(jint(res, "inFlight"), 6);
    json_decref(res);
    /* The hurried polls cancel every job at Runway and count the items. */
    deadline = time_mono_ms() + 60000;
    for (;;) {
        doc = status_doc(&s, id);
        if (jint(doc, "cancelledCount") == 6)
            break;
        json_decref(doc);
        ck_assert(time_mono_ms() < deadline);
        time_sleep_ms(200);
    }
    ck_assert_str_eq(json_str_or(doc, "status", ""), "cancelled");
    ck_assert_int_eq(jint(doc, "processedImages"), 6);
    ck_assert_int_eq(
        jint(doc, "successCount") + jint(doc, "failureCount") + jint(doc, "cancelledCount"), 6);
    json_decref(doc);
    ck_assert_int_eq(sim_count(&s, "runway", "cancels"), 6);
    res = http_json_call(&s, "POST", url, body, NULL, &status); /* again: harmless */
    ck_assert_int_eq(status, 200);
    ck_assert(json_is_true(json_object_get(res, "alreadyCancelled")));
    json_decref(res);
    json_decref(body);
    free(id);
    stack_stop(&s);
}
END_TEST

START_TEST(estimate_is_the_price_table_times_the_count)
{
    struct stack_opts o = {.no_sim = true};
    struct stack s;
    const struct {
        const char *type;
        const char *options;
    } rows[] = {
        {"virtual-staging", "{}"},
        {"video-runway", "{\"duration\": 10}"},
        {"video-pixverse", "{\"quality\": \"720p\", \"duration\": 8}"},
    };
    size_t r;

    stack_start(&s, &o);
    for (r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        json_t *options = json_loads(rows[r].options, 0, NULL);
        json_t *body = json_pack(
            "{s:[s,s,s,s,s,s,s], s:s, s:s, s:O, s:b}", "images", "https://a.example/1.jpg",
            "https://a.example/2.jpg", "https://a.example/3.jpg", "https://a.example/4.jpg",
            "https://a.example/5.jpg", "https://a.example/6.jpg", "https://a.example/7.jpg",
            "userId", "u", "type", rows[r].type, "options", options, "dryRun", 1);
        double unit = pricing_item_cost(rows[r].type, NULL, options);
        char url[128];
        long status;
        json_t *res;

        snprintf(url, sizeof(url), "%s/api/batch/create", s.creator_url);
        res = http_json_call(&s, "POST", url, body, NULL, &status);
        ck_assert_int_eq(status, 200);
        ck_assert(unit > 0);
        ck_assert_double_eq_tol(json_real_value(json_object_get(res, "costEstimate")), 7 * unit,
                                1e-9);
        json_decref(res);
        json_decref(body);
        json_decref(options);
    }
    stack_stop(&s);
}
END_TEST

static Suite *suite(void)
{
    Suite *su = suite_create("e2e_video");
    TCase *tc = tcase_create("video");

    tcase_set_timeout(tc, 400);
    tcase_add_test(tc, videos_of_each_type);
    tcase_add_test(tc, transient_job_failure_retried_moderation_not);
    tcase_add_test(tc, worker_restart_resumes_polling_without_submitting_again);
    tcase_add_test(tc, breaker_opens_and_fallback_serves);
    tcase_add_test(tc, cached_item_makes_no_provider_call);
    tcase_add_test(tc, cancel_with_jobs_in_flight);
    tcase_add_test(tc, estimate_is_the_price_table_times_the_count);
    suite_add_tcase(su, tc);
    return su;
}
