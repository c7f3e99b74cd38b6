/*
 * fake_proc.h - starting the fake Google endpoints from a test: spawn the
 * binary with extra environment, read its "PORT=<n>" line, talk to its
 * control endpoints, stop it with SIGTERM.
 */
#ifndef TESTS_FAKES_FAKE_PROC_H
#define TESTS_FAKES_FAKE_PROC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "http/client.h"

struct fake_proc {
    pid_t pid;
    int port;
    char base[64]; /* "http://127.0.0.1:<port>" */
};

/*
 * Starts bin with the test's environment plus env (NULL-terminated
 * "NAME=value" entries, may be NULL) and PORT=0, and waits up to 10 s for
 * its port. Returns false (p->pid 0) when it does not come up.
 */
bool fake_proc_start(struct fake_proc *p, const char *bin, const char *const *env);

/* SIGTERM, then waits for the exit; returns true when it exited with status 0. */
bool fake_proc_stop(struct fake_proc *p);

/*
 * Stops every fake this process started and has not stopped: for test
 * teardowns, which run after a failed assertion skipped the test's own
 * fake_proc_stop(). Fakes also exit when the thread that started them does.
 */
void fake_proc_stop_all(void);

/*
 * GET or POST (body non-NULL) base + path with a JSON body; returns the
 * parsed answer (new reference, NULL when none) and sets *status.
 */
json_t *fake_proc_call(struct http_client *c, const struct fake_proc *p, const char *method,
                       const char *path, const json_t *body, long *status);

/* One integer of GET /fake/stats (-1 when the call or the field fails). */
int64_t fake_proc_stat(struct http_client *c, const struct fake_proc *p, const char *field);

#endif
