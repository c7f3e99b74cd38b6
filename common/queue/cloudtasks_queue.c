/*
 * cloudtasks_queue.c - the queue port on Cloud Tasks v2 REST: request
 * bodies, the outcome table and the retry rules of cloudtasks_queue.h.
 */
#include "queue/cloudtasks_queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/backoff.h"
#include "core/buf.h"
#include "core/codec.h"
#include "core/id.h"
#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "queue/queue_config.h"

#define URL_MAX          4096
#define TARGET_URL_MAX   2083 /* Cloud Tasks' limit on httpRequest.url (gcp.md 1.2) */
#define RESPONSE_MAX     (64 * 1024)
#define ERROR_TEXT_MAX   160 /* of Google's message, in ours */
#define STEP_MS          100 /* longest wait in the enqueue_many loop */
#define SCHEDULE_AHEAD_S (30LL * 24 * 3600)

struct ct_queue {
    char *tasks_url; /* {base}/v2/projects/P/locations/L/queues/Q/tasks */
    char *parent;    /* projects/P/locations/L/queues/Q */
    char *queue_id;
    char *target_url;
    char *service_account;
    char *audience;
    char deadline[32]; /* "600s", "" when not sent */
    struct gcp_auth *auth;
    struct http_client *client;
    int max_in_flight;
    long timeout_ms;
    int max_attempts;
    long retry_base_ms;
    long retry_cap_ms;
};

/* ---- options --------------------------------------------------------- */

static bool chars_in(const char *s, const char *extra)
{
    for (; *s; s++) {
        char c = *s;

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr(extra, c)))
            return false;
    }
    return true;
}

/* ---- outcomes ----------------------------------------------------------- */

/* google.rpc.Code names (gcp.md 0) and what they are to the port. */
static const struct {
    const char *rpc;
    enum status st;
    bool retry;
} rpc_table[] = {
    {"ALREADY_EXISTS", ST_ALREADY_EXISTS, false},
    {"INVALID_ARGUMENT", ST_INVALID, false},
    {"OUT_OF_RANGE", ST_INVALID, false},
    {"FAILED_PRECONDITION", ST_FAILED_PRECONDITION, false},
    {"UNAUTHENTICATED", ST_UNAUTHENTICATED, false},
    {"PERMISSION_DENIED", ST_PERMISSION_DENIED, false},
    {"NOT_FOUND", ST_NOT_FOUND, false},
    {"ABORTED", ST_ABORTED, false},
    {"RESOURCE_EXHAUSTED", ST_RATE_LIMITED, true},
    {"UNAVAILABLE", ST_UNAVAILABLE, true},
    {"CANCELLED", ST_UNAVAILABLE, false},
    {"INTERNAL", ST_UNAVAILABLE, true},
    {"UNKNOWN", ST_UNAVAILABLE, false},
    {"DEADLINE_EXCEEDED", ST_TIMEOUT, true},
    {"DATA_LOSS", ST_INTERNAL, false},
    {"UNIMPLEMENTED", ST_INTERNAL, false},
};

/* The outcome of one attempt. */
struct outcome {
    enum status st;
    bool retry;  /* transient: another attempt may succeed */
    bool reauth; /* 401: the token was refused */
    int retry_after_s;
};

/*
 * Classifies an attempt: the client's status st (with cerr) and, on an
 * HTTP answer, its code and body. Fills err for failures; what names the
 * operation ("cannot create task x in queue q").
 */
