/*
 * fake_http.h - a scripted HTTP server on 127.0.0.1 for unit tests of the
 * HTTP clients of the providers: it records every request (method, path,
 * headers, body) and answers from a queue of canned answers, first in,
 * first out, then with a default answer.
 */
#ifndef FAKES_FAKE_HTTP_H
#define FAKES_FAKE_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "core/buf.h"

struct fake_answer {
    int status;               /* 0: 200 */
    const char *content_type; /* NULL: none */
    const void *body;         /* copied; NULL: empty */
    size_t body_len;          /* 0 with a body: strlen(body) */
    const char *retry_after;  /* Retry-After header, NULL: none */
    long delay_ms;            /* sleep before answering (cut short by fake_http_stop) */
};

struct fake_request {
    char method[16];
    char path[512];  /* without the query */
    json_t *headers; /* {"lowercase-name": "value"} */
    struct buf body;
};

struct fake_http;

/* Starts a server on a free loopback port. Never NULL (aborts on failure). */
struct fake_http *fake_http_start(void);

/* Stops it and frees everything, recorded requests included. NULL is allowed. */
void fake_http_stop(struct fake_http *f);

/* "http://127.0.0.1:PORT" (borrowed). */
const char *fake_http_url(const struct fake_http *f);

/* Queues an answer (copied); the default answers when the queue is empty. */
void fake_http_push(struct fake_http *f, const struct fake_answer *a);
void fake_http_set_default(struct fake_http *f, const struct fake_answer *a);

/* Shortcuts: a JSON (or any text) answer. */
void fake_http_push_json(struct fake_http *f, int status, const char *json);

/* Forgets recorded requests and queued answers (the default stays). */
void fake_http_reset(struct fake_http *f);

/* Requests recorded so far, and one of them (borrowed until the next reset or stop). */
size_t fake_http_count(struct fake_http *f);
const struct fake_request *fake_http_request(struct fake_http *f, size_t i);

/* A recorded request's header value, or NULL. */
const char *fake_request_header(const struct fake_request *r, const char *name);

#endif
