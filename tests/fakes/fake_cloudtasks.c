/*
 * fake-cloudtasks - a local Cloud Tasks v2 REST endpoint for one queue that
 * validates CreateTask like the real API and really dispatches the tasks
 * (gcp.md section 1).
 *
 * API (queue path projects/$FAKE_PROJECT/locations/L/queues/Q, L and Q from
 * the queue definition):
 *   POST   /v2/{queue}/tasks               createTask
 *   GET    /v2/{queue}/tasks/{id}          getTask (?responseView=FULL for the body)
 *   DELETE /v2/{queue}/tasks/{id}          deleteTask
 *   GET    /oauth2/v3/certs                the fake Google issuer's JWKS
 * Control:
 *   GET  /fake/stats    counters (created, alreadyExists, rejected, injectedErrors,
 *                       deleted, dispatched, succeeded, failed, retried, dropped,
 *                       duplicates, pending, createInFlight, createInFlightPeak,
 *                       dispatchInFlight, dispatchInFlightPeak)
 *   POST /fake/config   {"latencyMs", "errorRate", "duplicateRate", "dispatch"}: any subset
 *   POST /fake/reset    zeroes the counters and peaks (tasks stay)
 *
 * Environment:
 *   PORT                  0 (default) picks a free port, printed as "PORT=<n>"
 *   FAKE_QUEUE_CONFIG     queue definition file (deploy/queue.json format); default:
 *                         Cloud Tasks' defaults for queue "batch-processing-queue"
 *   FAKE_PROJECT          project of the queue, default "test-project"
 *   FAKE_ISSUER_KEY       PEM private key of the fake Google issuer; default: generated
 *   FAKE_LATENCY_MS       added to every createTask (default 0)
 *   FAKE_ERROR_RATE       share of createTask answered 503 UNAVAILABLE or 429
 *                         RESOURCE_EXHAUSTED before anything is created (default 0)
 *   FAKE_DUPLICATE_RATE   share of answered pushes delivered a second time (default 0)
 *   FAKE_DISPATCH         0 stores tasks without dispatching them (default 1)
 *   FAKE_DISPATCH_THREADS concurrent pushes; default min(maxConcurrentDispatches, 32)
 *
 * Dispatch: at scheduleTime, within the queue's rate limit and as many at a
 * time as there are dispatch threads, each task is sent to
 * httpRequest.url with its method, body and headers (Host, Content-Length,
 * User-Agent, X-Google-*, X-AppEngine-* and X-CloudTasks-* dropped), plus
 * User-Agent: Google-Cloud-Tasks, X-CloudTasks-QueueName, -TaskName,
 * -TaskRetryCount, -TaskExecutionCount, -TaskETA ("<s>.<6 digits>"),
 * -TaskPreviousResponse (after an answered attempt) and, for oidcToken,
 * Authorization: Bearer <ID token> from the fake Google issuer (aud =
 * oidcToken.audience or the url, email = serviceAccountEmail). A 2xx ends
 * the task; anything else (or no answer within dispatchDeadline) is
 * retried after backoff_cloud_tasks() (or a longer Retry-After on 429/503)
 * while backoff_should_retry() allows, then dropped. Finished, dropped and
 * deleted names stay taken for an hour (ALREADY_EXISTS).
 *
 * Not modelled: other queues, queue administration, App Engine targets,
 * unknown query parameters (the project's server gives no list of them).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "core/backoff.h"
#include "core/buf.h"
#include "core/codec.h"
#include "core/id.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "fake_common.h"
#include "http/client.h"
#include "http/server.h"
#include "queue/queue_config.h"

#define NAME "fake-cloudtasks"

#define REQUEST_MAX       (2 << 20)
#define BODY_MAX          (100 * 1024) /* task size documented in the API (gcp.md 1.2) */
#define HEADERS_BYTES_MAX (80 * 1024)
#define URL_MAX           2083
#define TASK_ID_MAX       500
#define DEDUP_WINDOW_US   (3600LL * 1000000)
#define SCHEDULE_AHEAD_US (30LL * 86400 * 1000000)
#define DEADLINE_MIN_S    15.0
#define DEADLINE_MAX_S    1800.0
#define DEADLINE_DEFAULT  600.0
#define BUCKETS           65536
#define THREADS_MAX       64
#define PUSH_HEADERS_MAX  64
#define IDLE_WAIT_MS      100
#define BURST_SECONDS     0.2 /* as the local dispatcher: 500/s -> 100 */

enum task_state { TASK_SCHEDULED, TASK_RUNNING, TASK_DONE };

struct task {
    struct task *hnext;
    char *name; /* full resource name */
    const char *id;
    char *url;
    char *method;
    json_t *headers; /* as created */
    char *body;
    size_t body_len;
    char *oidc_email, *oidc_audience;
    char *oauth_email, *oauth_scope;
    double deadline_s;
    int64_t create_us;
    int64_t schedule_us; /* of the next attempt */
    int64_t first_attempt_us;
    int64_t last_attempt_us;
    int dispatch_count;
    int response_count;
    long last_status;
    enum task_state state;
    bool deleted;
    int64_t gone_us; /* when it finished, was dropped or deleted */
    size_t heap_i;
};

struct stats {
    int64_t created, already_exists, rejected, injected_errors, deleted;
    int64_t dispatched, succeeded, failed, retried, dropped, duplicates;
    int64_t create_in_flight, create_peak, dispatch_in_flight, dispatch_peak;
};

