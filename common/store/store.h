/*
 * store.h - the store port: where batches, items, counters and dead letters
 * live. Adapters: sqlite_store.c (embedded), firestore_store.c (production).
 *
 * The port is shaped by the invariants of DESIGN.md section 5, and every
 * adapter must keep them the same way:
 *
 *  1. An item reaches a terminal state once per generation. store_item_finish()
 *     writes the terminal transition and increments the item's counter shard
 *     in one atomic commit, and does neither when the item is already
 *     terminal or belongs to another generation (a duplicated push).
 *  2. sum(shards.processed) == number of items in a terminal state, always:
 *     nothing else touches the shards except store_retry_failed() and
 *     store_cancel_batch(), which move items and counters together.
 *  3. store_try_complete() moves a batch out of processing at most once per
 *     generation, inside a transaction, and tells exactly one caller it won.
 *
 * A port is a struct of function pointers plus opaque state. Every function
 * returns ST_OK or a status with err filled; ST_UNAVAILABLE / ST_ABORTED /
 * ST_TIMEOUT are transient (the caller may retry the whole operation).
 * Output structs are initialised by the callee; the caller releases them
 * (batch_release, item_release, store_item_page_release).
 */
#ifndef STORE_STORE_H
#define STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batch/model.h"
#include "core/error.h"

#define PAGE_TOKEN_MAX 256

/* Filter and page for store_list_items(). */
struct item_query {
    bool has_status;
    enum item_status status;
    int limit;              /* 1..1000 */
    int64_t offset;         /* items to skip (ignored when page_token is set) */
    const char *page_token; /* from a previous page, or NULL */
};

struct item_page {
    struct item *items; /* owned array of n items */
    size_t n;
    char next_token[PAGE_TOKEN_MAX]; /* "" on the last page */
};

/* What store_item_begin() found. */
enum item_begin {
    BEGIN_STARTED,  /* the item is now processing, attempt counted, lease taken */
    BEGIN_TERMINAL, /* already completed/failed/cancelled: nothing to do */
    BEGIN_STALE,    /* the task's generation is not the item's: nothing to do */
    BEGIN_LEASED,   /* another worker holds it until item.lease_until */
    BEGIN_HAS_JOB,  /* polling: a provider job exists, never submit again */
};

/* A terminal outcome for store_item_finish(). */
struct item_outcome {
    enum item_status status;          /* ITEM_COMPLETED, ITEM_FAILED or ITEM_CANCELLED */
    const struct item_result *result; /* for completed; may be NULL otherwise */
    const char *error_code;           /* for failed/cancelled; may be NULL */
    const char *error_message;
    bool retryable;
    int64_t duration_ms;
    int64_t now; /* completion time, µs */
};

struct dead_letter {
    const char *batch_id;
    const char *item_id;
    int64_t generation;
    const char *error_code;
    const char *error_message;
    int64_t attempts;
    json_t *history; /* borrowed, may be NULL: attempt history */
    int64_t now;
};

/* An API key of a partner (api_keys/{sha256 of the key}); the key itself is never stored. */
struct api_key {
    char hash[65]; /* lowercase hex sha256 of the key */
    char user_id[USER_ID_MAX];
    char name[64];
    bool disabled;
    int64_t created_at;
};

struct store_ops {
    void (*close)(void *state);
    enum status (*ping)(void *state, struct error *err);

    enum status (*create_batch)(void *state, const struct batch *b, struct batch *existing,
                                struct error *err);
    enum status (*put_items)(void *state, const char *batch_id, const struct item *items, size_t n,
                             struct error *err);
    enum status (*get_batch)(void *state, const char *batch_id, struct batch *out,
                             struct error *err);
    enum status (*set_batch_status)(void *state, const char *batch_id, enum batch_status from,
                                    enum batch_status to, int64_t now, struct error *err);
    enum status (*list_batches)(void *state, const char *user_id, int limit, const char *page_token,
                                struct batch **out, size_t *n, char next_token[PAGE_TOKEN_MAX],
                                struct error *err);

    enum status (*get_item)(void *state, const char *batch_id, const char *item_id,
                            struct item *out, struct error *err);
    enum status (*list_items)(void *state, const char *batch_id, const struct item_query *q,
                              struct item_page *out, struct error *err);
    enum status (*item_begin)(void *state, const char *batch_id, const char *item_id,
                              int64_t generation, int64_t now, int64_t lease_us,
                              enum item_begin *result, struct item *out, struct error *err);
    enum status (*item_set_job)(void *state, const char *batch_id, const char *item_id,
                                int64_t generation, const char *provider, const char *job_id,
                                int64_t polls, int64_t now, struct error *err);
    enum status (*item_release_lease)(void *state, const char *batch_id, const char *item_id,
                                      int64_t generation, const char *error_code,
                                      const char *error_message, int64_t now, struct error *err);
    enum status (*item_finish)(void *state, const char *batch_id, const char *item_id,
                               int64_t generation, int shard, const struct item_outcome *o,
                               bool *applied, struct error *err);

