/*
 * The domain's use cases against the real SQLite store and file blobs, with
 * a recording queue and a scripted provider: creation, the worker's rules
 * for duplicates, leases, transient and permanent failures, the final
 * attempt, fan-out, polling and manual retry.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/batch.h"
#include "batch/tasks.h"
#include "blob/fs_blob.h"
#include "check_main.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"
#include "store/sqlite_store.h"

/* ---- a recording queue ---------------------------------------------------- */

#define MAX_TASKS 4096

struct rec_task {
    char name[TASK_NAME_MAX];
    char body[TASK_BODY_MAX];
    int64_t schedule_time;
};

static struct rec_task tasks[MAX_TASKS];
static size_t n_tasks;
static bool queue_down;

static enum status rq_enqueue(void *state, const struct task_spec *t, struct error *err)
{
    size_t i;

    (void)state;
    if (queue_down)
        return error_set(err, ST_UNAVAILABLE, NULL, "queue down");
    for (i = 0; i < n_tasks; i++)
        if (strcmp(tasks[i].name, t->name) == 0)
            return error_set(err, ST_ALREADY_EXISTS, NULL, "task %s exists", t->name);
    ck_assert_uint_lt(n_tasks, MAX_TASKS);
    str_copy(tasks[n_tasks].name, TASK_NAME_MAX, t->name);
    memcpy(tasks[n_tasks].body, t->body, t->body_len);
    tasks[n_tasks].body[t->body_len] = '\0';
    tasks[n_tasks].schedule_time = t->schedule_time;
    n_tasks++;
    return ST_OK;
}

static enum status rq_enqueue_many(void *state, const struct task_spec *t, size_t n,
                                   enum status *results, struct error *err)
{
    size_t i;

    for (i = 0; i < n; i++) {
        results[i] = rq_enqueue(state, &t[i], err);
        if (results[i] != ST_OK && results[i] != ST_ALREADY_EXISTS)
            return results[i];
    }
    return ST_OK;
}

static enum status rq_remove(void *state, const char *name, struct error *err)
{
    (void)state;
    (void)name;
    (void)err;
    return ST_OK;
}

static void rq_close(void *state)
{
    (void)state;
}

static const struct queue_ops rq_ops = {rq_close, rq_enqueue, rq_enqueue_many, rq_remove};

/* ---- a scripted provider -------------------------------------------------- */

static enum provider_outcome script[16];
static size_t script_len, script_pos;
static int submits, polls;

static enum provider_outcome next_outcome(void)
{
    if (script_pos < script_len)
        return script[script_pos++];
    return PROVIDER_DONE;
}

static void fill(struct provider_output *out, enum provider_outcome o)
{
    out->outcome = o;
    if (o == PROVIDER_DONE) {
        buf_append_str(&out->data, "\x89PNG fake image");
        str_copy(out->content_type, sizeof(out->content_type), "image/png");
    } else if (o == PROVIDER_STARTED || o == PROVIDER_RUNNING) {
        str_copy(out->job_id, sizeof(out->job_id), "job-1");
    } else if (o == PROVIDER_TRANSIENT) {
        provider_output_fail(out, o, "provider_unavailable", "fake: 503");
    } else {
        provider_output_fail(out, o, "provider_blocked", "fake: blocked prompt");
    }
}

static enum status fp_submit(struct provider *p, const struct provider_input *in,
                             struct provider_output *out)
{
    (void)p;
    (void)in;
    submits++;
    fill(out, next_outcome());
    return ST_OK;
}

static bool resubmit_next;

static enum status fp_poll(struct provider *p, const char *job, struct provider_output *out)
{
    (void)p;
    (void)job;
    polls++;
    fill(out, next_outcome());
    out->resubmit = resubmit_next;
    resubmit_next = false;
    return ST_OK;
}

static int cancels;

static enum status fp_cancel(struct provider *p, const char *job, struct error *err)
{
    (void)p;
    (void)job;
    (void)err;
    cancels++;
    return ST_OK;
}

