/*
 * create.c - the creator's use case: validate, store, enqueue.
 *
 * Order matters for crash safety: the batch is written as `creating`, then
 * its items, then the tasks (deterministic names, so a resumed creation
 * re-enqueues harmlessly), and only then does it become `processing`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/batch.h"
#include "batch/request.h"
#include "batch/tasks.h"
#include "core/codec.h"
#include "core/id.h"
#include "core/json.h"
#include "core/log.h"
#include "core/util.h"

/* sha256 of the request as the key binds it: the body with sorted keys, and the key. */
static void request_hash(const json_t *body, const char *key, char out[65])
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17));
    struct buf b;

    buf_init(&b, SIZE_MAX);
    buf_append_str(&b, key);
    buf_append(&b, "\n", 1);
    buf_append_str(&b, text ? text : "");
    sha256_hex(b.data, b.len, out);
    buf_release(&b);
    free(text);
}

static void build_items(const struct batch *b, const struct create_request *req, struct item **out)
{
    struct item *items = xcalloc(req->n_images, sizeof(*items));
    size_t i;

    for (i = 0; i < req->n_images; i++) {
        struct item *it = &items[i];

        item_init(it);
        str_copy(it->batch_id, sizeof(it->batch_id), b->id);
        item_id_for_index(b->id, (int64_t)i, it->id);
        it->index = (int64_t)i;
        it->url = xstrdup(req->images[i].url);
        it->metadata = req->images[i].metadata ? json_deep_copy(req->images[i].metadata) : NULL;
        it->status = ITEM_PENDING;
        it->generation = b->generation;
    }
    *out = items;
}

static void free_items(struct item *items, size_t n)
{
    size_t i;

    for (i = 0; items && i < n; i++)
        item_release(&items[i]);
    free(items);
}

/*
 * Enqueues the work of a batch: one item task per item for small batches,
 * one fan-out task per fanout_unit items for large ones (the worker expands
 * them), so the creator answers quickly whatever the size.
 */
static enum status enqueue_batch(const struct batch_env *env, const struct batch *b,
                                 struct error *err)
{
    int64_t unit = env->cfg->fanout_unit, n, i;
    struct task_spec *specs;
    char(*bodies)[TASK_BODY_MAX];
    enum status *results, st;

    n = b->total <= unit ? b->total : (b->total + unit - 1) / unit;
    specs = xcalloc((size_t)n, sizeof(*specs));
    bodies = xcalloc((size_t)n, sizeof(*bodies));
    results = xcalloc((size_t)n, sizeof(*results));
    for (i = 0; i < n; i++) {
        struct task_body t;

        memset(&t, 0, sizeof(t));
        str_copy(t.batch_id, sizeof(t.batch_id), b->id);
        t.generation = b->generation;
        if (b->total <= unit) {
            t.kind = TASK_ITEM;
            item_id_for_index(b->id, i, t.item_id);
        } else {
            t.kind = TASK_FANOUT;
            t.start = i * unit;
            t.end = t.start + unit < b->total ? t.start + unit : b->total;
        }
        task_spec_for(&t, 0, bodies[i], &specs[i]);
    }
    st = queue_enqueue_many(env->queue, specs, (size_t)n, results, err);
    free(results);
    free(bodies);
    free(specs);
    return st;
}

/* Items, tasks, then processing: the part a replay may resume. */
static enum status finish_creation(const struct batch_env *env, struct batch *b,
                                   const struct create_request *req, enum lang lang,
                                   struct error *err)
{
    struct item *items = NULL;
    enum status st;

    build_items(b, req, &items);
    st = store_put_items(env->store, b->id, items, req->n_images, err);
    free_items(items, req->n_images);
    if (st != ST_OK) {
        log_error("cannot store the items of batch %s: %s", b->id, err->message);
        return lang_error(err, lang, ST_UNAVAILABLE, "create_failed");
    }
    st = enqueue_batch(env, b, err);
    if (st == ST_OK)
        st = batch_schedule_reconcile(env, b->id, b->generation, err);
    if (st != ST_OK) {
        log_error("cannot enqueue batch %s: %s", b->id, err->message);
        return lang_error(err, lang, ST_UNAVAILABLE, "enqueue_failed");
    }
    st = store_set_batch_status(env->store, b->id, BATCH_CREATING, BATCH_PROCESSING, env->now(),
                                err);
    if (st != ST_OK && st != ST_FAILED_PRECONDITION) {
        log_error("cannot start batch %s: %s", b->id, err->message);
        return lang_error(err, lang, ST_UNAVAILABLE, "create_failed");
    }
    /* FAILED_PRECONDITION: another replay got there first; processing either way. */
    if (b->status == BATCH_CREATING)
        b->status = BATCH_PROCESSING;
    return ST_OK;
}

