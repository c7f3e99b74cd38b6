/*
 * bench.c - the local stack under load, measured from outside.
 *
 *   batchd-bench [--images N] [--latency-ms L] [--concurrency C] [--runs R]
 *
 * Each run starts a fresh stack (simulator with L ms of provider latency,
 * worker whose dispatcher keeps C pushes in flight, creator), submits one
 * batch of N demo images, and measures: the creator's answer time, the time
 * until the batch is finished, items per second, CPU milliseconds per item
 * for the creator and the worker (from /proc/<pid>/stat), and their peak RSS
 * (VmHWM). With L > 0 it also prints the ratio of the measured total time to
 * the ideal N x L / C. Medians over the runs are printed last. The simulator
 * runs with SIM_FAST (cached images) so that the fixture's PNG work does not
 * eat the two cores the services are measured on; its CPU is printed too.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "harness.h"

#define MAX_RUNS 20

struct sample {
    double create_ms, total_s, items_per_s, creator_cpu_ms, worker_cpu_ms, sim_cpu_ms,
        creator_rss_mb, worker_rss_mb, ratio;
};

/* utime + stime of a process, in milliseconds. */
static double cpu_ms(pid_t pid)
{
    char path[64], line[4096], *p;
    unsigned long long utime = 0, stime = 0;
    FILE *f;
    int field;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    need(f != NULL, "cannot read %s", path);
    need(fgets(line, sizeof(line), f) != NULL, "empty %s", path);
    fclose(f);
    p = strrchr(line, ')'); /* the command name may contain spaces */
    need(p != NULL, "bad %s", path);
    for (field = 2, p++; *p && field < 15; p++) {
        if (*p == ' ') {
            field++;
            if (field == 14)
                utime = strtoull(p + 1, NULL, 10);
        }
    }
    stime = strtoull(p, NULL, 10);
    return (double)(utime + stime) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

/* Peak resident set size in MiB. */
static double peak_rss_mb(pid_t pid)
{
    char path[64], line[256];
    FILE *f;
    double kb = 0;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    need(f != NULL, "cannot read %s", path);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = strtod(line + 6, NULL);
    fclose(f);
    return kb / 1024.0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(const struct sample *s, int n, size_t offset)
{
    double v[MAX_RUNS];
    int i;

    for (i = 0; i < n; i++)
        v[i] = *(const double *)((const char *)&s[i] + offset);
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void run_once(int images, int latency_ms, int concurrency, struct sample *out)
{
    char queue[512], sim_latency[64], url[256];
    const char *sim_env[] = {sim_latency, "SIM_FAST=true", NULL};
    const char *worker_env[] = {"LOG_LEVEL=WARNING", "ITEM_LEASE_S=120", NULL};
    const char *creator_env[] = {"LOG_LEVEL=WARNING", NULL};
    struct stack_opts o = {.queue_json = queue,
                           .sim_env = sim_env,
                           .worker_env = worker_env,
                           .creator_env = creator_env};
    struct stack s;
    double c0, w0, s0;
    int64_t t0, t1;
    long status;
    const char *id;
    json_t *doc;

    snprintf(queue, sizeof(queue),
             "{\"name\":\"bench\",\"rateLimits\":{\"maxDispatchesPerSecond\":500,"
             "\"maxConcurrentDispatches\":%d},\"retryConfig\":{\"maxAttempts\":10,"
             "\"minBackoff\":\"0.1s\",\"maxBackoff\":\"5s\",\"maxDoublings\":4},"
             "\"dispatchDeadline\":\"120s\"}",
             concurrency);
    snprintf(sim_latency, sizeof(sim_latency), "SIM_LATENCY_MS=%d", latency_ms);
    stack_start(&s, &o);
    c0 = cpu_ms(s.creator.pid);
    w0 = cpu_ms(s.worker.pid);
    s0 = cpu_ms(s.sim.pid);
    t0 = time_mono_us();
    id = create_demo_batch(&s, images, NULL, &status);
    t1 = time_mono_us();
    need(status == 201, "create answered %ld", status);
    snprintf(url, sizeof(url), "%s/api/batch/status/%s?limit=1", s.creator_url, id);
    for (;;) {
        const char *st;

        doc = http_json_call(&s, "GET", url, NULL, NULL, &status);
        st = json_str_or(doc, "status", "");
        if (status == 200 && strcmp(st, "processing") != 0 && strcmp(st, "creating") != 0)
            break;
        json_decref(doc);
        time_sleep_ms(50);
    }
    out->total_s = (double)(time_mono_us() - t0) / 1e6;
    need(jint(doc, "successCount") == images, "only %lld of %d images succeeded",
         jint(doc, "successCount"), images);
    json_decref(doc);
    out->create_ms = (double)(t1 - t0) / 1000.0;
    out->items_per_s = images / out->total_s;
    out->creator_cpu_ms = (cpu_ms(s.creator.pid) - c0) / images;
    out->worker_cpu_ms = (cpu_ms(s.worker.pid) - w0) / images;
    out->sim_cpu_ms = (cpu_ms(s.sim.pid) - s0) / images;
    out->creator_rss_mb = peak_rss_mb(s.creator.pid);
    out->worker_rss_mb = peak_rss_mb(s.worker.pid);
    out->ratio =
        latency_ms > 0 ? out->total_s / ((double)images * latency_ms / 1000.0 / concurrency) : 0;
    stack_stop(&s);
}

static void usage(const char *prog)
{
    fprintf(stderr, "usage: %s [--images N] [--latency-ms L] [--concurrency C] [--runs R]\n", prog);
    exit(2);
}

int main(int argc, char **argv)
{
    int64_t images = 1000, latency_ms = 0, concurrency = 100, runs = 3;
    struct sample samples[MAX_RUNS];
    int i;

    for (i = 1; i < argc; i += 2) {
        int64_t *slot = NULL, max = 0;

        if (strcmp(argv[i], "--images") == 0)
            slot = &images, max = 10000;
        else if (strcmp(argv[i], "--latency-ms") == 0)
            slot = &latency_ms, max = 60000;
        else if (strcmp(argv[i], "--concurrency") == 0)
            slot = &concurrency, max = 5000;
        else if (strcmp(argv[i], "--runs") == 0)
            slot = &runs, max = MAX_RUNS;
        if (!slot || i + 1 >= argc ||
            !str_to_i64(argv[i + 1], slot == &latency_ms ? 0 : 1, max, slot))
            usage(argv[0]);
    }
    printf("batchd-bench: %lld images, provider latency %lld ms, %lld concurrent dispatches, "
           "%lld runs\n",
           (long long)images, (long long)latency_ms, (long long)concurrency, (long long)runs);
    printf("%4s %10s %9s %9s %12s %12s %12s %10s %10s %7s\n", "run", "create_ms", "total_s",
           "items/s", "creator_cpu", "worker_cpu", "sim_cpu", "creator_mb", "worker_mb", "ratio");
    for (i = 0; i < runs; i++) {
        struct sample *x = &samples[i];

        run_once((int)images, (int)latency_ms, (int)concurrency, x);
        printf("%4d %10.1f %9.2f %9.1f %9.3f ms %9.3f ms %9.3f ms %10.1f %10.1f %7.3f\n", i + 1,
               x->create_ms, x->total_s, x->items_per_s, x->creator_cpu_ms, x->worker_cpu_ms,
               x->sim_cpu_ms, x->creator_rss_mb, x->worker_rss_mb, x->ratio);
        fflush(stdout);
    }
#define MED(f) median(samples, (int)runs, offsetof(struct sample, f))
    printf("%4s %10.1f %9.2f %9.1f %9.3f ms %9.3f ms %9.3f ms %10.1f %10.1f %7.3f\n", "med",
           MED(create_ms), MED(total_s), MED(items_per_s), MED(creator_cpu_ms), MED(worker_cpu_ms),
           MED(sim_cpu_ms), MED(creator_rss_mb), MED(worker_rss_mb), MED(ratio));
    if (latency_ms > 0)
        printf("ideal total: %.2f s (images x latency / concurrency); median ratio %.3f\n",
               (double)images * (double)latency_ms / 1000.0 / (double)concurrency, MED(ratio));
#undef MED
    return 0;
}
