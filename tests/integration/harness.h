/*
 * harness.h - drives the real binaries from outside for integration tests:
 * starts the provider simulator, the worker (with its dispatcher) and the
 * creator on free loopback ports with a fresh data directory, talks to them
 * over HTTP, and stops them (or kills them) at the end.
 */
#ifndef TESTS_HARNESS_H
#define TESTS_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

#include <jansson.h>

#include "http/client.h"

struct proc {
    pid_t pid;
    char name[32];
    char log_path[512];
};

struct stack_opts {
    const char *queue_json;     /* queue definition text; NULL: a fast test queue */
    const char *const *sim_env; /* extra NAME=value for the simulator, NULL-terminated */
    const char *const *worker_env;
    const char *const *creator_env;
    bool no_sim; /* do not start the simulator */
    /*
     * Google mode: BACKEND=gcp against the Firestore emulator (behind the
     * fault-injecting proxy), fake Cloud Tasks and a fake metadata server.
     * Needs FIRESTORE_EMULATOR_HOST in the environment.
     */
    bool gcp;
    const char *const *proxy_env; /* PROXY_* settings of the Firestore proxy */
    const char *const *tasks_env; /* FAKE_* settings of fake Cloud Tasks */
};

struct stack {
    char dir[256];
    int creator_port, worker_port, sim_port;
    char creator_url[64], worker_url[96], sim_url[64];
    struct proc creator, worker, sim;
    struct proc proxy, tasks, metadata, gcs; /* gcp mode */
    int proxy_port, tasks_port, metadata_port, gcs_port;
    char proxy_url[64], tasks_url[64], gcs_url[64], project[64];
    struct http_client *client;
    struct stack_opts opts;
};

/*
 * Aborts the process with a message unless ok. The harness serves both the
 * Check scenarios (where an abort fails the test) and the benchmark.
 */
void need(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Starts everything and waits until each process answers /healthz. Aborts the test on failure. */
void stack_start(struct stack *s, const struct stack_opts *opts);

/* SIGTERM everything, wait, check exit codes are 0 (for the services), remove the directory. */
void stack_stop(struct stack *s);

/* True when Google mode can run here (the emulator is reachable). */
bool stack_gcp_available(void);

/* Starts one service process ("creator" or "worker") of the stack again. */
void stack_start_worker(struct stack *s);
void stack_start_creator(struct stack *s);

/* Sends a signal to a process and waits for it to exit; returns its wait status. */
int proc_kill(struct proc *p, int sig);

/*
 * HTTP helpers: method, url (absolute), JSON body (borrowed, may be NULL),
 * extra headers (NULL-terminated "Name: value", may be NULL). Returns the
 * parsed JSON answer (new reference, may be NULL) and the status.
 */
json_t *http_json_call(struct stack *s, const char *method, const char *url, const json_t *body,
                       const char *const *headers, long *status);

/* POST /api/batch/create with n demo images from the simulator; returns the batch id (static). */
const char *create_demo_batch(struct stack *s, int n, const char *prompt, long *status);

/* Polls the status until it is terminal or timeout_s passes; returns the last status document. */
json_t *wait_batch(struct stack *s, const char *batch_id, int timeout_s);

/* Reads an integer field of a status document. */
long long jint(const json_t *doc, const char *field);

/* Writes text to path. */
void write_file(const char *path, const char *text);

/* Counts lines of a process log containing needle. */
int log_count(const struct proc *p, const char *needle);

#endif

/* GETs url and returns the body (malloc'd, *len set) or NULL; *status receives the HTTP status. */
char *http_get_bytes(struct stack *s, const char *url, size_t *len, long *status);

/* Asserts that every image of a finished status document is completed with a PNG result. */
void assert_results_are_images(struct stack *s, const json_t *doc);

/* Opens the stack's SQLite file and counts rows of a query returning one integer. */
long long db_count(struct stack *s, const char *sql);

/* The simulator's /stats document (new reference). */
json_t *sim_stats(struct stack *s);

/* POSTs a JSON document to the simulator's /control. */
void sim_control(struct stack *s, const char *json);
