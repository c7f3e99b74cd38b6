/*
 * The Cloud Tasks queue adapter: the exact CreateTask and DeleteTask
 * requests (against a scripted server that records them), the outcome
 * table with its retries (the JSON status beats the HTTP code), the access
 * token and its refresh after a 401, and against fake-cloudtasks: bounded
 * concurrency and throughput of enqueue_many, retries of injected errors,
 * duplicate deliveries.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>
#include <microhttpd.h>

#include "check_main.h"
#include "core/buf.h"
#include "core/codec.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "fake_proc.h"
#include "gcp/auth.h"
#include "http/client.h"
#include "queue/cloudtasks_queue.h"

#define PARENT   "projects/p-1/locations/us-central1/queues/q-1"
#define TARGET   "https://worker.example/api/batch/worker?x=1"
#define AUDIENCE "https://worker.example"
#define INVOKER  "tasks-invoker@p-1.iam.gserviceaccount.com"
#define REQS_MAX 4096
#define STEPS    4

/* ---- a scripted server: answers per task name, records every request ---- */

struct answer {
    int code;          /* 0 ends the script: 200 {} from then on */
    const char *rpc;   /* error status; NULL: raw used as the body */
    const char *raw;   /* a body of its own (HTML from a proxy...) */
    const char *after; /* Retry-After */
};

struct script {
    const char *task; /* short task id */
    struct answer steps[STEPS];
};

struct req {
    char method[8];
    char path[256];
    char task[128]; /* from the body's task.name or the path; "" unnamed */
    char auth[256];
    char ctype[64];
    char *body;
};

struct server {
    struct MHD_Daemon *d;
    char base[64];
    pthread_mutex_t mu;
    const struct script *scripts;
    size_t n_scripts;
    struct req *reqs;
    int n;
};

struct upload {
    struct buf body;
};

static struct server *S;
static struct http_client *C;

static void header_copy(struct MHD_Connection *c, const char *name, char *out, size_t cap)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);

    str_copy(out, cap, v ? v : "");
}

/* The short id of the task a request is about. */
static void task_of(const char *url, const char *body, char *out, size_t cap)
{
    json_t *root = json_loads(body, 0, NULL);
    const char *name = NULL, *slash;

    if (root)
        name = json_str_or(json_object_get(root, "task"), "name", NULL);
    if (!name && strstr(url, "/tasks/"))
        name = url;
    slash = name ? strrchr(name, '/') : NULL;
    str_copy(out, cap, slash ? slash + 1 : "");
    json_decref(root);
}

static const struct answer *script_step(struct server *s, const char *task, int seen)
{
    size_t i;

    for (i = 0; i < s->n_scripts; i++)
        if (strcmp(s->scripts[i].task, task) == 0)
            return seen < STEPS && s->scripts[i].steps[seen].code ? &s->scripts[i].steps[seen]
                                                                  : NULL;
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls)
{
    struct server *s = cls;
    struct upload *u = *con_cls;
    const struct answer *a = NULL;
    struct MHD_Response *r;
    enum MHD_Result ret;
    char body[512];
    int code = 200, seen = 0, i;

    UNUSED(version);
    if (!u) {
        u = xcalloc(1, sizeof(*u));
        buf_init(&u->body, 1 << 20);
        *con_cls = u;
        return MHD_YES;
    }
    if (*data_size) {
        buf_append(&u->body, data, *data_size);
        *data_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&s->mu);
    if (s->n < REQS_MAX) {
        struct req *q = &s->reqs[s->n++];

        str_copy(q->method, sizeof(q->method), method);
        str_copy(q->path, sizeof(q->path), url);
        header_copy(c, "Authorization", q->auth, sizeof(q->auth));
        header_copy(c, "Content-Type", q->ctype, sizeof(q->ctype));
        q->body = xstrdup(buf_str(&u->body));
        /* A push (fake-cloudtasks dispatching here) names its task in a header. */
        header_copy(c, "X-CloudTasks-TaskName", q->task, sizeof(q->task));
        if (!q->task[0])
            task_of(url, q->body, q->task, sizeof(q->task));
        for (i = 0; i < s->n - 1; i++)
            seen += strcmp(s->reqs[i].task, q->task) == 0;
        a = q->task[0] ? script_step(s, q->task, seen) : script_step(s, "", seen);
    }
    pthread_mutex_unlock(&s->mu);

    str_copy(body, sizeof(body), "{}");
    if (a) {
        code = a->code;
        if (a->rpc)
            str_printf(body, sizeof(body),
                       "{\"error\":{\"code\":%d,\"message\":\"scripted %s\",\"status\":\"%s\"}}",
                       code, a->rpc, a->rpc);
        else if (a->raw)
            str_copy(body, sizeof(body), a->raw);
    }
    r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type",
                            a && !a->rpc && a->raw ? "text/html" : "application/json");
    if (a && a->after)
        MHD_add_response_header(r, "Retry-After", a->after);
    ret = MHD_queue_response(c, (unsigned)code, r);
    MHD_destroy_response(r);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
    struct upload *u = *con_cls;

    UNUSED(cls);
    UNUSED(c);
    UNUSED(code);
    if (u) {
        buf_release(&u->body);
        free(u);
    }
    *con_cls = NULL;
}

static struct server *server_start(const struct script *scripts, size_t n)
{
    struct server *s = xcalloc(1, sizeof(*s));
    const union MHD_DaemonInfo *info;
    struct sockaddr_in sin;

