/*
 * process.c - the worker's use case: one task, at least once.
 *
 * Rules (DESIGN.md section 7): never answer 2xx before the store holds the
 * outcome; never call a provider for an item whose outcome is stored or
 * whose job exists; transient failures answer 503/429 so the queue retries,
 * except on the final attempt, which records the failure and a dead letter;
 * permanent failures are recorded and answered 200. The terminal transition
 * and the counter move together in store_item_finish(), so a duplicated
 * push can never count twice.
 */
#include <stdio.h>
#include <string.h>

#include "batch/batch.h"
#include "batch/tasks.h"
#include "core/codec.h"
#include "core/id.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/util.h"

struct ctx {
    const struct batch_env *env;
    const struct push_meta *meta;
    struct task_reply *reply;
    struct task_body task;
    struct batch batch;
    struct item item;
    char cache_key[65]; /* set when the batch asked for the result cache */
};

static void reply_set(struct task_reply *r, int http, const char *outcome, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void reply_set(struct task_reply *r, int http, const char *outcome, const char *fmt, ...)
{
    va_list ap;

    r->http_status = http;
    str_copy(r->outcome, sizeof(r->outcome), outcome);
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof(r->message), fmt, ap);
    va_end(ap);
}

/* A store failure: the queue retries the task later. */
static void reply_store_error(struct ctx *c, const struct error *err)
{
    reply_set(c->reply, 503, "retry", "store: %s", err->message);
    c->reply->retry_after_s = 0;
}

static void count_item(const struct ctx *c, const char *provider, const char *outcome)
{
    const char *labels[] = {c->batch.type, provider, outcome};

    /* Declaring is idempotent and cheap next to a provider call. */
    metric_add(metric_counter("batch_items_total", "item outcomes by type and provider",
                              "type,provider,outcome"),
               labels, 1);
}

static struct provider *provider_named(const struct batch_env *env, const char *name)
{
    size_t i;

    for (i = 0; i < env->n_providers; i++)
        if (strcmp(env->providers[i].provider->name, name) == 0)
            return env->providers[i].provider;
    return NULL;
}

static bool final_attempt(const struct ctx *c)
{
    double elapsed = 0;

    if (c->item.started_at > 0)
        elapsed = (double)(c->env->now() - c->item.started_at) / 1e6;
    return !backoff_should_retry(&c->env->cfg->retry, (int)c->meta->retry_count + 1, elapsed);
}

/* Enqueues the webhook of an event of a batch generation (no-op without a URL). */
void batch_enqueue_webhook(const struct batch_env *env, const struct batch *b, const char *event)
{
    struct task_body t;
    struct task_spec spec;
    char body[TASK_BODY_MAX];
    struct error err;
    enum status st;

    if (!b->webhook_url || !env->deliver)
        return;
    memset(&t, 0, sizeof(t));
    t.kind = TASK_WEBHOOK;
    str_copy(t.batch_id, sizeof(t.batch_id), b->id);
    t.generation = b->generation;
    str_copy(t.event, sizeof(t.event), event);
    task_spec_for(&t, 0, body, &spec);
    st = queue_enqueue(env->queue, &spec, &err);
    if (st != ST_OK && st != ST_ALREADY_EXISTS)
        log_error("cannot enqueue the %s webhook of batch %s: %s", event, b->id, err.message);
}

/* Called after a terminal transition was applied: the completion check of invariant 3. */
static void check_completion(struct ctx *c)
{
    enum batch_status final = BATCH_PROCESSING;
    struct error err;
    bool won = false;

    if (store_try_complete(c->env->store, c->batch.id, c->task.generation, c->env->now(), &won,
                           &final, &err) != ST_OK) {
        /* Not fatal: the next finished item, or a reconciler, completes the batch. The
         * last item's own retry would not help since its outcome is stored. */
        log_warn("cannot check completion of batch %s: %s", c->batch.id, err.message);
        return;
    }
    if (won) {
        log_write(LOG_NOTICE,
                  json_pack("{s:s, s:I}", "status", batch_status_name(final), "generation",
                            (json_int_t)c->task.generation),
                  "batch %s finished: %s", c->batch.id, batch_status_name(final));
        /* Only the winner notifies: one completion webhook per generation. */
        batch_enqueue_webhook(c->env, &c->batch, "batch.completed");
    }
}

static enum status finish(struct ctx *c, const struct item_outcome *o, bool *applied)
{
    struct error err;
    enum status st;

    st = store_item_finish(c->env->store, c->batch.id, c->item.id, c->task.generation,
                           item_shard(c->item.id, c->batch.shards), o, applied, &err);
    if (st != ST_OK) {
        reply_store_error(c, &err);
        return st;
    }
    if (*applied)
        check_completion(c);
    return ST_OK;
}

