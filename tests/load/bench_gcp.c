/*
 * bench_gcp.c - the Google-mode costs, measured against the Firestore
 * emulator (behind the counting proxy) and fake Cloud Tasks.
 *
 *   batchd-bench-gcp ops [--images N] [--runs R]
 *       Firestore reads and writes per processed item, counted by the proxy,
 *       for a whole batch (creation, processing, completion). The status
 *       polls of the benchmark itself are measured and subtracted.
 *   batchd-bench-gcp enqueue [--images N] [--latency-ms L] [--runs R]
 *       a batch of N images with L ms added to every createTask by the fake:
 *       the time until the creator answers, and tasks created per second
 *       until every item has its task (fan-out included).
 *
 * Needs FIRESTORE_EMULATOR_HOST (tests/load/run.sh starts the emulator).
 * Medians over the runs are printed last.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "harness.h"

#define MAX_RUNS 20

static const char *queue_json =
    "{\"name\":\"bench\",\"rateLimits\":{\"maxDispatchesPerSecond\":500,"
    "\"maxConcurrentDispatches\":32},\"retryConfig\":{\"maxAttempts\":10,"
    "\"minBackoff\":\"0.1s\",\"maxBackoff\":\"5s\",\"maxDoublings\":4},"
    "\"dispatchDeadline\":\"120s\"}";

static json_t *get(struct stack *s, const char *base, const char *path)
{
    char url[256];
    long status;
    json_t *j;

    snprintf(url, sizeof(url), "%s%s", base, path);
    j = http_json_call(s, "GET", url, NULL, NULL, &status);
    need(status == 200, "%s answered %ld", url, status);
    return j;
}

static void proxy_totals(struct stack *s, double *reads, double *writes)
{
    json_t *j = get(s, s->proxy_url, "/proxy/stats");
    json_t *t = json_object_get(j, "totals");

    *reads = (double)json_integer_value(json_object_get(t, "reads"));
    *writes = (double)json_integer_value(json_object_get(t, "writes"));
    json_decref(j);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One batch through the whole flow; reads and writes per item out. */
static void run_ops(int images, double *reads_per_item, double *writes_per_item)
{
    const char *worker_env[] = {"LOG_LEVEL=WARNING", NULL};
    const char *creator_env[] = {"LOG_LEVEL=WARNING", NULL};
    const char *sim_env[] = {"SIM_FAST=true", NULL};
    struct stack_opts o = {.gcp = true,
                           .queue_json = queue_json,
                           .worker_env = worker_env,
                           .creator_env = creator_env,
                           .sim_env = sim_env};
    struct stack s;
    double r0, w0, r1, w1, pr0, pw0, pr1, pw1;
    char path[256];
    long status;
    const char *id;
    int polls = 0;
    json_t *doc;

    stack_start(&s, &o);
    proxy_totals(&s, &r0, &w0);
    id = create_demo_batch(&s, images, NULL, &status);
    need(status == 201, "create answered %ld", status);
    snprintf(path, sizeof(path), "/api/batch/status/%s?limit=1", id);
    for (;;) {
        const char *st;

        time_sleep_ms(500);
        doc = get(&s, s.creator_url, path);
        polls++;
        st = json_str_or(doc, "status", "");
        if (strcmp(st, "processing") != 0 && strcmp(st, "creating") != 0)
            break;
        json_decref(doc);
    }
    need(jint(doc, "successCount") == images, "only %lld of %d succeeded",
         jint(doc, "successCount"), images);
    json_decref(doc);
    proxy_totals(&s, &r1, &w1);
    /* What one status poll costs, to take the benchmark's own polling out. */
    proxy_totals(&s, &pr0, &pw0);
    json_decref(get(&s, s.creator_url, path));
    proxy_totals(&s, &pr1, &pw1);
    *reads_per_item = ((r1 - r0) - polls * (pr1 - pr0)) / images;
    *writes_per_item = ((w1 - w0) - polls * (pw1 - pw0)) / images;
    stack_stop(&s);
}

