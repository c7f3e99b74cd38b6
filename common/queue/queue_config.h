/*
 * queue_config.h - the queue definition shared by Terraform and the local
 * dispatcher (deploy/queue.json), in Cloud Tasks' own JSON field names:
 *
 *   {"name", "location", "rateLimits": {"maxDispatchesPerSecond",
 *    "maxConcurrentDispatches"}, "retryConfig": {"maxAttempts",
 *    "maxRetryDuration", "minBackoff", "maxBackoff", "maxDoublings"},
 *    "dispatchDeadline"}
 *
 * Durations are Cloud Tasks Duration strings ("10s", "0.5s").
 */
#ifndef QUEUE_QUEUE_CONFIG_H
#define QUEUE_QUEUE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/backoff.h"
#include "core/error.h"

struct queue_config {
    char name[101];
    char location[64];
    double max_dispatches_per_second; /* (0, 500] */
    int max_concurrent_dispatches;    /* [1, 5000] */
    struct retry_config retry;
    double dispatch_deadline_s; /* [15, 1800] */
};

/* Cloud Tasks' defaults (gcp.md 1.4), used for fields a file leaves out. */
void queue_config_defaults(struct queue_config *qc);

/* Parses a definition (text of len bytes). ST_INVALID naming the bad field. */
enum status queue_config_parse(const char *text, size_t len, struct queue_config *qc,
                               struct error *err);

/* Reads and parses a definition file. */
enum status queue_config_load(const char *path, struct queue_config *qc, struct error *err);

/* Parses "10s" / "0.100s" into seconds. */
bool duration_parse(const char *s, double *out);

/*
 * Formats seconds as a Duration: "600s", or "15.5s" with the fraction to
 * the millisecond (Cloud Tasks truncates deadlines to milliseconds).
 */
void duration_format(double s, char *out, size_t cap);

#endif
