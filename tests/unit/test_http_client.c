#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "check_main.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "core/netaddr.h"
#include "http/client.h"

/* ---- a local test server on 127.0.0.1, one thread per connection --------- */

struct server {
    struct MHD_Daemon *d;
    int port;
    char base[64]; /* "http://127.0.0.1:PORT" */
    atomic_int requests;
    atomic_int connections;
    atomic_int current; /* requests being handled now */
    atomic_int peak;
    atomic_int status_calls;
    atomic_int key_calls[16]; /* /status calls per key= argument */
    atomic_bool stopping;
};

struct request {
    char *body;
    size_t len;
};

struct gen {
    uint64_t n;
};

static const char *arg(struct MHD_Connection *conn, const char *name, const char *def)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);

    return v ? v : def;
}

static long arg_long(struct MHD_Connection *conn, const char *name, long def)
{
    int64_t v;

    return str_to_i64(arg(conn, name, ""), 0, INT64_MAX, &v) ? (long)v : def;
}

static ssize_t gen_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct gen *g = cls;
    size_t k;

    if (pos >= g->n)
        return MHD_CONTENT_READER_END_OF_STREAM;
    k = g->n - pos < max ? (size_t)(g->n - pos) : max;
    if (k > 1024)
        k = 1024;
    memset(buf, 'y', k);
    return (ssize_t)k;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, const char *body,
                             size_t len, const char *ctype)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret;

    if (ctype)
        MHD_add_response_header(r, "Content-Type", ctype);
    ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_generated(struct MHD_Connection *conn, uint64_t n, bool chunked)
{
    struct gen *g = xcalloc(1, sizeof(*g));
    struct MHD_Response *r;
    enum MHD_Result ret;

    g->n = n;
    r = MHD_create_response_from_callback(chunked ? MHD_SIZE_UNKNOWN : n, 4096, gen_read, g, free);
    ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

/* Sleeps ms in slices so that stopping the server does not wait for it. */
static void server_sleep(struct server *s, long ms)
{
    int64_t end = time_mono_ms() + ms;

    while (time_mono_ms() < end && !atomic_load(&s->stopping))
        time_sleep_ms(5);
}

static enum MHD_Result route(struct server *s, struct MHD_Connection *conn, const char *url,
                             const char *method, struct request *rq)
{
    char out[4096];

    if (strcmp(url, "/echo") == 0) {
        const char *xt = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Test");
        struct MHD_Response *r;
        enum MHD_Result ret;

        snprintf(out, sizeof(out), "method=%s\nx-test=%s\nbody=%.*s", method, xt ? xt : "-",
                 (int)rq->len, rq->body ? rq->body : "");
        r = MHD_create_response_from_buffer(strlen(out), out, MHD_RESPMEM_MUST_COPY);
        MHD_add_response_header(r, "Content-Type", "text/plain");
        MHD_add_response_header(r, "X-Echo", "yes");
        ret = MHD_queue_response(conn, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strcmp(url, "/sleep") == 0) {
        int now = atomic_fetch_add(&s->current, 1) + 1;
        int peak = atomic_load(&s->peak);

        while (now > peak && !atomic_compare_exchange_weak(&s->peak, &peak, now))
            ;
        server_sleep(s, arg_long(conn, "ms", 100));
        atomic_fetch_sub(&s->current, 1);
        return reply(conn, MHD_HTTP_OK, "slept", 5, "text/plain");
    }
    if (strcmp(url, "/status") == 0) {
        long key = arg_long(conn, "key", -1);
        int n = key >= 0 && key < 16 ? atomic_fetch_add(&s->key_calls[key], 1) + 1
                                     : atomic_fetch_add(&s->status_calls, 1) + 1;
        const char *ra = arg(conn, "retry_after", NULL);
        struct MHD_Response *r;
        enum MHD_Result ret;

        if (n > arg_long(conn, "fail", 0))
            return reply(conn, MHD_HTTP_OK, "ok", 2, "text/plain");
        r = MHD_create_response_from_buffer(4, "fail", MHD_RESPMEM_PERSISTENT);
        if (ra)
            MHD_add_response_header(r, "Retry-After", ra);
        ret = MHD_queue_response(conn, (unsigned)arg_long(conn, "code", 503), r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strcmp(url, "/big") == 0) {
        size_t n = (size_t)arg_long(conn, "n", 0);
        char *body = xmalloc(n + 1);
        enum MHD_Result ret;

        memset(body, 'x', n);
        ret = reply(conn, MHD_HTTP_OK, body, n, "application/octet-stream");
        free(body);
        return ret;
    }
    if (strcmp(url, "/chunked") == 0)
        return reply_generated(conn, (uint64_t)arg_long(conn, "n", 0), true);
    if (strcmp(url, "/huge") == 0)
        return reply_generated(conn, (uint64_t)100 << 20, false);
    if (strcmp(url, "/json") == 0) {
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
        const char *ac = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept");
        json_t *got = rq->len ? json_loadb(rq->body, rq->len, 0, NULL) : json_null();
        json_t *o = json_pack("{s:s, s:s, s:o}", "ct", ct ? ct : "", "accept", ac ? ac : "", "got",
                              got ? got : json_null());
        char *dump = json_dumps(o, JSON_COMPACT);
        enum MHD_Result ret = reply(conn, MHD_HTTP_OK, dump, strlen(dump), "application/json");

        free(dump);
        json_decref(o);
        return ret;
    }
    if (strcmp(url, "/notjson") == 0)
        return reply(conn, MHD_HTTP_OK, "hello", 5, "text/plain");
    return reply(conn, MHD_HTTP_NOT_FOUND, "not found", 9, "text/plain");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls)
{
    struct server *s = cls;
    struct request *rq = *req_cls;

    UNUSED(version);
    if (!rq) {
        *req_cls = xcalloc(1, sizeof(*rq));
        atomic_fetch_add(&s->requests, 1);
        return MHD_YES;
    }
    if (*upload_size > 0) {
        rq->body = xrealloc(rq->body, rq->len + *upload_size);
        memcpy(rq->body + rq->len, upload, *upload_size);
        rq->len += *upload_size;
        *upload_size = 0;
        return MHD_YES;
    }
    return route(s, conn, url, method, rq);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct request *rq = *req_cls;

    UNUSED(cls);
    UNUSED(conn);
    UNUSED(toe);
    if (rq) {
        free(rq->body);
        free(rq);
        *req_cls = NULL;
    }
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct server *s = cls;

    UNUSED(conn);
    UNUSED(socket_ctx);
    if (toe == MHD_CONNECTION_NOTIFY_STARTED)
        atomic_fetch_add(&s->connections, 1);
}

/* A self-signed certificate for 127.0.0.1, PEM: key and cert are malloc'd, caller frees. */
static void make_cert(char **key_pem, char **cert_pem)
{
    EVP_PKEY *pkey = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name;
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    BIO *bio;
    char *p;
    long n;

    ck_assert_ptr_nonnull(pkey);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pkey);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "IP:127.0.0.1");
    ck_assert_ptr_nonnull(ext);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    ck_assert_int_gt(X509_sign(x, pkey, EVP_sha256()), 0);

    bio = BIO_new(BIO_s_mem());
    ck_assert_int_eq(PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL), 1);
    n = BIO_get_mem_data(bio, &p);
    *key_pem = xcalloc(1, (size_t)n + 1);
    memcpy(*key_pem, p, (size_t)n);
    BIO_free(bio);
    bio = BIO_new(BIO_s_mem());
    ck_assert_int_eq(PEM_write_bio_X509(bio, x), 1);
    n = BIO_get_mem_data(bio, &p);
    *cert_pem = xcalloc(1, (size_t)n + 1);
    memcpy(*cert_pem, p, (size_t)n);
    BIO_free(bio);
    X509_free(x);
    EVP_PKEY_free(pkey);
}

