#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "core/buf.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "http/server.h"

#define MAX_BODY    (64 * 1024)
#define REPLY_MAX   (4 * 1024 * 1024)
#define CONCURRENCY 1000
#define SLOW_MS     2000

static struct http_server *srv;
static char base[64];
static FILE *logfile;

static atomic_int handler_calls;
static atomic_int sse_frees;
static atomic_int sse_started;
static atomic_int active, max_active;

/* ---- handlers --------------------------------------------------------------- */

static void h_echo(struct http_request *req, struct http_response *resp, void *ud)
{
    json_t *o = json_object(), *params = json_object();
    static const char *names[] = {"id", "part"};
    const char *q = http_request_query(req, "q");
    size_t i;

    atomic_fetch_add(&handler_calls, 1);
    for (i = 0; i < ARRAY_SIZE(names); i++) {
        const char *v = http_request_param(req, names[i]);

        if (v)
            json_object_set_new(params, names[i], json_string(v));
    }
    json_object_set_new(o, "route", json_string(ud));
    json_object_set_new(o, "method", json_string(http_request_method(req)));
    json_object_set_new(o, "path", json_string(http_request_path(req)));
    json_object_set_new(o, "params", params);
    if (q)
        json_object_set_new(o, "q", json_string(q));
    http_respond_json(resp, 200, o);
}

static void count_header(void *ud, const char *name, const char *value)
{
    json_t *seen = ud;

    if (strcasecmp(name, "X-Probe") == 0)
        json_array_append_new(seen, json_string(value));
}

/* A catch-all route: the rest of the path, the raw target, the X-Probe headers. */
static void h_rest(struct http_request *req, struct http_response *resp, void *ud)
{
    json_t *probes = json_array();

    UNUSED(ud);
    atomic_fetch_add(&handler_calls, 1);
    http_request_each_header(req, count_header, probes);
    http_respond_json(resp, 200,
                      json_pack("{s:s, s:s, s:o}", "rest", http_request_param(req, "rest"),
                                "target", http_request_target(req), "probes", probes));
}

static void h_json(struct http_request *req, struct http_response *resp, void *ud)
{
    UNUSED(ud);
    atomic_fetch_add(&handler_calls, 1);
    http_respond_json(resp, 200, json_pack("{s:O}", "got", http_request_json(req)));
}

static void h_raw(struct http_request *req, struct http_response *resp, void *ud)
{
    size_t len;

    UNUSED(ud);
    atomic_fetch_add(&handler_calls, 1);
    http_request_body(req, &len);
    http_respond_json(resp, 200, json_pack("{s:I}", "len", (json_int_t)len));
}

static void h_noresp(struct http_request *req, struct http_response *resp, void *ud)
{
    UNUSED(req);
    UNUSED(resp);
    UNUSED(ud);
}

static void h_limited(struct http_request *req, struct http_response *resp, void *ud)
{
    struct error e;

    UNUSED(req);
    UNUSED(ud);
    error_set(&e, ST_RATE_LIMITED, NULL, "too many batches for project p");
    e.retry_after_s = 7;
    http_respond_error(resp, &e);
}

static void h_slow(struct http_request *req, struct http_response *resp, void *ud)
{
    int64_t ms = 0;
    int now, seen;

    UNUSED(ud);
    str_to_i64(http_request_query(req, "ms"), 0, 60000, &ms);
    now = atomic_fetch_add(&active, 1) + 1;
    seen = atomic_load(&max_active);
    while (now > seen && !atomic_compare_exchange_weak(&max_active, &seen, now))
        ;
    time_sleep_ms(ms);
    atomic_fetch_sub(&active, 1);
    http_respond_bytes(resp, 200, "text/plain", "done", 4);
}

static void h_log(struct http_request *req, struct http_response *resp, void *ud)
{
    UNUSED(ud);
    log_info("inside handler");
    http_respond_json(resp, 200, json_pack("{s:s}", "id", http_request_id(req)));
}

struct sse_state {
    int n, sent;
    struct http_server *srv;
};

static bool sse_next(void *ud, struct buf *out)
{
    struct sse_state *s = ud;

    atomic_store(&sse_started, 1);
    if (s->n >= 0) {
        /* Finite stream: one event per call. */
        buf_printf(out, "id: %d\nevent: tick\ndata: %d\n\n", s->sent, s->sent);
        s->sent++;
        return s->sent < s->n;
    }
    /* Endless stream: a keep-alive every 20 ms until the server drains. */
    if (http_server_draining(s->srv)) {
        buf_append_str(out, "event: bye\ndata: draining\n\n");
        return false;
    }
    time_sleep_ms(20);
    buf_append_str(out, ": keep-alive\n\n");
    return true;
}

static void sse_free_state(void *ud)
{
    atomic_fetch_add(&sse_frees, 1);
    free(ud);
}

static void h_sse(struct http_request *req, struct http_response *resp, void *ud)
{
    struct sse_state *s = xcalloc(1, sizeof(*s));
    int64_t n = -1;

    UNUSED(ud);
    str_to_i64(http_request_query(req, "n"), -1, 1000, &n);
    s->n = (int)n;
    s->srv = http_request_server(req);
    http_respond_sse(resp, sse_next, s, sse_free_state);
}

