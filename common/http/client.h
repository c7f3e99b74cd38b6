/*
 * client.h - the outbound HTTP client, on libcurl.
 *
 * One client per process (thread-safe). Connections, DNS and TLS sessions
 * are shared between requests through a curl share handle, so repeated calls
 * to the same host reuse connections. HTTP/2 is used when the server offers
 * it over TLS (and multiplexed in http_multi).
 *
 * Every call has a connect timeout, a total timeout and a cap on the
 * response size (crossing it fails the call with ST_TOO_LARGE). Calls marked
 * idempotent are retried on transport errors, 408, 429, 500, 502, 503 and
 * 504 with full-jitter exponential backoff, honouring Retry-After (seconds
 * or HTTP date, capped by the call's remaining time budget).
 *
 * The time budget of a call is max_attempts x its per-attempt timeout,
 * counted from the start of the first attempt. No retry delay may end past
 * it: a delay (or Retry-After) that would ends the retries at once and
 * returns the last outcome (for a 429/503: ST_OK, res->status and
 * res->retry_after_s set), so a caller can pass the wait on instead of
 * sleeping through it. Every attempt gets its whole timeout, so a call
 * returns within (max_attempts + 1) x timeout at worst, and within
 * max_attempts x timeout plus the backoff delays without a Retry-After.
 *
 * Connection reuse: idle easy handles are pooled and keep their connections
 * warm between calls, whichever thread made them; DNS and TLS sessions are
 * shared by all. libcurl 7.88 does not support sharing the connection cache
 * itself between concurrent threads (CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT),
 * so it is not shared.
 *
 * Private-address blocking (block_private_addresses) checks the address curl
 * is about to connect to, after DNS resolution, with netaddr_is_public() (core/netaddr.h).
 * Such calls also use https only (unless allow_http), ignore proxy settings
 * from the environment, and never reuse a connection opened by a call that
 * did not block private addresses.
 */
#ifndef HTTP_CLIENT_H
#define HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include <curl/curl.h>
#include <jansson.h>

#include "core/buf.h"
#include "core/error.h"

struct http_client;

struct http_client_options {
    long connect_timeout_ms;   /* default 5000 */
    long timeout_ms;           /* default total per attempt: 30000 */
    size_t max_response_bytes; /* default 8 MiB */
    int max_attempts;          /* default for idempotent calls: 4 (1 = no retry) */
    long retry_base_ms;        /* default 200 */
    long retry_cap_ms;         /* default 10000 */
    const char *user_agent;    /* default "batchd/<version>" */
};

struct http_call {
    const char *method; /* "GET", "POST", ...; NULL means GET */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" list, may be NULL */
    const void *body;           /* may be NULL */
    size_t body_len;
    long timeout_ms;              /* 0: the client's default */
    size_t max_response_bytes;    /* 0: the client's default */
    bool idempotent;              /* allow automatic retries */
    int max_attempts;             /* 0: the client's default (when idempotent) */
    bool block_private_addresses; /* refuse loopback, private, link-local, metadata targets
                                     at connect time (after DNS), and redirects */
    bool allow_http;              /* with block_private_addresses: allow http:// too */
    /*
     * Optional hook to set extra options (mime uploads...) on the easy
     * handle, called before every attempt after the client set its own
     * options. customize_ud is borrowed (http_multi_add does not copy it):
     * it must stay valid until the call completes.
     */
    void (*customize)(CURL *easy, void *ud);
    void *customize_ud;
};

struct http_result {
    long status;                /* HTTP status of the last attempt, 0 when none */
    struct buf body;            /* response body (bounded) */
    char content_type[128];     /* "" when absent */
    int retry_after_s;          /* parsed Retry-After of the last response, 0 when absent */
    int attempts;               /* attempts made */
    double total_s;             /* wall time of all attempts */
    struct curl_slist *headers; /* raw "Name: value" response headers of the last attempt */
};

/*
 * Creates a client; NULL options means all defaults, and so does any zero
 * field. Never NULL (aborts on OOM). Initialises libcurl on first use.
 */
struct http_client *http_client_new(const struct http_client_options *opts);

