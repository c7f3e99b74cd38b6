#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "core/id.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/util.h"

#define DEFAULT_MAX_BODY     (1024 * 1024)
#define DEFAULT_CONN_LIMIT   4096
#define DEFAULT_STACK        (256 * 1024)
#define DEFAULT_IDLE_TIMEOUT 75

#define MAX_PATH_BYTES   2048 /* longer paths get 414 */
#define MAX_URI_BYTES    8192 /* path plus query */
#define REQUEST_ID_MAX   128  /* longer X-Request-Id headers are replaced */
#define USER_AGENT_MAX   512  /* copied for the access log */
#define JSON_MAX_DEPTH   64   /* deeper JSON bodies are refused before parsing */
#define SSE_OUT_MAX      (1024 * 1024)
#define SSE_BLOCK        (16 * 1024)
#define DISCARD_FACTOR   8   /* an oversized chunked body is drained up to 8x the bound */
#define DRAIN_POLL_MS    10  /* how often shutdown looks at the in-flight count */
#define CLOSING_GRACE_MS 100 /* extra wait for requests that raced the final check */

struct route {
    char *method;
    char *pattern;
    char **segs; /* literal segment, or the parameter name when param[i] */
    bool *param;
    size_t nsegs;
    bool rest; /* the last segment is "{name...}": it takes the rest of the path */
    unsigned flags;
    http_handler_fn handler;
    void *ud;
};

struct header {
    char *name;
    char *value;
};

struct sse {
    struct http_server *srv;
    struct http_request *req; /* for the byte count; set when queued */
    http_sse_next_fn next;
    void *ud;
    void (*free_ud)(void *ud);
    struct buf out;
    size_t off; /* bytes of out already handed to MHD */
    bool last;  /* next() said stop, or the server is draining */
};

struct http_response {
    struct http_request *req;
    int status; /* 0 until a response is set */
    char *content_type;
    char *body;
    size_t len;
    struct header *headers;
    size_t nheaders;
    size_t cap;
    struct sse *sse;
    char error[ERROR_MSG_MAX]; /* message of an error response, for the access log */
};

struct param {
    const char *name;  /* borrowed from the route */
    const char *value; /* borrowed from the request's decoded segments */
};

struct http_request {
    struct http_server *srv;
    struct MHD_Connection *conn;
    char *uri; /* request target as received (path and query) */
    size_t uri_len;
    char *method;
    char *version;
    char *user_agent;
    const char *path; /* decoded by MHD, borrowed */
    char **segs;      /* decoded path segments */
    size_t nsegs;
    const struct route *route;
    struct param *params;
    size_t nparams;
    char *rest; /* the decoded segments a "{name...}" matched, joined with '/' */
    struct buf body;
    uint64_t body_seen; /* body bytes received, kept or discarded */
    uint64_t header_bytes;
    bool begun;
    bool too_large;
    json_t *json;
    char id[REQUEST_ID_MAX + 1];
    char remote_ip[INET6_ADDRSTRLEN];
    int64_t start_us;
    int status; /* status queued, 0 when none */
    uint64_t response_bytes;
    struct http_response resp;
};

struct http_server {
    struct http_server_options opts; /* defaults applied; strings point to the copies below */
    char *bind_address;
    char *service;
    struct route *routes;
    size_t nroutes;
    size_t cap;
    struct MHD_Daemon *daemon;
    int listen_fd;
    int port;
    bool started;
    bool shutdown_done;
    unsigned left; /* requests still running when the grace ran out */
    atomic_uint in_flight;
    atomic_bool draining; /* shutdown began: streams end, responses close connections */
    atomic_bool closing;  /* the daemon is about to stop: new requests get 503 */
};

/* ---- small helpers ------------------------------------------------------ */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Percent-decodes n bytes of a path segment into a new string. NULL on a
 * broken escape or an encoded NUL, which no identifier of ours contains and
 * which would silently truncate the C string.
 */
static char *percent_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n ? hex_value(s[i + 1]) : -1;
            int lo = i + 2 < n ? hex_value(s[i + 2]) : -1;

            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* True for a header value we are willing to echo: printable ASCII without spaces. */
static bool request_id_sane(const char *s)
{
    size_t n = 0;

    if (!s || !*s)
        return false;
    for (; *s; s++, n++)
        if (n >= REQUEST_ID_MAX || *s <= 0x20 || *s >= 0x7f)
            return false;
    return true;
}

/* Header names and values must not smuggle a line break into the response. */
static bool header_text_ok(const char *s)
{
    return s && !strpbrk(s, "\r\n");
}