static struct outcome classify(enum status st, const struct error *cerr,
                               const struct http_result *res, const char *what, struct error *err)
{
    struct outcome o = {.st = ST_OK};
    const char *rpc = NULL, *msg = "";
    json_t *root = NULL, *e;
    size_t i;

    if (st != ST_OK) {
        o.st = st;
        o.retry = st == ST_UNAVAILABLE || st == ST_TIMEOUT;
        error_set(err, st, NULL, "%s: %s", what, cerr->message);
        return o;
    }
    if (res->status >= 200 && res->status < 300)
        return o;
    root = json_parse(buf_str(&res->body), res->body.len, NULL);
    e = root ? json_object_get(root, "error") : NULL;
    if (json_is_object(e)) {
        rpc = json_str_or(e, "status", NULL);
        msg = json_str_or(e, "message", "");
    }
    o.st = ST__COUNT;
    for (i = 0; rpc && i < ARRAY_SIZE(rpc_table); i++) {
        if (strcmp(rpc, rpc_table[i].rpc) == 0) {
            o.st = rpc_table[i].st;
            o.retry = rpc_table[i].retry;
            break;
        }
    }
    if (o.st == ST__COUNT) {
        /* No (known) status: the HTTP code is all there is, e.g. an HTML 502 from a proxy. */
        long c = res->status;

        o.st = status_from_http(c);
        if (c == 500 || c == 502)
            o.st = ST_UNAVAILABLE;
        if (o.st == ST_OK || o.st == ST_CONFLICT)
            o.st = ST_INTERNAL; /* a 3xx or an unexplained 409: not something we asked for */
        o.retry = c == 429 || c == 500 || c == 502 || c == 503 || c == 504;
        if (!rpc || !*rpc)
            rpc = "no status";
    }
    o.reauth = o.st == ST_UNAUTHENTICATED || res->status == 401;
    o.retry_after_s = res->retry_after_s;
    error_set(err, o.st, NULL, "%s: %.32s (http %ld)%s%.*s", what, rpc, res->status,
              msg[0] ? ": " : "", ERROR_TEXT_MAX, msg);
    if (err && o.st == ST_RATE_LIMITED)
        err->retry_after_s = res->retry_after_s;
    json_decref(root);
    return o;
}

/*
 * The wait before attempt `attempt + 1` in ms, or -1 to stop: the outcome
 * is final, the task is unnamed, attempts are spent, or Retry-After asks
 * for more than the cap (the caller then passes the wait on).
 */
static int64_t retry_delay_ms(const struct ct_queue *ct, const struct outcome *o, bool named,
                              int attempt)
{
    int64_t delay;

    if (!o->retry || !named || attempt >= ct->max_attempts)
        return -1;
    delay = backoff_jitter_ms(attempt, ct->retry_base_ms, ct->retry_cap_ms, random_unit());
    if (o->retry_after_s > 0) {
        if ((int64_t)o->retry_after_s * 1000 > ct->retry_cap_ms)
            return -1;
        if ((int64_t)o->retry_after_s * 1000 > delay)
            delay = (int64_t)o->retry_after_s * 1000;
    }
    return delay;
}

/* ---- requests ----------------------------------------------------------- */

/*
 * Builds the CreateTask body (cloudtasks_queue.h) for t. On ST_OK *out is
 * malloc'd compact JSON (caller frees with free()).
 */
static enum status create_body(const struct ct_queue *ct, const struct task_spec *t, char **out,
                               struct error *err)
{
    json_t *root = NULL, *task = NULL, *req = NULL;
    char name[URL_MAX], when[RFC3339_MAX];
    enum status st = ST_OK;
    struct buf b64;

    *out = NULL;
    buf_init(&b64, base64_encoded_len(QUEUE_CT_BODY_MAX, B64_STD));
    if (t->name[0] && (st = queue_check_name(t->name, err)) != ST_OK)
        goto out;
    if (t->body_len > 0 && !t->body) {
        st = error_set(err, ST_INVALID, NULL, "task %.64s has a length but no body", t->name);
        goto out;
    }
    if (t->body_len > QUEUE_CT_BODY_MAX) {
        st = error_set(err, ST_TOO_LARGE, NULL, "task %.64s: body of %zu bytes exceeds %d bytes",
                       t->name, t->body_len, QUEUE_CT_BODY_MAX);
        goto out;
    }
    /* Cloud Tasks takes a past time as now; before 1970 or past 30 days is refused. */
    if (t->schedule_time < 0 ||
        (t->schedule_time > 0 && (t->schedule_time > time_now_us() + SCHEDULE_AHEAD_S * 1000000 ||
                                  !time_format_rfc3339(t->schedule_time, when, sizeof(when))))) {
        st = error_set(err, ST_INVALID, "invalid_schedule_time",
                       "task %.64s is scheduled more than 30 days ahead or before 1970", t->name);
        goto out;
    }
    task = json_object();
    if (t->name[0]) {
        if (!str_printf(name, sizeof(name), "%s/tasks/%s", ct->parent, t->name))
            BUG("task resource name exceeds its buffer");
        json_object_set_new(task, "name", json_string(name));
    }
    if (t->schedule_time > 0)
        json_object_set_new(task, "scheduleTime", json_string(when));
    if (ct->deadline[0])
        json_object_set_new(task, "dispatchDeadline", json_string(ct->deadline));
    req = json_pack("{s:s, s:s, s:{s:s}}", "url", ct->target_url, "httpMethod", "POST", "headers",
                    "Content-Type", "application/json");
    if (!req)
        BUG("cannot build httpRequest");
    if (t->body_len > 0) {
        if (base64_encode(&b64, t->body, t->body_len, B64_STD) != ST_OK)
            BUG("base64 body exceeds its computed bound");
        json_object_set_new(req, "body", json_string(buf_str(&b64)));
    }
    json_object_set_new(req, "oidcToken",
                        json_pack("{s:s, s:s}", "serviceAccountEmail", ct->service_account,
                                  "audience", ct->audience));
    json_object_set_new(task, "httpRequest", req);
    root = json_pack("{s:o}", "task", task);
    task = NULL;
    if (!root)
        BUG("cannot build CreateTask body");
    *out = json_dump_compact(root);
out:
    json_decref(root);
    json_decref(task);
    buf_release(&b64);
    return st;
}

