/* The rest of the partner API: the progress stream and the list of a user's batches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "core/json.h"
#include "batch/batch.h"
#include "core/timeutil.h"
#include "harness.h"

START_TEST(progress_events_until_completion)
{
    static const char *const sim[] = {"SIM_LATENCY_MS=300", NULL};
    struct stack_opts o = {.sim_env = sim};
    struct stack s;
    char url[256], *body, *p;
    const char *id;
    long status, last = -1;
    size_t len;
    int events = 0;
    json_t *ev = NULL;

    stack_start(&s, &o);
    id = create_demo_batch(&s, 8, NULL, &status);
    ck_assert_int_eq(status, 201);
    snprintf(url, sizeof(url), "%s/api/batch/status/%s/events", s.creator_url, id);
    body = http_get_bytes(&s, url, &len, &status); /* the stream ends at the terminal status */
    ck_assert_int_eq(status, 200);
    for (p = body; (p = strstr(p, "event: progress\ndata: ")) != NULL; p++) {
        char *end = strstr(p, "\n\n");

        ck_assert_ptr_nonnull(end);
        json_decref(ev);
        ev = json_loadb(p + 22, (size_t)(end - (p + 22)), 0, NULL);
        ck_assert_ptr_nonnull(ev);
        ck_assert_int_ge(jint(ev, "processedImages"), last); /* in order */
        last = jint(ev, "processedImages");
        events++;
    }
    ck_assert_int_ge(events, 2);
    ck_assert_str_eq(json_str_or(ev, "status", ""), "completed");
    ck_assert_int_eq(jint(ev, "processedImages"), 8);
    json_decref(ev);
    free(body);
    snprintf(url, sizeof(url), "%s/api/batch/status/batch_nope/events", s.creator_url);
    json_decref(http_json_call(&s, "GET", url, NULL, NULL, &status));
    ck_assert_int_eq(status, 404);
    stack_stop(&s);
}
END_TEST

static char *create_for(struct stack *s, const char *user)
{
    json_t *body = json_pack("{s:[s], s:s, s:b}", "images", "https://a.example/1.jpg", "userId",
                             user, "dryRun", 0);
    char url[128], *id;
    long status;
    json_t *res;

    snprintf(url, sizeof(url), "%s/api/batch/create", s->creator_url);
    res = http_json_call(s, "POST", url, body, NULL, &status);
    ck_assert_int_eq(status, 201);
    id = strdup(json_str_or(res, "batchId", ""));
    json_decref(res);
    json_decref(body);
    return id;
}

