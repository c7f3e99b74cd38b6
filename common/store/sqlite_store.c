#include "store/sqlite_store.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sqlite3.h>

#include "batch/model.h"
#include "core/backoff.h"
#include "core/buf.h"
#include "core/codec.h"
#include "core/id.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "store/page_token.h"

#define BUSY_TIMEOUT_MS    10000
#define TX_ATTEMPTS        4
#define TX_BUDGET_MS       15000 /* no new attempt after this long: worst case ~25 s */
#define TX_BACKOFF_BASE_MS 10
#define TX_BACKOFF_CAP_MS  250
#define POOL_WAIT_S        30
#define PUT_CHUNK          500
#define LIST_LIMIT_MAX     1000
#define IDEM_TTL_US        (24LL * 3600 * 1000000)
#define PATH_CAP           4096

/* ---- schema ----------------------------------------------------------- */

/*
 * Version 1. Times are µs since the epoch (0 = unset); statuses are the
 * model's names; JSON is compact text. items.shard is the counter shard the
 * item was counted in when it became terminal (-1 before), so that a retry
 * gives the counts back to the shard that holds them.
 */
static const char schema_v1[] =
    "CREATE TABLE IF NOT EXISTS batches ("
    " id TEXT NOT NULL PRIMARY KEY,"
    " user_id TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " priority TEXT NOT NULL,"
    " status TEXT NOT NULL,"
    " total INTEGER NOT NULL,"
    " options TEXT,"
    " webhook_url TEXT,"
    " idempotency_key TEXT NOT NULL,"
    " request_hash TEXT NOT NULL,"
    " cost_estimate REAL NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " completed_at INTEGER NOT NULL,"
    " generation INTEGER NOT NULL,"
    " shards INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS batches_by_user ON batches (user_id, created_at DESC, id);"
    "CREATE TABLE IF NOT EXISTS items ("
    " batch_id TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,"
    " id TEXT NOT NULL,"
    " idx INTEGER NOT NULL,"
    " url TEXT NOT NULL,"
    " metadata TEXT,"
    " status TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " generation INTEGER NOT NULL,"
    " provider TEXT NOT NULL DEFAULT '',"
    " provider_job_id TEXT NOT NULL DEFAULT '',"
    " polls INTEGER NOT NULL DEFAULT 0,"
    " has_result INTEGER NOT NULL DEFAULT 0,"
    " result_key TEXT NOT NULL DEFAULT '',"
    " result_content_type TEXT NOT NULL DEFAULT '',"
    " result_bytes INTEGER NOT NULL DEFAULT 0,"
    " result_provider TEXT NOT NULL DEFAULT '',"
    " result_cached INTEGER NOT NULL DEFAULT 0,"
    " has_error INTEGER NOT NULL DEFAULT 0,"
    " error_code TEXT NOT NULL DEFAULT '',"
    " error_message TEXT,"
    " error_retryable INTEGER NOT NULL DEFAULT 0,"
    " lease_until INTEGER NOT NULL DEFAULT 0,"
    " started_at INTEGER NOT NULL DEFAULT 0,"
    " completed_at INTEGER NOT NULL DEFAULT 0,"
    " duration_ms INTEGER NOT NULL DEFAULT 0,"
    " shard INTEGER NOT NULL DEFAULT -1,"
    " PRIMARY KEY (batch_id, id));"
    "CREATE INDEX IF NOT EXISTS items_by_index ON items (batch_id, idx, id);"
    "CREATE INDEX IF NOT EXISTS items_by_status ON items (batch_id, status, idx, id);"
    "CREATE TABLE IF NOT EXISTS shards ("
    " batch_id TEXT NOT NULL REFERENCES batches (id) ON DELETE CASCADE,"
    " k INTEGER NOT NULL,"
    " processed INTEGER NOT NULL DEFAULT 0,"
    " success INTEGER NOT NULL DEFAULT 0,"
    " failure INTEGER NOT NULL DEFAULT 0,"
    " cancelled INTEGER NOT NULL DEFAULT 0,"
    " duration_ms_sum INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (batch_id, k)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS dead_letters ("
    " batch_id TEXT NOT NULL,"
    " item_id TEXT NOT NULL,"
    " generation INTEGER NOT NULL,"
    " error_code TEXT NOT NULL,"
    " error_message TEXT,"
    " attempts INTEGER NOT NULL,"
    " history TEXT,"
    " created_at INTEGER NOT NULL,"
    " PRIMARY KEY (batch_id, item_id));"
    "CREATE TABLE IF NOT EXISTS idempotency ("
    " user_id TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " batch_id TEXT NOT NULL,"
    " request_hash TEXT NOT NULL,"
    " expires_at INTEGER NOT NULL,"
    " PRIMARY KEY (user_id, key));";

/* Version 3: API keys and rate-limit windows. */
static const char schema_v3[] = "CREATE TABLE IF NOT EXISTS api_keys ("
                                " hash TEXT NOT NULL PRIMARY KEY,"
                                " user_id TEXT NOT NULL,"
                                " name TEXT NOT NULL,"
                                " disabled INTEGER NOT NULL,"
                                " created_at INTEGER NOT NULL);"
                                "CREATE TABLE IF NOT EXISTS rate_limits ("
                                " user_id TEXT NOT NULL,"
                                " kind TEXT NOT NULL,"
                                " window INTEGER NOT NULL,"
                                " count INTEGER NOT NULL,"
                                " PRIMARY KEY (user_id, kind, window)) WITHOUT ROWID;";

/* Version 2: the actual cost of items and shards, and the result cache. */
static const char schema_v2[] =
    "ALTER TABLE items ADD COLUMN result_cost_micros INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE shards ADD COLUMN cost_micros INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE IF NOT EXISTS result_cache ("
    " key TEXT NOT NULL PRIMARY KEY,"
    " result_key TEXT NOT NULL,"
    " content_type TEXT NOT NULL,"
    " bytes INTEGER NOT NULL,"
    " provider TEXT NOT NULL,"
    " created_at INTEGER NOT NULL);";

/* ---- statements ------------------------------------------------------- */

#define BATCH_COLS                                                                                 \
    "id, user_id, type, priority, status, total, options, webhook_url, idempotency_key, "          \
    "request_hash, cost_estimate, created_at, updated_at, completed_at, generation, shards"

/* struct item's columns, the item's counter shard (column 25), then its cost (26). */
#define ITEM_COLS                                                                                  \
    "batch_id, id, idx, url, metadata, status, attempts, generation, provider, provider_job_id, "  \
    "polls, has_result, result_key, result_content_type, result_bytes, result_provider, "          \
    "result_cached, has_error, error_code, error_message, error_retryable, lease_until, "          \
    "started_at, completed_at, duration_ms, shard, result_cost_micros"

enum q {
    Q_BEGIN_READ,
    Q_BEGIN_WRITE,
    Q_COMMIT,
    Q_ROLLBACK,
    Q_PING,
    Q_BATCH_GET,
    Q_BATCH_HEAD,
    Q_BATCH_INSERT,
    Q_BATCH_SET_STATUS,
    Q_BATCH_REDRIVE,
    Q_BATCH_LIST,
    Q_SHARD_INSERT,
    Q_SHARD_ADD,
    Q_COUNTS,
    Q_IDEM_GET,
    Q_IDEM_INSERT,
    Q_ITEM_INSERT,
    Q_ITEM_GET,
    Q_ITEM_UPDATE,
    Q_ITEM_LIST,
    Q_ITEM_LIST_STATUS,
    Q_FAILED_BY_SHARD,
    Q_ITEMS_REDRIVE,
    Q_ITEMS_REDRIVEN,
    Q_PENDING_IDS,
    Q_ITEM_CANCEL,
    Q_IN_FLIGHT,
    Q_DEAD_LETTER_PUT,
    Q_CACHE_GET,
    Q_CACHE_PUT,
    Q_KEY_PUT,
    Q_KEY_GET,
    Q_RATE_ADD,
    Q_RATE_PURGE,
    Q__COUNT
};

