/*
 * fs_proxy.c - firestore-proxy, a fault-injecting HTTP proxy in front of
 * the Firestore emulator, for tests and benchmarks of the Firestore client
 * and store.
 *
 * Every request is forwarded as received (method, path, query, body,
 * headers but the hop-by-hop ones) to FIRESTORE_TARGET and the answer
 * returned as is. Before forwarding, Google-shaped errors are injected at
 * the rates set by POST /proxy/control {"abortRate", "unavailableRate",
 * "exhaustedRate", "latencyMs"}, only where real Firestore could answer them:
 *
 *  - UNAVAILABLE (503) and RESOURCE_EXHAUSTED (429) on any API call;
 *  - ABORTED (409) on commit and on transactional reads (a batchGet, runQuery
 *    or runAggregationQuery carrying transaction/newTransaction). As on real
 *    Firestore an aborted transaction is dead: the proxy rolls it back on the
 *    emulator first (the emulator would otherwise keep its locks);
 *  - per write in batchWrite: each write may come back ABORTED (code 10)
 *    while the others are forwarded.
 *
 * An injected error means nothing was applied. GET /proxy/stats counts, per
 * method, the calls, the injected faults, the documents read (found
 * batchGet elements, runQuery documents, a get, one per aggregation) and
 * written (writes of a successful commit, applied batchWrite writes);
 * POST /proxy/stats/reset zeroes them. Paths under /emulator/ pass through
 * untouched and uncounted. Run with --help for the settings.
 */
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "core/config.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "http/client.h"
#include "http/server.h"

#define PROGRAM     "firestore-proxy"
#define HEADERS_MAX 64
#define TARGET_MAX  256

/* ---- settings ------------------------------------------------------------- */

struct proxy_settings {
    int64_t port;
    char *bind_address;
    char *target;
    char *port_file;
    char *log_level;
    double abort_rate;
    double unavailable_rate;
    double exhausted_rate;
    int64_t latency_ms;
    int64_t seed;
    int64_t max_body_bytes;
};

#define F(field) offsetof(struct proxy_settings, field)

/* clang-format off */
static const struct config_var proxy_table[] = {
    {"PORT", CFG_INT, "0", 0, 65535, NULL, "TCP port to listen on (0 picks one, see PROXY_PORT_FILE)", F(port), 0, 1},
    {"BIND_ADDRESS", CFG_STRING, "127.0.0.1", 0, 0, NULL, "address to listen on", F(bind_address), 0, 1},
    {"FIRESTORE_TARGET", CFG_STRING, NULL, 0, 0, NULL, "host:port (or http://host:port) of the Firestore emulator", F(target), CFG_REQUIRED, 1},
    {"PROXY_PORT_FILE", CFG_STRING, NULL, 0, 0, NULL, "file the bound port is written to once listening", F(port_file), 0, 1},
    {"LOG_LEVEL", CFG_ENUM, "WARNING", 0, 0, "DEBUG|INFO|NOTICE|WARNING|ERROR", "minimum log severity", F(log_level), 0, 1},
    {"PROXY_ABORT_RATE", CFG_DOUBLE, "0", 0, 1, NULL, "fraction of commits and transactional reads answered ABORTED", F(abort_rate), 0, 1},
    {"PROXY_UNAVAILABLE_RATE", CFG_DOUBLE, "0", 0, 1, NULL, "fraction of API calls answered UNAVAILABLE", F(unavailable_rate), 0, 1},
    {"PROXY_EXHAUSTED_RATE", CFG_DOUBLE, "0", 0, 1, NULL, "fraction of API calls answered RESOURCE_EXHAUSTED", F(exhausted_rate), 0, 1},
    {"PROXY_LATENCY_MS", CFG_INT, "0", 0, 600000, NULL, "latency added to every API call", F(latency_ms), 0, 1},
    {"PROXY_SEED", CFG_INT, "1", 0, 9007199254740991.0, NULL, "seed of the fault injection", F(seed), 0, 1},
    {"PROXY_MAX_BODY_BYTES", CFG_INT, "16777216", 1024, 268435456, NULL, "largest request body accepted", F(max_body_bytes), 0, 1},
};
/* clang-format on */

#undef F

/* ---- state ------------------------------------------------------------------ */

struct faults {
    double abort_rate, unavailable_rate, exhausted_rate;
    int64_t latency_ms;
};

struct proxy {
    char target[TARGET_MAX]; /* http://host:port */
    struct http_client *http;

