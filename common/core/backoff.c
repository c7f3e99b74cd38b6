#include "core/backoff.h"

#include <math.h>

double backoff_cloud_tasks(const struct retry_config *rc, int k)
{
    double v;

    if (k < 1)
        k = 1;
    if (k - 1 <= rc->max_doublings)
        v = rc->min_backoff * ldexp(1.0, k - 1);
    else
        v = rc->min_backoff * ldexp(1.0, rc->max_doublings) * (k - rc->max_doublings);
    return v < rc->max_backoff ? v : rc->max_backoff;
}

bool backoff_should_retry(const struct retry_config *rc, int attempts_done, double elapsed_s)
{
    /* -1 attempts never satisfies the attempt limit; a zero duration always satisfies its own. */
    bool attempts_spent = rc->max_attempts >= 0 && attempts_done >= rc->max_attempts;
    bool duration_spent = rc->max_retry_duration <= 0 || elapsed_s >= rc->max_retry_duration;

    return !(attempts_spent && duration_spent);
}

int64_t backoff_jitter_ms(int attempt, int64_t base_ms, int64_t cap_ms, double rnd)
{
    double ceiling;

    if (attempt < 1)
        attempt = 1;
    ceiling = (double)base_ms * ldexp(1.0, attempt > 40 ? 40 : attempt - 1);
    if (ceiling > (double)cap_ms)
        ceiling = (double)cap_ms;
    if (rnd < 0)
        rnd = 0;
    if (rnd >= 1)
        rnd = 0.999999;
    return (int64_t)(ceiling * rnd);
}