static const char *const sql[Q__COUNT] = {
    [Q_BEGIN_READ] = "BEGIN DEFERRED",
    [Q_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_PING] = "SELECT 1",
    [Q_BATCH_GET] = "SELECT " BATCH_COLS " FROM batches WHERE id = ?1",
    [Q_BATCH_HEAD] = "SELECT status, generation, shards, total FROM batches WHERE id = ?1",
    [Q_BATCH_INSERT] = "INSERT INTO batches (" BATCH_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
                       "?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    [Q_BATCH_SET_STATUS] =
        "UPDATE batches SET status = ?2, updated_at = ?3, completed_at = ?4 WHERE id = ?1",
    [Q_BATCH_REDRIVE] = "UPDATE batches SET status = 'processing', generation = ?2, "
                        "completed_at = 0, updated_at = ?3 WHERE id = ?1",
    [Q_BATCH_LIST] = "SELECT " BATCH_COLS " FROM batches WHERE user_id = ?1 AND "
                     "(created_at < ?2 OR (created_at = ?2 AND id > ?3)) "
                     "ORDER BY created_at DESC, id LIMIT ?4",
    [Q_SHARD_INSERT] = "INSERT INTO shards (batch_id, k) VALUES (?1, ?2)",
    [Q_SHARD_ADD] = "UPDATE shards SET processed = processed + ?3, success = success + ?4, "
                    "failure = failure + ?5, cancelled = cancelled + ?6, "
                    "duration_ms_sum = duration_ms_sum + ?7, cost_micros = cost_micros + ?8 "
                    "WHERE batch_id = ?1 AND k = ?2",
    [Q_COUNTS] = "SELECT count(*), coalesce(sum(processed), 0), coalesce(sum(success), 0), "
                 "coalesce(sum(failure), 0), coalesce(sum(cancelled), 0), "
                 "coalesce(sum(duration_ms_sum), 0), coalesce(sum(cost_micros), 0) "
                 "FROM shards WHERE batch_id = ?1",
    [Q_IDEM_GET] = "SELECT batch_id FROM idempotency WHERE user_id = ?1 AND key = ?2",
    [Q_IDEM_INSERT] = "INSERT INTO idempotency (user_id, key, batch_id, request_hash, expires_at) "
                      "VALUES (?1, ?2, ?3, ?4, ?5)",
    [Q_ITEM_INSERT] = "INSERT INTO items (batch_id, id, idx, url, metadata, status, generation) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6) "
                      "ON CONFLICT (batch_id, id) DO NOTHING",
    [Q_ITEM_GET] = "SELECT " ITEM_COLS " FROM items WHERE batch_id = ?1 AND id = ?2",
    [Q_ITEM_UPDATE] =
        "UPDATE items SET status = ?3, attempts = ?4, generation = ?5, provider = ?6, "
        "provider_job_id = ?7, polls = ?8, has_result = ?9, result_key = ?10, "
        "result_content_type = ?11, result_bytes = ?12, result_provider = ?13, "
        "result_cached = ?14, has_error = ?15, error_code = ?16, error_message = ?17, "
        "error_retryable = ?18, lease_until = ?19, started_at = ?20, completed_at = ?21, "
        "duration_ms = ?22, shard = ?23, result_cost_micros = ?24 WHERE batch_id = ?1 AND id = ?2",
    [Q_ITEM_LIST] = "SELECT " ITEM_COLS " FROM items WHERE batch_id = ?1 AND (idx, id) > (?2, ?3) "
                    "ORDER BY idx, id LIMIT ?4 OFFSET ?5",
    [Q_ITEM_LIST_STATUS] = "SELECT " ITEM_COLS " FROM items WHERE batch_id = ?1 AND status = ?6 "
                           "AND (idx, id) > (?2, ?3) ORDER BY idx, id LIMIT ?4 OFFSET ?5",
    [Q_FAILED_BY_SHARD] = "SELECT shard, count(*) FROM items WHERE batch_id = ?1 AND "
                          "status = 'failed' GROUP BY shard",
    [Q_ITEMS_REDRIVE] =
        "UPDATE items SET status = 'pending', generation = ?2, attempts = 0, provider = '', "
        "provider_job_id = '', polls = 0, has_result = 0, result_key = '', "
        "result_content_type = '', result_bytes = 0, result_provider = '', result_cached = 0, "
        "has_error = 0, error_code = '', error_message = NULL, error_retryable = 0, "
        "lease_until = 0, started_at = 0, completed_at = 0, duration_ms = 0, shard = -1, "
        "result_cost_micros = 0 WHERE batch_id = ?1 AND status = 'failed'",
    [Q_ITEMS_REDRIVEN] = "SELECT " ITEM_COLS " FROM items WHERE batch_id = ?1 AND "
                         "status = 'pending' AND generation = ?2 ORDER BY idx, id",
    [Q_PENDING_IDS] = "SELECT id FROM items WHERE batch_id = ?1 AND status = 'pending'",
    [Q_ITEM_CANCEL] = "UPDATE items SET status = 'cancelled', lease_until = 0, completed_at = ?3, "
                      "shard = ?4 WHERE batch_id = ?1 AND id = ?2",
    [Q_IN_FLIGHT] = "SELECT " ITEM_COLS " FROM items WHERE batch_id = ?1 AND "
                    "status IN ('processing', 'polling') ORDER BY idx, id",
    [Q_DEAD_LETTER_PUT] =
        "INSERT INTO dead_letters (batch_id, item_id, generation, error_code, error_message, "
        "attempts, history, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
        "ON CONFLICT (batch_id, item_id) DO UPDATE SET generation = excluded.generation, "
        "error_code = excluded.error_code, error_message = excluded.error_message, "
        "attempts = excluded.attempts, history = excluded.history, "
        "created_at = excluded.created_at",
    [Q_CACHE_GET] = "SELECT result_key, content_type, bytes, provider FROM result_cache "
                    "WHERE key = ?1",
    [Q_CACHE_PUT] = "INSERT INTO result_cache (key, result_key, content_type, bytes, provider, "
                    "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (key) DO NOTHING",
    [Q_KEY_PUT] =
        "INSERT INTO api_keys (hash, user_id, name, disabled, created_at) VALUES "
        "(?1, ?2, ?3, ?4, ?5) ON CONFLICT (hash) DO UPDATE SET user_id = excluded.user_id, "
        "name = excluded.name, disabled = excluded.disabled",
    [Q_KEY_GET] = "SELECT user_id, name, disabled, created_at FROM api_keys WHERE hash = ?1",
    [Q_RATE_ADD] =
        "INSERT INTO rate_limits (user_id, kind, window, count) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT (user_id, kind, window) DO UPDATE SET count = count + excluded.count "
        "RETURNING count",
    [Q_RATE_PURGE] = "DELETE FROM rate_limits WHERE user_id = ?1 AND kind = ?2 AND window < ?3",
};

/* ---- connections and the pool ----------------------------------------- */

struct conn {
    sqlite3 *db;
    sqlite3_stmt *stmts[Q__COUNT]; /* prepared on first use, kept for the connection's life */
    int bind_rc;                   /* first failed bind since the statement was prepared */
    bool busy;                     /* the last failure was SQLITE_BUSY/LOCKED: retry the tx */
    struct conn *next;             /* free list */
};

struct sqlite_store {
    char path[PATH_CAP];
    pthread_mutex_t mu; /* guards free */
    pthread_cond_t cv;  /* signalled when a connection comes back */
    /*
     * Held from BEGIN IMMEDIATE to COMMIT: writers of this process queue
     * here (a prompt hand-over) instead of in SQLite's busy handler, which
     * polls with sleeps of up to 100 ms. Other processes still meet the
     * busy timeout.
     */
    pthread_mutex_t write_mu;
    struct conn conns[SQLITE_STORE_POOL_SIZE];
    int size;
    struct conn *free;
};

static enum status db_error(struct conn *c, int rc, const char *what, struct error *err)
{
    int primary = rc & 0xff;
    const char *msg = c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc);

    switch (primary) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        c->busy = true;
        return error_set(err, ST_UNAVAILABLE, "store_busy", "%s: %s", what, msg);
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
        return error_set(err, ST_IO, NULL, "%s: %s", what, msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return error_set(err, ST_INTERNAL, "store_corrupt", "%s: database is corrupt: %s", what,
                         msg);
    default:
        return error_set(err, ST_INTERNAL, NULL, "%s: sqlite error %d: %s", what, rc, msg);
    }
}

/* Resets every statement of c and drops its bindings (ends any read it held open). */
static void conn_reset_all(struct conn *c)
{
    size_t i;

    for (i = 0; i < Q__COUNT; i++) {
        if (c->stmts[i]) {
            sqlite3_reset(c->stmts[i]);
            sqlite3_clear_bindings(c->stmts[i]);
        }
    }
}

/* The statement for id, prepared once per connection, reset and unbound. */
static enum status prep(struct conn *c, enum q id, sqlite3_stmt **out, struct error *err)
{
    int rc;

    if (!c->stmts[id]) {
        rc = sqlite3_prepare_v3(c->db, sql[id], -1, SQLITE_PREPARE_PERSISTENT, &c->stmts[id], NULL);
        if (rc != SQLITE_OK) {
            c->stmts[id] = NULL;
            return db_error(c, rc, "cannot prepare statement", err);
        }
    } else {
        sqlite3_reset(c->stmts[id]);
        sqlite3_clear_bindings(c->stmts[id]);
    }
    c->bind_rc = SQLITE_OK;
    *out = c->stmts[id];
    return ST_OK;
}

static void bind_rc(struct conn *c, int rc)
{
    if (rc != SQLITE_OK && c->bind_rc == SQLITE_OK)
        c->bind_rc = rc;
}

static void b_int(struct conn *c, sqlite3_stmt *st, int i, int64_t v)
{
    bind_rc(c, sqlite3_bind_int64(st, i, v));
}

static void b_double(struct conn *c, sqlite3_stmt *st, int i, double v)
{
    bind_rc(c, sqlite3_bind_double(st, i, v));
}

/* Binds text (NULL binds SQL NULL), copied by SQLite. */
static void b_textn(struct conn *c, sqlite3_stmt *st, int i, const char *s, size_t n)
{
    if (!s)
        bind_rc(c, sqlite3_bind_null(st, i));
    else
        bind_rc(c, sqlite3_bind_text64(st, i, s, n, SQLITE_TRANSIENT, SQLITE_UTF8));
}

static void b_text(struct conn *c, sqlite3_stmt *st, int i, const char *s)
{
    b_textn(c, st, i, s, s ? strlen(s) : 0);
}

/* Binds text, "" for NULL (for NOT NULL columns). */
static void b_str(struct conn *c, sqlite3_stmt *st, int i, const char *s)
{
    b_text(c, st, i, s ? s : "");
}

/* Steps once: *row tells whether a row is available. */
static enum status step(struct conn *c, sqlite3_stmt *st, bool *row, struct error *err)
{
    int rc;

    if (c->bind_rc != SQLITE_OK)
        return db_error(c, c->bind_rc, "cannot bind parameter", err);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *row = true;
        return ST_OK;
    }
    *row = false;
    if (rc == SQLITE_DONE)
        return ST_OK;
    return db_error(c, rc, "statement failed", err);
}

/* Steps a statement that returns no row; *changes (optional) gets the rows it changed. */
static enum status exec_st(struct conn *c, sqlite3_stmt *st, int64_t *changes, struct error *err)
{
    enum status s;
    bool row;

    s = step(c, st, &row, err);
    if (s == ST_OK && changes)
        *changes = sqlite3_changes64(c->db);
    return s;
}

static enum status exec_q(struct conn *c, enum q id, struct error *err)
{
    sqlite3_stmt *st = NULL;
    enum status s;

    if ((s = prep(c, id, &st, err)))
        return s;
    s = exec_st(c, st, NULL, err);
    sqlite3_reset(st);
    return s;
}

typedef enum status (*tx_fn)(struct conn *c, void *arg, struct error *err);

/*
 * Runs fn in one transaction on c: BEGIN IMMEDIATE when write, else a
 * deferred (read) transaction. fn's ST_OK commits; anything else rolls
 * back. A transaction that failed on SQLITE_BUSY/LOCKED (each attempt has
 * already waited up to the busy timeout) is retried whole, fn resetting its
 * outputs, up to TX_ATTEMPTS times within TX_BUDGET_MS.
 */
static enum status conn_tx(struct sqlite_store *s, struct conn *c, bool write, tx_fn fn, void *arg,
                           struct error *err)
{
    int64_t t0 = time_mono_ms();
    enum status st = ST_OK;
    int attempt;

    for (attempt = 1;; attempt++) {
        c->busy = false;
        if (write)
            pthread_mutex_lock(&s->write_mu);
        st = exec_q(c, write ? Q_BEGIN_WRITE : Q_BEGIN_READ, err);
        if (st == ST_OK) {
            st = fn(c, arg, err);
            conn_reset_all(c);
            if (st == ST_OK)
                st = exec_q(c, Q_COMMIT, err);
            if (st != ST_OK && !sqlite3_get_autocommit(c->db))
                sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
        }
        if (write)
            pthread_mutex_unlock(&s->write_mu);
        if (st == ST_OK && attempt > 1)
            error_clear(err); /* the earlier attempts' busy errors are moot */
        if (st == ST_OK || !c->busy)
            return st;
        if (attempt >= TX_ATTEMPTS || time_mono_ms() - t0 >= TX_BUDGET_MS)
            break;
        time_sleep_ms(
            backoff_jitter_ms(attempt, TX_BACKOFF_BASE_MS, TX_BACKOFF_CAP_MS, random_unit()));
    }
    log_warn("sqlite store %s: database still busy after %d attempts in %lld ms", s->path, attempt,
             (long long)(time_mono_ms() - t0));
    return st;
}

