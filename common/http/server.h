/*
 * server.h - the HTTP server both services use, on libmicrohttpd.
 *
 * Concurrency model: one thread per connection (MHD_USE_THREAD_PER_CONNECTION)
 * with a small, configurable thread stack (default 256 KiB) and a bounded
 * number of connections. Handlers block (store, queue and provider calls are
 * synchronous), so a thread per in-flight request is the simplest model that
 * holds a thousand slow requests: a thread costs one stack reservation of
 * which only the touched pages are resident.
 *
 * Every request gets: routing by method and path pattern ("{name}" matches
 * one non-empty segment), a request id (X-Request-Id echoed or generated),
 * the log context (trace from traceparent / X-Cloud-Trace-Context, the
 * request id), a body read with a bound (413), one access-log line with
 * Cloud Logging's httpRequest, and errors in the JSON form
 * {"error": "...", "code": "..."} (404 unknown path, 405 known path with
 * another method, with an Allow header).
 */
#ifndef HTTP_SERVER_H
#define HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/buf.h"
#include "core/error.h"

struct http_server;
struct http_request;
struct http_response;

/*
 * Zero fields take the defaults below. Bounds applied to every request:
 * paths over 2048 bytes (or path plus query over 8192) get 414, bodies over
 * max_body_bytes get 413 (at once when Content-Length says so; a chunked
 * body is drained up to 8 times the bound and answered 413 at its end,
 * beyond that the connection is dropped), JSON bodies nested deeper than 64
 * levels get 400 malformed_json. After shutdown begins, responses carry
 * "Connection: close".
 */
struct http_server_options {
    const char *bind_address;  /* "0.0.0.0" when NULL */
    int port;                  /* 0 picks a free port, see http_server_port() */
    size_t max_body_bytes;     /* default 1 MiB; larger bodies get 413 */
    unsigned connection_limit; /* default 4096 */
    size_t thread_stack_bytes; /* default 256 KiB */
    unsigned idle_timeout_s;   /* idle keep-alive connections closed after this; default 75 */
    const char *service;       /* for logs, e.g. "creator" */
    /*
     * One INFO line per request (WARNING for 5xx) with Cloud Logging's
     * httpRequest. A bool cannot default to on in a zeroed struct, so callers
     * set it: true enables, false (the zero value) disables.
     */
    bool access_log;
    /*
     * Optional: re-words the errors the server itself answers (404, 405,
     * 413, 415, malformed JSON...) for the request, e.g. in its language.
     * Must keep err->status and err->code.
     */
    void (*localize)(const struct http_request *req, struct error *err);
};

/* Route flags. */
enum http_route_flags {
    HTTP_ROUTE_JSON = 1 << 0, /* body must be application/json (415) and valid JSON (400) */
};

/*
 * A handler fills resp. It runs on the connection's thread and may block.
 * req and resp are borrowed for the duration of the call.
 */
typedef void (*http_handler_fn)(struct http_request *req, struct http_response *resp, void *ud);

/* Creates a server (not yet listening). NULL with err set on failure. */
struct http_server *http_server_new(const struct http_server_options *opts, struct error *err);

/*
 * Registers a route. pattern is an absolute path whose segments are literal
 * or "{name}"; the last one may be "{name...}", which matches one or more
 * remaining segments (its value is them, decoded, joined with '/'), for
 * catch-all routes such as a proxy's "/{path...}". Routes are matched in registration order; the
 * first match of both method and pattern wins. ud is passed to the handler. Segments are matched
 * after percent-decoding. Register every route before http_server_start() (BUG() otherwise).
 */
void http_server_route(struct http_server *srv, const char *method, const char *pattern,
                       unsigned flags, http_handler_fn handler, void *ud);

/*
 * Starts listening and serving on background threads. bind_address must be
 * a numeric IPv4 or IPv6 address (ST_INVALID otherwise); ST_IO when the
 * address cannot be bound. Ignores SIGPIPE process-wide.
 */