    pthread_mutex_t lock; /* guards everything below */
    struct faults faults;
    uint64_t rng;
    json_t *stats; /* {"<method>": {"calls", "reads", "writes", "aborted", "unavailable", ...}} */
};

/* xorshift64*: deterministic per seed. */
static double proxy_random(struct proxy *p)
{
    uint64_t x;

    pthread_mutex_lock(&p->lock);
    x = p->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    p->rng = x;
    pthread_mutex_unlock(&p->lock);
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
}

static struct faults faults_get(struct proxy *p)
{
    struct faults f;

    pthread_mutex_lock(&p->lock);
    f = p->faults;
    pthread_mutex_unlock(&p->lock);
    return f;
}

static void stat_add(struct proxy *p, const char *method, const char *what, int64_t n)
{
    json_t *m, *v;

    if (n == 0 && strcmp(what, "calls") != 0)
        return;
    pthread_mutex_lock(&p->lock);
    m = json_object_get(p->stats, method);
    if (!m) {
        m = json_object();
        json_object_set_new(p->stats, method, m);
    }
    v = json_object_get(m, what);
    json_object_set_new(m, what, json_integer((v ? json_integer_value(v) : 0) + n));
    pthread_mutex_unlock(&p->lock);
}

/* ---- classification ------------------------------------------------------------ */

/*
 * The RPC a request is: the verb after ':' in the last path segment
 * ("commit", "batchGet", "runQuery"...), else from the HTTP method on a
 * document path ("get", "update", "delete", "create").
 */
static void rpc_of(const char *method, const char *target, char *out, size_t cap)
{
    size_t path_len = strcspn(target, "?");
    const char *slash = NULL, *colon = NULL, *p;

    for (p = target; p < target + path_len; p++) {
        if (*p == '/')
            slash = p;
    }
    for (p = slash ? slash : target; p < target + path_len; p++) {
        if (*p == ':')
            colon = p;
    }
    if (colon) {
        size_t n = (size_t)(target + path_len - colon - 1);

        if (n >= cap)
            n = cap - 1;
        memcpy(out, colon + 1, n);
        out[n] = '\0';
        return;
    }
    str_copy(out, cap,
             strcmp(method, "GET") == 0      ? "get"
             : strcmp(method, "PATCH") == 0  ? "update"
             : strcmp(method, "DELETE") == 0 ? "delete"
                                             : "create");
}

/* ---- answers -------------------------------------------------------------------- */

static void google_error(struct http_response *resp, int code, const char *status,
                         const char *message)
{
    http_respond_json(resp, code,
                      json_pack("{s:{s:i, s:s, s:s}}", "error", "code", code, "message", message,
                                "status", status));
}

/* ---- forwarding ------------------------------------------------------------------ */

struct fwd_headers {
    char *lines[HEADERS_MAX + 1];
    size_t n;
};

static void collect_header(void *ud, const char *name, const char *value)
{
    static const char *const hop[] = {"host",
                                      "content-length",
                                      "connection",
                                      "keep-alive",
                                      "expect",
                                      "te",
                                      "upgrade",
                                      "transfer-encoding",
                                      "accept-encoding",
                                      "proxy-connection",
                                      "proxy-authorization"};
    struct fwd_headers *h = ud;
    size_t i, len;

    for (i = 0; i < ARRAY_SIZE(hop); i++) {
        if (strcasecmp(name, hop[i]) == 0)
            return;
    }
    if (h->n >= HEADERS_MAX)
        return;
    len = strlen(name) + strlen(value) + 3;
    h->lines[h->n] = xmalloc(len);
    str_printf(h->lines[h->n], len, "%s: %s", name, value);
    h->n++;
}

static void headers_release(struct fwd_headers *h)
{
    size_t i;

    for (i = 0; i < h->n; i++)
        free(h->lines[i]);
    h->n = 0;
}

/*
 * Sends method target body to the emulator with the request's headers.
 * res is filled (caller releases). ST_OK when an answer came.
 */
static enum status forward(struct proxy *p, struct http_request *req, const char *body, size_t len,
                           struct http_result *res, struct error *err)
{
    struct fwd_headers h = {0};
    struct http_call call = {0};
    char url[TARGET_MAX + 8192];
    enum status s;