START_TEST(list_of_a_users_batches)
{
    struct stack_opts o = {.no_sim = true};
    struct stack s;
    char *ids[3], *other, url[512];
    long status;
    json_t *page;
    int i;

    stack_start(&s, &o);
    for (i = 0; i < 3; i++)
        ids[i] = create_for(&s, "crm-a");
    other = create_for(&s, "crm-b");
    snprintf(url, sizeof(url), "%s/api/batch?userId=crm-a&limit=2", s.creator_url);
    page = http_json_call(&s, "GET", url, NULL, NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_uint_eq(json_array_size(json_object_get(page, "batches")), 2);
    ck_assert_str_eq(
        json_str_or(json_array_get(json_object_get(page, "batches"), 0), "batchId", ""),
        ids[2]); /* newest first */
    snprintf(url, sizeof(url), "%s/api/batch?userId=crm-a&limit=2&pageToken=%s", s.creator_url,
             json_str_or(page, "nextPageToken", ""));
    json_decref(page);
    page = http_json_call(&s, "GET", url, NULL, NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_uint_eq(json_array_size(json_object_get(page, "batches")), 1);
    ck_assert_str_eq(
        json_str_or(json_array_get(json_object_get(page, "batches"), 0), "batchId", ""), ids[0]);
    ck_assert(json_is_null(json_object_get(page, "nextPageToken")));
    json_decref(page);
    snprintf(url, sizeof(url), "%s/api/batch?userId=crm-b", s.creator_url);
    page = http_json_call(&s, "GET", url, NULL, NULL, &status);
    ck_assert_uint_eq(json_array_size(json_object_get(page, "batches")), 1);
    ck_assert_str_eq(
        json_str_or(json_array_get(json_object_get(page, "batches"), 0), "batchId", ""), other);
    json_decref(page);
    snprintf(url, sizeof(url), "%s/api/batch", s.creator_url);
    json_decref(http_json_call(&s, "GET", url, NULL, NULL, &status));
    ck_assert_int_eq(status, 400);
    snprintf(url, sizeof(url), "%s/api/batch?userId=crm-a&pageToken=garbage", s.creator_url);
    json_decref(http_json_call(&s, "GET", url, NULL, NULL, &status));
    ck_assert_int_eq(status, 400);
    for (i = 0; i < 3; i++)
        free(ids[i]);
    free(other);
    stack_stop(&s);
}
END_TEST

START_TEST(signed_completion_webhook_retried_until_delivered)
{
    /* whsec_ + base64 of "0123456789abcdef01234567" */
    static const char *const worker[] = {"WEBHOOK_SECRET=whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3",
                                         NULL};
    static const unsigned char key[] = "0123456789abcdef01234567";
    struct stack_opts o = {.worker_env = worker};
    struct stack s;
    json_t *body, *res, *hooks = NULL, *first, *last, *payload;
    char url[256], sig[128];
    const char *id;
    long status;
    int64_t deadline;
    size_t i;

    stack_start(&s, &o);
    body = json_pack("{s:[o, o], s:s, s:o}", "images", json_sprintf("%s/demo/1.png", s.sim_url),
                     json_sprintf("%s/demo/2.png", s.sim_url), "userId", "crm-h", "webhookUrl",
                     json_sprintf("%s/hooks/h1?fail=2", s.sim_url));
    snprintf(url, sizeof(url), "%s/api/batch/create", s.creator_url);
    res = http_json_call(&s, "POST", url, body, NULL, &status);
    ck_assert_int_eq(status, 201);
    id = json_str_or(res, "batchId", "");
    /* Two refusals, then the delivery that sticks. */
    snprintf(url, sizeof(url), "%s/hooks/h1", s.sim_url);
    deadline = time_mono_ms() + 60000;
    for (;;) {
        json_decref(hooks);
        hooks = http_json_call(&s, "GET", url, NULL, NULL, &status);
        if (json_array_size(json_object_get(hooks, "received")) >= 3)
            break;
        ck_assert(time_mono_ms() < deadline);
        time_sleep_ms(100);
    }
    time_sleep_ms(500); /* nothing more arrives after the 2xx */
    json_decref(hooks);
    hooks = http_json_call(&s, "GET", url, NULL, NULL, &status);
    ck_assert_uint_eq(json_array_size(json_object_get(hooks, "received")), 3);
    first = json_array_get(json_object_get(hooks, "received"), 0);
    last = json_array_get(json_object_get(hooks, "received"), 2);
    ck_assert_int_eq(json_int_or(last, "status", 0), 200);
    json_array_foreach(json_object_get(hooks, "received"), i, payload)
    {
        const json_t *h = json_object_get(payload, "headers");
        const char *ts = json_str_or(h, "webhook-timestamp", "0");

        /* The same id every time, so the partner can drop duplicates; each attempt signed. */
        ck_assert_str_eq(json_str_or(h, "webhook-id", ""),
                         json_str_or(json_object_get(first, "headers"), "webhook-id", "x"));
        webhook_signature(key, sizeof(key) - 1, json_str_or(h, "webhook-id", ""),
                          strtoll(ts, NULL, 10), json_str_or(payload, "body", ""), sig,
                          sizeof(sig));
        ck_assert_str_eq(json_str_or(h, "webhook-signature", ""), sig);
    }
    payload = json_loads(json_str_or(last, "body", ""), 0, NULL);
    ck_assert_str_eq(json_str_or(payload, "type", ""), "batch.completed");
    ck_assert_str_eq(json_str_or(json_object_get(payload, "data"), "batchId", ""), id);
    ck_assert_str_eq(json_str_or(json_object_get(payload, "data"), "status", ""), "completed");
    ck_assert_int_eq(json_int_or(json_object_get(payload, "data"), "successCount", 0), 2);
    json_decref(payload);
    json_decref(hooks);
    json_decref(res);
    json_decref(body);
    stack_stop(&s);
}
END_TEST

static Suite *suite(void)
{
    Suite *su = suite_create("e2e_api");
    TCase *tc = tcase_create("api");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, progress_events_until_completion);
    tcase_add_test(tc, list_of_a_users_batches);
    tcase_add_test(tc, signed_completion_webhook_retried_until_delivered);
    suite_add_tcase(su, tc);
    return su;
}
