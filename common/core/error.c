#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/util.h"

static const struct {
    int http;
    const char *code;
    const char *name;
} status_table[ST__COUNT] = {
    [ST_OK] = {200, "ok", "OK"},
    [ST_INVALID] = {400, "invalid_argument", "INVALID_ARGUMENT"},
    [ST_UNAUTHENTICATED] = {401, "unauthenticated", "UNAUTHENTICATED"},
    [ST_PERMISSION_DENIED] = {403, "permission_denied", "PERMISSION_DENIED"},
    [ST_NOT_FOUND] = {404, "not_found", "NOT_FOUND"},
    [ST_METHOD_NOT_ALLOWED] = {405, "method_not_allowed", "METHOD_NOT_ALLOWED"},
    [ST_CONFLICT] = {409, "conflict", "CONFLICT"},
    [ST_ALREADY_EXISTS] = {409, "already_exists", "ALREADY_EXISTS"},
    [ST_ABORTED] = {409, "aborted", "ABORTED"},
    [ST_FAILED_PRECONDITION] = {400, "failed_precondition", "FAILED_PRECONDITION"},
    [ST_TOO_LARGE] = {413, "payload_too_large", "TOO_LARGE"},
    [ST_UNSUPPORTED_MEDIA] = {415, "unsupported_media_type", "UNSUPPORTED_MEDIA"},
    [ST_RATE_LIMITED] = {429, "rate_limited", "RESOURCE_EXHAUSTED"},
    [ST_UNAVAILABLE] = {503, "unavailable", "UNAVAILABLE"},
    [ST_TIMEOUT] = {504, "deadline_exceeded", "DEADLINE_EXCEEDED"},
    [ST_INTERNAL] = {500, "internal", "INTERNAL"},
    [ST_IO] = {500, "io_error", "IO"},
};

static bool status_valid(enum status status)
{
    return (int)status >= 0 && status < ST__COUNT;
}

enum status error_set(struct error *err, enum status status, const char *code, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return status;
    err->status = status;
    str_copy(err->code, sizeof(err->code), code ? code : "");
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    err->retry_after_s = 0;
    return status;
}

void error_clear(struct error *err)
{
    if (err)
        memset(err, 0, sizeof(*err));
}

void error_prefix(struct error *err, const char *fmt, ...)
{
    char prefix[ERROR_MSG_MAX];
    char joined[2 * ERROR_MSG_MAX + 4];
    va_list ap;

    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    snprintf(joined, sizeof(joined), "%s: %s", prefix, err->message);
    str_copy(err->message, sizeof(err->message), joined);
}

int status_http(enum status status)
{
    return status_valid(status) ? status_table[status].http : 500;
}

const char *status_code(enum status status)
{
    return status_valid(status) ? status_table[status].code : "internal";
}

const char *status_name(enum status status)
{
    return status_valid(status) ? status_table[status].name : "INTERNAL";
}

bool status_is_transient(enum status status)
{
    return status == ST_UNAVAILABLE || status == ST_TIMEOUT || status == ST_RATE_LIMITED ||
           status == ST_ABORTED;
}

enum status status_from_http(long http)
{
    if (http >= 200 && http < 300)
        return ST_OK;
    switch (http) {
    case 400:
        return ST_INVALID;
    case 401:
        return ST_UNAUTHENTICATED;
    case 403:
        return ST_PERMISSION_DENIED;
    case 404:
        return ST_NOT_FOUND;
    case 405:
        return ST_METHOD_NOT_ALLOWED;
    case 408:
        return ST_TIMEOUT;
    case 409:
        return ST_CONFLICT;
    case 412:
        return ST_FAILED_PRECONDITION;
    case 413:
        return ST_TOO_LARGE;
    case 415:
        return ST_UNSUPPORTED_MEDIA;
    case 429:
        return ST_RATE_LIMITED;
    case 504:
        return ST_TIMEOUT;
    default:
        break;
    }
    if (http == 500 || http == 501)
        return ST_INTERNAL;
    if (http > 500)
        return ST_UNAVAILABLE;
    return ST_INVALID;
}

const char *error_code(const struct error *err)
{
    if (err && err->code[0])
        return err->code;
    return status_code(err ? err->status : ST_INTERNAL);
}

json_t *error_to_json(const struct error *err)
{
    const char *msg = err && err->message[0] ? err->message : status_code(err ? err->status : 0);

    return json_pack("{s:s, s:s}", "error", msg, "code", error_code(err));
}
