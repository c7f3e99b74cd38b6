/*
 * status.c - the read side: the seed-shaped status document, the ETA, and
 * the manual retry of failed items.
 */
#include <stdio.h>
#include <string.h>

#include "batch/batch.h"
#include "batch/tasks.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"

int64_t batch_eta(const struct batch *b, const struct batch_counts *c, int64_t now,
                  int64_t default_item_ms)
{
    int64_t remaining = b->total - c->processed;

    if (b->status != BATCH_PROCESSING || remaining <= 0)
        return 0;
    if (c->processed > 0 && now > b->created_at) {
        /* Observed throughput of the batch so far: it already folds in the queue's
         * concurrency and the provider's latency. */
        double per_item_us = (double)(now - b->created_at) / (double)c->processed;

        return now + (int64_t)(per_item_us * (double)remaining);
    }
    return now + remaining * default_item_ms * 1000;
}

static json_t *time_json(int64_t t)
{
    char s[RFC3339_MAX];

    if (t <= 0 || !time_format_rfc3339(t, s, sizeof(s)))
        return json_null();
    return json_string(s);
}

static json_t *item_json(const struct batch_env *env, const struct item *it)
{
    json_t *j = json_pack("{s:s, s:I, s:s, s:s, s:I}", "id", it->id, "index", (json_int_t)it->index,
                          "status", item_status_name(it->status), "url", it->url ? it->url : "",
                          "attempts", (json_int_t)it->attempts);

    if (it->has_result) {
        char url[4096];
        struct error err;
        json_t *r =
            json_pack("{s:s, s:I, s:s, s:b, s:f}", "contentType", it->result.content_type, "bytes",
                      (json_int_t)it->result.bytes, "provider", it->result.provider, "cached",
                      it->result.cached, "cost", (double)it->result.cost_micros / 1e6);

        if (blob_url(env->blob, it->result.key, url, sizeof(url), &err) == ST_OK)
            json_object_set_new(r, "url", json_string(url));
        else
            json_object_set_new(r, "url", json_null());
        json_object_set_new(j, "result", r);
    } else {
        json_object_set_new(j, "result", json_null());
    }
    if (it->has_error && item_status_is_terminal(it->status))
        json_object_set_new(j, "error",
                            json_pack("{s:s, s:s, s:b}", "code", it->error.code, "message",
                                      it->error.message ? it->error.message : "", "retryable",
                                      it->error.retryable));
    else
        json_object_set_new(j, "error", json_null());
    if (it->provider[0])
        json_object_set_new(j, "provider", json_string(it->provider));
    json_object_set_new(j, "startedAt", time_json(it->started_at));
    json_object_set_new(j, "completedAt", time_json(it->completed_at));
    if (it->completed_at > 0)
        json_object_set_new(j, "durationMs", json_integer(it->duration_ms));
    return j;
}

enum status batch_status_json(const struct batch_env *env, const char *batch_id, const char *owner,
                              const struct item_query *q, enum lang lang, json_t **out,
                              struct error *err)
{
    struct batch b;
    struct batch_counts c;
    struct item_page page;
    enum status st;
    json_t *doc, *images;
    int64_t now = env->now(), progress;
    size_t i;