static const char *extension_for(const char *content_type)
{
    if (str_starts_with(content_type, "image/png"))
        return ".png";
    if (str_starts_with(content_type, "image/jpeg"))
        return ".jpg";
    if (str_starts_with(content_type, "image/webp"))
        return ".webp";
    if (str_starts_with(content_type, "video/mp4"))
        return ".mp4";
    return ".bin";
}

/* Output bytes -> blob -> terminal transition. */
static void complete_with_output(struct ctx *c, struct provider *p, struct provider_output *po,
                                 int64_t duration_ms)
{
    struct item_result result;
    struct item_outcome o;
    struct error err;
    enum status st;
    bool applied = false;

    memset(&result, 0, sizeof(result));
    snprintf(result.key, sizeof(result.key), "results/%s/%s-g%lld%s", c->batch.id, c->item.id,
             (long long)c->task.generation, extension_for(po->content_type));
    str_copy(result.content_type, sizeof(result.content_type),
             po->content_type[0] ? po->content_type : "application/octet-stream");
    result.bytes = (int64_t)po->data.len;
    str_copy(result.provider, sizeof(result.provider), p->name);
    if (c->env->item_cost)
        result.cost_micros =
            (int64_t)(c->env->item_cost(c->batch.type, p->name, c->batch.options) * 1e6 + 0.5);
    st = blob_put(c->env->blob, result.key, po->data.data, po->data.len, result.content_type, &err);
    if (st != ST_OK && st != ST_ALREADY_EXISTS) {
        /* The provider was paid; keep the lease so nobody calls it again until the queue
         * retries, and say why. The retry calls the provider again only after the lease. */
        reply_set(c->reply, 503, "retry", "cannot store output: %s", err.message);
        return;
    }
    memset(&o, 0, sizeof(o));
    o.status = ITEM_COMPLETED;
    o.result = &result;
    o.duration_ms = duration_ms;
    o.now = c->env->now();
    if (finish(c, &o, &applied) != ST_OK)
        return;
    if (applied && c->cache_key[0] &&
        store_cache_put(c->env->store, c->cache_key, &result, o.now, &err) != ST_OK)
        log_warn("cannot cache the result of item %s: %s", c->item.id, err.message);
    count_item(c, p->name, applied ? "completed" : "duplicate");
    reply_set(c->reply, 200, applied ? "completed" : "duplicate", "item %s completed", c->item.id);
}

/* A cache hit: the earlier output, at no cost, without calling anyone. */
static void complete_from_cache(struct ctx *c, const struct item_result *cached)
{
    struct item_result result = *cached;
    struct item_outcome o;
    bool applied = false;

    result.cached = true;
    result.cost_micros = 0;
    memset(&o, 0, sizeof(o));
    o.status = ITEM_COMPLETED;
    o.result = &result;
    o.now = c->env->now();
    if (finish(c, &o, &applied) != ST_OK)
        return;
    count_item(c, "cache", applied ? "completed" : "duplicate");
    reply_set(c->reply, 200, applied ? "cached" : "duplicate", "item %s served from the cache",
              c->item.id);
}

static void fail_item(struct ctx *c, const char *provider, const char *code, const char *message,
                      bool retryable, bool dead_letter)
{
    struct item_outcome o;
    bool applied = false;

    memset(&o, 0, sizeof(o));
    o.status = ITEM_FAILED;
    o.error_code = code;
    o.error_message = message;
    o.retryable = retryable;
    o.now = c->env->now();
    if (dead_letter) {
        struct dead_letter dl = {c->batch.id, c->item.id, c->task.generation,
                                 code,        message,    c->item.attempts,
                                 NULL,        o.now};
        struct error err;

        /* Before the terminal write: if this fails, the retry still finds the item open. */
        if (store_put_dead_letter(c->env->store, &dl, &err) != ST_OK) {
            reply_store_error(c, &err);
            return;
        }
    }
    if (finish(c, &o, &applied) != ST_OK)
        return;
    count_item(c, provider, applied ? "failed" : "duplicate");
    log_write(LOG_WARNING,
              json_pack("{s:s, s:s, s:b, s:I}", "code", code, "provider", provider, "deadLetter",
                        dead_letter, "attempt", (json_int_t)c->item.attempts),
              "item %s of batch %s failed: %s", c->item.id, c->batch.id, message);
    reply_set(c->reply, 200, applied ? "failed" : "duplicate", "item %s failed: %s", c->item.id,
              message);
}

static void cancel_item(struct ctx *c)
{
    struct item_outcome o;
    bool applied = false;

    memset(&o, 0, sizeof(o));
    o.status = ITEM_CANCELLED;
    o.error_code = "batch_cancelled";
    o.error_message = "batch cancelled";
    o.now = c->env->now();
    if (finish(c, &o, &applied) != ST_OK)
        return;
    reply_set(c->reply, 200, "cancelled", "batch %s is cancelled", c->batch.id);
}

/* Schedules poll number n of the item's job. */
static enum status schedule_poll(struct ctx *c, int64_t n, struct error *err)
{
    const struct batch_config *cfg = c->env->cfg;
    struct task_body t = c->task;
    struct task_spec spec;
    char body[TASK_BODY_MAX];
    double delay = (double)cfg->poll_initial_ms;
    enum status st;
    int64_t i;