enum status http_server_start(struct http_server *srv, struct error *err);

/* The port actually bound (useful with port 0). */
int http_server_port(const struct http_server *srv);

/* Requests currently being handled. */
unsigned http_server_in_flight(const struct http_server *srv);

/* True once http_server_shutdown() has begun: streams should end. */
bool http_server_draining(const struct http_server *srv);

/*
 * Graceful shutdown: stop accepting new connections, let requests in flight
 * finish for up to grace_ms, then stop. Returns the number of requests still
 * running when the grace ran out (0 when all finished). Safe to call once.
 * When it returns non-zero the daemon is left running (stopping it would
 * wait for those handlers): the process is expected to exit.
 */
unsigned http_server_shutdown(struct http_server *srv, int grace_ms);

/*
 * Frees the server; shuts it down first (grace 0) if still running. If
 * requests are still running it frees nothing (their threads use the
 * server) and logs a warning; call it again once in_flight is 0.
 */
void http_server_free(struct http_server *srv);

/* ---- request accessors (borrowed, valid during the handler) ------------ */

const char *http_request_method(const struct http_request *req);
/* The percent-decoded path, without the query. */
const char *http_request_path(const struct http_request *req);
/* Header value (case-insensitive name) or NULL. */
const char *http_request_header(const struct http_request *req, const char *name);
/* Decoded query parameter value or NULL. */
const char *http_request_query(const struct http_request *req, const char *name);
/* The request target as received: path and query, not decoded (for proxies). */
const char *http_request_target(const struct http_request *req);
/* Calls fn for each request header, in the order received (for proxies). */
void http_request_each_header(const struct http_request *req,
                              void (*fn)(void *ud, const char *name, const char *value), void *ud);
/* Value of a "{name}" path segment (decoded) or NULL. */
const char *http_request_param(const struct http_request *req, const char *name);
/* Raw body bytes (NUL-terminated for convenience; may contain NULs). */
const char *http_request_body(const struct http_request *req, size_t *len);
/* Parsed body for HTTP_ROUTE_JSON routes (borrowed), else NULL. */
json_t *http_request_json(const struct http_request *req);
/* The request id (echoed X-Request-Id or generated). */
const char *http_request_id(const struct http_request *req);
/* Peer address as text, "" when unknown. */
const char *http_request_remote_ip(const struct http_request *req);
/* The server handling the request. */
struct http_server *http_request_server(const struct http_request *req);

/* ---- responses --------------------------------------------------------- */

/* Adds a response header (copied). */
void http_response_header(struct http_response *resp, const char *name, const char *value);

/* Sets a JSON response; body is stolen. */
void http_respond_json(struct http_response *resp, int status, json_t *body);

/* Sets a response with bytes (copied) and a content type. */
void http_respond_bytes(struct http_response *resp, int status, const char *content_type,
                        const void *data, size_t len);

/*
 * Sets an error response from err: status from the table in core/error.h,
 * body {"error", "code"}, Retry-After when err->retry_after_s > 0.
 */
void http_respond_error(struct http_response *resp, const struct error *err);

/*
 * Server-Sent Events. After the handler returns, the server calls
 * next(ud, out) repeatedly on the connection's thread. next may block (it
 * should wake at least once a second and check http_server_draining()),
 * appends zero or more complete events ("event: x\ndata: y\n\n", or a
 * ": keep-alive\n\n" comment) to out and returns true to continue or false
 * to end the stream (after out is sent). free_ud(ud) is called once when
 * the stream ends for any reason, client disconnect included (a disconnect
 * is noticed on the next write, hence the keep-alive comments). out is
 * bounded to 1 MiB per call. Once the server is draining, next() is called
 * one last time and the stream ends after its output.
 */
typedef bool (*http_sse_next_fn)(void *ud, struct buf *out);
void http_respond_sse(struct http_response *resp, http_sse_next_fn next, void *ud,
                      void (*free_ud)(void *ud));

#endif