struct fake {
    struct queue_config qc;
    char project[128];
    struct fake_google *google;
    struct http_client *client;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct task *buckets[BUCKETS];
    struct task **heap;
    size_t heap_n, heap_cap;
    size_t pending; /* scheduled or running */
    bool stopping;

    int64_t latency_ms;
    double error_rate;
    double duplicate_rate;
    bool dispatch;

    double rate, burst, tokens;
    int64_t refill_us;

    struct stats st;
    pthread_t threads[THREADS_MAX];
    int n_threads;
};

/* ---- tasks: a hash by name and a heap by schedule time ------------------- */

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static struct task *task_find(struct fake *f, const char *name)
{
    struct task *t;

    for (t = f->buckets[name_hash(name) % BUCKETS]; t; t = t->hnext)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

static void task_clear(struct task *t)
{
    free(t->name);
    free(t->url);
    free(t->method);
    json_decref(t->headers);
    free(t->body);
    free(t->oidc_email);
    free(t->oidc_audience);
    free(t->oauth_email);
    free(t->oauth_scope);
}

static bool heap_less(const struct task *a, const struct task *b)
{
    return a->schedule_us < b->schedule_us;
}

static void heap_set(struct fake *f, size_t i, struct task *t)
{
    f->heap[i] = t;
    t->heap_i = i;
}

static void heap_up(struct fake *f, size_t i)
{
    struct task *t = f->heap[i];

    while (i > 0 && heap_less(t, f->heap[(i - 1) / 2])) {
        heap_set(f, i, f->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(f, i, t);
}

static void heap_down(struct fake *f, size_t i)
{
    struct task *t = f->heap[i];

    for (;;) {
        size_t c = 2 * i + 1;

        if (c >= f->heap_n)
            break;
        if (c + 1 < f->heap_n && heap_less(f->heap[c + 1], f->heap[c]))
            c++;
        if (!heap_less(f->heap[c], t))
            break;
        heap_set(f, i, f->heap[c]);
        i = c;
    }
    heap_set(f, i, t);
}

static void heap_push(struct fake *f, struct task *t)
{
    if (f->heap_n == f->heap_cap) {
        f->heap_cap = f->heap_cap ? f->heap_cap * 2 : 1024;
        f->heap = xrealloc(f->heap, f->heap_cap * sizeof(*f->heap));
    }
    heap_set(f, f->heap_n++, t);
    heap_up(f, f->heap_n - 1);
}

static void heap_remove(struct fake *f, struct task *t)
{
    size_t i = t->heap_i;

    ASSERT(i < f->heap_n && f->heap[i] == t);
    f->heap_n--;
    if (i == f->heap_n)
        return;
    heap_set(f, i, f->heap[f->heap_n]);
    heap_up(f, i);
    heap_down(f, f->heap[i]->heap_i);
}

/* Ends a task: its name stays taken for the de-duplication window. */
static void task_finish(struct fake *f, struct task *t, int64_t now)
{
    if (t->state == TASK_SCHEDULED)
        heap_remove(f, t);
    if (t->state != TASK_DONE)
        f->pending--;
    t->state = TASK_DONE;
    t->gone_us = now;
}

/* ---- small helpers ------------------------------------------------------ */

static json_t *time_json(int64_t us)
{
    char s[RFC3339_MAX];

    if (!time_format_rfc3339(us, s, sizeof(s)))
        return json_null();
    return json_string(s);
}

static void peak(int64_t *cur, int64_t *top, int delta)
{
    *cur += delta;
    if (*cur > *top)
        *top = *cur;
}

static bool id_chars_ok(const char *s, size_t max)
{
    size_t n = strlen(s);

    return n > 0 && n <= max &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

/* The queue in the request path, or NULL after answering NOT_FOUND. */
static bool queue_matches(struct fake *f, struct http_request *req, struct http_response *resp)
{
    const char *p = http_request_param(req, "project");
    const char *l = http_request_param(req, "location");
    const char *q = http_request_param(req, "queue");

    if (p && l && q && strcmp(p, f->project) == 0 && strcmp(l, f->qc.location) == 0 &&
        strcmp(q, f->qc.name) == 0)
        return true;
    fake_respond_rpc_error(resp, 404, "NOT_FOUND",
                           "Queue does not exist. If you just created the queue, wait at least a "
                           "minute for the queue to initialize.");
    return false;
}

static json_t *task_json(const struct task *t, bool full)
{
    json_t *o, *req;
    char d[32];

    req = json_pack("{s:s, s:s}", "url", t->url, "httpMethod", t->method);
    if (json_object_size(t->headers) > 0)
        json_object_set(req, "headers", t->headers);
    if (full && t->body_len > 0) {
        struct buf b;

        buf_init(&b, base64_encoded_len(t->body_len, B64_STD) + 1);
        base64_encode(&b, t->body, t->body_len, B64_STD);
        json_object_set_new(req, "body", json_string(buf_str(&b)));
        buf_release(&b);
    }
    if (t->oidc_email)
        json_object_set_new(req, "oidcToken",
                            json_pack("{s:s, s:s}", "serviceAccountEmail", t->oidc_email,
                                      "audience", t->oidc_audience));
    if (t->oauth_email)
        json_object_set_new(req, "oauthToken",
                            json_pack("{s:s, s:s}", "serviceAccountEmail", t->oauth_email, "scope",
                                      t->oauth_scope));
    duration_format(t->deadline_s, d, sizeof(d));
    o = json_pack("{s:s, s:o, s:o, s:s, s:o, s:s}", "name", t->name, "scheduleTime",
                  time_json(t->schedule_us), "createTime", time_json(t->create_us),
                  "dispatchDeadline", d, "httpRequest", req, "view", full ? "FULL" : "BASIC");
    /* proto3 JSON: zero counts are omitted (gcp.md 1.9). */
    if (t->dispatch_count > 0)
        json_object_set_new(o, "dispatchCount", json_integer(t->dispatch_count));
    if (t->response_count > 0)
        json_object_set_new(o, "responseCount", json_integer(t->response_count));
    if (t->first_attempt_us > 0)
        json_object_set_new(o, "firstAttempt",
                            json_pack("{s:o}", "dispatchTime", time_json(t->first_attempt_us)));
    return o;
}

/* ---- createTask validation ---------------------------------------------- */

/* A rejected request: the answer is 400 INVALID_ARGUMENT with msg. */
struct reject {
    char msg[512];
};

static bool refuse(struct reject *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool refuse(struct reject *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
    va_end(ap);
    return false;
}

/* Google's front end refuses fields it does not know (gcp.md 1.9). */
static bool known_fields(const json_t *obj, const char *const *allowed, const char *where,
                         struct reject *r)
{
    const char *key;
    json_t *v;

    json_object_foreach((json_t *)obj, key, v)
    {
        size_t i;

        UNUSED(v);
        for (i = 0; allowed[i]; i++)
            if (strcmp(key, allowed[i]) == 0)
                break;
        if (!allowed[i])
            return refuse(r,
                          "Invalid JSON payload received. Unknown name \"%.64s\" at '%s': "
                          "Cannot find field.",
                          key, where);
    }
    return true;
}

static bool get_object(const json_t *obj, const char *field, const char *where, json_t **out,
                       struct reject *r)
{
    json_t *v = json_object_get(obj, field);

    *out = NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_object(v))
        return refuse(r, "Invalid value at '%s.%s': expected an object", where, field);
    *out = v;
    return true;
}

static bool get_string(const json_t *obj, const char *field, const char *where, const char **out,
                       struct reject *r)
{
    json_t *v = json_object_get(obj, field);

    *out = NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v))
        return refuse(r, "Invalid value at '%s.%s' (TYPE_STRING)", where, field);
    *out = json_string_value(v);
    return true;
}

static bool header_value_ok(const char *v)
{
    for (; *v; v++)
        if (*v == '\r' || *v == '\n' || *v == '\0')
            return false;
    return true;
}

/* Fills t from the request (t zeroed) or says why the API would refuse it. */
static bool parse_create(const char *parent, const json_t *root, struct task *t, struct reject *r)
{
    static const char *const top_fields[] = {"task", "responseView", NULL};
    static const char *const task_fields[] = {
        "name",        "scheduleTime",  "dispatchDeadline",     "httpRequest",
        "createTime",  "dispatchCount", "responseCount",        "firstAttempt",
        "lastAttempt", "view",          "appEngineHttpRequest", NULL};
    static const char *const req_fields[] = {"url",        "httpMethod", "headers", "body",
                                             "oauthToken", "oidcToken",  NULL};
    static const char *const oidc_fields[] = {"serviceAccountEmail", "audience", NULL};
    static const char *const oauth_fields[] = {"serviceAccountEmail", "scope", NULL};
    static const char *const methods[] = {"POST",   "GET",   "HEAD",    "PUT",
                                          "DELETE", "PATCH", "OPTIONS", NULL};
    json_t *task, *req, *headers, *oidc, *oauth, *app;
    const char *s, *key;
    int64_t now = time_now_us();
    size_t i, header_bytes = 0;
    json_t *v;

    if (!json_is_object(root))
        return refuse(r, "Invalid JSON payload received: the body is not an object");
    if (!known_fields(root, top_fields, "", r) || !get_object(root, "task", "", &task, r))
        return false;
    if (!get_string(root, "responseView", "", &s, r))
        return false;
    if (s && strcmp(s, "BASIC") != 0 && strcmp(s, "FULL") != 0 &&
        strcmp(s, "VIEW_UNSPECIFIED") != 0)
        return refuse(r,
                      "Invalid value at 'response_view' (type.googleapis.com/"
                      "google.cloud.tasks.v2.Task.View), \"%.32s\"",
                      s);
    if (!task)
        return refuse(r, "Task is required.");
    if (!known_fields(task, task_fields, "task", r))
        return false;
    if (!get_object(task, "appEngineHttpRequest", "task", &app, r) ||
        !get_object(task, "httpRequest", "task", &req, r))
        return false;
    if (app)
        return refuse(r, "fake: only HTTP target tasks (httpRequest) are supported");
    if (!req)
        return refuse(r, "Task must have an httpRequest.");

    /* name: projects/P/locations/L/queues/Q/tasks/TASK_ID, under the queue of the path */
    if (!get_string(task, "name", "task", &s, r))
        return false;
    if (s) {
        size_t plen = strlen(parent);

        if (strncmp(s, parent, plen) != 0 || strncmp(s + plen, "/tasks/", 7) != 0)
            return refuse(r, "Task name \"%.200s\" is not under the queue \"%s\".", s, parent);
        if (!id_chars_ok(s + plen + 7, TASK_ID_MAX))
            return refuse(r,
                          "Task name \"%.200s\" is invalid: TASK_ID can contain only letters "
                          "([A-Za-z]), numbers ([0-9]), hyphens (-), or underscores (_); "
                          "maximum length is 500 characters.",
                          s);
        t->name = xstrdup(s);
    } else {
        char id[20];
        uint8_t rnd[19];
        char name[1024];

        random_bytes(rnd, sizeof(rnd));
        for (i = 0; i < sizeof(rnd); i++)
            id[i] = (char)('0' + rnd[i] % 10);
        id[0] = id[0] == '0' ? '1' : id[0];
        id[sizeof(id) - 1] = '\0';
        str_printf(name, sizeof(name), "%s/tasks/%s", parent, id);
        t->name = xstrdup(name);
    }
    t->id = strrchr(t->name, '/') + 1;

    /* scheduleTime: unset or past means now; at most 30 days ahead */
    t->schedule_us = now;
    if (!get_string(task, "scheduleTime", "task", &s, r))
        return false;
    if (s) {
        int64_t when;

        if (!time_parse_rfc3339(s, &when))
            return refuse(r,
                          "Invalid value at 'task.schedule_time' (type.googleapis.com/"
                          "google.protobuf.Timestamp), Field 'scheduleTime', Invalid time "
                          "format: \"%.40s\"",
                          s);
        if (when > now + SCHEDULE_AHEAD_US)
            return refuse(r, "The task's schedule_time is more than 30 days in the future.");
        if (when > now)
            t->schedule_us = when;
    }

    /* dispatchDeadline: [15s, 30min] for HTTP tasks */
    t->deadline_s = DEADLINE_DEFAULT;
    if (!get_string(task, "dispatchDeadline", "task", &s, r))
        return false;
    if (s) {
        if (!duration_parse(s, &t->deadline_s))
            return refuse(r,
                          "Invalid value at 'task.dispatch_deadline' (type.googleapis.com/"
                          "google.protobuf.Duration), Field 'dispatchDeadline', Illegal "
                          "duration format: \"%.40s\"",
                          s);
        if (t->deadline_s < DEADLINE_MIN_S || t->deadline_s > DEADLINE_MAX_S)
            return refuse(r,
                          "The dispatch deadline must be between 15 seconds and 30 minutes "
                          "for HTTP tasks; got %.40s.",
                          s);
    }

    /* httpRequest */
    if (!known_fields(req, req_fields, "task.httpRequest", r))
        return false;
    if (!get_string(req, "url", "task.httpRequest", &s, r))
        return false;
    if (!s || !*s)
        return refuse(r, "HttpRequest.url is required.");
    if (strlen(s) > URL_MAX || !(str_starts_with(s, "http://") || str_starts_with(s, "https://")))
        return refuse(r, "HttpRequest.url must start with 'http://' or 'https://' and be at most "
                         "2083 characters long.");
    t->url = xstrdup(s);
    if (!get_string(req, "httpMethod", "task.httpRequest", &s, r))
        return false;
    s = s ? s : "POST";
    for (i = 0; methods[i]; i++)
        if (strcmp(s, methods[i]) == 0)
            break;
    if (!methods[i])
        return refuse(r,
                      "Invalid value at 'task.http_request.http_method' "
                      "(type.googleapis.com/google.cloud.tasks.v2.HttpMethod), \"%.20s\"",
                      s);
    t->method = xstrdup(s);

    if (!get_object(req, "headers", "task.httpRequest", &headers, r))
        return false;
    t->headers = headers ? json_deep_copy(headers) : json_object();
    json_object_foreach(t->headers, key, v)
    {
        if (!json_is_string(v))
            return refuse(r, "Invalid value at 'task.http_request.headers[%.64s]' (TYPE_STRING)",
                          key);
        if (!key[0] || strpbrk(key, " :\r\n\t") || !header_value_ok(json_string_value(v)))
            return refuse(r, "Invalid header \"%.64s\".", key);
        header_bytes += strlen(key) + strlen(json_string_value(v)) + 4;
    }
    if (header_bytes >= HEADERS_BYTES_MAX)
        return refuse(r, "The task's headers exceed 80KB.");

    if (!get_string(req, "body", "task.httpRequest", &s, r))
        return false;
    if (s) {
        struct buf b;

        buf_init(&b, BODY_MAX);
        if (base64_decode(&b, s, strlen(s)) != ST_OK) {
            bool too_large = strlen(s) > base64_encoded_len(BODY_MAX, B64_STD);

            buf_release(&b);
            if (too_large)
                return refuse(r, "Task size is too large: the maximum task size is 100KB.");
            return refuse(r,
                          "Invalid value at 'task.http_request.body' (TYPE_BYTES), Base64 "
                          "decoding failed for \"%.20s...\"",
                          s);
        }
        if (b.len > 0 && strcmp(t->method, "POST") != 0 && strcmp(t->method, "PUT") != 0 &&
            strcmp(t->method, "PATCH") != 0) {
            buf_release(&b);
            return refuse(r,
                          "Body can only be set for POST, PUT and PATCH requests; the method "
                          "is %s.",
                          t->method);
        }
        t->body = buf_take(&b, &t->body_len);
    }

    if (!get_object(req, "oidcToken", "task.httpRequest", &oidc, r) ||
        !get_object(req, "oauthToken", "task.httpRequest", &oauth, r))
        return false;
    if (oidc && oauth)
        return refuse(r, "Only one of oauth_token and oidc_token can be set (authorization_header "
                         "is a oneof).");
    if (oidc) {
        if (!known_fields(oidc, oidc_fields, "task.httpRequest.oidcToken", r) ||
            !get_string(oidc, "serviceAccountEmail", "task.httpRequest.oidcToken", &s, r))
            return false;
        if (!s || !strchr(s, '@'))
            return refuse(r, "OidcToken.service_account_email must be a service account email.");
        t->oidc_email = xstrdup(s);
        if (!get_string(oidc, "audience", "task.httpRequest.oidcToken", &s, r))
            return false;
        /* The default audience is the whole URL, query included (gcp.md 1.9). */
        t->oidc_audience = xstrdup(s && *s ? s : t->url);
    }
    if (oauth) {
        if (!known_fields(oauth, oauth_fields, "task.httpRequest.oauthToken", r) ||
            !get_string(oauth, "serviceAccountEmail", "task.httpRequest.oauthToken", &s, r))
            return false;
        if (!s || !strchr(s, '@'))
            return refuse(r, "OAuthToken.service_account_email must be a service account "
                             "email.");
        t->oauth_email = xstrdup(s);
        if (!get_string(oauth, "scope", "task.httpRequest.oauthToken", &s, r))
            return false;
        t->oauth_scope = xstrdup(s && *s ? s : "https://www.googleapis.com/auth/cloud-platform");
    }
    return true;
}

/* ---- createTask, getTask, deleteTask ------------------------------------- */

static void parent_of(struct fake *f, char *out, size_t cap)
{
    str_printf(out, cap, "projects/%s/locations/%s/queues/%s", f->project, f->qc.location,
               f->qc.name);
}

static void create_task(struct fake *f, struct http_request *req, struct http_response *resp)
{
    const char *view = NULL;
    struct task parsed, *t;
    char parent[512];
    struct reject r;
    int64_t now;
    double injected;

    pthread_mutex_lock(&f->mu);
    injected = f->error_rate;
    pthread_mutex_unlock(&f->mu);
    if (injected > 0 && fake_random() < injected) {
        bool busy = fake_random() < 0.5;

        pthread_mutex_lock(&f->mu);
        f->st.injected_errors++;
        pthread_mutex_unlock(&f->mu);
        if (busy)
            fake_respond_rpc_error(resp, 429, "RESOURCE_EXHAUSTED",
                                   "Quota exceeded for quota metric 'Task operations' (fake).");
        else
            fake_respond_rpc_error(resp, 503, "UNAVAILABLE",
                                   "The service is currently "
                                   "unavailable (fake).");
        if (busy)
            http_response_header(resp, "Retry-After", "0");
        return;
    }
    if (!queue_matches(f, req, resp))
        return;
    parent_of(f, parent, sizeof(parent));
    memset(&parsed, 0, sizeof(parsed));
    if (!parse_create(parent, http_request_json(req), &parsed, &r)) {
        task_clear(&parsed);
        pthread_mutex_lock(&f->mu);
        f->st.rejected++;
        pthread_mutex_unlock(&f->mu);
        fake_respond_rpc_error(resp, 400, "INVALID_ARGUMENT", "%s", r.msg);
        return;
    }
    view = json_str_or(http_request_json(req), "responseView", "BASIC");

    pthread_mutex_lock(&f->mu);
    now = time_now_us();
    t = task_find(f, parsed.name);
    if (t && (t->state != TASK_DONE || now - t->gone_us < DEDUP_WINDOW_US)) {
        f->st.already_exists++;
        pthread_mutex_unlock(&f->mu);
        task_clear(&parsed);
        fake_respond_rpc_error(resp, 409, "ALREADY_EXISTS", "Requested entity already exists");
        return;
    }
    if (t) {
        /* A tombstone older than the window: the name is free again. */
        struct task *next = t->hnext;

        task_clear(t);
        *t = parsed;
        t->hnext = next;
    } else {
        uint32_t b = name_hash(parsed.name) % BUCKETS;

        t = xmalloc(sizeof(*t));
        *t = parsed;
        t->hnext = f->buckets[b];
        f->buckets[b] = t;
    }
    t->create_us = now;
    t->state = TASK_SCHEDULED;
    heap_push(f, t);
    f->pending++;
    f->st.created++;
    pthread_cond_broadcast(&f->cv);
    http_respond_json(resp, 200, task_json(t, strcmp(view, "FULL") == 0));
    pthread_mutex_unlock(&f->mu);
}

static void handle_create(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;
    int64_t latency;

    pthread_mutex_lock(&f->mu);
    peak(&f->st.create_in_flight, &f->st.create_peak, 1);
    latency = f->latency_ms;
    pthread_mutex_unlock(&f->mu);
    fake_sleep_ms(latency);
    create_task(f, req, resp);
    pthread_mutex_lock(&f->mu);
    peak(&f->st.create_in_flight, &f->st.create_peak, -1);
    pthread_mutex_unlock(&f->mu);
}

/* The task of the path, or NULL after answering (the caller holds f->mu). */
static struct task *path_task(struct fake *f, struct http_request *req, struct http_response *resp)
{
    const char *id = http_request_param(req, "task");
    char name[1024], parent[512];
    struct task *t;

    parent_of(f, parent, sizeof(parent));
    if (!id || !id_chars_ok(id, TASK_ID_MAX)) {
        fake_respond_rpc_error(resp, 400, "INVALID_ARGUMENT", "Invalid task name.");
        return NULL;
    }
    str_printf(name, sizeof(name), "%s/tasks/%s", parent, id);
    t = task_find(f, name);
    if (!t || t->state == TASK_DONE) {
        fake_respond_rpc_error(resp, 404, "NOT_FOUND", "Requested entity was not found.");
        return NULL;
    }
    return t;
}

static void handle_get(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;
    const char *view = http_request_query(req, "responseView");
    struct task *t;

    if (!queue_matches(f, req, resp))
        return;
    pthread_mutex_lock(&f->mu);
    t = path_task(f, req, resp);
    if (t)
        http_respond_json(resp, 200, task_json(t, view && strcmp(view, "FULL") == 0));
    pthread_mutex_unlock(&f->mu);
}

static void handle_delete(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;
    struct task *t;

    if (!queue_matches(f, req, resp))
        return;
    pthread_mutex_lock(&f->mu);
    t = path_task(f, req, resp);
    if (t) {
        /* A running attempt goes on, but its outcome no longer matters. */
        t->deleted = true;
        task_finish(f, t, time_now_us());
        f->st.deleted++;
        http_respond_json(resp, 200, json_object());
    }
    pthread_mutex_unlock(&f->mu);
}

/* ---- control ------------------------------------------------------------ */

static void handle_stats(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;
    struct stats s;
    size_t pending;

    UNUSED(req);
    pthread_mutex_lock(&f->mu);
    s = f->st;
    pending = f->pending;
    pthread_mutex_unlock(&f->mu);
    http_respond_json(
        resp, 200,
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                  "s:I}",
                  "created", (json_int_t)s.created, "alreadyExists", (json_int_t)s.already_exists,
                  "rejected", (json_int_t)s.rejected, "injectedErrors",
                  (json_int_t)s.injected_errors, "deleted", (json_int_t)s.deleted, "dispatched",
                  (json_int_t)s.dispatched, "succeeded", (json_int_t)s.succeeded, "failed",
                  (json_int_t)s.failed, "retried", (json_int_t)s.retried, "dropped",
                  (json_int_t)s.dropped, "duplicates", (json_int_t)s.duplicates, "pending",
                  (json_int_t)pending, "createInFlight", (json_int_t)s.create_in_flight,
                  "createInFlightPeak", (json_int_t)s.create_peak, "dispatchInFlight",
                  (json_int_t)s.dispatch_in_flight, "dispatchInFlightPeak",
                  (json_int_t)s.dispatch_peak));
}

static void handle_config(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;
    json_t *body = http_request_json(req), *v;

    pthread_mutex_lock(&f->mu);
    if ((v = json_object_get(body, "latencyMs")) && json_is_integer(v))
        f->latency_ms = json_integer_value(v);
    if ((v = json_object_get(body, "errorRate")) && json_is_number(v))
        f->error_rate = json_number_value(v);
    if ((v = json_object_get(body, "duplicateRate")) && json_is_number(v))
        f->duplicate_rate = json_number_value(v);
    if ((v = json_object_get(body, "dispatch")) && json_is_boolean(v))
        f->dispatch = json_is_true(v);
    pthread_cond_broadcast(&f->cv);
    http_respond_json(resp, 200,
                      json_pack("{s:I, s:f, s:f, s:b}", "latencyMs", (json_int_t)f->latency_ms,
                                "errorRate", f->error_rate, "duplicateRate", f->duplicate_rate,
                                "dispatch", f->dispatch));
    pthread_mutex_unlock(&f->mu);
}

static void handle_reset(struct http_request *req, struct http_response *resp, void *ud)
{
    struct fake *f = ud;

    UNUSED(req);
    pthread_mutex_lock(&f->mu);
    memset(&f->st, 0, sizeof(f->st));
    pthread_mutex_unlock(&f->mu);
    http_respond_json(resp, 200, json_object());
}

/* ---- dispatch ------------------------------------------------------------ */

/* One attempt, prepared under the lock and sent without it. */
struct push {
    char *url;
    char *method;
    char *headers[PUSH_HEADERS_MAX + 1];
    const char *body; /* the task's: immutable while the task runs */
    size_t body_len;
    char *audience, *email; /* for the ID token */
    bool authorized;        /* the token header is in headers */
    long timeout_ms;
};

static void push_release(struct push *p)
{
    size_t i;

    for (i = 0; p->headers[i]; i++)
        free(p->headers[i]);
    free(p->url);
    free(p->method);
    free(p->audience);
    free(p->email);
}

static char *hdr(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *hdr(const char *fmt, ...)
{
    struct buf b;
    va_list ap;

    buf_init(&b, 128 * 1024);
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return buf_take(&b, NULL);
}

/* Headers Cloud Tasks drops or replaces (gcp.md 1.2). */
static bool header_dropped(const char *name)
{
    return strcasecmp(name, "Host") == 0 || strcasecmp(name, "Content-Length") == 0 ||
           strcasecmp(name, "User-Agent") == 0 || strncasecmp(name, "X-Google-", 9) == 0 ||
           strncasecmp(name, "X-AppEngine-", 12) == 0 ||
           strncasecmp(name, "X-CloudTasks-", 13) == 0;
}

/* Starts attempt dispatch_count + 1 of t (under the lock). */
static void push_prepare(struct fake *f, struct task *t, int64_t now, struct push *p)
{
    bool has_ctype = false;
    const char *key;
    size_t h = 0;
    json_t *v;

    memset(p, 0, sizeof(*p));
    t->state = TASK_RUNNING;
    t->dispatch_count++;
    if (!t->first_attempt_us)
        t->first_attempt_us = now;
    t->last_attempt_us = now;
    p->url = xstrdup(t->url);
    p->method = xstrdup(t->method);
    p->body = t->body;
    p->body_len = t->body_len;
    p->timeout_ms = (long)(t->deadline_s * 1000);
    json_object_foreach(t->headers, key, v)
    {
        if (header_dropped(key) ||
            (strcasecmp(key, "Authorization") == 0 && (t->oidc_email || t->oauth_email)))
            continue;
        has_ctype = has_ctype || strcasecmp(key, "Content-Type") == 0;
        if (h < PUSH_HEADERS_MAX - 12)
            p->headers[h++] = hdr("%s: %s", key, json_string_value(v));
    }
    /* Google's default for a body without one (curl would say form-urlencoded). */
    if (!has_ctype && t->body_len > 0)
        p->headers[h++] = hdr("Content-Type: application/octet-stream");
    p->headers[h++] = hdr("User-Agent: Google-Cloud-Tasks");
    p->headers[h++] = hdr("X-CloudTasks-QueueName: %s", f->qc.name);
    p->headers[h++] = hdr("X-CloudTasks-TaskName: %s", t->id);
    p->headers[h++] = hdr("X-CloudTasks-TaskRetryCount: %d", t->dispatch_count - 1);
    p->headers[h++] = hdr("X-CloudTasks-TaskExecutionCount: %d", t->response_count);
    p->headers[h++] =
        hdr("X-CloudTasks-TaskETA: %lld.%06lld", (long long)(t->schedule_us / 1000000),
            (long long)(t->schedule_us % 1000000));
    if (t->last_status > 0)
        p->headers[h++] = hdr("X-CloudTasks-TaskPreviousResponse: %ld", t->last_status);
    if (t->oauth_email)
        p->headers[h++] = hdr("Authorization: Bearer fake-oauth-token-for-%s", t->oauth_email);
    if (t->oidc_email) {
        p->audience = xstrdup(t->oidc_audience);
        p->email = xstrdup(t->oidc_email);
    }
    p->headers[h] = NULL;
}

/* Sends p; returns the HTTP status (0 without an answer) and the Retry-After. */
static long push_send(struct fake *f, struct push *p, int *retry_after_s)
{
    struct http_result res;
    struct error err;
    char *token = NULL;
    size_t h;
    long code = 0;
    enum status st;

    *retry_after_s = 0;
    for (h = 0; p->headers[h]; h++)
        ;
    if (p->audience && !p->authorized) {
        /* The token is minted per push (cached per audience by the issuer). */
        if (fake_google_token(f->google, p->audience, p->email, &token, &err) != ST_OK) {
            fprintf(stderr, NAME ": cannot mint an id token: %s\n", err.message);
            return 0;
        }
        p->headers[h] = hdr("Authorization: Bearer %s", token);
        p->headers[h + 1] = NULL;
        p->authorized = true;
        free(token);
    }
    {
        struct http_call call = {
            .method = p->method,
            .url = p->url,
            .headers = (const char *const *)p->headers,
            .body = p->body,
            .body_len = p->body_len,
            .timeout_ms = p->timeout_ms,
            .max_response_bytes = 64 * 1024,
        };

        http_result_init(&res);
        st = http_client_do(f->client, &call, &res, &err);
        if (st == ST_OK || st == ST_TOO_LARGE)
            code = res.status;
        *retry_after_s = res.retry_after_s;
        http_result_release(&res);
    }
    return code;
}

/* Records the outcome of an attempt of t (under the lock). */
static void push_done(struct fake *f, struct task *t, long code, int retry_after_s)
{
    int64_t now = time_now_us();
    double delay, elapsed;

    if (code > 0 && code < 500)
        t->response_count++; /* ExecutionCount leaves 5xx out (gcp.md 1.6) */
    t->last_status = code;
    if (code >= 200 && code < 300) {
        f->st.succeeded++;
        if (!t->deleted)
            task_finish(f, t, now);
        return;
    }
    f->st.failed++;
    if (t->deleted)
        return;
    elapsed = (double)(now - t->first_attempt_us) / 1e6;
    if (!backoff_should_retry(&f->qc.retry, t->dispatch_count, elapsed)) {
        f->st.dropped++;
        fprintf(stderr, NAME ": task %s dropped after %d attempts (last http %ld)\n", t->id,
                t->dispatch_count, code);
        task_finish(f, t, now);
        return;
    }
    delay = backoff_cloud_tasks(&f->qc.retry, t->dispatch_count);
    if ((code == 429 || code == 503) && retry_after_s > delay)
        delay = retry_after_s;
    t->schedule_us = now + (int64_t)(delay * 1e6);
    t->state = TASK_SCHEDULED;
    heap_push(f, t);
    f->st.retried++;
}

static void bucket_refill(struct fake *f)
{
    int64_t now = time_mono_us();

    f->tokens += (double)(now - f->refill_us) / 1e6 * f->rate;
    if (f->tokens > f->burst)
        f->tokens = f->burst;
    f->refill_us = now;
}

/* Waits on the condition for at most ms (the caller holds f->mu). */
static void wait_ms(struct fake *f, int64_t ms)
{
    struct timespec ts;

    if (ms > IDLE_WAIT_MS)
        ms = IDLE_WAIT_MS;
    if (ms < 1)
        ms = 1;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&f->cv, &f->mu, &ts);
}

static void *dispatch_main(void *arg)
{
    struct fake *f = arg;

    pthread_mutex_lock(&f->mu);
    while (!f->stopping) {
        int64_t now = time_now_us();
        struct push p;
        struct task *t;
        int retry_after = 0;
        bool dup;
        long code;

        if (!f->dispatch || f->heap_n == 0) {
            wait_ms(f, IDLE_WAIT_MS);
            continue;
        }
        t = f->heap[0];
        if (t->schedule_us > now) {
            wait_ms(f, (t->schedule_us - now + 999) / 1000);
            continue;
        }
        bucket_refill(f);
        if (f->tokens < 1) {
            wait_ms(f, (int64_t)((1 - f->tokens) * 1000 / f->rate) + 1);
            continue;
        }
        f->tokens -= 1;
        heap_remove(f, t);
        push_prepare(f, t, now, &p);
        f->st.dispatched++;
        peak(&f->st.dispatch_in_flight, &f->st.dispatch_peak, 1);
        pthread_mutex_unlock(&f->mu);

        code = push_send(f, &p, &retry_after);

        pthread_mutex_lock(&f->mu);
        push_done(f, t, code, retry_after);
        dup = code > 0 && f->duplicate_rate > 0 && fake_random() < f->duplicate_rate;
        if (dup)
            f->st.duplicates++;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
        /* A rare duplicate delivery: the same attempt again, its answer ignored (gcp.md 1.7). */
        if (dup)
            push_send(f, &p, &retry_after);
        push_release(&p);
        pthread_mutex_lock(&f->mu);
        peak(&f->st.dispatch_in_flight, &f->st.dispatch_peak, -1);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* ---- main ----------------------------------------------------------------- */

static void fake_init(struct fake *f)
{
    const char *path = fake_env_str("FAKE_QUEUE_CONFIG", NULL);
    struct http_client_options co;
    pthread_condattr_t ca;
    struct error err;
    int64_t threads;

    memset(f, 0, sizeof(*f));
    if (path) {
        if (queue_config_load(path, &f->qc, &err) != ST_OK) {
            fprintf(stderr, NAME ": %s\n", err.message);
            exit(2);
        }
    } else {
        queue_config_defaults(&f->qc);
    }
    str_copy(f->project, sizeof(f->project), fake_env_str("FAKE_PROJECT", "test-project"));
    f->latency_ms = fake_env_int("FAKE_LATENCY_MS", 0, 0, 600000);
    f->error_rate = fake_env_double("FAKE_ERROR_RATE", 0, 0, 1);
    f->duplicate_rate = fake_env_double("FAKE_DUPLICATE_RATE", 0, 0, 1);
    f->dispatch = fake_env_int("FAKE_DISPATCH", 1, 0, 1) == 1;
    threads = f->qc.max_concurrent_dispatches < 32 ? f->qc.max_concurrent_dispatches : 32;
    f->n_threads = (int)fake_env_int("FAKE_DISPATCH_THREADS", threads, 1, THREADS_MAX);
    f->rate = f->qc.max_dispatches_per_second;
    f->burst = f->rate * BURST_SECONDS < 1 ? 1 : f->rate * BURST_SECONDS;
    f->tokens = f->burst;
    f->refill_us = time_mono_us();
    f->google = fake_google_new(fake_env_str("FAKE_ISSUER_KEY", NULL));
    memset(&co, 0, sizeof(co));
    co.connect_timeout_ms = 2000;
    co.user_agent = "Google-Cloud-Tasks";
    f->client = http_client_new(&co);
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cv, &ca);
    pthread_condattr_destroy(&ca);
}

static void fake_release(struct fake *f)
{
    size_t b;

    for (b = 0; b < BUCKETS; b++) {
        struct task *t = f->buckets[b], *next;

        for (; t; t = next) {
            next = t->hnext;
            task_clear(t);
            free(t);
        }
    }
    free(f->heap);
    http_client_free(f->client);
    fake_google_free(f->google);
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mu);
}

int main(void)
{
    static struct fake f; /* large: the hash buckets */
    struct http_server *srv;
    int i, rc;

    fake_signals_block();
    log_init(NAME, NULL, LOG_WARNING, 2);
    fake_init(&f);
    srv = fake_server_new(NAME, REQUEST_MAX);
    http_server_route(srv, "POST",
                      "/v2/projects/{project}/locations/{location}/queues/{queue}/tasks",
                      HTTP_ROUTE_JSON, handle_create, &f);
    http_server_route(srv, "GET",
                      "/v2/projects/{project}/locations/{location}/queues/{queue}/tasks/{task}", 0,
                      handle_get, &f);
    http_server_route(srv, "DELETE",
                      "/v2/projects/{project}/locations/{location}/queues/{queue}/tasks/{task}", 0,
                      handle_delete, &f);
    http_server_route(srv, "GET", "/fake/stats", 0, handle_stats, &f);
    http_server_route(srv, "POST", "/fake/config", HTTP_ROUTE_JSON, handle_config, &f);
    http_server_route(srv, "POST", "/fake/reset", 0, handle_reset, &f);
    fake_google_routes(f.google, srv);
    for (i = 0; i < f.n_threads; i++) {
        if (pthread_create(&f.threads[i], NULL, dispatch_main, &f) != 0) {
            fprintf(stderr, NAME ": cannot start dispatch threads\n");
            return 1;
        }
    }
    rc = fake_serve(srv, NAME);
    pthread_mutex_lock(&f.mu);
    f.stopping = true;
    pthread_cond_broadcast(&f.cv);
    pthread_mutex_unlock(&f.mu);
    for (i = 0; i < f.n_threads; i++)
        pthread_join(f.threads[i], NULL);
    fake_release(&f);
    return rc;
}