/* Starts the server, over TLS when key and cert are given (PEM, borrowed while it runs). */
static struct server *server_start_tls(const char *key, const char *cert)
{
    struct server *s = xcalloc(1, sizeof(*s));
    struct sockaddr_in sin;
    const union MHD_DaemonInfo *info;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (key)
        s->d = MHD_start_daemon(
            MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TLS, 0, NULL,
            NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &sin, MHD_OPTION_NOTIFY_COMPLETED,
            on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
            MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_HTTPS_MEM_CERT, cert, MHD_OPTION_END);
    else
        s->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0,
                                NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &sin,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_END);
    ck_assert_ptr_nonnull(s->d);
    info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    ck_assert_ptr_nonnull(info);
    s->port = info->port;
    snprintf(s->base, sizeof(s->base), "%s://127.0.0.1:%d", key ? "https" : "http", s->port);
    return s;
}

static struct server *server_start(void)
{
    return server_start_tls(NULL, NULL);
}

static void server_stop(struct server *s)
{
    atomic_store(&s->stopping, true);
    MHD_stop_daemon(s->d);
    free(s);
}

/* ---- helpers -------------------------------------------------------------- */

static const char *url_of(const struct server *s, const char *path, char *out, size_t cap)
{
    ck_assert(str_printf(out, cap, "%s%s", s->base, path));
    return out;
}

static double since_s(int64_t start_us)
{
    return (double)(time_mono_us() - start_us) / 1e6;
}

/* A port on 127.0.0.1 that nothing listens on (bound once, then closed). */
static int closed_port(void)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

/* ---- address classification ------------------------------------------------ */

static const struct {
    const char *addr;
    bool public;
} addresses[] = {
    {"0.0.0.0", false},
    {"0.255.255.255", false},
    {"1.1.1.1", true},
    {"8.8.8.8", true},
    {"9.255.255.255", true},
    {"10.0.0.1", false},
    {"10.255.255.255", false},
    {"11.0.0.0", true},
    {"100.63.255.255", true},
    {"100.64.0.0", false},
    {"100.127.255.255", false},
    {"100.128.0.0", true},
    {"126.255.255.255", true},
    {"127.0.0.1", false},
    {"127.255.255.254", false},
    {"128.0.0.0", true},
    {"142.250.74.78", true},
    {"169.253.255.255", true},
    {"169.254.0.1", false},
    {"169.254.169.254", false},
    {"169.255.0.0", true},
    {"172.15.255.255", true},
    {"172.16.0.0", false},
    {"172.20.1.1", false},
    {"172.31.255.255", false},
    {"172.32.0.0", true},
    {"192.0.0.1", false},
    {"192.0.0.170", false},
    {"192.0.1.0", true},
    {"192.167.255.255", true},
    {"192.168.0.1", false},
    {"192.168.255.255", false},
    {"192.169.0.0", true},
    {"198.17.255.255", true},
    {"198.18.0.0", false},
    {"198.19.255.255", false},
    {"198.20.0.0", true},
    {"223.255.255.255", true},
    {"224.0.0.1", false},
    {"239.255.255.255", false},
    {"240.0.0.1", false},
    {"255.255.255.255", false},
    {"::", false},
    {"::1", false},
    {"::2", false},
    {"::127.0.0.1", false},
    {"::8.8.8.8", true},
    {"::ffff:127.0.0.1", false},
    {"::ffff:10.1.2.3", false},
    {"::ffff:169.254.169.254", false},
    {"::ffff:192.168.1.1", false},
    {"::ffff:0.0.0.0", false},
    {"::ffff:8.8.8.8", true},
    {"64:ff9b::127.0.0.1", false},
    {"64:ff9b::8.8.8.8", true},
    {"2002:7f00:1::1", false},
    {"2002:a9fe:a9fe::1", false},
    {"2002:808:808::1", true},
    {"2001:4860:4860::8888", true},
    {"2606:4700:4700::1111", true},
    {"2a00:1450:4001:80b::200e", true},
    {"fbff:ffff::1", true},
    {"fc00::1", false},
    {"fd12:3456:789a::1", false},
    {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false},
    {"fe80::1", false},
    {"febf:ffff::1", false},
    {"fec0::1", false},
    {"ff02::1", false},
    {"ff00::", false},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false},
};

