#include "http/client.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/backoff.h"
#include "core/id.h"
#include "core/json.h"
#include "core/log.h"
#include "core/netaddr.h"
#include "core/timeutil.h"
#include "core/util.h"

#ifndef BATCHD_VERSION
#define BATCHD_VERSION "0.1.0"
#endif

#define DEFAULT_CONNECT_TIMEOUT_MS 5000L
#define DEFAULT_TIMEOUT_MS         30000L
#define DEFAULT_MAX_RESPONSE       ((size_t)8 << 20)
#define DEFAULT_MAX_ATTEMPTS       4
#define DEFAULT_RETRY_BASE_MS      200L
#define DEFAULT_RETRY_CAP_MS       10000L

#define URL_MAX          16384 /* longer URLs are refused as invalid */
#define URL_MSG_MAX      160   /* URLs are shortened to this in error messages */
#define POOL_MAX         64    /* idle easy handles kept per pool */
#define HEADERS_MAX      200   /* response headers kept per response */
#define HEADER_BYTES_MAX 65536 /* and their total size */
#define RETRY_AFTER_MAX  INT_MAX
#define METHOD_MAX       16

/* ---- client ------------------------------------------------------------- */

/* Idle easy handles, most recently used last (their connections are warmest). */
struct easy_pool {
    CURL **v;
    size_t n;
    size_t cap;
};

enum pool_kind { POOL_PLAIN, POOL_GUARDED, POOL__COUNT };

struct http_client {
    long connect_timeout_ms;
    long timeout_ms;
    size_t max_response_bytes;
    int max_attempts;
    long retry_base_ms;
    long retry_cap_ms;
    char *user_agent;

    CURLSH *share;
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];

    pthread_mutex_t pool_lock;
    /*
     * Guarded calls (block_private_addresses) have handles of their own: a
     * handle's connection cache then only holds connections whose peer
     * address passed the check, since a reused connection is never checked
     * again.
     */
    struct easy_pool pools[POOL__COUNT];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);

    if (rc != CURLE_OK)
        BUG("curl_global_init failed: %s", curl_easy_strerror(rc));
}

static void share_lock(CURL *easy, curl_lock_data data, curl_lock_access access, void *ud)
{
    struct http_client *c = ud;

    UNUSED(easy);
    UNUSED(access);
    if ((int)data < 0 || data >= CURL_LOCK_DATA_LAST)
        BUG("curl share lock for unknown data %d", (int)data);
    pthread_mutex_lock(&c->share_locks[data]);
}

static void share_unlock(CURL *easy, curl_lock_data data, void *ud)
{
    struct http_client *c = ud;

    UNUSED(easy);
    if ((int)data < 0 || data >= CURL_LOCK_DATA_LAST)
        BUG("curl share unlock for unknown data %d", (int)data);
    pthread_mutex_unlock(&c->share_locks[data]);
}

static void share_must(CURLSHcode rc, const char *what)
{
    if (rc != CURLSHE_OK)
        BUG("curl share %s failed: %s", what, curl_share_strerror(rc));
}

struct http_client *http_client_new(const struct http_client_options *opts)
{
    struct http_client *c;
    size_t i;

    pthread_once(&curl_once, curl_init_once);
    c = xcalloc(1, sizeof(*c));
    c->connect_timeout_ms = opts && opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms
                                                                 : DEFAULT_CONNECT_TIMEOUT_MS;
    c->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    c->max_response_bytes =
        opts && opts->max_response_bytes > 0 ? opts->max_response_bytes : DEFAULT_MAX_RESPONSE;
    c->max_attempts = opts && opts->max_attempts > 0 ? opts->max_attempts : DEFAULT_MAX_ATTEMPTS;
    c->retry_base_ms =
        opts && opts->retry_base_ms > 0 ? opts->retry_base_ms : DEFAULT_RETRY_BASE_MS;
    c->retry_cap_ms = opts && opts->retry_cap_ms > 0 ? opts->retry_cap_ms : DEFAULT_RETRY_CAP_MS;
    c->user_agent =
        xstrdup(opts && opts->user_agent && opts->user_agent[0] ? opts->user_agent
                                                                : "batchd/" BATCHD_VERSION);

    for (i = 0; i < ARRAY_SIZE(c->share_locks); i++)
        pthread_mutex_init(&c->share_locks[i], NULL);
    pthread_mutex_init(&c->pool_lock, NULL);

