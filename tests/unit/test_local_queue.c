#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <microhttpd.h>
#include <sqlite3.h>

#include "check_main.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "http/client.h"
#include "queue/local_queue.h"

/* ---- a push target on 127.0.0.1, one thread per connection -------------- */

#define MAX_RECS     512
#define MAX_STATUSES 8

/* One request as the target saw it. */
struct rec {
    int64_t mono_us; /* arrival */
    int64_t wall_us;
    int index; /* attempts of this task seen before it */
    char task[128];
    char retry[16];
    char exec[16];
    char eta[40];
    char queue[128];
    char auth[256];
    char ua[64];
    char ctype[64];
    char prev[16]; /* "" when absent */
    char body[256];
};

struct target {
    struct MHD_Daemon *d;
    char url[96];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    /* behaviour, set before the dispatcher starts (or under mu) */
    int statuses[MAX_STATUSES]; /* answer to a task's n-th request; later ones default_status */
    int n_statuses;
    int default_status;
    int delay_ms;            /* sleep before answering */
    int delay_first;         /* only a task's first n requests sleep; 0 = all */
    const char *retry_after; /* sent with 429 and 503 */
    bool block;              /* hold every request until released */
    /* what it saw */
    struct rec recs[MAX_RECS];
    int n;
    int current;
    int peak;
};

struct upload {
    char body[256];
    size_t len;
};

static void copy_header(struct MHD_Connection *c, const char *name, char *out, size_t cap)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);

    str_copy(out, cap, v ? v : "");
}