START_TEST(address_table)
{
    struct sockaddr_storage ss;
    bool got;

    memset(&ss, 0, sizeof(ss));
    if (strchr(addresses[_i].addr, ':')) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

        in6->sin6_family = AF_INET6;
        ck_assert_int_eq(inet_pton(AF_INET6, addresses[_i].addr, &in6->sin6_addr), 1);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;

        in->sin_family = AF_INET;
        ck_assert_int_eq(inet_pton(AF_INET, addresses[_i].addr, &in->sin_addr), 1);
    }
    got = netaddr_is_public((const struct sockaddr *)&ss);
    ck_assert_msg(got == addresses[_i].public, "%s: got public=%d want %d", addresses[_i].addr, got,
                  addresses[_i].public);
}
END_TEST

START_TEST(address_other_families)
{
    struct sockaddr_un un;

    memset(&un, 0, sizeof(un));
    un.sun_family = AF_UNIX;
    ck_assert(!netaddr_is_public((const struct sockaddr *)&un));
    ck_assert(!netaddr_is_public(NULL));
}
END_TEST

/* ---- calls -------------------------------------------------------------------- */

START_TEST(call_copy_is_deep)
{
    char url[64] = "http://example.com/a?b=c", h0[32] = "X-A: 1", body[8] = "ab\0cd";
    const char *hdrs[] = {h0, "X-B: 2", NULL};
    struct http_call call = {.method = "PUT",
                             .url = url,
                             .headers = hdrs,
                             .body = body,
                             .body_len = 5,
                             .idempotent = true};
    struct http_call *copy = http_call_copy(&call);

    memset(url, 'z', sizeof(url) - 1);
    memset(h0, 'z', sizeof(h0) - 1);
    memset(body, 'z', sizeof(body));
    ck_assert_str_eq(copy->method, "PUT");
    ck_assert_str_eq(copy->url, "http://example.com/a?b=c");
    ck_assert_str_eq(copy->headers[0], "X-A: 1");
    ck_assert_str_eq(copy->headers[1], "X-B: 2");
    ck_assert_ptr_null(copy->headers[2]);
    ck_assert_uint_eq(copy->body_len, 5);
    ck_assert_mem_eq(copy->body, "ab\0cd", 5);
    ck_assert(copy->idempotent);
    http_call_free(copy);

    call = (struct http_call){.url = "http://x/"};
    copy = http_call_copy(&call);
    ck_assert_ptr_null(copy->method);
    ck_assert_ptr_null(copy->headers);
    ck_assert_ptr_null(copy->body);
    http_call_free(copy);
}
END_TEST

START_TEST(get_and_post_round_trip)
{
    struct server *s = server_start();
    struct http_client *c = http_client_new(NULL);
    const char *hdrs[] = {"X-Test: hello there", NULL};
    struct http_result res;
    struct error err;
    char url[128];
    enum status st;

    http_result_init(&res);
    st = http_client_do(c,
                        &(struct http_call){.url = url_of(s, "/echo?q=1", url, sizeof(url)),
                                            .headers = hdrs,
                                            .idempotent = true},
                        &res, &err);
    ck_assert_msg(st == ST_OK, "status %s: %s", status_name(st), err.message);
    ck_assert_int_eq(res.status, 200);
    ck_assert_int_eq(res.attempts, 1);
    ck_assert_str_eq(buf_str(&res.body), "method=GET\nx-test=hello there\nbody=");
    ck_assert_str_eq(res.content_type, "text/plain");
    ck_assert_ptr_nonnull(http_result_header(&res, "x-echo"));
    ck_assert_str_eq(http_result_header(&res, "x-echo"), "yes");
    ck_assert_str_eq(http_result_header(&res, "CONTENT-TYPE"), "text/plain");
    ck_assert_ptr_null(http_result_header(&res, "x-missing"));
    ck_assert_int_eq(res.retry_after_s, 0);
    ck_assert(res.total_s > 0 && res.total_s < 5);

    /* The same result serves a second call. */
    st = http_client_do(c,
                        &(struct http_call){.method = "POST",
                                            .url = url_of(s, "/echo", url, sizeof(url)),
                                            .headers = hdrs,
                                            .body = "a=1&b=2",
                                            .body_len = 7},
                        &res, &err);
    ck_assert_msg(st == ST_OK, "status %s: %s", status_name(st), err.message);
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(buf_str(&res.body), "method=POST\nx-test=hello there\nbody=a=1&b=2");

    st = http_client_do(c,
                        &(struct http_call){.method = "PUT",
                                            .url = url_of(s, "/echo", url, sizeof(url)),
                                            .body = "xyz",
                                            .body_len = 3},
                        &res, &err);
    ck_assert_int_eq(st, ST_OK);
    ck_assert_str_eq(buf_str(&res.body), "method=PUT\nx-test=-\nbody=xyz");

    st = http_client_do(
        c, &(struct http_call){.method = "DELETE", .url = url_of(s, "/echo", url, sizeof(url))},
        &res, &err);
    ck_assert_int_eq(st, ST_OK);
    ck_assert_str_eq(buf_str(&res.body), "method=DELETE\nx-test=-\nbody=");

    st = http_client_do(c, &(struct http_call){.url = url_of(s, "/nope", url, sizeof(url))}, &res,
                        &err);
    ck_assert_int_eq(st, ST_OK);
    ck_assert_int_eq(res.status, 404);

    http_result_release(&res);
    http_client_free(c);
    server_stop(s);
}
END_TEST