    for (i = 1; i < n && delay < (double)cfg->poll_max_ms; i++)
        delay *= 1.5;
    if (delay > (double)cfg->poll_max_ms)
        delay = (double)cfg->poll_max_ms;
    delay *= 0.8 + 0.4 * random_unit(); /* +-20% jitter spreads polls of a batch apart */
    t.kind = TASK_POLL;
    t.poll = n;
    t.attempt = c->item.attempts;
    task_spec_for(&t, c->env->now() + (int64_t)(delay * 1000), body, &spec);
    st = queue_enqueue(c->env->queue, &spec, err);
    return st == ST_ALREADY_EXISTS ? ST_OK : st;
}

static void on_transient(struct ctx *c, struct provider *p, const struct provider_output *po)
{
    struct error err;

    if (final_attempt(c)) {
        fail_item(c, p->name, po->error_code, po->error_message, true, true);
        return;
    }
    if (store_item_release_lease(c->env->store, c->batch.id, c->item.id, c->task.generation,
                                 po->error_code, po->error_message, c->env->now(), &err) != ST_OK)
        log_warn("cannot release item %s: %s", c->item.id, err.message);
    count_item(c, p->name, "retry");
    reply_set(c->reply, po->retry_after_s > 0 ? 429 : 503, "retry", "%s", po->error_message);
    c->reply->retry_after_s = po->retry_after_s;
}

static void handle_output(struct ctx *c, struct provider *p, struct provider_output *po,
                          int64_t started_us)
{
    int64_t duration_ms = (time_mono_us() - started_us) / 1000;
    struct error err;

    switch (po->outcome) {
    case PROVIDER_DONE:
        complete_with_output(c, p, po, duration_ms);
        return;
    case PROVIDER_STARTED:
    case PROVIDER_RUNNING:
        if (!po->job_id[0]) {
            fail_item(c, p->name, "provider_protocol", "provider started a job without an id",
                      false, false);
            return;
        }
        /* The job id is stored before anything else can fail: a second submit would be
         * a second bill. */
        if (store_item_set_job(c->env->store, c->batch.id, c->item.id, c->task.generation, p->name,
                               po->job_id, 0, c->env->now(), &err) != ST_OK) {
            log_error("job %s of item %s submitted but not recorded: %s", po->job_id, c->item.id,
                      err.message);
            reply_store_error(c, &err);
            return;
        }
        if (schedule_poll(c, 1, &err) != ST_OK) {
            reply_set(c->reply, 503, "retry", "cannot schedule poll: %s", err.message);
            return;
        }
        reply_set(c->reply, 200, "started", "job %s started", po->job_id);
        return;
    case PROVIDER_TRANSIENT:
        on_transient(c, p, po);
        return;
    case PROVIDER_PERMANENT:
        fail_item(c, p->name, po->error_code[0] ? po->error_code : "provider_error",
                  po->error_message, false, false);
        return;
    }
}

static enum status load_batch(struct ctx *c)
{
    struct error err;
    enum status st = store_get_batch(c->env->store, c->task.batch_id, &c->batch, &err);

    if (st == ST_NOT_FOUND)
        reply_set(c->reply, 200, "dropped", "batch %s does not exist", c->task.batch_id);
    else if (st != ST_OK)
        reply_store_error(c, &err);
    return st;
}

/*
 * The first provider of the batch's type whose breaker lets a call through
 * (the fallback chain). NULL when none does: *retry_ms says when one may.
 */
static const struct provider_route *choose_route(struct ctx *c, bool *any, int64_t *retry_ms)
{
    int64_t now_ms = time_mono_ms(), wait;
    size_t i;

    *any = false;
    *retry_ms = INT64_MAX;
    for (i = 0; i < c->env->n_providers; i++) {
        const struct provider_route *r = &c->env->providers[i];

        if (strcmp(r->type, c->batch.type) != 0)
            continue;
        *any = true;
        wait = 0;
        if (!r->breaker || breaker_allow(r->breaker, now_ms, &wait))
            return r;
        if (wait < *retry_ms)
            *retry_ms = wait;
    }
    return NULL;
}

/* Feeds a call's outcome to the breaker of the provider that made it. */
static void breaker_feed(const struct batch_env *env, const char *provider,
                         enum provider_outcome outcome)
{
    size_t i;

    for (i = 0; i < env->n_providers; i++) {
        const struct provider_route *r = &env->providers[i];

        if (r->breaker && strcmp(r->provider->name, provider) == 0) {
            /* A moderated prompt says nothing about the provider's health. */
            breaker_record(r->breaker, outcome != PROVIDER_TRANSIENT, time_mono_ms());
            return;
        }
    }
}

/*
 * The cache key of an item: sha256 over the image bytes and everything that
 * shapes the output (type, provider, the batch's options, the item's
 * metadata with its prompt), with sorted JSON keys.
 */
