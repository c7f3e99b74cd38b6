/*
 * local_queue_db.h - internal to the local queue (local_queue.c and
 * dispatcher.c): the SQLite schema both sides share and the connection and
 * transaction helpers they use. Nothing outside common/queue includes it.
 *
 * Schema (created with CREATE ... IF NOT EXISTS by whichever side opens the
 * file first; the store's tables and its user_version are left alone). One
 * queue per database file. Times are µs since the epoch, 0 meaning "never".
 *
 *   tasks(name PRIMARY KEY, schedule_time, created_at, dispatch_count,
 *         response_count, first_attempt_at, lease_until, lease_owner,
 *         last_status, body)
 *     schedule_time   when the next attempt is due (the ETA header)
 *     dispatch_count  attempts dispatched so far, counted when leased
 *     response_count  responses received, 5xx excluded (ExecutionCount)
 *     lease_until     a dispatcher owns the row until then; due rows are
 *                     schedule_time <= now AND lease_until <= now
 *     lease_owner     the owning dispatcher's random id; with
 *                     dispatch_count it names one attempt, so an owner
 *                     whose lease ran out cannot overwrite a newer attempt
 *     last_status     HTTP status of the previous attempt (0 = none)
 *     body            last, so that the small columns stay in the row's
 *                     first page even for 100 KB bodies
 *   task_tombstones(name PRIMARY KEY, deleted_at)
 *     names deleted, completed or dropped; creating one again within
 *     LQ_TOMBSTONE_WINDOW_US is ST_ALREADY_EXISTS (Cloud Tasks' ~1 h
 *     de-duplication window). Older rows are purged opportunistically.
 */
#ifndef QUEUE_LOCAL_QUEUE_DB_H
#define QUEUE_LOCAL_QUEUE_DB_H

#include <stdint.h>

#include <sqlite3.h>

#include "core/error.h"

#define LQ_TOMBSTONE_WINDOW_US (3600LL * 1000000LL)
#define LQ_PURGE_EVERY_US      (60LL * 1000000LL)
#define LQ_BUSY_TIMEOUT_MS     10000

/*
 * Opens a connection of its own on path: WAL (a property of the file, set
 * once), synchronous NORMAL, busy_timeout, and the schema above. The
 * connection is used by one thread at a time (the caller's mutex or thread
 * guarantees it). New handle, caller closes it with sqlite3_close().
 */
enum status lq_db_open(const char *path, sqlite3 **out, struct error *err);

/* Prepares a statement that lives as long as the connection. */
enum status lq_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out, struct error *err);

/*
 * Maps a SQLite result code to a status (busy and locked: ST_UNAVAILABLE,
 * anything else ST_IO) and sets err to "<what>: <sqlite message>".
 */
enum status lq_db_error(sqlite3 *db, int rc, const char *what, struct error *err);

/* BEGIN IMMEDIATE (takes the write lock up front, waiting up to busy_timeout), COMMIT, ROLLBACK.
 */
enum status lq_begin(sqlite3 *db, struct error *err);
enum status lq_commit(sqlite3 *db, struct error *err);
void lq_rollback(sqlite3 *db);

/* Runs a prepared write statement to completion and resets it; *changes may be NULL. */
enum status lq_step_done(sqlite3 *db, sqlite3_stmt *st, const char *what, int *changes,
                         struct error *err);

/* Deletes tombstones older than the de-duplication window (autocommit). */
enum status lq_purge_tombstones(sqlite3 *db, int64_t now_us, struct error *err);

#endif