/* ---- fixture ---------------------------------------------------------------- */

static void start_server(void)
{
    struct http_server_options o = {
        .bind_address = "127.0.0.1",
        .max_body_bytes = MAX_BODY,
        .service = "test",
        .access_log = true,
    };
    struct error err;

    logfile = tmpfile();
    ck_assert_ptr_nonnull(logfile);
    log_init("test", "proj", LOG_DEBUG, fileno(logfile));
    atomic_store(&handler_calls, 0);
    atomic_store(&sse_frees, 0);
    atomic_store(&sse_started, 0);
    atomic_store(&active, 0);
    atomic_store(&max_active, 0);

    srv = http_server_new(&o, &err);
    ck_assert_ptr_nonnull(srv);
    http_server_route(srv, "GET", "/items/{id}", 0, h_echo, "item");
    http_server_route(srv, "GET", "/items/special", 0, h_echo, "special");
    http_server_route(srv, "GET", "/items/{id}/parts/{part}", 0, h_echo, "part");
    http_server_route(srv, "DELETE", "/items/{id}", 0, h_echo, "item-delete");
    http_server_route(srv, "POST", "/items", HTTP_ROUTE_JSON, h_json, NULL);
    http_server_route(srv, "POST", "/raw", 0, h_raw, NULL);
    http_server_route(srv, "GET", "/noresp", 0, h_noresp, NULL);
    http_server_route(srv, "GET", "/limited", 0, h_limited, NULL);
    http_server_route(srv, "GET", "/slow", 0, h_slow, NULL);
    http_server_route(srv, "GET", "/log", 0, h_log, NULL);
    http_server_route(srv, "GET", "/sse", 0, h_sse, NULL);
    http_server_route(srv, "GET", "/files/{rest...}", 0, h_rest, NULL);
    ck_assert_int_eq(http_server_start(srv, &err), ST_OK);
    ck_assert_int_gt(http_server_port(srv), 0);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", http_server_port(srv));
}

static void stop_server(void)
{
    http_server_free(srv);
    srv = NULL;
    log_init("test", NULL, LOG_INFO, 1);
    if (logfile)
        fclose(logfile);
    logfile = NULL;
}

/* The log lines written so far, parsed. */
static json_t *log_lines(void)
{
    json_t *lines = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    FILE *f;

    fflush(logfile);
    f = fdopen(dup(fileno(logfile)), "r");
    ck_assert_ptr_nonnull(f);
    rewind(f);
    while ((n = getline(&line, &cap, f)) > 0) {
        json_t *v = json_parse(line, (size_t)n, NULL);

        ck_assert_msg(v != NULL, "log line is not json: %s", line);
        json_array_append_new(lines, v);
    }
    free(line);
    fclose(f);
    return lines;
}

/* The first log line whose message starts with prefix (borrowed from lines), or NULL. */
static json_t *find_line(json_t *lines, const char *prefix)
{
    size_t i;
    json_t *l;

    json_array_foreach(lines, i, l)
    {
        if (str_starts_with(json_str_or(l, "message", ""), prefix))
            return l;
    }
    return NULL;
}

/* ---- client ----------------------------------------------------------------- */

struct reply {
    CURLcode rc;
    long status;
    struct buf body;
    struct buf headers;
    json_t *json;
    size_t abort_after; /* > 0: fail the transfer once this many body bytes arrived */
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct reply *r = ud;

    if (buf_append(&r->body, p, size * n) != ST_OK)
        return 0;
    if (r->abort_after && r->body.len >= r->abort_after)
        return 0;
    return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct reply *r = ud;

    buf_append(&r->headers, p, size * n);
    return size * n;
}

static void reply_init(struct reply *r)
{
    memset(r, 0, sizeof(*r));
    buf_init(&r->body, REPLY_MAX);
    buf_init(&r->headers, 64 * 1024);
}

static void reply_release(struct reply *r)
{
    buf_release(&r->body);
    buf_release(&r->headers);
    json_decref(r->json);
}

/* Value of the last response header called name, copied into out; false when absent. */
static bool reply_header(const struct reply *r, const char *name, char *out, size_t cap)
{
    const char *p = buf_str(&r->headers);
    size_t nlen = strlen(name);
    bool found = false;

    while (*p) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol ? (size_t)(eol - p) : strlen(p);

        if (len > nlen && strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            size_t vlen;

            while (*v == ' ')
                v++;
            vlen = len - (size_t)(v - p);
            if (vlen >= cap)
                vlen = cap - 1;
            memcpy(out, v, vlen);
            out[vlen] = '\0';
            found = true;
        }
        p += len + (eol ? 2 : 0);
    }
    return found;
}

static CURL *easy_new(const char *method, const char *path, struct curl_slist *hdrs,
                      struct reply *r)
{
    CURL *c = curl_easy_init();
    char url[4096];

    ck_assert_ptr_nonnull(c);
    snprintf(url, sizeof(url), "%s%s", base, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    return c;
}

static void easy_done(CURL *c, struct reply *r)
{
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->body.len && buf_str(&r->body)[0] == '{')
        r->json = json_parse(r->body.data, r->body.len, NULL);
}

