/*
 * backoff.h - retry arithmetic.
 *
 * The Cloud Tasks schedule (reference gcp.md 1.4): the delay starts at
 * min_backoff, doubles max_doublings times, then grows linearly by
 * min_backoff * 2^max_doublings per retry, capped at max_backoff.
 * The stop rule (1.4): retries end only when both max_attempts and
 * max_retry_duration are exhausted.
 */
#ifndef CORE_BACKOFF_H
#define CORE_BACKOFF_H

#include <stdbool.h>
#include <stdint.h>

struct retry_config {
    int max_attempts;          /* attempts including the first; -1 = unlimited */
    double max_retry_duration; /* seconds from the first attempt; 0 = unlimited */
    double min_backoff;        /* seconds */
    double max_backoff;        /* seconds */
    int max_doublings;
};

/* Delay in seconds before retry number k (k = 1 is the second attempt). */
double backoff_cloud_tasks(const struct retry_config *rc, int k);

/*
 * Whether another attempt may follow, given how many attempts have run and
 * how long (seconds) has passed since the first one. Cloud Tasks stops only
 * when both limits are spent; max_attempts -1 is never spent and a zero
 * max_retry_duration is always spent.
 */
bool backoff_should_retry(const struct retry_config *rc, int attempts_done, double elapsed_s);

/*
 * Full-jitter exponential backoff for client retries: a random delay in
 * [0, min(cap, base * 2^(attempt-1))] milliseconds, attempt >= 1. rnd is a
 * uniform number in [0, 1) supplied by the caller (tests pass fixed values).
 */
int64_t backoff_jitter_ms(int attempt, int64_t base_ms, int64_t cap_ms, double rnd);

#endif