static void cache_key(struct ctx *c, const struct buf *image, const char *provider, char out[65])
{
    char *options = json_dumps(c->batch.options, JSON_COMPACT | JSON_SORT_KEYS);
    char *meta = json_dumps(c->item.metadata, JSON_COMPACT | JSON_SORT_KEYS);
    char image_hash[65];
    struct buf k;

    sha256_hex(image->data ? image->data : "", image->len, image_hash);
    buf_init(&k, SIZE_MAX);
    buf_printf(&k, "%s\n%s\n%s\n%s\n%s", image_hash, c->batch.type, provider,
               options ? options : "{}", meta ? meta : "{}");
    sha256_hex(k.data, k.len, out);
    buf_release(&k);
    free(options);
    free(meta);
}

static bool cache_wanted(const struct ctx *c)
{
    return c->env->fetch && json_is_true(json_object_get(c->batch.options, "cache"));
}

/* Still allowed to call a provider? A cancel may have landed since the batch was read. */
static bool batch_still_running(struct ctx *c)
{
    struct batch fresh;
    struct error err;
    bool running = true;

    batch_init(&fresh);
    if (store_get_batch(c->env->store, c->batch.id, &fresh, &err) == ST_OK)
        running = fresh.status == BATCH_PROCESSING;
    batch_release(&fresh);
    return running;
}

static void process_item(struct ctx *c)
{
    const struct batch_config *cfg = c->env->cfg;
    const struct provider_route *route;
    struct provider_output po;
    struct provider_input in;
    struct provider *p;
    enum item_begin begin;
    struct error err;
    struct buf image;
    char ctype[64]; /* of image, which outlives the cache block: the provider reads both */
    int64_t t0, retry_ms;
    bool any;
    int tries;

    if (load_batch(c) != ST_OK)
        return;
    if (c->batch.status == BATCH_FAILED || c->batch.status == BATCH_CREATING) {
        /* creating: the batch is being written; the queue retries shortly. */
        if (c->batch.status == BATCH_CREATING)
            reply_set(c->reply, 503, "retry", "batch %s is still being created", c->batch.id);
        else
            reply_set(c->reply, 200, "ignored", "batch %s failed", c->batch.id);
        return;
    }
    for (tries = 0;; tries++) {
        if (store_item_begin(c->env->store, c->batch.id, c->task.item_id, c->task.generation,
                             c->env->now(), cfg->lease_s * 1000000, &begin, &c->item,
                             &err) != ST_OK) {
            reply_store_error(c, &err);
            return;
        }
        if (begin != BEGIN_LEASED || tries > 0 || !final_attempt(c))
            break;
        /* The final attempt must not give up on a leased item: if its holder died, nothing
         * else would ever finish it. Wait for the lease, then look again. */
        {
            int64_t wait_ms = (c->item.lease_until - c->env->now()) / 1000 + 1000;

            if (wait_ms > 0 && wait_ms < 300000)
                time_sleep_ms(wait_ms);
            item_release(&c->item);
        }
    }
    switch (begin) {
    case BEGIN_TERMINAL:
        reply_set(c->reply, 200, "duplicate", "item %s is already %s", c->item.id,
                  item_status_name(c->item.status));
        return;
    case BEGIN_STALE:
        reply_set(c->reply, 200, "stale", "task of generation %lld, item is at %lld",
                  (long long)c->task.generation, (long long)c->item.generation);
        return;
    case BEGIN_LEASED: {
        int64_t left = (c->item.lease_until - c->env->now()) / 1000000 + 1;

        reply_set(c->reply, 503, "busy", "item %s is being processed", c->item.id);
        c->reply->retry_after_s = (int)(left > 60 ? 60 : left < 1 ? 1 : left);
        return;
    }
    case BEGIN_HAS_JOB:
        /* A redelivered submit of an async item: make sure its polling goes on. */
        if (schedule_poll(c, c->item.polls + 1, &err) != ST_OK)
            reply_set(c->reply, 503, "retry", "cannot schedule poll: %s", err.message);
        else
            reply_set(c->reply, 200, "polling", "item %s has job %s", c->item.id,
                      c->item.provider_job_id);
        return;
    case BEGIN_STARTED:
        break;
    }
    log_context_add_str("itemId", c->item.id);
    log_context_add("attempt", json_integer(c->item.attempts));
    if (c->batch.status == BATCH_CANCELLED || !batch_still_running(c)) {
        cancel_item(c);
        return;
    }
    route = choose_route(c, &any, &retry_ms);
    if (!route) {
        struct provider_output none;

        if (!any) {
            fail_item(c, "none", "provider_not_configured", "no provider serves this type", false,
                      false);
            return;
        }
        /* Every provider of the chain is resting: the queue brings the item back later. */
        provider_output_init(&none, 0);
        provider_output_fail(&none, PROVIDER_TRANSIENT, "provider_circuit_open",
                             "every provider of %s is unavailable (circuit open)", c->batch.type);
        none.retry_after_s = (int)((retry_ms + 999) / 1000);
        on_transient(c, c->env->providers[0].provider, &none);
        provider_output_release(&none);
        return;
    }
    p = route->provider;
    memset(&in, 0, sizeof(in));
    in.batch_id = c->batch.id;
    in.item_id = c->item.id;
    in.type = c->batch.type;
    in.image_url = c->item.url;
    in.metadata = c->item.metadata;
    in.options = c->batch.options;
    in.attempt = (int)c->item.attempts;
    buf_init(&image, (size_t)cfg->output_max_bytes);
    if (cache_wanted(c)) {
        struct item_result cached;

        if (c->env->fetch(c->env->fetch_ud, c->item.url, &image, ctype, &err) != ST_OK) {
            struct provider_output po_fetch;

            provider_output_init(&po_fetch, 0);
            provider_output_fail(&po_fetch,
                                 status_is_transient(err.status) ? PROVIDER_TRANSIENT
                                                                 : PROVIDER_PERMANENT,
                                 error_code(&err), "cannot fetch the image: %s", err.message);
            handle_output(c, p, &po_fetch, time_mono_us());
            provider_output_release(&po_fetch);
            buf_release(&image);
            return;
        }
        cache_key(c, &image, p->name, c->cache_key);
        if (store_cache_get(c->env->store, c->cache_key, &cached, &err) == ST_OK) {
            complete_from_cache(c, &cached);
            buf_release(&image);
            return;
        }
        in.image_data = image.data;
        in.image_len = image.len;
        in.image_type = ctype;
    }
    provider_output_init(&po, (size_t)cfg->output_max_bytes);
    t0 = time_mono_us();
    if (p->submit(p, &in, &po) != ST_OK && po.outcome == PROVIDER_DONE)
        provider_output_fail(&po, PROVIDER_TRANSIENT, "provider_error", "%s submit failed",
                             p->name);
    breaker_feed(c->env, p->name, po.outcome);
    buf_release(&image);
    handle_output(c, p, &po, t0);
    provider_output_release(&po);
}