/* Frees the client and its idle connections. Free every http_multi on it first. NULL is allowed. */
void http_client_free(struct http_client *c);

/* ---- calls and results ---------------------------------------------------- */

/*
 * Deep copy of a call (method, url, headers and body included) in one
 * allocation: new, caller frees with http_call_free(). customize_ud is
 * copied as a pointer (borrowed). Aborts on OOM.
 */
struct http_call *http_call_copy(const struct http_call *call);
void http_call_free(struct http_call *call);

/*
 * Initialises / releases a result (release is safe on a zeroed or
 * initialised result). http_client_do() releases what a result held before
 * filling it, so one result can serve several calls.
 */
void http_result_init(struct http_result *res);
void http_result_release(struct http_result *res);

/* Response header value of the last attempt (case-insensitive), borrowed, or NULL. */
const char *http_result_header(const struct http_result *res, const char *name);

/*
 * Performs a call (with retries when idempotent). Returns ST_OK when an HTTP
 * response was received, whatever its status (check res->status). Otherwise:
 * ST_TIMEOUT (deadline), ST_UNAVAILABLE (connect/transport failure),
 * ST_TOO_LARGE (response cap), ST_PERMISSION_DENIED (blocked address or
 * scheme), ST_INVALID (bad URL, or a scheme other than http and https).
 * Error messages name the method and the URL without its query string.
 * res is filled in every case (attempts, total_s, and whatever the last
 * attempt received). Safe to call from many threads at once.
 */
enum status http_client_do(struct http_client *c, const struct http_call *call,
                           struct http_result *res, struct error *err);

/*
 * JSON helper: sends body (borrowed, may be NULL) as application/json
 * (compact; call->body is ignored when body is given), asks for JSON with
 * Accept unless call->headers has one, and parses the response. On any HTTP
 * response returns ST_OK with *status set and *out a new reference (caller
 * frees with json_decref; NULL when the body is empty or not JSON). On
 * failure *status is the last HTTP status seen (0 when none), *out NULL.
 */
enum status http_client_json(struct http_client *c, const struct http_call *call,
                             const json_t *body, long *status, json_t **out, struct error *err);

/* ---- concurrency: many calls with a bound on how many are in flight ------ */

/*
 * An http_multi drives many calls from one thread over one curl multi handle
 * (HTTP/2 multiplexing when offered, the client's DNS and TLS session
 * caches). It is not thread-safe: one thread at a time uses it (several
 * threads may each have their own). At most max_in_flight transfers are
 * active at once; a call waiting for its retry delay holds no slot.
 */
struct http_multi;

/*
 * Completion callback, invoked from http_multi_step() on its thread: st as
 * http_client_do() would return it, res and err borrowed for the call (err
 * is ST_OK with an empty message on success). It may call http_multi_add(),
 * never http_multi_step(), http_multi_run() or http_multi_free().
 */
typedef void (*http_multi_done_fn)(void *ud, enum status st, const struct http_result *res,
                                   const struct error *err);

/* New multi on c (borrowed, must outlive it); max_in_flight < 1 means 1. Never NULL. */
struct http_multi *http_multi_new(struct http_client *c, int max_in_flight);

/* Frees m; calls still queued or in flight are dropped without their callbacks. NULL is allowed. */
void http_multi_free(struct http_multi *m);

/*
 * Queues a call; the call (and its strings and body) is copied. It starts
 * when a slot frees up. Retries follow the same rules as http_client_do.
 * Errors (a bad URL...) are reported through done, from http_multi_step().
 */
void http_multi_add(struct http_multi *m, const struct http_call *call, http_multi_done_fn done,
                    void *ud);

/*
 * Drives transfers for at most timeout_ms, invoking callbacks for finished
 * calls (on the calling thread). Returns the number of calls queued or in
 * flight afterwards.
 */
int http_multi_step(struct http_multi *m, int timeout_ms);

/* Runs until every queued call has finished. */
void http_multi_run(struct http_multi *m);

/* Calls in flight now, and the highest number seen (for tests and metrics). */
int http_multi_in_flight(const struct http_multi *m);
int http_multi_peak_in_flight(const struct http_multi *m);

/* ---- address policy ------------------------------------------------------ */

#endif