START_TEST(json_helper)
{
    struct server *s = server_start();
    struct http_client *c = http_client_new(NULL);
    json_t *body = json_pack("{s:i, s:s}", "n", 42, "s", "caf\xc3\xa9");
    json_t *out = NULL;
    struct error err;
    long status = 0;
    char url[128];
    enum status st;

    st = http_client_json(
        c, &(struct http_call){.method = "POST", .url = url_of(s, "/json", url, sizeof(url))}, body,
        &status, &out, &err);
    ck_assert_msg(st == ST_OK, "status %s: %s", status_name(st), err.message);
    ck_assert_int_eq(status, 200);
    ck_assert_ptr_nonnull(out);
    ck_assert_str_eq(json_string_value(json_object_get(out, "ct")), "application/json");
    ck_assert_str_eq(json_string_value(json_object_get(out, "accept")), "application/json");
    ck_assert_msg(json_equal(json_object_get(out, "got"), body), "echoed body differs");
    json_decref(out);

    st = http_client_json(c, &(struct http_call){.url = url_of(s, "/notjson", url, sizeof(url))},
                          NULL, &status, &out, &err);
    ck_assert_int_eq(st, ST_OK);
    ck_assert_int_eq(status, 200);
    ck_assert_ptr_null(out);

    st = http_client_json(c, &(struct http_call){.url = "http://127.0.0.1:1/x", .timeout_ms = 500},
                          NULL, &status, &out, &err);
    ck_assert_int_eq(st, ST_UNAVAILABLE);
    ck_assert_int_eq(status, 0);
    ck_assert_ptr_null(out);

    json_decref(body);
    http_client_free(c);
    server_stop(s);
}
END_TEST

START_TEST(total_timeout)
{
    struct server *s = server_start();
    struct http_client *c = http_client_new(&(struct http_client_options){.retry_base_ms = 10});
    struct http_result res;
    struct error err;
    char url[128];
    int64_t t0 = time_mono_us();
    enum status st;
    double took;

    http_result_init(&res);
    st = http_client_do(c,
                        &(struct http_call){.url = url_of(s, "/sleep?ms=3000", url, sizeof(url)),
                                            .timeout_ms = 300},
                        &res, &err);
    took = since_s(t0);
    ck_assert_msg(st == ST_TIMEOUT, "status %s: %s", status_name(st), err.message);
    ck_assert_int_eq(res.attempts, 1);
    ck_assert_msg(took >= 0.25 && took < 1.5, "took %.3f s", took);
    ck_assert_msg(strstr(err.message, "timed out") != NULL, "message: %s", err.message);
    ck_assert_msg(strstr(err.message, "GET http://127.0.0.1:") != NULL, "message: %s", err.message);
    ck_assert_msg(strstr(err.message, "ms=3000") == NULL, "query in message: %s", err.message);

    /* Idempotent: a timeout is retried, within the budget of 2 x 200 ms. */
    t0 = time_mono_us();
    st = http_client_do(c,
                        &(struct http_call){.url = url_of(s, "/sleep?ms=3000", url, sizeof(url)),
                                            .timeout_ms = 200,
                                            .idempotent = true,
                                            .max_attempts = 2},
                        &res, &err);
    took = since_s(t0);
    ck_assert_msg(st == ST_TIMEOUT, "status %s: %s", status_name(st), err.message);
    ck_assert_int_eq(res.attempts, 2);
    ck_assert_msg(took >= 0.3 && took < 1.5, "took %.3f s", took);

    http_result_release(&res);
    http_client_free(c);
    server_stop(s);
}
END_TEST

START_TEST(connect_failure)
{
    struct http_client *c = http_client_new(&(struct http_client_options){.retry_base_ms = 10});
    struct http_result res;
    struct error err;
    char url[128];
    enum status st;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x?key=secret#frag", closed_port());
    http_result_init(&res);
    st = http_client_do(c, &(struct http_call){.method = "POST", .url = url}, &res, &err);
    ck_assert_msg(st == ST_UNAVAILABLE, "status %s: %s", status_name(st), err.message);
    ck_assert_int_eq(res.attempts, 1);
    ck_assert_int_eq(res.status, 0);
    ck_assert_msg(strstr(err.message, "cannot POST http://127.0.0.1:") != NULL, "message: %s",
                  err.message);
    ck_assert_msg(strstr(err.message, "secret") == NULL, "query in message: %s", err.message);
    ck_assert_msg(strstr(err.message, "frag") == NULL, "fragment in message: %s", err.message);

    st = http_client_do(c, &(struct http_call){.url = url, .idempotent = true}, &res, &err);
    ck_assert_msg(st == ST_UNAVAILABLE, "status %s: %s", status_name(st), err.message);
    ck_assert_int_eq(res.attempts, 4);

    http_result_release(&res);
    http_client_free(c);
}
END_TEST

