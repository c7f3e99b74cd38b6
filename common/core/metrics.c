#include "core/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

const double metrics_latency_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                          2.5,   5,    10,    20,   30,  60,   120};
const size_t metrics_latency_buckets_n = ARRAY_SIZE(metrics_latency_buckets);

struct series {
    char *values[METRICS_MAX_LABELS];
    double value;    /* counter/gauge value, histogram sum */
    double count;    /* histogram observations */
    double *buckets; /* histogram cumulative-at-render counts per bound */
    struct series *next;
};

struct metric {
    char *name;
    char *help;
    enum metric_kind kind;
    char *labels[METRICS_MAX_LABELS];
    size_t n_labels;
    double *bounds;
    size_t n_bounds;
    pthread_mutex_t lock;
    struct series *series;
    size_t n_series;
    struct metric *next;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metric *registry;

static struct metric *declare(const char *name, const char *help, const char *labels,
                              enum metric_kind kind, const double *bounds, size_t n_bounds)
{
    struct metric *m, **tail;

    pthread_mutex_lock(&registry_lock);
    for (tail = &registry; *tail; tail = &(*tail)->next) {
        if (strcmp((*tail)->name, name) == 0) {
            m = *tail;
            pthread_mutex_unlock(&registry_lock);
            if (m->kind != kind)
                BUG("metric %s redeclared with another kind", name);
            return m;
        }
    }
    m = xcalloc(1, sizeof(*m));
    m->name = xstrdup(name);
    m->help = xstrdup(help);
    m->kind = kind;
    pthread_mutex_init(&m->lock, NULL);
    if (labels && *labels) {
        const char *p = labels;

        while (p) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);

            if (m->n_labels == METRICS_MAX_LABELS)
                BUG("metric %s has too many labels", name);
            m->labels[m->n_labels] = xmalloc(len + 1);
            memcpy(m->labels[m->n_labels], p, len);
            m->labels[m->n_labels][len] = '\0';
            m->n_labels++;
            p = comma ? comma + 1 : NULL;
        }
    }
    if (n_bounds) {
        m->bounds = xmalloc(n_bounds * sizeof(double));
        memcpy(m->bounds, bounds, n_bounds * sizeof(double));
        m->n_bounds = n_bounds;
    }
    *tail = m;
    pthread_mutex_unlock(&registry_lock);
    return m;
}

struct metric *metric_counter(const char *name, const char *help, const char *labels)
{
    return declare(name, help, labels, METRIC_COUNTER, NULL, 0);
}

struct metric *metric_gauge(const char *name, const char *help, const char *labels)
{
    return declare(name, help, labels, METRIC_GAUGE, NULL, 0);
}

struct metric *metric_histogram(const char *name, const char *help, const char *labels,
                                const double *buckets, size_t n_buckets)
{
    return declare(name, help, labels, METRIC_HISTOGRAM, buckets, n_buckets);
}

static bool same_values(const struct metric *m, const struct series *s, const char *const *values)
{
    size_t i;

    for (i = 0; i < m->n_labels; i++)
        if (strcmp(s->values[i], values[i] ? values[i] : "") != 0)
            return false;
    return true;
}

/* Finds or creates a series; called with m->lock held. */
static struct series *find_series(struct metric *m, const char *const *values)
{
    static const char *const other[METRICS_MAX_LABELS] = {"other", "other", "other", "other"};
    struct series *s;
    size_t i;

    for (s = m->series; s; s = s->next)
        if (same_values(m, s, values))
            return s;
    /* The overflow series itself is allowed one slot past the bound. */
    if (m->n_series >= METRICS_MAX_SERIES && values != other)
        return find_series(m, other);
    s = xcalloc(1, sizeof(*s));
    for (i = 0; i < m->n_labels; i++)
        s->values[i] = xstrdup(values[i] ? values[i] : "");
    if (m->kind == METRIC_HISTOGRAM)
        s->buckets = xcalloc(m->n_bounds, sizeof(double));
    s->next = m->series;
    m->series = s;
    m->n_series++;
    return s;
}

void metric_add(struct metric *m, const char *const *values, double delta)
{
    pthread_mutex_lock(&m->lock);
    find_series(m, values)->value += delta;
    pthread_mutex_unlock(&m->lock);
}

void metric_set(struct metric *m, const char *const *values, double value)
{
    pthread_mutex_lock(&m->lock);
    find_series(m, values)->value = value;
    pthread_mutex_unlock(&m->lock);
}

