/*
 * tasks.h - the bodies of queue tasks and their deterministic names.
 *
 * A task body is a small pointer into the store, never a copy of its data:
 *   {"kind":"item","batchId":..,"itemId":..,"generation":1}
 *   {"kind":"poll","batchId":..,"itemId":..,"generation":1,"attempt":1,"poll":3}
 *   {"kind":"fanout","batchId":..,"generation":1,"start":0,"end":500}
 *   {"kind":"reconcile","batchId":..,"generation":1,"round":2}
 *   {"kind":"webhook","batchId":..,"generation":1,"event":"batch.completed"}
 * Names are derived from the body, so enqueueing the same unit twice is
 * de-duplicated by the queue (ST_ALREADY_EXISTS).
 */
#ifndef BATCH_TASKS_H
#define BATCH_TASKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batch/model.h"
#include "core/error.h"
#include "queue/queue.h"

#define TASK_BODY_MAX 1024

enum task_kind { TASK_ITEM, TASK_POLL, TASK_FANOUT, TASK_RECONCILE, TASK_WEBHOOK };

struct task_body {
    enum task_kind kind;
    char batch_id[BATCH_ID_MAX];
    char item_id[ITEM_ID_MAX];
    int64_t generation;
    int64_t poll;       /* TASK_POLL: 1, 2, ... */
    int64_t attempt;    /* TASK_POLL: the submission whose job is polled (item.attempts) */
    int64_t start, end; /* TASK_FANOUT: item indexes [start, end) */
    int64_t resubmit;   /* TASK_ITEM: > 0 for a new submission after a failed job */
    bool cancel;        /* TASK_POLL: sent by a cancellation, ahead of the schedule */
    char event[32];     /* TASK_WEBHOOK: batch.completed | batch.cancelled */
    int64_t round;      /* TASK_RECONCILE: 1, 2, ...; TASK_ITEM/POLL: > 0 when a reconcile
                           round sent it (part of the name, so each round can re-drive once) */
};

const char *task_kind_name(enum task_kind k);

/* Encodes t as compact JSON into out (TASK_BODY_MAX bytes). */
void task_body_encode(const struct task_body *t, char out[TASK_BODY_MAX]);

/* Decodes and validates a task body. ST_INVALID (code invalid_task) on any problem. */
enum status task_body_decode(const char *data, size_t len, struct task_body *out,
                             struct error *err);

/*
 * Fills spec with the task's deterministic name and body (body points into
 * body_buf, which must outlive spec) scheduled at schedule_time (0 = now).
 */
void task_spec_for(const struct task_body *t, int64_t schedule_time, char body_buf[TASK_BODY_MAX],
                   struct task_spec *spec);

#endif