START_TEST(invalid_urls)
{
    static const char *bad[] = {"",
                                "not a url",
                                "http://",
                                "http://exa mple.com/",
                                "//no-scheme/x",
                                "ftp://example.com/x",
                                "file:///etc/passwd"};
    struct http_client *c = http_client_new(NULL);
    struct http_result res;
    struct error err;
    size_t i;

    http_result_init(&res);
    for (i = 0; i < ARRAY_SIZE(bad); i++) {
        enum status st = http_client_do(c, &(struct http_call){.url = bad[i]}, &res, &err);

        ck_assert_msg(st == ST_INVALID, "%s: status %s: %s", bad[i], status_name(st), err.message);
        ck_assert_int_eq(res.attempts, 0);
    }
    ck_assert_int_eq(http_client_do(c, &(struct http_call){.url = NULL}, &res, &err), ST_INVALID);
    ck_assert_int_eq(
        http_client_do(c, &(struct http_call){.method = "GE T", .url = "http://x/"}, &res, &err),
        ST_INVALID);
    http_result_release(&res);
    http_client_free(c);
}
END_TEST

START_TEST(retry_503_honours_retry_after)
{
    struct server *s = server_start();
    struct http_client *c = http_client_new(NULL);
    struct http_result res;
    struct error err;
    char url[128];
    enum status st;

    http_result_init(&res);
    st =
        http_client_do(c,
                       &(struct http_call){.url = url_of(s, "/status?code=503&retry_after=1&fail=1",
                                                         url, sizeof(url)),
                                           .idempotent = true},
                       &res, &err);
    ck_assert_msg(st == ST_OK, "status %s: %s", status_name(st), err.message);
    ck_assert_int_eq(res.status, 200);
    ck_assert_int_eq(res.attempts, 2);
    ck_assert_int_eq(atomic_load(&s->requests), 2);
    ck_assert_int_eq(res.retry_after_s, 0); /* the last response had none */
    ck_assert_msg(res.total_s >= 0.95 && res.total_s < 2.5, "total_s %.3f", res.total_s);

    http_result_release(&res);
    http_client_free(c);
    server_stop(s);
}
END_TEST

START_TEST(retry_500_until_attempts_spent)
{
    struct server *s = server_start();
    struct http_client *c = http_client_new(&(struct http_client_options){.retry_base_ms = 10});
    struct http_result res;
    struct error err;
    char url[128];
    enum status st;

    http_result_init(&res);
    st = http_client_do(
        c,
        &(struct http_call){.url = url_of(s, "/status?code=500&fail=100", url, sizeof(url)),
                            .idempotent = true,
                            .max_attempts = 3},
        &res, &err);
    ck_assert_int_eq(st, ST_OK);
    ck_assert_int_eq(res.status, 500);
    ck_assert_int_eq(res.attempts, 3);
    ck_assert_int_eq(atomic_load(&s->requests), 3);
    ck_assert_str_eq(buf_str(&res.body), "fail");

    http_result_release(&res);
    http_client_free(c);
    server_stop(s);
}
END_TEST

START_TEST(no_retry_on_400)
{
    struct server *s = server_start();
    struct http_client *c = http_client_new(&(struct http_client_options){.retry_base_ms = 10});
    struct http_result res;
    struct error err;
    char url[128];
    enum status st;

    http_result_init(&res);
    st = http_client_do(
        c,
        &(struct http_call){.url = url_of(s, "/status?code=400&fail=5", url, sizeof(url)),
                            .idempotent = true},
        &res, &err);
    ck_assert_int_eq(st, ST_OK);
    ck_assert_int_eq(res.status, 400);
    ck_assert_int_eq(res.attempts, 1);
    ck_assert_int_eq(atomic_load(&s->requests), 1);

    http_result_release(&res);
    http_client_free(c);
    server_stop(s);
}
END_TEST

START_TEST(no_retry_when_not_idempotent)
{
    struct server *s = server_start();
    struct http_client *c = http_client_new(&(struct http_client_options){.retry_base_ms = 10});
    struct http_result res;
    struct error err;
    char url[128];
    enum status st;

    http_result_init(&res);
    st = http_client_do(
        c,
        &(struct http_call){.method = "POST",
                            .url = url_of(s, "/status?code=503&fail=5", url, sizeof(url)),
                            .body = "{}",
                            .body_len = 2,
                            .max_attempts = 4},
        &res, &err);
    ck_assert_int_eq(st, ST_OK);
    ck_assert_int_eq(res.status, 503);
    ck_assert_int_eq(res.attempts, 1);
    ck_assert_int_eq(atomic_load(&s->requests), 1);

    http_result_release(&res);
    http_client_free(c);
    server_stop(s);
}
END_TEST

START_TEST(huge_retry_after_returns_promptly)
{
    static const struct {
        const char *path;
        int min_s;
    } rows[] = {
        {"/status?code=429&retry_after=3600&fail=5", 3600},
        {"/status?code=503&retry_after=99999999999999999999&fail=5", 2147483647},
        {"/status?code=429&retry_after=Wed,%2021%20Oct%202037%2007:28:00%20GMT&fail=5", 100000},
    };
    struct server *s = server_start();
    struct http_client *c = http_client_new(NULL);
    struct http_result res;
    struct error err;
    char url[256];
    size_t i;

    http_result_init(&res);
    for (i = 0; i < ARRAY_SIZE(rows); i++) {
        enum status st =
            http_client_do(c,
                           &(struct http_call){.url = url_of(s, rows[i].path, url, sizeof(url)),
                                               .idempotent = true},
                           &res, &err);

        ck_assert_int_eq(st, ST_OK);
        ck_assert_int_eq(res.attempts, 1);
        ck_assert_msg(res.status == 429 || res.status == 503, "status %ld", res.status);
        ck_assert_msg(res.retry_after_s >= rows[i].min_s, "%s: retry_after_s %d want >= %d",
                      rows[i].path, res.retry_after_s, rows[i].min_s);
        ck_assert_msg(res.total_s < 0.5, "total_s %.3f", res.total_s);
    }
    ck_assert_int_eq(atomic_load(&s->requests), (int)ARRAY_SIZE(rows));

    http_result_release(&res);
    http_client_free(c);
    server_stop(s);
}
END_TEST