    *out = NULL;
    batch_init(&b);
    memset(&page, 0, sizeof(page));
    st = store_get_batch(env->store, batch_id, &b, err);
    if (st == ST_NOT_FOUND || (st == ST_OK && owner && strcmp(b.user_id, owner) != 0)) {
        batch_release(&b);
        return lang_error(err, lang, ST_NOT_FOUND, "batch_not_found");
    }
    if (st != ST_OK)
        goto fail;
    if ((st = store_get_counts(env->store, batch_id, &c, err)) != ST_OK)
        goto fail;
    if ((st = store_list_items(env->store, batch_id, q, &page, err)) != ST_OK) {
        if (st == ST_INVALID) {
            char why[ERROR_MSG_MAX];

            str_copy(why, sizeof(why), err->message);
            st = lang_error(err, lang, ST_INVALID, "invalid_query", why);
            batch_release(&b);
            return st;
        }
        goto fail;
    }
    progress = b.total > 0 ? (c.processed * 100 + b.total / 2) / b.total : 0;
    if (progress == 100 && c.processed < b.total)
        progress = 99; /* never claim 100 before the last item */
    doc = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "batchId", b.id,
                    "status", batch_status_name(b.status), "type", b.type, "userId", b.user_id,
                    "progress", (json_int_t)progress, "totalImages", (json_int_t)b.total,
                    "processedImages", (json_int_t)c.processed, "successCount",
                    (json_int_t)c.success, "failureCount", (json_int_t)c.failure, "cancelledCount",
                    (json_int_t)c.cancelled, "generation", (json_int_t)b.generation);
    json_object_set_new(doc, "priority", json_string(b.priority));
    json_object_set_new(doc, "createdAt", time_json(b.created_at));
    json_object_set_new(doc, "updatedAt", time_json(b.updated_at));
    json_object_set_new(doc, "completedAt", time_json(b.completed_at));
    json_object_set_new(doc, "estimatedCompletion",
                        time_json(batch_eta(&b, &c, now, env->cfg->default_item_ms)));
    if (c.success > 0)
        json_object_set_new(doc, "averageDurationMs", json_integer(c.duration_ms_sum / c.success));
    json_object_set_new(doc, "costEstimate", json_real(b.cost_estimate));
    json_object_set_new(doc, "actualCost", json_real((double)c.cost_micros / 1e6));
    images = json_array();
    for (i = 0; i < page.n; i++)
        json_array_append_new(images, item_json(env, &page.items[i]));
    json_object_set_new(doc, "images", images);
    json_object_set_new(doc, "nextPageToken",
                        page.next_token[0] ? json_string(page.next_token) : json_null());
    store_item_page_release(&page);
    batch_release(&b);
    *out = doc;
    return ST_OK;
fail:
    log_error("cannot read status of batch %s: %s", batch_id, err->message);
    store_item_page_release(&page);
    batch_release(&b);
    return lang_error(err, lang, status_is_transient(st) ? ST_UNAVAILABLE : ST_INTERNAL,
                      "status_failed");
}

enum status batch_retry(const struct batch_env *env, const char *batch_id, const char *owner,
                        enum lang lang, json_t **out, struct error *err)
{
    struct item_page page;
    struct batch b;
    int64_t gen = 0;
    enum status st;
    size_t i;

    *out = NULL;
    memset(&page, 0, sizeof(page));
    batch_init(&b);
    st = store_get_batch(env->store, batch_id, &b, err);
    if (st == ST_NOT_FOUND || (st == ST_OK && owner && strcmp(b.user_id, owner) != 0)) {
        batch_release(&b);
        return lang_error(err, lang, ST_NOT_FOUND, "batch_not_found");
    }
    if (st != ST_OK)
        return lang_error(err, lang, ST_UNAVAILABLE, "unavailable");
    st = store_retry_failed(env->store, batch_id, env->now(), &gen, &page, err);
    if (st == ST_FAILED_PRECONDITION) {
        st = lang_error(err, lang, ST_CONFLICT, "batch_not_retryable", batch_status_name(b.status));
        goto out;
    }
    if (st != ST_OK) {
        st = lang_error(err, lang, ST_UNAVAILABLE, "unavailable");
        goto out;
    }
    if (page.n > 0) {
        struct task_spec *specs = xcalloc(page.n, sizeof(*specs));
        char(*bodies)[TASK_BODY_MAX] = xcalloc(page.n, sizeof(*bodies));
        enum status *results = xcalloc(page.n, sizeof(*results));

        for (i = 0; i < page.n; i++) {
            struct task_body t;

            memset(&t, 0, sizeof(t));
            t.kind = TASK_ITEM;
            str_copy(t.batch_id, sizeof(t.batch_id), batch_id);
            str_copy(t.item_id, sizeof(t.item_id), page.items[i].id);
            t.generation = gen;
            task_spec_for(&t, 0, bodies[i], &specs[i]);
        }
        st = queue_enqueue_many(env->queue, specs, page.n, results, err);
        if (st == ST_OK)
            st = batch_schedule_reconcile(env, batch_id, gen, err);
        free(results);
        free(bodies);
        free(specs);
        if (st != ST_OK) {
            /* The items are pending in the new generation; retrying the call enqueues the
             * same task names again, harmlessly. */
            log_error("cannot enqueue the retry of batch %s: %s", batch_id, err->message);
            st = lang_error(err, lang, ST_UNAVAILABLE, "enqueue_failed");
            goto out;
        }
    }
    log_write(LOG_NOTICE,
              json_pack("{s:s, s:I, s:I}", "batchId", batch_id, "generation", (json_int_t)gen,
                        "retried", (json_int_t)page.n),
              "retrying %zu failed items of batch %s", page.n, batch_id);
    *out =
        json_pack("{s:b, s:s, s:I, s:I, s:s}", "success", 1, "batchId", batch_id, "retriedImages",
                  (json_int_t)page.n, "generation", (json_int_t)gen, "statusUrl", "");
    json_object_set_new(*out, "statusUrl", json_sprintf("/api/batch/status/%s", batch_id));
out:
    store_item_page_release(&page);
    batch_release(&b);
    return st;
}