static enum status pool_acquire(struct sqlite_store *s, struct conn **out, struct error *err)
{
    struct timespec deadline;
    int rc = 0;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += POOL_WAIT_S;
    pthread_mutex_lock(&s->mu);
    while (!s->free && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&s->cv, &s->mu, &deadline);
    *out = s->free;
    if (*out)
        s->free = (*out)->next;
    pthread_mutex_unlock(&s->mu);
    if (!*out)
        return error_set(err, ST_UNAVAILABLE, "store_busy",
                         "no sqlite connection became free within %d s", POOL_WAIT_S);
    return ST_OK;
}

static void pool_release(struct sqlite_store *s, struct conn *c)
{
    pthread_mutex_lock(&s->mu);
    c->next = s->free;
    s->free = c;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/*
 * One operation: a pooled connection, one transaction. Failures of the
 * database itself are prefixed with what the operation was; the domain's
 * own answers (not found, precondition...) already name their subject.
 */
static enum status run_tx(struct sqlite_store *s, const char *what, bool write, tx_fn fn, void *arg,
                          struct error *err)
{
    struct conn *c = NULL;
    enum status st;

    st = pool_acquire(s, &c, err);
    if (st == ST_OK) {
        st = conn_tx(s, c, write, fn, arg, err);
        pool_release(s, c);
    }
    if (st == ST_UNAVAILABLE || st == ST_IO || st == ST_INTERNAL)
        error_prefix(err, "cannot %s", what);
    return st;
}

/* ---- validation and conversions --------------------------------------- */

/* A non-empty string that fits an array of cap bytes. */
static enum status check_str(const char *s, size_t cap, const char *what, struct error *err)
{
    if (!s || !*s)
        return error_set(err, ST_INVALID, NULL, "%s is empty", what);
    if (strnlen(s, cap) >= cap)
        return error_set(err, ST_INVALID, NULL, "%s is longer than %zu bytes", what, cap - 1);
    return ST_OK;
}

/* A possibly empty, NUL-terminated string that fits cap bytes. */
static enum status check_fits(const char *s, size_t cap, const char *what, struct error *err)
{
    if (s && strnlen(s, cap) >= cap)
        return error_set(err, ST_INVALID, NULL, "%s is longer than %zu bytes", what, cap - 1);
    return ST_OK;
}

static enum status col_str(sqlite3_stmt *st, int col, char *dst, size_t cap, const char *what,
                           struct error *err)
{
    const char *t = (const char *)sqlite3_column_text(st, col);

    if (!str_copy(dst, cap, t))
        return error_set(err, ST_INTERNAL, "store_corrupt", "stored %s is longer than %zu bytes",
                         what, cap - 1);
    return ST_OK;
}

static char *col_dup(sqlite3_stmt *st, int col)
{
    const char *t = (const char *)sqlite3_column_text(st, col);

    return t ? xstrdup(t) : NULL;
}

static enum status col_json(sqlite3_stmt *st, int col, json_t **out, const char *what,
                            struct error *err)
{
    const char *t = (const char *)sqlite3_column_text(st, col);
    struct error jerr;

    *out = NULL;
    if (!t)
        return ST_OK;
    *out = json_parse(t, (size_t)sqlite3_column_bytes(st, col), &jerr);
    if (!*out)
        return error_set(err, ST_INTERNAL, "store_corrupt", "stored %s is not json: %s", what,
                         jerr.message);
    return ST_OK;
}

static enum status col_batch_status(sqlite3_stmt *st, int col, enum batch_status *out,
                                    struct error *err)
{
    const char *t = (const char *)sqlite3_column_text(st, col);

    if (!batch_status_parse(t, out))
        return error_set(err, ST_INTERNAL, "store_corrupt", "stored batch status \"%.32s\" unknown",
                         t ? t : "");
    return ST_OK;
}

static enum status col_item_status(sqlite3_stmt *st, int col, enum item_status *out,
                                   struct error *err)
{
    const char *t = (const char *)sqlite3_column_text(st, col);

    if (!item_status_parse(t, out))
        return error_set(err, ST_INTERNAL, "store_corrupt", "stored item status \"%.32s\" unknown",
                         t ? t : "");
    return ST_OK;
}

/* Reads a BATCH_COLS row into b (released first; released again on error). */
static enum status row_batch(sqlite3_stmt *st, struct batch *b, struct error *err)
{
    enum status s;
    int64_t shards;

    batch_release(b);
    if ((s = col_str(st, 0, b->id, sizeof(b->id), "batch id", err)) ||
        (s = col_str(st, 1, b->user_id, sizeof(b->user_id), "user id", err)) ||
        (s = col_str(st, 2, b->type, sizeof(b->type), "batch type", err)) ||
        (s = col_str(st, 3, b->priority, sizeof(b->priority), "batch priority", err)) ||
        (s = col_batch_status(st, 4, &b->status, err)) ||
        (s = col_json(st, 6, &b->options, "batch options", err)) ||
        (s = col_str(st, 8, b->idempotency_key, sizeof(b->idempotency_key), "idempotency key",
                     err)) ||
        (s = col_str(st, 9, b->request_hash, sizeof(b->request_hash), "request hash", err)))
        goto fail;
    b->total = sqlite3_column_int64(st, 5);
    b->webhook_url = col_dup(st, 7);
    b->cost_estimate = sqlite3_column_double(st, 10);
    b->created_at = sqlite3_column_int64(st, 11);
    b->updated_at = sqlite3_column_int64(st, 12);
    b->completed_at = sqlite3_column_int64(st, 13);
    b->generation = sqlite3_column_int64(st, 14);
    shards = sqlite3_column_int64(st, 15);
    if (shards < 1 || shards > MAX_SHARDS) {
        s = error_set(err, ST_INTERNAL, "store_corrupt", "stored batch %s has %lld shards", b->id,
                      (long long)shards);
        goto fail;
    }
    b->shards = (int)shards;
    return ST_OK;
fail:
    batch_release(b);
    return s;
}

/* Reads an ITEM_COLS row into it (released first) and the item's shard into *shard. */
static enum status row_item(sqlite3_stmt *st, struct item *it, int *shard, struct error *err)
{
    enum status s;

    item_release(it);
    if ((s = col_str(st, 0, it->batch_id, sizeof(it->batch_id), "batch id", err)) ||
        (s = col_str(st, 1, it->id, sizeof(it->id), "item id", err)) ||
        (s = col_json(st, 4, &it->metadata, "item metadata", err)) ||
        (s = col_item_status(st, 5, &it->status, err)) ||
        (s = col_str(st, 8, it->provider, sizeof(it->provider), "provider", err)) ||
        (s = col_str(st, 9, it->provider_job_id, sizeof(it->provider_job_id), "provider job id",
                     err)) ||
        (s = col_str(st, 12, it->result.key, sizeof(it->result.key), "result key", err)) ||
        (s = col_str(st, 13, it->result.content_type, sizeof(it->result.content_type),
                     "result content type", err)) ||
        (s = col_str(st, 15, it->result.provider, sizeof(it->result.provider), "result provider",
                     err)) ||
        (s = col_str(st, 18, it->error.code, sizeof(it->error.code), "error code", err)))
        goto fail;
    it->index = sqlite3_column_int64(st, 2);
    it->url = col_dup(st, 3);
    if (!it->url)
        it->url = xstrdup("");
    it->attempts = sqlite3_column_int64(st, 6);
    it->generation = sqlite3_column_int64(st, 7);
    it->polls = sqlite3_column_int64(st, 10);
    it->has_result = sqlite3_column_int(st, 11) != 0;
    it->result.bytes = sqlite3_column_int64(st, 14);
    it->result.cached = sqlite3_column_int(st, 16) != 0;
    it->has_error = sqlite3_column_int(st, 17) != 0;
    it->error.message = col_dup(st, 19);
    it->error.retryable = sqlite3_column_int(st, 20) != 0;
    it->lease_until = sqlite3_column_int64(st, 21);
    it->started_at = sqlite3_column_int64(st, 22);
    it->completed_at = sqlite3_column_int64(st, 23);
    it->duration_ms = sqlite3_column_int64(st, 24);
    it->result.cost_micros = sqlite3_column_int64(st, 26);
    if (shard)
        *shard = sqlite3_column_int(st, 25);
    return ST_OK;
fail:
    item_release(it);
    return s;
}

/* ---- shared steps ----------------------------------------------------- */

struct batch_head {
    enum batch_status status;
    int64_t generation;
    int shards;
    int64_t total;
};

static enum status batch_head(struct conn *c, const char *batch_id, struct batch_head *h,
                              struct error *err)
{
    sqlite3_stmt *st = NULL;
    enum status s;
    bool row;

    if ((s = prep(c, Q_BATCH_HEAD, &st, err)))
        return s;
    b_text(c, st, 1, batch_id);
    if ((s = step(c, st, &row, err)))
        return s;
    if (!row)
        return error_set(err, ST_NOT_FOUND, NULL, "batch %s not found", batch_id);
    if ((s = col_batch_status(st, 0, &h->status, err)))
        return s;
    h->generation = sqlite3_column_int64(st, 1);
    h->shards = sqlite3_column_int(st, 2);
    h->total = sqlite3_column_int64(st, 3);
    return ST_OK;
}

/* The whole batch row; ST_NOT_FOUND when absent. */
static enum status batch_load(struct conn *c, const char *batch_id, struct batch *out,
                              struct error *err)
{
    sqlite3_stmt *st = NULL;
    enum status s;
    bool row;

    if ((s = prep(c, Q_BATCH_GET, &st, err)))
        return s;
    b_text(c, st, 1, batch_id);
    if ((s = step(c, st, &row, err)))
        return s;
    if (!row)
        return error_set(err, ST_NOT_FOUND, NULL, "batch %s not found", batch_id);
    return row_batch(st, out, err);
}

static enum status batch_set_status(struct conn *c, const char *batch_id, enum batch_status to,
                                    int64_t now, int64_t completed_at, struct error *err)
{
    sqlite3_stmt *st = NULL;
    enum status s;

    if ((s = prep(c, Q_BATCH_SET_STATUS, &st, err)))
        return s;
    b_text(c, st, 1, batch_id);
    b_text(c, st, 2, batch_status_name(to));
    b_int(c, st, 3, now);
    b_int(c, st, 4, completed_at);
    return exec_st(c, st, NULL, err);
}

static enum status item_load(struct conn *c, const char *batch_id, const char *item_id,
                             struct item *out, int *shard, struct error *err)
{
    sqlite3_stmt *st = NULL;
    enum status s;
    bool row;

    if ((s = prep(c, Q_ITEM_GET, &st, err)))
        return s;
    b_text(c, st, 1, batch_id);
    b_text(c, st, 2, item_id);
    if ((s = step(c, st, &row, err)))
        return s;
    if (!row)
        return error_set(err, ST_NOT_FOUND, NULL, "item %s of batch %s not found", item_id,
                         batch_id);
    return row_item(st, out, shard, err);
}

/* Writes every mutable field of it back, with its counter shard. */
static enum status item_store(struct conn *c, const struct item *it, int shard, struct error *err)
{
    sqlite3_stmt *st = NULL;
    enum status s;

    if ((s = prep(c, Q_ITEM_UPDATE, &st, err)))
        return s;
    b_text(c, st, 1, it->batch_id);
    b_text(c, st, 2, it->id);
    b_text(c, st, 3, item_status_name(it->status));
    b_int(c, st, 4, it->attempts);
    b_int(c, st, 5, it->generation);
    b_str(c, st, 6, it->provider);
    b_str(c, st, 7, it->provider_job_id);
    b_int(c, st, 8, it->polls);
    b_int(c, st, 9, it->has_result);
    b_str(c, st, 10, it->result.key);
    b_str(c, st, 11, it->result.content_type);
    b_int(c, st, 12, it->result.bytes);
    b_str(c, st, 13, it->result.provider);
    b_int(c, st, 14, it->result.cached);
    b_int(c, st, 15, it->has_error);
    b_str(c, st, 16, it->error.code);
    b_text(c, st, 17, it->error.message);
    b_int(c, st, 18, it->error.retryable);
    b_int(c, st, 19, it->lease_until);
    b_int(c, st, 20, it->started_at);
    b_int(c, st, 21, it->completed_at);
    b_int(c, st, 22, it->duration_ms);
    b_int(c, st, 23, shard);
    b_int(c, st, 24, it->result.cost_micros);
    return exec_st(c, st, NULL, err);
}

static enum status shard_add(struct conn *c, const char *batch_id, int k, int64_t processed,
                             int64_t success, int64_t failure, int64_t cancelled,
                             int64_t duration_ms, int64_t cost_micros, struct error *err)
{
    sqlite3_stmt *st = NULL;
    enum status s;
    int64_t changes = 0;

    if ((s = prep(c, Q_SHARD_ADD, &st, err)))
        return s;
    b_text(c, st, 1, batch_id);
    b_int(c, st, 2, k);
    b_int(c, st, 3, processed);
    b_int(c, st, 4, success);
    b_int(c, st, 5, failure);
    b_int(c, st, 6, cancelled);
    b_int(c, st, 7, duration_ms);
    b_int(c, st, 8, cost_micros);
    if ((s = exec_st(c, st, &changes, err)))
        return s;
    if (changes != 1)
        return error_set(err, ST_INVALID, NULL, "shard %d of batch %s does not exist", k, batch_id);
    return ST_OK;
}

static void page_push(struct item_page *p, size_t *cap, struct item **slot)
{
    if (p->n == *cap) {
        *cap = *cap ? *cap * 2 : 16;
        p->items = xrealloc(p->items, *cap * sizeof(*p->items));
    }
    *slot = &p->items[p->n];
    item_init(*slot);
}

/*
 * Steps st (ITEM_COLS rows) appending up to max items to p; *more tells
 * whether a further row exists (NULL: read everything).
 */
static enum status collect_items(struct conn *c, sqlite3_stmt *st, size_t max, struct item_page *p,
                                 bool *more, struct error *err)
{
    size_t cap = p->n;
    struct item *it;
    enum status s;
    bool row;

    if (more)
        *more = false;
    for (;;) {
        if ((s = step(c, st, &row, err)))
            return s;
        if (!row)
            return ST_OK;
        if (more && p->n == max) {
            *more = true;
            return ST_OK;
        }
        page_push(p, &cap, &it);
        if ((s = row_item(st, it, NULL, err)))
            return s;
        p->n++;
    }
}

static void page_reset(struct item_page *p)
{
    store_item_page_release(p);
}

/* ---- ping, batches ---------------------------------------------------- */

static enum status ping_tx(struct conn *c, void *arg, struct error *err)
{
    sqlite3_stmt *st = NULL;
    enum status s;
    bool row;

    UNUSED(arg);
    if ((s = prep(c, Q_PING, &st, err)))
        return s;
    if ((s = step(c, st, &row, err)))
        return s;
    if (!row)
        return error_set(err, ST_INTERNAL, NULL, "sqlite ping returned no row");
    return ST_OK;
}

static enum status sqlite_ping(void *state, struct error *err)
{
    return run_tx(state, "ping", false, ping_tx, NULL, err);
}

struct create_args {
    const struct batch *b;
    struct batch *existing;
};

static enum status create_tx(struct conn *c, void *arg, struct error *err)
{
    struct create_args *a = arg;
    const struct batch *b = a->b;
    char existing_id[BATCH_ID_MAX];
    char *options = NULL;
    sqlite3_stmt *st = NULL;
    enum status s;
    bool row;
    int k;

    batch_release(a->existing);
    if (b->idempotency_key[0]) {
        if ((s = prep(c, Q_IDEM_GET, &st, err)))
            return s;
        b_text(c, st, 1, b->user_id);
        b_text(c, st, 2, b->idempotency_key);
        if ((s = step(c, st, &row, err)))
            return s;
        if (row) {
            if ((s = col_str(st, 0, existing_id, sizeof(existing_id), "batch id", err)))
                return s;
            s = batch_load(c, existing_id, a->existing, err);
            if (s == ST_NOT_FOUND)
                return error_set(err, ST_INTERNAL, "store_corrupt",
                                 "idempotency key of user %s names missing batch %s", b->user_id,
                                 existing_id);
            if (s != ST_OK)
                return s;
            return error_set(err, ST_ALREADY_EXISTS, NULL,
                             "idempotency key already used by batch %s", existing_id);
        }
    }
    s = batch_load(c, b->id, a->existing, err);
    if (s == ST_OK)
        return error_set(err, ST_ALREADY_EXISTS, NULL, "batch %s already exists", b->id);
    if (s != ST_NOT_FOUND)
        return s;
    error_clear(err);

    if ((s = prep(c, Q_BATCH_INSERT, &st, err)))
        return s;
    options = json_dump_compact(b->options);
    b_text(c, st, 1, b->id);
    b_text(c, st, 2, b->user_id);
    b_str(c, st, 3, b->type);
    b_str(c, st, 4, b->priority);
    b_text(c, st, 5, batch_status_name(b->status));
    b_int(c, st, 6, b->total);
    b_text(c, st, 7, options);
    b_text(c, st, 8, b->webhook_url);
    b_str(c, st, 9, b->idempotency_key);
    b_str(c, st, 10, b->request_hash);
    b_double(c, st, 11, b->cost_estimate);
    b_int(c, st, 12, b->created_at);
    b_int(c, st, 13, b->updated_at);
    b_int(c, st, 14, b->completed_at);
    b_int(c, st, 15, b->generation);
    b_int(c, st, 16, b->shards);
    free(options);
    if ((s = exec_st(c, st, NULL, err)))
        return s;
    for (k = 0; k < b->shards; k++) {
        if ((s = prep(c, Q_SHARD_INSERT, &st, err)))
            return s;
        b_text(c, st, 1, b->id);
        b_int(c, st, 2, k);
        if ((s = exec_st(c, st, NULL, err)))
            return s;
    }
    if (b->idempotency_key[0]) {
        if ((s = prep(c, Q_IDEM_INSERT, &st, err)))
            return s;
        b_text(c, st, 1, b->user_id);
        b_text(c, st, 2, b->idempotency_key);
        b_text(c, st, 3, b->id);
        b_str(c, st, 4, b->request_hash);
        b_int(c, st, 5, i64_add_sat(b->created_at, IDEM_TTL_US));
        if ((s = exec_st(c, st, NULL, err)))
            return s;
    }
    return ST_OK;
}

static enum status sqlite_create_batch(void *state, const struct batch *b, struct batch *existing,
                                       struct error *err)
{
    struct batch scratch;
    struct create_args a = {b, existing ? existing : &scratch};
    enum status s;

    batch_init(a.existing);
    if ((s = check_str(b->id, sizeof(b->id), "batch id", err)) ||
        (s = check_str(b->user_id, sizeof(b->user_id), "user id", err)) ||
        (s = check_fits(b->type, sizeof(b->type), "batch type", err)) ||
        (s = check_fits(b->priority, sizeof(b->priority), "batch priority", err)) ||
        (s = check_fits(b->idempotency_key, sizeof(b->idempotency_key), "idempotency key", err)) ||
        (s = check_fits(b->request_hash, sizeof(b->request_hash), "request hash", err)))
        return s;
    if ((size_t)b->status > BATCH_FAILED)
        return error_set(err, ST_INVALID, NULL, "batch %s has an invalid status %d", b->id,
                         (int)b->status);
    if (b->shards < 1 || b->shards > MAX_SHARDS)
        return error_set(err, ST_INVALID, NULL, "batch %s: shards must be in [1, %d], not %d",
                         b->id, MAX_SHARDS, b->shards);
    if (b->generation < 1)
        return error_set(err, ST_INVALID, NULL, "batch %s: generation must be >= 1, not %lld",
                         b->id, (long long)b->generation);
    if (b->total < 0)
        return error_set(err, ST_INVALID, NULL, "batch %s: total must be >= 0", b->id);
    s = run_tx(state, "create batch", true, create_tx, &a, err);
    if (a.existing == &scratch || s != ST_ALREADY_EXISTS)
        batch_release(a.existing);
    return s;
}

struct get_batch_args {
    const char *batch_id;
    struct batch *out;
};

static enum status get_batch_tx(struct conn *c, void *arg, struct error *err)
{
    struct get_batch_args *a = arg;

    return batch_load(c, a->batch_id, a->out, err);
}

static enum status sqlite_get_batch(void *state, const char *batch_id, struct batch *out,
                                    struct error *err)
{
    struct get_batch_args a = {batch_id, out};
    enum status s;

    batch_init(out);
    if ((s = check_str(batch_id, BATCH_ID_MAX, "batch id", err)))
        return s;
    return run_tx(state, "read batch", false, get_batch_tx, &a, err);
}

struct set_status_args {
    const char *batch_id;
    enum batch_status from, to;
    int64_t now;
};

static enum status set_status_tx(struct conn *c, void *arg, struct error *err)
{
    struct set_status_args *a = arg;
    struct batch_head h;
    enum status s;

    if ((s = batch_head(c, a->batch_id, &h, err)))
        return s;
    if (h.status != a->from)
        return error_set(err, ST_FAILED_PRECONDITION, NULL, "batch %s is %s, not %s", a->batch_id,
                         batch_status_name(h.status), batch_status_name(a->from));
    return batch_set_status(c, a->batch_id, a->to, a->now,
                            batch_status_is_terminal(a->to) ? a->now : 0, err);
}

static enum status sqlite_set_batch_status(void *state, const char *batch_id,
                                           enum batch_status from, enum batch_status to,
                                           int64_t now, struct error *err)
{
    struct set_status_args a = {batch_id, from, to, now};
    enum status s;

    if ((s = check_str(batch_id, BATCH_ID_MAX, "batch id", err)))
        return s;
    if ((size_t)from > BATCH_FAILED || (size_t)to > BATCH_FAILED)
        return error_set(err, ST_INVALID, NULL, "invalid batch status transition %d -> %d",
                         (int)from, (int)to);
    return run_tx(state, "set batch status", true, set_status_tx, &a, err);
}

struct list_batches_args {
    const char *user_id;
    int limit;
    int64_t after_created;
    const char *after_id;
    const char *tag;
    struct batch **out;
    size_t *n;
    char *next_token;
};

static void batches_free(struct batch *v, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        batch_release(&v[i]);
    free(v);
}

static enum status list_batches_tx(struct conn *c, void *arg, struct error *err)
{
    struct list_batches_args *a = arg;
    sqlite3_stmt *st = NULL;
    enum status s;
    size_t cap = 0;
    bool row;

    batches_free(*a->out, *a->n);
    *a->out = NULL;
    *a->n = 0;
    a->next_token[0] = '\0';
    if ((s = prep(c, Q_BATCH_LIST, &st, err)))
        return s;
    b_text(c, st, 1, a->user_id);
    b_int(c, st, 2, a->after_created);
    b_text(c, st, 3, a->after_id);
    b_int(c, st, 4, (int64_t)a->limit + 1);
    for (;;) {
        if ((s = step(c, st, &row, err)))
            return s;
        if (!row)
            return ST_OK;
        if (*a->n == (size_t)a->limit) {
            struct batch *last = &(*a->out)[*a->n - 1];

            page_token_encode('b', a->tag, last->created_at, last->id, a->next_token);
            return ST_OK;
        }
        if (*a->n == cap) {
            cap = cap ? cap * 2 : 16;
            *a->out = xrealloc(*a->out, cap * sizeof(**a->out));
        }
        batch_init(&(*a->out)[*a->n]);
        if ((s = row_batch(st, &(*a->out)[*a->n], err)))
            return s;
        (*a->n)++;
    }
}

static enum status sqlite_list_batches(void *state, const char *user_id, int limit,
                                       const char *page_token, struct batch **out, size_t *n,
                                       char next_token[PAGE_TOKEN_MAX], struct error *err)
{
    char tag[PAGE_TOKEN_TAG_LEN + 1], after_id[BATCH_ID_MAX] = "";
    struct list_batches_args a = {user_id, limit, INT64_MAX, after_id, tag, out, n, next_token};
    enum status s;

    *out = NULL;
    *n = 0;
    next_token[0] = '\0';
    if ((s = check_str(user_id, USER_ID_MAX, "user id", err)))
        return s;
    if (limit < 1 || limit > LIST_LIMIT_MAX)
        return error_set(err, ST_INVALID, NULL, "limit must be in [1, %d], not %d", LIST_LIMIT_MAX,
                         limit);
    page_token_tag(user_id, "batches", tag);
    if (page_token && *page_token &&
        (s = page_token_decode(page_token, 'b', tag, &a.after_created, after_id, sizeof(after_id),
                               err)))
        return s;
    s = run_tx(state, "list batches", false, list_batches_tx, &a, err);
    if (s != ST_OK) {
        batches_free(*out, *n);
        *out = NULL;
        *n = 0;
        next_token[0] = '\0';
    }
    return s;
}

/* ---- items ------------------------------------------------------------ */

struct put_items_args {
    const char *batch_id;
    const struct item *items;
    size_t n;
};

static enum status put_items_tx(struct conn *c, void *arg, struct error *err)
{
    struct put_items_args *a = arg;
    struct batch_head h;
    char *metadata;
    sqlite3_stmt *st = NULL;
    enum status s;
    size_t i;

    if ((s = batch_head(c, a->batch_id, &h, err)))
        return s;
    for (i = 0; i < a->n; i++) {
        const struct item *it = &a->items[i];

        if ((s = prep(c, Q_ITEM_INSERT, &st, err)))
            return s;
        metadata = json_dump_compact(it->metadata);
        b_text(c, st, 1, a->batch_id);
        b_text(c, st, 2, it->id);
        b_int(c, st, 3, it->index);
        b_text(c, st, 4, it->url);
        b_text(c, st, 5, metadata);
        b_int(c, st, 6, h.generation);
        free(metadata);
        if ((s = exec_st(c, st, NULL, err)))
            return s;
    }
    return ST_OK;
}

static enum status sqlite_put_items(void *state, const char *batch_id, const struct item *items,
                                    size_t n, struct error *err)
{
    struct put_items_args a = {batch_id, NULL, 0};
    enum status s;
    size_t i;

    if ((s = check_str(batch_id, BATCH_ID_MAX, "batch id", err)))
        return s;
    /* Validate everything before writing anything. */
    for (i = 0; i < n; i++) {
        if ((s = check_str(items[i].id, ITEM_ID_MAX, "item id", err)))
            return s;
        if (!items[i].url)
            return error_set(err, ST_INVALID, NULL, "item %s of batch %s has no url", items[i].id,
                             batch_id);
        if (items[i].index < 0)
            return error_set(err, ST_INVALID, NULL, "item %s of batch %s has a negative index",
                             items[i].id, batch_id);
    }
    for (i = 0; i < n; i += PUT_CHUNK) {
        a.items = items + i;
        a.n = n - i < PUT_CHUNK ? n - i : PUT_CHUNK;
        if ((s = run_tx(state, "write items", true, put_items_tx, &a, err))) {
            error_prefix(err, "cannot write items %zu-%zu of batch %s", i, i + a.n - 1, batch_id);
            return s;
        }
    }
    return ST_OK;
}

struct get_item_args {
    const char *batch_id, *item_id;
    struct item *out;
};

static enum status get_item_tx(struct conn *c, void *arg, struct error *err)
{
    struct get_item_args *a = arg;

    return item_load(c, a->batch_id, a->item_id, a->out, NULL, err);
}

static enum status check_item_ids(const char *batch_id, const char *item_id, struct error *err)
{
    enum status s;

    if ((s = check_str(batch_id, BATCH_ID_MAX, "batch id", err)))
        return s;
    return check_str(item_id, ITEM_ID_MAX, "item id", err);
}

static enum status sqlite_get_item(void *state, const char *batch_id, const char *item_id,
                                   struct item *out, struct error *err)
{
    struct get_item_args a = {batch_id, item_id, out};
    enum status s;

    item_init(out);
    if ((s = check_item_ids(batch_id, item_id, err)))
        return s;
    return run_tx(state, "read item", false, get_item_tx, &a, err);
}

struct list_items_args {
    const char *batch_id;
    const struct item_query *q;
    int64_t after_index;
    const char *after_id;
    int64_t offset;
    const char *tag;
    struct item_page *out;
};

static enum status list_items_tx(struct conn *c, void *arg, struct error *err)
{
    struct list_items_args *a = arg;
    struct batch_head h;
    sqlite3_stmt *st = NULL;
    enum status s;
    bool more;

    page_reset(a->out);
    if ((s = batch_head(c, a->batch_id, &h, err)))
        return s;
    if ((s = prep(c, a->q->has_status ? Q_ITEM_LIST_STATUS : Q_ITEM_LIST, &st, err)))
        return s;
    b_text(c, st, 1, a->batch_id);
    b_int(c, st, 2, a->after_index);
    b_text(c, st, 3, a->after_id);
    b_int(c, st, 4, (int64_t)a->q->limit + 1);
    b_int(c, st, 5, a->offset);
    if (a->q->has_status)
        b_text(c, st, 6, item_status_name(a->q->status));
    if ((s = collect_items(c, st, (size_t)a->q->limit, a->out, &more, err)))
        return s;
    if (more) {
        const struct item *last = &a->out->items[a->out->n - 1];

        page_token_encode('i', a->tag, last->index, last->id, a->out->next_token);
    }
    return ST_OK;
}

static enum status sqlite_list_items(void *state, const char *batch_id, const struct item_query *q,
                                     struct item_page *out, struct error *err)
{
    char tag[PAGE_TOKEN_TAG_LEN + 1], after_id[ITEM_ID_MAX] = "";
    struct list_items_args a = {batch_id, q, INT64_MIN, after_id, 0, tag, out};
    enum status s;

    memset(out, 0, sizeof(*out));
    if ((s = check_str(batch_id, BATCH_ID_MAX, "batch id", err)))
        return s;
    if (q->limit < 1 || q->limit > LIST_LIMIT_MAX)
        return error_set(err, ST_INVALID, NULL, "limit must be in [1, %d], not %d", LIST_LIMIT_MAX,
                         q->limit);
    if (q->has_status && (size_t)q->status > ITEM_CANCELLED)
        return error_set(err, ST_INVALID, NULL, "invalid item status filter %d", (int)q->status);
    page_token_tag(batch_id, q->has_status ? item_status_name(q->status) : "*", tag);
    if (q->page_token && *q->page_token) {
        if ((s = page_token_decode(q->page_token, 'i', tag, &a.after_index, after_id,
                                   sizeof(after_id), err)))
            return s;
    } else {
        if (q->offset < 0)
            return error_set(err, ST_INVALID, NULL, "offset must be >= 0");
        a.offset = q->offset;
    }
    s = run_tx(state, "list items", false, list_items_tx, &a, err);
    if (s != ST_OK)
        page_reset(out);
    return s;
}

struct begin_args {
    const char *batch_id, *item_id;
    int64_t generation, now, lease_us;
    enum item_begin *result;
    struct item *out;
};

static enum status item_begin_tx(struct conn *c, void *arg, struct error *err)
{
    struct begin_args *a = arg;
    struct item *it = a->out;
    enum status s;
    int shard;

    if ((s = item_load(c, a->batch_id, a->item_id, it, &shard, err)))
        return s;
    if (item_status_is_terminal(it->status)) {
        *a->result = BEGIN_TERMINAL;
        return ST_OK;
    }
    if (it->generation != a->generation) {
        *a->result = BEGIN_STALE;
        return ST_OK;
    }
    if (it->status == ITEM_POLLING && it->provider_job_id[0]) {
        *a->result = BEGIN_HAS_JOB;
        return ST_OK;
    }
    if (it->status == ITEM_PROCESSING && it->lease_until > a->now) {
        *a->result = BEGIN_LEASED;
        return ST_OK;
    }
    it->status = ITEM_PROCESSING;
    it->attempts++;
    it->lease_until = i64_add_sat(a->now, a->lease_us);
    if (!it->started_at)
        it->started_at = a->now;
    if ((s = item_store(c, it, shard, err)))
        return s;
    *a->result = BEGIN_STARTED;
    return ST_OK;
}

static enum status sqlite_item_begin(void *state, const char *batch_id, const char *item_id,
                                     int64_t generation, int64_t now, int64_t lease_us,
                                     enum item_begin *result, struct item *out, struct error *err)
{
    struct begin_args a = {batch_id, item_id, generation, now, lease_us, result, out};
    enum status s;

    item_init(out);
    if ((s = check_item_ids(batch_id, item_id, err)))
        return s;
    if (lease_us < 0)
        return error_set(err, ST_INVALID, NULL, "lease must be >= 0");
    s = run_tx(state, "begin item", true, item_begin_tx, &a, err);
    if (s != ST_OK)
        item_release(out);
    return s;
}

struct set_job_args {
    const char *batch_id, *item_id;
    int64_t generation;
    const char *provider, *job_id;
    int64_t polls, now;
};

static enum status item_set_job_tx(struct conn *c, void *arg, struct error *err)
{
    struct set_job_args *a = arg;
    struct item it;
    enum status s;
    int shard;

    item_init(&it);
    if ((s = item_load(c, a->batch_id, a->item_id, &it, &shard, err)))
        goto out;
    if (item_status_is_terminal(it.status)) {
        s = error_set(err, ST_FAILED_PRECONDITION, NULL, "item %s of batch %s is already %s",
                      a->item_id, a->batch_id, item_status_name(it.status));
        goto out;
    }
    if (it.generation != a->generation) {
        s = error_set(err, ST_FAILED_PRECONDITION, NULL,
                      "item %s of batch %s is of generation %lld, not %lld", a->item_id,
                      a->batch_id, (long long)it.generation, (long long)a->generation);
        goto out;
    }
    it.status = ITEM_POLLING;
    str_copy(it.provider, sizeof(it.provider), a->provider);
    str_copy(it.provider_job_id, sizeof(it.provider_job_id), a->job_id);
    it.polls = a->polls;
    it.lease_until = 0;
    s = item_store(c, &it, shard, err);
out:
    item_release(&it);
    return s;
}

static enum status sqlite_item_set_job(void *state, const char *batch_id, const char *item_id,
                                       int64_t generation, const char *provider, const char *job_id,
                                       int64_t polls, int64_t now, struct error *err)
{
    struct set_job_args a = {batch_id, item_id, generation, provider, job_id, polls, now};
    enum status s;

    if ((s = check_item_ids(batch_id, item_id, err)) ||
        (s = check_fits(provider, PROVIDER_MAX, "provider", err)) ||
        (s = check_str(job_id, JOB_ID_MAX, "provider job id", err)))
        return s;
    return run_tx(state, "record provider job", true, item_set_job_tx, &a, err);
}

struct release_args {
    const char *batch_id, *item_id;
    int64_t generation;
    const char *error_code, *error_message;
    int64_t now;
    bool drop_job; /* item_drop_job: a polling item goes back to pending without its job */
};

static enum status item_release_tx(struct conn *c, void *arg, struct error *err)
{
    struct release_args *a = arg;
    struct item it;
    enum status s;
    int shard;

    item_init(&it);
    if ((s = item_load(c, a->batch_id, a->item_id, &it, &shard, err)))
        goto out;
    if (item_status_is_terminal(it.status) || it.generation != a->generation)
        goto out;
    if (a->drop_job) {
        if (it.status != ITEM_POLLING)
            goto out;
        it.provider_job_id[0] = '\0';
        it.polls = 0;
        it.status = ITEM_PENDING;
    } else if (it.status != ITEM_POLLING) {
        it.status = ITEM_PENDING;
    }
    it.lease_until = 0;
    if (a->error_code || a->error_message) {
        it.has_error = true;
        str_copy(it.error.code, sizeof(it.error.code), a->error_code);
        free(it.error.message);
        it.error.message = str_dup_bounded(a->error_message, ITEM_ERROR_MESSAGE_MAX);
        it.error.retryable = true;
    }
    s = item_store(c, &it, shard, err);
out:
    item_release(&it);
    return s;
}

static enum status sqlite_item_release_lease(void *state, const char *batch_id, const char *item_id,
                                             int64_t generation, const char *error_code,
                                             const char *error_message, int64_t now,
                                             struct error *err)
{
    struct release_args a = {batch_id, item_id, generation, error_code, error_message, now, false};
    enum status s;

    if ((s = check_item_ids(batch_id, item_id, err)) ||
        (s = check_fits(error_code, CODE_MAX, "error code", err)))
        return s;
    return run_tx(state, "release item", true, item_release_tx, &a, err);
}

static enum status sqlite_item_drop_job(void *state, const char *batch_id, const char *item_id,
                                        int64_t generation, const char *error_code,
                                        const char *error_message, int64_t now, struct error *err)
{
    struct release_args a = {batch_id, item_id, generation, error_code, error_message, now, true};
    enum status s;

    if ((s = check_item_ids(batch_id, item_id, err)) ||
        (s = check_fits(error_code, CODE_MAX, "error code", err)))
        return s;
    return run_tx(state, "drop provider job", true, item_release_tx, &a, err);
}

struct finish_args {
    const char *batch_id, *item_id;
    int64_t generation;
    int shard;
    const struct item_outcome *o;
    bool *applied;
};

static enum status item_finish_tx(struct conn *c, void *arg, struct error *err)
{
    struct finish_args *a = arg;
    const struct item_outcome *o = a->o;
    struct batch_head h;
    struct item it;
    enum status s;
    int old_shard;

    *a->applied = false;
    item_init(&it);
    if ((s = batch_head(c, a->batch_id, &h, err)))
        goto out;
    if (a->shard >= h.shards) {
        s = error_set(err, ST_INVALID, NULL, "shard %d out of range for batch %s (%d shards)",
                      a->shard, a->batch_id, h.shards);
        goto out;
    }
    if ((s = item_load(c, a->batch_id, a->item_id, &it, &old_shard, err)))
        goto out;
    if (item_status_is_terminal(it.status) || it.generation != a->generation)
        goto out; /* a duplicated or stale delivery: nothing to write */

    it.status = o->status;
    it.lease_until = 0;
    it.completed_at = o->now;
    it.duration_ms = o->duration_ms;
    if (o->status == ITEM_COMPLETED) {
        it.has_result = o->result != NULL;
        memset(&it.result, 0, sizeof(it.result));
        if (o->result)
            it.result = *o->result;
        free(it.error.message);
        memset(&it.error, 0, sizeof(it.error));
        it.has_error = false;
    } else {
        it.has_result = false;
        memset(&it.result, 0, sizeof(it.result));
        if (o->error_code || o->error_message || o->status == ITEM_FAILED) {
            it.has_error = true;
            str_copy(it.error.code, sizeof(it.error.code), o->error_code);
            free(it.error.message);
            it.error.message = str_dup_bounded(o->error_message, ITEM_ERROR_MESSAGE_MAX);
            it.error.retryable = o->retryable;
        }
    }
    if ((s = item_store(c, &it, a->shard, err)))
        goto out;
    if ((s = shard_add(c, a->batch_id, a->shard, 1, o->status == ITEM_COMPLETED,
                       o->status == ITEM_FAILED, o->status == ITEM_CANCELLED,
                       o->status == ITEM_COMPLETED ? o->duration_ms : 0,
                       o->status == ITEM_COMPLETED && o->result ? o->result->cost_micros : 0, err)))
        goto out;
    *a->applied = true;
out:
    item_release(&it);
    return s;
}

static enum status sqlite_item_finish(void *state, const char *batch_id, const char *item_id,
                                      int64_t generation, int shard, const struct item_outcome *o,
                                      bool *applied, struct error *err)
{
    struct finish_args a = {batch_id, item_id, generation, shard, o, applied};
    enum status s;

    *applied = false;
    if ((s = check_item_ids(batch_id, item_id, err)))
        return s;
    if (!o || !item_status_is_terminal(o->status))
        return error_set(err, ST_INVALID, NULL, "item %s of batch %s: outcome %s is not terminal",
                         item_id, batch_id, o ? item_status_name(o->status) : "(none)");
    if (shard < 0 || shard >= MAX_SHARDS)
        return error_set(err, ST_INVALID, NULL, "shard %d out of range for batch %s", shard,
                         batch_id);
    if ((s = check_fits(o->error_code, CODE_MAX, "error code", err)))
        return s;
    if (o->result && ((s = check_fits(o->result->key, sizeof(o->result->key), "result key", err)) ||
                      (s = check_fits(o->result->content_type, sizeof(o->result->content_type),
                                      "result content type", err)) ||
                      (s = check_fits(o->result->provider, sizeof(o->result->provider),
                                      "result provider", err))))
        return s;
    return run_tx(state, "finish item", true, item_finish_tx, &a, err);
}

/* ---- counters and batch transitions ----------------------------------- */

static enum status counts_read(struct conn *c, const char *batch_id, struct batch_counts *out,
                               struct error *err)
{
    sqlite3_stmt *st = NULL;
    enum status s;
    bool row;

    memset(out, 0, sizeof(*out));
    if ((s = prep(c, Q_COUNTS, &st, err)))
        return s;
    b_text(c, st, 1, batch_id);
    if ((s = step(c, st, &row, err)))
        return s;
    if (!row || sqlite3_column_int64(st, 0) == 0)
        return error_set(err, ST_NOT_FOUND, NULL, "batch %s not found", batch_id);
    out->processed = sqlite3_column_int64(st, 1);
    out->success = sqlite3_column_int64(st, 2);
    out->failure = sqlite3_column_int64(st, 3);
    out->cancelled = sqlite3_column_int64(st, 4);
    out->duration_ms_sum = sqlite3_column_int64(st, 5);
    out->cost_micros = sqlite3_column_int64(st, 6);
    return ST_OK;
}

struct counts_args {
    const char *batch_id;
    struct batch_counts *out;
};

static enum status get_counts_tx(struct conn *c, void *arg, struct error *err)
{
    struct counts_args *a = arg;

    return counts_read(c, a->batch_id, a->out, err);
}

static enum status sqlite_get_counts(void *state, const char *batch_id, struct batch_counts *out,
                                     struct error *err)
{
    struct counts_args a = {batch_id, out};
    enum status s;

    memset(out, 0, sizeof(*out));
    if ((s = check_str(batch_id, BATCH_ID_MAX, "batch id", err)))
        return s;
    return run_tx(state, "read counters", false, get_counts_tx, &a, err);
}

struct complete_args {
    const char *batch_id;
    int64_t generation, now;
    bool *won;
    enum batch_status *final_status;
};

static enum status try_complete_tx(struct conn *c, void *arg, struct error *err)
{
    struct complete_args *a = arg;
    struct batch_counts n;
    struct batch_head h;
    enum batch_status to;
    enum status s;

    *a->won = false;
    if ((s = batch_head(c, a->batch_id, &h, err)))
        return s;
    *a->final_status = h.status;
    if (h.status != BATCH_PROCESSING || h.generation != a->generation)
        return ST_OK;
    if ((s = counts_read(c, a->batch_id, &n, err)))
        return s;
    if (n.processed < h.total)
        return ST_OK;
    to = n.failure == 0 && n.cancelled == 0 ? BATCH_COMPLETED : BATCH_COMPLETED_WITH_FAILURES;
    if ((s = batch_set_status(c, a->batch_id, to, a->now, a->now, err)))
        return s;
    *a->won = true;
    *a->final_status = to;
    return ST_OK;
}

static enum status sqlite_try_complete(void *state, const char *batch_id, int64_t generation,
                                       int64_t now, bool *won, enum batch_status *final_status,
                                       struct error *err)
{
    struct complete_args a = {batch_id, generation, now, won, final_status};
    enum status s;

    *won = false;
    if ((s = check_str(batch_id, BATCH_ID_MAX, "batch id", err)))
        return s;
    s = run_tx(state, "complete batch", true, try_complete_tx, &a, err);
    if (s != ST_OK)
        *won = false;
    return s;
}

struct retry_args {
    const char *batch_id;
    int64_t now;
    int64_t *new_generation;
    struct item_page *redriven;
};

static enum status retry_failed_tx(struct conn *c, void *arg, struct error *err)
{
    struct retry_args *a = arg;
    int64_t per_shard[MAX_SHARDS] = {0}, failed = 0, gen;
    struct batch_head h;
    sqlite3_stmt *st = NULL;
    enum status s;
    bool row;
    int k;

    page_reset(a->redriven);
    if ((s = batch_head(c, a->batch_id, &h, err)))
        return s;
    *a->new_generation = h.generation;
    /* Only a finished batch: re-driving while items of the current generation are still in
     * flight would leave the completion check of that generation with nobody to win it. */
    if (h.status != BATCH_COMPLETED && h.status != BATCH_COMPLETED_WITH_FAILURES)
        return error_set(err, ST_FAILED_PRECONDITION, NULL, "batch %s is %s: cannot retry it",
                         a->batch_id, batch_status_name(h.status));

    /* Which shards hold the failures being given back. */
    if ((s = prep(c, Q_FAILED_BY_SHARD, &st, err)))
        return s;
    b_text(c, st, 1, a->batch_id);
    for (;;) {
        if ((s = step(c, st, &row, err)))
            return s;
        if (!row)
            break;
        k = sqlite3_column_int(st, 0);
        if (k < 0 || k >= h.shards)
            return error_set(err, ST_INTERNAL, "store_corrupt",
                             "failed items of batch %s counted in shard %d of %d", a->batch_id, k,
                             h.shards);
        per_shard[k] += sqlite3_column_int64(st, 1);
        failed += sqlite3_column_int64(st, 1);
    }
    if (failed == 0)
        return ST_OK;

    gen = h.generation + 1;
    for (k = 0; k < h.shards; k++) {
        if (per_shard[k] &&
            (s = shard_add(c, a->batch_id, k, -per_shard[k], 0, -per_shard[k], 0, 0, 0, err)))
            return s;
    }
    if ((s = prep(c, Q_ITEMS_REDRIVE, &st, err)))
        return s;
    b_text(c, st, 1, a->batch_id);
    b_int(c, st, 2, gen);
    if ((s = exec_st(c, st, NULL, err)))
        return s;
    if ((s = prep(c, Q_BATCH_REDRIVE, &st, err)))
        return s;
    b_text(c, st, 1, a->batch_id);
    b_int(c, st, 2, gen);
    b_int(c, st, 3, a->now);
    if ((s = exec_st(c, st, NULL, err)))
        return s;
    /* Items never carry a generation above the batch's, so these are exactly the re-driven. */
    if ((s = prep(c, Q_ITEMS_REDRIVEN, &st, err)))
        return s;
    b_text(c, st, 1, a->batch_id);
    b_int(c, st, 2, gen);
    if ((s = collect_items(c, st, SIZE_MAX, a->redriven, NULL, err)))
        return s;
    *a->new_generation = gen;
    return ST_OK;
}

static enum status sqlite_retry_failed(void *state, const char *batch_id, int64_t now,
                                       int64_t *new_generation, struct item_page *redriven,
                                       struct error *err)
{
    struct retry_args a = {batch_id, now, new_generation, redriven};
    enum status s;

    memset(redriven, 0, sizeof(*redriven));
    *new_generation = 0;
    if ((s = check_str(batch_id, BATCH_ID_MAX, "batch id", err)))
        return s;
    s = run_tx(state, "retry failed items", true, retry_failed_tx, &a, err);
    if (s != ST_OK)
        page_reset(redriven);
    return s;
}

struct cancel_args {
    const char *batch_id;
    int64_t now;
    bool *changed;
    struct item_page *in_flight;
};

static enum status cancel_tx(struct conn *c, void *arg, struct error *err)
{
    struct cancel_args *a = arg;
    int64_t per_shard[MAX_SHARDS] = {0};
    char(*ids)[ITEM_ID_MAX] = NULL;
    size_t n = 0, cap = 0, i;
    struct batch_head h;
    sqlite3_stmt *st = NULL;
    enum status s;
    bool row;
    int k;

    *a->changed = false;
    page_reset(a->in_flight);
    if ((s = batch_head(c, a->batch_id, &h, err)))
        return s;
    if (h.status != BATCH_CANCELLED && batch_status_is_terminal(h.status))
        return ST_OK;
    if (h.status != BATCH_CANCELLED) {
        if ((s = batch_set_status(c, a->batch_id, BATCH_CANCELLED, a->now, a->now, err)))
            return s;
        *a->changed = true;
    }

    /* Collect first: the items are updated below, not while the SELECT walks them. */
    if ((s = prep(c, Q_PENDING_IDS, &st, err)))
        return s;
    b_text(c, st, 1, a->batch_id);
    for (;;) {
        if ((s = step(c, st, &row, err)))
            goto out;
        if (!row)
            break;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            ids = xrealloc(ids, cap * sizeof(*ids));
        }
        if ((s = col_str(st, 0, ids[n], ITEM_ID_MAX, "item id", err)))
            goto out;
        n++;
    }
    for (i = 0; i < n; i++) {
        k = item_shard(ids[i], h.shards);
        if ((s = prep(c, Q_ITEM_CANCEL, &st, err)))
            goto out;
        b_text(c, st, 1, a->batch_id);
        b_text(c, st, 2, ids[i]);
        b_int(c, st, 3, a->now);
        b_int(c, st, 4, k);
        if ((s = exec_st(c, st, NULL, err)))
            goto out;
        per_shard[k]++;
    }
    for (k = 0; k < h.shards; k++) {
        if (per_shard[k] &&
            (s = shard_add(c, a->batch_id, k, per_shard[k], 0, 0, per_shard[k], 0, 0, err)))
            goto out;
    }
    if ((s = prep(c, Q_IN_FLIGHT, &st, err)))
        goto out;
    b_text(c, st, 1, a->batch_id);
    s = collect_items(c, st, SIZE_MAX, a->in_flight, NULL, err);
out:
    free(ids);
    return s;
}