    c->share = curl_share_init();
    if (!c->share)
        BUG("curl_share_init failed");
    share_must(curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock), "lockfunc");
    share_must(curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock), "unlockfunc");
    share_must(curl_share_setopt(c->share, CURLSHOPT_USERDATA, c), "userdata");
    share_must(curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS), "dns");
    share_must(curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION),
               "ssl session");
    /*
     * CURL_LOCK_DATA_CONNECT is deliberately not shared: libcurl 7.88
     * documents that sharing connections between concurrent threads is not
     * supported (curl issue #4915, data races on connections in use). The
     * pooled easy handles keep connections warm instead.
     */
    return c;
}

void http_client_free(struct http_client *c)
{
    size_t i, k;

    if (!c)
        return;
    for (k = 0; k < POOL__COUNT; k++) {
        for (i = 0; i < c->pools[k].n; i++)
            curl_easy_cleanup(c->pools[k].v[i]);
        free(c->pools[k].v);
    }
    share_must(curl_share_cleanup(c->share), "cleanup");
    pthread_mutex_destroy(&c->pool_lock);
    for (i = 0; i < ARRAY_SIZE(c->share_locks); i++)
        pthread_mutex_destroy(&c->share_locks[i]);
    free(c->user_agent);
    free(c);
}

static CURL *easy_new(void)
{
    CURL *e = curl_easy_init();

    if (!e)
        BUG("curl_easy_init failed");
    return e;
}

/* Takes a handle from p, or NULL when empty. The caller holds any lock needed. */
static CURL *pool_take(struct easy_pool *p)
{
    return p->n > 0 ? p->v[--p->n] : NULL;
}

/* Returns a reset handle to p, or frees it when p is full. */
static void pool_give(struct easy_pool *p, CURL *e)
{
    if (p->n >= POOL_MAX) {
        curl_easy_cleanup(e);
        return;
    }
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 8;
        p->v = xrealloc(p->v, p->cap * sizeof(*p->v));
    }
    p->v[p->n++] = e;
}

static CURL *client_easy_get(struct http_client *c, enum pool_kind kind)
{
    CURL *e;

    pthread_mutex_lock(&c->pool_lock);
    e = pool_take(&c->pools[kind]);
    pthread_mutex_unlock(&c->pool_lock);
    return e ? e : easy_new();
}

static void client_easy_put(struct http_client *c, enum pool_kind kind, CURL *e)
{
    curl_easy_reset(e);
    pthread_mutex_lock(&c->pool_lock);
    pool_give(&c->pools[kind], e);
    pthread_mutex_unlock(&c->pool_lock);
}

/* ---- calls -------------------------------------------------------------- */

/* The copy lives in one block: the struct, the header pointers, then the bytes. */
struct http_call *http_call_copy(const struct http_call *call)
{
    size_t nh = 0, size, i;
    struct http_call *copy;
    const char **hdrs;
    char *p;

    ASSERT(call);
    while (call->headers && call->headers[nh])
        nh++;
    size = sizeof(*copy) + (nh + 1) * sizeof(char *);
    size += call->method ? strlen(call->method) + 1 : 0;
    size += call->url ? strlen(call->url) + 1 : 0;
    for (i = 0; i < nh; i++)
        size += strlen(call->headers[i]) + 1;
    size += call->body ? call->body_len + 1 : 0;

    copy = xmalloc(size);
    *copy = *call;
    hdrs = (const char **)(copy + 1);
    p = (char *)(hdrs + nh + 1);
    if (call->method) {
        copy->method = memcpy(p, call->method, strlen(call->method) + 1);
        p += strlen(call->method) + 1;
    }
    if (call->url) {
        copy->url = memcpy(p, call->url, strlen(call->url) + 1);
        p += strlen(call->url) + 1;
    }
    for (i = 0; i < nh; i++) {
        hdrs[i] = memcpy(p, call->headers[i], strlen(call->headers[i]) + 1);
        p += strlen(call->headers[i]) + 1;
    }
    hdrs[nh] = NULL;
    copy->headers = call->headers ? hdrs : NULL;
    if (call->body) {
        memcpy(p, call->body, call->body_len);
        p[call->body_len] = '\0';
        copy->body = p;
    }
    return copy;
}

void http_call_free(struct http_call *call)
{
    free(call);
}

void http_result_init(struct http_result *res)
{
    memset(res, 0, sizeof(*res));
    buf_init(&res->body, 0);
}

void http_result_release(struct http_result *res)
{
    if (!res)
        return;
    buf_release(&res->body);
    curl_slist_free_all(res->headers);
    res->headers = NULL;
}

/* Case-insensitive "name:" prefix match; returns the value with leading blanks skipped. */
static const char *header_value(const char *line, const char *name)
{
    size_t n = strlen(name);

    if (strncasecmp(line, name, n) != 0 || line[n] != ':')
        return NULL;
    line += n + 1;
    while (*line == ' ' || *line == '\t')
        line++;
    return line;
}