/* Submissions an item may get when its jobs keep failing in a retryable way. */
static int64_t max_submissions(const struct ctx *c)
{
    int64_t n = c->env->cfg->retry.max_attempts;

    return n > 0 && n < 10 ? n : 3;
}

/*
 * The job ended in a failure a new submission may fix (Runway INTERNAL,
 * PixVerse status 8): forget the job and enqueue a fresh item task under a
 * new name, or give up after max_submissions().
 */
static void resubmit(struct ctx *c, struct provider *p, const struct provider_output *po)
{
    struct task_body t = c->task;
    struct task_spec spec;
    char body[TASK_BODY_MAX];
    struct error err;
    enum status st;

    /* Runway's quality rejections rarely pass a second time: one more try only. */
    if (c->item.attempts >= max_submissions(c) ||
        (strcmp(po->error_code, "provider_bad_output") == 0 && c->item.attempts >= 2)) {
        fail_item(c, p->name, po->error_code[0] ? po->error_code : "provider_job_failed",
                  po->error_message, true, true);
        return;
    }
    if (store_item_drop_job(c->env->store, c->batch.id, c->item.id, c->task.generation,
                            po->error_code, po->error_message, c->env->now(), &err) != ST_OK) {
        reply_store_error(c, &err);
        return;
    }
    t.kind = TASK_ITEM;
    t.poll = 0;
    t.cancel = false;
    t.resubmit = c->item.attempts;
    task_spec_for(&t, 0, body, &spec);
    st = queue_enqueue(c->env->queue, &spec, &err);
    if (st != ST_OK && st != ST_ALREADY_EXISTS) {
        reply_set(c->reply, 503, "retry", "cannot enqueue resubmission: %s", err.message);
        return;
    }
    log_write(LOG_WARNING, json_pack("{s:s, s:s}", "provider", p->name, "code", po->error_code),
              "job %s of item %s failed (%s): submitting again", c->item.provider_job_id,
              c->item.id, po->error_message);
    reply_set(c->reply, 200, "resubmitted", "job failed, item %s submitted again", c->item.id);
}