/* application/json, any case, optionally followed by parameters. */
static bool content_type_is_json(const char *ct)
{
    static const char want[] = "application/json";
    size_t n = sizeof(want) - 1;

    if (!ct)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    if (strncasecmp(ct, want, n) != 0)
        return false;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/*
 * jansson parses with a nesting limit of 2048, but it dumps, compares and
 * frees recursively too, and dumping 2000 levels overflows a 256 KiB
 * connection stack (measured under ASan). Handlers dump request JSON, so
 * hostile nesting is refused before parsing; real bodies nest a few levels.
 */
static bool json_depth_ok(const char *s, size_t n, int max)
{
    bool in_str = false, esc = false;
    int depth = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        char c = s[i];

        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max)
                return false;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return true;
}

/* ---- routes ------------------------------------------------------------- */

/* Splits "/a/{b}/c" (or a request path) into segments after the leading slash. */
static size_t split_path(const char *path, size_t len, const char **starts, size_t *lens,
                         size_t max)
{
    size_t n = 0, i, start = 1;

    for (i = 1; i <= len; i++) {
        if (i == len || path[i] == '/') {
            if (n == max)
                return SIZE_MAX;
            starts[n] = path + start;
            lens[n] = i - start;
            n++;
            start = i + 1;
        }
    }
    return n;
}

static void route_release(struct route *r)
{
    size_t i;

    for (i = 0; i < r->nsegs; i++)
        free(r->segs[i]);
    free(r->segs);
    free(r->param);
    free(r->method);
    free(r->pattern);
}

void http_server_route(struct http_server *srv, const char *method, const char *pattern,
                       unsigned flags, http_handler_fn handler, void *ud)
{
    size_t len, n, i, max;
    const char **starts;
    size_t *lens;
    struct route *r;

    if (!srv || !method || !*method || !handler || !pattern || pattern[0] != '/')
        BUG("http_server_route: bad arguments for %s", pattern ? pattern : "(null)");
    if (srv->started)
        BUG("http_server_route: %s %s registered after start", method, pattern);
    len = strlen(pattern);
    max = len + 1;
    starts = xcalloc(max, sizeof(*starts));
    lens = xcalloc(max, sizeof(*lens));
    n = split_path(pattern, len, starts, lens, max);
    ASSERT(n != SIZE_MAX);

    if (srv->nroutes == srv->cap) {
        srv->cap = srv->cap ? srv->cap * 2 : 16;
        srv->routes = xrealloc(srv->routes, srv->cap * sizeof(*srv->routes));
    }
    r = &srv->routes[srv->nroutes++];
    memset(r, 0, sizeof(*r));
    r->method = xstrdup(method);
    r->pattern = xstrdup(pattern);
    r->segs = xcalloc(n, sizeof(*r->segs));
    r->param = xcalloc(n, sizeof(*r->param));
    r->nsegs = n;
    r->flags = flags;
    r->handler = handler;
    r->ud = ud;
    for (i = 0; i < n; i++) {
        const char *s = starts[i];
        size_t l = lens[i];

        if (l >= 2 && s[0] == '{' && s[l - 1] == '}') {
            if (l == 2)
                BUG("http_server_route: empty parameter name in %s", pattern);
            r->param[i] = true;
            s++;
            l -= 2;
            if (l > 3 && memcmp(s + l - 3, "...", 3) == 0) {
                if (i != n - 1)
                    BUG("http_server_route: {name...} must be the last segment of %s", pattern);
                r->rest = true;
                l -= 3;
            }
        }
        r->segs[i] = xmalloc(l + 1);
        memcpy(r->segs[i], s, l);
        r->segs[i][l] = '\0';
    }
    free(starts);
    free(lens);
}

static bool route_matches(const struct route *r, const struct http_request *req)
{
    size_t i;

    if (r->rest ? req->nsegs < r->nsegs : r->nsegs != req->nsegs)
        return false;
    for (i = 0; i < r->nsegs; i++) {
        if (r->param[i] ? req->segs[i][0] == '\0' : strcmp(r->segs[i], req->segs[i]) != 0)
            return false;
    }
    return true;
}

/* The decoded segments from index `from` on, joined with '/': new, caller frees. */
static char *join_segments(const struct http_request *req, size_t from)
{
    struct buf b;
    size_t i;

    buf_init(&b, SIZE_MAX);
    for (i = from; i < req->nsegs; i++) {
        if (i > from)
            buf_append(&b, "/", 1);
        buf_append_str(&b, req->segs[i]);
    }
    return buf_take(&b, NULL);
}

static void bind_params(struct http_request *req, const struct route *r)
{
    size_t i;

    req->params = xcalloc(r->nsegs ? r->nsegs : 1, sizeof(*req->params));
    for (i = 0; i < r->nsegs; i++) {
        if (r->param[i]) {
            req->params[req->nparams].name = r->segs[i];
            req->params[req->nparams].value = req->segs[i];
            if (r->rest && i == r->nsegs - 1) {
                req->rest = join_segments(req, i);
                req->params[req->nparams].value = req->rest;
            }
            req->nparams++;
        }
    }
}

/* ---- server lifecycle ----------------------------------------------------- */

