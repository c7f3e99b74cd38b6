#include "queue/queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/error.h"

void queue_close(struct queue *q)
{
    if (q)
        q->ops->close(q->state);
    free(q);
}

enum status queue_enqueue(struct queue *q, const struct task_spec *task, struct error *err)
{
    return q->ops->enqueue(q->state, task, err);
}

enum status queue_enqueue_many(struct queue *q, const struct task_spec *tasks, size_t n,
                               enum status *results, struct error *err)
{
    return q->ops->enqueue_many(q->state, tasks, n, results, err);
}

enum status queue_remove(struct queue *q, const char *name, struct error *err)
{
    return q->ops->remove(q->state, name, err);
}

static bool name_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

enum status queue_check_name(const char *name, struct error *err)
{
    size_t i, n = strnlen(name, TASK_NAME_MAX);

    if (n == 0 || n >= TASK_NAME_MAX)
        return error_set(err, ST_INVALID, "invalid_task_name",
                         "task name must have 1 to %d characters", TASK_NAME_MAX - 1);
    for (i = 0; i < n; i++) {
        if (!name_char_ok(name[i]))
            return error_set(err, ST_INVALID, "invalid_task_name",
                             "task name %.64s has a character outside [A-Za-z0-9_-] at %zu", name,
                             i);
    }
    return ST_OK;
}

void queue_task_name(const char *key, char out[TASK_NAME_MAX])
{
    char hex[65];
    size_t i, len;

    sha256_hex(key, strlen(key), hex);
    snprintf(out, TASK_NAME_MAX, "%.8s-%.480s", hex, key);
    len = strlen(out);
    for (i = 9; i < len; i++) {
        if (!name_char_ok(out[i]))
            out[i] = '_';
    }
}