    enum status (*get_counts)(void *state, const char *batch_id, struct batch_counts *out,
                              struct error *err);
    enum status (*try_complete)(void *state, const char *batch_id, int64_t generation, int64_t now,
                                bool *won, enum batch_status *final_status, struct error *err);
    enum status (*retry_failed)(void *state, const char *batch_id, int64_t now,
                                int64_t *new_generation, struct item_page *redriven,
                                struct error *err);
    enum status (*cancel_batch)(void *state, const char *batch_id, int64_t now, bool *changed,
                                struct item_page *in_flight, struct error *err);

    enum status (*put_dead_letter)(void *state, const struct dead_letter *dl, struct error *err);

    enum status (*item_drop_job)(void *state, const char *batch_id, const char *item_id,
                                 int64_t generation, const char *error_code,
                                 const char *error_message, int64_t now, struct error *err);
    enum status (*cache_get)(void *state, const char *key, struct item_result *out,
                             struct error *err);
    enum status (*cache_put)(void *state, const char *key, const struct item_result *result,
                             int64_t now, struct error *err);
    enum status (*api_key_put)(void *state, const struct api_key *k, struct error *err);
    enum status (*api_key_get)(void *state, const char *hash, struct api_key *out,
                               struct error *err);
    enum status (*rate_count)(void *state, const char *user_id, const char *kind, int64_t window,
                              int64_t amount, int64_t *total, struct error *err);
};

struct store {
    const struct store_ops *ops;
    void *state;
    const char *name; /* "sqlite", "firestore" */
};

/* ---- the calls (thin wrappers over ops, documented here) ---------------- */

/* Closes the adapter and frees s. NULL is allowed. */
void store_close(struct store *s);

/* Readiness: ST_OK when the store answers. */
enum status store_ping(struct store *s, struct error *err);

/*
 * Creates batch b (its status is normally BATCH_CREATING). When
 * b->idempotency_key is set, atomically claims (user_id, key) too: if the
 * key was already claimed, nothing is written, *existing receives that
 * batch and ST_ALREADY_EXISTS is returned. ST_ALREADY_EXISTS also when a
 * batch with b->id exists (existing then receives it).
 */
enum status store_create_batch(struct store *s, const struct batch *b, struct batch *existing,
                               struct error *err);

/*
 * Writes items of a batch (status pending, generation of the batch).
 * Idempotent: re-writing an item that exists leaves it untouched, so a
 * resumed creation never resets progress. Adapters write in bounded chunks.
 */
enum status store_put_items(struct store *s, const char *batch_id, const struct item *items,
                            size_t n, struct error *err);

/* ST_NOT_FOUND when the batch does not exist. */
enum status store_get_batch(struct store *s, const char *batch_id, struct batch *out,
                            struct error *err);

/*
 * Conditional transition: sets status `to` only if it is `from` now
 * (ST_FAILED_PRECONDITION otherwise, ST_NOT_FOUND if no batch). Sets
 * completed_at when `to` is terminal.
 */
enum status store_set_batch_status(struct store *s, const char *batch_id, enum batch_status from,
                                   enum batch_status to, int64_t now, struct error *err);

/* A user's batches, newest first; *out is a malloc'd array of *n batches. */
enum status store_list_batches(struct store *s, const char *user_id, int limit,
                               const char *page_token, struct batch **out, size_t *n,
                               char next_token[PAGE_TOKEN_MAX], struct error *err);

/* ST_NOT_FOUND when the item does not exist. */
enum status store_get_item(struct store *s, const char *batch_id, const char *item_id,
                           struct item *out, struct error *err);

/* Items ordered by index, filtered and paged per q. */
enum status store_list_items(struct store *s, const char *batch_id, const struct item_query *q,
                             struct item_page *out, struct error *err);
void store_item_page_release(struct item_page *p);

/*
 * Starts an attempt on an item for a task of `generation`. In one
 * transaction: if the item is terminal -> BEGIN_TERMINAL; if its generation
 * differs -> BEGIN_STALE; if it is polling with a job id -> BEGIN_HAS_JOB;
 * if it is processing with lease_until > now -> BEGIN_LEASED; otherwise it
 * becomes processing, attempts += 1, lease_until = now + lease_us,
 * started_at set on the first attempt -> BEGIN_STARTED. *out receives the
 * item as it is after the call in every case.
 */
enum status store_item_begin(struct store *s, const char *batch_id, const char *item_id,
                             int64_t generation, int64_t now, int64_t lease_us,
                             enum item_begin *result, struct item *out, struct error *err);

/*
 * Records an asynchronous provider job: status polling, provider, job id,
 * polls count, lease cleared. Only for a non-terminal item of `generation`
 * (ST_FAILED_PRECONDITION otherwise). Written before anything else can fail,
 * so a submitted job is never submitted again.
 */
