/*
 * timeutil.h - clocks and timestamps. Wall-clock times are int64
 * microseconds since the Unix epoch (UTC); durations use a monotonic clock.
 */
#ifndef CORE_TIMEUTIL_H
#define CORE_TIMEUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RFC3339_MAX 40 /* "2026-05-01T12:00:00.123456Z" plus slack */

/* Wall clock, microseconds since the epoch. */
int64_t time_now_us(void);

/* Monotonic clock in milliseconds and microseconds, for measuring intervals. */
int64_t time_mono_ms(void);
int64_t time_mono_us(void);

/* Sleeps for ms milliseconds (restarting after signals). */
void time_sleep_ms(int64_t ms);

/*
 * Formats t (µs since epoch) as RFC 3339 UTC with exactly six fractional
 * digits: "2026-05-01T12:00:00.123456Z". out needs RFC3339_MAX bytes.
 * Returns false for times outside years 0001-9999.
 */
bool time_format_rfc3339(int64_t t, char *out, size_t cap);

/*
 * Parses RFC 3339 ("2026-05-01T12:00:00Z", with 0-9 fractional digits and
 * 'Z' or a +hh:mm/-hh:mm offset). Fractions below a microsecond are
 * truncated. Returns false on any syntax or range error.
 */
bool time_parse_rfc3339(const char *s, int64_t *out);

/*
 * Parses an HTTP date (IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT") into
 * µs since the epoch. Returns false on any error.
 */
bool time_parse_http_date(const char *s, int64_t *out);

/* Formats now as YYYYMMDD and YYYYMMDDTHHMMSSZ (for signed URLs). */
bool time_format_compact(int64_t t, char date[9], char stamp[17]);

#endif