/*
 * One request. headers is a NULL-terminated list; body may be NULL (no body).
 */
static void fetch(const char *method, const char *path, const char *const *headers,
                  const char *body, size_t body_len, struct reply *r)
{
    struct curl_slist *hdrs = NULL;
    CURL *c;

    reply_init(r);
    for (; headers && *headers; headers++)
        hdrs = curl_slist_append(hdrs, *headers);
    c = easy_new(method, path, hdrs, r);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    r->rc = curl_easy_perform(c);
    easy_done(c, r);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
}

/* Asserts an error reply: status, JSON body {"error": non-empty, "code": code}. */
static void assert_error(const struct reply *r, long status, const char *code)
{
    ck_assert_int_eq(r->rc, CURLE_OK);
    ck_assert_int_eq(r->status, status);
    ck_assert_msg(r->json != NULL, "error body is not json: %s", buf_str(&r->body));
    ck_assert_str_eq(json_str_or(r->json, "code", ""), code);
    ck_assert_int_gt(strlen(json_str_or(r->json, "error", "")), 0);
    ck_assert_uint_eq(json_object_size(r->json), 2);
}

/* "0.001234s": seconds with six decimals, as Cloud Logging's Duration. */
static bool latency_ok(const char *s)
{
    const char *dot = strchr(s, '.');
    size_t i;

    if (!dot || dot == s || strlen(dot) != 8 || dot[7] != 's')
        return false;
    for (i = 0; s + i < dot; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    for (i = 1; i < 7; i++)
        if (dot[i] < '0' || dot[i] > '9')
            return false;
    return true;
}

static void wait_for(atomic_int *v, int want, int timeout_ms)
{
    int64_t end = time_mono_ms() + timeout_ms;

    while (atomic_load(v) != want && time_mono_ms() < end)
        time_sleep_ms(5);
    ck_assert_int_eq(atomic_load(v), want);
}

static void wait_in_flight(unsigned want, int timeout_ms)
{
    int64_t end = time_mono_ms() + timeout_ms;

    while (http_server_in_flight(srv) != want && time_mono_ms() < end)
        time_sleep_ms(5);
    ck_assert_uint_eq(http_server_in_flight(srv), want);
}

/* ---- routing ----------------------------------------------------------------- */

static const struct {
    const char *method, *path;
    long status;
    const char *route; /* handler's route name for 2xx, else the error code */
    const char *id, *part, *q, *allow;
} route_cases[] = {
    {"GET", "/items/42", 200, "item", "42", NULL, NULL, NULL},
    {"GET", "/items/a%20b%2Fc", 200, "item", "a b/c", NULL, NULL, NULL},
    {"GET", "/items/7/parts/x%3Fy", 200, "part", "7", "x?y", NULL, NULL},
    {"GET", "/items/special", 200, "item", "special", NULL, NULL, NULL}, /* first match wins */
    {"GET", "/items/42?q=a%20b+c", 200, "item", "42", NULL, "a b c", NULL},
    {"DELETE", "/items/42", 200, "item-delete", "42", NULL, NULL, NULL},
    {"GET", "/items/", 404, "not_found", NULL, NULL, NULL, NULL}, /* {id} needs a segment */
    {"GET", "/items/1/parts/", 404, "not_found", NULL, NULL, NULL, NULL},
    {"GET", "/nope", 404, "not_found", NULL, NULL, NULL, NULL},
    {"GET", "/", 404, "not_found", NULL, NULL, NULL, NULL},
    {"PUT", "/items/42", 405, "method_not_allowed", NULL, NULL, NULL, "GET, DELETE"},
    {"GET", "/items", 405, "method_not_allowed", NULL, NULL, NULL, "POST"},
    {"GET", "/items/%zz", 400, "invalid_path", NULL, NULL, NULL, NULL},
    {"GET", "/items/a%00b", 400, "invalid_path", NULL, NULL, NULL, NULL},
};

START_TEST(routing)
{
    struct reply r;
    char allow[256];

    fetch(route_cases[_i].method, route_cases[_i].path, NULL, NULL, 0, &r);
    if (route_cases[_i].status != 200) {
        assert_error(&r, route_cases[_i].status, route_cases[_i].route);
    } else {
        json_t *params;

        ck_assert_int_eq(r.rc, CURLE_OK);
        ck_assert_int_eq(r.status, 200);
        ck_assert_ptr_nonnull(r.json);
        ck_assert_str_eq(json_str_or(r.json, "route", ""), route_cases[_i].route);
        ck_assert_str_eq(json_str_or(r.json, "method", ""), route_cases[_i].method);
        params = json_object_get(r.json, "params");
        ck_assert_str_eq(json_str_or(params, "id", "(none)"),
                         route_cases[_i].id ? route_cases[_i].id : "(none)");
        ck_assert_str_eq(json_str_or(params, "part", "(none)"),
                         route_cases[_i].part ? route_cases[_i].part : "(none)");
        ck_assert_str_eq(json_str_or(r.json, "q", "(none)"),
                         route_cases[_i].q ? route_cases[_i].q : "(none)");
    }
    if (route_cases[_i].allow) {
        ck_assert(reply_header(&r, "Allow", allow, sizeof(allow)));
        ck_assert_str_eq(allow, route_cases[_i].allow);
    } else {
        ck_assert(!reply_header(&r, "Allow", allow, sizeof(allow)));
    }
    reply_release(&r);
}
END_TEST

static const struct {
    const char *path;
    long status;
    const char *rest;
} rest_cases[] = {
    {"/files/a", 200, "a"},
    {"/files/a/b/c.txt", 200, "a/b/c.txt"},
    {"/files/x%20y/(default)/d:commit?mask.fieldPaths=%60a%60", 200, "x y/(default)/d:commit"},
    {"/files", 404, NULL},
    {"/files/", 404, NULL}, /* at least one non-empty segment */
};

START_TEST(catch_all_route)
{
    const char *headers[] = {"X-Probe: one", "X-Other: no", NULL};
    struct reply r;

    fetch("GET", rest_cases[_i].path, headers, NULL, 0, &r);
    if (rest_cases[_i].status != 200) {
        assert_error(&r, rest_cases[_i].status, "not_found");
    } else {
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(json_str_or(r.json, "rest", ""), rest_cases[_i].rest);
        ck_assert_str_eq(json_str_or(r.json, "target", ""), rest_cases[_i].path);
        ck_assert_uint_eq(json_array_size(json_object_get(r.json, "probes")), 1);
    }
    reply_release(&r);
}
END_TEST

START_TEST(decoded_path)
{
    struct reply r;

    fetch("GET", "/items/caf%C3%A9", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(json_str_or(r.json, "path", ""), "/items/caf\xc3\xa9");
    ck_assert_str_eq(json_str_or(json_object_get(r.json, "params"), "id", ""), "caf\xc3\xa9");
    reply_release(&r);
}
END_TEST

START_TEST(long_path)
{
    struct reply r;
    char path[3100];

    memcpy(path, "/items/", 7);
    memset(path + 7, 'a', sizeof(path) - 8);
    path[sizeof(path) - 1] = '\0';
    fetch("GET", path, NULL, NULL, 0, &r);
    assert_error(&r, 414, "uri_too_long");
    ck_assert_int_eq(atomic_load(&handler_calls), 0);
    reply_release(&r);
}
END_TEST

/* ---- bodies ------------------------------------------------------------------ */

START_TEST(body_at_limit)
{
    char *body = xmalloc(MAX_BODY);
    struct reply r;

    memset(body, 'x', MAX_BODY);
    fetch("POST", "/raw", NULL, body, MAX_BODY, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(json_int_or(r.json, "len", -1), MAX_BODY);
    reply_release(&r);
    free(body);
}
END_TEST

/* With and without "Expect: 100-continue": refused before the body is read. */
START_TEST(body_too_large_content_length)
{
    static const char *const expect_off[] = {"Expect:", NULL};
    size_t len = 4 * MAX_BODY;
    char *body = xmalloc(len);
    struct reply r;

    memset(body, 'x', len);
    fetch("POST", "/raw", _i ? expect_off : NULL, body, len, &r);
    assert_error(&r, 413, "payload_too_large");
    ck_assert_int_eq(atomic_load(&handler_calls), 0);
    reply_release(&r);
    free(body);
}
END_TEST

struct chunked {
    size_t left;
};

static size_t chunked_read(char *dst, size_t size, size_t n, void *ud)
{
    struct chunked *c = ud;
    size_t want = size * n < c->left ? size * n : c->left;

    if (want > 1000)
        want = 1000;
    memset(dst, 'y', want);
    c->left -= want;
    return want;
}

static void fetch_chunked(size_t total, struct reply *r)
{
    struct curl_slist *hdrs = curl_slist_append(NULL, "Transfer-Encoding: chunked");
    struct chunked ch = {total};
    CURL *c;

    reply_init(r);
    c = easy_new("POST", "/raw", hdrs, r);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, chunked_read);
    curl_easy_setopt(c, CURLOPT_READDATA, &ch);
    r->rc = curl_easy_perform(c);
    easy_done(c, r);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
}

START_TEST(body_chunked)
{
    struct reply r;

    fetch_chunked(MAX_BODY, &r);
    ck_assert_int_eq(r.rc, CURLE_OK);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq(json_int_or(r.json, "len", -1), MAX_BODY);
    reply_release(&r);

    fetch_chunked(3 * MAX_BODY, &r);
    assert_error(&r, 413, "payload_too_large");
    ck_assert_int_eq(atomic_load(&handler_calls), 1);
    reply_release(&r);
}
END_TEST

/* A chunked body that never stops loses its connection rather than a thread. */
START_TEST(body_chunked_endless)
{
    struct reply r;

    fetch_chunked(64 * MAX_BODY, &r);
    ck_assert_int_ne(r.rc, CURLE_OK);
    ck_assert_int_eq(atomic_load(&handler_calls), 0);
    reply_release(&r);
    wait_in_flight(0, 2000);
}
END_TEST

static const struct {
    const char *content_type; /* NULL: no Content-Type header */
    const char *body;
    long status;
    const char *code;
} json_cases[] = {
    {"application/json", "{\"a\":1}", 200, NULL},
    {"application/json; charset=utf-8", "[1,2]", 200, NULL},
    {"APPLICATION/JSON;charset=UTF-8", "{\"k\":\"s\"}", 200, NULL},
    {"text/plain", "{\"a\":1}", 415, "unsupported_media_type"},
    {"application/jsonx", "{}", 415, "unsupported_media_type"},
    {"application/json-patch+json", "{}", 415, "unsupported_media_type"},
    {NULL, "{}", 415, "unsupported_media_type"},
    {"application/json", "{bad", 400, "malformed_json"},
    {"application/json", "[1,2", 400, "malformed_json"},
    {"application/json", "{\"a\":1,\"a\":2}", 400, "malformed_json"},
    {"application/json", "", 400, "malformed_json"},
    {"application/json", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
     400, "malformed_json"}, /* unterminated */
};

START_TEST(json_bodies)
{
    const char *hdrs[2] = {NULL, NULL};
    char ct[128];
    struct reply r;

    snprintf(ct, sizeof(ct), "Content-Type: %s", json_cases[_i].content_type);
    hdrs[0] = json_cases[_i].content_type ? ct : "Content-Type:";
    fetch("POST", "/items", hdrs, json_cases[_i].body, strlen(json_cases[_i].body), &r);
    if (json_cases[_i].code) {
        assert_error(&r, json_cases[_i].status, json_cases[_i].code);
        ck_assert_int_eq(atomic_load(&handler_calls), 0);
    } else {
        json_t *want = json_parse(json_cases[_i].body, strlen(json_cases[_i].body), NULL);

        ck_assert_int_eq(r.status, 200);
        ck_assert(json_equal(json_object_get(r.json, "got"), want));
        json_decref(want);
    }
    reply_release(&r);
}
END_TEST

/* Nesting is bounded (64) so that handlers can dump request JSON on a small stack. */
START_TEST(json_deep_nesting)
{
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};
    static const struct {
        size_t depth;
        long status;
    } cases[] = {{64, 200}, {65, 400}, {3000, 400}};
    size_t i, k;

    for (k = 0; k < ARRAY_SIZE(cases); k++) {
        size_t d = cases[k].depth;
        char *body = xmalloc(2 * d);
        struct reply r;

        for (i = 0; i < d; i++) {
            body[i] = '[';
            body[2 * d - 1 - i] = ']';
        }
        fetch("POST", "/items", hdrs, body, 2 * d, &r);
        if (cases[k].status == 200)
            ck_assert_int_eq(r.status, 200);
        else
            assert_error(&r, cases[k].status, "malformed_json");
        reply_release(&r);
        free(body);
    }
}
END_TEST

/* ---- request ids, logs, errors --------------------------------------------------- */

static const struct {
    const char *sent; /* NULL: no header */
    bool echoed;
} id_cases[] = {
    {"abc-123", true},
    {"req_01HX:7/+=", true},
    {NULL, false},
    {"has space", false},
    {"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
     false},
};

START_TEST(request_id)
{
    const char *hdrs[2] = {NULL, NULL};
    char h[256], got[256];
    struct reply r;

    if (id_cases[_i].sent) {
        snprintf(h, sizeof(h), "X-Request-Id: %s", id_cases[_i].sent);
        hdrs[0] = h;
    }
    fetch("GET", "/log", hdrs, NULL, 0, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(reply_header(&r, "X-Request-Id", got, sizeof(got)));
    ck_assert_str_eq(json_str_or(r.json, "id", ""), got);
    if (id_cases[_i].echoed) {
        ck_assert_str_eq(got, id_cases[_i].sent);
    } else {
        ck_assert_uint_eq(strlen(got), 36); /* a generated uuid */
        ck_assert_str_ne(got, id_cases[_i].sent ? id_cases[_i].sent : "");
    }
    reply_release(&r);

    /* Errors produced by the server itself carry one too. */
    fetch("GET", "/nope", hdrs, NULL, 0, &r);
    ck_assert(reply_header(&r, "X-Request-Id", got, sizeof(got)));
    reply_release(&r);
}
END_TEST

START_TEST(log_context_and_access_log)
{
    static const char *const traced[] = {
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "X-Request-Id: rid-1", "User-Agent: probe/1.0", NULL};
    struct curl_slist *hdrs = NULL;
    struct reply r1, r2;
    json_t *lines, *l, *h;
    const char *const *p;
    CURL *c;

    /* Two requests on one kept-alive connection: the second must not inherit the first's
     * context. */
    for (p = traced; *p; p++)
        hdrs = curl_slist_append(hdrs, *p);
    reply_init(&r1);
    c = easy_new("GET", "/log", hdrs, &r1);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    easy_done(c, &r1);
    reply_init(&r2);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r2);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r2);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    easy_done(c, &r2);
    curl_easy_cleanup(c);
    curl_slist_free_all(hdrs);
    ck_assert_int_eq(r1.status, 200);
    ck_assert_int_eq(r2.status, 200);
    wait_in_flight(0, 2000);

    lines = log_lines();
    l = find_line(lines, "inside handler");
    ck_assert_ptr_nonnull(l);
    ck_assert_str_eq(json_str_or(l, "requestId", ""), "rid-1");
    ck_assert_str_eq(json_str_or(l, "logging.googleapis.com/trace", ""),
                     "projects/proj/traces/4bf92f3577b34da6a3ce929d0e0e4736");
    l = find_line(lines, "GET /log 200");
    ck_assert_ptr_nonnull(l);
    ck_assert_str_eq(json_str_or(l, "severity", ""), "INFO");
    ck_assert_str_eq(json_str_or(l, "requestId", ""), "rid-1");
    h = json_object_get(l, "httpRequest");
    ck_assert_str_eq(json_str_or(h, "requestMethod", ""), "GET");
    ck_assert_str_eq(json_str_or(h, "requestUrl", ""), "/log");
    ck_assert_int_eq(json_int_or(h, "status", 0), 200);
    ck_assert_str_eq(json_str_or(h, "userAgent", ""), "probe/1.0");
    ck_assert_str_eq(json_str_or(h, "remoteIp", ""), "127.0.0.1");
    ck_assert_str_eq(json_str_or(h, "protocol", ""), "HTTP/1.1");
    ck_assert_int_gt(strlen(json_str_or(h, "requestSize", "")), 0);
    ck_assert_str_eq(json_str_or(h, "responseSize", ""), "14"); /* {"id":"rid-1"} */
    ck_assert_msg(latency_ok(json_str_or(h, "latency", "")), "latency %s",
                  json_str_or(h, "latency", ""));

    /* The second request's lines: its own generated id, no trace. */
    {
        size_t i, handler_lines = 0;

        json_array_foreach(lines, i, l)
        {
            if (strcmp(json_str_or(l, "message", ""), "inside handler") != 0)
                continue;
            handler_lines++;
            if (handler_lines == 2) {
                ck_assert_str_ne(json_str_or(l, "requestId", ""), "rid-1");
                ck_assert_ptr_null(json_object_get(l, "logging.googleapis.com/trace"));
            }
        }
        ck_assert_uint_eq(handler_lines, 2);
    }
    json_decref(lines);
    reply_release(&r1);
    reply_release(&r2);
}
END_TEST