START_TEST(response_cap)
{
    static const struct {
        const char *method;
        const char *path;
        size_t call_max;
        enum status want;
        size_t len;
    } rows[] = {
        {"GET", "/big?n=1000", 0, ST_OK, 1000},
        {"GET", "/big?n=1001", 0, ST_TOO_LARGE, 0},
        {"GET", "/big?n=50000", 0, ST_TOO_LARGE, 0},
        {"GET", "/chunked?n=1000", 0, ST_OK, 1000},
        {"GET", "/chunked?n=1001", 0, ST_TOO_LARGE, 0},
        {"GET", "/chunked?n=50000", 0, ST_TOO_LARGE, 0},
        {"GET", "/big?n=50000", 50000, ST_OK, 50000},
        {"GET", "/chunked?n=50000", 60000, ST_OK, 50000},
        {"HEAD", "/big?n=50000", 0, ST_OK, 0},
        {"GET", "/huge", 0, ST_TOO_LARGE, 0},
    };
    struct server *s = server_start();
    struct http_client *c =
        http_client_new(&(struct http_client_options){.max_response_bytes = 1000});
    struct http_result res;
    struct error err;
    char url[128];
    size_t i;

    http_result_init(&res);
    for (i = 0; i < ARRAY_SIZE(rows); i++) {
        int64_t t0 = time_mono_us();
        enum status st =
            http_client_do(c,
                           &(struct http_call){.method = rows[i].method,
                                               .url = url_of(s, rows[i].path, url, sizeof(url)),
                                               .max_response_bytes = rows[i].call_max,
                                               .idempotent = true},
                           &res, &err);

        ck_assert_msg(st == rows[i].want, "%s %s: status %s want %s (%s)", rows[i].method,
                      rows[i].path, status_name(st), status_name(rows[i].want),
                      st ? err.message : "");
        ck_assert_int_eq(res.attempts, 1);
        ck_assert_msg(since_s(t0) < 2, "%s took %.3f s", rows[i].path, since_s(t0));
        if (st == ST_OK)
            ck_assert_uint_eq(res.body.len, rows[i].len);
        else
            ck_assert_msg(strstr(err.message, "larger than") != NULL, "message: %s", err.message);
    }
    http_result_release(&res);
    http_client_free(c);
    server_stop(s);
}
END_TEST

START_TEST(connection_reuse)
{
    struct server *s = server_start();
    struct http_client *c = http_client_new(NULL);
    struct http_result res;
    struct error err;
    char url[128];
    int i;

    http_result_init(&res);
    for (i = 0; i < 20; i++) {
        enum status st = http_client_do(
            c, &(struct http_call){.url = url_of(s, "/echo", url, sizeof(url))}, &res, &err);

        ck_assert_msg(st == ST_OK, "request %d: %s", i, err.message);
        ck_assert_int_eq(res.status, 200);
    }
    ck_assert_int_eq(atomic_load(&s->requests), 20);
    ck_assert_int_eq(atomic_load(&s->connections), 1);

    http_result_release(&res);
    http_client_free(c);
    server_stop(s);
}
END_TEST

#define THREADS          8
#define CALLS_PER_THREAD 25

struct thread_arg {
    struct http_client *c;
    const char *url;
    int ok;
};

static void *thread_main(void *p)
{
    struct thread_arg *a = p;
    struct http_result res;
    int i;

    http_result_init(&res);
    for (i = 0; i < CALLS_PER_THREAD; i++) {
        struct error err;

        if (http_client_do(a->c, &(struct http_call){.url = a->url, .idempotent = true}, &res,
                           &err) == ST_OK &&
            res.status == 200)
            a->ok++;
    }
    http_result_release(&res);
    return NULL;
}

START_TEST(concurrent_threads)
{
    struct server *s = server_start();
    struct http_client *c = http_client_new(NULL);
    struct thread_arg args[THREADS];
    pthread_t tids[THREADS];
    char url[128];
    int i;

    url_of(s, "/echo", url, sizeof(url));
    for (i = 0; i < THREADS; i++) {
        args[i] = (struct thread_arg){.c = c, .url = url};
        ck_assert_int_eq(pthread_create(&tids[i], NULL, thread_main, &args[i]), 0);
    }
    for (i = 0; i < THREADS; i++) {
        pthread_join(tids[i], NULL);
        ck_assert_int_eq(args[i].ok, CALLS_PER_THREAD);
    }
    ck_assert_int_eq(atomic_load(&s->requests), THREADS * CALLS_PER_THREAD);
    ck_assert_int_le(atomic_load(&s->connections), THREADS);

    http_client_free(c);
    server_stop(s);
}
END_TEST

/* ---- private addresses -------------------------------------------------------- */

