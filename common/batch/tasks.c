#include "batch/tasks.h"

#include <stdio.h>
#include <string.h>

#include "core/json.h"
#include "core/util.h"

const char *task_kind_name(enum task_kind k)
{
    switch (k) {
    case TASK_ITEM:
        return "item";
    case TASK_POLL:
        return "poll";
    case TASK_FANOUT:
        return "fanout";
    case TASK_RECONCILE:
        return "reconcile";
    case TASK_WEBHOOK:
        return "webhook";
    }
    return "unknown";
}

void task_body_encode(const struct task_body *t, char out[TASK_BODY_MAX])
{
    json_t *j = json_pack("{s:s, s:s, s:I}", "kind", task_kind_name(t->kind), "batchId",
                          t->batch_id, "generation", (json_int_t)t->generation);
    char *text;

    if (t->kind == TASK_ITEM || t->kind == TASK_POLL)
        json_object_set_new(j, "itemId", json_string(t->item_id));
    if (t->round > 0)
        json_object_set_new(j, "round", json_integer(t->round));
    if (t->kind == TASK_WEBHOOK)
        json_object_set_new(j, "event", json_string(t->event));
    if (t->kind == TASK_POLL) {
        json_object_set_new(j, "poll", json_integer(t->poll));
        json_object_set_new(j, "attempt", json_integer(t->attempt));
    }
    if (t->kind == TASK_POLL && t->cancel)
        json_object_set_new(j, "cancel", json_true());
    if (t->kind == TASK_ITEM && t->resubmit > 0)
        json_object_set_new(j, "resubmit", json_integer(t->resubmit));
    if (t->kind == TASK_FANOUT) {
        json_object_set_new(j, "start", json_integer(t->start));
        json_object_set_new(j, "end", json_integer(t->end));
    }
    text = json_dump_compact(j);
    if (!str_copy(out, TASK_BODY_MAX, text))
        BUG("task body longer than %d bytes", TASK_BODY_MAX);
    free(text);
    json_decref(j);
}

static bool id_chars_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_'))
            return false;
    return true;
}

enum status task_body_decode(const char *data, size_t len, struct task_body *out, struct error *err)
{
    json_t *j;
    const char *kind = NULL, *batch = NULL, *item = NULL;
    int64_t v;
    enum status st;