START_TEST(no_response_is_500)
{
    struct reply r;
    json_t *lines, *l;

    fetch("GET", "/noresp", NULL, NULL, 0, &r);
    assert_error(&r, 500, "internal");
    reply_release(&r);
    wait_in_flight(0, 2000);
    lines = log_lines();
    l = find_line(lines, "BUG: handler for GET /noresp");
    ck_assert_ptr_nonnull(l);
    ck_assert_str_eq(json_str_or(l, "severity", ""), "ERROR");
    l = find_line(lines, "GET /noresp 500");
    ck_assert_ptr_nonnull(l);
    ck_assert_str_eq(json_str_or(l, "severity", ""), "WARNING");
    json_decref(lines);

    /* The server is still serving. */
    fetch("GET", "/items/1", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.status, 200);
    reply_release(&r);
}
END_TEST

START_TEST(retry_after)
{
    struct reply r;
    char v[32];

    fetch("GET", "/limited", NULL, NULL, 0, &r);
    assert_error(&r, 429, "rate_limited");
    ck_assert_str_eq(json_str_or(r.json, "error", ""), "too many batches for project p");
    ck_assert(reply_header(&r, "Retry-After", v, sizeof(v)));
    ck_assert_str_eq(v, "7");
    reply_release(&r);

    fetch("GET", "/nope", NULL, NULL, 0, &r);
    ck_assert(!reply_header(&r, "Retry-After", v, sizeof(v)));
    reply_release(&r);
}
END_TEST

