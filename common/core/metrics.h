/*
 * metrics.h - counters, gauges and histograms rendered in the Prometheus
 * text format for GET /metrics.
 *
 * Metrics live in one process-wide registry. A metric is declared once (at
 * start-up or lazily; declaring the same name twice returns the same
 * metric) with a fixed list of label names; each distinct combination of
 * label values is a series. All operations are thread-safe. The number of
 * series per metric is bounded (METRICS_MAX_SERIES): past it, new label
 * combinations fold into one series whose labels are all "other", so a
 * misbehaving label cannot grow memory without bound.
 */
#ifndef CORE_METRICS_H
#define CORE_METRICS_H

#include <stddef.h>

#include "core/buf.h"
#include "core/error.h"

#define METRICS_MAX_LABELS 4
#define METRICS_MAX_SERIES 512

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metric;

/*
 * Declares a metric. labels is a comma-separated list of label names ("" or
 * NULL for none, at most METRICS_MAX_LABELS). For histograms, buckets are
 * the upper bounds in increasing order (n_buckets of them; +Inf is implied).
 * Returns a borrowed pointer valid for the life of the process.
 */
struct metric *metric_counter(const char *name, const char *help, const char *labels);
struct metric *metric_gauge(const char *name, const char *help, const char *labels);
struct metric *metric_histogram(const char *name, const char *help, const char *labels,
                                const double *buckets, size_t n_buckets);

/*
 * Updates a series. values holds one value per declared label (NULL when
 * the metric has none).
 */
void metric_add(struct metric *m, const char *const *values, double delta);
void metric_set(struct metric *m, const char *const *values, double value);
void metric_observe(struct metric *m, const char *const *values, double value);

/* Reads a counter/gauge series (0 when absent); for tests. */
double metric_value(struct metric *m, const char *const *values);

/* Appends every metric in the text exposition format to out. */
enum status metrics_render(struct buf *out);

/* Default latency buckets in seconds (0.005 .. 120). */
extern const double metrics_latency_buckets[];
extern const size_t metrics_latency_buckets_n;

#endif
