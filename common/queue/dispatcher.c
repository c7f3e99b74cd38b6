/*
 * dispatcher.c - the local queue's dispatcher: one thread that leases due
 * rows of the tasks table and pushes them to the worker over HTTP, the way
 * Cloud Tasks would (local_queue.h, gcp.md 1.4-1.7).
 */
#include "queue/local_queue.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "core/backoff.h"
#include "core/id.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "queue/local_queue_db.h"

/*
 * A lease covers the dispatch deadline plus this margin for recording the
 * outcome, so it only runs out when its dispatcher is gone (or stuck).
 */
#define LEASE_MARGIN_US (2LL * 1000000)
/* Rows leased per transaction at most. */
#define LEASE_BATCH 100
/*
 * Token bucket size in seconds of the refill rate. Cloud Tasks picks
 * maxBurstSize from maxDispatchesPerSecond without publishing the rule; the
 * one observed pair is 500/s -> 100 (gcp.md 1.4), i.e. 0.2 s worth of
 * tokens. The bucket holds at least one token.
 */
#define BURST_SECONDS 0.2
/* While every slot is busy, how often to look again (completions also refill at once). */
#define SLOT_RECHECK_MS 10
#define DRAIN_STEP_MS   50
/* The worker's answer is not used beyond its status: keep little of it. */
#define RESPONSE_MAX_BYTES (64 * 1024)
#define PUSH_HEADERS_MAX   10
#define DEFAULT_POLL_MS    50

/* One push in flight: an attempt of a task, or an injected duplicate of one. */
struct push {
    struct push *prev, *next;
    struct dispatcher *d;
    bool duplicate;
    char name[TASK_NAME_MAX];
    int64_t created_at;
    int attempt;                   /* 1-based: dispatch_count after the lease */
    int64_t first_attempt_at;      /* after the lease */
    int64_t prev_first_attempt_at; /* before it, restored on release */
    int64_t started_us;            /* monotonic */
    char *headers[PUSH_HEADERS_MAX + 1];
    char *body; /* kept only when duplicates may be injected */
    size_t body_len;
};

/* A row just leased. */
struct leased {
    char name[TASK_NAME_MAX];
    int64_t schedule_time;
    int64_t created_at;
    int64_t first_attempt_at;
    int64_t prev_first_attempt_at;
    int dispatch_count; /* after the lease */
    int response_count;
    long last_status;
    char *body;
    size_t body_len;
};

struct dispatcher {
    /* configuration, fixed at start */
    struct queue_config qc;
    char *target_url;
    char *audience;
    token_mint_fn mint;
    void *mint_ud;
    struct http_client *client;
    int poll_ms;
    double dup_prob;
    long deadline_ms;
    int64_t lease_us;
    int max_in_flight;
    double rate;
    double burst;
    char owner[24];

    /* the dispatcher thread's own state */
    sqlite3 *db;
    sqlite3_stmt *peek, *select_due, *lease, *done, *drop, *retry, *release, *tomb_put;
    struct http_multi *multi;
    struct leased *rows; /* LEASE_BATCH of them */
    double tokens;
    int64_t refill_us;   /* monotonic time of the last refill */
    int64_t next_due_us; /* earliest retry we scheduled ourselves, INT64_MAX when none */
    bool more_due;       /* the last lease may have left due tasks behind */
    int64_t last_purge_us;
    struct push *pushes;
    int in_flight;

    /* shared with the caller's threads */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_bool stopping;
    int grace_ms;
    struct dispatcher_stats stats;
};

/* ---- metrics ------------------------------------------------------------ */

static struct metric *m_dispatches;
static struct metric *m_in_flight;
static struct metric *m_latency;
static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;