static void process_poll(struct ctx *c)
{
    struct provider_output po;
    struct provider *p;
    struct error err;
    int64_t t0;
    enum status st;

    if (load_batch(c) != ST_OK)
        return;
    st = store_get_item(c->env->store, c->batch.id, c->task.item_id, &c->item, &err);
    if (st == ST_NOT_FOUND) {
        reply_set(c->reply, 200, "dropped", "item %s does not exist", c->task.item_id);
        return;
    }
    if (st != ST_OK) {
        reply_store_error(c, &err);
        return;
    }
    if (item_status_is_terminal(c->item.status) || c->item.generation != c->task.generation ||
        c->item.status != ITEM_POLLING || !c->item.provider_job_id[0] ||
        c->task.attempt != c->item.attempts) {
        /* attempt: a poll of an earlier submission's job, which was dropped. */
        reply_set(c->reply, 200, "ignored", "item %s is %s", c->item.id,
                  item_status_name(c->item.status));
        return;
    }
    log_context_add_str("itemId", c->item.id);
    log_context_add_str("providerJobId", c->item.provider_job_id);
    /* The item records which provider holds its job (a fallback may differ from the type). */
    p = provider_named(c->env, c->item.provider);
    if (!p || !p->poll) {
        fail_item(c, c->item.provider, "provider_not_configured",
                  "the provider of this job is not configured", false, false);
        return;
    }
    if (c->batch.status == BATCH_CANCELLED) {
        if (p->cancel && p->cancel(p, c->item.provider_job_id, &err) != ST_OK)
            log_warn("cannot cancel job %s: %s", c->item.provider_job_id, err.message);
        cancel_item(c);
        return;
    }
    provider_output_init(&po, (size_t)c->env->cfg->output_max_bytes);
    t0 = time_mono_us();
    p->poll(p, c->item.provider_job_id, &po);
    breaker_feed(c->env, p->name, po.resubmit ? PROVIDER_TRANSIENT : po.outcome);
    if (po.resubmit) {
        resubmit(c, p, &po);
    } else if (po.outcome == PROVIDER_RUNNING || po.outcome == PROVIDER_STARTED) {
        int64_t polls = c->task.poll > c->item.polls ? c->task.poll : c->item.polls;
        int64_t interval = c->env->cfg->poll_max_ms;
        int64_t max_polls = c->env->cfg->poll_deadline_s * 1000 / (interval > 0 ? interval : 1);

        if (polls >= max_polls + 5) {
            if (p->cancel && p->cancel(p, c->item.provider_job_id, &err) != ST_OK)
                log_warn("cannot cancel job %s: %s", c->item.provider_job_id, err.message);
            fail_item(c, p->name, "provider_timeout", "provider job did not finish in time", true,
                      true);
        } else if (store_item_set_job(c->env->store, c->batch.id, c->item.id, c->task.generation,
                                      p->name, c->item.provider_job_id, polls, c->env->now(),
                                      &err) != ST_OK) {
            reply_store_error(c, &err);
        } else if (schedule_poll(c, polls + 1, &err) != ST_OK) {
            reply_set(c->reply, 503, "retry", "cannot schedule poll: %s", err.message);
        } else {
            reply_set(c->reply, 200, "polling", "job %s still running", c->item.provider_job_id);
        }
    } else if (po.outcome == PROVIDER_TRANSIENT && !final_attempt(c)) {
        reply_set(c->reply, po.retry_after_s > 0 ? 429 : 503, "retry", "%s", po.error_message);
        c->reply->retry_after_s = po.retry_after_s;
    } else {
        handle_output(c, p, &po, t0);
    }
    provider_output_release(&po);
}

static void process_fanout(struct ctx *c)
{
    int64_t n = c->task.end - c->task.start, i;
    struct task_spec *specs;
    char(*bodies)[TASK_BODY_MAX];
    enum status *results;
    struct error err;

    if (load_batch(c) != ST_OK)
        return;
    if (c->batch.generation != c->task.generation || batch_status_is_terminal(c->batch.status)) {
        reply_set(c->reply, 200, "ignored", "batch %s is %s", c->batch.id,
                  batch_status_name(c->batch.status));
        return;
    }
    if (c->task.end > c->batch.total) {
        reply_set(c->reply, 200, "dropped", "range beyond the batch's %lld items",
                  (long long)c->batch.total);
        return;
    }
    specs = xcalloc((size_t)n, sizeof(*specs));
    bodies = xcalloc((size_t)n, sizeof(*bodies));
    results = xcalloc((size_t)n, sizeof(*results));
    for (i = 0; i < n; i++) {
        struct task_body t;

        memset(&t, 0, sizeof(t));
        t.kind = TASK_ITEM;
        str_copy(t.batch_id, sizeof(t.batch_id), c->batch.id);
        t.generation = c->task.generation;
        item_id_for_index(c->batch.id, c->task.start + i, t.item_id);
        task_spec_for(&t, 0, bodies[i], &specs[i]);
    }
    if (queue_enqueue_many(c->env->queue, specs, (size_t)n, results, &err) != ST_OK)
        reply_set(c->reply, 503, "retry", "fan-out incomplete: %s", err.message);
    else
        reply_set(c->reply, 200, "fanned_out", "enqueued items %lld..%lld",
                  (long long)c->task.start, (long long)c->task.end - 1);
    free(results);
    free(bodies);
    free(specs);
}

/*
 * Invariant 4, no item is ever lost: a round of the reconciler looks at the
 * items of a processing batch that are not terminal and pushes each of them
 * again (a poll for a job, the item otherwise), skipping items someone holds
 * right now. Everything downstream is idempotent, so a second push of a live
 * item costs a no-op; an item whose last task was lost gets going again. The
 * round then schedules the next one, until the batch leaves processing.
 */