enum status store_item_set_job(struct store *s, const char *batch_id, const char *item_id,
                               int64_t generation, const char *provider, const char *job_id,
                               int64_t polls, int64_t now, struct error *err);

/*
 * Gives the item back after a transient failure: lease cleared, status back
 * to pending (a polling item stays polling), last error noted (not terminal,
 * counters untouched). No-op for terminal items or other generations.
 */
enum status store_item_release_lease(struct store *s, const char *batch_id, const char *item_id,
                                     int64_t generation, const char *error_code,
                                     const char *error_message, int64_t now, struct error *err);

/*
 * The terminal transition (invariant 1): in one atomic commit, sets the item
 * terminal with its result or error and increments shard `shard` (processed
 * and success/failure/cancelled; duration_ms_sum and the result's
 * cost_micros for completed). When the
 * item is already terminal or of another generation, writes nothing and sets
 * *applied = false (still ST_OK).
 */
enum status store_item_finish(struct store *s, const char *batch_id, const char *item_id,
                              int64_t generation, int shard, const struct item_outcome *o,
                              bool *applied, struct error *err);

/* Sums the batch's shards. */
enum status store_get_counts(struct store *s, const char *batch_id, struct batch_counts *out,
                             struct error *err);

/*
 * The completion transition (invariant 3): in a transaction, if the batch is
 * processing, of `generation`, and processed == total, sets it to completed
 * (no failures or cancellations) or completed_with_failures, with
 * completed_at; *won = true for that one caller. Otherwise *won = false.
 */
enum status store_try_complete(struct store *s, const char *batch_id, int64_t generation,
                               int64_t now, bool *won, enum batch_status *final_status,
                               struct error *err);

/*
 * Manual retry: in one transaction, generation += 1, every failed item
 * becomes pending with the new generation (attempts 0, error cleared, job
 * cleared) and the shards give back their processed/failure counts; the
 * batch becomes processing again (completed_at cleared). The re-driven items
 * are returned for enqueueing. Only a finished batch (completed or
 * completed_with_failures) can be retried: ST_FAILED_PRECONDITION otherwise,
 * since re-driving while the current generation still has items in flight
 * would leave that generation's completion to nobody. ST_OK with an empty
 * page and unchanged generation when no item has failed.
 */
enum status store_retry_failed(struct store *s, const char *batch_id, int64_t now,
                               int64_t *new_generation, struct item_page *redriven,
                               struct error *err);

/*
 * Cancellation: in one transaction, the batch becomes cancelled (when not
 * already terminal), every pending item becomes cancelled with its shard
 * counted, and the items that were processing or polling are returned (the
 * caller cancels provider jobs; their tasks find the batch cancelled and
 * finish them as cancelled). *changed = false when already cancelled or
 * finished (a second cancel is harmless).
 */
enum status store_cancel_batch(struct store *s, const char *batch_id, int64_t now, bool *changed,
                               struct item_page *in_flight, struct error *err);

/* Records a dead letter (dead_letters/{batchId}_{itemId}); overwriting is fine. */
enum status store_put_dead_letter(struct store *s, const struct dead_letter *dl, struct error *err);

/*
 * An asynchronous job ended without a result but may succeed if submitted
 * again (Runway INTERNAL, PixVerse status 8): a polling item of `generation`
 * goes back to pending with its job id and polls cleared and the error
 * noted, so that the next item task submits a new job. No-op (ST_OK) for an
 * item that is not polling or of another generation.
 */
enum status store_item_drop_job(struct store *s, const char *batch_id, const char *item_id,
                                int64_t generation, const char *error_code,
                                const char *error_message, int64_t now, struct error *err);

/*
 * The result cache (result_cache/{key}): the output an earlier item got for
 * the same input bytes, type, options and model. get: ST_NOT_FOUND when
 * absent. put: first writer wins (a later put of the same key is ST_OK and
 * changes nothing).
 */
enum status store_cache_get(struct store *s, const char *key, struct item_result *out,
                            struct error *err);
enum status store_cache_put(struct store *s, const char *key, const struct item_result *result,
                            int64_t now, struct error *err);

/* Stores an API key (create or replace, e.g. to disable it). */
enum status store_api_key_put(struct store *s, const struct api_key *k, struct error *err);

/* Looks an API key up by the sha256 hex of the key. ST_NOT_FOUND when unknown. */
enum status store_api_key_get(struct store *s, const char *hash, struct api_key *out,
                              struct error *err);

/*
 * Fixed-window rate counting (rate_limits/{userId}_{kind}_{window}): adds
 * amount to the user's counter of `kind` for `window` (e.g. the minute
 * number) atomically and returns the new total, refused requests included.
 */
enum status store_rate_count(struct store *s, const char *user_id, const char *kind, int64_t window,
                             int64_t amount, int64_t *total, struct error *err);

#endif