struct http_server *http_server_new(const struct http_server_options *opts, struct error *err)
{
    struct http_server_options o = {0};
    struct http_server *srv;

    if (opts)
        o = *opts;
    if (o.port < 0 || o.port > 65535) {
        error_set(err, ST_INVALID, NULL, "cannot create http server: port %d out of range", o.port);
        return NULL;
    }
    srv = xcalloc(1, sizeof(*srv));
    srv->bind_address = xstrdup(o.bind_address ? o.bind_address : "0.0.0.0");
    srv->service = xstrdup(o.service ? o.service : "");
    o.bind_address = srv->bind_address;
    o.service = srv->service;
    if (o.max_body_bytes == 0)
        o.max_body_bytes = DEFAULT_MAX_BODY;
    if (o.connection_limit == 0)
        o.connection_limit = DEFAULT_CONN_LIMIT;
    if (o.thread_stack_bytes == 0)
        o.thread_stack_bytes = DEFAULT_STACK;
    if (o.idle_timeout_s == 0)
        o.idle_timeout_s = DEFAULT_IDLE_TIMEOUT;
    srv->opts = o;
    srv->listen_fd = -1;
    atomic_init(&srv->in_flight, 0);
    atomic_init(&srv->draining, false);
    atomic_init(&srv->closing, false);
    return srv;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn);
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls);
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe);

/* MHD reports through printf-style messages; they become WARNING lines. */
__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    UNUSED(cls);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_write(LOG_WARNING, NULL, "libmicrohttpd: %s", msg);
}

static void ignore_sigpipe(void)
{
    struct sigaction sa;

    /*
     * MHD sends with MSG_NOSIGNAL, but a write to a socket a client closed
     * must never kill the process, whichever library performs it.
     */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, NULL);
}

enum status http_server_start(struct http_server *srv, struct error *err)
{
    struct sockaddr_storage ss;
    unsigned int flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                         MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    const union MHD_DaemonInfo *info;

    if (srv->started)
        BUG("http_server_start: server already started");
    memset(&ss, 0, sizeof(ss));
    {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

        if (inet_pton(AF_INET, srv->bind_address, &in4->sin_addr) == 1) {
            in4->sin_family = AF_INET;
            in4->sin_port = htons((uint16_t)srv->opts.port);
        } else if (inet_pton(AF_INET6, srv->bind_address, &in6->sin6_addr) == 1) {
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons((uint16_t)srv->opts.port);
            flags |= MHD_USE_IPv6;
        } else {
            return error_set(err, ST_INVALID, NULL,
                             "cannot start http server: bind address %s is not an ip address",
                             srv->bind_address);
        }
    }
    ignore_sigpipe();
    errno = 0;
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)srv->opts.port, NULL, NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER,
        (MHD_LogCallback)on_mhd_log, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)srv->opts.thread_stack_bytes,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)srv->opts.connection_limit,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)srv->opts.idle_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, (MHD_RequestCompletedCallback)on_completed, srv,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, srv, MHD_OPTION_END);
    if (!srv->daemon)
        return error_set(err, ST_IO, NULL, "cannot listen on %s port %d: %s", srv->bind_address,
                         srv->opts.port, errno ? strerror(errno) : "libmicrohttpd refused");
    info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : srv->opts.port;
    info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_LISTEN_FD);
    srv->listen_fd = info ? info->listen_fd : -1;
    srv->started = true;
    log_write(LOG_INFO, json_pack("{s:s, s:i}", "address", srv->bind_address, "port", srv->port),
              "http server listening on %s port %d", srv->bind_address, srv->port);
    return ST_OK;
}

int http_server_port(const struct http_server *srv)
{
    return srv->port;
}

unsigned http_server_in_flight(const struct http_server *srv)
{
    return atomic_load(&((struct http_server *)srv)->in_flight);
}

bool http_server_draining(const struct http_server *srv)
{
    return atomic_load(&((struct http_server *)srv)->draining);
}

static void server_stop(struct http_server *srv)
{
    /* Joins the connection threads: only called once no handler is running. */
    MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
    if (srv->listen_fd >= 0)
        close(srv->listen_fd);
    srv->listen_fd = -1;
}

static void wait_in_flight(const struct http_server *srv, int64_t deadline_ms)
{
    while (http_server_in_flight(srv) > 0 && time_mono_ms() < deadline_ms)
        time_sleep_ms(DRAIN_POLL_MS);
}