const char *http_result_header(const struct http_result *res, const char *name)
{
    const struct curl_slist *h;

    if (!res || !name)
        return NULL;
    for (h = res->headers; h; h = h->next) {
        const char *v = header_value(h->data, name);

        if (v)
            return v;
    }
    return NULL;
}

/* Clears what one attempt fills, keeping the body's storage and bound. */
static void result_reset_attempt(struct http_result *res)
{
    res->status = 0;
    buf_reset(&res->body);
    res->content_type[0] = '\0';
    res->retry_after_s = 0;
    curl_slist_free_all(res->headers);
    res->headers = NULL;
}

/* Prepares res for a new call whose body is bounded to max bytes. */
static void result_begin(struct http_result *res, size_t max)
{
    http_result_release(res);
    http_result_init(res);
    buf_init(&res->body, max);
}

static struct curl_slist *slist_add(struct curl_slist *list, const char *s)
{
    struct curl_slist *l = curl_slist_append(list, s);

    if (!l)
        BUG("out of memory in curl_slist_append");
    return l;
}

/* ---- address policy ------------------------------------------------------- */

/* ---- one transfer ------------------------------------------------------- */

/* The limits a call runs under, resolved from the call and the client's defaults. */
struct plan {
    const char *method;
    char url_msg[URL_MSG_MAX]; /* the URL for messages: no query, no credentials */
    long timeout_ms;
    long connect_timeout_ms;
    size_t max_bytes;
    int max_attempts;
    int64_t budget_ms;
    long base_ms;
    long cap_ms;
    bool idempotent;
    bool guard;
};

/* What the callbacks of one attempt share. */
struct xfer {
    const struct http_call *call;
    struct http_result *res;
    struct curl_slist *req_headers;
    size_t header_bytes;
    int header_count;
    bool too_large;
    bool blocked;
    char blocked_addr[INET6_ADDRSTRLEN];
    char errbuf[CURL_ERROR_SIZE];
};

/*
 * Copies url for an error message without what may carry secrets: the query,
 * the fragment and any user:password@.
 */
static void url_for_message(const char *url, char *out, size_t cap)
{
    const char *start = url ? url : "";
    const char *host = strstr(start, "://");
    size_t n, pre = 0;

    n = strcspn(start, "?#");
    if (host && (size_t)(host - start) < n) {
        const char *auth = host + 3;
        size_t alen = strcspn(auth, "/?#");
        const char *at = memchr(auth, '@', alen);

        if (at) {
            pre = (size_t)(auth - start);
            if (pre >= cap)
                pre = cap - 1;
            memcpy(out, start, pre);
            start = at + 1;
            n = strcspn(start, "?#");
        }
    }
    if (pre + n >= cap)
        n = cap - 1 - pre;
    memcpy(out + pre, start, n);
    out[pre + n] = '\0';
}

static void plan_init(struct plan *p, const struct http_client *c, const struct http_call *call)
{
    memset(p, 0, sizeof(*p));
    p->method = call->method && call->method[0] ? call->method : "GET";
    url_for_message(call->url, p->url_msg, sizeof(p->url_msg));
    p->timeout_ms = call->timeout_ms > 0 ? call->timeout_ms : c->timeout_ms;
    p->connect_timeout_ms = c->connect_timeout_ms;
    p->max_bytes = call->max_response_bytes > 0 ? call->max_response_bytes : c->max_response_bytes;
    p->idempotent = call->idempotent;
    p->max_attempts = 1;
    if (call->idempotent)
        p->max_attempts = call->max_attempts > 0 ? call->max_attempts : c->max_attempts;
    p->budget_ms = (int64_t)p->timeout_ms * p->max_attempts;
    p->base_ms = c->retry_base_ms;
    p->cap_ms = c->retry_cap_ms;
    p->guard = call->block_private_addresses;
}

static bool method_is(const struct plan *p, const char *m)
{
    return strcasecmp(p->method, m) == 0;
}