/* One prepared request: what the attempts of a create or delete share. */
struct request {
    const char *method;
    char url[URL_MAX];
    char *body; /* JSON, NULL for DELETE */
    bool named;
    char what[TASK_NAME_MAX + 128]; /* "cannot create task x in queue q" */
};

static void request_release(struct request *r)
{
    free(r->body);
    r->body = NULL;
}

/*
 * Fills call for one attempt of r. auth (capacity GCP_AUTH_LINE_MAX)
 * receives the Authorization header line; headers must have room for 4 entries.
 */
static enum status request_call(struct ct_queue *ct, const struct request *r, char *auth,
                                const char **headers, struct http_call *call, struct error *err)
{
    size_t h = 0;
    enum status st;

    if ((st = gcp_auth_header_line(ct->auth, auth, GCP_AUTH_LINE_MAX, err)) != ST_OK) {
        error_prefix(err, "%s", r->what);
        return st;
    }
    if (auth[0])
        headers[h++] = auth;
    headers[h++] = "Accept: application/json";
    if (r->body)
        headers[h++] = "Content-Type: application/json";
    headers[h] = NULL;
    memset(call, 0, sizeof(*call));
    call->method = r->method;
    call->url = r->url;
    call->headers = headers;
    call->body = r->body;
    call->body_len = r->body ? strlen(r->body) : 0;
    call->timeout_ms = ct->timeout_ms;
    call->max_response_bytes = RESPONSE_MAX;
    call->idempotent = false; /* retries are ours: they depend on the answer's status */
    return ST_OK;
}

/* Prepares the CreateTask request of t. */
static enum status request_create(struct ct_queue *ct, const struct task_spec *t, struct request *r,
                                  struct error *err)
{
    memset(r, 0, sizeof(*r));
    r->method = "POST";
    r->named = t->name[0] != '\0';
    str_copy(r->url, sizeof(r->url), ct->tasks_url);
    str_printf(r->what, sizeof(r->what), "cannot create task %s in queue %s",
               r->named && memchr(t->name, '\0', TASK_NAME_MAX) ? t->name : "(unnamed)",
               ct->queue_id);
    return create_body(ct, t, &r->body, err);
}

/* Runs r to its final outcome on the calling thread (enqueue, remove). */
static enum status request_run(struct ct_queue *ct, const struct request *r, struct error *err)
{
    char auth[GCP_AUTH_LINE_MAX];
    const char *headers[4];
    struct http_result res;
    struct outcome o;
    bool reauthed = false;
    enum status st;
    int attempt;

    http_result_init(&res);
    for (attempt = 1;; attempt++) {
        struct http_call call;
        struct error cerr;
        int64_t delay;

        if ((st = request_call(ct, r, auth, headers, &call, err)) != ST_OK)
            break;
        error_clear(&cerr);
        st = http_client_do(ct->client, &call, &res, &cerr);
        o = classify(st, &cerr, &res, r->what, err);
        st = o.st;
        if (st == ST_OK)
            break;
        if (o.reauth && !reauthed) {
            reauthed = true;
            gcp_auth_invalidate(ct->auth);
            attempt--;
            continue;
        }
        delay = retry_delay_ms(ct, &o, r->named, attempt);
        if (delay < 0)
            break;
        log_debug("%s: attempt %d failed (%s), retrying in %lld ms", r->what, attempt,
                  status_name(st), (long long)delay);
        time_sleep_ms(delay);
    }
    http_result_release(&res);
    return st;
}