/* ---- server-sent events ------------------------------------------------------ */

START_TEST(sse_in_order)
{
    struct buf want;
    struct reply r;
    char ct[64];
    int i;

    fetch("GET", "/sse?n=5", NULL, NULL, 0, &r);
    ck_assert_int_eq(r.rc, CURLE_OK);
    ck_assert_int_eq(r.status, 200);
    ck_assert(reply_header(&r, "Content-Type", ct, sizeof(ct)));
    ck_assert_str_eq(ct, "text/event-stream");
    ck_assert(reply_header(&r, "Cache-Control", ct, sizeof(ct)));
    ck_assert_str_eq(ct, "no-cache");
    ck_assert(reply_header(&r, "X-Accel-Buffering", ct, sizeof(ct)));
    ck_assert_str_eq(ct, "no");
    ck_assert(reply_header(&r, "X-Request-Id", ct, sizeof(ct)));
    buf_init(&want, 4096);
    for (i = 0; i < 5; i++)
        buf_printf(&want, "id: %d\nevent: tick\ndata: %d\n\n", i, i);
    ck_assert_str_eq(buf_str(&r.body), buf_str(&want));
    buf_release(&want);
    reply_release(&r);
    wait_for(&sse_frees, 1, 2000);
    wait_in_flight(0, 2000);
    time_sleep_ms(50);
    ck_assert_int_eq(atomic_load(&sse_frees), 1);
}
END_TEST