static enum status sqlite_cancel_batch(void *state, const char *batch_id, int64_t now,
                                       bool *changed, struct item_page *in_flight,
                                       struct error *err)
{
    struct cancel_args a = {batch_id, now, changed, in_flight};
    enum status s;

    memset(in_flight, 0, sizeof(*in_flight));
    *changed = false;
    if ((s = check_str(batch_id, BATCH_ID_MAX, "batch id", err)))
        return s;
    s = run_tx(state, "cancel batch", true, cancel_tx, &a, err);
    if (s != ST_OK) {
        page_reset(in_flight);
        *changed = false;
    }
    return s;
}

/* ---- dead letters ----------------------------------------------------- */

static enum status dead_letter_tx(struct conn *c, void *arg, struct error *err)
{
    const struct dead_letter *dl = arg;
    char *history = json_dump_compact(dl->history);
    sqlite3_stmt *st = NULL;
    enum status s;

    if ((s = prep(c, Q_DEAD_LETTER_PUT, &st, err)))
        goto out;
    b_text(c, st, 1, dl->batch_id);
    b_text(c, st, 2, dl->item_id);
    b_int(c, st, 3, dl->generation);
    b_str(c, st, 4, dl->error_code);
    if (dl->error_message)
        b_textn(c, st, 5, dl->error_message,
                str_bounded_len(dl->error_message, ITEM_ERROR_MESSAGE_MAX));
    b_int(c, st, 6, dl->attempts);
    b_text(c, st, 7, history);
    b_int(c, st, 8, dl->now);
    s = exec_st(c, st, NULL, err);
out:
    free(history);
    return s;
}