/* ---- port operations ---------------------------------------------------- */

static enum status ct_enqueue(void *state, const struct task_spec *task, struct error *err)
{
    struct ct_queue *ct = state;
    struct request r;
    enum status st;

    st = request_create(ct, task, &r, err);
    if (st == ST_OK)
        st = request_run(ct, &r, err);
    request_release(&r);
    return st;
}

static enum status ct_remove(void *state, const char *name, struct error *err)
{
    struct ct_queue *ct = state;
    struct request r;
    enum status st;

    if ((st = queue_check_name(name, err)) != ST_OK)
        return st;
    memset(&r, 0, sizeof(r));
    r.method = "DELETE";
    r.named = true; /* deleting twice is harmless: the second finds nothing */
    if (!str_printf(r.url, sizeof(r.url), "%s/%s", ct->tasks_url, name))
        return error_set(err, ST_INVALID, NULL, "task delete url is too long");
    str_printf(r.what, sizeof(r.what), "cannot delete task %s in queue %s", name, ct->queue_id);
    st = request_run(ct, &r, err);
    if (st == ST_NOT_FOUND) {
        error_clear(err); /* gone already: run, deleted, or never created */
        st = ST_OK;
    }
    return st;
}

/* ---- enqueue_many ------------------------------------------------------- */

/* One task of a bulk enqueue while it has requests to make. */
struct slot {
    struct bulk *b;
    size_t index;
    struct request r;
    int attempt; /* attempts made */
    bool reauthed;
    char *auth;     /* the Authorization header of the attempt in flight */
    int64_t due_ms; /* when waiting: monotonic time of the next attempt */
    struct slot *next;
};

struct bulk {
    struct ct_queue *ct;
    struct http_multi *multi;
    const struct task_spec *tasks;
    size_t n;
    enum status *results;
    size_t next;          /* next task not started */
    int active;           /* requests in flight */
    struct slot *waiting; /* slots waiting for their retry, earliest first */
    int n_waiting;
    char *refused_auth;       /* the last Authorization header answered 401 */
    struct error auth_failed; /* set once no token could be had */
    size_t failed;
    size_t first_failed;
    struct error first_err;
};

static void slot_free(struct slot *s)
{
    if (!s)
        return;
    request_release(&s->r);
    free(s->auth);
    free(s);
}

static void bulk_result(struct bulk *b, size_t i, enum status st, const struct error *e)
{
    b->results[i] = st;
    if (st == ST_OK || st == ST_ALREADY_EXISTS)
        return;
    b->failed++;
    if (b->failed == 1 || i < b->first_failed) {
        b->first_failed = i;
        b->first_err = *e;
    }
}

static void bulk_wait(struct bulk *b, struct slot *s, int64_t delay_ms)
{
    struct slot **p = &b->waiting;

    s->due_ms = time_mono_ms() + delay_ms;
    b->n_waiting++;
    while (*p && (*p)->due_ms <= s->due_ms)
        p = &(*p)->next;
    s->next = *p;
    *p = s;
}

static void on_done(void *ud, enum status st, const struct http_result *res,
                    const struct error *cerr);

/* Starts the next attempt of s, or finishes it when the request cannot be made. */
static void slot_send(struct bulk *b, struct slot *s)
{
    char auth[GCP_AUTH_LINE_MAX];
    const char *headers[4];
    struct http_call call;
    struct error e;

    error_clear(&e);
    /*
     * Without a token no task can be created: the first failure to get one
     * answers for the rest, rather than asking the token source again per task.
     */
    if (b->auth_failed.status != ST_OK) {
        bulk_result(b, s->index, b->auth_failed.status, &b->auth_failed);
        slot_free(s);
        return;
    }
    if (request_call(b->ct, &s->r, auth, headers, &call, &e) != ST_OK) {
        b->auth_failed = e;
        bulk_result(b, s->index, e.status, &e);
        slot_free(s);
        return;
    }
    free(s->auth);
    s->auth = xstrdup(auth);
    s->attempt++;
    b->active++;
    http_multi_add(b->multi, &call, on_done, s);
}

/*
 * Starts new tasks while there is room. A task waiting for its retry keeps
 * its place: when the service pushes back, new tasks wait too, and the
 * tasks begun but not finished stay within the bound.
 */
