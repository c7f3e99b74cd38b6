#include "store/store.h"

#include <stdlib.h>

void store_close(struct store *s)
{
    if (s)
        s->ops->close(s->state);
    free(s);
}

enum status store_ping(struct store *s, struct error *err)
{
    return s->ops->ping(s->state, err);
}

enum status store_create_batch(struct store *s, const struct batch *b, struct batch *existing,
                               struct error *err)
{
    return s->ops->create_batch(s->state, b, existing, err);
}

enum status store_put_items(struct store *s, const char *batch_id, const struct item *items,
                            size_t n, struct error *err)
{
    return s->ops->put_items(s->state, batch_id, items, n, err);
}

enum status store_get_batch(struct store *s, const char *batch_id, struct batch *out,
                            struct error *err)
{
    return s->ops->get_batch(s->state, batch_id, out, err);
}

enum status store_set_batch_status(struct store *s, const char *batch_id, enum batch_status from,
                                   enum batch_status to, int64_t now, struct error *err)
{
    return s->ops->set_batch_status(s->state, batch_id, from, to, now, err);
}

enum status store_list_batches(struct store *s, const char *user_id, int limit,
                               const char *page_token, struct batch **out, size_t *n,
                               char next_token[PAGE_TOKEN_MAX], struct error *err)
{
    return s->ops->list_batches(s->state, user_id, limit, page_token, out, n, next_token, err);
}

enum status store_get_item(struct store *s, const char *batch_id, const char *item_id,
                           struct item *out, struct error *err)
{
    return s->ops->get_item(s->state, batch_id, item_id, out, err);
}

enum status store_list_items(struct store *s, const char *batch_id, const struct item_query *q,
                             struct item_page *out, struct error *err)
{
    return s->ops->list_items(s->state, batch_id, q, out, err);
}

void store_item_page_release(struct item_page *p)
{
    size_t i;

    for (i = 0; i < p->n; i++)
        item_release(&p->items[i]);
    free(p->items);
    p->items = NULL;
    p->n = 0;
    p->next_token[0] = '\0';
}

enum status store_item_begin(struct store *s, const char *batch_id, const char *item_id,
                             int64_t generation, int64_t now, int64_t lease_us,
                             enum item_begin *result, struct item *out, struct error *err)
{
    return s->ops->item_begin(s->state, batch_id, item_id, generation, now, lease_us, result, out,
                              err);
}

enum status store_item_set_job(struct store *s, const char *batch_id, const char *item_id,
                               int64_t generation, const char *provider, const char *job_id,
                               int64_t polls, int64_t now, struct error *err)
{
    return s->ops->item_set_job(s->state, batch_id, item_id, generation, provider, job_id, polls,
                                now, err);
}

enum status store_item_release_lease(struct store *s, const char *batch_id, const char *item_id,
                                     int64_t generation, const char *error_code,
                                     const char *error_message, int64_t now, struct error *err)
{
    return s->ops->item_release_lease(s->state, batch_id, item_id, generation, error_code,
                                      error_message, now, err);
}

enum status store_item_finish(struct store *s, const char *batch_id, const char *item_id,
                              int64_t generation, int shard, const struct item_outcome *o,
                              bool *applied, struct error *err)
{
    return s->ops->item_finish(s->state, batch_id, item_id, generation, shard, o, applied, err);
}

enum status store_get_counts(struct store *s, const char *batch_id, struct batch_counts *out,
                             struct error *err)
{
    return s->ops->get_counts(s->state, batch_id, out, err);
}

enum status store_try_complete(struct store *s, const char *batch_id, int64_t generation,
                               int64_t now, bool *won, enum batch_status *final_status,
                               struct error *err)
{
    return s->ops->try_complete(s->state, batch_id, generation, now, won, final_status, err);
}

enum status store_retry_failed(struct store *s, const char *batch_id, int64_t now,
                               int64_t *new_generation, struct item_page *redriven,
                               struct error *err)
{
    return s->ops->retry_failed(s->state, batch_id, now, new_generation, redriven, err);
}

enum status store_cancel_batch(struct store *s, const char *batch_id, int64_t now, bool *changed,
                               struct item_page *in_flight, struct error *err)
{
    return s->ops->cancel_batch(s->state, batch_id, now, changed, in_flight, err);
}

enum status store_put_dead_letter(struct store *s, const struct dead_letter *dl, struct error *err)
{
    return s->ops->put_dead_letter(s->state, dl, err);
}

enum status store_item_drop_job(struct store *s, const char *batch_id, const char *item_id,
                                int64_t generation, const char *error_code,
                                const char *error_message, int64_t now, struct error *err)
{
    return s->ops->item_drop_job(s->state, batch_id, item_id, generation, error_code, error_message,
                                 now, err);
}

enum status store_cache_get(struct store *s, const char *key, struct item_result *out,
                            struct error *err)
{
    return s->ops->cache_get(s->state, key, out, err);
}

enum status store_cache_put(struct store *s, const char *key, const struct item_result *result,
                            int64_t now, struct error *err)
{
    return s->ops->cache_put(s->state, key, result, now, err);
}

enum status store_api_key_put(struct store *s, const struct api_key *k, struct error *err)
{
    return s->ops->api_key_put(s->state, k, err);
}

enum status store_api_key_get(struct store *s, const char *hash, struct api_key *out,
                              struct error *err)
{
    return s->ops->api_key_get(s->state, hash, out, err);
}

enum status store_rate_count(struct store *s, const char *user_id, const char *kind, int64_t window,
                             int64_t amount, int64_t *total, struct error *err)
{
    return s->ops->rate_count(s->state, user_id, kind, window, amount, total, err);
}