static void process_reconcile(struct ctx *c)
{
    static const enum item_status open_states[] = {ITEM_PENDING, ITEM_PROCESSING, ITEM_POLLING};
    struct task_spec *specs = NULL;
    char(*bodies)[TASK_BODY_MAX] = NULL;
    enum status *results = NULL;
    size_t n = 0, cap = 0, i, k;
    int64_t now = c->env->now();
    struct error err;
    enum status st = ST_OK;

    if (load_batch(c) != ST_OK)
        return;
    if (c->batch.status != BATCH_PROCESSING || c->batch.generation != c->task.generation ||
        c->env->cfg->reconcile_after_s <= 0) {
        reply_set(c->reply, 200, "reconciled", "batch %s is %s: nothing to watch", c->batch.id,
                  batch_status_name(c->batch.status));
        return;
    }
    for (k = 0; k < ARRAY_SIZE(open_states) && st == ST_OK; k++) {
        struct item_query q = {.has_status = true, .status = open_states[k], .limit = 500};
        struct item_page page;
        char token[PAGE_TOKEN_MAX] = "";

        do {
            memset(&page, 0, sizeof(page));
            q.page_token = token[0] ? token : NULL;
            st = store_list_items(c->env->store, c->batch.id, &q, &page, &err);
            for (i = 0; st == ST_OK && i < page.n; i++) {
                const struct item *it = &page.items[i];
                struct task_body t;

                if (it->generation != c->task.generation ||
                    (it->status == ITEM_PROCESSING && it->lease_until > now))
                    continue;
                memset(&t, 0, sizeof(t));
                str_copy(t.batch_id, sizeof(t.batch_id), c->batch.id);
                str_copy(t.item_id, sizeof(t.item_id), it->id);
                t.generation = it->generation;
                t.round = c->task.round;
                if (it->status == ITEM_POLLING) {
                    t.kind = TASK_POLL;
                    t.attempt = it->attempts;
                    t.poll = it->polls + 1;
                } else {
                    t.kind = TASK_ITEM;
                }
                if (n == cap) {
                    cap = cap ? cap * 2 : 64;
                    specs = xrealloc(specs, cap * sizeof(*specs));
                    bodies = xrealloc(bodies, cap * sizeof(*bodies));
                }
                task_spec_for(&t, 0, bodies[n], &specs[n]);
                n++;
            }
            str_copy(token, sizeof(token), page.next_token);
            store_item_page_release(&page);
        } while (st == ST_OK && token[0]);
    }
    if (st != ST_OK) {
        reply_store_error(c, &err);
        goto out;
    }
    /* The bodies moved when the arrays grew: point the specs at them again. */
    for (i = 0; i < n; i++)
        specs[i].body = bodies[i];
    if (n == 0)
        /* Nothing open: if the last item's completion check failed, do it now. */
        check_completion(c);
    if (n > 0) {
        results = xcalloc(n, sizeof(*results));
        if (queue_enqueue_many(c->env->queue, specs, n, results, &err) != ST_OK) {
            reply_set(c->reply, 503, "retry", "reconcile incomplete: %s", err.message);
            goto out;
        }
        log_write(
            LOG_WARNING,
            json_pack("{s:I, s:I}", "round", (json_int_t)c->task.round, "redriven", (json_int_t)n),
            "batch %s still has %zu open items after round %lld: pushed again", c->batch.id, n,
            (long long)c->task.round);
    }
    {
        struct task_body next = c->task;
        struct task_spec spec;
        char body[TASK_BODY_MAX];

        next.round++;
        task_spec_for(&next, now + c->env->cfg->reconcile_after_s * 1000000, body, &spec);
        st = queue_enqueue(c->env->queue, &spec, &err);
        if (st != ST_OK && st != ST_ALREADY_EXISTS) {
            reply_set(c->reply, 503, "retry", "cannot schedule the next round: %s", err.message);
            goto out;
        }
    }
    reply_set(c->reply, 200, "reconciled", "round %lld re-drove %zu items",
              (long long)c->task.round, n);
out:
    free(results);
    free(bodies);
    free(specs);
}

