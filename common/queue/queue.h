/*
 * queue.h - the queue port: one HTTP push task per unit of work, delivered
 * at least once to the worker. Adapters: local_queue.c (SQLite table plus a
 * dispatcher thread in the worker), cloudtasks_queue.c (Cloud Tasks v2).
 *
 * Task names are chosen by the caller and de-duplicate: creating a task
 * whose name exists (or existed recently) fails with ST_ALREADY_EXISTS,
 * which callers treat as success. Names use only [A-Za-z0-9_-] and at most
 * TASK_NAME_MAX-1 characters (Cloud Tasks' TASK_ID rules).
 */
#ifndef QUEUE_QUEUE_H
#define QUEUE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define TASK_NAME_MAX 500

struct task_spec {
    char name[TASK_NAME_MAX]; /* short task id; "" lets the queue pick one */
    const char *body;         /* JSON body pushed to the worker (borrowed) */
    size_t body_len;
    int64_t schedule_time; /* µs since the epoch; 0 = now */
};

struct queue_ops {
    void (*close)(void *state);
    enum status (*enqueue)(void *state, const struct task_spec *task, struct error *err);
    enum status (*enqueue_many)(void *state, const struct task_spec *tasks, size_t n,
                                enum status *results, struct error *err);
    enum status (*remove)(void *state, const char *name, struct error *err);
};

struct queue {
    const struct queue_ops *ops;
    void *state;
    const char *name; /* "local", "cloudtasks" */
};

void queue_close(struct queue *q);

/* Creates one task. ST_ALREADY_EXISTS when the name is taken. */
enum status queue_enqueue(struct queue *q, const struct task_spec *task, struct error *err);

/*
 * Creates n tasks with bounded parallelism. results[i] receives each task's
 * status (ST_ALREADY_EXISTS counts as created). Returns ST_OK when every
 * task was created or already existed, else the first failure (err names
 * the task and the number that failed).
 */
enum status queue_enqueue_many(struct queue *q, const struct task_spec *tasks, size_t n,
                               enum status *results, struct error *err);

/* Deletes a task if it still exists (ST_OK when it does not). */
enum status queue_remove(struct queue *q, const char *name, struct error *err);

/*
 * ST_OK when name is a valid task name: 1 to TASK_NAME_MAX - 1 characters
 * of [A-Za-z0-9_-], read up to TASK_NAME_MAX bytes (a name that fills the
 * array without a terminator is too long). Else ST_INVALID with code
 * "invalid_task_name". Shared by the adapters, so that every queue refuses
 * the same names before doing anything.
 */
enum status queue_check_name(const char *name, struct error *err);

/*
 * Deterministic task name for a unit of work: "<8 hex of sha256(key)>-<key>"
 * with characters outside [A-Za-z0-9_-] replaced by '_' and the result
 * bounded. The hashed prefix spreads names over the key space, as Cloud
 * Tasks asks (gcp.md 1.2). key is e.g. "b_x-9f2c-00042-g1".
 */
void queue_task_name(const char *key, char out[TASK_NAME_MAX]);

#endif
