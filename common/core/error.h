/*
 * error.h - the one error convention.
 *
 * Fallible functions return an enum status (ST_OK is 0) and fill an optional
 * struct error with a fixed-size, lowercase message that names what failed.
 * One table maps each status to an HTTP status and to a default stable code
 * for the JSON error body {"error": "<message>", "code": "<code>"}.
 */
#ifndef CORE_ERROR_H
#define CORE_ERROR_H

#include <stdbool.h>

#include <jansson.h>

enum status {
    ST_OK = 0,
    ST_INVALID,             /* bad input: 400 */
    ST_UNAUTHENTICATED,     /* missing or bad credentials: 401 */
    ST_PERMISSION_DENIED,   /* authenticated but not allowed: 403 */
    ST_NOT_FOUND,           /* 404 */
    ST_METHOD_NOT_ALLOWED,  /* 405 */
    ST_CONFLICT,            /* state does not allow the operation: 409 */
    ST_ALREADY_EXISTS,      /* create of something that exists: 409 */
    ST_ABORTED,             /* concurrency conflict, retry the whole operation: 409 */
    ST_FAILED_PRECONDITION, /* a precondition on stored state failed: 400 */
    ST_TOO_LARGE,           /* a bound was crossed: 413 */
    ST_UNSUPPORTED_MEDIA,   /* wrong content type: 415 */
    ST_RATE_LIMITED,        /* slow down, see retry_after_s: 429 */
    ST_UNAVAILABLE,         /* transient, retry later: 503 */
    ST_TIMEOUT,             /* deadline exceeded: 504 */
    ST_INTERNAL,            /* our bug or an unexpected answer: 500 */
    ST_IO,                  /* local I/O failure: 500 */
    ST__COUNT
};

#define ERROR_MSG_MAX  256
#define ERROR_CODE_MAX 48

struct error {
    enum status status;
    char code[ERROR_CODE_MAX];   /* stable snake_case code; "" means the default */
    char message[ERROR_MSG_MAX]; /* lowercase, names the failing thing */
    int retry_after_s;           /* > 0 when the peer asked us to wait */
};

/*
 * Sets err (when non-NULL) and returns status, so that callers can write
 * `return error_set(err, ST_INVALID, NULL, "bad %s", what);`.
 * code may be NULL for the status's default code. Truncation of an
 * over-long message is silent: messages are diagnostics, not data.
 */
enum status error_set(struct error *err, enum status status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Clears err to ST_OK with empty message. NULL is allowed. */
void error_clear(struct error *err);

/*
 * Prefixes err's message with context ("cannot enqueue item 3: <old>").
 * Keeps status and code. NULL is allowed.
 */
void error_prefix(struct error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Table lookups. Unknown statuses map to 500 / "internal". */
int status_http(enum status status);
const char *status_code(enum status status);
const char *status_name(enum status status);

/* True for statuses a caller may retry as they are (unavailable, timeout, rate limited, aborted).
 */
bool status_is_transient(enum status status);

/* Maps an HTTP status to the closest status (2xx -> ST_OK). */
enum status status_from_http(long http);

/* The code to put in the body: err->code when set, else the status default. */
const char *error_code(const struct error *err);

/*
 * Builds the JSON body {"error": message, "code": code}.
 * Returns a new reference; the caller frees it with json_decref().
 */
json_t *error_to_json(const struct error *err);

#endif