static struct provider fake_provider = {"fake", false, NULL, fp_submit, fp_poll, fp_cancel, NULL};

/* The fallback: always succeeds, counts its calls. */
static int backup_submits;

static enum status bp_submit(struct provider *p, const struct provider_input *in,
                             struct provider_output *out)
{
    (void)p;
    (void)in;
    backup_submits++;
    fill(out, PROVIDER_DONE);
    return ST_OK;
}

static struct provider backup_provider = {"backup", false, NULL, bp_submit, NULL, NULL, NULL};

static double fake_cost(const char *type, const char *provider, const json_t *options)
{
    (void)type;
    (void)options;
    return provider && strcmp(provider, "backup") == 0 ? 0.5 : 0.25;
}

static int fetches;

static enum status fake_fetch(void *ud, const char *url, struct buf *out, char ctype[64],
                              struct error *err)
{
    (void)ud;
    (void)err;
    fetches++;
    /* Two URLs share the same bytes: the cache keys on bytes, not on URLs. */
    buf_append_str(out, strstr(url, "/1.jpg") || strstr(url, "/2.jpg") ? "same-bytes" : url);
    str_copy(ctype, 64, "image/png");
    return ST_OK;
}

/* ---- fixture -------------------------------------------------------------- */

static char dir[64];
static struct store *store;
static struct queue queue = {&rq_ops, NULL, "recording"};
static struct blob *blob;
static struct batch_config cfg;
static struct provider_route routes[2];
static struct batch_env env;
static int64_t now_us;

static int64_t fake_now(void)
{
    return now_us;
}

static void setup(void)
{
    char path[128];
    struct error err;

    snprintf(dir, sizeof(dir), "/tmp/batchproc.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/batch.db", dir);
    store = store_sqlite_open(path, &err);
    ck_assert_msg(store != NULL, "%s", err.message);
    snprintf(path, sizeof(path), "%s/blobs", dir);
    blob = blob_fs_open(path, "http://files.test", &err);
    ck_assert_ptr_nonnull(blob);
    memset(&cfg, 0, sizeof(cfg));
    cfg.max_images = 10000;
    cfg.allow_insecure_urls = false;
    cfg.fanout_unit = 500;
    cfg.shards = 4;
    cfg.lease_s = 60;
    cfg.retry.max_attempts = 3;
    cfg.retry.min_backoff = 1;
    cfg.retry.max_backoff = 10;
    cfg.retry.max_doublings = 2;
    cfg.default_item_ms = 1000;
    cfg.poll_initial_ms = 1000;
    cfg.poll_max_ms = 4000;
    cfg.poll_deadline_s = 60;
    cfg.output_max_bytes = 1 << 20;
    routes[0].type = "virtual-staging";
    routes[0].provider = &fake_provider;
    routes[0].breaker = NULL;
    memset(&env, 0, sizeof(env));
    env.store = store;
    env.queue = &queue;
    env.blob = blob;
    env.providers = routes;
    env.n_providers = 1;
    env.cfg = &cfg;
    env.now = fake_now;
    env.item_cost = NULL;
    env.fetch = NULL;
    resubmit_next = false;
    now_us = 1800000000000000LL;
    n_tasks = 0;
    queue_down = false;
    script_len = script_pos = 0;
    submits = polls = cancels = backup_submits = fetches = 0;
    fake_provider.async = false;
}