/* Lowercases s in place (ASCII) and returns it. */
static char *str_lower(char *s)
{
    char *p;

    for (p = s; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return s;
}

/* Validates the URL and its scheme before anything goes on the wire. */
static enum status plan_check(const struct plan *p, const struct http_call *call, struct error *err)
{
    CURLU *u = NULL;
    char *scheme = NULL, *host = NULL;
    enum status st = ST_OK;
    CURLUcode uc;
    size_t i;

    if (!call->url || !call->url[0])
        return error_set(err, ST_INVALID, NULL, "cannot %s: missing url", p->method);
    if (strlen(call->url) > URL_MAX)
        return error_set(err, ST_INVALID, NULL, "cannot %s %s: url longer than %d bytes", p->method,
                         p->url_msg, URL_MAX);
    for (i = 0; p->method[i]; i++) {
        if (!isalpha((unsigned char)p->method[i]) || i >= METHOD_MAX)
            return error_set(err, ST_INVALID, NULL, "cannot send %s: bad method \"%.20s\"",
                             p->url_msg, p->method);
    }
    u = curl_url();
    if (!u)
        BUG("out of memory in curl_url");
    uc = curl_url_set(u, CURLUPART_URL, call->url, CURLU_NON_SUPPORT_SCHEME);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    if (uc != CURLUE_OK || !host || !host[0]) {
        char why[64];

        str_copy(why, sizeof(why), uc != CURLUE_OK ? curl_url_strerror(uc) : "no host");
        st = error_set(err, ST_INVALID, NULL, "cannot %s %s: malformed url (%s)", p->method,
                       p->url_msg, str_lower(why));
        goto out;
    }
    if (str_ieq(scheme, "https"))
        goto out;
    if (str_ieq(scheme, "http")) {
        if (p->guard && !call->allow_http)
            st = error_set(err, ST_PERMISSION_DENIED, "scheme_not_allowed",
                           "cannot %s %s: only https is allowed for this url", p->method,
                           p->url_msg);
        goto out;
    }
    if (p->guard)
        st = error_set(err, ST_PERMISSION_DENIED, "scheme_not_allowed",
                       "cannot %s %s: scheme \"%.16s\" is not allowed", p->method, p->url_msg,
                       scheme);
    else
        st = error_set(err, ST_INVALID, NULL, "cannot %s %s: unsupported scheme \"%.16s\"",
                       p->method, p->url_msg, scheme);
out:
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(u);
    return st;
}

/* Seconds to wait from a Retry-After value (delay-seconds or an HTTP date); 0 when unusable. */
static int parse_retry_after(const char *v)
{
    int64_t n, when;

    if (str_to_i64(v, 0, INT64_MAX, &n))
        return n > RETRY_AFTER_MAX ? RETRY_AFTER_MAX : (int)n;
    if (v[0] >= '0' && v[0] <= '9' && strspn(v, "0123456789") == strlen(v))
        return RETRY_AFTER_MAX; /* all digits but out of range: very long */
    if (time_parse_http_date(v, &when)) {
        int64_t us = when - time_now_us();

        if (us <= 0)
            return 0;
        n = (us + 999999) / 1000000;
        return n > RETRY_AFTER_MAX ? RETRY_AFTER_MAX : (int)n;
    }
    return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t n = size * nmemb;

    if (buf_append(&x->res->body, data, n) != ST_OK) {
        x->too_large = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return n;
}

/*
 * Called once per header line, for every response of the attempt (1xx
 * interim responses included) and for trailers. A status line starts a new
 * response, so only the last response's headers are kept.
 */
static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    struct http_result *res = x->res;
    size_t n = size * nmemb, len = n;
    const char *v;
    char *line;

    while (len > 0 && (data[len - 1] == '\r' || data[len - 1] == '\n' || data[len - 1] == ' ' ||
                       data[len - 1] == '\t'))
        len--;
    if (len == 0 || data[0] == ' ' || data[0] == '\t')
        return n; /* end of a header block, or an obsolete folded line */
    if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        res->content_type[0] = '\0';
        res->retry_after_s = 0;
        curl_slist_free_all(res->headers);
        res->headers = NULL;
        x->header_bytes = 0;
        x->header_count = 0;
        return n;
    }
    if (!memchr(data, ':', len) || x->header_count >= HEADERS_MAX ||
        x->header_bytes + len > HEADER_BYTES_MAX)
        return n;
    line = xmalloc(len + 1);
    memcpy(line, data, len);
    line[len] = '\0';
    res->headers = slist_add(res->headers, line);
    x->header_count++;
    x->header_bytes += len;
    if ((v = header_value(line, "content-type")) != NULL)
        str_copy(res->content_type, sizeof(res->content_type), v);
    else if ((v = header_value(line, "retry-after")) != NULL)
        res->retry_after_s = parse_retry_after(v);
    free(line);
    return n;
}

/*
 * Opens the socket for a guarded call, once curl has resolved the name and
 * picked the address: this is the address that would be connected to, so a
 * name that resolves (or rebinds) to a private address is caught here.
 */
static curl_socket_t on_open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *addr)
{
    struct xfer *x = ud;
    int fd;

    if (purpose != CURLSOCKTYPE_IPCXN || !netaddr_is_public(&addr->addr)) {
        x->blocked = true;
        if (addr->family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)&addr->addr)->sin_addr,
                      x->blocked_addr, sizeof(x->blocked_addr));
        else if (addr->family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&addr->addr)->sin6_addr,
                      x->blocked_addr, sizeof(x->blocked_addr));
        return CURL_SOCKET_BAD;
    }
    fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
    return fd < 0 ? CURL_SOCKET_BAD : fd;
}

