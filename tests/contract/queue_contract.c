#include "contract/queue_contract.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <jansson.h>
#include <microhttpd.h>

#include "core/json.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "gcp/oidc.h"
#include "http/client.h"

#define AUDIENCE  "https://worker.contract.example"
#define RECS_MAX  256
#define FLAKY_MAX 8
#define WAIT_MS   15000
#define QUIET_MS  1500 /* how long "nothing arrives" is watched */
#define US        INT64_C(1000000)

/* ---- the push target ------------------------------------------------------ */

/* One push as the target saw it. */
struct rec {
    int64_t wall_us;
    char task[TASK_NAME_MAX];
    char queue[128];
    char retry[16];
    char exec[16];
    char eta[40];
    char prev[16];
    char ua[64];
    char ctype[64];
    char auth[OIDC_TOKEN_MAX];
    char body[512];
    int status; /* what the target answered */
};

struct flaky {
    char task[TASK_NAME_MAX];
    int failures; /* answer 503 to this many pushes of the task first */
};

struct target {
    struct MHD_Daemon *d;
    char url[96];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct flaky flaky[FLAKY_MAX];
    int n_flaky;
    struct rec *recs;
    int n;
};

struct upload {
    char body[512];
    size_t len;
};

static const struct queue_contract_adapter *A;
static struct queue_contract_env E;
static struct queue_config QC;
static struct target *T;
static struct http_client *C;

static void copy_header(struct MHD_Connection *c, const char *name, char *out, size_t cap)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);

    str_copy(out, cap, v ? v : "");
}

/* The answer to the push of task that the target has seen `seen` times before. */
static int answer_for(struct target *t, const char *task, int seen)
{
    int i;

    for (i = 0; i < t->n_flaky; i++)
        if (strcmp(t->flaky[i].task, task) == 0 && seen < t->flaky[i].failures)
            return 503;
    return 200;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls)
{
    struct target *t = cls;
    struct upload *u = *con_cls;
    struct MHD_Response *r;
    enum MHD_Result ret;
    int status = 200, seen = 0, i;

    UNUSED(url);
    UNUSED(method);
    UNUSED(version);
    if (!u) {
        *con_cls = xcalloc(1, sizeof(*u));
        return MHD_YES;
    }
    if (*data_size) {
        size_t room = sizeof(u->body) - 1 - u->len;
        size_t n = *data_size < room ? *data_size : room;

        memcpy(u->body + u->len, data, n);
        u->len += n;
        *data_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&t->mu);
    if (t->n < RECS_MAX) {
        struct rec *rec = &t->recs[t->n];

        memset(rec, 0, sizeof(*rec));
        rec->wall_us = time_now_us();
        copy_header(c, "X-CloudTasks-TaskName", rec->task, sizeof(rec->task));
        copy_header(c, "X-CloudTasks-QueueName", rec->queue, sizeof(rec->queue));
        copy_header(c, "X-CloudTasks-TaskRetryCount", rec->retry, sizeof(rec->retry));
        copy_header(c, "X-CloudTasks-TaskExecutionCount", rec->exec, sizeof(rec->exec));
        copy_header(c, "X-CloudTasks-TaskETA", rec->eta, sizeof(rec->eta));
        copy_header(c, "X-CloudTasks-TaskPreviousResponse", rec->prev, sizeof(rec->prev));
        copy_header(c, "User-Agent", rec->ua, sizeof(rec->ua));
        copy_header(c, "Content-Type", rec->ctype, sizeof(rec->ctype));
        copy_header(c, "Authorization", rec->auth, sizeof(rec->auth));
        memcpy(rec->body, u->body, u->len);
        for (i = 0; i < t->n; i++)
            seen += strcmp(t->recs[i].task, rec->task) == 0;
        status = answer_for(t, rec->task, seen);
        rec->status = status;
        t->n++;
    }
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);

    r = MHD_create_response_from_buffer(2, "ok", MHD_RESPMEM_PERSISTENT);
    ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
    UNUSED(cls);
    UNUSED(c);
    UNUSED(code);
    free(*con_cls);
    *con_cls = NULL;
}