    if (!str_printf(url, sizeof(url), "%s%s", p->target, http_request_target(req)))
        return error_set(err, ST_TOO_LARGE, NULL, "request target is too long");
    http_request_each_header(req, collect_header, &h);
    h.lines[h.n] = NULL;
    call.method = http_request_method(req);
    call.url = url;
    call.headers = (const char *const *)h.lines;
    call.body = body;
    call.body_len = len;
    call.timeout_ms = 120000;
    call.max_response_bytes = 256u * 1024 * 1024;
    s = http_client_do(p->http, &call, res, err);
    headers_release(&h);
    return s;
}

static void respond_result(struct http_response *resp, const struct http_result *res)
{
    http_respond_bytes(resp, (int)res->status,
                       res->content_type[0] ? res->content_type : "application/json",
                       buf_str(&res->body), res->body.len);
}

/* Rolls back a transaction on the emulator, as real Firestore ends an aborted one. */
static void rollback_on_target(struct proxy *p, struct http_request *req, const char *tx)
{
    const char *headers[] = {"Authorization: Bearer owner", "Content-Type: application/json", NULL};
    const char *target = http_request_target(req), *docs = strstr(target, "/documents");
    char url[TARGET_MAX + 8192];
    struct http_call call = {0};
    struct http_result res;
    struct error err = {0};
    json_t *body;
    char *text;

    /* ".../databases/d/documents[/...]:verb" -> ".../databases/d/documents:rollback" */
    if (!docs || !str_printf(url, sizeof(url), "%s%.*s/documents:rollback", p->target,
                             (int)(docs - target), target))
        return;
    body = json_pack("{s:s}", "transaction", tx);
    text = json_dump_compact(body);
    json_decref(body);
    call.method = "POST";
    call.url = url;
    call.headers = headers;
    call.body = text;
    call.body_len = strlen(text);
    call.timeout_ms = 10000;
    http_result_init(&res);
    if (http_client_do(p->http, &call, &res, &err) != ST_OK || res.status != 200)
        log_debug("%s: rollback of an aborted transaction answered %ld", PROGRAM, res.status);
    http_result_release(&res);
    free(text);
}

/* Documents read, as Firestore would bill them, from a successful answer. */
static int64_t reads_of(const char *rpc, const json_t *answer)
{
    const json_t *el;
    int64_t n = 0;
    size_t i;

    if (strcmp(rpc, "get") == 0)
        return 1;
    if (strcmp(rpc, "runAggregationQuery") == 0)
        return 1;
    if (!json_is_array(answer))
        return 0;
    json_array_foreach(answer, i, el)
    {
        if (json_object_get(el, "found") || json_object_get(el, "document"))
            n++;
    }
    return n;
}

/* batchWrite with per-write ABORTED injected: forwards the others and merges the answers. */
static void batch_write(struct proxy *p, struct http_request *req, struct http_response *resp,
                        json_t *body, double abort_rate)
{
    json_t *writes = json_object_get(body, "writes"), *kept = json_array(), *results = json_array(),
           *statuses = json_array(), *answer = NULL, *w;
    size_t n = json_array_size(writes), i, k = 0;
    bool *aborted = xcalloc(n ? n : 1, sizeof(*aborted));
    struct http_result res;
    struct error err = {0};
    int64_t applied = 0, injected = 0;
    char *text = NULL;

    http_result_init(&res);
    json_array_foreach(writes, i, w)
    {
        aborted[i] = abort_rate > 0 && proxy_random(p) < abort_rate;
        if (aborted[i])
            injected++;
        else
            json_array_append(kept, w);
    }
    stat_add(p, "batchWrite", "aborted", injected);
    if (json_array_size(kept) > 0) {
        json_object_set(body, "writes", kept);
        text = json_dump_compact(body);
        if (forward(p, req, text, strlen(text), &res, &err) != ST_OK) {
            google_error(resp, 503, "UNAVAILABLE", err.message);
            goto out;
        }
        if (res.status != 200) {
            respond_result(resp, &res);
            goto out;
        }
        answer = json_parse(buf_str(&res.body), res.body.len, NULL);
    }
    for (i = 0; i < n; i++) {
        if (aborted[i]) {
            json_array_append_new(results, json_object());
            json_array_append_new(statuses, json_pack("{s:i, s:s}", "code", 10, "message",
                                                      "Aborted by firestore-proxy (injected)."));
            continue;
        }
        w = json_array_get(json_object_get(answer, "status"), k);
        if (json_int_or(w, "code", 0) == 0)
            applied++;
        json_array_append(statuses, w ? w : json_object());
        w = json_array_get(json_object_get(answer, "writeResults"), k);
        json_array_append(results, w ? w : json_object());
        k++;
    }
    stat_add(p, "batchWrite", "writes", applied);
    http_respond_json(resp, 200,
                      json_pack("{s:O, s:O}", "writeResults", results, "status", statuses));
out:
    http_result_release(&res);
    json_decref(answer);
    json_decref(kept);
    json_decref(results);
    json_decref(statuses);
    free(text);
    free(aborted);
}

