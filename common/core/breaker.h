/*
 * breaker.h - a circuit breaker per provider (closed, open, half-open).
 *
 * Closed: calls pass; `failure_threshold` consecutive transient failures
 * open it. Open: calls are refused for `open_ms`, so a provider that is down
 * is not hammered by every queued item (and a fallback can take over).
 * Half-open: after open_ms one probe call passes at a time; its success
 * closes the breaker, its failure opens it again for another open_ms.
 * Only transient outcomes count as failures: a moderated prompt says nothing
 * about the provider's health. Thread-safe; one breaker per process and
 * provider (each worker instance judges for itself).
 */
#ifndef CORE_BREAKER_H
#define CORE_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

enum breaker_state { BREAKER_CLOSED = 0, BREAKER_OPEN, BREAKER_HALF_OPEN };

struct breaker_options {
    int failure_threshold; /* default 5 */
    int64_t open_ms;       /* default 30000 */
};

struct breaker;

/* name labels the breaker's metrics (provider_breaker_state{provider}). */
struct breaker *breaker_new(const char *name, const struct breaker_options *o);
void breaker_free(struct breaker *b);

/*
 * Asks to make a call at time now_ms (monotonic). True: go ahead, and report
 * the outcome with breaker_record(). False: refused; *retry_in_ms says when
 * the breaker may let a probe through.
 */
bool breaker_allow(struct breaker *b, int64_t now_ms, int64_t *retry_in_ms);

/* Reports the outcome of an allowed call. */
void breaker_record(struct breaker *b, bool success, int64_t now_ms);

enum breaker_state breaker_state(struct breaker *b, int64_t now_ms);
const char *breaker_state_name(enum breaker_state s);

#endif