static bool has_header(const char *const *headers, const char *name)
{
    size_t i;

    for (i = 0; headers && headers[i]; i++) {
        if (header_value(headers[i], name))
            return true;
    }
    return false;
}

/* Sets every option of one attempt on a fresh (or reset) easy handle. */
static void xfer_setup(struct http_client *c, CURL *e, struct xfer *x, const struct plan *p)
{
    const struct http_call *call = x->call;
    const char *protocols = p->guard && !call->allow_http ? "https" : "http,https";
    size_t i;

    curl_easy_setopt(e, CURLOPT_SHARE, c->share);
    curl_easy_setopt(e, CURLOPT_URL, call->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     p->connect_timeout_ms < p->timeout_ms ? p->connect_timeout_ms : p->timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, p->timeout_ms);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, protocols);
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, protocols);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    /* Refuses a response whose Content-Length already exceeds the cap, before its body. */
    if (!method_is(p, "HEAD"))
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
                         (curl_off_t)(p->max_bytes > INT64_MAX ? INT64_MAX : p->max_bytes));

    if (call->body || method_is(p, "POST") || method_is(p, "PUT") || method_is(p, "PATCH")) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, call->body ? (const char *)call->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(call->body ? call->body_len : 0));
        if (!method_is(p, "POST"))
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, p->method);
    } else if (method_is(p, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (method_is(p, "GET")) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, p->method);
    }

    for (i = 0; call->headers && call->headers[i]; i++)
        x->req_headers = slist_add(x->req_headers, call->headers[i]);
    /* No "Expect: 100-continue" round trip before larger bodies. */
    if (!has_header(call->headers, "expect"))
        x->req_headers = slist_add(x->req_headers, "Expect:");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->req_headers);

    if (p->guard) {
        curl_easy_setopt(e, CURLOPT_PROXY, ""); /* ignore *_proxy from the environment */
        curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
        curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
    }
    if (call->customize)
        call->customize(e, call->customize_ud);
}

static void xfer_release(struct xfer *x)
{
    curl_slist_free_all(x->req_headers);
    x->req_headers = NULL;
}

/* curl's description of a failure, lowercased (messages are lowercase here). */
static const char *curl_message(struct xfer *x, CURLcode rc)
{
    if (!x->errbuf[0])
        str_copy(x->errbuf, sizeof(x->errbuf), curl_easy_strerror(rc));
    return str_lower(x->errbuf);
}

/*
 * Maps the outcome of an attempt to a status, filling err on failure.
 * *transient tells whether retrying the same request may help.
 */
static enum status xfer_finish(struct xfer *x, CURL *e, CURLcode rc, const struct plan *p,
                               struct error *err, bool *transient)
{
    long code = 0;
    char after[32] = "";

    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
    x->res->status = code;
    *transient = false;
    if (rc == CURLE_OK)
        return ST_OK;
    if (x->res->attempts > 1)
        str_printf(after, sizeof(after), " (attempt %d)", x->res->attempts);
    if (x->too_large || rc == CURLE_FILESIZE_EXCEEDED)
        return error_set(err, ST_TOO_LARGE, "response_too_large",
                         "cannot %s %s: response larger than %zu bytes%s", p->method, p->url_msg,
                         p->max_bytes, after);
    if (x->blocked)
        return error_set(err, ST_PERMISSION_DENIED, "address_not_allowed",
                         "cannot %s %s: refusing to connect to non-public address %s%s", p->method,
                         p->url_msg, x->blocked_addr[0] ? x->blocked_addr : "?", after);
    switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
        *transient = true;
        return error_set(err, ST_TIMEOUT, NULL, "cannot %s %s: timed out after %ld ms%s", p->method,
                         p->url_msg, p->timeout_ms, after);
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return error_set(err, p->guard ? ST_PERMISSION_DENIED : ST_INVALID, NULL,
                         "cannot %s %s: %s%s", p->method, p->url_msg, curl_message(x, rc), after);
    case CURLE_OUT_OF_MEMORY:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
    case CURLE_NOT_BUILT_IN:
    case CURLE_FAILED_INIT:
        return error_set(err, ST_INTERNAL, NULL, "cannot %s %s: %s%s", p->method, p->url_msg,
                         curl_message(x, rc), after);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_ABORTED_BY_CALLBACK:
        /* The peer or the caller will answer the same way next time. */
        return error_set(err, ST_UNAVAILABLE, NULL, "cannot %s %s: %s%s", p->method, p->url_msg,
                         curl_message(x, rc), after);
    default:
        *transient = true;
        return error_set(err, ST_UNAVAILABLE, NULL, "cannot %s %s: %s%s", p->method, p->url_msg,
                         curl_message(x, rc), after);
    }
}