static void handle_forward(struct http_request *req, struct http_response *resp, void *ud)
{
    struct proxy *p = ud;
    const char *target = http_request_target(req), *tx = NULL;
    struct faults f = faults_get(p);
    struct http_result res;
    struct error err = {0};
    json_t *body = NULL, *answer = NULL;
    char rpc[64];
    const char *data;
    size_t len;
    bool transactional;
    double r;

    data = http_request_body(req, &len);
    http_result_init(&res);
    if (str_starts_with(target, "/emulator/") || strcmp(target, "/") == 0) {
        if (forward(p, req, data, len, &res, &err) != ST_OK)
            google_error(resp, 503, "UNAVAILABLE", err.message);
        else
            respond_result(resp, &res);
        goto out;
    }
    rpc_of(http_request_method(req), target, rpc, sizeof(rpc));
    stat_add(p, rpc, "calls", 1);
    if (len > 0)
        body = json_parse(data, len, NULL);
    tx = json_string_value(json_object_get(body, "transaction"));
    transactional = tx || json_object_get(body, "newTransaction");
    if (f.latency_ms > 0)
        time_sleep_ms(f.latency_ms);

    /* One draw per call decides which fault, if any, this call gets. */
    r = proxy_random(p);
    if (r < f.unavailable_rate) {
        stat_add(p, rpc, "unavailable", 1);
        google_error(resp, 503, "UNAVAILABLE", "The service is currently unavailable (injected).");
        goto out;
    }
    r -= f.unavailable_rate;
    if (r < f.exhausted_rate) {
        stat_add(p, rpc, "exhausted", 1);
        google_error(resp, 429, "RESOURCE_EXHAUSTED", "Quota exceeded (injected).");
        goto out;
    }
    r -= f.exhausted_rate;
    if (r < f.abort_rate &&
        (strcmp(rpc, "commit") == 0 ||
         (transactional && (strcmp(rpc, "batchGet") == 0 || strcmp(rpc, "runQuery") == 0 ||
                            strcmp(rpc, "runAggregationQuery") == 0)))) {
        stat_add(p, rpc, "aborted", 1);
        if (tx)
            rollback_on_target(p, req, tx);
        google_error(resp, 409, "ABORTED", "Transaction aborted (injected).");
        goto out;
    }
    if (strcmp(rpc, "batchWrite") == 0 && json_is_object(body)) {
        batch_write(p, req, resp, body, f.abort_rate);
        goto out;
    }

    if (forward(p, req, data, len, &res, &err) != ST_OK) {
        google_error(resp, 503, "UNAVAILABLE", err.message);
        goto out;
    }
    if (res.status == 200) {
        answer = json_parse(buf_str(&res.body), res.body.len, NULL);
        stat_add(p, rpc, "reads", reads_of(rpc, answer));
        if (strcmp(rpc, "commit") == 0)
            stat_add(p, rpc, "writes", (int64_t)json_array_size(json_object_get(body, "writes")));
    }
    respond_result(resp, &res);
out:
    http_result_release(&res);
    json_decref(body);
    json_decref(answer);
}

/* ---- control and stats ------------------------------------------------------------ */

static json_t *faults_json(struct proxy *p)
{
    struct faults f = faults_get(p);

    return json_pack("{s:f, s:f, s:f, s:I}", "abortRate", f.abort_rate, "unavailableRate",
                     f.unavailable_rate, "exhaustedRate", f.exhausted_rate, "latencyMs",
                     (json_int_t)f.latency_ms);
}

static void handle_control_get(struct http_request *req, struct http_response *resp, void *ud)
{
    UNUSED(req);
    http_respond_json(resp, 200, faults_json(ud));
}