START_TEST(block_private_addresses)
{
    struct server *s = server_start();
    struct http_client *c = http_client_new(NULL);
    struct http_result res;
    struct error err;
    char url[128];
    enum status st;

    http_result_init(&res);
    /* Unguarded, to warm a connection that a guarded call must not reuse. */
    st = http_client_do(c, &(struct http_call){.url = url_of(s, "/echo", url, sizeof(url))}, &res,
                        &err);
    ck_assert_int_eq(st, ST_OK);

    /* http:// needs allow_http. */
    st = http_client_do(c,
                        &(struct http_call){.url = url_of(s, "/echo?token=abc", url, sizeof(url)),
                                            .block_private_addresses = true},
                        &res, &err);
    ck_assert_msg(st == ST_PERMISSION_DENIED, "status %s: %s", status_name(st), err.message);
    ck_assert_msg(strstr(err.message, "https") != NULL, "message: %s", err.message);
    ck_assert_msg(strstr(err.message, "abc") == NULL, "query in message: %s", err.message);

    /* With allow_http the address itself is refused, after resolution. */
    st = http_client_do(c,
                        &(struct http_call){.url = url_of(s, "/echo", url, sizeof(url)),
                                            .block_private_addresses = true,
                                            .allow_http = true,
                                            .idempotent = true},
                        &res, &err);
    ck_assert_msg(st == ST_PERMISSION_DENIED, "status %s: %s", status_name(st), err.message);
    ck_assert_int_eq(res.attempts, 1);
    ck_assert_msg(strstr(err.message, "127.0.0.1") != NULL, "message: %s", err.message);

    snprintf(url, sizeof(url), "http://localhost:%d/echo", s->port);
    st = http_client_do(
        c, &(struct http_call){.url = url, .block_private_addresses = true, .allow_http = true},
        &res, &err);
    ck_assert_msg(st == ST_PERMISSION_DENIED, "status %s: %s", status_name(st), err.message);

    snprintf(url, sizeof(url), "https://127.0.0.1:%d/echo", s->port);
    st = http_client_do(c, &(struct http_call){.url = url, .block_private_addresses = true}, &res,
                        &err);
    ck_assert_msg(st == ST_PERMISSION_DENIED, "status %s: %s", status_name(st), err.message);

    snprintf(url, sizeof(url), "http://169.254.169.254/computeMetadata/v1/");
    st = http_client_do(
        c, &(struct http_call){.url = url, .block_private_addresses = true, .allow_http = true},
        &res, &err);
    ck_assert_msg(st == ST_PERMISSION_DENIED, "status %s: %s", status_name(st), err.message);

    st = http_client_do(c,
                        &(struct http_call){.url = "ftp://127.0.0.1/x",
                                            .block_private_addresses = true,
                                            .allow_http = true},
                        &res, &err);
    ck_assert_msg(st == ST_PERMISSION_DENIED, "status %s: %s", status_name(st), err.message);

    /* Only the warm-up request reached the server. */
    ck_assert_int_eq(atomic_load(&s->requests), 1);
    ck_assert_int_eq(atomic_load(&s->connections), 1);

    http_result_release(&res);
    http_client_free(c);
    server_stop(s);
}
END_TEST

/* ---- http_multi ------------------------------------------------------------------ */

struct tally {
    int done;
    int ok;
    int attempts_total;
    enum status last_st;
    long last_status;
    char last_message[ERROR_MSG_MAX];
};

static void on_done(void *ud, enum status st, const struct http_result *res,
                    const struct error *err)
{
    struct tally *t = ud;

    t->done++;
    t->last_st = st;
    t->last_status = res->status;
    t->attempts_total += res->attempts;
    str_copy(t->last_message, sizeof(t->last_message), err->message);
    if (st == ST_OK && res->status == 200 && err->status == ST_OK)
        t->ok++;
}

START_TEST(multi_bounded_concurrency)
{
    struct server *s = server_start();
    struct http_client *c = http_client_new(NULL);
    struct http_multi *m = http_multi_new(c, 10);
    struct tally t = {0};
    int64_t t0 = time_mono_us();
    int i, peak;

    for (i = 0; i < 200; i++) {
        char url[128];

        snprintf(url, sizeof(url), "%s/sleep?ms=100&i=%d", s->base, i);
        http_multi_add(m, &(struct http_call){.url = url, .idempotent = true}, on_done, &t);
        memset(url, 0, sizeof(url)); /* the multi holds its own copy */
    }
    ck_assert_int_eq(http_multi_step(m, 0) > 0, 1);
    ck_assert_int_le(http_multi_in_flight(m), 10);
    http_multi_run(m);
    ck_assert_int_eq(t.done, 200);
    ck_assert_int_eq(t.ok, 200);
    ck_assert_int_eq(http_multi_in_flight(m), 0);
    ck_assert_int_eq(http_multi_peak_in_flight(m), 10);
    peak = atomic_load(&s->peak);
    ck_assert_msg(peak >= 8 && peak <= 10, "server peak %d want 8..10", peak);
    ck_assert_int_eq(atomic_load(&s->requests), 200);
    ck_assert_msg(since_s(t0) < 8, "took %.3f s", since_s(t0));
    ck_assert_int_le(atomic_load(&s->connections), 16);

    http_multi_free(m);
    http_client_free(c);
    server_stop(s);
}
END_TEST