static bool http_status_retryable(long status)
{
    return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
           status == 504;
}

/*
 * The delay before the next attempt in ms, or -1 when the call is finished:
 * not idempotent, attempts spent, not a retryable outcome, or the wait
 * (backoff, or a longer Retry-After) would end past the budget. Each attempt
 * then gets its whole timeout, so a call lasts at most budget + timeout.
 */
static int64_t retry_delay_ms(const struct plan *p, int attempts, enum status st, bool transient,
                              const struct http_result *res, int64_t elapsed_ms)
{
    int64_t delay;

    if (!p->idempotent || attempts >= p->max_attempts)
        return -1;
    if (st == ST_OK ? !http_status_retryable(res->status) : !transient)
        return -1;
    delay = backoff_jitter_ms(attempts, p->base_ms, p->cap_ms, random_unit());
    if (st == ST_OK && res->retry_after_s > 0 && (int64_t)res->retry_after_s * 1000 > delay)
        delay = (int64_t)res->retry_after_s * 1000;
    if (elapsed_ms + delay >= p->budget_ms)
        return -1;
    if (log_enabled(LOG_DEBUG))
        log_debug("retrying %s %s in %lld ms after attempt %d (%s, http %ld)", p->method,
                  p->url_msg, (long long)delay, attempts, status_name(st), res->status);
    return delay;
}

enum status http_client_do(struct http_client *c, const struct http_call *call,
                           struct http_result *res, struct error *err)
{
    int64_t start_us = time_mono_us();
    enum pool_kind kind;
    CURL *e = NULL;
    struct plan p;
    enum status st;

    ASSERT(c && call && res);
    plan_init(&p, c, call);
    result_begin(res, p.max_bytes);
    st = plan_check(&p, call, err);
    if (st != ST_OK)
        goto out;
    kind = p.guard ? POOL_GUARDED : POOL_PLAIN;
    e = client_easy_get(c, kind);
    for (;;) {
        struct xfer x = {.call = call, .res = res};
        int64_t delay;
        bool transient;
        CURLcode rc;

        result_reset_attempt(res);
        res->attempts++;
        xfer_setup(c, e, &x, &p);
        rc = curl_easy_perform(e);
        st = xfer_finish(&x, e, rc, &p, err, &transient);
        xfer_release(&x);
        curl_easy_reset(e);
        delay = retry_delay_ms(&p, res->attempts, st, transient, res,
                               (time_mono_us() - start_us) / 1000);
        if (delay < 0)
            break;
        time_sleep_ms(delay);
    }
    client_easy_put(c, kind, e);
out:
    res->total_s = (double)(time_mono_us() - start_us) / 1e6;
    return st;
}

enum status http_client_json(struct http_client *c, const struct http_call *call,
                             const json_t *body, long *status, json_t **out, struct error *err)
{
    struct http_call jc = *call;
    struct http_result res;
    const char **hdrs = NULL;
    char *dumped = NULL;
    size_t n = 0, i = 0;
    enum status st;

    ASSERT(c && call && status && out);
    *status = 0;
    *out = NULL;
    http_result_init(&res);
    while (call->headers && call->headers[n])
        n++;
    hdrs = xcalloc(n + 3, sizeof(*hdrs));
    for (i = 0; i < n; i++)
        hdrs[i] = call->headers[i];
    if (body) {
        dumped = json_dump_compact(body);
        if (!dumped)
            BUG("json_dump_compact failed");
        jc.body = dumped;
        jc.body_len = strlen(dumped);
        if (!has_header(call->headers, "content-type"))
            hdrs[i++] = "Content-Type: application/json";
    }
    if (!has_header(call->headers, "accept"))
        hdrs[i++] = "Accept: application/json";
    jc.headers = hdrs;

    st = http_client_do(c, &jc, &res, err);
    *status = res.status;
    if (st == ST_OK && res.body.len > 0)
        *out = json_parse(res.body.data, res.body.len, NULL);

    http_result_release(&res);
    free(dumped);
    free(hdrs);
    return st;
}

/* ---- http_multi --------------------------------------------------------- */

struct mcall {
    struct mcall *next;
    struct http_call *call; /* owned copy */
    http_multi_done_fn done;
    void *ud;
    struct plan plan;
    struct http_result res;
    struct xfer x;
    CURL *easy;
    int64_t start_us; /* first attempt */
    int64_t due_ms;   /* when a waiting retry may start */
    bool started;
};

