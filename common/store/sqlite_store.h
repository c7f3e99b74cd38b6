/*
 * sqlite_store.h - the store port (store.h) on one SQLite file, for the
 * embedded runtime: the creator and the worker are two processes sharing the
 * file, each with many threads.
 *
 * Storage: WAL journal, synchronous=NORMAL, foreign keys on, a 10 s busy
 * timeout. Tables mirror the Firestore data model of DESIGN.md section 4:
 * batches, items (primary key (batch_id, id)), shards (batch_id, k),
 * dead_letters, idempotency ((user_id, key) -> batch_id, request_hash). JSON
 * fields (options, metadata, dead-letter history) are stored as text. The
 * schema version is kept in PRAGMA user_version; tables of other modules may
 * share the file (they must not use user_version).
 *
 * Concurrency: a pool of connections (one per operation, never shared by two
 * threads at once). Every operation is one transaction; read-modify-write
 * operations start with BEGIN IMMEDIATE, so two writers never deadlock on a
 * lock upgrade, and writers of one process queue on a mutex rather than on
 * SQLite's sleeping busy handler. A transaction that still meets
 * SQLITE_BUSY/SQLITE_LOCKED is rolled back and retried whole a few times
 * with a small jittered backoff; then the operation fails with
 * ST_UNAVAILABLE (code "store_busy").
 *
 * Readings of the port contract this adapter implements (the contract suite
 * in tests/contract holds every adapter to them):
 *
 *  - Ids passed as strings must be non-empty and fit their model.h array
 *    (ST_INVALID otherwise). Every operation on a batch that does not exist
 *    answers ST_NOT_FOUND, list_items and put_items included.
 *  - create_batch requires 1 <= shards <= MAX_SHARDS, generation >= 1,
 *    total >= 0; it creates the shard rows k = 0..shards-1 with the batch.
 *    Idempotency claims never expire here (expires_at is recorded for parity
 *    with Firestore's TTL field only).
 *  - put_items stores each item as pending with the batch's current
 *    generation, whatever status/generation the caller's struct holds; only
 *    id, index, url and metadata are taken from it.
 *  - item_finish returns ST_INVALID (and writes nothing) for a non-terminal
 *    outcome status or a shard outside 0..shards-1. The shard an item was
 *    counted in is remembered with the item, so retry_failed gives counts
 *    back to the right shard whatever the caller passed; cancel_batch counts
 *    cancelled pending items in item_shard(id, shards).
 *  - try_complete completes when processed >= total (== in any consistent
 *    store). When it does not win, *final_status receives the batch's
 *    current status.
 *  - cancel_batch on a batch that is already cancelled still cancels items
 *    written as pending after the first cancel (a creator that was mid-way)
 *    and returns the in-flight items again, with *changed = false; on a
 *    completed or failed batch it does nothing (*changed = false, empty page).
 *  - Error messages are truncated to ITEM_ERROR_MESSAGE_MAX bytes on write.
 *  - Page tokens are opaque base64url strings bound to the listing they came
 *    from (batch and status filter, or user); anything else is ST_INVALID
 *    with code "invalid_page_token". list limits must be in 1..1000.
 *  - list_items without a token skips q->offset matching items; the next
 *    token then continues after the last item returned.
 */
#ifndef STORE_SQLITE_STORE_H
#define STORE_SQLITE_STORE_H

#include "core/error.h"
#include "store/store.h"

#define SQLITE_STORE_SCHEMA_VERSION 3
#define SQLITE_STORE_POOL_SIZE      8
#define ITEM_ERROR_MESSAGE_MAX      2048

/*
 * Opens (creating when absent) the database at path, its parent directories
 * and its schema. ":memory:" gives a private in-memory database with a pool
 * of one connection (tests only: nothing is shared or kept).
 *
 * Returns a new store (caller frees with store_close()), or NULL with err
 * set: ST_INVALID for an empty path, ST_IO when the directory or file cannot
 * be created or opened, ST_FAILED_PRECONDITION when the file holds a newer
 * schema version than this build knows, ST_UNAVAILABLE when the database
 * stayed locked.
 */
struct store *store_sqlite_open(const char *path, struct error *err);

#endif
