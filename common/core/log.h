/*
 * log.h - structured logging for Cloud Logging.
 *
 * Every entry is one JSON object on one line, written with a single write(2)
 * under a lock, so lines from concurrent threads never interleave. Fields:
 * severity, message, time, the service name, the trace of the current
 * request (logging.googleapis.com/trace, spanId, trace_sampled) when the
 * calling thread has a context, the context's extra fields (batchId...) and
 * the entry's own fields.
 */
#ifndef CORE_LOG_H
#define CORE_LOG_H

#include <stdbool.h>

#include <jansson.h>

enum log_severity {
    LOG_DEBUG = 0,
    LOG_INFO,
    LOG_NOTICE,
    LOG_WARNING,
    LOG_ERROR,
    LOG_CRITICAL,
};

/*
 * Sets the process-wide logger: service name (a "service" field on each
 * line), the project id used to build trace names (may be NULL or ""), the
 * minimum severity written and the output fd (1 for stdout). Safe to call
 * again; not meant to race with log_write().
 */
void log_init(const char *service, const char *project_id, enum log_severity min, int fd);

/* Parses "DEBUG", "info", ... Returns false for unknown names. */
bool log_severity_parse(const char *s, enum log_severity *out);

/*
 * Writes one entry. fields (stolen, may be NULL) is a JSON object whose
 * members are added to the line; they may override none of the reserved
 * keys (severity, message, time). The message is printf-formatted.
 */
void log_write(enum log_severity sev, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(...) log_write(LOG_DEBUG, NULL, __VA_ARGS__)
#define log_info(...)  log_write(LOG_INFO, NULL, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARNING, NULL, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, NULL, __VA_ARGS__)

/* True when entries of this severity are written (skip building costly fields otherwise). */
bool log_enabled(enum log_severity sev);

/* ---- trace context ---------------------------------------------------- */

struct trace_ctx {
    char trace_id[33]; /* 32 lowercase hex, "" when none */
    char span_id[17];  /* 16 lowercase hex, "" when none */
    bool sampled;
};

/*
 * Extracts a trace from a W3C traceparent header (preferred) or, failing
 * that, from X-Cloud-Trace-Context ("TRACE/SPAN_DECIMAL;o=1"). Either may be
 * NULL. Returns false (and clears out) when neither is valid.
 */
bool trace_parse(const char *traceparent, const char *cloud_trace, struct trace_ctx *out);

/*
 * The calling thread's log context: its trace, and extra fields added to
 * every line the thread writes until log_context_clear(). Used by the HTTP
 * server per request, and by handlers to add batchId, itemId...
 */
void log_context_set_trace(const struct trace_ctx *trace);
/* Adds or replaces one field (value stolen). */
void log_context_add(const char *key, json_t *value);
void log_context_add_str(const char *key, const char *value);
void log_context_clear(void);

/* The calling thread's trace (borrowed, never NULL; empty ids when none). */
const struct trace_ctx *log_context_trace(void);

#endif