/* Brings the next poll of in-flight jobs forward, so they are cancelled at the provider now. */
static void poll_now(const struct batch_env *env, const struct batch *b,
                     const struct item_page *in_flight)
{
    size_t i;

    for (i = 0; i < in_flight->n; i++) {
        const struct item *it = &in_flight->items[i];
        struct task_body t;
        struct task_spec spec;
        char body[TASK_BODY_MAX];
        struct error err;
        enum status st;

        if (it->status != ITEM_POLLING || !it->provider_job_id[0])
            continue;
        memset(&t, 0, sizeof(t));
        t.kind = TASK_POLL;
        str_copy(t.batch_id, sizeof(t.batch_id), b->id);
        str_copy(t.item_id, sizeof(t.item_id), it->id);
        t.generation = it->generation;
        t.poll = it->polls + 1;
        t.attempt = it->attempts;
        t.cancel = true;
        task_spec_for(&t, 0, body, &spec);
        st = queue_enqueue(env->queue, &spec, &err);
        if (st != ST_OK && st != ST_ALREADY_EXISTS)
            /* The scheduled poll still finds the batch cancelled; only later. */
            log_warn("cannot hurry the cancellation of job %s: %s", it->provider_job_id,
                     err.message);
    }
}

enum status batch_cancel(const struct batch_env *env, const char *batch_id, const char *user_id,
                         enum lang lang, json_t **out, struct error *err)
{
    struct item_page in_flight;
    struct batch_counts counts;
    struct batch b;
    bool changed = false;
    enum status st;

    *out = NULL;
    memset(&in_flight, 0, sizeof(in_flight));
    batch_init(&b);
    st = store_get_batch(env->store, batch_id, &b, err);
    if (st == ST_NOT_FOUND || (st == ST_OK && (!user_id || strcmp(b.user_id, user_id) != 0))) {
        /* Someone else's batch does not exist, as far as the caller can tell. */
        st = lang_error(err, lang, ST_NOT_FOUND, "batch_not_found");
        goto out;
    }
    if (st != ST_OK) {
        st = lang_error(err, lang, ST_UNAVAILABLE, "unavailable");
        goto out;
    }
    if (batch_status_is_terminal(b.status) && b.status != BATCH_CANCELLED) {
        st = lang_error(err, lang, ST_CONFLICT, "batch_not_cancellable",
                        batch_status_name(b.status));
        goto out;
    }
    st = store_cancel_batch(env->store, batch_id, env->now(), &changed, &in_flight, err);
    if (st != ST_OK) {
        log_error("cannot cancel batch %s: %s", batch_id, err->message);
        st = lang_error(err, lang, ST_UNAVAILABLE, "unavailable");
        goto out;
    }
    poll_now(env, &b, &in_flight);
    if (store_get_counts(env->store, batch_id, &counts, err) != ST_OK)
        memset(&counts, 0, sizeof(counts));
    if (changed)
        batch_enqueue_webhook(env, &b, "batch.cancelled");
    if (changed)
        log_write(LOG_NOTICE,
                  json_pack("{s:s, s:I, s:I}", "batchId", batch_id, "cancelled",
                            (json_int_t)counts.cancelled, "inFlight", (json_int_t)in_flight.n),
                  "batch %s cancelled: %lld items cancelled, %zu in flight", batch_id,
                  (long long)counts.cancelled, in_flight.n);
    *out = json_pack("{s:b, s:s, s:s, s:I, s:I, s:I, s:I, s:b}", "success", 1, "batchId", batch_id,
                     "status", "cancelled", "cancelledImages", (json_int_t)counts.cancelled,
                     "successCount", (json_int_t)counts.success, "failureCount",
                     (json_int_t)counts.failure, "inFlight", (json_int_t)in_flight.n,
                     "alreadyCancelled", !changed);
out:
    store_item_page_release(&in_flight);
    batch_release(&b);
    return st;
}