START_TEST(sse_client_disconnect)
{
    struct reply r;
    CURL *c;

    reply_init(&r);
    r.abort_after = 1;
    c = easy_new("GET", "/sse", NULL, &r);
    r.rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    ck_assert_int_eq(r.rc, CURLE_WRITE_ERROR);
    reply_release(&r);
    /* Noticed on the next keep-alive write. */
    wait_for(&sse_frees, 1, 3000);
    wait_in_flight(0, 2000);
    time_sleep_ms(100);
    ck_assert_int_eq(atomic_load(&sse_frees), 1);
}
END_TEST

struct client {
    pthread_t thread;
    const char *path;
    struct reply r;
    int64_t done_ms;
};

static void *client_main(void *ud)
{
    struct client *cl = ud;

    fetch("GET", cl->path, NULL, NULL, 0, &cl->r);
    cl->done_ms = time_mono_ms();
    return NULL;
}

static void client_start(struct client *cl, const char *path)
{
    memset(cl, 0, sizeof(*cl));
    cl->path = path;
    ck_assert_int_eq(pthread_create(&cl->thread, NULL, client_main, cl), 0);
}

START_TEST(sse_ends_on_shutdown)
{
    struct client cl;
    int64_t t0;

    client_start(&cl, "/sse");
    wait_for(&sse_started, 1, 2000);
    t0 = time_mono_ms();
    ck_assert_uint_eq(http_server_shutdown(srv, 5000), 0);
    ck_assert_int_lt(time_mono_ms() - t0, 1000);
    pthread_join(cl.thread, NULL);
    ck_assert_int_eq(cl.r.rc, CURLE_OK);
    ck_assert_int_eq(cl.r.status, 200);
    ck_assert_ptr_nonnull(strstr(buf_str(&cl.r.body), "event: bye\ndata: draining\n\n"));
    ck_assert_int_eq(atomic_load(&sse_frees), 1);
    reply_release(&cl.r);
}
END_TEST