/* Delivers one webhook (see webhook.c): the same id on every retry. */
static void process_webhook(struct ctx *c)
{
    char msg_id[160], ts[24], sig[128], id_h[192], ts_h[48], sig_h[160];
    const char *headers[5];
    struct batch_counts n;
    struct error err;
    json_t *payload;
    char *body;
    int64_t now_s = c->env->now() / 1000000;
    enum status st;

    if (load_batch(c) != ST_OK)
        return;
    if (!c->batch.webhook_url || !c->env->deliver) {
        reply_set(c->reply, 200, "dropped", "batch %s has no webhook", c->batch.id);
        return;
    }
    if (store_get_counts(c->env->store, c->batch.id, &n, &err) != ST_OK) {
        reply_store_error(c, &err);
        return;
    }
    snprintf(msg_id, sizeof(msg_id), "msg_%s_g%lld_%s", c->batch.id, (long long)c->task.generation,
             c->task.event);
    payload = json_pack(
        "{s:s, s:o, s:{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:o}}", "type", c->task.event,
        "timestamp", json_string(""), "data", "batchId", c->batch.id, "status",
        batch_status_name(c->batch.status), "generation", (json_int_t)c->task.generation,
        "totalImages", (json_int_t)c->batch.total, "processedImages", (json_int_t)n.processed,
        "successCount", (json_int_t)n.success, "failureCount", (json_int_t)n.failure,
        "cancelledCount", (json_int_t)n.cancelled, "actualCost", (double)n.cost_micros / 1e6,
        "statusUrl", json_sprintf("/api/batch/status/%s", c->batch.id));
    {
        char when[RFC3339_MAX];

        if (time_format_rfc3339(c->env->now(), when, sizeof(when)))
            json_object_set_new(payload, "timestamp", json_string(when));
    }
    body = json_dump_compact(payload);
    json_decref(payload);
    snprintf(ts, sizeof(ts), "%lld", (long long)now_s);
    snprintf(id_h, sizeof(id_h), "webhook-id: %s", msg_id);
    snprintf(ts_h, sizeof(ts_h), "webhook-timestamp: %s", ts);
    headers[0] = "Content-Type: application/json";
    headers[1] = id_h;
    headers[2] = ts_h;
    headers[3] = NULL;
    if (c->env->webhook_key_len > 0) {
        webhook_signature(c->env->webhook_key, c->env->webhook_key_len, msg_id, now_s, body, sig,
                          sizeof(sig));
        snprintf(sig_h, sizeof(sig_h), "webhook-signature: %s", sig);
        headers[3] = sig_h;
        headers[4] = NULL;
    }
    st = c->env->deliver(c->env->deliver_ud, c->batch.webhook_url, headers, body, &err);
    free(body);
    metric_add(
        metric_counter("webhook_deliveries_total", "webhook deliveries by outcome", "outcome"),
        (const char *const[]){st == ST_OK               ? "delivered"
                              : status_is_transient(st) ? "retry"
                                                        : "refused"},
        1);
    if (st == ST_OK) {
        reply_set(c->reply, 200, "delivered", "%s delivered", c->task.event);
    } else if (status_is_transient(st) && !final_attempt(c)) {
        reply_set(c->reply, 503, "retry", "webhook: %s", err.message);
    } else {
        log_write(LOG_WARNING, json_pack("{s:s}", "event", c->task.event),
                  "giving up the %s webhook of batch %s: %s", c->task.event, c->batch.id,
                  err.message);
        reply_set(c->reply, 200, "undelivered", "webhook: %s", err.message);
    }
}

/* Schedules round 1 of a batch generation's reconciler (see process_reconcile). */
enum status batch_schedule_reconcile(const struct batch_env *env, const char *batch_id,
                                     int64_t generation, struct error *err)
{
    struct task_body t;
    struct task_spec spec;
    char body[TASK_BODY_MAX];
    enum status st;

    if (env->cfg->reconcile_after_s <= 0)
        return ST_OK;
    memset(&t, 0, sizeof(t));
    t.kind = TASK_RECONCILE;
    str_copy(t.batch_id, sizeof(t.batch_id), batch_id);
    t.generation = generation;
    t.round = 1;
    task_spec_for(&t, env->now() + env->cfg->reconcile_after_s * 1000000, body, &spec);
    st = queue_enqueue(env->queue, &spec, err);
    return st == ST_ALREADY_EXISTS ? ST_OK : st;
}

void batch_handle_task(const struct batch_env *env, const char *body, size_t len,
                       const struct push_meta *meta, struct task_reply *reply)
{
    struct ctx c;
    struct error err;

    memset(reply, 0, sizeof(*reply));
    memset(&c, 0, sizeof(c));
    c.env = env;
    c.meta = meta;
    c.reply = reply;
    batch_init(&c.batch);
    item_init(&c.item);
    if (task_body_decode(body, len, &c.task, &err) != ST_OK) {
        /* A task that can never be understood must not be retried forever. */
        reply_set(reply, 200, "rejected", "invalid task: %s", err.message);
        return;
    }
    log_context_add_str("batchId", c.task.batch_id);
    log_context_add_str("taskKind", task_kind_name(c.task.kind));
    switch (c.task.kind) {
    case TASK_ITEM:
        process_item(&c);
        break;
    case TASK_POLL:
        process_poll(&c);
        break;
    case TASK_FANOUT:
        process_fanout(&c);
        break;
    case TASK_RECONCILE:
        process_reconcile(&c);
        break;
    case TASK_WEBHOOK:
        process_webhook(&c);
        break;
    }
    item_release(&c.item);
    batch_release(&c.batch);
}
