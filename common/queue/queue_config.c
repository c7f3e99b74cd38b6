#include "queue/queue_config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/json.h"
#include "core/util.h"

void queue_config_defaults(struct queue_config *qc)
{
    memset(qc, 0, sizeof(*qc));
    str_copy(qc->name, sizeof(qc->name), "batch-processing-queue");
    str_copy(qc->location, sizeof(qc->location), "us-central1");
    qc->max_dispatches_per_second = 500;
    qc->max_concurrent_dispatches = 1000;
    qc->retry.max_attempts = 100;
    qc->retry.max_retry_duration = 0;
    qc->retry.min_backoff = 0.1;
    qc->retry.max_backoff = 3600;
    qc->retry.max_doublings = 16;
    qc->dispatch_deadline_s = 600;
}

bool duration_parse(const char *s, double *out)
{
    char num[32];
    size_t n;

    if (!s)
        return false;
    n = strlen(s);
    if (n < 2 || n >= sizeof(num) || s[n - 1] != 's')
        return false;
    memcpy(num, s, n - 1);
    num[n - 1] = '\0';
    return str_to_double(num, out) && *out >= 0;
}

void duration_format(double s, char *out, size_t cap)
{
    size_t n;

    if (s == (double)(int64_t)s) {
        str_printf(out, cap, "%llds", (long long)s);
        return;
    }
    str_printf(out, cap, "%.3f", s);
    n = strlen(out);
    while (n > 0 && out[n - 1] == '0')
        out[--n] = '\0';
    str_printf(out + n, cap - n, "s");
}

static enum status get_duration(const json_t *obj, const char *field, double min, double max,
                                double *out, struct error *err)
{
    const char *s = NULL;
    double d;
    enum status st = json_get_string(obj, field, JSON_OPTIONAL, &s, err);

    if (st != ST_OK)
        return st;
    if (!s)
        return ST_OK;
    if (!duration_parse(s, &d) || d < min || d > max)
        return error_set(err, ST_INVALID, "invalid_field",
                         "field \"%s\" must be a duration like \"10s\" in [%gs, %gs]", field, min,
                         max);
    *out = d;
    return ST_OK;
}

enum status queue_config_parse(const char *text, size_t len, struct queue_config *qc,
                               struct error *err)
{
    json_t *root = json_parse(text, len, err), *rate = NULL, *retry = NULL;
    const char *s = NULL;
    int64_t i;
    enum status st;

    queue_config_defaults(qc);
    if (!root)
        return ST_INVALID;
    if ((st = json_get_string(root, "name", JSON_OPTIONAL, &s, err)) != ST_OK)
        goto out;
    if (s && (!*s || !str_copy(qc->name, sizeof(qc->name), s))) {
        st = error_set(err, ST_INVALID, "invalid_field", "field \"name\" must be 1-100 chars");
        goto out;
    }
    s = NULL;
    if ((st = json_get_string(root, "location", JSON_OPTIONAL, &s, err)) != ST_OK)
        goto out;
    if (s)
        str_copy(qc->location, sizeof(qc->location), s);
    if ((st = json_get_object(root, "rateLimits", JSON_OPTIONAL, &rate, err)) != ST_OK ||
        (st = json_get_object(root, "retryConfig", JSON_OPTIONAL, &retry, err)) != ST_OK)
        goto out;
    if (rate) {
        i = qc->max_concurrent_dispatches;
        if ((st = json_get_double(rate, "maxDispatchesPerSecond", JSON_OPTIONAL, 0.001, 500,
                                  &qc->max_dispatches_per_second, err)) != ST_OK ||
            (st = json_get_int(rate, "maxConcurrentDispatches", JSON_OPTIONAL, 1, 5000, &i, err)) !=
                ST_OK)
            goto out;
        qc->max_concurrent_dispatches = (int)i;
    }
    if (retry) {
        i = qc->retry.max_attempts;
        if ((st = json_get_int(retry, "maxAttempts", JSON_OPTIONAL, -1, 1000000, &i, err)) != ST_OK)
            goto out;
        if (i == 0) {
            st = error_set(err, ST_INVALID, "invalid_field", "field \"maxAttempts\" cannot be 0");
            goto out;
        }
        qc->retry.max_attempts = (int)i;
        i = qc->retry.max_doublings;
        if ((st = json_get_int(retry, "maxDoublings", JSON_OPTIONAL, 0, 60, &i, err)) != ST_OK)
            goto out;
        qc->retry.max_doublings = (int)i;
        if ((st = get_duration(retry, "maxRetryDuration", 0, 31 * 86400.0,
                               &qc->retry.max_retry_duration, err)) != ST_OK ||
            (st = get_duration(retry, "minBackoff", 0, 3600 * 24, &qc->retry.min_backoff, err)) !=
                ST_OK ||
            (st = get_duration(retry, "maxBackoff", 0, 3600 * 24, &qc->retry.max_backoff, err)) !=
                ST_OK)
            goto out;
        if (qc->retry.max_backoff < qc->retry.min_backoff) {
            st = error_set(err, ST_INVALID, "invalid_field",
                           "field \"maxBackoff\" is below \"minBackoff\"");
            goto out;
        }
    }
    st = get_duration(root, "dispatchDeadline", 15, 1800, &qc->dispatch_deadline_s, err);
out:
    json_decref(root);
    return st;
}

enum status queue_config_load(const char *path, struct queue_config *qc, struct error *err)
{
    struct buf text;
    char chunk[4096];
    enum status st = ST_OK;
    FILE *f = fopen(path, "r");
    size_t n;

    queue_config_defaults(qc);
    if (!f)
        return error_set(err, ST_INVALID, "invalid_config", "cannot open queue definition %s: %s",
                         path, strerror(errno));
    buf_init(&text, 1 << 20);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (buf_append(&text, chunk, n) != ST_OK) {
            st = error_set(err, ST_INVALID, "invalid_config", "%s is larger than 1 MiB", path);
            break;
        }
    }
    fclose(f);
    if (st == ST_OK) {
        st = queue_config_parse(text.data ? text.data : "", text.len, qc, err);
        if (st != ST_OK)
            error_prefix(err, "invalid queue definition %s", path);
    }
    buf_release(&text);
    return st;
}