/* ---- shutdown --------------------------------------------------------------------- */

static void *refused_main(void *ud)
{
    struct client *cl = ud;

    while (!http_server_draining(srv))
        time_sleep_ms(1);
    time_sleep_ms(50); /* past the listen socket's shutdown */
    fetch("GET", "/items/1", NULL, NULL, 0, &cl->r);
    return NULL;
}

START_TEST(shutdown_lets_requests_finish)
{
    struct client slow, late;
    int64_t t0;

    client_start(&slow, "/slow?ms=800");
    wait_in_flight(1, 2000);
    memset(&late, 0, sizeof(late));
    ck_assert_int_eq(pthread_create(&late.thread, NULL, refused_main, &late), 0);
    t0 = time_mono_ms();
    ck_assert_uint_eq(http_server_shutdown(srv, 5000), 0);
    ck_assert_int_lt(time_mono_ms() - t0, 2000);
    ck_assert(http_server_draining(srv));
    pthread_join(slow.thread, NULL);
    pthread_join(late.thread, NULL);
    ck_assert_int_eq(slow.r.rc, CURLE_OK);
    ck_assert_int_eq(slow.r.status, 200);
    ck_assert_str_eq(buf_str(&slow.r.body), "done");
    /*
     * New connections are refused once shutdown begins (one that raced into
     * the backlog is reset instead): either way it is never served.
     */
    ck_assert_int_ne(late.r.rc, CURLE_OK);
    ck_assert_int_eq(late.r.status, 0);
    ck_assert_uint_eq(http_server_shutdown(srv, 5000), 0); /* a second call is harmless */
    reply_release(&slow.r);
    reply_release(&late.r);
}
END_TEST

START_TEST(shutdown_grace_expires)
{
    struct client slow;
    int64_t t0;

    client_start(&slow, "/slow?ms=1500");
    wait_in_flight(1, 2000);
    t0 = time_mono_ms();
    ck_assert_uint_eq(http_server_shutdown(srv, 200), 1);
    ck_assert_int_lt(time_mono_ms() - t0, 1000);
    /* The daemon was left running: the request still completes. */
    pthread_join(slow.thread, NULL);
    ck_assert_int_eq(slow.r.status, 200);
    reply_release(&slow.r);
    wait_in_flight(0, 2000);
    /* teardown frees the server now that nothing runs. */
}
END_TEST

/* Idle kept-alive connections are not in flight and do not delay the stop. */
START_TEST(shutdown_with_idle_connections)
{
    struct reply r;
    CURL *c;
    int64_t t0;

    reply_init(&r);
    c = easy_new("GET", "/items/1", NULL, &r);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    easy_done(c, &r);
    ck_assert_int_eq(r.status, 200);
    wait_in_flight(0, 2000);
    t0 = time_mono_ms();
    ck_assert_uint_eq(http_server_shutdown(srv, 5000), 0);
    ck_assert_int_lt(time_mono_ms() - t0, 500);
    curl_easy_cleanup(c);
    reply_release(&r);
}
END_TEST

/* ---- concurrency ------------------------------------------------------------------ */