static struct target *target_start(void)
{
    struct target *t = xcalloc(1, sizeof(*t));
    const union MHD_DaemonInfo *info;
    struct sockaddr_in sin;

    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    t->recs = xcalloc(RECS_MAX, sizeof(*t->recs));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    t->d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD, 0,
                            NULL, NULL, on_request, t, MHD_OPTION_SOCK_ADDR, &sin,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, t, MHD_OPTION_END);
    ck_assert_ptr_nonnull(t->d);
    info = MHD_get_daemon_info(t->d, MHD_DAEMON_INFO_BIND_PORT);
    ck_assert_ptr_nonnull(info);
    ck_assert(str_printf(t->url, sizeof(t->url), "http://127.0.0.1:%d/api/batch/worker",
                         (int)info->port));
    return t;
}

static void target_stop(struct target *t)
{
    if (!t)
        return;
    MHD_stop_daemon(t->d);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t->recs);
    free(t);
}

static void target_flaky(struct target *t, const char *task, int failures)
{
    pthread_mutex_lock(&t->mu);
    ck_assert_int_lt(t->n_flaky, FLAKY_MAX);
    str_copy(t->flaky[t->n_flaky].task, TASK_NAME_MAX, task);
    t->flaky[t->n_flaky++].failures = failures;
    pthread_mutex_unlock(&t->mu);
}

/* Pushes of task seen so far (all of them when task is NULL). */
static int target_count(struct target *t, const char *task)
{
    int i, n = 0;

    pthread_mutex_lock(&t->mu);
    for (i = 0; i < t->n; i++)
        n += !task || strcmp(t->recs[i].task, task) == 0;
    pthread_mutex_unlock(&t->mu);
    return n;
}

/* Waits until task has been pushed n times; fails the test after timeout_ms. */
static void target_wait(struct target *t, const char *task, int n, int timeout_ms)
{
    int64_t end = time_mono_ms() + timeout_ms;
    int got;

    while ((got = target_count(t, task)) < n && time_mono_ms() < end)
        time_sleep_ms(10);
    ck_assert_msg(got >= n, "task %s pushed %d times within %d ms, want %d", task ? task : "*", got,
                  timeout_ms, n);
}

/* A copy of the k-th push of task (0-based). */
static struct rec target_rec(struct target *t, const char *task, int k)
{
    struct rec r;
    int i, left = k;

