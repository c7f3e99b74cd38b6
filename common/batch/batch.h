/*
 * batch.h - the domain's entry points: create a batch (creator), process a
 * task (worker), and the read side (status, retry, cancel).
 *
 * The domain talks only to the ports (store, queue, blob, provider); the
 * binaries build the adapters and hand them over in a struct batch_env.
 */
#ifndef BATCH_BATCH_H
#define BATCH_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "batch/lang.h"
#include "batch/model.h"
#include "blob/blob.h"
#include "core/backoff.h"
#include "core/breaker.h"
#include "core/buf.h"
#include "core/error.h"
#include "providers/provider.h"
#include "queue/queue.h"
#include "store/store.h"

struct batch_config {
    int64_t max_images;
    bool allow_insecure_urls;
    int64_t fanout_unit;       /* batches larger than this enqueue fan-out tasks */
    int shards;                /* counter shards per batch (capped by the batch size) */
    int64_t lease_s;           /* how long one attempt holds an item */
    struct retry_config retry; /* the queue's retry config, to know the final attempt */
    int64_t default_item_ms;   /* assumed duration before any item finished (ETA) */
    int64_t poll_initial_ms;   /* first poll of an asynchronous job after this */
    int64_t poll_max_ms;       /* polls slow down up to this interval */
    int64_t poll_deadline_s;   /* a job still running after this fails as timed out */
    int64_t output_max_bytes;  /* largest provider output accepted */
    int64_t
        reconcile_after_s; /* a processing batch re-drives its stuck items this often; 0: never */
};

/*
 * A provider serving one batch type. Several routes for one type form its
 * fallback chain, tried in order: a route whose breaker is open is skipped.
 */
struct provider_route {
    const char *type; /* "virtual-staging" */
    struct provider *provider;
    struct breaker *breaker; /* may be NULL: always allowed */
};

struct batch_env {
    struct store *store;
    struct queue *queue;
    struct blob *blob;
    const struct provider_route *providers; /* n_providers entries */
    size_t n_providers;
    const struct batch_config *cfg;
    int64_t (*now)(void); /* µs; time_now_us unless a test injects a clock */

    /* Optional hooks from the provider layer (NULL: no check, no cost, no cache). */
    /* Checks a batch's options for its type at creation (model, ratio, duration...). */
    enum status (*validate_options)(const char *type, const json_t *options, struct error *err);
    /* Price of one item in USD; provider NULL means the type's primary provider. */
    double (*item_cost)(const char *type, const char *provider, const json_t *options);
    /* Fetches a partner image (the result cache keys on its bytes). */
    enum status (*fetch)(void *ud, const char *url, struct buf *out, char content_type[64],
                         struct error *err);
    void *fetch_ud;
    /*
     * Delivers one webhook: POSTs body to url with the given header lines.
     * ST_OK on 2xx; a transient status asks the queue to retry; anything
     * else gives up. NULL: webhooks are not sent.
     */
    enum status (*deliver)(void *ud, const char *url, const char *const *headers, const char *body,
                           struct error *err);
    void *deliver_ud;
    /* Standard Webhooks signing key (raw bytes), NULL/0: deliveries are unsigned. */
    const unsigned char *webhook_key;
    size_t webhook_key_len;
};

/* ---- creator ------------------------------------------------------------ */

struct create_result {
    struct batch batch; /* the batch created (or found again) */
    bool replayed;      /* an Idempotency-Key matched an earlier request */
    bool dry_run;       /* nothing was written */
};

/*
 * POST /api/batch/create: validates body, writes the batch and its items,
 * enqueues the work and moves the batch to processing. With an idempotency
 * key, a repeated request returns the first batch (resuming its creation if
 * it was interrupted); the same key with another body is ST_CONFLICT
 * (idempotency_key_reused). Errors carry localized messages and stable codes.
 */
enum status batch_create(const struct batch_env *env, const json_t *body,
                         const char *idempotency_key, enum lang lang, struct create_result *out,
                         struct error *err);
void create_result_release(struct create_result *r);

/* ---- worker ------------------------------------------------------------- */

struct push_meta {
    const char *task_name;
    int64_t retry_count;     /* X-CloudTasks-TaskRetryCount */
    int64_t execution_count; /* X-CloudTasks-TaskExecutionCount */
};

struct task_reply {
    int http_status;   /* 200 done, 503/429 retry, 400 bad task */
    int retry_after_s; /* with 429/503 */
    char outcome[32];  /* for logs and metrics: completed, failed, ignored, retry, ... */
    char message[256];
};

/*
 * POST /api/batch/worker: handles one task body. Never answers 2xx before
 * the store holds the outcome; answers 503 (or 429 + Retry-After) for
 * transient failures so the queue retries; records the failure and a dead
 * letter on the final attempt.
 */
void batch_handle_task(const struct batch_env *env, const char *body, size_t len,
                       const struct push_meta *meta, struct task_reply *reply);

/*
 * Schedules the first round of the reconciler of a batch generation
 * (reconcile_after_s from now): invariant 4, no item is ever lost.
 */
enum status batch_schedule_reconcile(const struct batch_env *env, const char *batch_id,
                                     int64_t generation, struct error *err);

/* Enqueues a webhook task for a batch event ("batch.completed", "batch.cancelled"). */
void batch_enqueue_webhook(const struct batch_env *env, const struct batch *b, const char *event);

/*
 * Standard Webhooks signature: "v1," + base64(HMAC-SHA256(key, id "." ts "." body))
 * into out (capacity >= 64).
 */
void webhook_signature(const unsigned char *key, size_t key_len, const char *msg_id,
                       int64_t timestamp, const char *body, char *out, size_t cap);

/* ---- read side and operations ------------------------------------------ */

/*
 * Builds the seed-shaped status document of a batch (new reference):
 * batchId, status, progress, totalImages, processedImages, successCount,
 * failureCount, cancelledCount, createdAt, estimatedCompletion, images[...]
 * and paging fields. q filters the images listed. owner (NULL: anyone)
 * must be the batch's user: another user's batch is ST_NOT_FOUND.
 */
enum status batch_status_json(const struct batch_env *env, const char *batch_id, const char *owner,
                              const struct item_query *q, enum lang lang, json_t **out,
                              struct error *err);

/*
 * Cancels a batch for its owner (another user's batch is ST_NOT_FOUND): no
 * provider call starts for it afterwards, items not started end cancelled,
 * jobs in flight are cancelled at the provider by their next poll (enqueued
 * at once), results already produced are kept. A second cancel is harmless;
 * a finished batch is ST_CONFLICT (batch_not_cancellable).
 */
enum status batch_cancel(const struct batch_env *env, const char *batch_id, const char *user_id,
                         enum lang lang, json_t **out, struct error *err);

/* Re-drives the failed items of a batch (manual retry); owner as for batch_status_json. */
enum status batch_retry(const struct batch_env *env, const char *batch_id, const char *owner,
                        enum lang lang, json_t **out, struct error *err);

/* ETA in µs since the epoch, or 0 when unknown or finished. */
int64_t batch_eta(const struct batch *b, const struct batch_counts *c, int64_t now,
                  int64_t default_item_ms);

#endif