unsigned http_server_shutdown(struct http_server *srv, int grace_ms)
{
    int64_t t0 = time_mono_ms();
    unsigned left;

    if (!srv->started || srv->shutdown_done)
        return srv->left;
    srv->shutdown_done = true;
    atomic_store(&srv->draining, true);

    /*
     * MHD_quiesce_daemon stops polling the listen socket. MHD documents that
     * the socket may only be closed after MHD_stop_daemon, since a thread
     * might still touch it, so it is shut down instead: Linux then drops the
     * pending backlog and refuses new connections at once, which is what a
     * load balancer needs to see, and the descriptor is closed in
     * server_stop().
     */
    if (MHD_quiesce_daemon(srv->daemon) != MHD_INVALID_SOCKET && srv->listen_fd >= 0)
        shutdown(srv->listen_fd, SHUT_RDWR);

    wait_in_flight(srv, t0 + (grace_ms > 0 ? grace_ms : 0));

    /*
     * From here on a request arriving on a kept-alive connection is answered
     * 503 without running a handler (see request_begin). A request counts
     * itself in flight before it looks at closing, and we set closing before
     * reading the count, so any request we miss is one that sees closing and
     * finishes at once: the short extra wait covers it.
     */
    atomic_store(&srv->closing, true);
    if (http_server_in_flight(srv) > 0)
        wait_in_flight(srv, time_mono_ms() + CLOSING_GRACE_MS);
    left = http_server_in_flight(srv);
    srv->left = left;
    if (left == 0) {
        server_stop(srv);
        log_info("http server stopped after %" PRId64 " ms", time_mono_ms() - t0);
    } else {
        /*
         * MHD_stop_daemon would join the threads of the requests still
         * running, for as long as their handlers take. The daemon is left
         * quiesced instead and the process is expected to exit.
         */
        log_warn("http server shutdown: %u request(s) still running after %d ms grace", left,
                 grace_ms);
    }
    return left;
}

void http_server_free(struct http_server *srv)
{
    size_t i;

    if (!srv)
        return;
    if (srv->started && !srv->shutdown_done)
        http_server_shutdown(srv, 0);
    if (srv->daemon) {
        if (http_server_in_flight(srv) > 0) {
            /*
             * Connection threads still use srv: freeing it would be a
             * use-after-free, stopping the daemon would block on them.
             */
            log_warn("http server not freed: %u request(s) still running",
                     http_server_in_flight(srv));
            return;
        }
        server_stop(srv);
    }
    for (i = 0; i < srv->nroutes; i++)
        route_release(&srv->routes[i]);
    free(srv->routes);
    free(srv->bind_address);
    free(srv->service);
    free(srv);
}

/* ---- responses ------------------------------------------------------------ */

static void sse_free(struct sse *s)
{
    if (s->free_ud)
        s->free_ud(s->ud);
    buf_release(&s->out);
    free(s);
}

static void response_clear_body(struct http_response *resp)
{
    free(resp->content_type);
    resp->content_type = NULL;
    free(resp->body);
    resp->body = NULL;
    resp->len = 0;
    resp->error[0] = '\0';
    if (resp->sse) {
        sse_free(resp->sse);
        resp->sse = NULL;
    }
}

static void response_release(struct http_response *resp)
{
    size_t i;

    response_clear_body(resp);
    for (i = 0; i < resp->nheaders; i++) {
        free(resp->headers[i].name);
        free(resp->headers[i].value);
    }
    free(resp->headers);
    resp->headers = NULL;
    resp->nheaders = resp->cap = 0;
    resp->status = 0;
}

/* Sets the body (taking ownership of body, a malloc'd buffer). */
static void response_set(struct http_response *resp, int status, const char *content_type,
                         char *body, size_t len)
{
    response_clear_body(resp);
    resp->status = status;
    resp->content_type = xstrdup(content_type);
    resp->body = body;
    resp->len = len;
}

void http_response_header(struct http_response *resp, const char *name, const char *value)
{
    if (!name || !*name || !header_text_ok(name) || !header_text_ok(value)) {
        log_error("BUG: refusing response header %s: empty or contains a line break",
                  name ? name : "(null)");
        return;
    }
    if (resp->nheaders == resp->cap) {
        resp->cap = resp->cap ? resp->cap * 2 : 8;
        resp->headers = xrealloc(resp->headers, resp->cap * sizeof(*resp->headers));
    }
    resp->headers[resp->nheaders].name = xstrdup(name);
    resp->headers[resp->nheaders].value = xstrdup(value);
    resp->nheaders++;
}

static void respond_error_http(struct http_response *resp, int http, const struct error *err)
{
    json_t *body = error_to_json(err);
    char *text = json_dump_compact(body);

    json_decref(body);
    response_set(resp, http, "application/json", text, strlen(text));
    str_copy(resp->error, sizeof(resp->error), err->message);
}

static void respond_internal(struct http_response *resp, const char *message)
{
    struct error e;

    error_set(&e, ST_INTERNAL, NULL, "%s", message);
    respond_error_http(resp, 500, &e);
}

void http_respond_json(struct http_response *resp, int status, json_t *body)
{
    char *text = body ? json_dump_compact(body) : NULL;

    json_decref(body);
    if (!text) {
        log_error("BUG: http_respond_json called without a body");
        respond_internal(resp, "internal error: response could not be built");
        return;
    }
    response_set(resp, status, "application/json", text, strlen(text));
}