static void run_enqueue(int images, int latency_ms, double *answer_ms, double *tasks_per_s,
                        double *all_s)
{
    char latency[64];
    const char *tasks_env[] = {latency, NULL};
    const char *worker_env[] = {"LOG_LEVEL=WARNING", NULL};
    const char *creator_env[] = {"LOG_LEVEL=WARNING", NULL};
    const char *sim_env[] = {"SIM_FAST=true", NULL};
    struct stack_opts o = {.gcp = true,
                           .queue_json = queue_json,
                           .tasks_env = tasks_env,
                           .worker_env = worker_env,
                           .creator_env = creator_env,
                           .sim_env = sim_env};
    struct stack s;
    int64_t t0, t1, deadline;
    long status;
    json_t *j;
    int64_t want, created = 0;

    snprintf(latency, sizeof(latency), "FAKE_LATENCY_MS=%d", latency_ms);
    stack_start(&s, &o);
    t0 = time_mono_us();
    create_demo_batch(&s, images, NULL, &status);
    t1 = time_mono_us();
    need(status == 201, "create answered %ld", status);
    /* Item tasks plus the fan-out tasks of batches above 500 images. */
    want = images + (images > 500 ? (images + 499) / 500 : 0);
    deadline = time_mono_ms() + 600000;
    while (created < want && time_mono_ms() < deadline) {
        j = get(&s, s.tasks_url, "/fake/stats");
        created = json_integer_value(json_object_get(j, "created"));
        json_decref(j);
        time_sleep_ms(50);
    }
    need(created >= want, "only %lld of %lld tasks created", (long long)created, (long long)want);
    *answer_ms = (double)(t1 - t0) / 1000.0;
    *all_s = (double)(time_mono_us() - t0) / 1e6;
    *tasks_per_s = (double)want / *all_s;
    stack_stop(&s);
}

static void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s ops|enqueue [--images N] [--latency-ms L] [--runs R]\n"
            "needs FIRESTORE_EMULATOR_HOST\n",
            prog);
    exit(2);
}

int main(int argc, char **argv)
{
    int64_t images = 0, latency_ms = 20, runs = 3;
    double a[MAX_RUNS], b[MAX_RUNS], c[MAX_RUNS];
    bool ops;
    int i;

    if (argc < 2 || (strcmp(argv[1], "ops") != 0 && strcmp(argv[1], "enqueue") != 0))
        usage(argv[0]);
    ops = strcmp(argv[1], "ops") == 0;
    images = ops ? 200 : 10000;
    for (i = 2; i < argc; i += 2) {
        int64_t *slot = NULL, max = 0;

        if (strcmp(argv[i], "--images") == 0)
            slot = &images, max = 10000;
        else if (strcmp(argv[i], "--latency-ms") == 0)
            slot = &latency_ms, max = 10000;
        else if (strcmp(argv[i], "--runs") == 0)
            slot = &runs, max = MAX_RUNS;
        if (!slot || i + 1 >= argc || !str_to_i64(argv[i + 1], 0, max, slot))
            usage(argv[0]);
    }
    if (!stack_gcp_available())
        usage(argv[0]);
    for (i = 0; i < runs; i++) {
        if (ops) {
            run_ops((int)images, &a[i], &b[i]);
            printf("run %d: %lld images, firestore reads/item %.2f, writes/item %.2f\n", i + 1,
                   (long long)images, a[i], b[i]);
        } else {
            run_enqueue((int)images, (int)latency_ms, &a[i], &b[i], &c[i]);
            printf("run %d: %lld images, %lld ms per createTask: creator answered in %.0f ms, "
                   "all tasks created after %.2f s, %.0f tasks/s\n",
                   i + 1, (long long)images, (long long)latency_ms, a[i], c[i], b[i]);
        }
        fflush(stdout);
    }
    if (ops)
        printf("median: firestore reads/item %.2f, writes/item %.2f\n", median(a, (int)runs),
               median(b, (int)runs));
    else
        printf("median: creator answered in %.0f ms, %.0f tasks/s, all created after %.2f s\n",
               median(a, (int)runs), median(b, (int)runs), median(c, (int)runs));
    return 0;
}
