#include "queue/queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"

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

void queue_task_name(const char *key, char out[TASK_NAME_MAX])
{
    char hex[65];
    size_t i, len;

    sha256_hex(key, strlen(key), hex);
    snprintf(out, TASK_NAME_MAX, "%.8s-%.480s", hex, key);
    len = strlen(out);
    for (i = 9; i < len; i++) {
        char c = out[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            out[i] = '_';
    }
}
