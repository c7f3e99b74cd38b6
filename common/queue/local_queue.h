/*
 * local_queue.h - the embedded queue: tasks are rows of a table in the
 * SQLite file the store uses, and a dispatcher thread in the worker process
 * pushes them over real HTTP to the worker, exactly as Cloud Tasks would:
 * a token-bucket rate limit (maxDispatchesPerSecond), a cap on concurrent
 * dispatches (maxConcurrentDispatches), the retry config with Cloud Tasks'
 * backoff formula and stop rule, scheduleTime, de-duplicating task names
 * (a second create with the same name, or within an hour of its deletion,
 * is ST_ALREADY_EXISTS), a dispatch deadline, the X-CloudTasks-* headers,
 * and an OIDC ID token in Authorization.
 *
 * Tasks survive restarts: a dispatch leases its row until the deadline, so
 * the tasks of a dispatcher that died are dispatched again afterwards.
 *
 * Storage: the tables "tasks" and "task_tombstones" in the SQLite file
 * (schema in local_queue_db.h), created if missing by whichever side opens
 * the file first; other tables are not touched. Each side uses connections
 * of its own (WAL, busy_timeout, BEGIN IMMEDIATE for writes), so creator and
 * worker processes share one queue. One queue per file.
 *
 * Semantics, where Cloud Tasks leaves a choice (gcp.md section 1):
 *  - Enqueue: names [A-Za-z0-9_-], 1..499 characters ("" gets a random
 *    24-character name); body <= 100 KB (ST_TOO_LARGE); schedule_time more
 *    than 30 days ahead is ST_INVALID, one in the past means now. A name
 *    that exists, or was completed, dropped or removed less than an hour
 *    ago, is ST_ALREADY_EXISTS.
 *  - Rate: a token bucket refilled at maxDispatchesPerSecond holding
 *    max(1, 0.2 s x rate) tokens, full at start. Cloud Tasks derives
 *    maxBurstSize from the rate without publishing the rule; 0.2 s matches
 *    the one observed pair (500/s -> 100).
 *  - Attempts: an attempt counts when its row is leased (dispatch_count),
 *    so a push lost with a killed dispatcher counts too. The lease lasts
 *    dispatchDeadline + 2 s; the request timeout is dispatchDeadline.
 *  - Outcome: 2xx deletes the task; anything else (other status, deadline,
 *    transport error, a failed token mint) retries after
 *    backoff_cloud_tasks(), or after Retry-After on 429/503 when longer,
 *    until backoff_should_retry() says stop; then the task is dropped with
 *    a warning. Completed and dropped names are tombstoned.
 *  - Headers: X-CloudTasks-TaskRetryCount is the attempts before this one;
 *    -TaskExecutionCount the answers received other than 5xx; -TaskETA the
 *    attempt's schedule time as "<seconds>.<6 digits>";
 *    -TaskPreviousResponse the previous attempt's HTTP status, sent only
 *    when that attempt got an answer.
 */
#ifndef QUEUE_LOCAL_QUEUE_H
#define QUEUE_LOCAL_QUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "http/client.h"
#include "queue/queue.h"
#include "queue/queue_config.h"

/* The producer side (creator and worker): creates task rows. */
struct queue *queue_local_open(const char *sqlite_path, const struct queue_config *qc,
                               struct error *err);

/* Mints an ID token for audience: *token is malloc'd, the caller frees it. */
typedef enum status (*token_mint_fn)(void *ud, const char *audience, char **token,
                                     struct error *err);

struct dispatcher_options {
    const char *sqlite_path;
    const struct queue_config *qc;
    const char *target_url; /* every task is POSTed here */
    const char *audience;   /* token audience (explicit, as with Cloud Tasks oidcToken);
                               NULL means target_url, Cloud Tasks' default */
    token_mint_fn mint;     /* NULL: no Authorization header */
    void *mint_ud;
    struct http_client *client;
    int poll_interval_ms; /* how often to look for due tasks; default 50 */
    /*
     * Test fault injection: with this probability, once a push is answered
     * the same attempt is pushed again (same headers and body) and its
     * answer ignored, as Cloud Tasks' rare duplicate deliveries are.
     */
    double duplicate_probability;
};

struct dispatcher_stats {
    uint64_t dispatched; /* pushes sent */
    uint64_t succeeded;  /* tasks deleted after a 2xx */
    uint64_t retried;    /* failed attempts scheduled again */
    uint64_t dropped;    /* tasks that exhausted their retries */
    uint64_t duplicates; /* extra pushes injected */
    int in_flight;       /* pushes awaiting an answer, duplicates included */
    int peak_in_flight;
};

struct dispatcher;

/*
 * Opens a connection on o->sqlite_path (creating the tables if needed) and
 * starts the dispatcher thread. o and its strings are copied; o->client is
 * borrowed and must outlive the dispatcher. NULL (err set) on a bad option
 * or a database failure.
 */
struct dispatcher *dispatcher_start(const struct dispatcher_options *o, struct error *err);

/*
 * Stops taking tasks and waits up to grace_ms for pushes in flight; frees d.
 * Pushes still unanswered then are abandoned and their rows released: the
 * lease and the attempt are undone, so the next dispatcher pushes them at
 * once with the same RetryCount. NULL is allowed.
 */
void dispatcher_stop(struct dispatcher *d, int grace_ms);

/* A consistent copy of the counters; safe from any thread. */
void dispatcher_get_stats(struct dispatcher *d, struct dispatcher_stats *out);

#endif
