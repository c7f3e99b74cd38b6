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
    const char *audience;   /* token audience (explicit, as with Cloud Tasks oidcToken) */
    token_mint_fn mint;     /* NULL: no Authorization header */
    void *mint_ud;
    struct http_client *client;
    int poll_interval_ms;         /* how often to look for due tasks; default 50 */
    double duplicate_probability; /* test fault injection: push some tasks twice */
};

struct dispatcher_stats {
    uint64_t dispatched; /* pushes sent */
    uint64_t succeeded;  /* tasks deleted after a 2xx */
    uint64_t retried;    /* failed attempts scheduled again */
    uint64_t dropped;    /* tasks that exhausted their retries */
    uint64_t duplicates; /* extra pushes injected */
    int in_flight;
    int peak_in_flight;
};

struct dispatcher;

struct dispatcher *dispatcher_start(const struct dispatcher_options *o, struct error *err);

/* Stops taking tasks and waits up to grace_ms for pushes in flight; frees d. */
void dispatcher_stop(struct dispatcher *d, int grace_ms);

void dispatcher_get_stats(struct dispatcher *d, struct dispatcher_stats *out);

#endif