static void bulk_feed(struct bulk *b)
{
    while (b->active + b->n_waiting < b->ct->max_in_flight && b->next < b->n) {
        size_t i = b->next++;
        struct slot *s = xcalloc(1, sizeof(*s));
        struct error e;

        s->b = b;
        s->index = i;
        error_clear(&e);
        if (request_create(b->ct, &b->tasks[i], &s->r, &e) != ST_OK) {
            bulk_result(b, i, e.status, &e);
            slot_free(s);
            continue;
        }
        slot_send(b, s);
    }
}

/* Starts the retries that are due, before new tasks: they are older. */
static void bulk_admit(struct bulk *b)
{
    int64_t now = time_mono_ms();

    while (b->waiting && b->waiting->due_ms <= now && b->active < b->ct->max_in_flight) {
        struct slot *s = b->waiting;

        b->waiting = s->next;
        b->n_waiting--;
        s->next = NULL;
        slot_send(b, s);
    }
    bulk_feed(b);
}

static void on_done(void *ud, enum status st, const struct http_result *res,
                    const struct error *cerr)
{
    struct slot *s = ud;
    struct bulk *b = s->b;
    struct outcome o;
    struct error e;
    int64_t delay;

    b->active--;
    error_clear(&e);
    o = classify(st, cerr, res, s->r.what, &e);
    if (o.st != ST_OK && o.reauth && !s->reauthed) {
        s->reauthed = true;
        s->attempt--;
        /* One refresh for a burst of 401s: only a header not yet refused invalidates. */
        if (!b->refused_auth || strcmp(b->refused_auth, s->auth) != 0) {
            free(b->refused_auth);
            b->refused_auth = xstrdup(s->auth);
            gcp_auth_invalidate(b->ct->auth);
        }
        bulk_wait(b, s, 0);
        goto out;
    }
    delay = o.st == ST_OK ? -1 : retry_delay_ms(b->ct, &o, s->r.named, s->attempt);
    if (delay >= 0) {
        bulk_wait(b, s, delay);
        goto out;
    }
    bulk_result(b, s->index, o.st, &e);
    slot_free(s);
out:
    bulk_admit(b);
}

static enum status ct_enqueue_many(void *state, const struct task_spec *tasks, size_t n,
                                   enum status *results, struct error *err)
{
    struct ct_queue *ct = state;
    struct bulk b;
    enum status st = ST_OK;

    if (n == 0)
        return ST_OK;
    memset(&b, 0, sizeof(b));
    b.ct = ct;
    b.tasks = tasks;
    b.n = n;
    b.results = results;
    b.multi = http_multi_new(ct->client, ct->max_in_flight);
    bulk_admit(&b);
    while (b.active > 0 || b.waiting || b.next < b.n) {
        int64_t wait = STEP_MS;

        if (b.waiting) {
            int64_t until = b.waiting->due_ms - time_mono_ms();

            wait = until < wait ? (until > 0 ? until : 0) : wait;
        }
        if (b.active > 0)
            http_multi_step(b.multi, (int)wait);
        else if (wait > 0)
            time_sleep_ms(wait);
        bulk_admit(&b);
    }
    http_multi_free(b.multi);
    free(b.refused_auth);
    if (b.failed > 0) {
        if (err)
            *err = b.first_err;
        error_prefix(err, "cannot enqueue task %zu of %zu (%zu failed)", b.first_failed, n,
                     b.failed);
        st = results[b.first_failed];
    }
    return st;
}

/* ---- lifecycle ---------------------------------------------------------- */

static void ct_close(void *state)
{
    struct ct_queue *ct = state;

    if (!ct)
        return;
    free(ct->tasks_url);
    free(ct->parent);
    free(ct->queue_id);
    free(ct->target_url);
    free(ct->service_account);
    free(ct->audience);
    free(ct);
}

static const struct queue_ops cloudtasks_ops = {
    .close = ct_close,
    .enqueue = ct_enqueue,
    .enqueue_many = ct_enqueue_many,
    .remove = ct_remove,
};

static bool present(const char *s)
{
    return s && s[0];
}

