/*
 * firestore_store.h - the store port (store.h) on Firestore over REST
 * (gcp/firestore.h), the production twin of sqlite_store.c. It behaves as
 * sqlite_store.h documents (the contract suite in tests/contract runs on
 * both); where it differs, it says so below.
 *
 * Data model (DESIGN.md section 4); times are timestampValue (µs), 0 is
 * stored as null where a time is optional:
 *
 *   batches/{batchId}                id, userId, type, priority, status, totalImages,
 *                                    options (map), webhook, idempotencyKey, requestHash,
 *                                    costEstimate, createdAt, updatedAt, completedAt,
 *                                    generation, shards
 *   batches/{batchId}/items/{itemId} index, url, metadata (map), status, attempts,
 *                                    generation, provider, providerJobId, polls,
 *                                    result {key, contentType, bytes, provider, cached,
 *                                    costMicros}, error {code, message, retryable},
 *                                    leaseUntil, startedAt, completedAt, durationMs, shard
 *   batches/{batchId}/shards/{k}     processed, success, failure, cancelled, durationMsSum,
 *                                    costMicros
 *   dead_letters/{batchId}_{itemId}  batchId, itemId, generation, errorCode, errorMessage,
 *                                    attempts, history, createdAt
 *   idempotency/{sha256hex(userId "\n" key)}  userId, key, batchId, requestHash,
 *                                    expiresAt (a TTL policy field)
 *   result_cache/{key}               result {key, contentType, bytes, provider}, createdAt
 *
 * JSON that Firestore cannot hold as a map (an array directly inside an
 * array, "__x__" or empty keys, nesting deeper than 20) is kept as JSON text
 * in optionsJson / metadataJson / historyJson instead.
 *
 * How each operation maps onto Firestore:
 *
 *  - create_batch: one commit: the batch with currentDocument.exists=false,
 *    the idempotency claim with exists=false (when keyed) and the zeroed
 *    shard documents. ALREADY_EXISTS reads the claim and the batch back
 *    (one batchGet) to fill *existing.
 *  - put_items: one read of the batch (its generation), then batchWrite in
 *    chunks of at most put_chunk_writes writes and put_chunk_bytes bytes,
 *    put_parallel chunks in flight; every write has exists=false, so a
 *    per-write ALREADY_EXISTS means "already there, left untouched". Only
 *    failed writes with retryable codes are resent (by the client).
 *  - item_begin, item_set_job, item_release_lease, item_drop_job, set_batch_status:
 *    transactions: read the document inside the transaction (batchGet),
 *    decide, commit the masked update.
 *  - item_finish (invariant 1): one transaction reading the item; when it
 *    is terminal or of another generation nothing is written (rolled back,
 *    *applied = false); otherwise one commit holds the item update and the
 *    shard's increments (processed, success|failure|cancelled,
 *    durationMsSum, costMicros) as updateTransforms on the shard with
 *    exists=true. A
 *    shard that does not exist fails that commit: ST_INVALID, nothing
 *    written. (SQLite also refuses a bad shard for an already terminal
 *    item; here that case answers *applied = false.)
 *  - try_complete (invariant 3): a cheap check outside any transaction (the
 *    batch, and a sum aggregation of the shards' processed) filters the
 *    calls that cannot complete; the decision itself is a transaction
 *    reading the batch and every shard (one batchGet) and writing the final
 *    status. Competing winners abort and re-read: one wins per generation.
 *  - get_counts: one runQuery of the batch's shards subcollection (reads =
 *    shards); no shard documents means no batch (ST_NOT_FOUND).
 *  - list_items: runQuery on the items subcollection (parent = the batch),
 *    status == X when filtered, orderBy index, __name__, limit + 1, offset
 *    or a cursor after the last (index, name). An empty page checks that the
 *    batch exists. Needs the composite index items (status ASC, index ASC)
 *    (deploy/firestore.indexes.json).
 *  - list_batches: runQuery where userId == u orderBy createdAt DESC,
 *    __name__ ASC; index batches (userId ASC, createdAt DESC, __name__ ASC).
 *  - retry_failed, cancel_batch: one transaction each, reading the batch
 *    and the affected items by query pages of tx_page documents (cursor on
 *    index, __name__), writing the items, the shard counters (increments)
 *    and the batch together. The commit must stay under Firestore's 10 MiB
 *    request limit: item writes are masked to the fields that change
 *    (about 400 bytes each), so 10,000 items fit; beyond the limit the
 *    operation fails with ST_TOO_LARGE and changes nothing.
 *  - put_dead_letter: one commit overwriting the dead letter.
 *  - cache_get: one get; cache_put: one commit with exists=false, so the
 *    first writer wins (ALREADY_EXISTS is answered ST_OK).
 *
 * Page tokens have the SQLite adapter's format (base64url of
 * "<kind>1.<tag>.<number>.<id>") and the same checks.
 *
 * Ids must also be valid Firestore document ids (no '/', not "." or "..",
 * not "__x__"): ST_INVALID otherwise.
 *
 * Errors: the client's statuses pass through (ST_UNAVAILABLE, ST_TIMEOUT,
 * ST_RATE_LIMITED and ST_ABORTED after the transaction's retries are
 * transient).
 */
#ifndef STORE_FIRESTORE_STORE_H
#define STORE_FIRESTORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "gcp/firestore.h"
#include "store/store.h"

#define FIRESTORE_STORE_MESSAGE_MAX 2048 /* item error messages are cut to this (as SQLite) */

struct firestore_store_options {
    /*
     * The client to use (borrowed, must outlive the store). When NULL the
     * store makes its own from `client_options` and frees it on close.
     */
    struct firestore *client;
    struct firestore_options client_options;
    int put_chunk_writes;       /* writes per batchWrite; default and max 500 */
    size_t put_chunk_bytes;     /* bytes per batchWrite; default 9 MiB */
    int put_parallel;           /* batchWrite calls in flight; default 4 */
    int tx_page;                /* documents per query page inside transactions; default 500 */
    int64_t idempotency_ttl_us; /* expiresAt = createdAt + this; default 24 h */
};

/*
 * Opens the store. Nothing is read or written (store_ping() checks that
 * Firestore answers). Returns a new store (caller frees with store_close()),
 * or NULL with err set: ST_INVALID for bad options.
 */
struct store *store_firestore_open(const struct firestore_store_options *o, struct error *err);

/* The client under a store made by store_firestore_open() (borrowed), for stats. */
struct firestore *store_firestore_client(struct store *s);

#endif