static enum status sqlite_put_dead_letter(void *state, const struct dead_letter *dl,
                                          struct error *err)
{
    enum status s;

    if ((s = check_item_ids(dl->batch_id, dl->item_id, err)) ||
        (s = check_fits(dl->error_code, CODE_MAX, "error code", err)))
        return s;
    return run_tx(state, "record dead letter", true, dead_letter_tx, (void *)dl, err);
}

/* ---- the result cache ------------------------------------------------- */

struct cache_args {
    const char *key;
    struct item_result *out;          /* get */
    const struct item_result *result; /* put */
    int64_t now;
};

static enum status cache_get_tx(struct conn *c, void *arg, struct error *err)
{
    struct cache_args *a = arg;
    sqlite3_stmt *st = NULL;
    enum status s;
    bool row;

    if ((s = prep(c, Q_CACHE_GET, &st, err)))
        return s;
    b_text(c, st, 1, a->key);
    if ((s = step(c, st, &row, err)))
        return s;
    if (!row)
        return error_set(err, ST_NOT_FOUND, NULL, "no cached result for %.16s", a->key);
    memset(a->out, 0, sizeof(*a->out));
    if ((s = col_str(st, 0, a->out->key, sizeof(a->out->key), "cached key", err)) ||
        (s = col_str(st, 1, a->out->content_type, sizeof(a->out->content_type),
                     "cached content type", err)) ||
        (s = col_str(st, 3, a->out->provider, sizeof(a->out->provider), "cached provider", err)))
        return s;
    a->out->bytes = sqlite3_column_int64(st, 2);
    a->out->cached = true;
    return ST_OK;
}