static void handle_control_set(struct http_request *req, struct http_response *resp, void *ud)
{
    static const char *const known[] = {"abortRate", "unavailableRate", "exhaustedRate",
                                        "latencyMs"};
    struct proxy *p = ud;
    const json_t *body = http_request_json(req);
    struct faults f = faults_get(p);
    struct error err = {0};
    const char *key;
    json_t *v;
    size_t i;

    if (!json_is_object(body)) {
        error_set(&err, ST_INVALID, NULL, "control body must be a json object");
        http_respond_error(resp, &err);
        return;
    }
    json_object_foreach((json_t *)body, key, v)
    {
        for (i = 0; i < ARRAY_SIZE(known) && strcmp(key, known[i]) != 0; i++)
            ;
        if (i == ARRAY_SIZE(known)) {
            error_set(&err, ST_INVALID, "unknown_field", "control: unknown field \"%.40s\"", key);
            http_respond_error(resp, &err);
            return;
        }
    }
    if (json_get_double(body, "abortRate", JSON_OPTIONAL, 0, 1, &f.abort_rate, &err) ||
        json_get_double(body, "unavailableRate", JSON_OPTIONAL, 0, 1, &f.unavailable_rate, &err) ||
        json_get_double(body, "exhaustedRate", JSON_OPTIONAL, 0, 1, &f.exhausted_rate, &err) ||
        json_get_int(body, "latencyMs", JSON_OPTIONAL, 0, 600000, &f.latency_ms, &err)) {
        http_respond_error(resp, &err);
        return;
    }
    if (f.abort_rate + f.unavailable_rate + f.exhausted_rate > 1) {
        error_set(&err, ST_INVALID, NULL, "control: the rates add up to more than 1");
        http_respond_error(resp, &err);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->faults = f;
    pthread_mutex_unlock(&p->lock);
    log_write(LOG_NOTICE, faults_json(p), "fault injection changed");
    http_respond_json(resp, 200, faults_json(p));
}

static void handle_stats(struct http_request *req, struct http_response *resp, void *ud)
{
    static const char *const kinds[] = {"calls",   "reads",       "writes",
                                        "aborted", "unavailable", "exhausted"};
    struct proxy *p = ud;
    json_t *methods, *totals = json_object(), *m;
    const char *name;
    size_t i;

    UNUSED(req);
    pthread_mutex_lock(&p->lock);
    methods = json_deep_copy(p->stats);
    pthread_mutex_unlock(&p->lock);
    for (i = 0; i < ARRAY_SIZE(kinds); i++)
        json_object_set_new(totals, kinds[i], json_integer(0));
    json_object_foreach(methods, name, m)
    {
        for (i = 0; i < ARRAY_SIZE(kinds); i++) {
            json_int_t v = json_integer_value(json_object_get(m, kinds[i]));

            if (!json_object_get(m, kinds[i]))
                json_object_set_new(m, kinds[i], json_integer(0));
            json_object_set_new(
                totals, kinds[i],
                json_integer(json_integer_value(json_object_get(totals, kinds[i])) + v));
        }
    }
    http_respond_json(resp, 200, json_pack("{s:o, s:o}", "methods", methods, "totals", totals));
}

static void handle_stats_reset(struct http_request *req, struct http_response *resp, void *ud)
{
    struct proxy *p = ud;

    UNUSED(req);
    pthread_mutex_lock(&p->lock);
    json_object_clear(p->stats);
    pthread_mutex_unlock(&p->lock);
    http_respond_json(resp, 200, json_pack("{s:b}", "reset", 1));
}

/* ---- main ------------------------------------------------------------------------- */

static bool write_port_file(const char *path, int port)
{
    char tmp[1024];
    FILE *f;

    if (!str_printf(tmp, sizeof(tmp), "%s.tmp", path))
        return false;
    f = fopen(tmp, "w");
    if (!f)
        return false;
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0)
        return false;
    return rename(tmp, path) == 0; /* readers never see a partial file */
}