static void metrics_declare(void)
{
    m_dispatches = metric_counter("queue_local_dispatches_total",
                                  "local queue pushes by outcome (success, retry, dropped, "
                                  "duplicate)",
                                  "outcome");
    m_in_flight = metric_gauge("queue_local_dispatches_in_flight",
                               "local queue pushes waiting for the worker's answer", "");
    m_latency = metric_histogram("queue_local_dispatch_latency_seconds",
                                 "time from push to the worker's answer (or deadline)", "result",
                                 metrics_latency_buckets, metrics_latency_buckets_n);
}

static void count_outcome(const char *outcome)
{
    const char *labels[] = {outcome};

    metric_add(m_dispatches, labels, 1);
}

/* ---- small helpers ------------------------------------------------------ */

static char *hdr_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *hdr_printf(const char *fmt, ...)
{
    va_list ap;
    char *s;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        BUG("cannot format a push header");
    s = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static void push_free(struct push *p)
{
    size_t i;

    if (!p)
        return;
    for (i = 0; p->headers[i]; i++)
        free(p->headers[i]);
    free(p->body);
    free(p);
}

static void stats_in_flight(struct dispatcher *d, int delta)
{
    d->in_flight += delta;
    metric_add(m_in_flight, NULL, delta);
    pthread_mutex_lock(&d->mu);
    d->stats.in_flight = d->in_flight;
    if (d->in_flight > d->stats.peak_in_flight)
        d->stats.peak_in_flight = d->in_flight;
    pthread_mutex_unlock(&d->mu);
}

static void push_link(struct dispatcher *d, struct push *p)
{
    p->prev = NULL;
    p->next = d->pushes;
    if (d->pushes)
        d->pushes->prev = p;
    d->pushes = p;
    stats_in_flight(d, 1);
}

static void push_unlink(struct dispatcher *d, struct push *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        d->pushes = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
    stats_in_flight(d, -1);
}

static void bucket_refill(struct dispatcher *d)
{
    int64_t now = time_mono_us();

    d->tokens += (double)(now - d->refill_us) / 1e6 * d->rate;
    if (d->tokens > d->burst)
        d->tokens = d->burst;
    d->refill_us = now;
}

/* ---- task rows ---------------------------------------------------------- */

static void leased_release(struct leased *rows, int n)
{
    int i;

    for (i = 0; i < n; i++) {
        free(rows[i].body);
        rows[i].body = NULL;
    }
}

/*
 * Leases up to want due tasks in one write transaction: the write lock makes
 * the select-then-update atomic against every other connection, so two
 * dispatchers never lease the same attempt. Returns how many were leased.
 */
static int lease_due(struct dispatcher *d, int want)
{
    int64_t now = time_now_us();
    struct error err;
    int i, n = 0, rc = SQLITE_DONE;

    /*
     * A plain read first: in WAL it takes no lock, so an idle dispatcher
     * polling every few ms never holds up the store's writers.
     */
    sqlite3_bind_int64(d->peek, 1, now);
    rc = sqlite3_step(d->peek);
    sqlite3_reset(d->peek);
    sqlite3_clear_bindings(d->peek);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW) {
        lq_db_error(d->db, rc, "cannot look for due tasks", &err);
        goto fail;
    }
    if (lq_begin(d->db, &err) != ST_OK)
        goto fail;
    sqlite3_bind_int64(d->select_due, 1, now);
    sqlite3_bind_int(d->select_due, 2, want);
    while (n < want && (rc = sqlite3_step(d->select_due)) == SQLITE_ROW) {
        struct leased *r = &d->rows[n];
        const void *blob;

        str_copy(r->name, sizeof(r->name), (const char *)sqlite3_column_text(d->select_due, 0));
        r->schedule_time = sqlite3_column_int64(d->select_due, 1);
        r->created_at = sqlite3_column_int64(d->select_due, 2);
        r->dispatch_count = sqlite3_column_int(d->select_due, 3) + 1;
        r->response_count = sqlite3_column_int(d->select_due, 4);
        r->prev_first_attempt_at = sqlite3_column_int64(d->select_due, 5);
        r->first_attempt_at = r->prev_first_attempt_at ? r->prev_first_attempt_at : now;
        r->last_status = (long)sqlite3_column_int64(d->select_due, 6);
        blob = sqlite3_column_blob(d->select_due, 7);
        r->body_len = (size_t)sqlite3_column_bytes(d->select_due, 7);
        r->body = xmalloc(r->body_len + 1);
        if (r->body_len)
            memcpy(r->body, blob, r->body_len);
        r->body[r->body_len] = '\0';
        n++;
    }
    if (n < want && rc != SQLITE_DONE) {
        lq_db_error(d->db, rc, "cannot select due tasks", &err);
        sqlite3_reset(d->select_due);
        goto fail;
    }
    sqlite3_reset(d->select_due);
    sqlite3_clear_bindings(d->select_due);
    for (i = 0; i < n; i++) {
        sqlite3_bind_int64(d->lease, 1, now + d->lease_us);
        sqlite3_bind_text(d->lease, 2, d->owner, -1, SQLITE_STATIC);
        sqlite3_bind_int64(d->lease, 3, now);
        sqlite3_bind_text(d->lease, 4, d->rows[i].name, -1, SQLITE_STATIC);
        if (lq_step_done(d->db, d->lease, "cannot lease task", NULL, &err) != ST_OK)
            goto fail;
    }
    if (lq_commit(d->db, &err) != ST_OK)
        goto fail;
    return n;
fail:
    lq_rollback(d->db);
    leased_release(d->rows, n);
    log_error("local queue %s: %s", d->qc.name, err.message);
    return 0;
}