    pthread_mutex_init(&s->mu, NULL);
    s->scripts = scripts;
    s->n_scripts = n;
    s->reqs = xcalloc(REQS_MAX, sizeof(*s->reqs));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0,
                            NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, &sin,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    ck_assert_ptr_nonnull(s->d);
    info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    ck_assert(str_printf(s->base, sizeof(s->base), "http://127.0.0.1:%d", (int)info->port));
    return s;
}

static void server_stop(struct server *s)
{
    int i;

    if (!s)
        return;
    MHD_stop_daemon(s->d);
    for (i = 0; i < s->n; i++)
        free(s->reqs[i].body);
    free(s->reqs);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int requests_for(struct server *s, const char *task)
{
    int i, n = 0;

    pthread_mutex_lock(&s->mu);
    for (i = 0; i < s->n; i++)
        n += strcmp(s->reqs[i].task, task) == 0;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static int requests_for_all(struct server *s)
{
    int n;

    pthread_mutex_lock(&s->mu);
    n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- fixtures ----------------------------------------------------------- */

static void setup(void)
{
    log_init("test_cloudtasks", NULL, LOG_CRITICAL, 2);
    C = http_client_new(NULL);
}

static void teardown(void)
{
    fake_proc_stop_all();
    server_stop(S);
    S = NULL;
    http_client_free(C);
    C = NULL;
}

static struct gcp_auth *auth_none(void)
{
    struct gcp_auth_options o = {.none = true};
    struct error err;
    struct gcp_auth *a = gcp_auth_new(&o, C, &err);

    ck_assert_ptr_nonnull(a);
    return a;
}

static void options_init(struct cloudtasks_options *o, const char *base, struct gcp_auth *auth)
{
    memset(o, 0, sizeof(*o));
    o->base_url = base;
    o->project = "p-1";
    o->location = "us-central1";
    o->queue = "q-1";
    o->target_url = TARGET;
    o->service_account = INVOKER;
    o->audience = AUDIENCE;
    o->dispatch_deadline_s = 600;
    o->auth = auth;
    o->client = C;
    o->max_attempts = 3;
    o->retry_base_ms = 1;
    o->retry_cap_ms = 20;
}

static struct queue *open_queue(const struct cloudtasks_options *o)
{
    struct error err;
    struct queue *q = queue_cloudtasks_open(o, &err);

    ck_assert_msg(q != NULL, "queue_cloudtasks_open: %s", err.message);
    ck_assert_str_eq(q->name, "cloudtasks");
    return q;
}

static struct task_spec spec(const char *name, const char *body, int64_t when)
{
    struct task_spec t;

    memset(&t, 0, sizeof(t));
    str_copy(t.name, sizeof(t.name), name);
    t.body = body;
    t.body_len = strlen(body);
    t.schedule_time = when;
    return t;
}

/* The keys of obj, sorted and comma-joined, to compare a whole shape at once. */
static const char *keys_of(const json_t *obj)
{
    static char out[512];
    const char *keys[32];
    const char *key;
    size_t n = 0, i, j;
    json_t *v;

    ck_assert_msg(json_is_object(obj), "not an object");
    json_object_foreach((json_t *)obj, key, v)
    {
        UNUSED(v);
        ck_assert_uint_lt(n, ARRAY_SIZE(keys));
        keys[n++] = key;
    }
    for (i = 1; i < n; i++)
        for (j = i; j > 0 && strcmp(keys[j - 1], keys[j]) > 0; j--) {
            const char *t = keys[j];

            keys[j] = keys[j - 1];
            keys[j - 1] = t;
        }
    out[0] = '\0';
    for (i = 0; i < n; i++) {
        size_t len = strlen(out);

        str_printf(out + len, sizeof(out) - len, "%s%s", i ? "," : "", keys[i]);
    }
    return out;
}

static json_t *request_json(int i)
{
    json_t *root;

    ck_assert_int_lt(i, S->n);
    root = json_loads(S->reqs[i].body, 0, NULL);
    ck_assert_msg(root != NULL, "request %d body is not json: %s", i, S->reqs[i].body);
    return root;
}

/* ---- request shapes ---------------------------------------------------- */

START_TEST(create_and_delete_requests_have_the_exact_shape)
{
    static const char body[] = "{\"kind\":\"item\",\"batchId\":\"b_1\",\"itemId\":\"00042\"}";
    struct cloudtasks_options o;
    struct gcp_auth *auth = auth_none();
    int64_t when = time_now_us() + 60 * INT64_C(1000000);
    char when_s[RFC3339_MAX];
    json_t *root, *task, *req;
    struct task_spec t;
    struct queue *q;
    struct error err;
    struct buf raw;
    const char *b64;

    S = server_start(NULL, 0);
    options_init(&o, S->base, auth);
    q = open_queue(&o);

    t = spec("abc-123_x", body, when);
    ck_assert_int_eq(queue_enqueue(q, &t, &err), ST_OK);
    ck_assert_int_eq(S->n, 1);
    ck_assert_str_eq(S->reqs[0].method, "POST");
    ck_assert_str_eq(S->reqs[0].path, "/v2/" PARENT "/tasks");
    ck_assert_str_eq(S->reqs[0].ctype, "application/json");
    ck_assert_str_eq(S->reqs[0].auth, ""); /* emulator mode: no token */
    root = request_json(0);
    task = json_object_get(root, "task");
    req = json_object_get(task, "httpRequest");
    ck_assert_str_eq(keys_of(root), "task");
    ck_assert_str_eq(keys_of(task), "dispatchDeadline,httpRequest,name,scheduleTime");
    ck_assert_str_eq(keys_of(req), "body,headers,httpMethod,oidcToken,url");
    ck_assert_str_eq(json_str_or(task, "name", ""), PARENT "/tasks/abc-123_x");
    ck_assert(time_format_rfc3339(when, when_s, sizeof(when_s)));
    ck_assert_str_eq(json_str_or(task, "scheduleTime", ""), when_s);
    ck_assert_str_eq(json_str_or(task, "dispatchDeadline", ""), "600s");
    ck_assert_str_eq(json_str_or(req, "url", ""), TARGET);
    ck_assert_str_eq(json_str_or(req, "httpMethod", ""), "POST");
    ck_assert_str_eq(keys_of(json_object_get(req, "headers")), "Content-Type");
    ck_assert_str_eq(json_str_or(json_object_get(req, "headers"), "Content-Type", ""),
                     "application/json");
    ck_assert_str_eq(keys_of(json_object_get(req, "oidcToken")), "audience,serviceAccountEmail");
    ck_assert_str_eq(json_str_or(json_object_get(req, "oidcToken"), "serviceAccountEmail", ""),
                     INVOKER);
    ck_assert_str_eq(json_str_or(json_object_get(req, "oidcToken"), "audience", ""), AUDIENCE);
    /* bytes are standard base64 with padding (gcp.md 0) */
    b64 = json_str_or(req, "body", "");
    ck_assert_uint_eq(strlen(b64) % 4, 0);
    ck_assert_uint_eq(strcspn(b64, "-_"), strlen(b64));
    buf_init(&raw, 4096);
    ck_assert_int_eq(base64_decode(&raw, b64, strlen(b64)), ST_OK);
    ck_assert_str_eq(buf_str(&raw), body);
    buf_release(&raw);
    json_decref(root);

    /* Unnamed, unscheduled, empty: those fields are left out, not sent empty. */
    t = spec("", "", 0);
    ck_assert_int_eq(queue_enqueue(q, &t, &err), ST_OK);
    root = request_json(1);
    task = json_object_get(root, "task");
    ck_assert_str_eq(keys_of(task), "dispatchDeadline,httpRequest");
    ck_assert_str_eq(keys_of(json_object_get(task, "httpRequest")),
                     "headers,httpMethod,oidcToken,url");
    json_decref(root);

    /* DELETE names the task in the path and sends no body. */
    ck_assert_int_eq(queue_remove(q, "abc-123_x", &err), ST_OK);
    ck_assert_str_eq(S->reqs[2].method, "DELETE");
    ck_assert_str_eq(S->reqs[2].path, "/v2/" PARENT "/tasks/abc-123_x");
    ck_assert_str_eq(S->reqs[2].body, "");

    /* Refused before any request: bad names, oversized bodies, far schedule times. */
    t = spec("bad name", "{}", 0);
    ck_assert_int_eq(queue_enqueue(q, &t, &err), ST_INVALID);
    {
        char *big = xmalloc(QUEUE_CT_BODY_MAX + 2);

        memset(big, 'x', QUEUE_CT_BODY_MAX + 1);
        big[QUEUE_CT_BODY_MAX + 1] = '\0';
        t = spec("big", big, 0);
        ck_assert_int_eq(queue_enqueue(q, &t, &err), ST_TOO_LARGE);
        free(big);
    }
    t = spec("far", "{}", time_now_us() + 31LL * 86400 * 1000000);
    ck_assert_int_eq(queue_enqueue(q, &t, &err), ST_INVALID);
    ck_assert_int_eq(S->n, 3);
    queue_close(q);

    /* Deadlines: fractions to the millisecond; 0 leaves the field out. */
    o.dispatch_deadline_s = 15.5;
    q = open_queue(&o);
    t = spec("d1", "{}", 0);
    ck_assert_int_eq(queue_enqueue(q, &t, &err), ST_OK);
    root = request_json(3);
    ck_assert_str_eq(json_str_or(json_object_get(root, "task"), "dispatchDeadline", ""), "15.5s");
    json_decref(root);
    queue_close(q);
    o.dispatch_deadline_s = 0;
    q = open_queue(&o);
    t = spec("d2", "{}", 0);
    ck_assert_int_eq(queue_enqueue(q, &t, &err), ST_OK);
    root = request_json(4);
    ck_assert_str_eq(keys_of(json_object_get(root, "task")), "httpRequest,name");
    json_decref(root);
    queue_close(q);
    gcp_auth_free(auth);
}
END_TEST

START_TEST(options_are_checked)
{
    struct cloudtasks_options o;
    struct gcp_auth *auth = auth_none();
    struct error err;

    options_init(&o, "http://127.0.0.1:1", auth);
#define REFUSED(field, value)                                                                      \
    do {                                                                                           \
        struct cloudtasks_options bad = o;                                                         \
        bad.field = value;                                                                         \
        error_clear(&err);                                                                         \
        ck_assert_msg(queue_cloudtasks_open(&bad, &err) == NULL, "%s accepted", #field);           \
        ck_assert_int_eq(err.status, ST_INVALID);                                                  \
    } while (0)
    REFUSED(project, NULL);
    REFUSED(project, "p/1");
    REFUSED(location, "");
    REFUSED(queue, "q_1");
    REFUSED(target_url, "ftp://worker.example/");
    REFUSED(audience, NULL);
    REFUSED(service_account, "");
    REFUSED(dispatch_deadline_s, 10);
    REFUSED(dispatch_deadline_s, 1801);
    REFUSED(max_in_flight, -1);
    REFUSED(auth, NULL);
    REFUSED(client, NULL);
#undef REFUSED
    queue_close(open_queue(&o));
    gcp_auth_free(auth);
}
END_TEST

START_TEST(token_is_sent_and_refreshed_after_401)
{
    static const struct script scripts[] = {
        {"needs-auth", {{401, "UNAUTHENTICATED", NULL, NULL}}},
        {"always-401",
         {{401, "UNAUTHENTICATED", NULL, NULL}, {401, "UNAUTHENTICATED", NULL, NULL}}},
    };
    struct cloudtasks_options o;
    struct gcp_auth_options ao;
    struct fake_proc md;
    struct gcp_auth *auth;
    struct task_spec t;
    struct queue *q;
    struct error err;
    char base[128];

    ck_assert(fake_proc_start(&md, FAKE_METADATA_BIN, NULL));
    memset(&ao, 0, sizeof(ao));
    ck_assert(str_printf(base, sizeof(base), "%s/computeMetadata/v1", md.base));
    ao.metadata_base = base;
    auth = gcp_auth_new(&ao, C, &err);
    S = server_start(scripts, ARRAY_SIZE(scripts));
    options_init(&o, S->base, auth);
    q = open_queue(&o);

    t = spec("needs-auth", "{}", 0);
    ck_assert_int_eq(queue_enqueue(q, &t, &err), ST_OK);
    ck_assert_int_eq(S->n, 2);
    ck_assert_str_eq(S->reqs[0].auth, "Bearer ya29.fake-metadata-1");
    ck_assert_str_eq(S->reqs[1].auth, "Bearer ya29.fake-metadata-2");

    /* Refused again with the fresh token: that is the answer, no loop. */
    t = spec("always-401", "{}", 0);
    ck_assert_int_eq(queue_enqueue(q, &t, &err), ST_UNAUTHENTICATED);
    ck_assert_int_eq(requests_for(S, "always-401"), 2);
    ck_assert_int_eq(fake_proc_stat(C, &md, "tokenRequests"), 3);
    queue_close(q);
    gcp_auth_free(auth);
    ck_assert(fake_proc_stop(&md));
}
END_TEST

START_TEST(no_token_fails_the_bulk_once)
{
    struct gcp_auth_options ao = {.metadata_base = "http://127.0.0.1:1/computeMetadata/v1"};
    struct task_spec tasks[50];
    enum status results[50];
    struct cloudtasks_options o;
    struct gcp_auth *auth;
    struct queue *q;
    struct error err;
    size_t i;

    auth = gcp_auth_new(&ao, C, &err);
    S = server_start(NULL, 0);
    options_init(&o, S->base, auth);
    q = open_queue(&o);
    for (i = 0; i < ARRAY_SIZE(tasks); i++) {
        char name[32];

        ck_assert(str_printf(name, sizeof(name), "no-token-%zu", i));
        tasks[i] = spec(name, "{}", 0);
    }
    ck_assert_int_eq(queue_enqueue_many(q, tasks, ARRAY_SIZE(tasks), results, &err),
                     ST_UNAVAILABLE);
    for (i = 0; i < ARRAY_SIZE(tasks); i++)
        ck_assert_int_eq(results[i], ST_UNAVAILABLE);
    ck_assert_msg(strstr(err.message, "metadata server") != NULL, "%s", err.message);
    /* One attempt at a token for the whole call, and nothing sent without one. */
    ck_assert_uint_eq(gcp_auth_fetch_count(auth), 1);
    ck_assert_int_eq(S->n, 0);
    queue_close(q);
    gcp_auth_free(auth);
}
END_TEST

/* ---- outcomes ---------------------------------------------------------- */

#define A(code, rpc)                                                                               \
    {                                                                                              \
        code, rpc, NULL, NULL                                                                      \
    }
#define RAW(code, body)                                                                            \
    {                                                                                              \
        code, NULL, body, NULL                                                                     \
    }
#define AFTER(code, rpc, after)                                                                    \
    {                                                                                              \
        code, rpc, NULL, after                                                                     \
    }

static const struct {
    struct script s;
    enum status want;
    int attempts;
} outcomes[] = {
    {{"t-ok", {{0}}}, ST_OK, 1},
    {{"t-exists", {A(409, "ALREADY_EXISTS")}}, ST_ALREADY_EXISTS, 1},
    {{"t-aborted", {A(409, "ABORTED")}}, ST_ABORTED, 1},
    {{"t-invalid", {A(400, "INVALID_ARGUMENT")}}, ST_INVALID, 1},
    {{"t-precondition", {A(400, "FAILED_PRECONDITION")}}, ST_FAILED_PRECONDITION, 1},
    {{"t-denied", {A(403, "PERMISSION_DENIED")}}, ST_PERMISSION_DENIED, 1},
    {{"t-no-queue", {A(404, "NOT_FOUND")}}, ST_NOT_FOUND, 1},
    /* the status beats the code */
    {{"t-400-exists", {A(400, "ALREADY_EXISTS")}}, ST_ALREADY_EXISTS, 1},
    {{"t-500-not-found", {A(500, "NOT_FOUND")}}, ST_NOT_FOUND, 1},
    {{"t-503-invalid", {A(503, "INVALID_ARGUMENT")}}, ST_INVALID, 1},
    /* transient: retried up to max_attempts (3) */
    {{"t-exhausted",
      {A(429, "RESOURCE_EXHAUSTED"), A(429, "RESOURCE_EXHAUSTED"), A(429, "RESOURCE_EXHAUSTED")}},
     ST_RATE_LIMITED,
     3},
    {{"t-unavailable", {A(503, "UNAVAILABLE"), A(503, "UNAVAILABLE"), A(503, "UNAVAILABLE")}},
     ST_UNAVAILABLE,
     3},
    {{"t-deadline",
      {A(504, "DEADLINE_EXCEEDED"), A(504, "DEADLINE_EXCEEDED"), A(504, "DEADLINE_EXCEEDED")}},
     ST_TIMEOUT,
     3},
    {{"t-internal", {A(500, "INTERNAL"), A(500, "INTERNAL"), A(500, "INTERNAL")}},
     ST_UNAVAILABLE,
     3},
    {{"t-unknown", {A(500, "UNKNOWN")}}, ST_UNAVAILABLE, 1},
    {{"t-proxy-502",
      {RAW(502, "<html>bad gateway</html>"), RAW(502, "<html>bad gateway</html>"),
       RAW(502, "<html>bad gateway</html>")}},
     ST_UNAVAILABLE,
     3},
    {{"t-html-404", {RAW(404, "<html>not here</html>")}}, ST_NOT_FOUND, 1},
    /* retried, then fine */
    {{"t-then-ok", {A(503, "UNAVAILABLE")}}, ST_OK, 2},
    {{"t-then-exists", {A(503, "UNAVAILABLE"), A(409, "ALREADY_EXISTS")}}, ST_ALREADY_EXISTS, 2},
    {{"t-after-0", {AFTER(429, "RESOURCE_EXHAUSTED", "0")}}, ST_OK, 2},
    /* a Retry-After beyond the retry cap is passed on instead of slept through */
    {{"t-after-30", {AFTER(429, "RESOURCE_EXHAUSTED", "30")}}, ST_RATE_LIMITED, 1},
};

static struct script *outcome_scripts(size_t *n)
{
    struct script *s = xcalloc(ARRAY_SIZE(outcomes) + 1, sizeof(*s));
    size_t i;

    for (i = 0; i < ARRAY_SIZE(outcomes); i++)
        s[i] = outcomes[i].s;
    /* The unnamed task (name ""): 503, never retried. */
    s[i].task = "";
    s[i].steps[0] = (struct answer)A(503, "UNAVAILABLE");
    *n = i + 1;
    return s;
}

START_TEST(outcome_table_one_by_one)
{
    struct cloudtasks_options o;
    struct gcp_auth *auth = auth_none();
    struct script *scripts;
    struct task_spec t;
    struct queue *q;
    struct error err;
    size_t i, n;

    scripts = outcome_scripts(&n);
    S = server_start(scripts, n);
    options_init(&o, S->base, auth);
    q = open_queue(&o);
    for (i = 0; i < ARRAY_SIZE(outcomes); i++) {
        enum status st;

        t = spec(outcomes[i].s.task, "{}", 0);
        error_clear(&err);
        st = queue_enqueue(q, &t, &err);
        ck_assert_msg(st == outcomes[i].want, "%s: %s, want %s (%s)", t.name, status_name(st),
                      status_name(outcomes[i].want), err.message);
        ck_assert_msg(requests_for(S, t.name) == outcomes[i].attempts, "%s: %d attempts, want %d",
                      t.name, requests_for(S, t.name), outcomes[i].attempts);
        if (st != ST_OK)
            ck_assert_msg(strstr(err.message, t.name) != NULL, "message: %s", err.message);
        if (strcmp(t.name, "t-after-30") == 0)
            ck_assert_int_eq(err.retry_after_s, 30);
        if (strcmp(t.name, "t-500-not-found") == 0)
            ck_assert_msg(strstr(err.message, "NOT_FOUND (http 500)") != NULL, "%s", err.message);
    }
    /* An unnamed create is never retried: a second attempt could duplicate it. */
    t = spec("", "{}", 0);
    ck_assert_int_eq(queue_enqueue(q, &t, &err), ST_UNAVAILABLE);
    ck_assert_int_eq(requests_for(S, ""), 1);
    queue_close(q);
    gcp_auth_free(auth);
    free(scripts);
}
END_TEST

START_TEST(outcome_table_in_bulk)
{
    size_t n_tasks = ARRAY_SIZE(outcomes);
    enum status *results = xcalloc(n_tasks, sizeof(*results));
    struct task_spec *tasks = xcalloc(n_tasks, sizeof(*tasks));
    struct cloudtasks_options o;
    struct gcp_auth *auth = auth_none();
    struct script *scripts;
    struct queue *q;
    struct error err;
    size_t i, n, first = n_tasks, failed = 0;
    enum status st;
    char want[64];

    scripts = outcome_scripts(&n);
    S = server_start(scripts, n);
    options_init(&o, S->base, auth);
    o.max_in_flight = 4;
    q = open_queue(&o);
    for (i = 0; i < n_tasks; i++) {
        tasks[i] = spec(outcomes[i].s.task, "{}", 0);
        if (outcomes[i].want != ST_OK && outcomes[i].want != ST_ALREADY_EXISTS) {
            failed++;
            first = first < i ? first : i;
        }
    }
    st = queue_enqueue_many(q, tasks, n_tasks, results, &err);
    for (i = 0; i < n_tasks; i++) {
        ck_assert_msg(results[i] == outcomes[i].want, "%s: %s, want %s", tasks[i].name,
                      status_name(results[i]), status_name(outcomes[i].want));
        ck_assert_msg(requests_for(S, tasks[i].name) == outcomes[i].attempts,
                      "%s: %d attempts, want %d", tasks[i].name, requests_for(S, tasks[i].name),
                      outcomes[i].attempts);
    }
    /* The overall status is the first failure's, and the message counts them. */
    ck_assert_int_eq(st, outcomes[first].want);
    ck_assert(
        str_printf(want, sizeof(want), "task %zu of %zu (%zu failed)", first, n_tasks, failed));
    ck_assert_msg(strstr(err.message, want) != NULL, "message: %s", err.message);
    queue_close(q);
    gcp_auth_free(auth);
    free(scripts);
    free(tasks);
    free(results);
}
END_TEST

START_TEST(remove_outcomes)
{
    static const struct script scripts[] = {
        {"gone", {A(404, "NOT_FOUND")}},
        {"denied", {A(403, "PERMISSION_DENIED")}},
        {"busy", {A(503, "UNAVAILABLE")}},
    };
    struct cloudtasks_options o;
    struct gcp_auth *auth = auth_none();
    struct queue *q;
    struct error err;

    S = server_start(scripts, ARRAY_SIZE(scripts));
    options_init(&o, S->base, auth);
    q = open_queue(&o);
    ck_assert_int_eq(queue_remove(q, "there", &err), ST_OK);
    ck_assert_int_eq(queue_remove(q, "gone", &err), ST_OK); /* NOT_FOUND: nothing to delete */
    ck_assert_int_eq(queue_remove(q, "denied", &err), ST_PERMISSION_DENIED);
    ck_assert_int_eq(queue_remove(q, "busy", &err), ST_OK); /* retried */
    ck_assert_int_eq(requests_for(S, "busy"), 2);
    ck_assert_int_eq(queue_remove(q, "no/such", &err), ST_INVALID);
    queue_close(q);
    gcp_auth_free(auth);
}
END_TEST

/* ---- against fake-cloudtasks ------------------------------------------------ */

struct bulk_run {
    struct task_spec *tasks;
    enum status *results;
    size_t n;
};

static void bulk_init(struct bulk_run *b, size_t n, const char *prefix)
{
    static const char body[] = "{\"kind\":\"item\",\"batchId\":\"b_0123456789\",\"itemId\":"
                               "\"00042\",\"generation\":1}";
    size_t i;

    b->n = n;
    b->tasks = xcalloc(n, sizeof(*b->tasks));
    b->results = xcalloc(n, sizeof(*b->results));
    for (i = 0; i < n; i++) {
        char key[64];

        ck_assert(str_printf(key, sizeof(key), "%s-%05zu-g1", prefix, i));
        queue_task_name(key, b->tasks[i].name);
        b->tasks[i].body = body;
        b->tasks[i].body_len = strlen(body);
    }
}

static void bulk_release(struct bulk_run *b)
{
    free(b->tasks);
    free(b->results);
}

static size_t bulk_count(const struct bulk_run *b, enum status st)
{
    size_t i, n = 0;

    for (i = 0; i < b->n; i++)
        n += b->results[i] == st;
    return n;
}

static void fake_options(struct cloudtasks_options *o, const struct fake_proc *f,
                         struct gcp_auth *auth, const char *target)
{
    options_init(o, f->base, auth);
    o->project = "test-project";
    o->location = "us-central1";
    o->queue = "batch-processing-queue"; /* the fake's default queue */
    o->target_url = target;
    o->max_attempts = 0; /* the defaults */
    o->retry_base_ms = 0;
    o->retry_cap_ms = 0;
}

START_TEST(bulk_enqueue_is_bounded_and_fast)
{
    static const char *const env[] = {"FAKE_LATENCY_MS=20", "FAKE_DISPATCH=0", NULL};
    struct cloudtasks_options o;
    struct gcp_auth *auth = auth_none();
    struct bulk_run b;
    struct fake_proc f;
    struct queue *q;
    struct error err;
    int64_t t0, peak;
    double s1, s2;
    enum status st;
    json_t *reset;
    long status;

    ck_assert(fake_proc_start(&f, FAKE_TASKS_BIN, env));
    fake_options(&o, &f, auth, "http://127.0.0.1:1/never-dispatched");
    o.max_in_flight = 32;
    q = open_queue(&o);
    bulk_init(&b, 2000, "b_0123456789");

    t0 = time_mono_us();
    st = queue_enqueue_many(q, b.tasks, b.n, b.results, &err);
    s1 = (double)(time_mono_us() - t0) / 1e6;
    ck_assert_msg(st == ST_OK, "enqueue_many: %s", err.message);
    ck_assert_uint_eq(bulk_count(&b, ST_OK), b.n);
    ck_assert_int_eq(fake_proc_stat(C, &f, "created"), 2000);
    peak = fake_proc_stat(C, &f, "createInFlightPeak");
    ck_assert_msg(peak <= 32 && peak >= 16, "peak of %lld requests in flight, bound 32",
                  (long long)peak);
    fprintf(stderr,
            "enqueue_many: 2000 tasks, 32 in flight, 20 ms per create: %.2f s, %.0f tasks/s "
            "(peak %lld in flight)\n",
            s1, 2000 / s1, (long long)peak);

    /* A repeated fan-out finds every name taken: success, nothing created. */
    reset = fake_proc_call(C, &f, "POST", "/fake/reset", NULL, &status);
    json_decref(reset);
    t0 = time_mono_us();
    ck_assert_int_eq(queue_enqueue_many(q, b.tasks, b.n, b.results, &err), ST_OK);
    s2 = (double)(time_mono_us() - t0) / 1e6;
    ck_assert_uint_eq(bulk_count(&b, ST_ALREADY_EXISTS), b.n);
    ck_assert_int_eq(fake_proc_stat(C, &f, "created"), 0);
    ck_assert_int_le(fake_proc_stat(C, &f, "createInFlightPeak"), 32);
    fprintf(stderr, "enqueue_many again: 2000 already existing in %.2f s\n", s2);
    /* 2000 / 32 * 20 ms = 1.25 s at best; allow for slow sanitizer builds. */
    ck_assert_msg(s1 < 8 && s2 < 8, "enqueue_many took %.2f s and %.2f s", s1, s2);
    queue_close(q);
    bulk_release(&b);

    /* Another bound is another peak. */
    o.max_in_flight = 4;
    q = open_queue(&o);
    bulk_init(&b, 100, "b_small");
    reset = fake_proc_call(C, &f, "POST", "/fake/reset", NULL, &status);
    json_decref(reset);
    ck_assert_int_eq(queue_enqueue_many(q, b.tasks, b.n, b.results, &err), ST_OK);
    peak = fake_proc_stat(C, &f, "createInFlightPeak");
    ck_assert_msg(peak <= 4 && peak >= 2, "peak %lld, bound 4", (long long)peak);
    queue_close(q);
    bulk_release(&b);
    gcp_auth_free(auth);
    ck_assert(fake_proc_stop(&f));
}
END_TEST

START_TEST(bulk_enqueue_retries_injected_errors)
{
    static const char *const env[] = {"FAKE_ERROR_RATE=0.3", "FAKE_DISPATCH=0", NULL};
    struct cloudtasks_options o;
    struct gcp_auth *auth = auth_none();
    struct bulk_run b;
    struct fake_proc f;
    struct queue *q;
    struct error err;
    enum status st;

    ck_assert(fake_proc_start(&f, FAKE_TASKS_BIN, env));
    fake_options(&o, &f, auth, "http://127.0.0.1:1/never-dispatched");
    o.max_in_flight = 16;
    o.max_attempts = 12; /* 0.3^12: no task fails them all */
    o.retry_base_ms = 5;
    o.retry_cap_ms = 50;
    q = open_queue(&o);
    bulk_init(&b, 300, "b_flaky");
    st = queue_enqueue_many(q, b.tasks, b.n, b.results, &err);
    ck_assert_msg(st == ST_OK, "enqueue_many: %s", err.message);
    /* A retry may find its task created by an attempt whose answer was lost: not here, the
     * fake fails before creating, so every task is created exactly once. */
    ck_assert_uint_eq(bulk_count(&b, ST_OK), b.n);
    ck_assert_int_eq(fake_proc_stat(C, &f, "created"), 300);
    ck_assert_int_gt(fake_proc_stat(C, &f, "injectedErrors"), 30);
    queue_close(q);
    bulk_release(&b);
    gcp_auth_free(auth);
    ck_assert(fake_proc_stop(&f));
}
END_TEST

START_TEST(fake_delivers_duplicates_when_asked)
{
    static const char *const env[] = {"FAKE_DUPLICATE_RATE=1", NULL};
    struct cloudtasks_options o;
    struct gcp_auth *auth = auth_none();
    struct bulk_run b;
    struct fake_proc f;
    struct queue *q;
    struct error err;
    char target[128];
    int64_t end;
    size_t i;

    S = server_start(NULL, 0); /* here the push target */
    ck_assert(fake_proc_start(&f, FAKE_TASKS_BIN, env));
    ck_assert(str_printf(target, sizeof(target), "%s/api/batch/worker", S->base));
    fake_options(&o, &f, auth, target);
    q = open_queue(&o);
    bulk_init(&b, 10, "b_dup");
    ck_assert_int_eq(queue_enqueue_many(q, b.tasks, b.n, b.results, &err), ST_OK);
    end = time_mono_ms() + 10000;
    while (requests_for_all(S) < 20 && time_mono_ms() < end)
        time_sleep_ms(20);
    ck_assert_int_eq(fake_proc_stat(C, &f, "succeeded"), 10);
    ck_assert_int_eq(fake_proc_stat(C, &f, "duplicates"), 10);
    for (i = 0; i < b.n; i++)
        ck_assert_int_eq(requests_for(S, b.tasks[i].name), 2);
    queue_close(q);
    bulk_release(&b);
    gcp_auth_free(auth);
    ck_assert(fake_proc_stop(&f));
}
END_TEST

/* fake-cloudtasks answers malformed requests as the API would (gcp.md 1.2, 1.9). */
START_TEST(fake_validates_like_the_api)
{
#define Q  "/v2/projects/test-project/locations/us-central1/queues/batch-processing-queue"
#define N  "projects/test-project/locations/us-central1/queues/batch-processing-queue/tasks/"
#define HR "\"httpRequest\":{\"url\":\"https://w.example/x\""
    static const struct {
        const char *path;
        const char *body;
        long code;
        const char *status;
    } cases[] = {
        {Q "/tasks", "{\"task\":{" HR "}}}", 200, NULL},
        {Q "/tasks", "{\"task\":{\"name\":\"" N "ok-1\"," HR "}}}", 200, NULL},
        {Q "/tasks", "{\"task\":{\"name\":\"" N "ok-1\"," HR "}}}", 409, "ALREADY_EXISTS"},
        {Q "/tasks", "{\"task\":{\"name\":\"" N "bad.id\"," HR "}}}", 400, "INVALID_ARGUMENT"},
        {Q "/tasks",
         "{\"task\":{\"name\":\"projects/test-project/locations/us-central1/queues/other/tasks/"
         "x\"," HR "}}}",
         400, "INVALID_ARGUMENT"},
        {Q "/tasks", "{\"task\":{\"name\":\"x\"," HR "}}}", 400, "INVALID_ARGUMENT"},
        {Q "/tasks", "{\"task\":{\"dispatchDeadline\":\"14s\"," HR "}}}", 400, "INVALID_ARGUMENT"},
        {Q "/tasks", "{\"task\":{\"dispatchDeadline\":\"1801s\"," HR "}}}", 400,
         "INVALID_ARGUMENT"},
        {Q "/tasks", "{\"task\":{\"dispatchDeadline\":\"1800s\"," HR "}}}", 200, NULL},
        {Q "/tasks", "{\"task\":{\"scheduleTime\":\"2099-01-01T00:00:00Z\"," HR "}}}", 400,
         "INVALID_ARGUMENT"},
        {Q "/tasks", "{\"task\":{\"scheduleTime\":\"tomorrow\"," HR "}}}", 400, "INVALID_ARGUMENT"},
        {Q "/tasks", "{\"task\":{" HR ",\"httpMethod\":\"GET\",\"body\":\"e30=\"}}}", 400,
         "INVALID_ARGUMENT"},
        {Q "/tasks", "{\"task\":{" HR ",\"httpMethod\":\"PUT\",\"body\":\"e30=\"}}}", 200, NULL},
        {Q "/tasks", "{\"task\":{" HR ",\"body\":\"not base64!\"}}}", 400, "INVALID_ARGUMENT"},
        {Q "/tasks",
         "{\"task\":{" HR ",\"oidcToken\":{\"serviceAccountEmail\":\"a@b.c\"},"
         "\"oauthToken\":{\"serviceAccountEmail\":\"a@b.c\"}}}}",
         400, "INVALID_ARGUMENT"},
        {Q "/tasks", "{\"task\":{" HR ",\"oidcToken\":{\"audience\":\"x\"}}}}", 400,
         "INVALID_ARGUMENT"},
        {Q "/tasks", "{\"task\":{\"foo\":1," HR "}}}", 400, "INVALID_ARGUMENT"},
        {Q "/tasks", "{\"task\":{" HR ",\"bodyy\":\"e30=\"}}}", 400, "INVALID_ARGUMENT"},
        {Q "/tasks", "{\"task\":{" HR "}},\"extra\":true}", 400, "INVALID_ARGUMENT"},
        {Q "/tasks", "{\"task\":{\"httpRequest\":{\"url\":\"ftp://w.example/\"}}}", 400,
         "INVALID_ARGUMENT"},
        {"/v2/projects/test-project/locations/us-central1/queues/nope/tasks",
         "{\"task\":{" HR "}}}", 404, "NOT_FOUND"},
        {"/v2/projects/other/locations/us-central1/queues/batch-processing-queue/tasks",
         "{\"task\":{" HR "}}}", 404, "NOT_FOUND"},
    };
    static const char *const env[] = {"FAKE_DISPATCH=0", NULL};
    struct fake_proc f;
    size_t i;

    ck_assert(fake_proc_start(&f, FAKE_TASKS_BIN, env));
    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        json_t *body = json_loads(cases[i].body, 0, NULL), *out;
        long code;

        ck_assert_msg(body != NULL, "case %zu: bad test json", i);
        out = fake_proc_call(C, &f, "POST", cases[i].path, body, &code);
        ck_assert_msg(code == cases[i].code, "case %zu: http %ld, want %ld", i, code,
                      cases[i].code);
        if (cases[i].status)
            ck_assert_str_eq(json_str_or(json_object_get(out, "error"), "status", ""),
                             cases[i].status);
        else
            ck_assert_ptr_nonnull(json_str_or(out, "name", NULL));
        json_decref(out);
        json_decref(body);
    }
    /* Zero counts are left out of the task (proto3 JSON), and deleting twice is NOT_FOUND. */
    {
        long code;
        json_t *out = fake_proc_call(C, &f, "GET", Q "/tasks/ok-1", NULL, &code);

        ck_assert_int_eq(code, 200);
        ck_assert_ptr_null(json_object_get(out, "dispatchCount"));
        ck_assert_str_eq(json_str_or(out, "view", ""), "BASIC");
        json_decref(out);
        out = fake_proc_call(C, &f, "DELETE", Q "/tasks/ok-1", NULL, &code);
        ck_assert_int_eq(code, 200);
        json_decref(out);
        out = fake_proc_call(C, &f, "DELETE", Q "/tasks/ok-1", NULL, &code);
        ck_assert_int_eq(code, 404);
        json_decref(out);
    }
    ck_assert(fake_proc_stop(&f));
#undef Q
#undef N
#undef HR
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("cloudtasks");
    TCase *tc = tcase_create("cloudtasks");

    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, create_and_delete_requests_have_the_exact_shape);
    tcase_add_test(tc, options_are_checked);
    tcase_add_test(tc, token_is_sent_and_refreshed_after_401);
    tcase_add_test(tc, no_token_fails_the_bulk_once);
    tcase_add_test(tc, outcome_table_one_by_one);
    tcase_add_test(tc, outcome_table_in_bulk);
    tcase_add_test(tc, remove_outcomes);
    tcase_add_test(tc, bulk_enqueue_is_bounded_and_fast);
    tcase_add_test(tc, bulk_enqueue_retries_injected_errors);
    tcase_add_test(tc, fake_delivers_duplicates_when_asked);
    tcase_add_test(tc, fake_validates_like_the_api);
    suite_add_tcase(s, tc);
    return s;
}
