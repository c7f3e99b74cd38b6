#include "queue/local_queue.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/backoff.h"
#include "core/id.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "queue/local_queue_db.h"

/* Cloud Tasks' limits (gcp.md 1.2, 1.3). */
#define TASK_BODY_MAX     (100 * 1024)
#define SCHEDULE_AHEAD_US (30LL * 24 * 3600 * 1000000)
/* Rows per transaction in enqueue_many: one fsync-free WAL commit per chunk. */
#define ENQUEUE_CHUNK 500
/* Length of generated names ([0-9a-z]), as random as Cloud Tasks' own. */
#define GENERATED_NAME_LEN 24

/* ---- shared connection helpers (local_queue_db.h) ------------------------ */

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS tasks ("
    " name TEXT PRIMARY KEY,"
    " schedule_time INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " dispatch_count INTEGER NOT NULL DEFAULT 0,"
    " response_count INTEGER NOT NULL DEFAULT 0,"
    " first_attempt_at INTEGER NOT NULL DEFAULT 0,"
    " lease_until INTEGER NOT NULL DEFAULT 0,"
    " lease_owner TEXT NOT NULL DEFAULT '',"
    " last_status INTEGER NOT NULL DEFAULT 0,"
    " body BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS tasks_due ON tasks (schedule_time, lease_until);"
    "CREATE TABLE IF NOT EXISTS task_tombstones ("
    " name TEXT PRIMARY KEY,"
    " deleted_at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS task_tombstones_age ON task_tombstones (deleted_at);";

enum status lq_db_error(sqlite3 *db, int rc, const char *what, struct error *err)
{
    int primary = rc & 0xff;
    enum status st = primary == SQLITE_BUSY || primary == SQLITE_LOCKED ? ST_UNAVAILABLE : ST_IO;

    return error_set(err, st, NULL, "%s: %s", what, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

enum status lq_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **out, struct error *err)
{
    int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, out, NULL);

    if (rc != SQLITE_OK)
        return lq_db_error(db, rc, "cannot prepare queue statement", err);
    return ST_OK;
}

enum status lq_begin(sqlite3 *db, struct error *err)
{
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

    if (rc != SQLITE_OK)
        return lq_db_error(db, rc, "cannot begin queue transaction", err);
    return ST_OK;
}

enum status lq_commit(sqlite3 *db, struct error *err)
{
    int rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);

    if (rc != SQLITE_OK) {
        lq_rollback(db);
        return lq_db_error(db, rc, "cannot commit queue transaction", err);
    }
    return ST_OK;
}