int main(int argc, char **argv)
{
    static const char *const methods[] = {"GET", "POST", "PATCH", "DELETE", "PUT"};
    struct proxy_settings cfg;
    struct http_server_options opts;
    struct http_server *srv = NULL;
    struct proxy p;
    struct error err;
    enum log_severity sev = LOG_WARNING;
    sigset_t stop;
    int sig = 0, code = 1;
    size_t i;

    if (argc > 1) {
        bool help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;

        if (!help)
            fprintf(stderr, "%s: unknown argument \"%s\"\n", PROGRAM, argv[1]);
        config_print_help(help ? stdout : stderr, PROGRAM,
                          "a fault-injecting proxy in front of the Firestore emulator", proxy_table,
                          ARRAY_SIZE(proxy_table), 1);
        return help ? 0 : 2;
    }
    memset(&cfg, 0, sizeof(cfg));
    memset(&p, 0, sizeof(p));
    error_clear(&err);
    if (config_load(proxy_table, ARRAY_SIZE(proxy_table), 1, &cfg, config_getenv, NULL, &err) !=
        ST_OK) {
        fprintf(stderr, "%s: %s (see %s --help)\n", PROGRAM, err.message, PROGRAM);
        config_release(proxy_table, ARRAY_SIZE(proxy_table), &cfg);
        return 2;
    }
    if (cfg.abort_rate + cfg.unavailable_rate + cfg.exhausted_rate > 1) {
        fprintf(stderr, "%s: the fault rates add up to more than 1\n", PROGRAM);
        config_release(proxy_table, ARRAY_SIZE(proxy_table), &cfg);
        return 2;
    }
    log_severity_parse(cfg.log_level, &sev);
    log_init(PROGRAM, NULL, sev, STDOUT_FILENO);

    if (!str_printf(p.target, sizeof(p.target), "%s%s",
                    str_starts_with(cfg.target, "http://") ? "" : "http://", cfg.target)) {
        fprintf(stderr, "%s: FIRESTORE_TARGET is too long\n", PROGRAM);
        config_release(proxy_table, ARRAY_SIZE(proxy_table), &cfg);
        return 2;
    }
    while (p.target[0] && p.target[strlen(p.target) - 1] == '/')
        p.target[strlen(p.target) - 1] = '\0';
    pthread_mutex_init(&p.lock, NULL);
    p.stats = json_object();
    p.http = http_client_new(NULL);
    p.faults.abort_rate = cfg.abort_rate;
    p.faults.unavailable_rate = cfg.unavailable_rate;
    p.faults.exhausted_rate = cfg.exhausted_rate;
    p.faults.latency_ms = cfg.latency_ms;
    p.rng = (uint64_t)cfg.seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    if (p.rng == 0)
        p.rng = 1;

    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    memset(&opts, 0, sizeof(opts));
    opts.bind_address = cfg.bind_address;
    opts.port = (int)cfg.port;
    opts.max_body_bytes = (size_t)cfg.max_body_bytes;
    opts.thread_stack_bytes = 1 << 20;
    opts.service = PROGRAM;
    opts.access_log = sev <= LOG_INFO;
    srv = http_server_new(&opts, &err);
    if (!srv)
        goto fail;
    http_server_route(srv, "GET", "/proxy/control", 0, handle_control_get, &p);
    http_server_route(srv, "POST", "/proxy/control", HTTP_ROUTE_JSON, handle_control_set, &p);
    http_server_route(srv, "GET", "/proxy/stats", 0, handle_stats, &p);
    http_server_route(srv, "POST", "/proxy/stats/reset", 0, handle_stats_reset, &p);
    for (i = 0; i < ARRAY_SIZE(methods); i++) {
        http_server_route(srv, methods[i], "/", 0, handle_forward, &p);
        http_server_route(srv, methods[i], "/{path...}", 0, handle_forward, &p);
    }
    if (http_server_start(srv, &err) != ST_OK)
        goto fail;
    if (cfg.port_file && !write_port_file(cfg.port_file, http_server_port(srv))) {
        error_set(&err, ST_IO, NULL, "cannot write the port to %s", cfg.port_file);
        goto fail;
    }
    log_write(LOG_NOTICE,
              json_pack("{s:i, s:s, s:f, s:f, s:f, s:I}", "port", http_server_port(srv), "target",
                        p.target, "abortRate", cfg.abort_rate, "unavailableRate",
                        cfg.unavailable_rate, "exhaustedRate", cfg.exhausted_rate, "latencyMs",
                        (json_int_t)cfg.latency_ms),
              "%s listening on %s:%d", PROGRAM, cfg.bind_address, http_server_port(srv));

    while (sigwait(&stop, &sig) != 0)
        ;
    if (http_server_shutdown(srv, 2000) > 0) {
        fflush(stdout);
        _exit(0);
    }
    code = 0;
    goto out;
fail:
    fprintf(stderr, "%s: %s\n", PROGRAM, err.message);
out:
    http_server_free(srv);
    http_client_free(p.http);
    json_decref(p.stats);
    pthread_mutex_destroy(&p.lock);
    config_release(proxy_table, ARRAY_SIZE(proxy_table), &cfg);
    return code;
}