struct http_multi {
    struct http_client *c;
    CURLM *multi;
    int max_in_flight;
    int in_flight;
    int peak;
    int pending_n;
    int waiting_n;
    struct mcall *pending, *pending_tail; /* FIFO of calls not started, due retries first */
    struct mcall *waiting;                /* retries waiting for their delay, by due time */
    struct mcall *active;                 /* transfers in the multi handle */
    struct easy_pool pool;
    bool stepping;
};

struct http_multi *http_multi_new(struct http_client *c, int max_in_flight)
{
    struct http_multi *m;

    ASSERT(c);
    m = xcalloc(1, sizeof(*m));
    m->c = c;
    m->max_in_flight = max_in_flight < 1 ? 1 : max_in_flight;
    m->multi = curl_multi_init();
    if (!m->multi)
        BUG("curl_multi_init failed");
    curl_multi_setopt(m->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    /* Keep at least one idle connection per slot between waves of calls. */
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS,
                      (long)(m->max_in_flight < 16 ? 16 : m->max_in_flight));
    return m;
}

static void mcall_free(struct mcall *mc)
{
    http_result_release(&mc->res);
    xfer_release(&mc->x);
    http_call_free(mc->call);
    free(mc);
}

void http_multi_free(struct http_multi *m)
{
    struct mcall *mc, *next;
    size_t i;

    if (!m)
        return;
    ASSERT(!m->stepping);
    for (mc = m->active; mc; mc = next) {
        next = mc->next;
        curl_multi_remove_handle(m->multi, mc->easy);
        curl_easy_cleanup(mc->easy);
        mcall_free(mc);
    }
    for (mc = m->pending; mc; mc = next) {
        next = mc->next;
        mcall_free(mc);
    }
    for (mc = m->waiting; mc; mc = next) {
        next = mc->next;
        mcall_free(mc);
    }
    for (i = 0; i < m->pool.n; i++)
        curl_easy_cleanup(m->pool.v[i]);
    free(m->pool.v);
    curl_multi_cleanup(m->multi);
    free(m);
}

void http_multi_add(struct http_multi *m, const struct http_call *call, http_multi_done_fn done,
                    void *ud)
{
    struct mcall *mc;

    ASSERT(m && call);
    mc = xcalloc(1, sizeof(*mc));
    mc->call = http_call_copy(call);
    mc->done = done;
    mc->ud = ud;
    http_result_init(&mc->res);
    if (m->pending_tail)
        m->pending_tail->next = mc;
    else
        m->pending = mc;
    m->pending_tail = mc;
    m->pending_n++;
}

static void list_remove(struct mcall **head, struct mcall *mc)
{
    while (*head && *head != mc)
        head = &(*head)->next;
    ASSERT(*head == mc);
    *head = mc->next;
    mc->next = NULL;
}

/* Ends a call: runs its callback and frees it. */
static void mcall_complete(struct mcall *mc, enum status st, const struct error *err)
{
    struct error ok;

    mc->res.total_s = (double)(time_mono_us() - mc->start_us) / 1e6;
    if (st == ST_OK) {
        error_clear(&ok);
        err = &ok;
    }
    if (mc->done)
        mc->done(mc->ud, st, &mc->res, err);
    mcall_free(mc);
}

/* Starts the next attempt of mc; returns false when it completed at once (bad call). */
static bool mcall_start(struct http_multi *m, struct mcall *mc)
{
    struct error err;
    int64_t now_us = time_mono_us();
    CURLMcode mrc;

    error_clear(&err);
    if (!mc->started) {
        enum status st;

        plan_init(&mc->plan, m->c, mc->call);
        result_begin(&mc->res, mc->plan.max_bytes);
        mc->started = true;
        mc->start_us = now_us;
        st = plan_check(&mc->plan, mc->call, &err);
        if (st != ST_OK) {
            mcall_complete(mc, st, &err);
            return false;
        }
    }
    result_reset_attempt(&mc->res);
    mc->res.attempts++;
    memset(&mc->x, 0, sizeof(mc->x));
    mc->x.call = mc->call;
    mc->x.res = &mc->res;
    mc->easy = pool_take(&m->pool);
    if (!mc->easy)
        mc->easy = easy_new();
    xfer_setup(m->c, mc->easy, &mc->x, &mc->plan);
    curl_easy_setopt(mc->easy, CURLOPT_PRIVATE, (void *)mc);
    /* Over TLS, wait for the connection in progress to learn if it multiplexes (HTTP/2). */
    if (strncasecmp(mc->call->url, "https:", 6) == 0)
        curl_easy_setopt(mc->easy, CURLOPT_PIPEWAIT, 1L);
    /*
     * All transfers of a multi share its connection cache; a guarded call
     * must not pick up a connection that an unguarded one opened.
     */
    if (mc->plan.guard)
        curl_easy_setopt(mc->easy, CURLOPT_FRESH_CONNECT, 1L);
    mrc = curl_multi_add_handle(m->multi, mc->easy);
    if (mrc != CURLM_OK)
        BUG("curl_multi_add_handle failed: %s", curl_multi_strerror(mrc));
    mc->next = m->active;
    m->active = mc;
    m->in_flight++;
    if (m->in_flight > m->peak)
        m->peak = m->in_flight;
    return true;
}