void metric_observe(struct metric *m, const char *const *values, double value)
{
    struct series *s;
    size_t i;

    pthread_mutex_lock(&m->lock);
    s = find_series(m, values);
    s->value += value;
    s->count += 1;
    for (i = 0; i < m->n_bounds; i++)
        if (value <= m->bounds[i])
            s->buckets[i] += 1;
    pthread_mutex_unlock(&m->lock);
}

double metric_value(struct metric *m, const char *const *values)
{
    struct series *s;
    double v = 0;

    pthread_mutex_lock(&m->lock);
    for (s = m->series; s; s = s->next)
        if (same_values(m, s, values))
            v = m->kind == METRIC_HISTOGRAM ? s->count : s->value;
    pthread_mutex_unlock(&m->lock);
    return v;
}

/* Label values are escaped per the exposition format: backslash, quote, newline. */
static enum status put_escaped(struct buf *out, const char *v)
{
    enum status st = ST_OK;

    for (; *v && st == ST_OK; v++) {
        if (*v == '\\')
            st = buf_append_str(out, "\\\\");
        else if (*v == '"')
            st = buf_append_str(out, "\\\"");
        else if (*v == '\n')
            st = buf_append_str(out, "\\n");
        else
            st = buf_append(out, v, 1);
    }
    return st;
}

static enum status put_labels(struct buf *out, const struct metric *m, const struct series *s,
                              const char *le)
{
    enum status st = ST_OK;
    size_t i;

    if (m->n_labels == 0 && !le)
        return ST_OK;
    st = buf_append_str(out, "{");
    for (i = 0; i < m->n_labels && st == ST_OK; i++) {
        st = buf_printf(out, "%s%s=\"", i ? "," : "", m->labels[i]);
        if (st == ST_OK)
            st = put_escaped(out, s->values[i]);
        if (st == ST_OK)
            st = buf_append_str(out, "\"");
    }
    if (le && st == ST_OK)
        st = buf_printf(out, "%sle=\"%s\"", m->n_labels ? "," : "", le);
    if (st == ST_OK)
        st = buf_append_str(out, "}");
    return st;
}

static const char *kind_name(enum metric_kind k)
{
    return k == METRIC_COUNTER ? "counter" : k == METRIC_GAUGE ? "gauge" : "histogram";
}

static enum status render_metric(struct buf *out, struct metric *m)
{
    enum status st;
    struct series *s;

    st = buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
                    kind_name(m->kind));
    for (s = m->series; s && st == ST_OK; s = s->next) {
        if (m->kind != METRIC_HISTOGRAM) {
            st = buf_append_str(out, m->name);
            if (st == ST_OK)
                st = put_labels(out, m, s, NULL);
            if (st == ST_OK)
                st = buf_printf(out, " %.15g\n", s->value);
            continue;
        }
        for (size_t i = 0; i <= m->n_bounds && st == ST_OK; i++) {
            char le[32];

            if (i < m->n_bounds)
                snprintf(le, sizeof(le), "%g", m->bounds[i]);
            else
                str_copy(le, sizeof(le), "+Inf");
            st = buf_printf(out, "%s_bucket", m->name);
            if (st == ST_OK)
                st = put_labels(out, m, s, le);
            if (st == ST_OK)
                st = buf_printf(out, " %.15g\n", i < m->n_bounds ? s->buckets[i] : s->count);
        }
        if (st == ST_OK)
            st = buf_printf(out, "%s_sum", m->name);
        if (st == ST_OK)
            st = put_labels(out, m, s, NULL);
        if (st == ST_OK)
            st = buf_printf(out, " %.15g\n%s_count", s->value, m->name);
        if (st == ST_OK)
            st = put_labels(out, m, s, NULL);
        if (st == ST_OK)
            st = buf_printf(out, " %.15g\n", s->count);
    }
    return st;
}

enum status metrics_render(struct buf *out)
{
    struct metric *m;
    enum status st = ST_OK;

    pthread_mutex_lock(&registry_lock);
    for (m = registry; m && st == ST_OK; m = m->next) {
        pthread_mutex_lock(&m->lock);
        st = render_metric(out, m);
        pthread_mutex_unlock(&m->lock);
    }
    pthread_mutex_unlock(&registry_lock);
    return st;
}
