/*
 * service.h - the life of a serving binary, shared by creator and worker:
 * flags, settings, logging, the HTTP server with /healthz, /readyz and
 * /metrics, signal handling and graceful shutdown. main.c only wires.
 */
#ifndef APP_SERVICE_H
#define APP_SERVICE_H

#include <stdbool.h>

#include "app/settings.h"
#include "core/error.h"
#include "http/server.h"

struct service_def {
    const char *name;    /* "creator" */
    const char *summary; /* one paragraph for --help */
    unsigned scope;      /* SCOPE_CREATOR or SCOPE_WORKER */
    /*
     * Builds the service's state and registers its routes. Returns ST_OK and
     * sets *state, or fails start-up with err.
     */
    enum status (*setup)(const struct settings *s, struct http_server *srv, void **state,
                         struct error *err);
    /* Readiness (GET /readyz): ST_OK when dependencies answer. May be NULL. */
    enum status (*ready)(void *state, struct error *err);
    /* Called after the server stopped accepting and before it stops (may be NULL). */
    void (*draining)(void *state);
    /* Re-words errors the HTTP layer answers itself (may be NULL), see server.h. */
    void (*localize)(const struct http_request *req, struct error *err);
    /*
     * Administrative commands (`creator --create-api-key USER`): run with the
     * loaded settings instead of serving. Returns the exit code, or -1 for an
     * argument it does not know. May be NULL.
     */
    int (*command)(int argc, char **argv, const struct settings *s);
    /* Frees the state (may be NULL). */
    void (*teardown)(void *state);
};

/* Runs the service until SIGTERM/SIGINT; returns the process exit code. */
int service_main(int argc, char **argv, const struct service_def *def);

#endif