static enum status sqlite_cache_get(void *state, const char *key, struct item_result *out,
                                    struct error *err)
{
    struct cache_args a = {key, out, NULL, 0};
    enum status s;

    if ((s = check_str(key, 129, "cache key", err)))
        return s;
    return run_tx(state, "read result cache", false, cache_get_tx, &a, err);
}

static enum status cache_put_tx(struct conn *c, void *arg, struct error *err)
{
    struct cache_args *a = arg;
    sqlite3_stmt *st = NULL;
    enum status s;

    if ((s = prep(c, Q_CACHE_PUT, &st, err)))
        return s;
    b_text(c, st, 1, a->key);
    b_str(c, st, 2, a->result->key);
    b_str(c, st, 3, a->result->content_type);
    b_int(c, st, 4, a->result->bytes);
    b_str(c, st, 5, a->result->provider);
    b_int(c, st, 6, a->now);
    return exec_st(c, st, NULL, err);
}

static enum status sqlite_cache_put(void *state, const char *key, const struct item_result *result,
                                    int64_t now, struct error *err)
{
    struct cache_args a = {key, NULL, result, now};
    enum status s;

    if ((s = check_str(key, 129, "cache key", err)))
        return s;
    return run_tx(state, "write result cache", true, cache_put_tx, &a, err);
}