    memset(&r, 0, sizeof(r));
    pthread_mutex_lock(&t->mu);
    for (i = 0; i < t->n; i++) {
        if (strcmp(t->recs[i].task, task) == 0 && left-- == 0) {
            r = t->recs[i];
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
    ck_assert_msg(r.task[0], "no push %d of %s", k, task);
    return r;
}

/* ---- fixtures and helpers ----------------------------------------------- */

static void setup(void)
{
    log_init("queue_contract", NULL, LOG_ERROR, 2);
    queue_config_defaults(&QC);
    str_copy(QC.name, sizeof(QC.name), "contract-queue");
    str_copy(QC.location, sizeof(QC.location), "us-central1");
    QC.max_dispatches_per_second = 500;
    QC.max_concurrent_dispatches = 20;
    QC.retry.max_attempts = 5;
    QC.retry.max_retry_duration = 0;
    QC.retry.min_backoff = 0.1;
    QC.retry.max_backoff = 1;
    QC.retry.max_doublings = 2;
    QC.dispatch_deadline_s = 15;
    C = http_client_new(NULL);
    T = target_start();
    memset(&E, 0, sizeof(E));
    A->open(&QC, T->url, AUDIENCE, &E);
    ck_assert_ptr_nonnull(E.q);
}

static void teardown(void)
{
    if (E.q)
        A->close(&E);
    memset(&E, 0, sizeof(E));
    target_stop(T);
    T = NULL;
    http_client_free(C);
    C = NULL;
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

static enum status enqueue(const char *name, const char *body, int64_t when)
{
    struct task_spec t = spec(name, body, when);
    struct error err;
    enum status st;

    error_clear(&err);
    st = queue_enqueue(E.q, &t, &err);
    if (st != ST_OK && st != ST_ALREADY_EXISTS && st != ST_INVALID)
        fprintf(stderr, "enqueue %s: %s\n", name, err.message);
    return st;
}

#define ENQUEUE_IS(want, name, body, when)                                                         \
    do {                                                                                           \
        enum status st_ = enqueue((name), (body), (when));                                         \
        ck_assert_msg(st_ == (want), "enqueue %s -> %s, want %s", (name), status_name(st_),        \
                      status_name(want));                                                          \
    } while (0)

static double eta_of(const struct rec *r)
{
    double eta = 0;

    ck_assert_msg(str_to_double(r->eta, &eta), "X-CloudTasks-TaskETA \"%s\"", r->eta);
    return eta;
}

static struct oidc_verifier *verifier_for(const char *audience)
{
    const char *issuers[] = {E.issuer, NULL};
    struct oidc_config cfg;
    struct oidc_verifier *v;
    struct error err;

    memset(&cfg, 0, sizeof(cfg));
    cfg.issuers = issuers;
    cfg.audience = audience;
    cfg.email = E.email;
    cfg.jwks_json = E.jwks_json;
    cfg.jwks_url = E.jwks_url;
    cfg.fetch = E.jwks_url ? oidc_http_fetch : NULL;
    cfg.fetch_ud = C;
    v = oidc_verifier_new(&cfg, &err);
    ck_assert_msg(v != NULL, "verifier: %s", err.message);
    return v;
}

/* ---- the suite ------------------------------------------------------------ */

START_TEST(delivers_body_and_headers)
{
    static const char body[] = "{\"kind\":\"item\",\"batchId\":\"b_c\",\"itemId\":\"00001\"}";
    int64_t before = time_now_us();
    struct rec r;
    double eta;

    ENQUEUE_IS(ST_OK, "contract-one", body, 0);
    target_wait(T, "contract-one", 1, WAIT_MS);
    r = target_rec(T, "contract-one", 0);
    ck_assert_str_eq(r.body, body);
    ck_assert_str_eq(r.ctype, "application/json");
    ck_assert_str_eq(r.ua, "Google-Cloud-Tasks");
    ck_assert_str_eq(r.queue, QC.name);
    ck_assert_str_eq(r.retry, "0");
    ck_assert_str_eq(r.exec, "0");
    ck_assert_str_eq(r.prev, "");
    ck_assert_msg(str_starts_with(r.auth, "Bearer "), "Authorization \"%.40s\"", r.auth);
    /* The ETA is the schedule time: "now" at the enqueue, in seconds. */
    eta = eta_of(&r);
    ck_assert_double_ge(eta, (double)before / 1e6 - 1);
    ck_assert_double_le(eta, (double)r.wall_us / 1e6 + 0.01);
}
END_TEST

START_TEST(names_are_taken_before_and_after_delivery)
{
    ENQUEUE_IS(ST_OK, "contract-dup", "{}", 0);
    ENQUEUE_IS(ST_ALREADY_EXISTS, "contract-dup", "{\"other\":1}", 0);
    target_wait(T, "contract-dup", 1, WAIT_MS);
    /* Delivered and deleted: the name stays taken (the de-duplication window). */
    time_sleep_ms(200);
    ENQUEUE_IS(ST_ALREADY_EXISTS, "contract-dup", "{}", 0);
    time_sleep_ms(300);
    ck_assert_int_eq(target_count(T, "contract-dup"), 1);
    ck_assert_str_eq(target_rec(T, "contract-dup", 0).body, "{}");
}
END_TEST

START_TEST(invalid_names_are_refused)
{
    char long_name[TASK_NAME_MAX + 1];
    struct task_spec t;
    struct error err;

    ENQUEUE_IS(ST_INVALID, "bad name", "{}", 0);
    ENQUEUE_IS(ST_INVALID, "bad/name", "{}", 0);
    memset(&t, 0, sizeof(t));
    memset(t.name, 'x', TASK_NAME_MAX); /* no terminator */
    t.body = "{}";
    t.body_len = 2;
    ck_assert_int_eq(queue_enqueue(E.q, &t, &err), ST_INVALID);
    memset(long_name, 'y', TASK_NAME_MAX - 1);
    long_name[TASK_NAME_MAX - 1] = '\0';
    ENQUEUE_IS(ST_OK, long_name, "{}", 0); /* 499 characters are fine */
    ck_assert_int_eq(queue_remove(E.q, "bad/name", &err), ST_INVALID);
}
END_TEST

START_TEST(enqueue_many_mixes_new_and_existing)
{
    struct task_spec tasks[5];
    enum status results[5];
    struct error err;
    enum status st;

    ENQUEUE_IS(ST_OK, "many-a", "{\"n\":0}", 0);
    tasks[0] = spec("many-a", "{\"n\":1}", 0);
    tasks[1] = spec("many-b", "{\"n\":2}", 0);
    tasks[2] = spec("many-c", "{\"n\":3}", 0);
    tasks[3] = spec("many-b", "{\"n\":4}", 0);
    error_clear(&err);
    st = queue_enqueue_many(E.q, tasks, 4, results, &err);
    ck_assert_msg(st == ST_OK, "enqueue_many: %s: %s", status_name(st), err.message);
    ck_assert_int_eq(results[0], ST_ALREADY_EXISTS);
    ck_assert_int_eq(results[2], ST_OK);
    /* The two many-b: one created it, the other found it (in whatever order they ran). */
    ck_assert_msg((results[1] == ST_OK && results[3] == ST_ALREADY_EXISTS) ||
                      (results[1] == ST_ALREADY_EXISTS && results[3] == ST_OK),
                  "many-b: %s and %s", status_name(results[1]), status_name(results[3]));

    /* A bad task fails alone; the others are created and the error names it. */
    tasks[0] = spec("many-d", "{}", 0);
    tasks[1] = spec("many-a", "{}", 0);
    tasks[2] = spec("no good", "{}", 0);
    tasks[3] = spec("many-e", "{}", 0);
    tasks[4] = spec("many-c", "{}", 0);
    st = queue_enqueue_many(E.q, tasks, 5, results, &err);
    ck_assert_int_eq(st, ST_INVALID);
    ck_assert_int_eq(results[0], ST_OK);
    ck_assert_int_eq(results[1], ST_ALREADY_EXISTS);
    ck_assert_int_eq(results[2], ST_INVALID);
    ck_assert_int_eq(results[3], ST_OK);
    ck_assert_int_eq(results[4], ST_ALREADY_EXISTS);
    ck_assert_msg(strstr(err.message, "task 2 of 5") != NULL, "message: %s", err.message);
    ck_assert_int_eq(queue_enqueue_many(E.q, tasks, 0, results, &err), ST_OK);

    target_wait(T, NULL, 5, WAIT_MS);
    time_sleep_ms(300);
    ck_assert_int_eq(target_count(T, "many-a"), 1);
    ck_assert_int_eq(target_count(T, "many-b"), 1);
    ck_assert_int_eq(target_count(T, "many-c"), 1);
    ck_assert_int_eq(target_count(T, "many-d"), 1);
    ck_assert_int_eq(target_count(T, "many-e"), 1);
    ck_assert_str_eq(target_rec(T, "many-a", 0).body, "{\"n\":0}");
}
END_TEST

START_TEST(schedule_time_delays_delivery)
{
    int64_t when = time_now_us() + 1500000;
    struct rec later;

    ENQUEUE_IS(ST_OK, "sched-later", "{\"at\":\"later\"}", when);
    ENQUEUE_IS(ST_OK, "sched-now", "{\"at\":\"now\"}", 0);
    target_wait(T, "sched-now", 1, WAIT_MS);
    ck_assert_int_eq(target_count(T, "sched-later"), 0);
    target_wait(T, "sched-later", 1, WAIT_MS);
    later = target_rec(T, "sched-later", 0);
    ck_assert_int_ge(later.wall_us, when);
    ck_assert_int_lt(later.wall_us, when + 2 * US);
    ck_assert_msg(eta_of(&later) > (double)when / 1e6 - 0.001 &&
                      eta_of(&later) < (double)when / 1e6 + 0.001,
                  "ETA %s, scheduled %.6f", later.eta, (double)when / 1e6);
}
END_TEST

START_TEST(remove_prevents_delivery)
{
    int64_t when = time_now_us() + 1000000;
    struct error err;

    ENQUEUE_IS(ST_OK, "rm-gone", "{}", when);
    ENQUEUE_IS(ST_OK, "rm-kept", "{}", when);
    ck_assert_int_eq(queue_remove(E.q, "rm-gone", &err), ST_OK);
    ck_assert_int_eq(queue_remove(E.q, "rm-gone", &err), ST_OK);      /* already gone */
    ck_assert_int_eq(queue_remove(E.q, "rm-never-was", &err), ST_OK); /* never there */
    /* A removed name stays taken for the de-duplication window. */
    ENQUEUE_IS(ST_ALREADY_EXISTS, "rm-gone", "{}", 0);
    target_wait(T, "rm-kept", 1, WAIT_MS);
    time_sleep_ms(QUIET_MS / 3);
    ck_assert_int_eq(target_count(T, "rm-gone"), 0);
}
END_TEST

START_TEST(target_503_is_retried)
{
    static const char body[] = "{\"kind\":\"item\",\"itemId\":\"00007\"}";
    struct rec first, second;

    target_flaky(T, "flaky", 2);
    ENQUEUE_IS(ST_OK, "flaky", body, 0);
    target_wait(T, "flaky", 3, WAIT_MS);
    first = target_rec(T, "flaky", 0);
    second = target_rec(T, "flaky", 1);
    ck_assert_int_eq(first.status, 503);
    ck_assert_str_eq(first.retry, "0");
    ck_assert_str_eq(second.retry, "1");
    ck_assert_str_eq(second.prev, "503");
    ck_assert_str_eq(second.exec, "0"); /* a 5xx is not an execution */
    ck_assert_str_eq(target_rec(T, "flaky", 2).retry, "2");
    ck_assert_str_eq(target_rec(T, "flaky", 2).body, body);
    /* The first retry waits minBackoff (0.1 s). */
    ck_assert_int_ge(second.wall_us - first.wall_us, 90000);
    time_sleep_ms(300);
    ck_assert_int_eq(target_count(T, "flaky"), 3); /* the 200 ended it */
}
END_TEST

START_TEST(push_token_verifies_for_the_audience_only)
{
    struct oidc_verifier *ours, *other;
    json_t *claims = NULL;
    struct error err;
    struct rec r;

    ENQUEUE_IS(ST_OK, "token-task", "{}", 0);
    target_wait(T, "token-task", 1, WAIT_MS);
    r = target_rec(T, "token-task", 0);
    ours = verifier_for(AUDIENCE);
    other = verifier_for("https://another-service.example");
    error_clear(&err);
    ck_assert_msg(oidc_verify_authorization(ours, r.auth, &claims, &err) == ST_OK, "verify: %s",
                  err.message);
    ck_assert_str_eq(json_str_or(claims, "aud", ""), AUDIENCE);
    ck_assert_str_eq(json_str_or(claims, "iss", ""), E.issuer);
    ck_assert_str_eq(json_str_or(claims, "email", ""), E.email);
    ck_assert(json_is_true(json_object_get(claims, "email_verified")));
    json_decref(claims);
    ck_assert_int_eq(oidc_verify_authorization(other, r.auth, NULL, &err), ST_UNAUTHENTICATED);
    ck_assert_msg(strstr(err.message, "audience") != NULL, "%s", err.message);
    oidc_verifier_free(ours);
    oidc_verifier_free(other);
}
END_TEST

Suite *queue_contract_suite(const char *name, const struct queue_contract_adapter *adapter)
{
    Suite *s = suite_create(name);
    TCase *tc = tcase_create("contract");

    A = adapter;
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, delivers_body_and_headers);
    tcase_add_test(tc, names_are_taken_before_and_after_delivery);
    tcase_add_test(tc, invalid_names_are_refused);
    tcase_add_test(tc, enqueue_many_mixes_new_and_existing);
    tcase_add_test(tc, schedule_time_delays_delivery);
    tcase_add_test(tc, remove_prevents_delivery);
    tcase_add_test(tc, target_503_is_retried);
    tcase_add_test(tc, push_token_verifies_for_the_audience_only);
    suite_add_tcase(s, tc);
    return s;
}
