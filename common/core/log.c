#include "core/log.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/json.h"
#include "core/timeutil.h"
#include "core/util.h"

static const char *severity_names[] = {"DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL"};

static struct {
    pthread_mutex_t lock;
    char service[64];
    char project[128];
    enum log_severity min;
    int fd;
} logger = {PTHREAD_MUTEX_INITIALIZER, "", "", LOG_INFO, 1};

static _Thread_local struct {
    struct trace_ctx trace;
    json_t *fields;
} ctx;

void log_init(const char *service, const char *project_id, enum log_severity min, int fd)
{
    pthread_mutex_lock(&logger.lock);
    str_copy(logger.service, sizeof(logger.service), service ? service : "");
    str_copy(logger.project, sizeof(logger.project), project_id ? project_id : "");
    logger.min = min;
    logger.fd = fd;
    pthread_mutex_unlock(&logger.lock);
}

bool log_severity_parse(const char *s, enum log_severity *out)
{
    size_t i;

    for (i = 0; i < ARRAY_SIZE(severity_names); i++) {
        if (str_ieq(s, severity_names[i])) {
            *out = (enum log_severity)i;
            return true;
        }
    }
    if (str_ieq(s, "WARN")) {
        *out = LOG_WARNING;
        return true;
    }
    return false;
}

bool log_enabled(enum log_severity sev)
{
    return sev >= logger.min;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a logging failure */
        }
        p += w;
        n -= (size_t)w;
    }
}

void log_write(enum log_severity sev, json_t *fields, const char *fmt, ...)
{
    char msg[4096], ts[RFC3339_MAX];
    json_t *line;
    char *text;
    va_list ap;

    if (sev < logger.min || (int)sev < 0 || sev > LOG_CRITICAL) {
        json_decref(fields);
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    line = json_object();
    if (ctx.fields)
        json_object_update(line, ctx.fields);
    if (json_is_object(fields))
        json_object_update(line, fields);
    json_decref(fields);
    json_object_set_new(line, "severity", json_string(severity_names[sev]));
    json_object_set_new(line, "message", json_string(msg));
    if (!json_object_get(line, "message")) /* invalid UTF-8 in msg */
        json_object_set_new(line, "message", json_string("(message was not valid utf-8)"));
    if (time_format_rfc3339(time_now_us(), ts, sizeof(ts)))
        json_object_set_new(line, "time", json_string(ts));
    if (logger.service[0])
        json_object_set_new(line, "service", json_string(logger.service));
    if (ctx.trace.trace_id[0]) {
        char trace[256];

        if (logger.project[0])
            snprintf(trace, sizeof(trace), "projects/%s/traces/%s", logger.project,
                     ctx.trace.trace_id);
        else
            str_copy(trace, sizeof(trace), ctx.trace.trace_id);
        json_object_set_new(line, "logging.googleapis.com/trace", json_string(trace));
        if (ctx.trace.span_id[0])
            json_object_set_new(line, "logging.googleapis.com/spanId",
                                json_string(ctx.trace.span_id));
        json_object_set_new(line, "logging.googleapis.com/trace_sampled",
                            json_boolean(ctx.trace.sampled));
    }
    text = json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(line);
    if (!text)
        return;
    pthread_mutex_lock(&logger.lock);
    {
        size_t n = strlen(text);

        text[n] = '\n'; /* replaces the terminator; length is tracked separately */
        write_all(logger.fd, text, n + 1);
    }
    pthread_mutex_unlock(&logger.lock);
    free(text);
}

static bool all_hex(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        char c = s[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return false;
    }
    return true;
}

static bool all_zero(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (s[i] != '0')
            return false;
    return true;
}

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'F')
            *s = (char)(*s - 'A' + 'a');
}

static bool parse_traceparent(const char *h, struct trace_ctx *out)
{
    /* 00-<32 hex>-<16 hex>-<2 hex> */
    if (strlen(h) < 55 || h[2] != '-' || h[35] != '-' || h[52] != '-')
        return false;
    if (!all_hex(h, 2) || !all_hex(h + 3, 32) || !all_hex(h + 36, 16) || !all_hex(h + 53, 2))
        return false;
    if (strncasecmp(h, "ff", 2) == 0 || all_zero(h + 3, 32) || all_zero(h + 36, 16))
        return false;
    memcpy(out->trace_id, h + 3, 32);
    out->trace_id[32] = '\0';
    memcpy(out->span_id, h + 36, 16);
    out->span_id[16] = '\0';
    lower(out->trace_id);
    lower(out->span_id);
    out->sampled = (strtol(h + 53, NULL, 16) & 1) != 0;
    return true;
}

static bool parse_cloud_trace(const char *h, struct trace_ctx *out)
{
    const char *slash, *p;
    uint64_t span = 0;

    if (strlen(h) < 32 || !all_hex(h, 32) || (h[32] != '\0' && h[32] != '/' && h[32] != ';'))
        return false;
    memcpy(out->trace_id, h, 32);
    out->trace_id[32] = '\0';
    lower(out->trace_id);
    out->span_id[0] = '\0';
    out->sampled = false;
    slash = h[32] == '/' ? h + 33 : NULL;
    if (slash) {
        int digits = 0;

        for (p = slash; *p >= '0' && *p <= '9' && digits < 20; p++, digits++) {
            uint64_t d = (uint64_t)(*p - '0');

            if (span > (UINT64_MAX - d) / 10)
                break;
            span = span * 10 + d;
        }
        if (span != 0)
            snprintf(out->span_id, sizeof(out->span_id), "%016" PRIx64, span);
    }
    p = strstr(h, ";o=");
    if (p)
        out->sampled = p[3] == '1';
    return true;
}

bool trace_parse(const char *traceparent, const char *cloud_trace, struct trace_ctx *out)
{
    memset(out, 0, sizeof(*out));
    if (traceparent && parse_traceparent(traceparent, out))
        return true;
    memset(out, 0, sizeof(*out));
    if (cloud_trace && parse_cloud_trace(cloud_trace, out))
        return true;
    memset(out, 0, sizeof(*out));
    return false;
}

void log_context_set_trace(const struct trace_ctx *trace)
{
    if (trace)
        ctx.trace = *trace;
    else
        memset(&ctx.trace, 0, sizeof(ctx.trace));
}

void log_context_add(const char *key, json_t *value)
{
    if (!ctx.fields)
        ctx.fields = json_object();
    json_object_set_new(ctx.fields, key, value ? value : json_null());
}

void log_context_add_str(const char *key, const char *value)
{
    log_context_add(key, value ? json_string(value) : json_null());
}

void log_context_clear(void)
{
    json_decref(ctx.fields);
    ctx.fields = NULL;
    memset(&ctx.trace, 0, sizeof(ctx.trace));
}

const struct trace_ctx *log_context_trace(void)
{
    return &ctx.trace;
}