enum status batch_create(const struct batch_env *env, const json_t *body,
                         const char *idempotency_key, enum lang lang, struct create_result *out,
                         struct error *err)
{
    const struct batch_config *cfg = env->cfg;
    struct create_limits limits = {cfg->max_images, cfg->allow_insecure_urls};
    struct create_request req;
    struct batch *b = &out->batch;
    struct batch existing;
    enum status st;
    int64_t now = env->now();

    memset(out, 0, sizeof(*out));
    batch_init(&existing);
    if (idempotency_key) {
        size_t n = strlen(idempotency_key), i;
        bool ok = n > 0 && n < IDEM_KEY_MAX;

        for (i = 0; ok && i < n; i++)
            ok = idempotency_key[i] > 0x20 && idempotency_key[i] < 0x7f;
        if (!ok)
            return lang_error(err, lang, ST_INVALID, "invalid_idempotency_key");
    }
    st = create_request_parse(body, &limits, lang, &req, err);
    if (st != ST_OK)
        return st;
    if (env->validate_options) {
        struct error why;

        error_clear(&why);
        if (env->validate_options(req.type, req.options, &why) != ST_OK) {
            st = lang_error(err, lang, ST_INVALID, "invalid_options", why.message);
            create_request_release(&req);
            return st;
        }
    }

    if (!id_random(b->id, sizeof(b->id), "batch_", 20))
        BUG("batch id does not fit");
    str_copy(b->user_id, sizeof(b->user_id), req.user_id);
    str_copy(b->type, sizeof(b->type), req.type);
    str_copy(b->priority, sizeof(b->priority), req.priority);
    b->status = BATCH_CREATING;
    b->total = (int64_t)req.n_images;
    b->options = req.options ? json_deep_copy(req.options) : NULL;
    b->webhook_url = xstrdup(req.webhook_url);
    b->created_at = b->updated_at = now;
    b->generation = 1;
    if (env->item_cost)
        b->cost_estimate = (double)b->total * env->item_cost(req.type, NULL, req.options);
    b->shards = cfg->shards < b->total ? cfg->shards : (int)b->total;
    if (b->shards < 1)
        b->shards = 1;
    if (idempotency_key) {
        str_copy(b->idempotency_key, sizeof(b->idempotency_key), idempotency_key);
        request_hash(body, idempotency_key, b->request_hash);
    }
    if (req.dry_run) {
        out->dry_run = true;
        goto out;
    }

    st = store_create_batch(env->store, b, &existing, err);
    if (st == ST_ALREADY_EXISTS) {
        if (strcmp(existing.request_hash, b->request_hash) != 0) {
            st = lang_error(err, lang, ST_CONFLICT, "idempotency_key_reused");
            goto out;
        }
        batch_release(b);
        *b = existing;
        batch_init(&existing);
        out->replayed = true;
        st = ST_OK;
        if (b->status != BATCH_CREATING)
            goto out;
        log_info("resuming the creation of batch %s", b->id);
    } else if (st != ST_OK) {
        log_error("cannot store batch: %s", err->message);
        st = lang_error(err, lang, ST_UNAVAILABLE, "create_failed");
        goto out;
    }
    st = finish_creation(env, b, &req, lang, err);
    if (st != ST_OK && !idempotency_key) {
        /* Without a key the partner cannot resume this batch: say it failed. */
        struct error ignored;

        store_set_batch_status(env->store, b->id, BATCH_CREATING, BATCH_FAILED, env->now(),
                               &ignored);
    }
out:
    batch_release(&existing);
    create_request_release(&req);
    if (st != ST_OK)
        create_result_release(out);
    return st;
}

void create_result_release(struct create_result *r)
{
    batch_release(&r->batch);
}
