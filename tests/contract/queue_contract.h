/*
 * queue_contract.h - the behavioural suite of the queue port (queue.h).
 *
 * The suite drives a queue only through the port and watches what arrives
 * at a push target of its own (an HTTP server on 127.0.0.1), so it runs
 * unchanged on every adapter together with whatever dispatches its tasks:
 * test_queue_local.c runs it on the SQLite queue with the local dispatcher,
 * test_queue_cloudtasks.c on the Cloud Tasks adapter with fake-cloudtasks
 * dispatching. It checks delivery (body, X-CloudTasks-* headers), name
 * de-duplication before and after delivery, enqueue_many with new and
 * existing names, scheduleTime, remove, retries after a 503, and the
 * push's ID token (accepted by the project's verifier for the configured
 * audience only).
 *
 * One suite per process: the adapter is kept in file-level state.
 */
#ifndef TESTS_CONTRACT_QUEUE_CONTRACT_H
#define TESTS_CONTRACT_QUEUE_CONTRACT_H

#include <check.h>

#include "queue/queue.h"
#include "queue/queue_config.h"

/* What an adapter runner sets up for one test. */
struct queue_contract_env {
    struct queue *q;       /* the adapter under test */
    const char *issuer;    /* "iss" of the push tokens */
    const char *email;     /* "email" of the push tokens */
    const char *jwks_json; /* the issuer's keys, static... */
    const char *jwks_url;  /* ...or fetched (exactly one of the two) */
    void *state;           /* the runner's own */
};

struct queue_contract_adapter {
    /*
     * Opens a fresh, empty queue defined by qc (the suite's fast retry
     * settings) whose tasks are pushed to target_url with an ID token for
     * audience, and starts whatever dispatches them. Fills env; fails the
     * test itself when it cannot.
     */
    void (*open)(const struct queue_config *qc, const char *target_url, const char *audience,
                 struct queue_contract_env *env);
    /* Stops dispatching and releases everything open() made. */
    void (*close)(struct queue_contract_env *env);
};

/* Builds the suite `name`; runners may add their own TCases to it. */
Suite *queue_contract_suite(const char *name, const struct queue_contract_adapter *adapter);

#endif