/* Deletes a finished task and tombstones its name, in one transaction. */
static void task_delete(struct dispatcher *d, const struct push *p, bool dropped)
{
    sqlite3_stmt *st = dropped ? d->drop : d->done;
    struct error err;
    int changes = 0;

    if (lq_begin(d->db, &err) != ST_OK)
        goto fail;
    sqlite3_bind_text(st, 1, p->name, -1, SQLITE_STATIC);
    if (dropped) {
        /* Only the attempt's owner may drop it: a newer attempt may be running. */
        sqlite3_bind_text(st, 2, d->owner, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, p->attempt);
    } else {
        /* Success ends the task whoever holds it now (but not a re-created namesake). */
        sqlite3_bind_int64(st, 2, p->created_at);
    }
    if (lq_step_done(d->db, st, "cannot delete task", &changes, &err) != ST_OK)
        goto fail;
    if (changes > 0) {
        sqlite3_bind_text(d->tomb_put, 1, p->name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(d->tomb_put, 2, time_now_us());
        if (lq_step_done(d->db, d->tomb_put, "cannot tombstone task", NULL, &err) != ST_OK)
            goto fail;
    }
    if (lq_commit(d->db, &err) != ST_OK)
        goto fail;
    return;
fail:
    lq_rollback(d->db);
    /* The lease runs out and the task is pushed again: at least once, never lost. */
    log_error("local queue %s: task %s: %s", d->qc.name, p->name, err.message);
}

/* Reschedules a failed attempt, if this dispatcher still owns it. */
static void task_reschedule(struct dispatcher *d, const struct push *p, int64_t when, long code)
{
    bool responded = code > 0 && code < 500; /* ExecutionCount leaves 5xx out (gcp.md 1.6) */
    struct error err;
    int changes = 0;

    sqlite3_bind_int64(d->retry, 1, when);
    sqlite3_bind_int64(d->retry, 2, code);
    sqlite3_bind_int(d->retry, 3, responded ? 1 : 0);
    sqlite3_bind_text(d->retry, 4, p->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(d->retry, 5, d->owner, -1, SQLITE_STATIC);
    sqlite3_bind_int(d->retry, 6, p->attempt);
    if (lq_step_done(d->db, d->retry, "cannot reschedule task", &changes, &err) != ST_OK)
        log_error("local queue %s: task %s: %s", d->qc.name, p->name, err.message);
    else if (changes == 0)
        log_debug("local queue %s: task %s was deleted or re-leased during attempt %d", d->qc.name,
                  p->name, p->attempt);
}

/* Undoes a lease whose push did not finish: the next dispatcher pushes the same attempt. */
static void task_release(struct dispatcher *d, const struct push *p)
{
    struct error err;

    sqlite3_bind_int64(d->release, 1, p->prev_first_attempt_at);
    sqlite3_bind_text(d->release, 2, p->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(d->release, 3, d->owner, -1, SQLITE_STATIC);
    sqlite3_bind_int(d->release, 4, p->attempt);
    if (lq_step_done(d->db, d->release, "cannot release task", NULL, &err) != ST_OK)
        log_error("local queue %s: task %s: %s", d->qc.name, p->name, err.message);
}

/* ---- outcomes ----------------------------------------------------------- */

/*
 * A failed attempt (non-2xx, deadline, transport error): retried after the
 * Cloud Tasks backoff, or a Retry-After on 429/503 when that is longer, or
 * dropped once the stop rule says so.
 */
static void attempt_failed(struct dispatcher *d, const struct push *p, long code, int retry_after_s,
                           const char *why)
{
    int64_t now = time_now_us();
    double elapsed = (double)(now - p->first_attempt_at) / 1e6;
    double delay;
    int64_t when;

    if (!backoff_should_retry(&d->qc.retry, p->attempt, elapsed)) {
        log_write(LOG_WARNING,
                  json_pack("{s:s, s:s, s:i, s:I}", "queue", d->qc.name, "task", p->name,
                            "attempts", p->attempt, "status", (json_int_t)code),
                  "local queue %s: dropping task %s after %d attempts: %s", d->qc.name, p->name,
                  p->attempt, why);
        task_delete(d, p, true);
        count_outcome("dropped");
        pthread_mutex_lock(&d->mu);
        d->stats.dropped++;
        pthread_mutex_unlock(&d->mu);
        return;
    }
    delay = backoff_cloud_tasks(&d->qc.retry, p->attempt);
    if ((code == 429 || code == 503) && retry_after_s > delay)
        delay = retry_after_s;
    when = now + (int64_t)(delay * 1e6);
    log_debug("local queue %s: task %s attempt %d failed (%s), retry in %.3f s", d->qc.name,
              p->name, p->attempt, why, delay);
    task_reschedule(d, p, when, code);
    if (when < d->next_due_us)
        d->next_due_us = when;
    count_outcome("retry");
    pthread_mutex_lock(&d->mu);
    d->stats.retried++;
    pthread_mutex_unlock(&d->mu);
}

static void dispatcher_fill(struct dispatcher *d);
static void on_push_done(void *ud, enum status st, const struct http_result *res,
                         const struct error *err);

static void push_send(struct dispatcher *d, struct push *p, const char *body, size_t len)
{
    struct http_call call = {
        .method = "POST",
        .url = d->target_url,
        .headers = (const char *const *)p->headers,
        .body = body,
        .body_len = len,
        .timeout_ms = d->deadline_ms,
        .max_response_bytes = RESPONSE_MAX_BYTES,
        .idempotent = false, /* retries are the queue's, with its own backoff */
    };

    p->started_us = time_mono_us();
    push_link(d, p);
    http_multi_add(d->multi, &call, on_push_done, p);
}

/* Pushes the attempt p once more with the same headers (fault injection). */
static void push_duplicate(struct dispatcher *d, struct push *p)
{
    struct push *dup = xcalloc(1, sizeof(*dup));

    dup->d = d;
    dup->duplicate = true;
    str_copy(dup->name, sizeof(dup->name), p->name);
    memcpy(dup->headers, p->headers, sizeof(dup->headers));
    memset(p->headers, 0, sizeof(p->headers));
    dup->body = p->body;
    dup->body_len = p->body_len;
    p->body = NULL;
    push_send(d, dup, dup->body, dup->body_len);
    count_outcome("duplicate");
    pthread_mutex_lock(&d->mu);
    d->stats.duplicates++;
    pthread_mutex_unlock(&d->mu);
}

static void on_push_done(void *ud, enum status st, const struct http_result *res,
                         const struct error *err)
{
    struct push *p = ud;
    struct dispatcher *d = p->d;
    /* A response over the size cap still carries the worker's status. */
    long code = st == ST_OK || st == ST_TOO_LARGE ? res->status : 0;
    bool ok = code >= 200 && code < 300;
    const char *result[] = {ok ? "success" : "failure"};
    char why[ERROR_MSG_MAX];

    push_unlink(d, p);
    if (p->duplicate)
        goto out;
    metric_observe(m_latency, result, (double)(time_mono_us() - p->started_us) / 1e6);
    if (ok) {
        task_delete(d, p, false);
        count_outcome("success");
        pthread_mutex_lock(&d->mu);
        d->stats.succeeded++;
        pthread_mutex_unlock(&d->mu);
    } else {
        if (code > 0)
            str_printf(why, sizeof(why), "http %ld", code);
        else
            str_copy(why, sizeof(why), err && err->message[0] ? err->message : status_name(st));
        attempt_failed(d, p, code, res ? res->retry_after_s : 0, why);
    }
    if (d->dup_prob > 0 && !atomic_load(&d->stopping) && random_unit() < d->dup_prob)
        push_duplicate(d, p);
out:
    push_free(p);
    /* A slot is free: start what is due now rather than at the next poll. */
    if (!atomic_load(&d->stopping))
        dispatcher_fill(d);
}

/* Builds and sends the push for a leased row (whose body it takes). */
static void push_start(struct dispatcher *d, struct leased *r)
{
    struct push *p = xcalloc(1, sizeof(*p));
    struct error err;
    char *token = NULL;
    int h = 0;

    p->d = d;
    str_copy(p->name, sizeof(p->name), r->name);
    p->created_at = r->created_at;
    p->attempt = r->dispatch_count;
    p->first_attempt_at = r->first_attempt_at;
    p->prev_first_attempt_at = r->prev_first_attempt_at;
    p->headers[h++] = hdr_printf("Content-Type: application/json");
    p->headers[h++] = hdr_printf("User-Agent: Google-Cloud-Tasks");
    p->headers[h++] = hdr_printf("X-CloudTasks-QueueName: %s", d->qc.name);
    p->headers[h++] = hdr_printf("X-CloudTasks-TaskName: %s", r->name);
    p->headers[h++] = hdr_printf("X-CloudTasks-TaskRetryCount: %d", r->dispatch_count - 1);
    p->headers[h++] = hdr_printf("X-CloudTasks-TaskExecutionCount: %d", r->response_count);
    p->headers[h++] =
        hdr_printf("X-CloudTasks-TaskETA: %lld.%06lld", (long long)(r->schedule_time / 1000000),
                   (long long)(r->schedule_time % 1000000));
    /* Only after an HTTP answer: a timeout or refused connection has no code to report. */
    if (r->last_status > 0)
        p->headers[h++] = hdr_printf("X-CloudTasks-TaskPreviousResponse: %ld", r->last_status);
    if (d->mint) {
        error_clear(&err);
        if (d->mint(d->mint_ud, d->audience, &token, &err) != ST_OK || !token) {
            char why[ERROR_MSG_MAX];

            /* Counts as a failed attempt, as a dispatch Cloud Tasks cannot authorise would. */
            str_printf(why, sizeof(why), "cannot mint a token: %s", err.message);
            attempt_failed(d, p, 0, 0, why);
            free(token);
            push_free(p);
            free(r->body);
            r->body = NULL;
            return;
        }
        p->headers[h++] = hdr_printf("Authorization: Bearer %s", token);
        free(token);
    }
    ASSERT(h <= PUSH_HEADERS_MAX);
    pthread_mutex_lock(&d->mu);
    d->stats.dispatched++;
    pthread_mutex_unlock(&d->mu);
    push_send(d, p, r->body, r->body_len);
    if (d->dup_prob > 0) {
        p->body = r->body;
        p->body_len = r->body_len;
    } else {
        free(r->body);
    }
    r->body = NULL;
}

/* Leases and pushes as many due tasks as free slots and tokens allow. */
static void dispatcher_fill(struct dispatcher *d)
{
    int i, n, want, slots;

    if (atomic_load(&d->stopping))
        return;
    if (d->next_due_us != INT64_MAX && d->next_due_us <= time_now_us()) {
        d->next_due_us = INT64_MAX;
        d->more_due = true;
    }
    bucket_refill(d);
    slots = d->max_in_flight - d->in_flight;
    want = slots < (int)d->tokens ? slots : (int)d->tokens;
    if (want > LEASE_BATCH)
        want = LEASE_BATCH;
    if (want <= 0)
        return;
    n = lease_due(d, want);
    d->more_due = n == want;
    for (i = 0; i < n; i++) {
        d->tokens -= 1;
        push_start(d, &d->rows[i]);
    }
}

/* How long the loop may sleep before something can be due. */
static int dispatcher_wait_ms(struct dispatcher *d)
{
    int64_t wait = d->poll_ms;

    if (d->more_due) {
        int slots = d->max_in_flight - d->in_flight;

        bucket_refill(d);
        if (slots <= 0)
            wait = wait < SLOT_RECHECK_MS ? wait : SLOT_RECHECK_MS;
        else if (d->tokens < 1)
            wait = (int64_t)ceil((1 - d->tokens) * 1000 / d->rate);
        else
            wait = 0;
        if (wait > d->poll_ms)
            wait = d->poll_ms;
    }
    if (d->next_due_us != INT64_MAX) {
        int64_t ms = (d->next_due_us - time_now_us() + 999) / 1000;

        if (ms < wait)
            wait = ms;
    }
    return wait < 1 ? 1 : (int)wait;
}

/* Sleeps up to ms with nothing in flight; dispatcher_stop() wakes it. */
static void idle_wait(struct dispatcher *d, int ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&d->mu);
    if (!atomic_load(&d->stopping))
        pthread_cond_timedwait(&d->cv, &d->mu, &ts);
    pthread_mutex_unlock(&d->mu);
}

static void maybe_purge(struct dispatcher *d)
{
    int64_t now = time_now_us();
    struct error err;

    if (now - d->last_purge_us < LQ_PURGE_EVERY_US)
        return;
    d->last_purge_us = now;
    if (lq_purge_tombstones(d->db, now, &err) != ST_OK)
        log_warn("local queue %s: %s", d->qc.name, err.message);
}

/* Waits up to the grace period for pushes in flight, then releases the rest. */
static void dispatcher_drain(struct dispatcher *d)
{
    struct push *p, *next;
    int64_t deadline;
    int released = 0;

    pthread_mutex_lock(&d->mu);
    deadline = time_mono_ms() + d->grace_ms;
    pthread_mutex_unlock(&d->mu);
    while (d->in_flight > 0) {
        int64_t left = deadline - time_mono_ms();

        if (left <= 0)
            break;
        http_multi_step(d->multi, left < DRAIN_STEP_MS ? (int)left : DRAIN_STEP_MS);
    }
    for (p = d->pushes; p; p = p->next) {
        if (!p->duplicate) {
            task_release(d, p);
            released++;
        }
    }
    if (released > 0)
        log_info("local queue %s: released %d unfinished tasks on stop", d->qc.name, released);
    /* Drops what is still in flight without callbacks: the pushes are ours to free. */
    http_multi_free(d->multi);
    d->multi = NULL;
    for (p = d->pushes; p; p = next) {
        next = p->next;
        stats_in_flight(d, -1);
        push_free(p);
    }
    d->pushes = NULL;
}

static void *dispatcher_main(void *arg)
{
    struct dispatcher *d = arg;

    while (!atomic_load(&d->stopping)) {
        int wait;

        dispatcher_fill(d);
        maybe_purge(d);
        wait = dispatcher_wait_ms(d);
        if (d->in_flight > 0)
            http_multi_step(d->multi, wait);
        else
            idle_wait(d, wait);
    }
    dispatcher_drain(d);
    return NULL;
}

/* ---- lifecycle ---------------------------------------------------------- */

static void dispatcher_free(struct dispatcher *d)
{
    if (!d)
        return;
    http_multi_free(d->multi);
    sqlite3_finalize(d->peek);
    sqlite3_finalize(d->select_due);
    sqlite3_finalize(d->lease);
    sqlite3_finalize(d->done);
    sqlite3_finalize(d->drop);
    sqlite3_finalize(d->retry);
    sqlite3_finalize(d->release);
    sqlite3_finalize(d->tomb_put);
    sqlite3_close(d->db);
    free(d->rows);
    free(d->target_url);
    free(d->audience);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

static enum status dispatcher_prepare(struct dispatcher *d, struct error *err)
{
    static const struct {
        size_t offset;
        const char *sql;
    } stmts[] = {
        {offsetof(struct dispatcher, peek),
         "SELECT 1 FROM tasks WHERE schedule_time <= ?1 AND lease_until <= ?1 LIMIT 1"},
        {offsetof(struct dispatcher, select_due),
         "SELECT name, schedule_time, created_at, dispatch_count, response_count,"
         " first_attempt_at, last_status, body FROM tasks"
         " WHERE schedule_time <= ?1 AND lease_until <= ?1 ORDER BY schedule_time LIMIT ?2"},
        {offsetof(struct dispatcher, lease),
         "UPDATE tasks SET lease_until = ?1, lease_owner = ?2,"
         " dispatch_count = dispatch_count + 1,"
         " first_attempt_at = CASE WHEN first_attempt_at = 0 THEN ?3 ELSE first_attempt_at END"
         " WHERE name = ?4"},
        {offsetof(struct dispatcher, done),
         "DELETE FROM tasks WHERE name = ?1 AND created_at = ?2"},
        {offsetof(struct dispatcher, drop),
         "DELETE FROM tasks WHERE name = ?1 AND lease_owner = ?2 AND dispatch_count = ?3"},
        {offsetof(struct dispatcher, retry),
         "UPDATE tasks SET schedule_time = ?1, lease_until = 0, lease_owner = '',"
         " last_status = ?2, response_count = response_count + ?3"
         " WHERE name = ?4 AND lease_owner = ?5 AND dispatch_count = ?6"},
        {offsetof(struct dispatcher, release),
         "UPDATE tasks SET lease_until = 0, lease_owner = '', dispatch_count = dispatch_count - 1,"
         " first_attempt_at = ?1 WHERE name = ?2 AND lease_owner = ?3 AND dispatch_count = ?4"},
        {offsetof(struct dispatcher, tomb_put),
         "INSERT OR REPLACE INTO task_tombstones (name, deleted_at) VALUES (?1, ?2)"},
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(stmts); i++) {
        sqlite3_stmt **slot = (sqlite3_stmt **)((char *)d + stmts[i].offset);
        enum status st = lq_prepare(d->db, stmts[i].sql, slot, err);

        if (st != ST_OK)
            return st;
    }
    return ST_OK;
}

struct dispatcher *dispatcher_start(const struct dispatcher_options *o, struct error *err)
{
    pthread_condattr_t ca;
    struct dispatcher *d;
    double rate;
    int rc;

    pthread_once(&metrics_once, metrics_declare);
    if (!o || !o->sqlite_path || !o->qc || !o->target_url || !o->client) {
        error_set(err, ST_INVALID, NULL,
                  "dispatcher needs a database path, a queue config, a target url and a client");
        return NULL;
    }
    if (!(o->duplicate_probability >= 0 && o->duplicate_probability <= 1)) {
        error_set(err, ST_INVALID, NULL, "dispatcher duplicate probability %g is not in [0, 1]",
                  o->duplicate_probability);
        return NULL;
    }
    d = xcalloc(1, sizeof(*d));
    pthread_mutex_init(&d->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cv, &ca);
    pthread_condattr_destroy(&ca);
    d->qc = *o->qc;
    d->target_url = xstrdup(o->target_url);
    /* Cloud Tasks' default audience is the target URL; callers should set it (gcp.md 1.2). */
    d->audience = xstrdup(o->audience ? o->audience : o->target_url);
    d->mint = o->mint;
    d->mint_ud = o->mint_ud;
    d->client = o->client;
    d->poll_ms = o->poll_interval_ms > 0 ? o->poll_interval_ms : DEFAULT_POLL_MS;
    d->dup_prob = o->duplicate_probability;
    d->deadline_ms = (long)(d->qc.dispatch_deadline_s * 1000);
    if (d->deadline_ms < 1)
        d->deadline_ms = 1;
    d->lease_us = (int64_t)d->deadline_ms * 1000 + LEASE_MARGIN_US;
    d->max_in_flight = d->qc.max_concurrent_dispatches > 0 ? d->qc.max_concurrent_dispatches : 1;
    rate = d->qc.max_dispatches_per_second;
    d->rate = rate > 0 ? rate : 500;
    d->burst = d->rate * BURST_SECONDS < 1 ? 1 : d->rate * BURST_SECONDS;
    d->tokens = d->burst; /* a queue at rest has a full bucket */
    d->refill_us = time_mono_us();
    d->next_due_us = INT64_MAX;
    d->more_due = true;
    d->last_purge_us = 0;
    if (!id_random(d->owner, sizeof(d->owner), "d_", 16))
        BUG("dispatcher owner id does not fit");
    d->rows = xcalloc(LEASE_BATCH, sizeof(*d->rows));

    if (lq_db_open(o->sqlite_path, &d->db, err) != ST_OK || dispatcher_prepare(d, err) != ST_OK) {
        error_prefix(err, "cannot start dispatcher for queue %s", d->qc.name);
        goto fail;
    }
    d->multi = http_multi_new(d->client, d->max_in_flight);
    rc = pthread_create(&d->thread, NULL, dispatcher_main, d);
    if (rc != 0) {
        error_set(err, ST_INTERNAL, NULL, "cannot start dispatcher thread for queue %s: %s",
                  d->qc.name, strerror(rc));
        goto fail;
    }
    log_info("local queue %s: dispatching to %s (rate %g/s, burst %g, concurrency %d, "
             "deadline %ld ms)",
             d->qc.name, d->target_url, d->rate, d->burst, d->max_in_flight, d->deadline_ms);
    return d;
fail:
    dispatcher_free(d);
    return NULL;
}

void dispatcher_stop(struct dispatcher *d, int grace_ms)
{
    if (!d)
        return;
    pthread_mutex_lock(&d->mu);
    d->grace_ms = grace_ms > 0 ? grace_ms : 0;
    atomic_store(&d->stopping, true);
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    pthread_join(d->thread, NULL);
    dispatcher_free(d);
}

void dispatcher_get_stats(struct dispatcher *d, struct dispatcher_stats *out)
{
    pthread_mutex_lock(&d->mu);
    *out = d->stats;
    pthread_mutex_unlock(&d->mu);
}