/*
 * Moves retries whose delay has passed to the front of the queue (they were
 * admitted first), then starts queued calls while slots are free. Returns the
 * number of calls that completed without a transfer.
 */
static int multi_admit(struct http_multi *m)
{
    int64_t now = time_mono_ms();
    int completed = 0;

    while (m->waiting && m->waiting->due_ms <= now) {
        struct mcall *mc = m->waiting;

        m->waiting = mc->next;
        m->waiting_n--;
        mc->next = m->pending;
        m->pending = mc;
        if (!m->pending_tail)
            m->pending_tail = mc;
        m->pending_n++;
    }
    while (m->pending && m->in_flight < m->max_in_flight) {
        struct mcall *mc = m->pending;

        m->pending = mc->next;
        if (!m->pending)
            m->pending_tail = NULL;
        m->pending_n--;
        mc->next = NULL;
        if (!mcall_start(m, mc))
            completed++;
    }
    return completed;
}

static void multi_wait_retry(struct http_multi *m, struct mcall *mc, int64_t delay_ms)
{
    struct mcall **pp = &m->waiting;

    mc->due_ms = time_mono_ms() + delay_ms;
    while (*pp && (*pp)->due_ms <= mc->due_ms)
        pp = &(*pp)->next;
    mc->next = *pp;
    *pp = mc;
    m->waiting_n++;
}

/* Handles finished transfers; returns how many calls completed or went to wait. */
static int multi_drain(struct http_multi *m)
{
    struct CURLMsg *msg;
    int left, n = 0;

    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        CURL *e = msg->easy_handle;
        CURLcode rc = msg->data.result;
        struct mcall *mc;
        char *priv = NULL;
        struct error err;
        bool transient;
        enum status st;
        int64_t delay;

        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
        mc = (struct mcall *)priv;
        ASSERT(mc && mc->easy == e);
        error_clear(&err);
        st = xfer_finish(&mc->x, e, rc, &mc->plan, &err, &transient);
        curl_multi_remove_handle(m->multi, e); /* msg is invalid from here */
        xfer_release(&mc->x);
        curl_easy_reset(e);
        pool_give(&m->pool, e);
        mc->easy = NULL;
        list_remove(&m->active, mc);
        m->in_flight--;
        n++;

        delay = retry_delay_ms(&mc->plan, mc->res.attempts, st, transient, &mc->res,
                               (time_mono_us() - mc->start_us) / 1000);
        if (delay >= 0)
            multi_wait_retry(m, mc, delay);
        else
            mcall_complete(mc, st, &err);
    }
    return n;
}

static int multi_left(const struct http_multi *m)
{
    return m->pending_n + m->waiting_n + m->in_flight;
}

int http_multi_step(struct http_multi *m, int timeout_ms)
{
    int64_t deadline;

    ASSERT(m && !m->stepping);
    m->stepping = true;
    deadline = time_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        int running = 0, progressed;
        int64_t now, wait;
        CURLMcode mrc;

        progressed = multi_admit(m);
        mrc = curl_multi_perform(m->multi, &running);
        if (mrc != CURLM_OK)
            BUG("curl_multi_perform failed: %s", curl_multi_strerror(mrc));
        progressed += multi_drain(m);
        if (multi_left(m) == 0)
            break;
        now = time_mono_ms();
        if (now >= deadline)
            break;
        if (progressed > 0)
            continue; /* slots may have freed up: start what waits for one */
        wait = deadline - now;
        if (m->waiting && m->waiting->due_ms - now < wait)
            wait = m->waiting->due_ms - now > 0 ? m->waiting->due_ms - now : 0;
        mrc = curl_multi_poll(m->multi, NULL, 0, (int)wait, NULL);
        if (mrc != CURLM_OK)
            BUG("curl_multi_poll failed: %s", curl_multi_strerror(mrc));
    }
    m->stepping = false;
    return multi_left(m);
}

void http_multi_run(struct http_multi *m)
{
    while (http_multi_step(m, 1000) > 0)
        ;
}

int http_multi_in_flight(const struct http_multi *m)
{
    return m->in_flight;
}

int http_multi_peak_in_flight(const struct http_multi *m)
{
    return m->peak;
}