void http_respond_bytes(struct http_response *resp, int status, const char *content_type,
                        const void *data, size_t len)
{
    char *copy = xmalloc(len + 1);

    if (len)
        memcpy(copy, data, len);
    copy[len] = '\0';
    response_set(resp, status, content_type ? content_type : "application/octet-stream", copy, len);
}

void http_respond_error(struct http_response *resp, const struct error *err)
{
    if (!err || err->status == ST_OK) {
        log_error("BUG: http_respond_error called without an error");
        respond_internal(resp, "internal error");
        return;
    }
    respond_error_http(resp, status_http(err->status), err);
    if (err->retry_after_s > 0) {
        char v[24];

        snprintf(v, sizeof(v), "%d", err->retry_after_s);
        http_response_header(resp, "Retry-After", v);
    }
}

void http_respond_sse(struct http_response *resp, http_sse_next_fn next, void *ud,
                      void (*free_ud)(void *ud))
{
    struct sse *s = xcalloc(1, sizeof(*s));

    s->next = next;
    s->ud = ud;
    s->free_ud = free_ud;
    buf_init(&s->out, SSE_OUT_MAX);
    response_clear_body(resp);
    resp->status = 200;
    resp->sse = s;
}

/*
 * Runs on the connection's thread, which is allowed to block in
 * thread-per-connection mode. Returning 0 would make MHD spin, so this
 * loops on next() until it has bytes or the stream is over.
 */
static ssize_t sse_read(void *cls, uint64_t pos, char *dst, size_t max)
{
    struct sse *s = cls;
    size_t n;

    UNUSED(pos);
    while (s->off >= s->out.len) {
        if (s->last)
            return MHD_CONTENT_READER_END_OF_STREAM;
        buf_reset(&s->out);
        s->off = 0;
        /* Once draining, next() gets one last call (it may say goodbye). */
        if (http_server_draining(s->srv))
            s->last = true;
        if (!s->next(s->ud, &s->out))
            s->last = true;
    }
    n = s->out.len - s->off;
    if (n > max)
        n = max;
    memcpy(dst, s->out.data + s->off, n);
    s->off += n;
    if (s->req)
        s->req->response_bytes += n;
    return (ssize_t)n;
}

/* MHD destroys the response once, whether the stream ended or the client left. */
static void sse_destroy(void *cls)
{
    sse_free(cls);
}

static bool add_header(struct MHD_Response *r, const char *name, const char *value)
{
    if (MHD_add_response_header(r, name, value) == MHD_YES)
        return true;
    log_error("cannot add response header %s", name);
    return false;
}

/* Hands the request's response to MHD. */
static enum MHD_Result queue_response(struct http_request *req)
{
    struct http_response *resp = &req->resp;
    struct MHD_Response *r;
    enum MHD_Result ret;
    size_t i;

    ASSERT(resp->status != 0);
    if (resp->sse) {
        struct sse *s = resp->sse;

        s->srv = req->srv;
        s->req = req;
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, sse_read, s,
                                              sse_destroy);
        if (!r)
            goto fail;
        resp->sse = NULL; /* the response owns it now */
        add_header(r, "Content-Type", "text/event-stream");
        add_header(r, "Cache-Control", "no-cache");
        add_header(r, "X-Accel-Buffering", "no");
    } else {
        if (resp->body) {
            r = MHD_create_response_from_buffer(resp->len, resp->body, MHD_RESPMEM_MUST_FREE);
            if (r)
                resp->body = NULL; /* MHD frees it with free() */
        } else {
            r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        }
        if (!r)
            goto fail;
        req->response_bytes = resp->len;
        if (resp->content_type)
            add_header(r, "Content-Type", resp->content_type);
    }
    for (i = 0; i < resp->nheaders; i++)
        add_header(r, resp->headers[i].name, resp->headers[i].value);
    add_header(r, "X-Request-Id", req->id);
    if (http_server_draining(req->srv))
        add_header(r, "Connection", "close");
    ret = MHD_queue_response(req->conn, (unsigned int)resp->status, r);
    MHD_destroy_response(r);
    if (ret != MHD_YES) {
        log_error("cannot queue response %d for %s %s", resp->status, req->method, req->uri);
        return MHD_NO;
    }
    req->status = resp->status;
    return MHD_YES;

fail:
    log_error("cannot create response %d for %s %s", resp->status, req->method, req->uri);
    return MHD_NO;
}

/* Answers with a JSON error before or instead of the handler. */
static enum MHD_Result reject(struct http_request *req, int http, enum status st, const char *code,
                              const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static enum MHD_Result reject(struct http_request *req, int http, enum status st, const char *code,
                              const char *fmt, ...)
{
    struct error e;
    va_list ap;

    error_set(&e, st, code, "%s", "");
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof(e.message), fmt, ap);
    va_end(ap);
    if (req->srv->opts.localize)
        req->srv->opts.localize(req, &e);
    respond_error_http(&req->resp, http, &e);
    return queue_response(req);
}