/* ---- API keys and rate limits ----------------------------------------- */

struct key_args {
    const struct api_key *in;
    const char *hash;
    struct api_key *out;
};

static enum status key_put_tx(struct conn *c, void *arg, struct error *err)
{
    struct key_args *a = arg;
    sqlite3_stmt *st = NULL;
    enum status s;

    if ((s = prep(c, Q_KEY_PUT, &st, err)))
        return s;
    b_text(c, st, 1, a->in->hash);
    b_text(c, st, 2, a->in->user_id);
    b_str(c, st, 3, a->in->name);
    b_int(c, st, 4, a->in->disabled);
    b_int(c, st, 5, a->in->created_at);
    return exec_st(c, st, NULL, err);
}

static enum status sqlite_api_key_put(void *state, const struct api_key *k, struct error *err)
{
    struct key_args a = {k, NULL, NULL};
    enum status s;

    if ((s = check_str(k->hash, sizeof(k->hash), "api key hash", err)) ||
        (s = check_str(k->user_id, USER_ID_MAX, "user id", err)))
        return s;
    return run_tx(state, "store api key", true, key_put_tx, &a, err);
}

static enum status key_get_tx(struct conn *c, void *arg, struct error *err)
{
    struct key_args *a = arg;
    sqlite3_stmt *st = NULL;
    enum status s;
    bool row;