static void teardown(void)
{
    char cmd[128];

    store_close(store);
    blob_close(blob);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static json_t *body_with(int n, const char *prompt)
{
    json_t *b = json_pack("{s:[], s:s}", "images", "userId", "u1");
    int i;

    for (i = 0; i < n; i++)
        json_array_append_new(json_object_get(b, "images"),
                              json_pack("{s:o, s:{s:s}}", "url",
                                        json_sprintf("https://cdn.example.com/%d.jpg", i),
                                        "metadata", "prompt", prompt ? prompt : "stage it"));
    return b;
}

static void create(int n, char id[BATCH_ID_MAX])
{
    struct create_result res;
    struct error err;
    json_t *body = body_with(n, NULL);

    ck_assert_msg(batch_create(&env, body, NULL, LANG_EN, &res, &err) == ST_OK, "%s", err.message);
    ck_assert_int_eq(res.batch.status, BATCH_PROCESSING);
    str_copy(id, BATCH_ID_MAX, res.batch.id);
    create_result_release(&res);
    json_decref(body);
}

static struct task_reply push(size_t task, int retry_count)
{
    struct push_meta meta = {tasks[task].name, retry_count, retry_count};
    struct task_reply r;

    batch_handle_task(&env, tasks[task].body, strlen(tasks[task].body), &meta, &r);
    return r;
}

static struct batch_counts counts(const char *id)
{
    struct batch_counts c;
    struct error err;

    ck_assert_int_eq(store_get_counts(store, id, &c, &err), ST_OK);
    return c;
}

static enum batch_status bstatus(const char *id)
{
    struct batch b;
    struct error err;
    enum batch_status s;

    ck_assert_int_eq(store_get_batch(store, id, &b, &err), ST_OK);
    s = b.status;
    batch_release(&b);
    return s;
}

/* ---- tests ---------------------------------------------------------------- */

START_TEST(create_enqueues_one_task_per_item)
{
    char id[BATCH_ID_MAX];
    struct task_body t;
    struct error err;
    size_t i;

    create(5, id);
    ck_assert_uint_eq(n_tasks, 5);
    for (i = 0; i < n_tasks; i++) {
        ck_assert_int_eq(task_body_decode(tasks[i].body, strlen(tasks[i].body), &t, &err), ST_OK);
        ck_assert_int_eq(t.kind, TASK_ITEM);
        ck_assert_str_eq(t.batch_id, id);
        ck_assert_int_eq(t.generation, 1);
    }
}
END_TEST

START_TEST(process_all_and_complete_once)
{
    char id[BATCH_ID_MAX];
    struct task_reply r;
    struct batch_counts c;
    size_t i;

    create(4, id);
    for (i = 0; i < 4; i++) {
        r = push(i, 0);
        ck_assert_int_eq(r.http_status, 200);
        ck_assert_str_eq(r.outcome, "completed");
    }
    c = counts(id);
    ck_assert_int_eq(c.processed, 4);
    ck_assert_int_eq(c.success, 4);
    ck_assert_int_eq(bstatus(id), BATCH_COMPLETED);
    /* Duplicated pushes change nothing and call no provider. */
    for (i = 0; i < 4; i++) {
        r = push(i, 1);
        ck_assert_int_eq(r.http_status, 200);
        ck_assert_str_eq(r.outcome, "duplicate");
    }
    ck_assert_int_eq(submits, 4);
    c = counts(id);
    ck_assert_int_eq(c.processed, 4);
}
END_TEST

START_TEST(lease_blocks_a_concurrent_duplicate)
{
    char id[BATCH_ID_MAX];
    struct task_reply r;
    enum item_begin begin;
    struct item it;
    struct error err;
    struct task_body t;

    create(1, id);
    task_body_decode(tasks[0].body, strlen(tasks[0].body), &t, &err);
    /* Another delivery holds the item right now. */
    ck_assert_int_eq(store_item_begin(store, id, t.item_id, 1, now_us, 60000000, &begin, &it, &err),
                     ST_OK);
    item_release(&it);
    r = push(0, 0);
    ck_assert_int_eq(r.http_status, 503);
    ck_assert_str_eq(r.outcome, "busy");
    ck_assert_int_gt(r.retry_after_s, 0);
    ck_assert_int_eq(submits, 0);
    now_us += 61 * 1000000LL; /* the holder died: the lease runs out */
    r = push(0, 1);
    ck_assert_int_eq(r.http_status, 200);
    ck_assert_int_eq(submits, 1);
}
END_TEST

START_TEST(transient_retries_then_dead_letter_on_final_attempt)
{
    char id[BATCH_ID_MAX];
    struct task_reply r;
    struct batch_counts c;

    create(1, id);
    script[0] = script[1] = script[2] = PROVIDER_TRANSIENT;
    script_len = 3;
    r = push(0, 0);
    ck_assert_int_eq(r.http_status, 503);
    ck_assert_int_eq(counts(id).processed, 0);
    now_us += 2000000;
    r = push(0, 1);
    ck_assert_int_eq(r.http_status, 503);
    now_us += 2000000;
    r = push(0, 2); /* attempt 3 of 3: final */
    ck_assert_int_eq(r.http_status, 200);
    ck_assert_str_eq(r.outcome, "failed");
    c = counts(id);
    ck_assert_int_eq(c.processed, 1);
    ck_assert_int_eq(c.failure, 1);
    ck_assert_int_eq(bstatus(id), BATCH_COMPLETED_WITH_FAILURES);
    ck_assert_int_eq(submits, 3);
}
END_TEST

START_TEST(permanent_fails_at_once)
{
    char id[BATCH_ID_MAX];
    struct task_reply r;
    json_t *doc;
    struct item_query q = {.limit = 10};
    struct error err;

    create(1, id);
    script[0] = PROVIDER_PERMANENT;
    script_len = 1;
    r = push(0, 0);
    ck_assert_int_eq(r.http_status, 200);
    ck_assert_str_eq(r.outcome, "failed");
    ck_assert_int_eq(counts(id).failure, 1);
    ck_assert_int_eq(submits, 1);
    ck_assert_int_eq(batch_status_json(&env, id, NULL, &q, LANG_EN, &doc, &err), ST_OK);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed_with_failures");
    ck_assert_str_eq(
        json_str_or(json_object_get(json_array_get(json_object_get(doc, "images"), 0), "error"),
                    "code", ""),
        "provider_blocked");
    json_decref(doc);
}
END_TEST

START_TEST(manual_retry_redrives_failed_items)
{
    char id[BATCH_ID_MAX];
    struct task_reply r;
    struct batch_counts c;
    struct error err;
    json_t *doc;
    size_t first;

    create(3, id);
    script[0] = PROVIDER_PERMANENT;
    script_len = 1;
    push(0, 0);
    push(1, 0);
    push(2, 0);
    ck_assert_int_eq(bstatus(id), BATCH_COMPLETED_WITH_FAILURES);
    first = n_tasks;
    ck_assert_int_eq(batch_retry(&env, id, NULL, LANG_EN, &doc, &err), ST_OK);
    ck_assert_int_eq(json_int_or(doc, "retriedImages", 0), 1);
    ck_assert_int_eq(json_int_or(doc, "generation", 0), 2);
    json_decref(doc);
    ck_assert_uint_eq(n_tasks, first + 1); /* one new task, new name */
    c = counts(id);
    ck_assert_int_eq(c.processed, 2);
    ck_assert_int_eq(bstatus(id), BATCH_PROCESSING);
    r = push(first, 0);
    ck_assert_int_eq(r.http_status, 200);
    ck_assert_str_eq(r.outcome, "completed");
    c = counts(id);
    ck_assert_int_eq(c.success, 3);
    ck_assert_int_eq(c.failure, 0);
    ck_assert_int_eq(bstatus(id), BATCH_COMPLETED);
    /* The old generation's task is now stale. */
    r = push(0, 3);
    ck_assert_int_eq(r.http_status, 200);
    ck_assert_int_eq(batch_retry(&env, "batch_missing", NULL, LANG_PT, &doc, &err), ST_NOT_FOUND);
    ck_assert_str_eq(err.message, "Batch não encontrado");
}
END_TEST

START_TEST(fanout_for_large_batches)
{
    char id[BATCH_ID_MAX];
    struct task_reply r;
    size_t i;

    cfg.fanout_unit = 10;
    create(25, id);
    ck_assert_uint_eq(n_tasks, 3); /* [0,10) [10,20) [20,25) */
    for (i = 0; i < 3; i++) {
        r = push(i, 0);
        ck_assert_int_eq(r.http_status, 200);
        ck_assert_str_eq(r.outcome, "fanned_out");
    }
    ck_assert_uint_eq(n_tasks, 3 + 25);
    r = push(0, 1); /* a duplicated fan-out re-enqueues nothing new */
    ck_assert_uint_eq(n_tasks, 3 + 25);
    for (i = 3; i < n_tasks; i++)
        ck_assert_int_eq(push(i, 0).http_status, 200);
    ck_assert_int_eq(counts(id).success, 25);
    ck_assert_int_eq(bstatus(id), BATCH_COMPLETED);
}
END_TEST

START_TEST(async_job_is_never_submitted_twice)
{
    char id[BATCH_ID_MAX];
    struct task_reply r;

    fake_provider.async = true;
    create(1, id);
    script[0] = PROVIDER_STARTED;
    script[1] = PROVIDER_RUNNING;
    script[2] = PROVIDER_DONE;
    script_len = 3;
    r = push(0, 0);
    ck_assert_int_eq(r.http_status, 200);
    ck_assert_str_eq(r.outcome, "started");
    ck_assert_uint_eq(n_tasks, 2); /* item + poll 1 */
    ck_assert_int_gt(tasks[1].schedule_time, now_us);
    r = push(0, 1); /* a redelivered submit */
    ck_assert_str_eq(r.outcome, "polling");
    ck_assert_int_eq(submits, 1);
    r = push(1, 0);
    ck_assert_str_eq(r.outcome, "polling");
    ck_assert_uint_eq(n_tasks, 3); /* poll 2 */
    r = push(2, 0);
    ck_assert_str_eq(r.outcome, "completed");
    ck_assert_int_eq(submits, 1);
    ck_assert_int_eq(polls, 2);
    ck_assert_int_eq(bstatus(id), BATCH_COMPLETED);
}
END_TEST

START_TEST(invalid_tasks_are_dropped)
{
    struct push_meta meta = {"t", 0, 0};
    struct task_reply r;
    const char *unknown =
        "{\"kind\":\"item\",\"batchId\":\"batch_x\",\"itemId\":\"a-00001\",\"generation\":1}";

    batch_handle_task(&env, "{nope", 5, &meta, &r);
    ck_assert_int_eq(r.http_status, 200);
    ck_assert_str_eq(r.outcome, "rejected");
    batch_handle_task(&env, unknown, strlen(unknown), &meta, &r);
    ck_assert_int_eq(r.http_status, 200);
    ck_assert_str_eq(r.outcome, "dropped");
}
END_TEST

START_TEST(idempotency_key_replays)
{
    struct create_result a, b;
    struct error err;
    json_t *body = body_with(2, NULL), *other = body_with(3, NULL);

    ck_assert_int_eq(batch_create(&env, body, "key-1", LANG_EN, &a, &err), ST_OK);
    ck_assert_int_eq(batch_create(&env, body, "key-1", LANG_EN, &b, &err), ST_OK);
    ck_assert(b.replayed);
    ck_assert_str_eq(a.batch.id, b.batch.id);
    ck_assert_uint_eq(n_tasks, 2);
    create_result_release(&b);
    ck_assert_int_eq(batch_create(&env, other, "key-1", LANG_PT, &b, &err), ST_CONFLICT);
    ck_assert_str_eq(err.code, "idempotency_key_reused");
    ck_assert_int_eq(batch_create(&env, body, "bad key", LANG_EN, &b, &err), ST_INVALID);
    create_result_release(&a);
    json_decref(body);
    json_decref(other);
}
END_TEST

START_TEST(enqueue_failure_fails_the_batch)
{
    struct create_result res;
    struct error err;
    json_t *body = body_with(2, NULL);

    queue_down = true;
    ck_assert_int_eq(batch_create(&env, body, NULL, LANG_PT, &res, &err), ST_UNAVAILABLE);
    ck_assert_str_eq(err.code, "enqueue_failed");
    json_decref(body);
}
END_TEST

START_TEST(breaker_opens_and_fallback_serves)
{
    struct breaker_options bo = {2, 60000};
    char id[BATCH_ID_MAX];
    struct task_reply r;
    size_t i;

    routes[0].breaker = breaker_new("fake", &bo);
    routes[1].type = "virtual-staging";
    routes[1].provider = &backup_provider;
    routes[1].breaker = breaker_new("backup", &bo);
    env.n_providers = 2;
    env.item_cost = fake_cost;
    create(5, id);
    script[0] = script[1] = PROVIDER_TRANSIENT;
    script_len = 2;
    ck_assert_int_eq(push(0, 0).http_status, 503);
    ck_assert_int_eq(push(1, 0).http_status, 503); /* two failures: the breaker opens */
    for (i = 0; i < 5; i++) {
        r = push(i, 1);
        ck_assert_int_eq(r.http_status, 200);
    }
    ck_assert_int_eq(submits, 2);        /* the open breaker kept the items off "fake" */
    ck_assert_int_eq(backup_submits, 5); /* the fallback served them all */
    ck_assert_int_eq(counts(id).success, 5);
    ck_assert_int_eq(counts(id).cost_micros, 5 * 500000);
    breaker_free(routes[0].breaker);
    breaker_free(routes[1].breaker);
    routes[0].breaker = NULL;
}
END_TEST

START_TEST(all_breakers_open_means_retry_later)
{
    struct breaker_options bo = {1, 60000};
    char id[BATCH_ID_MAX];
    struct task_reply r;

    routes[0].breaker = breaker_new("fake-only", &bo);
    create(2, id);
    script[0] = PROVIDER_TRANSIENT;
    script_len = 1;
    ck_assert_int_eq(push(0, 0).http_status, 503);
    r = push(1, 0);
    ck_assert_int_eq(r.http_status, 429);
    ck_assert_int_gt(r.retry_after_s, 50);
    ck_assert_int_eq(submits, 1);
    breaker_free(routes[0].breaker);
    routes[0].breaker = NULL;
}
END_TEST

START_TEST(cache_serves_identical_inputs_once)
{
    struct create_result res;
    struct error err;
    json_t *body =
        json_pack("{s:[s, s, s], s:s, s:{s:b}}", "images", "https://cdn.example.com/1.jpg",
                  "https://cdn.example.com/2.jpg", "https://cdn.example.com/3.jpg", "userId", "u1",
                  "options", "cache", 1);
    struct item_query q = {.limit = 10};
    json_t *doc, *images;

    env.fetch = fake_fetch;
    env.item_cost = fake_cost;
    ck_assert_int_eq(batch_create(&env, body, NULL, LANG_EN, &res, &err), ST_OK);
    ck_assert_double_eq_tol(res.batch.cost_estimate, 0.75, 1e-9);
    ck_assert_int_eq(push(0, 0).http_status, 200);
    ck_assert_str_eq(push(1, 0).outcome, "cached");
    ck_assert_int_eq(push(2, 0).http_status, 200);
    ck_assert_int_eq(submits, 2); /* 1.jpg and 3.jpg; 2.jpg had the same bytes as 1.jpg */
    ck_assert_int_eq(fetches, 3);
    ck_assert_int_eq(batch_status_json(&env, res.batch.id, NULL, &q, LANG_EN, &doc, &err), ST_OK);
    images = json_object_get(doc, "images");
    ck_assert(json_is_true(
        json_object_get(json_object_get(json_array_get(images, 1), "result"), "cached")));
    ck_assert(json_is_false(
        json_object_get(json_object_get(json_array_get(images, 0), "result"), "cached")));
    ck_assert_double_eq_tol(json_real_value(json_object_get(doc, "actualCost")), 0.5, 1e-9);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed");
    json_decref(doc);
    create_result_release(&res);
    json_decref(body);
}
END_TEST

START_TEST(failed_job_is_submitted_again)
{
    char id[BATCH_ID_MAX];
    struct task_reply r;

    fake_provider.async = true;
    create(1, id);
    script[0] = PROVIDER_STARTED;
    script[1] = PROVIDER_TRANSIENT; /* the poll says: job failed, resubmit */
    script[2] = PROVIDER_STARTED;
    script[3] = PROVIDER_DONE;
    script_len = 4;
    ck_assert_str_eq(push(0, 0).outcome, "started");
    resubmit_next = true;
    r = push(1, 0);
    ck_assert_str_eq(r.outcome, "resubmitted");
    ck_assert_uint_eq(n_tasks, 3); /* item, poll 1, item again under a new name */
    ck_assert_str_ne(tasks[2].name, tasks[0].name);
    ck_assert_str_eq(push(2, 0).outcome, "started");
    ck_assert_int_eq(submits, 2);
    r = push(3, 0);
    ck_assert_str_eq(r.outcome, "completed");
    ck_assert_int_eq(bstatus(id), BATCH_COMPLETED);
}
END_TEST

START_TEST(cancel_stops_new_calls_and_cancels_jobs)
{
    char id[BATCH_ID_MAX];
    struct batch_counts c;
    struct error err;
    json_t *doc;

    fake_provider.async = true;
    create(4, id);
    script[0] = PROVIDER_STARTED;
    script_len = 1;
    ck_assert_str_eq(push(0, 0).outcome, "started"); /* item 0 has a job in flight */
    ck_assert_int_eq(batch_cancel(&env, id, "someone-else", LANG_EN, &doc, &err), ST_NOT_FOUND);
    ck_assert_int_eq(batch_cancel(&env, id, "u1", LANG_EN, &doc, &err), ST_OK);
    ck_assert_int_eq(json_int_or(doc, "cancelledImages", -1), 3);
    ck_assert_int_eq(json_int_or(doc, "inFlight", -1), 1);
    json_decref(doc);
    /* The pending items' tasks find them cancelled: no provider call. */
    ck_assert_int_eq(push(1, 0).http_status, 200);
    ck_assert_int_eq(submits, 1);
    /* The hurried poll cancels the job at the provider. */
    ck_assert_uint_eq(n_tasks, 4 + 1 + 1);
    ck_assert_str_eq(push(5, 0).outcome, "cancelled");
    ck_assert_int_eq(cancels, 1);
    c = counts(id);
    ck_assert_int_eq(c.cancelled, 4);
    ck_assert_int_eq(c.processed, 4);
    ck_assert_int_eq(bstatus(id), BATCH_CANCELLED);
    ck_assert_int_eq(batch_cancel(&env, id, "u1", LANG_EN, &doc, &err), ST_OK); /* harmless */
    ck_assert(json_is_true(json_object_get(doc, "alreadyCancelled")));
    json_decref(doc);
}
END_TEST

/* Index of the recorded task whose body has the given kind, from the end. */
static size_t last_task_of(const char *kind)
{
    size_t i = n_tasks;

    while (i-- > 0)
        if (strstr(tasks[i].body, kind))
            return i;
    ck_abort_msg("no %s task", kind);
    return 0;
}

START_TEST(reconciler_redrives_lost_items)
{
    char id[BATCH_ID_MAX];
    struct task_reply r;
    size_t rc, before;

    cfg.reconcile_after_s = 60;
    create(3, id);
    ck_assert_uint_eq(n_tasks, 4); /* 3 items and round 1 of the reconciler, a minute ahead */
    rc = last_task_of("\"reconcile\"");
    ck_assert_int_eq(tasks[rc].schedule_time, now_us + 60 * 1000000LL);
    ck_assert_int_eq(push(0, 0).http_status, 200);
    /* Item 1's task is lost; item 2's delivery is in progress (leased). */
    {
        enum item_begin b;
        struct item it;
        struct error err;
        struct task_body t;

        task_body_decode(tasks[2].body, strlen(tasks[2].body), &t, &err);
        ck_assert_int_eq(
            store_item_begin(store, id, t.item_id, 1, now_us, 600 * 1000000LL, &b, &it, &err),
            ST_OK);
        item_release(&it);
    }
    before = n_tasks;
    now_us += 60 * 1000000LL;
    r = push(rc, 0);
    ck_assert_str_eq(r.outcome, "reconciled");
    ck_assert_uint_eq(n_tasks, before + 2); /* item 1 again, and round 2 */
    ck_assert(strstr(tasks[before].body, "\"round\":1") != NULL);
    ck_assert_str_ne(tasks[before].name, tasks[1].name);
    ck_assert_str_eq(push(before, 0).outcome, "completed");
    ck_assert_int_eq(counts(id).success, 2);
    /* A round after the batch finished ends the chain. */
    now_us += 600 * 1000000LL;
    ck_assert_str_eq(push(2, 1).outcome, "completed");
    ck_assert_int_eq(bstatus(id), BATCH_COMPLETED);
    before = n_tasks;
    r = push(last_task_of("\"reconcile\""), 0);
    ck_assert_str_eq(r.outcome, "reconciled");
    ck_assert_uint_eq(n_tasks, before);
}
END_TEST

START_TEST(eta)
{
    struct batch b;
    struct batch_counts c = {0};

    batch_init(&b);
    b.status = BATCH_PROCESSING;
    b.total = 10;
    b.created_at = 0;
    ck_assert_int_eq(batch_eta(&b, &c, 1000000, 500), 1000000 + 10 * 500 * 1000);
    c.processed = 5;
    ck_assert_int_eq(batch_eta(&b, &c, 10000000, 500), 20000000); /* 2 s per item, 5 left */
    b.status = BATCH_COMPLETED;
    ck_assert_int_eq(batch_eta(&b, &c, 10000000, 500), 0);
}
END_TEST

/* The domain logs like the services do; keep the test output readable. */
static void quiet(void)
{
    log_init("test", NULL, LOG_CRITICAL, 1);
}

static Suite *suite(void)
{
    Suite *s = suite_create("batch_process");
    TCase *tc = tcase_create("process");

    tcase_add_unchecked_fixture(tc, quiet, NULL);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, create_enqueues_one_task_per_item);
    tcase_add_test(tc, process_all_and_complete_once);
    tcase_add_test(tc, lease_blocks_a_concurrent_duplicate);
    tcase_add_test(tc, transient_retries_then_dead_letter_on_final_attempt);
    tcase_add_test(tc, permanent_fails_at_once);
    tcase_add_test(tc, manual_retry_redrives_failed_items);
    tcase_add_test(tc, fanout_for_large_batches);
    tcase_add_test(tc, async_job_is_never_submitted_twice);
    tcase_add_test(tc, invalid_tasks_are_dropped);
    tcase_add_test(tc, idempotency_key_replays);
    tcase_add_test(tc, enqueue_failure_fails_the_batch);
    tcase_add_test(tc, eta);
    tcase_add_test(tc, breaker_opens_and_fallback_serves);
    tcase_add_test(tc, all_breakers_open_means_retry_later);
    tcase_add_test(tc, cache_serves_identical_inputs_once);
    tcase_add_test(tc, failed_job_is_submitted_again);
    tcase_add_test(tc, cancel_stops_new_calls_and_cancels_jobs);
    tcase_add_test(tc, reconciler_redrives_lost_items);
    suite_add_tcase(s, tc);
    return s;
}