/* ---- requests ------------------------------------------------------------- */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct http_server *srv = cls;
    struct http_request *req = xcalloc(1, sizeof(*req));
    const union MHD_ConnectionInfo *ci;

    /* Counted before anything else: shutdown relies on it (see http_server_shutdown). */
    atomic_fetch_add(&srv->in_flight, 1);
    req->srv = srv;
    req->conn = conn;
    req->start_us = time_mono_us();
    req->resp.req = req;
    uri = uri ? uri : "";
    req->uri_len = strlen(uri);
    /* Kept whole up to the bound (the access log wants it); longer ones get 414. */
    req->uri = xstrdup(req->uri_len <= MAX_URI_BYTES ? uri : "(too long)");
    buf_init(&req->body, srv->opts.max_body_bytes);
    ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;

        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, req->remote_ip,
                      sizeof(req->remote_ip));
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, req->remote_ip,
                      sizeof(req->remote_ip));
    }
    return req;
}

static void request_free(struct http_request *req)
{
    size_t i;

    response_release(&req->resp);
    for (i = 0; i < req->nsegs; i++)
        free(req->segs[i]);
    free(req->segs);
    free(req->params);
    free(req->rest);
    buf_release(&req->body);
    json_decref(req->json);
    free(req->uri);
    free(req->method);
    free(req->version);
    free(req->user_agent);
    free(req);
}

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    uint64_t *n = cls;

    UNUSED(kind);
    *n += strlen(key) + 4 + (value ? strlen(value) : 0); /* "key: value\r\n" */
    return MHD_YES;
}

static void request_set_context(struct http_request *req)
{
    struct trace_ctx trace;
    const char *rid = http_request_header(req, "X-Request-Id");

    /* A thread serves many requests over a kept-alive connection: start clean. */
    log_context_clear();
    if (trace_parse(http_request_header(req, "traceparent"),
                    http_request_header(req, "X-Cloud-Trace-Context"), &trace))
        log_context_set_trace(&trace);
    if (request_id_sane(rid))
        str_copy(req->id, sizeof(req->id), rid);
    else
        id_uuid4(req->id);
    log_context_add_str("requestId", req->id);
}

/* Splits and decodes the path. Returns false on a malformed escape. */
static bool request_split_path(struct http_request *req, const char *raw, size_t len)
{
    const char **starts = xcalloc(len + 1, sizeof(*starts));
    size_t *lens = xcalloc(len + 1, sizeof(*lens));
    bool ok = true;
    size_t n, i;

    n = split_path(raw, len, starts, lens, len + 1);
    ASSERT(n != SIZE_MAX);
    req->segs = xcalloc(n ? n : 1, sizeof(*req->segs));
    for (i = 0; i < n && ok; i++) {
        req->segs[i] = percent_decode(starts[i], lens[i]);
        if (!req->segs[i])
            ok = false;
        else
            req->nsegs++;
    }
    free(starts);
    free(lens);
    return ok;
}

static enum MHD_Result request_route(struct http_request *req)
{
    struct http_server *srv = req->srv;
    const char *q = strchr(req->uri, '?');
    size_t path_len = q ? (size_t)(q - req->uri) : strlen(req->uri);
    struct buf allow;
    size_t i;
    enum MHD_Result ret;

    if (req->uri[0] != '/')
        return reject(req, 400, ST_INVALID, "invalid_path",
                      "cannot route request: target must be an absolute path");
    if (!request_split_path(req, req->uri, path_len))
        return reject(req, 400, ST_INVALID, "invalid_path",
                      "cannot route request: malformed percent-encoding in path");
    for (i = 0; i < srv->nroutes; i++) {
        const struct route *r = &srv->routes[i];

        if (strcmp(r->method, req->method) == 0 && route_matches(r, req)) {
            req->route = r;
            bind_params(req, r);
            return MHD_YES;
        }
    }
    buf_init(&allow, 1024);
    for (i = 0; i < srv->nroutes; i++) {
        const struct route *r = &srv->routes[i];
        size_t j;
        bool seen = false;

        if (!route_matches(r, req))
            continue;
        for (j = 0; j < i && !seen; j++)
            seen = strcmp(srv->routes[j].method, r->method) == 0 &&
                   route_matches(&srv->routes[j], req);
        if (!seen)
            buf_printf(&allow, "%s%s", allow.len ? ", " : "", r->method);
    }
    if (allow.len == 0) {
        buf_release(&allow);
        return reject(req, 404, ST_NOT_FOUND, NULL, "no route for %s %.200s", req->method,
                      req->uri);
    }
    http_response_header(&req->resp, "Allow", buf_str(&allow));
    buf_release(&allow);
    ret = reject(req, 405, ST_METHOD_NOT_ALLOWED, NULL, "method %s not allowed for %.200s",
                 req->method, req->uri);
    return ret;
}