    if ((s = prep(c, Q_KEY_GET, &st, err)))
        return s;
    b_text(c, st, 1, a->hash);
    if ((s = step(c, st, &row, err)))
        return s;
    if (!row)
        return error_set(err, ST_NOT_FOUND, NULL, "unknown api key");
    memset(a->out, 0, sizeof(*a->out));
    str_copy(a->out->hash, sizeof(a->out->hash), a->hash);
    if ((s = col_str(st, 0, a->out->user_id, sizeof(a->out->user_id), "key user", err)) ||
        (s = col_str(st, 1, a->out->name, sizeof(a->out->name), "key name", err)))
        return s;
    a->out->disabled = sqlite3_column_int(st, 2) != 0;
    a->out->created_at = sqlite3_column_int64(st, 3);
    return ST_OK;
}

static enum status sqlite_api_key_get(void *state, const char *hash, struct api_key *out,
                                      struct error *err)
{
    struct key_args a = {NULL, hash, out};
    enum status s;

    if ((s = check_str(hash, 65, "api key hash", err)))
        return s;
    return run_tx(state, "read api key", false, key_get_tx, &a, err);
}

struct rate_args {
    const char *user_id, *kind;
    int64_t window, amount, *total;
};

static enum status rate_tx(struct conn *c, void *arg, struct error *err)
{
    struct rate_args *a = arg;
    sqlite3_stmt *st = NULL;
    enum status s;
    bool row;

    if ((s = prep(c, Q_RATE_ADD, &st, err)))
        return s;
    b_text(c, st, 1, a->user_id);
    b_text(c, st, 2, a->kind);
    b_int(c, st, 3, a->window);
    b_int(c, st, 4, a->amount);
    if ((s = step(c, st, &row, err)))
        return s;
    *a->total = row ? sqlite3_column_int64(st, 0) : a->amount;
    sqlite3_reset(st);
    /* Old windows are dead weight: the caller's write drops them. */
    if ((s = prep(c, Q_RATE_PURGE, &st, err)))
        return s;
    b_text(c, st, 1, a->user_id);
    b_text(c, st, 2, a->kind);
    b_int(c, st, 3, a->window - 1);
    return exec_st(c, st, NULL, err);
}

static enum status sqlite_rate_count(void *state, const char *user_id, const char *kind,
                                     int64_t window, int64_t amount, int64_t *total,
                                     struct error *err)
{
    struct rate_args a = {user_id, kind, window, amount, total};
    enum status s;

    if ((s = check_str(user_id, USER_ID_MAX, "user id", err)) ||
        (s = check_str(kind, 32, "rate kind", err)))
        return s;
    return run_tx(state, "count rate", true, rate_tx, &a, err);
}

/* ---- open and close --------------------------------------------------- */

static void sqlite_close(void *state)
{
    struct sqlite_store *s = state;
    size_t i;
    int k;

    if (!s)
        return;
    for (k = 0; k < s->size; k++) {
        struct conn *c = &s->conns[k];

        for (i = 0; i < Q__COUNT; i++)
            sqlite3_finalize(c->stmts[i]);
        if (c->db && sqlite3_close(c->db) != SQLITE_OK)
            log_error("sqlite store %s: cannot close connection: %s", s->path,
                      sqlite3_errmsg(c->db));
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->write_mu);
    free(s);
}

/* mkdir -p of path's directory. */
static enum status make_parent_dirs(const char *path, struct error *err)
{
    char dir[PATH_CAP], ebuf[128];
    char *p;

    if (!str_copy(dir, sizeof(dir), path))
        return error_set(err, ST_INVALID, NULL, "sqlite path is longer than %d bytes",
                         PATH_CAP - 1);
    p = strrchr(dir, '/');
    if (!p || p == dir)
        return ST_OK;
    *p = '\0';
    for (p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            goto fail;
        *p = '/';
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        goto fail;
    return ST_OK;
fail:
    return error_set(err, ST_IO, NULL, "cannot create directory %s: %s", dir,
                     strerror_r(errno, ebuf, sizeof(ebuf)));
}

static enum status conn_open(struct sqlite_store *s, struct conn *c, struct error *err)
{
    static const char pragmas[] = "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;";
    int rc;

    rc = sqlite3_open_v2(s->path, &c->db,
                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        error_set(err, ST_IO, NULL, "cannot open database %s: %s", s->path,
                  c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        return ST_IO;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    rc = sqlite3_exec(c->db, pragmas, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return db_error(c, rc, "cannot configure database", err);
    return ST_OK;
}

static enum status schema_tx(struct conn *c, void *arg, struct error *err)
{
    char pragma[64];
    sqlite3_stmt *st = NULL;
    int64_t version;
    int rc;

    UNUSED(arg);
    rc = sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return db_error(c, rc, "cannot read schema version", err);
    rc = sqlite3_step(st);
    version = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return db_error(c, rc, "cannot read schema version", err);
    if (version == SQLITE_STORE_SCHEMA_VERSION)
        return ST_OK;
    if (version > SQLITE_STORE_SCHEMA_VERSION)
        return error_set(err, ST_FAILED_PRECONDITION, NULL,
                         "database schema version %lld is newer than this build's (%d)",
                         (long long)version, SQLITE_STORE_SCHEMA_VERSION);
    /* Versions apply in order: a fresh file runs them all, an older one the rest. */
    if (version < 1) {
        rc = sqlite3_exec(c->db, schema_v1, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return db_error(c, rc, "cannot create schema", err);
    }
    if (version < 2) {
        rc = sqlite3_exec(c->db, schema_v2, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return db_error(c, rc, "cannot upgrade schema to version 2", err);
    }
    if (version < 3) {
        rc = sqlite3_exec(c->db, schema_v3, NULL, NULL, NULL);
        if (rc != SQLITE_OK)
            return db_error(c, rc, "cannot upgrade schema to version 3", err);
    }
    /* PRAGMA takes no parameters; the value is our own constant. */
    str_printf(pragma, sizeof(pragma), "PRAGMA user_version = %d", SQLITE_STORE_SCHEMA_VERSION);
    rc = sqlite3_exec(c->db, pragma, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return db_error(c, rc, "cannot set schema version", err);
    return ST_OK;
}

/* WAL is a property of the file: set once, retried while another process holds the lock. */
static enum status set_wal(struct sqlite_store *s, struct conn *c, struct error *err)
{
    sqlite3_stmt *st = NULL;
    char mode[16] = "";
    int attempt, rc = SQLITE_OK;

    for (attempt = 1; attempt <= TX_ATTEMPTS; attempt++) {
        rc = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        if (rc == SQLITE_OK) {
            rc = sqlite3_step(st);
            if (rc == SQLITE_ROW)
                str_copy(mode, sizeof(mode), (const char *)sqlite3_column_text(st, 0));
        }
        sqlite3_finalize(st);
        st = NULL;
        if (rc == SQLITE_ROW)
            break;
        if ((rc & 0xff) != SQLITE_BUSY && (rc & 0xff) != SQLITE_LOCKED)
            break;
        time_sleep_ms(
            backoff_jitter_ms(attempt, TX_BACKOFF_BASE_MS, TX_BACKOFF_CAP_MS, random_unit()));
    }
    if (rc != SQLITE_ROW)
        return db_error(c, rc, "cannot enable wal", err);
    if (strcmp(mode, "wal") != 0)
        return error_set(err, ST_IO, NULL, "database %s refused wal mode (journal mode %s)",
                         s->path, mode);
    return ST_OK;
}

static const struct store_ops sqlite_ops = {
    .close = sqlite_close,
    .ping = sqlite_ping,
    .create_batch = sqlite_create_batch,
    .put_items = sqlite_put_items,
    .get_batch = sqlite_get_batch,
    .set_batch_status = sqlite_set_batch_status,
    .list_batches = sqlite_list_batches,
    .get_item = sqlite_get_item,
    .list_items = sqlite_list_items,
    .item_begin = sqlite_item_begin,
    .item_set_job = sqlite_item_set_job,
    .item_release_lease = sqlite_item_release_lease,
    .item_finish = sqlite_item_finish,
    .get_counts = sqlite_get_counts,
    .try_complete = sqlite_try_complete,
    .retry_failed = sqlite_retry_failed,
    .cancel_batch = sqlite_cancel_batch,
    .put_dead_letter = sqlite_put_dead_letter,
    .item_drop_job = sqlite_item_drop_job,
    .cache_get = sqlite_cache_get,
    .cache_put = sqlite_cache_put,
    .api_key_put = sqlite_api_key_put,
    .api_key_get = sqlite_api_key_get,
    .rate_count = sqlite_rate_count,
};

struct store *store_sqlite_open(const char *path, struct error *err)
{
    struct sqlite_store *s = NULL;
    struct store *store;
    pthread_condattr_t ca;
    bool memory;
    int i;

    if (!path || !*path) {
        error_set(err, ST_INVALID, NULL, "sqlite store path is empty");
        return NULL;
    }
    memory = strcmp(path, ":memory:") == 0;
    if (!memory && make_parent_dirs(path, err) != ST_OK)
        return NULL;
    s = xcalloc(1, sizeof(*s));
    str_copy(s->path, sizeof(s->path), path);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->write_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);

    /* A private in-memory database exists per connection: share one. */
    for (i = 0; i < (memory ? 1 : SQLITE_STORE_POOL_SIZE); i++) {
        struct conn *c = &s->conns[i];

        s->size = i + 1;
        if (conn_open(s, c, err) != ST_OK)
            goto fail;
        if (i == 0 && ((!memory && set_wal(s, c, err) != ST_OK) ||
                       conn_tx(s, c, true, schema_tx, NULL, err) != ST_OK))
            goto fail;
        c->next = s->free;
        s->free = c;
    }

    store = xcalloc(1, sizeof(*store));
    store->ops = &sqlite_ops;
    store->state = s;
    store->name = "sqlite";
    return store;
fail:
    error_prefix(err, "cannot open sqlite store %s", path);
    sqlite_close(s);
    return NULL;
}