START_TEST(multi_retries_and_errors)
{
    struct server *s = server_start();
    struct http_client *c = http_client_new(&(struct http_client_options){.retry_base_ms = 20});
    struct http_multi *m = http_multi_new(c, 3);
    struct tally ok = {0}, bad = {0}, denied = {0}, fresh = {0};
    char url[128];
    int i, left;

    /* Each call's first attempt fails with 503; its second succeeds. */
    for (i = 0; i < 5; i++) {
        snprintf(url, sizeof(url), "%s/status?code=503&fail=1&key=%d", s->base, i);
        http_multi_add(m, &(struct http_call){.url = url, .idempotent = true}, on_done, &ok);
    }
    http_multi_add(m, &(struct http_call){.url = "not a url"}, on_done, &bad);
    http_multi_add(m,
                   &(struct http_call){.url = url_of(s, "/echo", url, sizeof(url)),
                                       .block_private_addresses = true,
                                       .allow_http = true},
                   on_done, &denied);
    left = http_multi_step(m, 5000);
    ck_assert_int_eq(left, 0);
    ck_assert_int_eq(ok.done, 5);
    ck_assert_int_eq(ok.ok, 5);
    ck_assert_int_eq(ok.attempts_total, 10);
    ck_assert_int_eq(bad.done, 1);
    ck_assert_int_eq(bad.last_st, ST_INVALID);
    ck_assert_int_eq(denied.done, 1);
    ck_assert_msg(denied.last_st == ST_PERMISSION_DENIED, "status %s: %s",
                  status_name(denied.last_st), denied.last_message);
    ck_assert_int_le(http_multi_peak_in_flight(m), 3);
    ck_assert_int_eq(atomic_load(&s->requests), 10);

    /* Reused after draining. */
    http_multi_add(m, &(struct http_call){.url = url_of(s, "/echo", url, sizeof(url))}, on_done,
                   &fresh);
    http_multi_run(m);
    ck_assert_int_eq(fresh.ok, 1);

    /* Freed with work queued: dropped without callbacks. */
    http_multi_add(m, &(struct http_call){.url = url_of(s, "/sleep?ms=50", url, sizeof(url))},
                   on_done, &fresh);
    http_multi_step(m, 0);
    http_multi_add(m, &(struct http_call){.url = url_of(s, "/echo", url, sizeof(url))}, on_done,
                   &fresh);
    http_multi_free(m);
    ck_assert_int_eq(fresh.done, 1);

    http_client_free(c);
    server_stop(s);
}
END_TEST

/* ---- TLS ------------------------------------------------------------------------ */

/* customize hook: trust the test certificate. */
static void trust_cert(CURL *easy, void *ud)
{
    struct curl_blob blob = {.data = ud, .len = strlen(ud), .flags = CURL_BLOB_COPY};

    curl_easy_setopt(easy, CURLOPT_CAINFO_BLOB, &blob);
}

START_TEST(https_round_trip_and_reuse)
{
    char *key, *cert, url[128];
    struct server *s;
    struct http_client *c = http_client_new(&(struct http_client_options){.retry_base_ms = 10});
    struct http_multi *m;
    struct http_result res;
    struct tally t = {0};
    struct error err;
    enum status st;
    int i;

    make_cert(&key, &cert);
    s = server_start_tls(key, cert);
    http_result_init(&res);
    for (i = 0; i < 10; i++) {
        st = http_client_do(c,
                            &(struct http_call){.url = url_of(s, "/echo", url, sizeof(url)),
                                                .customize = trust_cert,
                                                .customize_ud = cert},
                            &res, &err);
        ck_assert_msg(st == ST_OK, "status %s: %s", status_name(st), err.message);
        ck_assert_int_eq(res.status, 200);
        ck_assert_str_eq(http_result_header(&res, "x-echo"), "yes");
    }
    ck_assert_int_eq(atomic_load(&s->connections), 1);

    /* An untrusted certificate fails at once: retrying cannot help. */
    st = http_client_do(
        c, &(struct http_call){.url = url_of(s, "/echo", url, sizeof(url)), .idempotent = true},
        &res, &err);
    ck_assert_msg(st == ST_UNAVAILABLE, "status %s: %s", status_name(st), err.message);
    ck_assert_int_eq(res.attempts, 1);

    m = http_multi_new(c, 4);
    for (i = 0; i < 20; i++)
        http_multi_add(m,
                       &(struct http_call){.url = url_of(s, "/sleep?ms=20", url, sizeof(url)),
                                           .customize = trust_cert,
                                           .customize_ud = cert},
                       on_done, &t);
    http_multi_run(m);
    ck_assert_msg(t.ok == 20, "ok %d of 20, last: %s", t.ok, t.last_message);
    ck_assert_int_le(atomic_load(&s->peak), 4);
    http_multi_free(m);

    http_result_release(&res);
    http_client_free(c);
    server_stop(s);
    free(key);
    free(cert);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("http_client");
    TCase *pure = tcase_create("pure");
    TCase *net = tcase_create("net");

    tcase_add_loop_test(pure, address_table, 0, ARRAY_SIZE(addresses));
    tcase_add_test(pure, address_other_families);
    tcase_add_test(pure, call_copy_is_deep);
    suite_add_tcase(s, pure);

    tcase_set_timeout(net, 30);
    tcase_add_test(net, get_and_post_round_trip);
    tcase_add_test(net, json_helper);
    tcase_add_test(net, total_timeout);
    tcase_add_test(net, connect_failure);
    tcase_add_test(net, invalid_urls);
    tcase_add_test(net, retry_503_honours_retry_after);
    tcase_add_test(net, retry_500_until_attempts_spent);
    tcase_add_test(net, no_retry_on_400);
    tcase_add_test(net, no_retry_when_not_idempotent);
    tcase_add_test(net, huge_retry_after_returns_promptly);
    tcase_add_test(net, response_cap);
    tcase_add_test(net, connection_reuse);
    tcase_add_test(net, concurrent_threads);
    tcase_add_test(net, block_private_addresses);
    tcase_add_test(net, multi_bounded_concurrency);
    tcase_add_test(net, multi_retries_and_errors);
    tcase_add_test(net, https_round_trip_and_reuse);
    suite_add_tcase(s, net);
    return s;
}