/* First call for a request: headers are in, the body (if any) is not. */
static enum MHD_Result request_begin(struct http_request *req, const char *url, const char *method,
                                     const char *version)
{
    struct http_server *srv = req->srv;
    const char *ua, *cl;
    int64_t clen;
    size_t path_len;
    enum MHD_Result ret;

    req->begun = true;
    req->path = url;
    req->method = xstrdup(method ? method : "");
    req->version = xstrdup(version ? version : "");
    ua = http_request_header(req, "User-Agent");
    if (ua) {
        size_t n = strnlen(ua, USER_AGENT_MAX);

        req->user_agent = xmalloc(n + 1);
        memcpy(req->user_agent, ua, n);
        req->user_agent[n] = '\0';
    }
    req->header_bytes = strlen(req->method) + req->uri_len + strlen(req->version) + 4;
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, count_header, &req->header_bytes);
    request_set_context(req);

    if (atomic_load(&srv->closing))
        return reject(req, 503, ST_UNAVAILABLE, NULL, "server is shutting down");
    path_len = strcspn(req->uri, "?");
    if (req->uri_len > MAX_URI_BYTES || path_len > MAX_PATH_BYTES)
        return reject(req, 414, ST_INVALID, "uri_too_long",
                      "request target of %zu bytes is longer than %d", req->uri_len,
                      path_len > MAX_PATH_BYTES ? MAX_PATH_BYTES : MAX_URI_BYTES);
    ret = request_route(req);
    if (ret != MHD_YES || req->status != 0)
        return ret;

    /* Refused before reading a byte of the body (and before 100 Continue). */
    cl = http_request_header(req, "Content-Length");
    if (cl && str_to_i64(cl, 0, INT64_MAX, &clen) && (uint64_t)clen > srv->opts.max_body_bytes)
        return reject(req, 413, ST_TOO_LARGE, NULL,
                      "request body of %" PRId64 " bytes is larger than %zu", clen,
                      srv->opts.max_body_bytes);
    if ((req->route->flags & HTTP_ROUTE_JSON) &&
        !content_type_is_json(http_request_header(req, "Content-Type")))
        return reject(req, 415, ST_UNSUPPORTED_MEDIA, NULL,
                      "content type must be application/json");
    return MHD_YES;
}

static enum MHD_Result request_body(struct http_request *req, const char *data, size_t n)
{
    struct http_server *srv = req->srv;

    req->body_seen += n;
    if (!req->too_large && buf_append(&req->body, data, n) != ST_OK) {
        /*
         * Only a chunked body can get here (Content-Length was checked).
         * MHD 0.9.75 cannot queue a response while the body is being read,
         * so the rest is drained without keeping it and 413 is sent at the
         * end. A client that keeps sending loses its connection instead.
         */
        req->too_large = true;
        buf_release(&req->body);
    }
    if (req->too_large &&
        req->body_seen > (uint64_t)srv->opts.max_body_bytes * (DISCARD_FACTOR + 1)) {
        log_warn("closing connection: request body of %s %s passed %" PRIu64 " bytes", req->method,
                 req->uri, req->body_seen);
        return MHD_NO;
    }
    return MHD_YES;
}

/* Last call: the body is complete. */
static enum MHD_Result request_finish(struct http_request *req)
{
    const struct route *r = req->route;
    struct error e;

    if (req->too_large)
        return reject(req, 413, ST_TOO_LARGE, NULL, "request body is larger than %zu bytes",
                      req->srv->opts.max_body_bytes);
    if (r->flags & HTTP_ROUTE_JSON) {
        if (req->body.len == 0)
            return reject(req, 400, ST_INVALID, "malformed_json",
                          "malformed json: request body is empty");
        if (!json_depth_ok(req->body.data, req->body.len, JSON_MAX_DEPTH))
            return reject(req, 400, ST_INVALID, "malformed_json",
                          "malformed json: nested deeper than %d levels", JSON_MAX_DEPTH);
        req->json = json_parse(req->body.data, req->body.len, &e);
        if (!req->json) {
            if (req->srv->opts.localize)
                req->srv->opts.localize(req, &e);
            respond_error_http(&req->resp, status_http(e.status), &e);
            return queue_response(req);
        }
    }
    r->handler(req, &req->resp, r->ud);
    if (req->resp.status == 0) {
        log_error("BUG: handler for %s %s set no response", r->method, r->pattern);
        respond_internal(&req->resp, "internal error: no response");
    }
    return queue_response(req);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct http_request *req = *con_cls;

    if (!req) /* the URI callback always runs first; this keeps us safe if not */
        req = *con_cls = on_uri(cls, url, conn);
    if (!req->begun)
        return request_begin(req, url, method, version);
    if (req->status != 0) {
        /* Answered early: anything MHD still passes in is dropped. */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;

        *upload_data_size = 0;
        return request_body(req, upload_data, n);
    }
    return request_finish(req);
}