    memset(out, 0, sizeof(*out));
    if (len > TASK_BODY_MAX)
        return error_set(err, ST_INVALID, "invalid_task", "task body longer than %d bytes",
                         TASK_BODY_MAX);
    j = json_parse(data, len, err);
    if (!j) {
        if (err)
            str_copy(err->code, sizeof(err->code), "invalid_task");
        return ST_INVALID;
    }
    if ((st = json_get_string(j, "kind", JSON_REQUIRED, &kind, err)) != ST_OK ||
        (st = json_get_string(j, "batchId", JSON_REQUIRED, &batch, err)) != ST_OK ||
        (st = json_get_int(j, "generation", JSON_REQUIRED, 1, INT32_MAX, &out->generation, err)) !=
            ST_OK)
        goto bad;
    if (strcmp(kind, "item") == 0)
        out->kind = TASK_ITEM;
    else if (strcmp(kind, "poll") == 0)
        out->kind = TASK_POLL;
    else if (strcmp(kind, "fanout") == 0)
        out->kind = TASK_FANOUT;
    else if (strcmp(kind, "reconcile") == 0)
        out->kind = TASK_RECONCILE;
    else if (strcmp(kind, "webhook") == 0)
        out->kind = TASK_WEBHOOK;
    else {
        st = error_set(err, ST_INVALID, NULL, "unknown task kind \"%.32s\"", kind);
        goto bad;
    }
    if (!id_chars_ok(batch) || !str_copy(out->batch_id, sizeof(out->batch_id), batch) || !*batch) {
        st = error_set(err, ST_INVALID, NULL, "invalid batchId");
        goto bad;
    }
    if ((st = json_get_int(j, "round", out->kind == TASK_RECONCILE ? JSON_REQUIRED : JSON_OPTIONAL,
                           1, 1000000, &out->round, err)) != ST_OK)
        goto bad;
    if (out->kind == TASK_ITEM || out->kind == TASK_POLL) {
        if ((st = json_get_string(j, "itemId", JSON_REQUIRED, &item, err)) != ST_OK)
            goto bad;
        if (!id_chars_ok(item) || !*item || !str_copy(out->item_id, sizeof(out->item_id), item)) {
            st = error_set(err, ST_INVALID, NULL, "invalid itemId");
            goto bad;
        }
    }
    if (out->kind == TASK_POLL &&
        ((st = json_get_int(j, "poll", JSON_REQUIRED, 1, 1000000, &out->poll, err)) != ST_OK ||
         (st = json_get_int(j, "attempt", JSON_REQUIRED, 0, 1000000, &out->attempt, err)) !=
             ST_OK ||
         (st = json_get_bool(j, "cancel", JSON_OPTIONAL, &out->cancel, err)) != ST_OK))
        goto bad;
    if (out->kind == TASK_ITEM &&
        (st = json_get_int(j, "resubmit", JSON_OPTIONAL, 1, 1000, &out->resubmit, err)) != ST_OK)
        goto bad;
    if (out->kind == TASK_WEBHOOK) {
        const char *ev = NULL;

        if ((st = json_get_string(j, "event", JSON_REQUIRED, &ev, err)) != ST_OK)
            goto bad;
        if (strcmp(ev, "batch.completed") != 0 && strcmp(ev, "batch.cancelled") != 0) {
            st = error_set(err, ST_INVALID, NULL, "unknown webhook event \"%.32s\"", ev);
            goto bad;
        }
        str_copy(out->event, sizeof(out->event), ev);
    }
    if (out->kind == TASK_FANOUT) {
        if ((st = json_get_int(j, "start", JSON_REQUIRED, 0, 10000000, &out->start, err)) !=
                ST_OK ||
            (st = json_get_int(j, "end", JSON_REQUIRED, 1, 10000000, &v, err)) != ST_OK)
            goto bad;
        out->end = v;
        if (out->end <= out->start) {
            st = error_set(err, ST_INVALID, NULL, "fanout range [%lld, %lld) is empty",
                           (long long)out->start, (long long)out->end);
            goto bad;
        }
    }
    json_decref(j);
    return ST_OK;
bad:
    json_decref(j);
    if (err)
        str_copy(err->code, sizeof(err->code), "invalid_task");
    return st;
}

void task_spec_for(const struct task_body *t, int64_t schedule_time, char body_buf[TASK_BODY_MAX],
                   struct task_spec *spec)
{
    char key[256], round[32] = "";

    if (t->round > 0 && t->kind != TASK_RECONCILE)
        snprintf(round, sizeof(round), "-rc%lld", (long long)t->round);
    switch (t->kind) {
    case TASK_ITEM:
        if (t->resubmit > 0)
            snprintf(key, sizeof(key), "i-%s-%s-g%lld-r%lld%s", t->batch_id, t->item_id,
                     (long long)t->generation, (long long)t->resubmit, round);
        else
            snprintf(key, sizeof(key), "i-%s-%s-g%lld%s", t->batch_id, t->item_id,
                     (long long)t->generation, round);
        break;
    case TASK_POLL:
        /* The submission is part of the name: a resubmitted job's polls start at 1 again. */
        snprintf(key, sizeof(key), "p-%s-%s-g%lld-a%lld-%lld%s%s", t->batch_id, t->item_id,
                 (long long)t->generation, (long long)t->attempt, (long long)t->poll,
                 t->cancel ? "-c" : "", round);
        break;
    case TASK_FANOUT:
        snprintf(key, sizeof(key), "f-%s-g%lld-%lld", t->batch_id, (long long)t->generation,
                 (long long)t->start);
        break;
    case TASK_RECONCILE:
        snprintf(key, sizeof(key), "rc-%s-g%lld-%lld", t->batch_id, (long long)t->generation,
                 (long long)t->round);
        break;
    case TASK_WEBHOOK:
        snprintf(key, sizeof(key), "w-%s-g%lld-%s", t->batch_id, (long long)t->generation,
                 t->event);
        break;
    }
    memset(spec, 0, sizeof(*spec));
    queue_task_name(key, spec->name);
    task_body_encode(t, body_buf);
    spec->body = body_buf;
    spec->body_len = strlen(body_buf);
    spec->schedule_time = schedule_time;
}
