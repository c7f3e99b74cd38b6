/*
 * cloudtasks_queue.h - the queue port on Cloud Tasks v2 over REST
 * (gcp.md section 1). Interchangeable with the local queue: same task
 * names, same ST_ALREADY_EXISTS semantics, and Cloud Tasks pushes the
 * same headers to the worker as the local dispatcher does.
 *
 * Requests:
 *  - enqueue: POST {base}/v2/projects/P/locations/L/queues/Q/tasks with
 *    {"task": {"name", "scheduleTime", "dispatchDeadline", "httpRequest":
 *    {"url", "httpMethod": "POST", "headers": {"Content-Type":
 *    "application/json"}, "body": base64, "oidcToken":
 *    {"serviceAccountEmail", "audience"}}}}. "name" only for a named task,
 *    "scheduleTime" (RFC 3339, microseconds) only when set,
 *    "dispatchDeadline" ("600s") only when configured, "body" only when
 *    non-empty. No other field: Google refuses unknown ones (gcp.md 1.9).
 *  - remove: DELETE .../tasks/{name}.
 *  Each request carries the gcp_auth bearer token (none in emulator mode).
 *
 * Outcomes, from the JSON error's "status" when the answer has one (it
 * beats the HTTP code: 409 is ALREADY_EXISTS or ABORTED), else from the
 * HTTP code:
 *   ALREADY_EXISTS                    ST_ALREADY_EXISTS (success to callers)
 *   INVALID_ARGUMENT, OUT_OF_RANGE    ST_INVALID
 *   FAILED_PRECONDITION               ST_FAILED_PRECONDITION
 *   UNAUTHENTICATED                   ST_UNAUTHENTICATED
 *   PERMISSION_DENIED                 ST_PERMISSION_DENIED (no cloudtasks.tasks.create,
 *                                     or no iam.serviceAccounts.actAs on the OIDC account)
 *   NOT_FOUND                         ST_NOT_FOUND (queue missing); ST_OK for remove
 *   ABORTED                           ST_ABORTED
 *   RESOURCE_EXHAUSTED                ST_RATE_LIMITED (retry_after_s from Retry-After)
 *   UNAVAILABLE, CANCELLED,
 *   INTERNAL, UNKNOWN                 ST_UNAVAILABLE (Google's fault, transient to us)
 *   DEADLINE_EXCEEDED                 ST_TIMEOUT
 *   DATA_LOSS, UNIMPLEMENTED, other   ST_INTERNAL
 * A transport failure keeps the HTTP client's status (ST_UNAVAILABLE,
 * ST_TIMEOUT...).
 *
 * Retries: a named task (always ours) is retried on UNAVAILABLE,
 * DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and INTERNAL (or, without a status,
 * HTTP 429, 500, 502, 503, 504) and on transport failures, with full-jitter
 * exponential backoff that honours Retry-After, up to max_attempts. A retry
 * answered ALREADY_EXISTS means an earlier attempt created the task, and is
 * reported as ST_ALREADY_EXISTS like any existing name. An unnamed create
 * is never retried: it could create the task twice (gcp.md 1.2). A 401
 * drops the cached access token and retries once at once, named or not
 * (a refused request created nothing).
 *
 * Bounds: task bodies up to QUEUE_CT_BODY_MAX bytes (ST_TOO_LARGE, before
 * any request); names as in queue.h (ST_INVALID before any request);
 * enqueue_many keeps at most max_in_flight tasks begun and not finished
 * (a request in flight, or waiting for its retry), over one curl multi
 * handle per call (HTTP/2 multiplexed against Google, reused keep-alive
 * connections over HTTP/1.1). Per-task outcomes go to results[]; the call
 * returns ST_OK when every task was created or already existed, else the
 * first failure's status with a message naming the task and the count
 * ("cannot enqueue task 2 of 5 (1 failed): ..."). When no access token can
 * be had, the tasks not yet sent fail with that error without asking
 * again.
 */
#ifndef QUEUE_CLOUDTASKS_QUEUE_H
#define QUEUE_CLOUDTASKS_QUEUE_H

#include "core/error.h"
#include "gcp/auth.h"
#include "http/client.h"
#include "queue/queue.h"

#define CLOUDTASKS_DEFAULT_BASE "https://cloudtasks.googleapis.com"
#define QUEUE_CT_BODY_MAX       (100 * 1024) /* Cloud Tasks' documented task size (gcp.md 1.2) */
#define QUEUE_CT_IN_FLIGHT      32
#define QUEUE_CT_IN_FLIGHT_MAX  1000
#define QUEUE_CT_TIMEOUT_MS     20000 /* per attempt: the official client's CreateTask timeout */
#define QUEUE_CT_ATTEMPTS       5
#define QUEUE_CT_RETRY_BASE_MS  200
#define QUEUE_CT_RETRY_CAP_MS   10000
#define QUEUE_CT_DEADLINE_MIN_S 15.0
#define QUEUE_CT_DEADLINE_MAX_S 1800.0

/*
 * Strings are copied by queue_cloudtasks_open(); auth and client are
 * borrowed and must outlive the queue. Zero numeric fields take the
 * defaults above.
 */
struct cloudtasks_options {
    const char *base_url;        /* NULL: CLOUDTASKS_DEFAULT_BASE (emulators, fakes) */
    const char *project;         /* required */
    const char *location;        /* required, e.g. "us-central1" */
    const char *queue;           /* required queue id: [A-Za-z0-9-], at most 100 chars */
    const char *target_url;      /* required: the worker's push URL, http(s) */
    const char *service_account; /* required: oidcToken.serviceAccountEmail */
    const char *audience;        /* required: oidcToken.audience, always explicit (gcp.md 1.2) */
    double dispatch_deadline_s;  /* 0: not sent (Cloud Tasks' 10 min); else in [15, 1800] */
    struct gcp_auth *auth;       /* required (emulator mode: a gcp_auth with none set) */
    struct http_client *client;  /* required */
    int max_in_flight;           /* enqueue_many bound; default QUEUE_CT_IN_FLIGHT */
    long timeout_ms;             /* per attempt; default QUEUE_CT_TIMEOUT_MS */
    int max_attempts;            /* per request, named tasks; default QUEUE_CT_ATTEMPTS */
    long retry_base_ms;          /* default QUEUE_CT_RETRY_BASE_MS */
    long retry_cap_ms;           /* default QUEUE_CT_RETRY_CAP_MS */
};

/*
 * Opens the adapter; no request is made. NULL with err (ST_INVALID) for a
 * missing or malformed option. Release with queue_close(). The queue is
 * thread-safe: every call makes its own requests.
 */
struct queue *queue_cloudtasks_open(const struct cloudtasks_options *o, struct error *err);

#endif