static const char *termination_text(enum MHD_RequestTerminationCode toe)
{
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK:
        return NULL;
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
        return "timed out";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
        return "server shutdown";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT:
    case MHD_REQUEST_TERMINATED_READ_ERROR:
        return "client closed the connection";
    default:
        return "connection error";
    }
}

static void access_log(const struct http_request *req, enum MHD_RequestTerminationCode toe)
{
    int64_t us = time_mono_us() - req->start_us;
    const char *why = termination_text(toe);
    const char *method = req->method ? req->method : "";
    char size[24], latency[32];
    json_t *h = json_object(), *fields;
    enum log_severity sev = req->status >= 500 ? LOG_WARNING : LOG_INFO;

    if (!log_enabled(sev)) {
        json_decref(h);
        return;
    }
    if (us < 0)
        us = 0;
    json_object_set_new(h, "requestMethod", json_string(method));
    json_object_set_new(h, "requestUrl", json_string(req->uri));
    if (req->status)
        json_object_set_new(h, "status", json_integer(req->status));
    snprintf(size, sizeof(size), "%" PRIu64, req->header_bytes + req->body_seen);
    json_object_set_new(h, "requestSize", json_string(size));
    snprintf(size, sizeof(size), "%" PRIu64, req->response_bytes);
    json_object_set_new(h, "responseSize", json_string(size));
    if (req->user_agent)
        json_object_set_new(h, "userAgent", json_string(req->user_agent));
    json_object_set_new(h, "remoteIp", json_string(req->remote_ip));
    snprintf(latency, sizeof(latency), "%" PRId64 ".%06" PRId64 "s", us / 1000000, us % 1000000);
    json_object_set_new(h, "latency", json_string(latency));
    if (req->version && *req->version)
        json_object_set_new(h, "protocol", json_string(req->version));
    fields = json_pack("{s:o}", "httpRequest", h);
    if (req->status >= 500 && req->resp.error[0])
        json_object_set_new(fields, "error", json_string(req->resp.error));
    log_write(sev, fields, "%s %.200s %d%s%s%s", method, req->uri, req->status, why ? " (" : "",
              why ? why : "", why ? ")" : "");
}

/* Requests by route pattern (bounded cardinality), method and status, with latency. */
static void count_request(const struct http_request *req)
{
    char status[8];
    const char *labels[3];

    snprintf(status, sizeof(status), "%d", req->status);
    labels[0] = req->route ? req->route->pattern : "unmatched";
    labels[1] = req->method ? req->method : "";
    labels[2] = status;
    metric_add(metric_counter("http_requests_total", "requests served by route, method and status",
                              "route,method,status"),
               labels, 1);
    metric_observe(metric_histogram("http_request_seconds", "request latency by route",
                                    "route,method,status", metrics_latency_buckets,
                                    metrics_latency_buckets_n),
                   labels, (double)(time_mono_us() - req->start_us) / 1e6);
}

/* Runs on the connection's thread once per request, whatever its fate. */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_server *srv = cls;
    struct http_request *req = *con_cls;

    UNUSED(conn);
    if (req) {
        if (srv->opts.access_log)
            access_log(req, toe);
        count_request(req);
        *con_cls = NULL;
        request_free(req);
        atomic_fetch_sub(&srv->in_flight, 1);
    }
    log_context_clear();
}

/* ---- request accessors ------------------------------------------------------ */

const char *http_request_method(const struct http_request *req)
{
    return req->method;
}

const char *http_request_path(const struct http_request *req)
{
    return req->path;
}

const char *http_request_header(const struct http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_request_query(const struct http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_request_target(const struct http_request *req)
{
    return req->uri;
}

struct header_walk {
    void (*fn)(void *ud, const char *name, const char *value);
    void *ud;
};

static enum MHD_Result walk_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct header_walk *w = cls;

    UNUSED(kind);
    w->fn(w->ud, key, value ? value : "");
    return MHD_YES;
}

void http_request_each_header(const struct http_request *req,
                              void (*fn)(void *ud, const char *name, const char *value), void *ud)
{
    struct header_walk w = {fn, ud};

    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, walk_header, &w);
}

const char *http_request_param(const struct http_request *req, const char *name)
{
    size_t i;

    for (i = 0; i < req->nparams; i++)
        if (strcmp(req->params[i].name, name) == 0)
            return req->params[i].value;
    return NULL;
}

const char *http_request_body(const struct http_request *req, size_t *len)
{
    if (len)
        *len = req->body.len;
    return buf_str(&req->body);
}

json_t *http_request_json(const struct http_request *req)
{
    return req->json;
}

const char *http_request_id(const struct http_request *req)
{
    return req->id;
}

const char *http_request_remote_ip(const struct http_request *req)
{
    return req->remote_ip;
}

struct http_server *http_request_server(const struct http_request *req)
{
    return req->srv;
}