/* Waits ms (or until the target stops); called with t->mu held. */
static void target_sleep_locked(struct target *t, int ms)
{
    int64_t end = time_mono_ms() + ms;

    while (!t->stopping) {
        int64_t left = end - time_mono_ms();
        struct timespec ts;

        if (left <= 0)
            break;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(left < 20 ? left : 20) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *data,
                                  size_t *data_size, void **con_cls)
{
    struct target *t = cls;
    struct upload *u = *con_cls;
    struct MHD_Response *r;
    struct rec *rec = NULL;
    enum MHD_Result ret;
    int status, i;
    char task[128];

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

    copy_header(c, "X-CloudTasks-TaskName", task, sizeof(task));
    pthread_mutex_lock(&t->mu);
    if (t->n < MAX_RECS) {
        rec = &t->recs[t->n++];
        memset(rec, 0, sizeof(*rec));
        rec->mono_us = time_mono_us();
        rec->wall_us = time_now_us();
        str_copy(rec->task, sizeof(rec->task), task);
        for (i = 0; i < t->n - 1; i++)
            rec->index += strcmp(t->recs[i].task, task) == 0;
        copy_header(c, "X-CloudTasks-TaskRetryCount", rec->retry, sizeof(rec->retry));
        copy_header(c, "X-CloudTasks-TaskExecutionCount", rec->exec, sizeof(rec->exec));
        copy_header(c, "X-CloudTasks-TaskETA", rec->eta, sizeof(rec->eta));
        copy_header(c, "X-CloudTasks-QueueName", rec->queue, sizeof(rec->queue));
        copy_header(c, "X-CloudTasks-TaskPreviousResponse", rec->prev, sizeof(rec->prev));
        copy_header(c, "Authorization", rec->auth, sizeof(rec->auth));
        copy_header(c, "User-Agent", rec->ua, sizeof(rec->ua));
        copy_header(c, "Content-Type", rec->ctype, sizeof(rec->ctype));
        memcpy(rec->body, u->body, u->len);
    }
    i = rec ? rec->index : 0;
    status = i < t->n_statuses ? t->statuses[i] : t->default_status;
    if (++t->current > t->peak)
        t->peak = t->current;
    pthread_cond_broadcast(&t->cv);
    while (t->block && !t->stopping)
        pthread_cond_wait(&t->cv, &t->mu);
    if (t->delay_ms > 0 && (t->delay_first == 0 || i < t->delay_first))
        target_sleep_locked(t, t->delay_ms);
    t->current--;
    pthread_mutex_unlock(&t->mu);

    r = MHD_create_response_from_buffer(2, "ok", MHD_RESPMEM_PERSISTENT);
    if (t->retry_after && (status == 429 || status == 503))
        MHD_add_response_header(r, "Retry-After", t->retry_after);
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
    t->default_status = 200;
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
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    MHD_stop_daemon(t->d);
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

static void target_set_block(struct target *t, bool block)
{
    pthread_mutex_lock(&t->mu);
    t->block = block;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* Waits until the target has seen n requests; false on timeout. */
static bool target_wait(struct target *t, int n, int timeout_ms)
{
    int64_t end = time_mono_ms() + timeout_ms;
    bool ok;

    pthread_mutex_lock(&t->mu);
    while (t->n < n && time_mono_ms() < end)
        target_sleep_locked(t, 10);
    ok = t->n >= n;
    pthread_mutex_unlock(&t->mu);
    return ok;
}

static int target_count(struct target *t)
{
    int n;

    pthread_mutex_lock(&t->mu);
    n = t->n;
    pthread_mutex_unlock(&t->mu);
    return n;
}

/* ---- fixtures ------------------------------------------------------------- */

struct fixture {
    char dir[64];
    char path[128];
    struct queue_config qc;
    struct queue *q;
    struct http_client *client;
    struct target *t;
    struct dispatcher *d;
};

static enum status fake_mint(void *ud, const char *audience, char **token, struct error *err)
{
    char buf[256];

    UNUSED(ud);
    UNUSED(err);
    ck_assert(str_printf(buf, sizeof(buf), "tok-for-%s", audience));
    *token = xstrdup(buf);
    return ST_OK;
}

static void fixture_init(struct fixture *f)
{
    struct error err;

    memset(f, 0, sizeof(*f));
    log_init("test_local_queue", NULL, LOG_ERROR, 2);
    str_copy(f->dir, sizeof(f->dir), "/tmp/lqueue-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(f->dir));
    ck_assert(str_printf(f->path, sizeof(f->path), "%s/batch.db", f->dir));
    queue_config_defaults(&f->qc);
    str_copy(f->qc.name, sizeof(f->qc.name), "test-queue");
    f->qc.max_dispatches_per_second = 500;
    f->qc.max_concurrent_dispatches = 100;
    f->qc.retry.max_attempts = 5;
    f->qc.retry.max_retry_duration = 0;
    f->qc.retry.min_backoff = 0.1;
    f->qc.retry.max_backoff = 1;
    f->qc.retry.max_doublings = 2;
    f->qc.dispatch_deadline_s = 5;
    f->q = queue_local_open(f->path, &f->qc, &err);
    ck_assert_msg(f->q != NULL, "open: %s", err.message);
    f->client = http_client_new(NULL);
    f->t = target_start();
}

static struct dispatcher *fixture_dispatch(struct fixture *f, double dup)
{
    struct dispatcher_options o = {
        .sqlite_path = f->path,
        .qc = &f->qc,
        .target_url = f->t->url,
        .audience = "https://worker.example",
        .mint = fake_mint,
        .client = f->client,
        .poll_interval_ms = 20,
        .duplicate_probability = dup,
    };
    struct error err;
    struct dispatcher *d = dispatcher_start(&o, &err);

    ck_assert_msg(d != NULL, "dispatcher_start: %s", err.message);
    return d;
}

static void fixture_release(struct fixture *f)
{
    char p[160];

    dispatcher_stop(f->d, 0);
    target_stop(f->t);
    http_client_free(f->client);
    queue_close(f->q);
    unlink(f->path);
    ck_assert(str_printf(p, sizeof(p), "%s-wal", f->path));
    unlink(p);
    ck_assert(str_printf(p, sizeof(p), "%s-shm", f->path));
    unlink(p);
    rmdir(f->dir);
}

static enum status enqueue(struct fixture *f, const char *name, const char *body, int64_t when)
{
    struct task_spec t;
    struct error err;

    memset(&t, 0, sizeof(t));
    str_copy(t.name, sizeof(t.name), name);
    t.body = body;
    t.body_len = strlen(body);
    t.schedule_time = when;
    return queue_enqueue(f->q, &t, &err);
}

static void enqueue_ok(struct fixture *f, const char *name, const char *body, int64_t when)
{
    enum status st = enqueue(f, name, body, when);

    ck_assert_msg(st == ST_OK, "enqueue %s: %s", name, status_name(st));
}

/* One integer from the database, through a connection of the test's own. */
static int64_t db_int(struct fixture *f, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;

    ck_assert_int_eq(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql,
                  sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static void db_exec(struct fixture *f, const char *sql)
{
    sqlite3 *db = NULL;

    ck_assert_int_eq(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK, "%s: %s", sql,
                  sqlite3_errmsg(db));
    sqlite3_close(db);
}

static struct dispatcher_stats stats_of(struct dispatcher *d)
{
    struct dispatcher_stats s;

    dispatcher_get_stats(d, &s);
    return s;
}

/* Waits until the dispatcher has finished n tasks (succeeded + dropped). */
static void wait_finished(struct dispatcher *d, uint64_t n, int timeout_ms)
{
    int64_t end = time_mono_ms() + timeout_ms;
    struct dispatcher_stats s = stats_of(d);

    while (s.succeeded + s.dropped < n && time_mono_ms() < end) {
        time_sleep_ms(10);
        s = stats_of(d);
    }
    ck_assert_msg(s.succeeded + s.dropped >= n, "finished %llu of %llu tasks in %d ms",
                  (unsigned long long)(s.succeeded + s.dropped), (unsigned long long)n, timeout_ms);
}

static double gap_s(const struct rec *a, const struct rec *b)
{
    return (double)(b->mono_us - a->mono_us) / 1e6;
}

/* ---- producer: validation and de-duplication ----------------------------- */

START_TEST(validation_and_dedup)
{
    struct fixture f;
    struct task_spec tasks[5];
    enum status results[5];
    char big_name[TASK_NAME_MAX + 8];
    struct task_spec t;
    struct error err;
    char *body;
    size_t i;

    fixture_init(&f);
    enqueue_ok(&f, "a", "{}", 0);
    ck_assert_int_eq(enqueue(&f, "a", "{}", 0), ST_ALREADY_EXISTS);

    /* Names: [A-Za-z0-9_-], fewer than 500 characters; "" lets the queue pick one. */
    ck_assert_int_eq(enqueue(&f, "bad name", "{}", 0), ST_INVALID);
    ck_assert_int_eq(enqueue(&f, "bad/name", "{}", 0), ST_INVALID);
    ck_assert_int_eq(enqueue(&f, "Ok_name-09", "{}", 0), ST_OK);
    memset(&t, 0, sizeof(t));
    memset(t.name, 'x', TASK_NAME_MAX - 1);
    t.body = "{}";
    t.body_len = 2;
    ck_assert_int_eq(queue_enqueue(f.q, &t, &err), ST_OK); /* 499 characters */
    memset(big_name, 'y', sizeof(big_name));
    memcpy(t.name, big_name, TASK_NAME_MAX); /* no terminator within the array */
    ck_assert_int_eq(queue_enqueue(f.q, &t, &err), ST_INVALID);
    ck_assert_int_eq(enqueue(&f, "", "{}", 0), ST_OK);
    ck_assert_int_eq(enqueue(&f, "", "{}", 0), ST_OK);
    ck_assert_int_eq(db_int(&f, "SELECT count(*) FROM tasks"), 5);

    /* Bodies up to 100 KB; schedule times up to 30 days ahead. */
    body = xmalloc(100 * 1024 + 2);
    memset(body, ' ', 100 * 1024 + 1);
    body[100 * 1024 + 1] = '\0';
    ck_assert_int_eq(enqueue(&f, "big", body, 0), ST_TOO_LARGE);
    body[100 * 1024] = '\0';
    ck_assert_int_eq(enqueue(&f, "big", body, 0), ST_OK);
    free(body);
    ck_assert_int_eq(enqueue(&f, "far", "{}", time_now_us() + 31LL * 86400 * 1000000), ST_INVALID);
    ck_assert_int_eq(enqueue(&f, "near", "{}", time_now_us() + 29LL * 86400 * 1000000), ST_OK);
    /* A time in the past means now. */
    ck_assert_int_eq(enqueue(&f, "past", "{}", 1000000), ST_OK);
    ck_assert_int_ge(db_int(&f, "SELECT schedule_time FROM tasks WHERE name = 'past'"),
                     time_now_us() - 60LL * 1000000);

    /* enqueue_many mixes new, existing, repeated and invalid names. */
    memset(tasks, 0, sizeof(tasks));
    for (i = 0; i < ARRAY_SIZE(tasks); i++) {
        tasks[i].body = "{\"n\":1}";
        tasks[i].body_len = 7;
    }
    str_copy(tasks[0].name, sizeof(tasks[0].name), "a");
    str_copy(tasks[1].name, sizeof(tasks[1].name), "b");
    str_copy(tasks[2].name, sizeof(tasks[2].name), "c");
    str_copy(tasks[3].name, sizeof(tasks[3].name), "b");
    str_copy(tasks[4].name, sizeof(tasks[4].name), "d");
    ck_assert_int_eq(queue_enqueue_many(f.q, tasks, 4, results, &err), ST_OK);
    ck_assert_int_eq(results[0], ST_ALREADY_EXISTS);
    ck_assert_int_eq(results[1], ST_OK);
    ck_assert_int_eq(results[2], ST_OK);
    ck_assert_int_eq(results[3], ST_ALREADY_EXISTS);
    str_copy(tasks[2].name, sizeof(tasks[2].name), "no good");
    ck_assert_int_eq(queue_enqueue_many(f.q, tasks, 5, results, &err), ST_INVALID);
    ck_assert_int_eq(results[2], ST_INVALID);
    ck_assert_int_eq(results[4], ST_OK); /* the others were still created */
    ck_assert_msg(strstr(err.message, "task 2 of 5") != NULL, "message: %s", err.message);

    /* remove() tombstones the name for the de-duplication window; absent names are fine. */
    ck_assert_int_eq(queue_remove(f.q, "b", &err), ST_OK);
    ck_assert_int_eq(queue_remove(f.q, "b", &err), ST_OK);
    ck_assert_int_eq(queue_remove(f.q, "never-was", &err), ST_OK);
    ck_assert_int_eq(enqueue(&f, "b", "{}", 0), ST_ALREADY_EXISTS);
    /* An hour later the name is free again. */
    db_exec(&f, "UPDATE task_tombstones SET deleted_at = deleted_at - 3700000000");
    ck_assert_int_eq(enqueue(&f, "b", "{}", 0), ST_OK);

    /* Opening the same file again (another process would) keeps the rows. */
    {
        struct queue *q2 = queue_local_open(f.path, &f.qc, &err);

        ck_assert_ptr_nonnull(q2);
        memset(&t, 0, sizeof(t));
        str_copy(t.name, sizeof(t.name), "c");
        ck_assert_int_eq(queue_enqueue(q2, &t, &err), ST_ALREADY_EXISTS);
        queue_close(q2);
    }
    fixture_release(&f);
}
END_TEST

START_TEST(enqueue_many_10k_is_fast)
{
    enum { N = 10000 };
    struct task_spec *tasks = xcalloc(N, sizeof(*tasks));
    enum status *results = xcalloc(N, sizeof(*results));
    const char *body = "{\"kind\":\"item\",\"batchId\":\"b_0123456789\",\"itemId\":\"00042\","
                       "\"generation\":1}";
    struct fixture f;
    struct error err;
    int64_t t0;
    double s1, s2;
    size_t i;

    fixture_init(&f);
    for (i = 0; i < N; i++) {
        char key[64];

        ck_assert(str_printf(key, sizeof(key), "b_0123456789-%05zu-g1", i));
        queue_task_name(key, tasks[i].name);
        tasks[i].body = body;
        tasks[i].body_len = strlen(body);
    }
    t0 = time_mono_us();
    ck_assert_int_eq(queue_enqueue_many(f.q, tasks, N, results, &err), ST_OK);
    s1 = (double)(time_mono_us() - t0) / 1e6;
    for (i = 0; i < N; i++)
        ck_assert_int_eq(results[i], ST_OK);
    ck_assert_int_eq(db_int(&f, "SELECT count(*) FROM tasks"), N);

    /* A retried fan-out finds every task already there. */
    t0 = time_mono_us();
    ck_assert_int_eq(queue_enqueue_many(f.q, tasks, N, results, &err), ST_OK);
    s2 = (double)(time_mono_us() - t0) / 1e6;
    for (i = 0; i < N; i++)
        ck_assert_int_eq(results[i], ST_ALREADY_EXISTS);
    ck_assert_msg(s1 < 5 && s2 < 5, "10k enqueue took %.2f s, again %.2f s", s1, s2);
    fprintf(stderr, "enqueue_many: 10000 tasks in %.3f s, again in %.3f s\n", s1, s2);
    free(tasks);
    free(results);
    fixture_release(&f);
}
END_TEST

/* ---- dispatch ----------------------------------------------------------- */

START_TEST(delivers_body_and_headers)
{
    struct fixture f;
    struct dispatcher_stats s;
    int64_t enq = time_now_us();
    double eta0, eta1;

    fixture_init(&f);
    f.t->statuses[0] = 503;
    f.t->n_statuses = 1;
    enqueue_ok(&f, "task-1", "{\"kind\":\"item\",\"itemId\":\"00001\"}", 0);
    f.d = fixture_dispatch(&f, 0);
    ck_assert(target_wait(f.t, 2, 10000));
    wait_finished(f.d, 1, 5000);

    ck_assert_str_eq(f.t->recs[0].task, "task-1");
    ck_assert_str_eq(f.t->recs[0].queue, "test-queue");
    ck_assert_str_eq(f.t->recs[0].ctype, "application/json");
    ck_assert_str_eq(f.t->recs[0].ua, "Google-Cloud-Tasks");
    ck_assert_str_eq(f.t->recs[0].auth, "Bearer tok-for-https://worker.example");
    ck_assert_str_eq(f.t->recs[0].body, "{\"kind\":\"item\",\"itemId\":\"00001\"}");
    ck_assert_str_eq(f.t->recs[0].retry, "0");
    ck_assert_str_eq(f.t->recs[0].exec, "0");
    ck_assert_str_eq(f.t->recs[0].prev, "");
    ck_assert_str_eq(f.t->recs[1].retry, "1");
    ck_assert_str_eq(f.t->recs[1].exec, "0"); /* a 5xx is not an execution */
    ck_assert_str_eq(f.t->recs[1].prev, "503");
    ck_assert_str_eq(f.t->recs[1].body, f.t->recs[0].body);
    ck_assert_str_eq(f.t->recs[1].auth, f.t->recs[0].auth);

    /* ETA: the schedule time of the attempt, in seconds with a fraction. */
    ck_assert(str_to_double(f.t->recs[0].eta, &eta0));
    ck_assert(str_to_double(f.t->recs[1].eta, &eta1));
    ck_assert_ptr_nonnull(strchr(f.t->recs[0].eta, '.'));
    ck_assert_double_ge(eta0, (double)enq / 1e6 - 0.01);
    ck_assert_double_le(eta0, (double)f.t->recs[0].wall_us / 1e6 + 0.01);
    ck_assert_double_ge(eta1 - (double)f.t->recs[0].wall_us / 1e6, 0.09);
    ck_assert_double_le(eta1 - (double)f.t->recs[0].wall_us / 1e6, 0.5);

    s = stats_of(f.d);
    ck_assert_uint_eq(s.dispatched, 2);
    ck_assert_uint_eq(s.retried, 1);
    ck_assert_uint_eq(s.succeeded, 1);
    ck_assert_uint_eq(s.dropped, 0);
    ck_assert_int_eq(db_int(&f, "SELECT count(*) FROM tasks"), 0);
    ck_assert_int_eq(db_int(&f, "SELECT count(*) FROM task_tombstones WHERE name = 'task-1'"), 1);
    /* Completed within the window: the name is still taken. */
    ck_assert_int_eq(enqueue(&f, "task-1", "{}", 0), ST_ALREADY_EXISTS);
    fixture_release(&f);
}
END_TEST

START_TEST(execution_count_counts_non_5xx_answers)
{
    static const int statuses[] = {429, 404, 500, 200};
    static const char *const exec[] = {"0", "1", "2", "2"};
    static const char *const prev[] = {"", "429", "404", "500"};
    struct fixture f;
    size_t i;

    fixture_init(&f);
    memcpy(f.t->statuses, statuses, sizeof(statuses));
    f.t->n_statuses = (int)ARRAY_SIZE(statuses);
    f.qc.retry.min_backoff = 0.05;
    enqueue_ok(&f, "exec", "{}", 0);
    f.d = fixture_dispatch(&f, 0);
    wait_finished(f.d, 1, 10000);
    ck_assert_int_eq(target_count(f.t), 4);
    for (i = 0; i < ARRAY_SIZE(statuses); i++) {
        char want[8];

        ck_assert(str_printf(want, sizeof(want), "%zu", i));
        ck_assert_str_eq(f.t->recs[i].retry, want);
        ck_assert_str_eq(f.t->recs[i].exec, exec[i]);
        ck_assert_str_eq(f.t->recs[i].prev, prev[i]);
    }
    fixture_release(&f);
}
END_TEST

START_TEST(dedup_after_delivery)
{
    struct fixture f;
    struct task_spec tasks[3];
    enum status results[3];
    struct error err;
    size_t i;

    fixture_init(&f);
    enqueue_ok(&f, "once", "{}", 0);
    f.d = fixture_dispatch(&f, 0);
    wait_finished(f.d, 1, 5000);
    ck_assert_int_eq(enqueue(&f, "once", "{}", 0), ST_ALREADY_EXISTS);

    memset(tasks, 0, sizeof(tasks));
    for (i = 0; i < ARRAY_SIZE(tasks); i++)
        tasks[i].body = "";
    str_copy(tasks[0].name, sizeof(tasks[0].name), "once");
    str_copy(tasks[1].name, sizeof(tasks[1].name), "twice");
    str_copy(tasks[2].name, sizeof(tasks[2].name), "thrice");
    ck_assert_int_eq(queue_enqueue_many(f.q, tasks, 3, results, &err), ST_OK);
    ck_assert_int_eq(results[0], ST_ALREADY_EXISTS);
    ck_assert_int_eq(results[1], ST_OK);
    ck_assert_int_eq(results[2], ST_OK);
    wait_finished(f.d, 3, 5000);
    time_sleep_ms(200);
    ck_assert_int_eq(target_count(f.t), 3); /* "once" was pushed once */
    fixture_release(&f);
}
END_TEST

START_TEST(schedule_time_in_the_future)
{
    struct fixture f;
    int64_t when = time_now_us() + 1000000;
    char eta[40];

    fixture_init(&f);
    enqueue_ok(&f, "later", "{}", when);
    enqueue_ok(&f, "now", "{}", 0);
    f.d = fixture_dispatch(&f, 0);
    ck_assert(target_wait(f.t, 1, 5000));
    ck_assert_str_eq(f.t->recs[0].task, "now");
    ck_assert(target_wait(f.t, 2, 5000));
    ck_assert_str_eq(f.t->recs[1].task, "later");
    ck_assert_int_ge(f.t->recs[1].wall_us, when);
    ck_assert_int_lt(f.t->recs[1].wall_us, when + 500000);
    ck_assert(str_printf(eta, sizeof(eta), "%lld.%06lld", (long long)(when / 1000000),
                         (long long)(when % 1000000)));
    ck_assert_str_eq(f.t->recs[1].eta, eta);
    fixture_release(&f);
}
END_TEST

START_TEST(retries_follow_the_backoff_formula)
{
    static const double want[] = {0.1, 0.2, 0.4};
    struct fixture f;
    struct dispatcher_stats s;
    size_t i;

    fixture_init(&f);
    f.qc.retry.min_backoff = 0.1;
    f.qc.retry.max_backoff = 1;
    f.qc.retry.max_doublings = 2;
    f.qc.retry.max_attempts = 4;
    f.t->statuses[0] = f.t->statuses[1] = f.t->statuses[2] = 500;
    f.t->n_statuses = 3;
    enqueue_ok(&f, "flaky", "{}", 0);
    f.d = fixture_dispatch(&f, 0);
    wait_finished(f.d, 1, 10000);
    ck_assert_int_eq(target_count(f.t), 4);
    for (i = 0; i < ARRAY_SIZE(want); i++) {
        double g = gap_s(&f.t->recs[i], &f.t->recs[i + 1]);

        ck_assert_msg(g >= want[i] - 0.005 && g <= want[i] + 0.15, "gap %zu is %.3f s, want %.3f s",
                      i + 1, g, want[i]);
    }
    s = stats_of(f.d);
    ck_assert_uint_eq(s.retried, 3);
    ck_assert_uint_eq(s.succeeded, 1);
    ck_assert_uint_eq(s.dropped, 0);
    fixture_release(&f);
}
END_TEST

/* The stop rule: retries end only when both max_attempts and max_retry_duration are spent. */
static const struct {
    int max_attempts;
    double max_retry_duration;
    int attempts;
} stop_rules[] = {
    {3, 0, 3},   /* a zero duration is always spent: exactly max_attempts */
    {1, 0.5, 4}, /* attempts at ~0, 0.1, 0.3, 0.7 s: the 4th fails after 0.5 s */
};

START_TEST(stop_rule_drops_the_task)
{
    struct fixture f;
    struct dispatcher_stats s;
    int n = stop_rules[_i].attempts;

    fixture_init(&f);
    f.qc.retry.max_attempts = stop_rules[_i].max_attempts;
    f.qc.retry.max_retry_duration = stop_rules[_i].max_retry_duration;
    f.t->default_status = 500;
    enqueue_ok(&f, "doomed", "{}", 0);
    f.d = fixture_dispatch(&f, 0);
    wait_finished(f.d, 1, 10000);
    time_sleep_ms(500); /* long enough for one more attempt, were there one */
    ck_assert_int_eq(target_count(f.t), n);
    ck_assert_str_eq(f.t->recs[n - 1].retry, n == 3 ? "2" : "3");
    s = stats_of(f.d);
    ck_assert_uint_eq(s.dropped, 1);
    ck_assert_uint_eq(s.retried, (uint64_t)n - 1);
    ck_assert_uint_eq(s.succeeded, 0);
    ck_assert_int_eq(db_int(&f, "SELECT count(*) FROM tasks"), 0);
    ck_assert_int_eq(enqueue(&f, "doomed", "{}", 0), ST_ALREADY_EXISTS);
    fixture_release(&f);
}
END_TEST

START_TEST(retry_after_on_503_is_honoured)
{
    struct fixture f;
    double g;

    fixture_init(&f);
    f.t->statuses[0] = 503;
    f.t->n_statuses = 1;
    f.t->retry_after = "1";
    enqueue_ok(&f, "slow-down", "{}", 0);
    f.d = fixture_dispatch(&f, 0);
    wait_finished(f.d, 1, 10000);
    ck_assert_int_eq(target_count(f.t), 2);
    g = gap_s(&f.t->recs[0], &f.t->recs[1]);
    ck_assert_msg(g >= 0.99 && g < 1.5, "gap %.3f s, want 1 s (Retry-After)", g);
    fixture_release(&f);
}
END_TEST

START_TEST(concurrency_is_capped)
{
    enum { N = 100 };
    struct fixture f;
    struct task_spec *tasks = xcalloc(N, sizeof(*tasks));
    enum status results[N];
    struct dispatcher_stats s;
    struct error err;
    int64_t t0;
    size_t i;

    fixture_init(&f);
    f.qc.max_concurrent_dispatches = 5;
    f.t->delay_ms = 200;
    for (i = 0; i < N; i++) {
        ck_assert(str_printf(tasks[i].name, sizeof(tasks[i].name), "c-%03zu", i));
        tasks[i].body = "{}";
        tasks[i].body_len = 2;
    }
    ck_assert_int_eq(queue_enqueue_many(f.q, tasks, N, results, &err), ST_OK);
    t0 = time_mono_us();
    f.d = fixture_dispatch(&f, 0);
    wait_finished(f.d, N, 30000);
    s = stats_of(f.d);
    ck_assert_int_le(f.t->peak, 5);
    ck_assert_int_ge(f.t->peak, 4);
    ck_assert_int_le(s.peak_in_flight, 5);
    ck_assert_uint_eq(s.succeeded, N);
    fprintf(stderr, "concurrency: %d tasks x 200 ms at 5 in flight in %.2f s, peak %d\n", N,
            (double)(time_mono_us() - t0) / 1e6, f.t->peak);
    free(tasks);
    fixture_release(&f);
}
END_TEST

START_TEST(rate_is_limited)
{
    enum { N = 40 };
    struct fixture f;
    struct task_spec tasks[N];
    enum status results[N];
    struct error err;
    double span;
    int i, j, most = 0;

    fixture_init(&f);
    f.qc.max_dispatches_per_second = 20; /* bucket: 4 tokens (0.2 s worth) */
    memset(tasks, 0, sizeof(tasks));
    for (i = 0; i < N; i++) {
        ck_assert(str_printf(tasks[i].name, sizeof(tasks[i].name), "r-%02d", i));
        tasks[i].body = "{}";
        tasks[i].body_len = 2;
    }
    ck_assert_int_eq(queue_enqueue_many(f.q, tasks, N, results, &err), ST_OK);
    f.d = fixture_dispatch(&f, 0);
    wait_finished(f.d, N, 20000);
    ck_assert_int_eq(target_count(f.t), N);
    span = gap_s(&f.t->recs[0], &f.t->recs[N - 1]);
    ck_assert_msg(span >= 1.5, "40 pushes at 20/s took %.3f s", span);
    /* No window of 0.25 s holds more than the bucket plus what refills in it (4 + 5), +1 slack. */
    for (i = 0; i < N; i++) {
        int in = 0;

        for (j = i; j < N && gap_s(&f.t->recs[i], &f.t->recs[j]) < 0.25; j++)
            in++;
        if (in > most)
            most = in;
    }
    ck_assert_msg(most <= 10, "%d pushes within 0.25 s", most);
    fprintf(stderr, "rate: 40 pushes at 20/s over %.3f s, at most %d in 0.25 s\n", span, most);
    fixture_release(&f);
}
END_TEST

START_TEST(dispatch_deadline_is_enforced)
{
    struct fixture f;
    struct dispatcher_stats s;
    double g;

    fixture_init(&f);
    f.qc.dispatch_deadline_s = 0.5;
    f.t->delay_ms = 2000;
    f.t->delay_first = 1;
    enqueue_ok(&f, "sluggish", "{}", 0);
    f.d = fixture_dispatch(&f, 0);
    wait_finished(f.d, 1, 10000);
    ck_assert_int_eq(target_count(f.t), 2);
    g = gap_s(&f.t->recs[0], &f.t->recs[1]);
    /* Deadline 0.5 s, then the first backoff 0.1 s; not the handler's 2 s. */
    ck_assert_msg(g >= 0.59 && g < 1.5, "gap %.3f s", g);
    ck_assert_str_eq(f.t->recs[1].retry, "1");
    ck_assert_str_eq(f.t->recs[1].prev, ""); /* no answer to report */
    s = stats_of(f.d);
    ck_assert_uint_eq(s.retried, 1);
    ck_assert_uint_eq(s.succeeded, 1);
    fixture_release(&f);
}
END_TEST

START_TEST(duplicates_are_injected)
{
    enum { N = 10 };
    struct fixture f;
    struct dispatcher_stats s;
    int64_t end;
    int i, j;

    fixture_init(&f);
    for (i = 0; i < N; i++) {
        char name[16];

        ck_assert(str_printf(name, sizeof(name), "dup-%d", i));
        enqueue_ok(&f, name, "{}", 0);
    }
    f.d = fixture_dispatch(&f, 1.0);
    wait_finished(f.d, N, 5000);
    ck_assert(target_wait(f.t, 2 * N, 5000));
    end = time_mono_ms() + 2000;
    do {
        s = stats_of(f.d);
        if (s.in_flight == 0)
            break;
        time_sleep_ms(10);
    } while (time_mono_ms() < end);
    ck_assert_uint_eq(s.duplicates, N);
    ck_assert_uint_eq(s.dispatched, N);
    ck_assert_uint_eq(s.succeeded, N);
    ck_assert_int_eq(target_count(f.t), 2 * N);
    for (i = 0; i < 2 * N; i++) {
        int same = 0;

        for (j = 0; j < 2 * N; j++)
            same += strcmp(f.t->recs[i].task, f.t->recs[j].task) == 0;
        ck_assert_int_eq(same, 2);
        ck_assert_str_eq(f.t->recs[i].retry, "0");
    }
    fixture_release(&f);
}
END_TEST

START_TEST(remove_prevents_delivery)
{
    struct fixture f;
    struct error err;
    int64_t when = time_now_us() + 300000;

    fixture_init(&f);
    enqueue_ok(&f, "keep", "{}", when);
    enqueue_ok(&f, "drop", "{}", when);
    ck_assert_int_eq(queue_remove(f.q, "drop", &err), ST_OK);
    f.d = fixture_dispatch(&f, 0);
    wait_finished(f.d, 1, 5000);
    time_sleep_ms(300);
    ck_assert_int_eq(target_count(f.t), 1);
    ck_assert_str_eq(f.t->recs[0].task, "keep");
    fixture_release(&f);
}
END_TEST

START_TEST(stop_releases_unfinished_leases)
{
    struct fixture f;
    int64_t t0;

    fixture_init(&f);
    f.t->block = true;
    enqueue_ok(&f, "held-1", "{}", 0);
    enqueue_ok(&f, "held-2", "{}", 0);
    f.d = fixture_dispatch(&f, 0);
    ck_assert(target_wait(f.t, 2, 5000));
    ck_assert_int_eq(db_int(&f, "SELECT count(*) FROM tasks WHERE lease_until > 0"), 2);
    dispatcher_stop(f.d, 100);
    ck_assert_int_eq(db_int(&f, "SELECT count(*) FROM tasks WHERE lease_until = 0"
                                " AND dispatch_count = 0 AND first_attempt_at = 0"),
                     2);
    target_set_block(f.t, false);

    /* The next dispatcher pushes them at once, not after the lease. */
    t0 = time_mono_us();
    f.d = fixture_dispatch(&f, 0);
    wait_finished(f.d, 2, 3000);
    ck_assert_int_lt(time_mono_us() - t0, 1000000);
    ck_assert_int_eq(target_count(f.t), 4);
    ck_assert_str_eq(f.t->recs[2].retry, "0");
    ck_assert_str_eq(f.t->recs[3].retry, "0");
    fixture_release(&f);
}
END_TEST

/*
 * A worker SIGKILLed with pushes in flight: its leases stay in the table,
 * and a new dispatcher pushes those tasks once the leases run out (deadline
 * 1 s + 2 s margin), as the next attempt.
 */
START_TEST(leases_of_a_killed_dispatcher_expire)
{
    struct fixture f;
    int64_t first, kill_at;
    pid_t pid;
    int i, wstatus;

    fixture_init(&f);
    f.qc.dispatch_deadline_s = 1;
    f.t->block = true;
    enqueue_ok(&f, "orphan-1", "{\"n\":1}", 0);
    enqueue_ok(&f, "orphan-2", "{\"n\":2}", 0);
    enqueue_ok(&f, "orphan-3", "{\"n\":3}", 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct http_client *c = http_client_new(NULL);
        struct dispatcher_options o = {
            .sqlite_path = f.path,
            .qc = &f.qc,
            .target_url = f.t->url,
            .client = c,
            .poll_interval_ms = 20,
        };
        struct error err;

        if (!dispatcher_start(&o, &err))
            _exit(2);
        time_sleep_ms(20000);
        _exit(3);
    }
    if (!target_wait(f.t, 3, 10000)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        ck_abort_msg("the child dispatcher did not push");
    }
    first = f.t->recs[0].mono_us;
    kill(pid, SIGKILL);
    ck_assert_int_eq(waitpid(pid, &wstatus, 0), pid);
    ck_assert(WIFSIGNALED(wstatus));
    kill_at = time_mono_us();
    ck_assert_int_eq(db_int(&f, "SELECT count(*) FROM tasks WHERE lease_until > 0"), 3);
    target_set_block(f.t, false);

    f.d = fixture_dispatch(&f, 0);
    wait_finished(f.d, 3, 10000);
    ck_assert_int_eq(target_count(f.t), 6);
    for (i = 3; i < 6; i++) {
        double after = (double)(f.t->recs[i].mono_us - first) / 1e6;

        ck_assert_msg(after >= 2.8 && after < 4.5, "re-pushed %.3f s after the first push", after);
        ck_assert_str_eq(f.t->recs[i].retry, "1"); /* the lost attempt counts */
        ck_assert_str_eq(f.t->recs[i].auth, "Bearer tok-for-https://worker.example");
    }
    fprintf(stderr, "lease recovery: killed %.3f s after the pushes, re-pushed after %.3f s\n",
            (double)(kill_at - first) / 1e6, (double)(f.t->recs[3].mono_us - first) / 1e6);
    ck_assert_int_eq(db_int(&f, "SELECT count(*) FROM tasks"), 0);
    fixture_release(&f);
}
END_TEST

START_TEST(two_dispatchers_never_share_an_attempt)
{
    enum { N = 60 };
    struct fixture f;
    struct task_spec tasks[N];
    enum status results[N];
    struct dispatcher *d2;
    struct dispatcher_stats s1, s2;
    struct error err;
    int i, j;

    fixture_init(&f);
    f.t->delay_ms = 20;
    memset(tasks, 0, sizeof(tasks));
    for (i = 0; i < N; i++) {
        ck_assert(str_printf(tasks[i].name, sizeof(tasks[i].name), "p-%02d", i));
        tasks[i].body = "{}";
        tasks[i].body_len = 2;
    }
    f.qc.max_concurrent_dispatches = 4;
    f.d = fixture_dispatch(&f, 0);
    d2 = fixture_dispatch(&f, 0);
    ck_assert_int_eq(queue_enqueue_many(f.q, tasks, N, results, &err), ST_OK);
    {
        int64_t end = time_mono_ms() + 15000;

        do {
            s1 = stats_of(f.d);
            s2 = stats_of(d2);
            if (s1.succeeded + s2.succeeded >= N)
                break;
            time_sleep_ms(10);
        } while (time_mono_ms() < end);
    }
    dispatcher_stop(d2, 1000);
    ck_assert_uint_eq(s1.succeeded + s2.succeeded, N);
    ck_assert_uint_eq(s1.dispatched + s2.dispatched, N);
    ck_assert_int_eq(target_count(f.t), N);
    for (i = 0; i < N; i++)
        for (j = i + 1; j < N; j++)
            ck_assert_str_ne(f.t->recs[i].task, f.t->recs[j].task);
    fixture_release(&f);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("local_queue");
    TCase *producer = tcase_create("producer");
    TCase *dispatch = tcase_create("dispatch");

    tcase_set_timeout(producer, 60);
    tcase_add_test(producer, validation_and_dedup);
    tcase_add_test(producer, enqueue_many_10k_is_fast);
    suite_add_tcase(s, producer);

    tcase_set_timeout(dispatch, 60);
    tcase_add_test(dispatch, delivers_body_and_headers);
    tcase_add_test(dispatch, execution_count_counts_non_5xx_answers);
    tcase_add_test(dispatch, dedup_after_delivery);
    tcase_add_test(dispatch, schedule_time_in_the_future);
    tcase_add_test(dispatch, retries_follow_the_backoff_formula);
    tcase_add_loop_test(dispatch, stop_rule_drops_the_task, 0, ARRAY_SIZE(stop_rules));
    tcase_add_test(dispatch, retry_after_on_503_is_honoured);
    tcase_add_test(dispatch, concurrency_is_capped);
    tcase_add_test(dispatch, rate_is_limited);
    tcase_add_test(dispatch, dispatch_deadline_is_enforced);
    tcase_add_test(dispatch, duplicates_are_injected);
    tcase_add_test(dispatch, remove_prevents_delivery);
    tcase_add_test(dispatch, stop_releases_unfinished_leases);
    tcase_add_test(dispatch, leases_of_a_killed_dispatcher_expire);
    tcase_add_test(dispatch, two_dispatchers_never_share_an_attempt);
    suite_add_tcase(s, dispatch);
    return s;
}