/* Runs n concurrent slow GETs with curl multi; returns how many got 200 "done". */
static int drive_slow_requests(int n)
{
    static struct reply replies[CONCURRENCY];
    static CURL *easy[CONCURRENCY];
    CURLM *m = curl_multi_init();
    int running = 1, i, ok = 0;
    char path[64];

    snprintf(path, sizeof(path), "/slow?ms=%d", SLOW_MS);
    for (i = 0; i < n; i++) {
        reply_init(&replies[i]);
        easy[i] = easy_new("GET", path, NULL, &replies[i]);
        curl_multi_add_handle(m, easy[i]);
    }
    while (running) {
        if (curl_multi_perform(m, &running) != CURLM_OK)
            break;
        if (running && curl_multi_poll(m, NULL, 0, 100, NULL) != CURLM_OK)
            break;
    }
    for (i = 0; i < n; i++) {
        easy_done(easy[i], &replies[i]);
        if (replies[i].status == 200 && strcmp(buf_str(&replies[i].body), "done") == 0)
            ok++;
        curl_multi_remove_handle(m, easy[i]);
        curl_easy_cleanup(easy[i]);
        reply_release(&replies[i]);
    }
    curl_multi_cleanup(m);
    return ok;
}

/*
 * The client runs in a child process so that the peak RSS printed for the
 * server (this process) and for the client are measured separately.
 */
START_TEST(thousand_slow_requests)
{
    struct rlimit rl;
    struct rusage self, child;
    int64_t t0, elapsed;
    int fds[2], ok = -1, wstatus;
    pid_t pid;

    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    rl.rlim_cur = rl.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    ck_assert_uint_ge(rl.rlim_cur, CONCURRENCY + 100);

    ck_assert_int_eq(pipe(fds), 0);
    t0 = time_mono_ms();
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        ok = drive_slow_requests(CONCURRENCY);
        if (write(fds[1], &ok, sizeof(ok)) != (ssize_t)sizeof(ok))
            _exit(2);
        _exit(0); /* skips atexit handlers: the parent's state is not ours to check */
    }
    close(fds[1]);
    ck_assert_int_eq(read(fds[0], &ok, sizeof(ok)), (ssize_t)sizeof(ok));
    close(fds[0]);
    elapsed = time_mono_ms() - t0;
    ck_assert_int_eq(waitpid(pid, &wstatus, 0), pid);
    ck_assert(WIFEXITED(wstatus));
    ck_assert_int_eq(WEXITSTATUS(wstatus), 0);
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &child);
    printf("thousand_slow_requests: %d ok in %" PRId64 " ms, max concurrent %d, peak rss "
           "server %ld KiB, client %ld KiB\n",
           ok, elapsed, atomic_load(&max_active), self.ru_maxrss, child.ru_maxrss);
    ck_assert_int_eq(ok, CONCURRENCY);
    ck_assert_int_eq(atomic_load(&max_active), CONCURRENCY);
    ck_assert_int_lt(elapsed, 3 * SLOW_MS + 4000);
    wait_in_flight(0, 5000);
}
END_TEST

/* ---- lifecycle without a fixture -------------------------------------------------- */

START_TEST(start_errors)
{
    struct http_server_options o = {.bind_address = "not-an-ip"};
    struct http_server *s;
    struct error err;

    o.port = 70000;
    ck_assert_ptr_null(http_server_new(&o, &err));
    ck_assert_int_eq(err.status, ST_INVALID);
    o.port = 0;
    s = http_server_new(&o, &err);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(http_server_start(s, &err), ST_INVALID);
    http_server_free(s);

    /* A port already bound. */
    o.bind_address = "127.0.0.1";
    o.port = http_server_port(srv);
    s = http_server_new(&o, &err);
    ck_assert_int_eq(http_server_start(s, &err), ST_IO);
    http_server_free(s);

    /* Never started: free is enough. */
    http_server_free(http_server_new(NULL, &err));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("http_server");
    TCase *tc = tcase_create("server");

    curl_global_init(CURL_GLOBAL_DEFAULT);
    tcase_add_checked_fixture(tc, start_server, stop_server);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, routing, 0, ARRAY_SIZE(route_cases));
    tcase_add_test(tc, decoded_path);
    tcase_add_loop_test(tc, catch_all_route, 0, ARRAY_SIZE(rest_cases));
    tcase_add_test(tc, long_path);
    tcase_add_test(tc, body_at_limit);
    tcase_add_loop_test(tc, body_too_large_content_length, 0, 2);
    tcase_add_test(tc, body_chunked);
    tcase_add_test(tc, body_chunked_endless);
    tcase_add_loop_test(tc, json_bodies, 0, ARRAY_SIZE(json_cases));
    tcase_add_test(tc, json_deep_nesting);
    tcase_add_loop_test(tc, request_id, 0, ARRAY_SIZE(id_cases));
    tcase_add_test(tc, log_context_and_access_log);
    tcase_add_test(tc, no_response_is_500);
    tcase_add_test(tc, retry_after);
    tcase_add_test(tc, sse_in_order);
    tcase_add_test(tc, sse_client_disconnect);
    tcase_add_test(tc, sse_ends_on_shutdown);
    tcase_add_test(tc, shutdown_lets_requests_finish);
    tcase_add_test(tc, shutdown_grace_expires);
    tcase_add_test(tc, shutdown_with_idle_connections);
    tcase_add_test(tc, thousand_slow_requests);
    tcase_add_test(tc, start_errors);
    suite_add_tcase(s, tc);
    return s;
}
