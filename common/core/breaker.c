#include "core/breaker.h"

#include <pthread.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/util.h"

struct breaker {
    pthread_mutex_t lock;
    char *name;
    struct breaker_options o;
    enum breaker_state state;
    int failures;       /* consecutive, while closed */
    int64_t opened_at;  /* ms */
    bool probe_running; /* half-open: one call at a time */
};

struct breaker *breaker_new(const char *name, const struct breaker_options *o)
{
    struct breaker *b = xcalloc(1, sizeof(*b));

    pthread_mutex_init(&b->lock, NULL);
    b->name = xstrdup(name);
    if (o)
        b->o = *o;
    if (b->o.failure_threshold <= 0)
        b->o.failure_threshold = 5;
    if (b->o.open_ms <= 0)
        b->o.open_ms = 30000;
    return b;
}

void breaker_free(struct breaker *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b->name);
    free(b);
}

const char *breaker_state_name(enum breaker_state s)
{
    return s == BREAKER_OPEN ? "open" : s == BREAKER_HALF_OPEN ? "half_open" : "closed";
}

/* Called with the lock held. */
static void set_state(struct breaker *b, enum breaker_state s)
{
    const char *labels[] = {b->name};

    if (b->state == s)
        return;
    log_write(s == BREAKER_OPEN ? LOG_WARNING : LOG_NOTICE,
              json_pack("{s:s, s:s, s:s}", "provider", b->name, "from",
                        breaker_state_name(b->state), "to", breaker_state_name(s)),
              "circuit breaker of %s: %s -> %s", b->name, breaker_state_name(b->state),
              breaker_state_name(s));
    b->state = s;
    metric_set(metric_gauge("provider_breaker_state",
                            "circuit breaker per provider: 0 closed, 1 open, 2 half-open",
                            "provider"),
               labels, (double)s);
}

/* Open turns half-open by itself once open_ms has passed. */
static void refresh(struct breaker *b, int64_t now_ms)
{
    if (b->state == BREAKER_OPEN && now_ms - b->opened_at >= b->o.open_ms) {
        set_state(b, BREAKER_HALF_OPEN);
        b->probe_running = false;
    }
}

bool breaker_allow(struct breaker *b, int64_t now_ms, int64_t *retry_in_ms)
{
    bool ok = false;

    pthread_mutex_lock(&b->lock);
    refresh(b, now_ms);
    switch (b->state) {
    case BREAKER_CLOSED:
        ok = true;
        break;
    case BREAKER_HALF_OPEN:
        ok = !b->probe_running;
        b->probe_running = true;
        if (!ok && retry_in_ms)
            *retry_in_ms = 1000;
        break;
    case BREAKER_OPEN:
        if (retry_in_ms)
            *retry_in_ms = b->o.open_ms - (now_ms - b->opened_at);
        break;
    }
    pthread_mutex_unlock(&b->lock);
    return ok;
}

void breaker_record(struct breaker *b, bool success, int64_t now_ms)
{
    pthread_mutex_lock(&b->lock);
    refresh(b, now_ms);
    if (success) {
        b->failures = 0;
        b->probe_running = false;
        set_state(b, BREAKER_CLOSED);
    } else if (b->state == BREAKER_HALF_OPEN ||
               (b->state == BREAKER_CLOSED && ++b->failures >= b->o.failure_threshold)) {
        b->failures = 0;
        b->probe_running = false;
        b->opened_at = now_ms;
        set_state(b, BREAKER_OPEN);
    }
    pthread_mutex_unlock(&b->lock);
}

enum breaker_state breaker_state(struct breaker *b, int64_t now_ms)
{
    enum breaker_state s;

    pthread_mutex_lock(&b->lock);
    refresh(b, now_ms);
    s = b->state;
    pthread_mutex_unlock(&b->lock);
    return s;
}