void lq_rollback(sqlite3 *db)
{
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

enum status lq_step_done(sqlite3 *db, sqlite3_stmt *st, const char *what, int *changes,
                         struct error *err)
{
    int rc = sqlite3_step(st);
    enum status s = ST_OK;

    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        s = lq_db_error(db, rc, what, err);
    else if (changes)
        *changes = sqlite3_changes(db);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return s;
}

enum status lq_purge_tombstones(sqlite3 *db, int64_t now_us, struct error *err)
{
    sqlite3_stmt *st = NULL;
    enum status s;
    int rc;

    rc = sqlite3_prepare_v2(db, "DELETE FROM task_tombstones WHERE deleted_at < ?1", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return lq_db_error(db, rc, "cannot purge task tombstones", err);
    sqlite3_bind_int64(st, 1, now_us - LQ_TOMBSTONE_WINDOW_US);
    s = lq_step_done(db, st, "cannot purge task tombstones", NULL, err);
    sqlite3_finalize(st);
    return s;
}

/* WAL is a property of the file: set once, retried while another connection holds a lock. */
static enum status set_wal(sqlite3 *db, const char *path, struct error *err)
{
    char mode[16] = "";
    int attempt, rc = SQLITE_OK;

    for (attempt = 1; attempt <= 20; attempt++) {
        sqlite3_stmt *st = NULL;

        rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(st);
            if (rc == SQLITE_ROW)
                str_copy(mode, sizeof(mode), (const char *)sqlite3_column_text(st, 0));
        }
        sqlite3_finalize(st);
        if (rc == SQLITE_ROW)
            break;
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            break;
        time_sleep_ms(backoff_jitter_ms(attempt, 10, 500, random_unit()));
    }
    if (rc != SQLITE_ROW)
        return lq_db_error(db, rc, "cannot enable wal on the queue database", err);
    if (strcmp(mode, "wal") != 0)
        return error_set(err, ST_IO, NULL, "queue database %s refused wal mode (journal mode %s)",
                         path, mode);
    return ST_OK;
}

enum status lq_db_open(const char *path, sqlite3 **out, struct error *err)
{
    sqlite3 *db = NULL;
    enum status st = ST_OK;
    int rc;

    *out = NULL;
    rc = sqlite3_open_v2(path, &db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        st = error_set(err, ST_IO, NULL, "cannot open queue database %s: %s", path,
                       db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        goto out;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, LQ_BUSY_TIMEOUT_MS);
    rc = sqlite3_exec(db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        st = lq_db_error(db, rc, "cannot configure the queue database", err);
        goto out;
    }
    st = set_wal(db, path, err);
    if (st != ST_OK)
        goto out;
    st = lq_begin(db, err);
    if (st != ST_OK)
        goto out;
    rc = sqlite3_exec(db, schema_sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        st = lq_db_error(db, rc, "cannot create the queue tables", err);
        lq_rollback(db);
        goto out;
    }
    st = lq_commit(db, err);
out:
    if (st != ST_OK) {
        sqlite3_close(db);
        return st;
    }
    *out = db;
    return ST_OK;
}

/* ---- the producer ------------------------------------------------------- */

/*
 * One connection guarded by a mutex: enqueues are short transactions, and a
 * second connection would only contend for SQLite's single write lock.
 */
struct local_queue {
    pthread_mutex_t mu;
    sqlite3 *db;
    sqlite3_stmt *tomb_check; /* live tombstone for a name */
    sqlite3_stmt *insert;
    sqlite3_stmt *del;
    sqlite3_stmt *tomb_put;
    int64_t last_purge_us;
};

/* A task checked and ready for insertion. */
struct prepared_task {
    char name[TASK_NAME_MAX];
    int64_t schedule_time;
};

/* Validates a spec against Cloud Tasks' rules and fills p (generated name, effective time). */
static enum status task_prepare(const struct task_spec *t, int64_t now, struct prepared_task *p,
                                struct error *err)
{
    enum status st;

    if (t->name[0] == '\0') {
        if (!id_random(p->name, sizeof(p->name), "", GENERATED_NAME_LEN))
            BUG("generated task name does not fit");
    } else {
        st = queue_check_name(t->name, err);
        if (st != ST_OK)
            return st;
        str_copy(p->name, sizeof(p->name), t->name);
    }
    if (t->body_len > TASK_BODY_MAX)
        return error_set(err, ST_TOO_LARGE, "task_too_large",
                         "task %.64s has a %zu-byte body, over the %d-byte limit", p->name,
                         t->body_len, TASK_BODY_MAX);
    if (t->body_len > 0 && !t->body)
        return error_set(err, ST_INVALID, NULL, "task %.64s has a length but no body", p->name);
    if (t->schedule_time < 0 || t->schedule_time > now + SCHEDULE_AHEAD_US)
        return error_set(err, ST_INVALID, "invalid_schedule_time",
                         "task %.64s is scheduled more than 30 days ahead or before 1970", p->name);
    /* Unset or in the past means now, as with Cloud Tasks. */
    p->schedule_time = t->schedule_time < now ? now : t->schedule_time;
    return ST_OK;
}

/* Inserts one prepared task inside the caller's transaction. */
static enum status task_insert(struct local_queue *lq, const struct prepared_task *p,
                               const struct task_spec *t, int64_t now, struct error *err)
{
    enum status st;
    int rc, changes = 0;

    sqlite3_bind_text(lq->tomb_check, 1, p->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(lq->tomb_check, 2, now - LQ_TOMBSTONE_WINDOW_US);
    rc = sqlite3_step(lq->tomb_check);
    sqlite3_reset(lq->tomb_check);
    sqlite3_clear_bindings(lq->tomb_check);
    if (rc == SQLITE_ROW)
        return error_set(err, ST_ALREADY_EXISTS, NULL,
                         "task %.64s was deleted or completed less than an hour ago", p->name);
    if (rc != SQLITE_DONE)
        return lq_db_error(lq->db, rc, "cannot check task tombstones", err);

    sqlite3_bind_text(lq->insert, 1, p->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(lq->insert, 2, p->schedule_time);
    sqlite3_bind_int64(lq->insert, 3, now);
    sqlite3_bind_blob64(lq->insert, 4, t->body_len ? t->body : "", (sqlite3_uint64)t->body_len,
                        SQLITE_STATIC);
    st = lq_step_done(lq->db, lq->insert, "cannot insert task", &changes, err);
    if (st != ST_OK)
        return st;
    if (changes == 0)
        return error_set(err, ST_ALREADY_EXISTS, NULL, "task %.64s already exists", p->name);
    return ST_OK;
}

static void maybe_purge(struct local_queue *lq, int64_t now)
{
    struct error err;

    if (now - lq->last_purge_us < LQ_PURGE_EVERY_US)
        return;
    lq->last_purge_us = now;
    if (lq_purge_tombstones(lq->db, now, &err) != ST_OK)
        log_warn("local queue: %s", err.message);
}

/*
 * Creates tasks[0..n) in one transaction. Per-task outcomes go to results;
 * errs[i] is filled for the failures. A database failure rolls the whole
 * chunk back and becomes every valid task's outcome.
 */
static void enqueue_chunk(struct local_queue *lq, const struct task_spec *tasks, size_t n,
                          enum status *results, struct error *errs)
{
    struct prepared_task p;
    int64_t now = time_now_us();
    struct error dberr;
    enum status st;
    size_t i;

    pthread_mutex_lock(&lq->mu);
    maybe_purge(lq, now);
    st = lq_begin(lq->db, &dberr);
    if (st != ST_OK)
        goto fail;
    for (i = 0; i < n; i++) {
        error_clear(&errs[i]);
        results[i] = task_prepare(&tasks[i], now, &p, &errs[i]);
        if (results[i] != ST_OK)
            continue;
        results[i] = task_insert(lq, &p, &tasks[i], now, &errs[i]);
        if (results[i] != ST_OK && results[i] != ST_ALREADY_EXISTS) {
            dberr = errs[i];
            st = results[i];
            lq_rollback(lq->db);
            goto fail;
        }
    }
    st = lq_commit(lq->db, &dberr);
    if (st != ST_OK)
        goto fail;
    pthread_mutex_unlock(&lq->mu);
    return;
fail:
    pthread_mutex_unlock(&lq->mu);
    for (i = 0; i < n; i++) {
        error_clear(&errs[i]);
        results[i] = task_prepare(&tasks[i], now, &p, &errs[i]);
        if (results[i] == ST_OK) {
            results[i] = st;
            errs[i] = dberr;
        }
    }
}

static enum status lq_enqueue_many(void *state, const struct task_spec *tasks, size_t n,
                                   enum status *results, struct error *err)
{
    struct local_queue *lq = state;
    struct error *errs = NULL;
    size_t i, first = n, failed = 0;

    if (n == 0)
        return ST_OK;
    errs = xcalloc(n < ENQUEUE_CHUNK ? n : ENQUEUE_CHUNK, sizeof(*errs));
    for (i = 0; i < n; i += ENQUEUE_CHUNK) {
        size_t j, m = n - i < ENQUEUE_CHUNK ? n - i : ENQUEUE_CHUNK;

        enqueue_chunk(lq, tasks + i, m, results + i, errs);
        for (j = 0; j < m; j++) {
            if (results[i + j] == ST_OK || results[i + j] == ST_ALREADY_EXISTS)
                continue;
            if (failed++ == 0) {
                first = i + j;
                if (err)
                    *err = errs[j];
            }
        }
    }
    free(errs);
    if (failed == 0)
        return ST_OK;
    error_prefix(err, "cannot enqueue task %zu of %zu (%zu failed)", first, n, failed);
    return results[first];
}

static enum status lq_enqueue(void *state, const struct task_spec *task, struct error *err)
{
    struct local_queue *lq = state;
    struct error e;
    enum status st;

    enqueue_chunk(lq, task, 1, &st, &e);
    if (st != ST_OK && err)
        *err = e;
    return st;
}

static enum status lq_remove(void *state, const char *name, struct error *err)
{
    struct local_queue *lq = state;
    int64_t now = time_now_us();
    enum status st;
    int changes = 0;

    st = queue_check_name(name, err);
    if (st != ST_OK)
        return st;
    pthread_mutex_lock(&lq->mu);
    st = lq_begin(lq->db, err);
    if (st != ST_OK)
        goto out;
    sqlite3_bind_text(lq->del, 1, name, -1, SQLITE_STATIC);
    st = lq_step_done(lq->db, lq->del, "cannot delete task", &changes, err);
    if (st == ST_OK && changes > 0) {
        sqlite3_bind_text(lq->tomb_put, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(lq->tomb_put, 2, now);
        st = lq_step_done(lq->db, lq->tomb_put, "cannot tombstone task", NULL, err);
    }
    if (st != ST_OK) {
        lq_rollback(lq->db);
        goto out;
    }
    st = lq_commit(lq->db, err);
out:
    pthread_mutex_unlock(&lq->mu);
    return st;
}

static void lq_close(void *state)
{
    struct local_queue *lq = state;

    if (!lq)
        return;
    sqlite3_finalize(lq->tomb_check);
    sqlite3_finalize(lq->insert);
    sqlite3_finalize(lq->del);
    sqlite3_finalize(lq->tomb_put);
    sqlite3_close(lq->db);
    pthread_mutex_destroy(&lq->mu);
    free(lq);
}

static const struct queue_ops local_queue_ops = {
    .close = lq_close,
    .enqueue = lq_enqueue,
    .enqueue_many = lq_enqueue_many,
    .remove = lq_remove,
};

struct queue *queue_local_open(const char *sqlite_path, const struct queue_config *qc,
                               struct error *err)
{
    struct local_queue *lq = NULL;
    struct queue *q = NULL;
    enum status st;

    if (!sqlite_path || !sqlite_path[0] || !qc) {
        error_set(err, ST_INVALID, NULL, "local queue needs a database path and a queue config");
        return NULL;
    }
    lq = xcalloc(1, sizeof(*lq));
    pthread_mutex_init(&lq->mu, NULL);
    st = lq_db_open(sqlite_path, &lq->db, err);
    if (st == ST_OK)
        st = lq_prepare(lq->db, "SELECT 1 FROM task_tombstones WHERE name = ?1 AND deleted_at > ?2",
                        &lq->tomb_check, err);
    if (st == ST_OK)
        st = lq_prepare(lq->db,
                        "INSERT OR IGNORE INTO tasks (name, schedule_time, created_at, body)"
                        " VALUES (?1, ?2, ?3, ?4)",
                        &lq->insert, err);
    if (st == ST_OK)
        st = lq_prepare(lq->db, "DELETE FROM tasks WHERE name = ?1", &lq->del, err);
    if (st == ST_OK)
        st = lq_prepare(lq->db,
                        "INSERT OR REPLACE INTO task_tombstones (name, deleted_at) VALUES (?1, ?2)",
                        &lq->tomb_put, err);
    if (st != ST_OK) {
        error_prefix(err, "cannot open local queue %s", qc->name);
        lq_close(lq);
        return NULL;
    }
    q = xcalloc(1, sizeof(*q));
    q->ops = &local_queue_ops;
    q->state = lq;
    q->name = "local";
    return q;
}