static enum status check_options(const struct cloudtasks_options *o, struct error *err)
{
    if (!o || !o->auth || !o->client)
        return error_set(err, ST_INVALID, NULL, "cloud tasks queue needs an auth and a client");
    if (!present(o->project) || !chars_in(o->project, "-.:") || strlen(o->project) > 100)
        return error_set(err, ST_INVALID, NULL, "cloud tasks queue: bad project \"%.64s\"",
                         o->project ? o->project : "");
    if (!present(o->location) || !chars_in(o->location, "-") || strlen(o->location) > 63)
        return error_set(err, ST_INVALID, NULL, "cloud tasks queue: bad location \"%.64s\"",
                         o->location ? o->location : "");
    if (!present(o->queue) || !chars_in(o->queue, "-") || strlen(o->queue) > 100)
        return error_set(err, ST_INVALID, NULL,
                         "cloud tasks queue: queue id \"%.64s\" must be 1-100 chars of "
                         "[A-Za-z0-9-]",
                         o->queue ? o->queue : "");
    if (!present(o->target_url) || strlen(o->target_url) > TARGET_URL_MAX ||
        !(str_starts_with(o->target_url, "https://") || str_starts_with(o->target_url, "http://")))
        return error_set(err, ST_INVALID, NULL,
                         "cloud tasks queue %s: target url must be http(s), at most %d chars",
                         o->queue, TARGET_URL_MAX);
    if (!present(o->service_account) || !present(o->audience))
        return error_set(err, ST_INVALID, NULL,
                         "cloud tasks queue %s: the oidc service account and audience are "
                         "required",
                         o->queue);
    if (o->dispatch_deadline_s != 0 && !(o->dispatch_deadline_s >= QUEUE_CT_DEADLINE_MIN_S &&
                                         o->dispatch_deadline_s <= QUEUE_CT_DEADLINE_MAX_S))
        return error_set(err, ST_INVALID, NULL,
                         "cloud tasks queue %s: dispatch deadline %gs is outside [15s, 1800s]",
                         o->queue, o->dispatch_deadline_s);
    if (o->max_in_flight < 0 || o->max_in_flight > QUEUE_CT_IN_FLIGHT_MAX)
        return error_set(err, ST_INVALID, NULL,
                         "cloud tasks queue %s: max in flight %d is outside [1, %d]", o->queue,
                         o->max_in_flight, QUEUE_CT_IN_FLIGHT_MAX);
    return ST_OK;
}

struct queue *queue_cloudtasks_open(const struct cloudtasks_options *o, struct error *err)
{
    struct ct_queue *ct;
    struct queue *q;
    char buf[URL_MAX];
    const char *base;
    size_t n;

    if (check_options(o, err) != ST_OK)
        return NULL;
    ct = xcalloc(1, sizeof(*ct));
    if (!str_printf(buf, sizeof(buf), "projects/%s/locations/%s/queues/%s", o->project, o->location,
                    o->queue))
        BUG("queue resource name exceeds its buffer");
    ct->parent = xstrdup(buf);
    base = present(o->base_url) ? o->base_url : CLOUDTASKS_DEFAULT_BASE;
    n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        n--;
    if (!str_printf(buf, sizeof(buf), "%.*s/v2/%s/tasks", (int)n, base, ct->parent)) {
        error_set(err, ST_INVALID, NULL, "cloud tasks queue %s: base url is too long", o->queue);
        ct_close(ct);
        return NULL;
    }
    ct->tasks_url = xstrdup(buf);
    ct->queue_id = xstrdup(o->queue);
    ct->target_url = xstrdup(o->target_url);
    ct->service_account = xstrdup(o->service_account);
    ct->audience = xstrdup(o->audience);
    if (o->dispatch_deadline_s > 0)
        duration_format(o->dispatch_deadline_s, ct->deadline, sizeof(ct->deadline));
    ct->auth = o->auth;
    ct->client = o->client;
    ct->max_in_flight = o->max_in_flight > 0 ? o->max_in_flight : QUEUE_CT_IN_FLIGHT;
    ct->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : QUEUE_CT_TIMEOUT_MS;
    ct->max_attempts = o->max_attempts > 0 ? o->max_attempts : QUEUE_CT_ATTEMPTS;
    ct->retry_base_ms = o->retry_base_ms > 0 ? o->retry_base_ms : QUEUE_CT_RETRY_BASE_MS;
    ct->retry_cap_ms = o->retry_cap_ms > 0 ? o->retry_cap_ms : QUEUE_CT_RETRY_CAP_MS;
    q = xcalloc(1, sizeof(*q));
    q->ops = &cloudtasks_ops;
    q->state = ct;
    q->name = "cloudtasks";
    return q;
}
