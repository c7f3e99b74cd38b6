#include "contract/store_contract.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch/model.h"
#include "core/error.h"
#include "core/util.h"

#define LEASE_US INT64_C(30000000)
#define SEC      INT64_C(1000000)
#define THREADS  8

static struct store *(*open_store)(void);
static void (*close_store)(struct store *);
static struct store *S;
static struct error E; /* the main thread's error; threads use their own */

#define OK(expr)                                                                                   \
    do {                                                                                           \
        enum status st_;                                                                           \
        error_clear(&E);                                                                           \
        st_ = (expr);                                                                              \
        ck_assert_msg(st_ == ST_OK, "%s -> %s: %s", #expr, status_name(st_), E.message);           \
    } while (0)

#define IS(want, expr)                                                                             \
    do {                                                                                           \
        enum status st_;                                                                           \
        error_clear(&E);                                                                           \
        st_ = (expr);                                                                              \
        ck_assert_msg(st_ == (want), "%s -> %s, want %s: %s", #expr, status_name(st_),             \
                      status_name(want), E.message);                                               \
    } while (0)

static void setup(void)
{
    S = open_store();
    ck_assert_ptr_nonnull(S);
}

static void teardown(void)
{
    if (S)
        close_store(S);
    S = NULL;
}

/* ---- helpers ---------------------------------------------------------- */

void contract_batch_fill(struct batch *b, const char *id, const char *user_id, int64_t total,
                         int shards, int64_t created_at)
{
    batch_init(b);
    ck_assert(str_copy(b->id, sizeof(b->id), id));
    ck_assert(str_copy(b->user_id, sizeof(b->user_id), user_id));
    str_copy(b->type, sizeof(b->type), "virtual-staging");
    str_copy(b->priority, sizeof(b->priority), "normal");
    b->status = BATCH_CREATING;
    b->total = total;
    b->created_at = created_at;
    b->updated_at = created_at;
    b->generation = 1;
    b->shards = shards;
}

static void fill_item(struct item *it, const char *batch_id, int64_t index)
{
    char url[64];

    item_init(it);
    str_copy(it->batch_id, sizeof(it->batch_id), batch_id);
    item_id_for_index(batch_id, index, it->id);
    it->index = index;
    snprintf(url, sizeof(url), "https://img.example/%lld.jpg", (long long)index);
    it->url = xstrdup(url);
    it->metadata = json_pack("{s:I}", "n", (json_int_t)index);
}

static void put_range(struct store *s, const char *batch_id, int64_t from, int64_t to)
{
    struct item *items = xcalloc((size_t)(to - from) + 1, sizeof(*items));
    struct error err = {0};
    enum status st;
    int64_t i;

    for (i = from; i < to; i++)
        fill_item(&items[i - from], batch_id, i);
    st = store_put_items(s, batch_id, items, (size_t)(to - from), &err);
    for (i = from; i < to; i++)
        item_release(&items[i - from]);
    free(items);
    ck_assert_msg(st == ST_OK, "put items of %s: %s", batch_id, err.message);
}

void contract_make_batch(struct store *s, const char *id, int64_t n, int shards)
{
    struct batch b, existing;
    struct error err = {0};
    enum status st;

    contract_batch_fill(&b, id, "user-1", n, shards, CONTRACT_T0);
    st = store_create_batch(s, &b, &existing, &err);
    ck_assert_msg(st == ST_OK, "create %s: %s", id, err.message);
    batch_release(&b);
    batch_release(&existing);
    if (n > 0)
        put_range(s, id, 0, n);
    st = store_set_batch_status(s, id, BATCH_CREATING, BATCH_PROCESSING, CONTRACT_T0, &err);
    ck_assert_msg(st == ST_OK, "start %s: %s", id, err.message);
}

static void item_id(const char *batch_id, int64_t index, char out[ITEM_ID_MAX])
{
    item_id_for_index(batch_id, index, out);
}

/* item_finish with the shard a caller would use; returns *applied. */
static bool finish_as(struct store *s, const char *batch_id, int shards, int64_t index,
                      int64_t generation, enum item_status status, int64_t duration_ms)
{
    struct item_result result = {
        .bytes = 1000 + index, .cached = false, .cost_micros = 39000 + index};
    struct item_outcome o = {0};
    char id[ITEM_ID_MAX];
    struct error err = {0};
    bool applied = false;
    enum status st;

    item_id(batch_id, index, id);
    snprintf(result.key, sizeof(result.key), "results/%s/%s.png", batch_id, id);
    str_copy(result.content_type, sizeof(result.content_type), "image/png");
    str_copy(result.provider, sizeof(result.provider), "gemini");
    o.status = status;
    o.result = status == ITEM_COMPLETED ? &result : NULL;
    o.error_code = status == ITEM_FAILED ? "provider_error" : NULL;
    o.error_message = status == ITEM_FAILED ? "the provider refused the image" : NULL;
    o.retryable = false;
    o.duration_ms = duration_ms;
    o.now = CONTRACT_T0 + 10 * SEC;
    st = store_item_finish(s, batch_id, id, generation, item_shard(id, shards), &o, &applied, &err);
    ck_assert_msg(st == ST_OK, "finish %s/%lld: %s", batch_id, (long long)index, err.message);
    return applied;
}

static bool finish(const char *batch_id, int shards, int64_t index, enum item_status status)
{
    return finish_as(S, batch_id, shards, index, 1, status, 100);
}

static struct batch_counts counts(const char *batch_id)
{
    struct batch_counts n;

    OK(store_get_counts(S, batch_id, &n, &E));
    return n;
}

static struct batch get_batch(const char *batch_id)
{
    struct batch b;

    OK(store_get_batch(S, batch_id, &b, &E));
    return b;
}

static enum batch_status batch_status(const char *batch_id)
{
    struct batch b = get_batch(batch_id);
    enum batch_status st = b.status;

    batch_release(&b);
    return st;
}

static struct item get_item(const char *batch_id, int64_t index)
{
    char id[ITEM_ID_MAX];
    struct item it;

    item_id(batch_id, index, id);
    OK(store_get_item(S, batch_id, id, &it, &E));
    return it;
}

static enum item_status item_status(const char *batch_id, int64_t index)
{
    struct item it = get_item(batch_id, index);
    enum item_status st = it.status;

    item_release(&it);
    return st;
}

void contract_check_counts(struct store *s, const char *batch_id)
{
    int64_t by_status[ITEM_CANCELLED + 1] = {0}, terminal;
    struct item_query q = {.limit = 1000};
    char token[PAGE_TOKEN_MAX] = "";
    struct batch_counts n;
    struct item_page page;
    struct error err = {0};
    enum status st;
    size_t i;

    do {
        q.page_token = token[0] ? token : NULL;
        st = store_list_items(s, batch_id, &q, &page, &err);
        ck_assert_msg(st == ST_OK, "list items of %s: %s", batch_id, err.message);
        for (i = 0; i < page.n; i++)
            by_status[page.items[i].status]++;
        str_copy(token, sizeof(token), page.next_token);
        store_item_page_release(&page);
    } while (token[0]);
    st = store_get_counts(s, batch_id, &n, &err);
    ck_assert_msg(st == ST_OK, "counts of %s: %s", batch_id, err.message);
    terminal = by_status[ITEM_COMPLETED] + by_status[ITEM_FAILED] + by_status[ITEM_CANCELLED];
    ck_assert_int_eq(n.processed, terminal);
    ck_assert_int_eq(n.success, by_status[ITEM_COMPLETED]);
    ck_assert_int_eq(n.failure, by_status[ITEM_FAILED]);
    ck_assert_int_eq(n.cancelled, by_status[ITEM_CANCELLED]);
    ck_assert_int_eq(n.success + n.failure + n.cancelled, n.processed);
}

/* Runs fn(arg, t) on THREADS threads released together. */
struct crowd {
    pthread_barrier_t start;
    void (*fn)(void *arg, int t);
    void *arg;
};

struct crowd_member {
    struct crowd *crowd;
    int t;
};

static void *crowd_main(void *p)
{
    struct crowd_member *m = p;

    pthread_barrier_wait(&m->crowd->start);
    m->crowd->fn(m->crowd->arg, m->t);
    return NULL;
}

static void run_crowd(void (*fn)(void *arg, int t), void *arg)
{
    struct crowd c = {.fn = fn, .arg = arg};
    struct crowd_member m[THREADS];
    pthread_t th[THREADS];
    int t;

    pthread_barrier_init(&c.start, NULL, THREADS);
    for (t = 0; t < THREADS; t++) {
        m[t] = (struct crowd_member){&c, t};
        ck_assert_int_eq(pthread_create(&th[t], NULL, crowd_main, &m[t]), 0);
    }
    for (t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    pthread_barrier_destroy(&c.start);
}

/* ---- batches ---------------------------------------------------------- */

static const struct {
    const char *options; /* JSON or NULL */
    const char *webhook;
    const char *idem_key;
    double cost;
    int shards;
    enum batch_status status;
} batch_rows[] = {
    {"{\"prompt\":\"modern living room\",\"duration\":5,\"model\":\"gen4\",\"tags\":[1,2.5,null]}",
     "https://crm.example/hook?x=1", "key-1", 12.375, 4, BATCH_CREATING},
    {NULL, NULL, "", 0.0, 1, BATCH_CREATING},
    {"{}", "", "k", 1e-3, MAX_SHARDS, BATCH_PROCESSING},
};

START_TEST(batch_round_trip)
{
    struct batch b, got, existing;

    contract_batch_fill(&b, "b_round", "user-rt", 10000, batch_rows[_i].shards,
                        CONTRACT_T0 + 123456);
    if (batch_rows[_i].options)
        b.options = json_loads(batch_rows[_i].options, 0, NULL);
    b.webhook_url = xstrdup(batch_rows[_i].webhook);
    str_copy(b.idempotency_key, sizeof(b.idempotency_key), batch_rows[_i].idem_key);
    str_copy(b.request_hash, sizeof(b.request_hash),
             "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    str_copy(b.priority, sizeof(b.priority), "high");
    str_copy(b.type, sizeof(b.type), "video-runway");
    b.cost_estimate = batch_rows[_i].cost;
    b.status = batch_rows[_i].status;
    b.updated_at = CONTRACT_T0 + 999;
    b.completed_at = 0;
    b.generation = 1;
    OK(store_create_batch(S, &b, &existing, &E));
    batch_release(&existing);

    got = get_batch("b_round");
    ck_assert_str_eq(got.id, b.id);
    ck_assert_str_eq(got.user_id, b.user_id);
    ck_assert_str_eq(got.type, b.type);
    ck_assert_str_eq(got.priority, b.priority);
    ck_assert_int_eq(got.status, b.status);
    ck_assert_int_eq(got.total, b.total);
    if (b.options) {
        ck_assert_ptr_nonnull(got.options);
        ck_assert_msg(json_equal(got.options, b.options), "options differ");
    } else {
        ck_assert_ptr_null(got.options);
    }
    if (b.webhook_url)
        ck_assert_str_eq(got.webhook_url, b.webhook_url);
    else
        ck_assert_ptr_null(got.webhook_url);
    ck_assert_str_eq(got.idempotency_key, b.idempotency_key);
    ck_assert_str_eq(got.request_hash, b.request_hash);
    ck_assert_double_eq(got.cost_estimate, b.cost_estimate);
    ck_assert_int_eq(got.created_at, b.created_at);
    ck_assert_int_eq(got.updated_at, b.updated_at);
    ck_assert_int_eq(got.completed_at, 0);
    ck_assert_int_eq(got.generation, 1);
    ck_assert_int_eq(got.shards, b.shards);
    batch_release(&got);

    /* The shards exist from the start, all zero. */
    {
        struct batch_counts n = counts("b_round");

        ck_assert_int_eq(n.processed, 0);
        ck_assert_int_eq(n.success + n.failure + n.cancelled + n.duration_ms_sum, 0);
    }
    batch_release(&b);
}
END_TEST

enum op {
    OP_GET_BATCH,
    OP_SET_STATUS,
    OP_GET_ITEM,
    OP_LIST_ITEMS,
    OP_PUT_ITEMS,
    OP_BEGIN,
    OP_SET_JOB,
    OP_RELEASE,
    OP_FINISH,
    OP_COUNTS,
    OP_TRY_COMPLETE,
    OP_RETRY,
    OP_CANCEL,
    OP__COUNT
};

/* Runs op on batch_id (item index 0) and returns its status. */
static enum status run_op(enum op op, const char *batch_id)
{
    struct item_outcome o = {.status = ITEM_COMPLETED, .now = CONTRACT_T0};
    struct item_query q = {.limit = 10};
    enum batch_status final;
    char id[ITEM_ID_MAX];
    struct batch_counts n;
    enum item_begin r;
    struct item_page page;
    struct batch b;
    struct item it;
    int64_t gen;
    bool flag;
    enum status st = ST_INTERNAL;

    item_id(batch_id, 0, id);
    switch (op) {
    case OP_GET_BATCH:
        st = store_get_batch(S, batch_id, &b, &E);
        batch_release(&b);
        break;
    case OP_SET_STATUS:
        st = store_set_batch_status(S, batch_id, BATCH_CREATING, BATCH_PROCESSING, CONTRACT_T0, &E);
        break;
    case OP_GET_ITEM:
        st = store_get_item(S, batch_id, id, &it, &E);
        item_release(&it);
        break;
    case OP_LIST_ITEMS:
        st = store_list_items(S, batch_id, &q, &page, &E);
        store_item_page_release(&page);
        break;
    case OP_PUT_ITEMS:
        fill_item(&it, batch_id, 0);
        st = store_put_items(S, batch_id, &it, 1, &E);
        item_release(&it);
        break;
    case OP_BEGIN:
        st = store_item_begin(S, batch_id, id, 1, CONTRACT_T0, LEASE_US, &r, &it, &E);
        item_release(&it);
        break;
    case OP_SET_JOB:
        st = store_item_set_job(S, batch_id, id, 1, "runway", "job-1", 0, CONTRACT_T0, &E);
        break;
    case OP_RELEASE:
        st = store_item_release_lease(S, batch_id, id, 1, "unavailable", "busy", CONTRACT_T0, &E);
        break;
    case OP_FINISH:
        st = store_item_finish(S, batch_id, id, 1, 0, &o, &flag, &E);
        break;
    case OP_COUNTS:
        st = store_get_counts(S, batch_id, &n, &E);
        break;
    case OP_TRY_COMPLETE:
        st = store_try_complete(S, batch_id, 1, CONTRACT_T0, &flag, &final, &E);
        break;
    case OP_RETRY:
        st = store_retry_failed(S, batch_id, CONTRACT_T0, &gen, &page, &E);
        store_item_page_release(&page);
        break;
    case OP_CANCEL:
        st = store_cancel_batch(S, batch_id, CONTRACT_T0, &flag, &page, &E);
        store_item_page_release(&page);
        break;
    case OP__COUNT:
        break;
    }
    return st;
}

START_TEST(unknown_batch_is_not_found)
{
    enum status st;

    error_clear(&E);
    st = run_op((enum op)_i, "b_missing");
    ck_assert_msg(st == ST_NOT_FOUND, "op %d -> %s: %s", _i, status_name(st), E.message);
}
END_TEST

START_TEST(unknown_item_is_not_found)
{
    char id[ITEM_ID_MAX];
    struct item it;
    enum item_begin r;

    contract_make_batch(S, "b_items", 2, 1);
    item_id("b_items", 7, id);
    IS(ST_NOT_FOUND, store_get_item(S, "b_items", id, &it, &E));
    item_release(&it);
    IS(ST_NOT_FOUND, store_item_begin(S, "b_items", id, 1, CONTRACT_T0, LEASE_US, &r, &it, &E));
    item_release(&it);
}
END_TEST

START_TEST(duplicate_id_returns_first)
{
    struct batch a, b, existing, got;

    contract_batch_fill(&a, "b_dup", "user-a", 3, 2, CONTRACT_T0);
    OK(store_create_batch(S, &a, &existing, &E));
    batch_release(&existing);
    contract_batch_fill(&b, "b_dup", "user-b", 99, 5, CONTRACT_T0 + SEC);
    IS(ST_ALREADY_EXISTS, store_create_batch(S, &b, &existing, &E));
    ck_assert_str_eq(existing.id, "b_dup");
    ck_assert_str_eq(existing.user_id, "user-a");
    ck_assert_int_eq(existing.total, 3);
    ck_assert_int_eq(existing.shards, 2);
    batch_release(&existing);
    got = get_batch("b_dup");
    ck_assert_str_eq(got.user_id, "user-a");
    ck_assert_int_eq(got.total, 3);
    batch_release(&got);
    batch_release(&a);
    batch_release(&b);
}
END_TEST

START_TEST(idempotency_claim_returns_first)
{
    struct batch a, b, c, existing, got, *list = NULL;
    char next[PAGE_TOKEN_MAX];
    size_t n = 0;

    contract_batch_fill(&a, "b_idem_1", "user-i", 3, 1, CONTRACT_T0);
    str_copy(a.idempotency_key, sizeof(a.idempotency_key), "req-42");
    str_copy(a.request_hash, sizeof(a.request_hash), "aaaa");
    OK(store_create_batch(S, &a, &existing, &E));
    batch_release(&existing);

    /* Same user, same key, another batch id: the first batch answers, nothing is written. */
    contract_batch_fill(&b, "b_idem_2", "user-i", 5, 1, CONTRACT_T0 + SEC);
    str_copy(b.idempotency_key, sizeof(b.idempotency_key), "req-42");
    str_copy(b.request_hash, sizeof(b.request_hash), "bbbb");
    IS(ST_ALREADY_EXISTS, store_create_batch(S, &b, &existing, &E));
    ck_assert_str_eq(existing.id, "b_idem_1");
    ck_assert_str_eq(existing.request_hash, "aaaa");
    ck_assert_int_eq(existing.total, 3);
    batch_release(&existing);
    IS(ST_NOT_FOUND, store_get_batch(S, "b_idem_2", &got, &E));
    batch_release(&got);
    OK(store_list_batches(S, "user-i", 100, NULL, &list, &n, next, &E));
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(list[0].id, "b_idem_1");
    batch_release(&list[0]);
    free(list);

    /* The key is per user. */
    contract_batch_fill(&c, "b_idem_3", "user-j", 5, 1, CONTRACT_T0);
    str_copy(c.idempotency_key, sizeof(c.idempotency_key), "req-42");
    OK(store_create_batch(S, &c, &existing, &E));
    batch_release(&existing);
    batch_release(&a);
    batch_release(&b);
    batch_release(&c);
}
END_TEST

static const struct {
    enum batch_status from, to; /* the transition asked for */
    enum status want;
    bool completed; /* completed_at set */
} status_rows[] = {
    {BATCH_CREATING, BATCH_PROCESSING, ST_OK, false},
    {BATCH_PROCESSING, BATCH_COMPLETED, ST_FAILED_PRECONDITION, false},
    {BATCH_CREATING, BATCH_FAILED, ST_OK, true},
    {BATCH_CREATING, BATCH_CANCELLED, ST_OK, true},
};

START_TEST(set_batch_status_is_conditional)
{
    struct batch b, existing, got;

    contract_batch_fill(&b, "b_status", "user-s", 1, 1, CONTRACT_T0);
    OK(store_create_batch(S, &b, &existing, &E));
    batch_release(&existing);
    IS(status_rows[_i].want, store_set_batch_status(S, "b_status", status_rows[_i].from,
                                                    status_rows[_i].to, CONTRACT_T0 + 5 * SEC, &E));
    got = get_batch("b_status");
    if (status_rows[_i].want == ST_OK) {
        ck_assert_int_eq(got.status, status_rows[_i].to);
        ck_assert_int_eq(got.updated_at, CONTRACT_T0 + 5 * SEC);
    } else {
        ck_assert_int_eq(got.status, BATCH_CREATING);
    }
    ck_assert_int_eq(got.completed_at, status_rows[_i].completed ? CONTRACT_T0 + 5 * SEC : 0);
    batch_release(&got);
    batch_release(&b);
}
END_TEST

START_TEST(list_batches_newest_first)
{
    /* user-a: 7 batches, two pairs with equal created_at; user-b: 2. */
    static const struct {
        const char *id, *user;
        int64_t at;
    } rows[] = {
        {"b_a1", "user-a", 1}, {"b_a2", "user-a", 5}, {"b_a3", "user-a", 5},
        {"b_a4", "user-a", 3}, {"b_a5", "user-a", 9}, {"b_a6", "user-a", 7},
        {"b_a7", "user-a", 7}, {"b_b1", "user-b", 4}, {"b_b2", "user-b", 8},
    };
    static const char *const want_a[] = {"b_a5", "b_a6", "b_a7", "b_a2", "b_a3", "b_a4", "b_a1"};
    static const int limits[] = {1, 2, 3, 7, 100};
    char token[PAGE_TOKEN_MAX], next[PAGE_TOKEN_MAX];
    struct batch b, existing, *list = NULL;
    size_t i, n, seen, l;

    for (i = 0; i < ARRAY_SIZE(rows); i++) {
        contract_batch_fill(&b, rows[i].id, rows[i].user, 1, 1, CONTRACT_T0 + rows[i].at * SEC);
        OK(store_create_batch(S, &b, &existing, &E));
        batch_release(&existing);
        batch_release(&b);
    }
    for (l = 0; l < ARRAY_SIZE(limits); l++) {
        token[0] = '\0';
        seen = 0;
        do {
            OK(store_list_batches(S, "user-a", limits[l], token[0] ? token : NULL, &list, &n, next,
                                  &E));
            ck_assert_uint_le(n, (size_t)limits[l]);
            ck_assert_msg(n > 0 || seen == ARRAY_SIZE(want_a), "empty page at %zu", seen);
            for (i = 0; i < n; i++, seen++) {
                ck_assert_uint_lt(seen, ARRAY_SIZE(want_a));
                ck_assert_str_eq(list[i].id, want_a[seen]);
                ck_assert_str_eq(list[i].user_id, "user-a");
                batch_release(&list[i]);
            }
            free(list);
            str_copy(token, sizeof(token), next);
        } while (token[0]);
        ck_assert_uint_eq(seen, ARRAY_SIZE(want_a));
    }
    OK(store_list_batches(S, "user-b", 10, NULL, &list, &n, next, &E));
    ck_assert_uint_eq(n, 2);
    ck_assert_str_eq(list[0].id, "b_b2");
    ck_assert_str_eq(list[1].id, "b_b1");
    ck_assert_str_eq(next, "");
    for (i = 0; i < n; i++)
        batch_release(&list[i]);
    free(list);
    OK(store_list_batches(S, "user-nobody", 10, NULL, &list, &n, next, &E));
    ck_assert_uint_eq(n, 0);
    free(list);
    IS(ST_INVALID, store_list_batches(S, "user-a", 10, "not a token", &list, &n, next, &E));
    free(list);
    IS(ST_INVALID, store_list_batches(S, "user-a", 0, NULL, &list, &n, next, &E));
    free(list);
    IS(ST_INVALID, store_list_batches(S, "user-a", 1001, NULL, &list, &n, next, &E));
    free(list);
}
END_TEST

/* ---- items ------------------------------------------------------------ */

START_TEST(put_items_is_idempotent)
{
    struct item it, again;
    enum item_begin r;
    char id[ITEM_ID_MAX];

    contract_make_batch(S, "b_put", 10, 2);
    item_id("b_put", 3, id);
    OK(store_item_begin(S, "b_put", id, 1, CONTRACT_T0, LEASE_US, &r, &it, &E));
    ck_assert_int_eq(r, BEGIN_STARTED);
    item_release(&it);

    put_range(S, "b_put", 0, 10); /* a resumed creation writes everything again */
    it = get_item("b_put", 3);
    ck_assert_int_eq(it.status, ITEM_PROCESSING);
    ck_assert_int_eq(it.attempts, 1);
    item_release(&it);

    it = get_item("b_put", 7);
    fill_item(&again, "b_put", 7);
    ck_assert_str_eq(it.batch_id, "b_put");
    ck_assert_str_eq(it.id, again.id);
    ck_assert_int_eq(it.index, 7);
    ck_assert_str_eq(it.url, "https://img.example/7.jpg");
    ck_assert_msg(json_equal(it.metadata, again.metadata), "metadata differs");
    ck_assert_int_eq(it.status, ITEM_PENDING);
    ck_assert_int_eq(it.generation, 1);
    ck_assert_int_eq(it.attempts, 0);
    ck_assert(!it.has_result);
    ck_assert(!it.has_error);
    item_release(&it);
    item_release(&again);
    contract_check_counts(S, "b_put");
}
END_TEST

START_TEST(put_items_large_batch)
{
    struct item_query q = {.limit = 1000, .offset = 9990};
    struct item_page page;

    contract_make_batch(S, "b_large", 2500, 16);
    OK(store_list_items(S, "b_large", &q, &page, &E));
    ck_assert_uint_eq(page.n, 0); /* offset past the end */
    store_item_page_release(&page);
    q.offset = 2499;
    OK(store_list_items(S, "b_large", &q, &page, &E));
    ck_assert_uint_eq(page.n, 1);
    ck_assert_int_eq(page.items[0].index, 2499);
    store_item_page_release(&page);
    contract_check_counts(S, "b_large");
}
END_TEST

#define LIST_N 25

/* 25 items: 0-4 completed, 5-7 failed, 8 processing, the rest pending. */
static void make_list_batch(void)
{
    char id[ITEM_ID_MAX];
    enum item_begin r;
    struct item it;
    int i;

    contract_make_batch(S, "b_list", LIST_N, 3);
    for (i = 0; i < 5; i++)
        ck_assert(finish("b_list", 3, i, ITEM_COMPLETED));
    for (i = 5; i < 8; i++)
        ck_assert(finish("b_list", 3, i, ITEM_FAILED));
    item_id("b_list", 8, id);
    OK(store_item_begin(S, "b_list", id, 1, CONTRACT_T0, LEASE_US, &r, &it, &E));
    item_release(&it);
}

static const struct {
    bool has_status;
    enum item_status status;
    int limit;
    int64_t offset;
    size_t n;
    int64_t first;
    bool more;
} list_rows[] = {
    {false, 0, 10, 0, 10, 0, true},
    {false, 0, 10, 20, 5, 20, false},
    {false, 0, 5, 20, 5, 20, false},
    {false, 0, 1000, 25, 0, -1, false},
    {false, 0, 1000, 0, 25, 0, false},
    {true, ITEM_COMPLETED, 100, 0, 5, 0, false},
    {true, ITEM_FAILED, 2, 1, 2, 6, false},
    {true, ITEM_FAILED, 1, 0, 1, 5, true},
    {true, ITEM_PENDING, 100, 0, 16, 9, false},
    {true, ITEM_PROCESSING, 10, 0, 1, 8, false},
    {true, ITEM_POLLING, 10, 0, 0, -1, false},
    {true, ITEM_CANCELLED, 10, 3, 0, -1, false},
};

START_TEST(list_items_filters)
{
    struct item_query q = {0};
    struct item_page page;
    size_t i;

    make_list_batch();
    q.has_status = list_rows[_i].has_status;
    q.status = list_rows[_i].status;
    q.limit = list_rows[_i].limit;
    q.offset = list_rows[_i].offset;
    OK(store_list_items(S, "b_list", &q, &page, &E));
    ck_assert_uint_eq(page.n, list_rows[_i].n);
    if (page.n)
        ck_assert_int_eq(page.items[0].index, list_rows[_i].first);
    for (i = 0; i < page.n; i++) {
        if (q.has_status)
            ck_assert_int_eq(page.items[i].status, q.status);
        if (i)
            ck_assert_int_lt(page.items[i - 1].index, page.items[i].index);
    }
    ck_assert_msg((page.next_token[0] != '\0') == list_rows[_i].more, "next token \"%s\"",
                  page.next_token);
    store_item_page_release(&page);
}
END_TEST

START_TEST(list_items_tokens_cover_all_once)
{
    static const int limits[] = {1, 4, 7, 16, 25, 1000};
    static const struct {
        bool has_status;
        enum item_status status;
        int want;
    } filters[] = {
        {false, 0, LIST_N},
        {true, ITEM_PENDING, 16},
        {true, ITEM_COMPLETED, 5},
    };
    char token[PAGE_TOKEN_MAX];
    struct item_query q = {0};
    struct item_page page;
    bool seen[LIST_N];
    int64_t last;
    size_t l, f, i;
    int total;

    make_list_batch();
    for (f = 0; f < ARRAY_SIZE(filters); f++) {
        for (l = 0; l < ARRAY_SIZE(limits); l++) {
            memset(seen, 0, sizeof(seen));
            token[0] = '\0';
            total = 0;
            last = -1;
            q.has_status = filters[f].has_status;
            q.status = filters[f].status;
            q.limit = limits[l];
            q.offset = 0;
            do {
                q.page_token = token[0] ? token : NULL;
                OK(store_list_items(S, "b_list", &q, &page, &E));
                ck_assert_msg(page.n > 0, "empty page (filter %zu, limit %d)", f, limits[l]);
                for (i = 0; i < page.n; i++) {
                    int64_t x = page.items[i].index;

                    ck_assert_int_gt(x, last);
                    ck_assert(x >= 0 && x < LIST_N && !seen[x]);
                    seen[x] = true;
                    last = x;
                    total++;
                }
                str_copy(token, sizeof(token), page.next_token);
                store_item_page_release(&page);
            } while (token[0]);
            ck_assert_int_eq(total, filters[f].want);
        }
    }
}
END_TEST

static const char *const bad_tokens[] = {
    "garbage",
    "!!!!",
    "aGVsbG8",      /* base64 of "hello" */
    "aTEuMTIzNC4=", /* base64 of "i1.1234." */
    "////////////////////////////////////////",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
};

START_TEST(list_items_refuses_bad_tokens)
{
    struct item_query q = {.limit = 10};
    struct item_page page;

    contract_make_batch(S, "b_tok", 3, 1);
    q.page_token = bad_tokens[_i];
    IS(ST_INVALID, store_list_items(S, "b_tok", &q, &page, &E));
    ck_assert_uint_eq(page.n, 0);
    store_item_page_release(&page);
    ck_assert_msg(strstr(E.message, "token") != NULL, "message \"%s\" names no token", E.message);
}
END_TEST

START_TEST(list_items_refuses_bad_limits)
{
    static const int limits[] = {0, -1, 1001};
    struct item_query q = {0};
    struct item_page page;
    size_t i;

    contract_make_batch(S, "b_lim", 3, 1);
    for (i = 0; i < ARRAY_SIZE(limits); i++) {
        q.limit = limits[i];
        IS(ST_INVALID, store_list_items(S, "b_lim", &q, &page, &E));
        store_item_page_release(&page);
    }
}
END_TEST

/* ---- item_begin, set_job, release ------------------------------------- */

enum step_op { S_BEGIN, S_RELEASE, S_SET_JOB, S_FINISH };

static const struct {
    enum step_op op;
    int64_t generation;
    int64_t at; /* µs after T0 */
    enum item_begin want;
    int64_t attempts;
    enum item_status status;
} begin_steps[] = {
    {S_BEGIN, 1, 0, BEGIN_STARTED, 1, ITEM_PROCESSING},
    {S_BEGIN, 1, 1 * SEC, BEGIN_LEASED, 1, ITEM_PROCESSING},
    {S_BEGIN, 1, LEASE_US - 1, BEGIN_LEASED, 1, ITEM_PROCESSING}, /* lease_until > now: live */
    {S_BEGIN, 2, 2 * SEC, BEGIN_STALE, 1, ITEM_PROCESSING},
    {S_BEGIN, 1, LEASE_US, BEGIN_STARTED, 2, ITEM_PROCESSING}, /* expired: taken again */
    {S_RELEASE, 1, LEASE_US + 2, 0, 2, ITEM_PENDING},
    {S_BEGIN, 1, LEASE_US + 3, BEGIN_STARTED, 3, ITEM_PROCESSING}, /* released: free at once */
    {S_SET_JOB, 1, LEASE_US + 4, 0, 3, ITEM_POLLING},
    {S_BEGIN, 1, 10 * LEASE_US, BEGIN_HAS_JOB, 3, ITEM_POLLING},
    {S_RELEASE, 1, 10 * LEASE_US, 0, 3, ITEM_POLLING}, /* a polling item stays polling */
    {S_BEGIN, 1, 10 * LEASE_US, BEGIN_HAS_JOB, 3, ITEM_POLLING},
    {S_BEGIN, 2, 10 * LEASE_US, BEGIN_STALE, 3, ITEM_POLLING},
    {S_FINISH, 1, 11 * LEASE_US, 0, 3, ITEM_COMPLETED},
    {S_BEGIN, 1, 12 * LEASE_US, BEGIN_TERMINAL, 3, ITEM_COMPLETED},
    {S_BEGIN, 2, 12 * LEASE_US, BEGIN_TERMINAL, 3, ITEM_COMPLETED},
    {S_RELEASE, 1, 12 * LEASE_US, 0, 3, ITEM_COMPLETED}, /* no-op on terminal */
};

START_TEST(item_begin_results)
{
    char id[ITEM_ID_MAX];
    enum item_begin r;
    struct item it;
    size_t i;

    contract_make_batch(S, "b_begin", 2, 1);
    item_id("b_begin", 0, id);
    for (i = 0; i < ARRAY_SIZE(begin_steps); i++) {
        int64_t now = CONTRACT_T0 + begin_steps[i].at;

        switch (begin_steps[i].op) {
        case S_BEGIN:
            OK(store_item_begin(S, "b_begin", id, begin_steps[i].generation, now, LEASE_US, &r, &it,
                                &E));
            ck_assert_msg(r == begin_steps[i].want, "step %zu: result %d, want %d", i, r,
                          begin_steps[i].want);
            ck_assert_int_eq(it.attempts, begin_steps[i].attempts);
            ck_assert_int_eq(it.status, begin_steps[i].status);
            ck_assert_str_eq(it.id, id);
            if (r == BEGIN_STARTED)
                ck_assert_int_eq(it.lease_until, now + LEASE_US);
            if (r == BEGIN_LEASED)
                ck_assert_int_gt(it.lease_until, now);
            item_release(&it);
            break;
        case S_RELEASE:
            OK(store_item_release_lease(S, "b_begin", id, begin_steps[i].generation, "unavailable",
                                        "provider answered 503", now, &E));
            break;
        case S_SET_JOB:
            OK(store_item_set_job(S, "b_begin", id, begin_steps[i].generation, "runway",
                                  "task-7f3a", 2, now, &E));
            break;
        case S_FINISH:
            ck_assert(finish("b_begin", 1, 0, ITEM_COMPLETED));
            break;
        }
        it = get_item("b_begin", 0);
        ck_assert_msg(it.status == begin_steps[i].status, "step %zu: status %s, want %s", i,
                      item_status_name(it.status), item_status_name(begin_steps[i].status));
        ck_assert_int_eq(it.attempts, begin_steps[i].attempts);
        ck_assert_int_eq(it.started_at, CONTRACT_T0); /* set on the first attempt only */
        if (it.status == ITEM_PENDING || it.status == ITEM_POLLING)
            ck_assert_int_eq(it.lease_until, 0);
        if (it.status == ITEM_POLLING) {
            ck_assert_str_eq(it.provider, "runway");
            ck_assert_str_eq(it.provider_job_id, "task-7f3a");
            ck_assert_int_eq(it.polls, 2);
        }
        if (begin_steps[i].op == S_RELEASE && !item_status_is_terminal(it.status)) {
            ck_assert(it.has_error);
            ck_assert_str_eq(it.error.code, "unavailable");
            ck_assert_str_eq(it.error.message, "provider answered 503");
        }
        item_release(&it);
        contract_check_counts(S, "b_begin");
    }
}
END_TEST

START_TEST(set_job_preconditions)
{
    char id0[ITEM_ID_MAX], id1[ITEM_ID_MAX];

    contract_make_batch(S, "b_job", 2, 1);
    item_id("b_job", 0, id0);
    item_id("b_job", 1, id1);
    ck_assert(finish("b_job", 1, 0, ITEM_FAILED));
    IS(ST_FAILED_PRECONDITION,
       store_item_set_job(S, "b_job", id0, 1, "runway", "j1", 0, CONTRACT_T0, &E));
    IS(ST_FAILED_PRECONDITION,
       store_item_set_job(S, "b_job", id1, 2, "runway", "j1", 0, CONTRACT_T0, &E));
    ck_assert_int_eq(item_status("b_job", 1), ITEM_PENDING);
    OK(store_item_set_job(S, "b_job", id1, 1, "pixverse", "j1", 0, CONTRACT_T0, &E));
    OK(store_item_set_job(S, "b_job", id1, 1, "pixverse", "j1", 1, CONTRACT_T0, &E)); /* a poll */
    ck_assert_int_eq(item_status("b_job", 1), ITEM_POLLING);
    /* A release of another generation changes nothing. */
    OK(store_item_release_lease(S, "b_job", id1, 2, "x", "y", CONTRACT_T0, &E));
    {
        struct item it = get_item("b_job", 1);

        ck_assert_int_eq(it.polls, 1);
        ck_assert(!it.has_error);
        item_release(&it);
    }
    contract_check_counts(S, "b_job");
}
END_TEST

/* ---- item_finish ------------------------------------------------------ */

static const struct {
    enum item_status status;
    int64_t duration_ms;
} finish_rows[] = {
    {ITEM_COMPLETED, 1200}, {ITEM_COMPLETED, 800}, {ITEM_FAILED, 50},     {ITEM_COMPLETED, 0},
    {ITEM_CANCELLED, 0},    {ITEM_FAILED, 4000},   {ITEM_COMPLETED, 333}, {ITEM_CANCELLED, 7},
    {ITEM_COMPLETED, 1},    {ITEM_FAILED, 9},
};

START_TEST(item_finish_counts_per_status)
{
    int64_t success = 0, failure = 0, cancelled = 0, duration = 0;
    struct batch_counts n;
    struct item it;
    size_t i;

    contract_make_batch(S, "b_fin", ARRAY_SIZE(finish_rows) + 2, 4);
    for (i = 0; i < ARRAY_SIZE(finish_rows); i++) {
        ck_assert(finish_as(S, "b_fin", 4, (int64_t)i, 1, finish_rows[i].status,
                            finish_rows[i].duration_ms));
        success += finish_rows[i].status == ITEM_COMPLETED;
        failure += finish_rows[i].status == ITEM_FAILED;
        cancelled += finish_rows[i].status == ITEM_CANCELLED;
        if (finish_rows[i].status == ITEM_COMPLETED)
            duration += finish_rows[i].duration_ms;
        contract_check_counts(S, "b_fin");
    }
    n = counts("b_fin");
    ck_assert_int_eq(n.processed, (int64_t)ARRAY_SIZE(finish_rows));
    ck_assert_int_eq(n.success, success);
    ck_assert_int_eq(n.failure, failure);
    ck_assert_int_eq(n.cancelled, cancelled);
    ck_assert_int_eq(n.duration_ms_sum, duration);

    it = get_item("b_fin", 0); /* completed: the result round-trips */
    ck_assert_int_eq(it.status, ITEM_COMPLETED);
    ck_assert(it.has_result);
    ck_assert(!it.has_error);
    ck_assert(str_starts_with(it.result.key, "results/b_fin/"));
    ck_assert_str_eq(it.result.content_type, "image/png");
    ck_assert_str_eq(it.result.provider, "gemini");
    ck_assert_int_eq(it.result.bytes, 1000);
    ck_assert_int_eq(it.duration_ms, 1200);
    ck_assert_int_eq(it.completed_at, CONTRACT_T0 + 10 * SEC);
    ck_assert_int_eq(it.lease_until, 0);
    item_release(&it);
    it = get_item("b_fin", 2); /* failed: the error round-trips */
    ck_assert_int_eq(it.status, ITEM_FAILED);
    ck_assert(!it.has_result);
    ck_assert(it.has_error);
    ck_assert_str_eq(it.error.code, "provider_error");
    ck_assert_str_eq(it.error.message, "the provider refused the image");
    ck_assert(!it.error.retryable);
    item_release(&it);
}
END_TEST

START_TEST(item_finish_applies_once)
{
    struct batch_counts n;
    int i, applied = 0;

    contract_make_batch(S, "b_once", 3, 2);
    for (i = 0; i < 5; i++)
        applied += finish("b_once", 2, 0, i % 2 ? ITEM_FAILED : ITEM_COMPLETED);
    ck_assert_int_eq(applied, 1);
    ck_assert_int_eq(item_status("b_once", 0), ITEM_COMPLETED); /* the first outcome stays */
    /* Another generation writes nothing. */
    ck_assert(!finish_as(S, "b_once", 2, 1, 2, ITEM_COMPLETED, 10));
    ck_assert(!finish_as(S, "b_once", 2, 1, 0, ITEM_FAILED, 10));
    ck_assert_int_eq(item_status("b_once", 1), ITEM_PENDING);
    n = counts("b_once");
    ck_assert_int_eq(n.processed, 1);
    ck_assert_int_eq(n.success, 1);
    ck_assert_int_eq(n.failure, 0);
    contract_check_counts(S, "b_once");
}
END_TEST

static atomic_int crowd_applied, crowd_won, crowd_errors;

static void finish_same_item(void *arg, int t)
{
    struct item_outcome o = {.status = t % 2 ? ITEM_FAILED : ITEM_COMPLETED,
                             .error_code = "x",
                             .duration_ms = 10,
                             .now = CONTRACT_T0};
    const char *id = arg;
    struct error err = {0};
    bool applied = false;

    if (store_item_finish(S, "b_race", id, 1, item_shard(id, 4), &o, &applied, &err) != ST_OK)
        atomic_fetch_add(&crowd_errors, 1);
    if (applied)
        atomic_fetch_add(&crowd_applied, 1);
}

START_TEST(item_finish_concurrent_applies_once)
{
    char id[ITEM_ID_MAX];
    struct batch_counts n;

    contract_make_batch(S, "b_race", 4, 4);
    item_id("b_race", 2, id);
    atomic_store(&crowd_applied, 0);
    atomic_store(&crowd_errors, 0);
    run_crowd(finish_same_item, id);
    ck_assert_int_eq(atomic_load(&crowd_errors), 0);
    ck_assert_int_eq(atomic_load(&crowd_applied), 1);
    n = counts("b_race");
    ck_assert_int_eq(n.processed, 1);
    contract_check_counts(S, "b_race");
}
END_TEST

START_TEST(item_finish_refuses_bad_input)
{
    struct item_outcome o = {.status = ITEM_PROCESSING, .now = CONTRACT_T0};
    char id[ITEM_ID_MAX];
    bool applied = true;

    contract_make_batch(S, "b_bad", 2, 2);
    item_id("b_bad", 0, id);
    IS(ST_INVALID, store_item_finish(S, "b_bad", id, 1, 0, &o, &applied, &E));
    ck_assert(!applied);
    o.status = ITEM_COMPLETED;
    IS(ST_INVALID, store_item_finish(S, "b_bad", id, 1, 2, &o, &applied, &E)); /* 2 shards */
    IS(ST_INVALID, store_item_finish(S, "b_bad", id, 1, -1, &o, &applied, &E));
    ck_assert_int_eq(item_status("b_bad", 0), ITEM_PENDING);
    contract_check_counts(S, "b_bad");
}
END_TEST

/* ---- try_complete ----------------------------------------------------- */

static const struct {
    int completed, failed, cancelled;
    enum batch_status want;
} complete_rows[] = {
    {4, 0, 0, BATCH_COMPLETED},
    {3, 1, 0, BATCH_COMPLETED_WITH_FAILURES},
    {3, 0, 1, BATCH_COMPLETED_WITH_FAILURES},
    {0, 4, 0, BATCH_COMPLETED_WITH_FAILURES},
};

START_TEST(try_complete_once)
{
    enum batch_status final;
    struct batch b;
    bool won = true;
    int i = 0, k;

    contract_make_batch(S, "b_done", 4, 2);
    for (k = 0; k < complete_rows[_i].completed; k++, i++)
        ck_assert(finish("b_done", 2, i, ITEM_COMPLETED));
    for (k = 0; k < complete_rows[_i].failed; k++, i++)
        ck_assert(finish("b_done", 2, i, ITEM_FAILED));
    for (k = 0; k < complete_rows[_i].cancelled; k++, i++) {
        if (i == 3) {
            /* The last one: not complete before it is terminal. */
            OK(store_try_complete(S, "b_done", 1, CONTRACT_T0, &won, &final, &E));
            ck_assert(!won);
        }
        ck_assert(finish("b_done", 2, i, ITEM_CANCELLED));
    }
    OK(store_try_complete(S, "b_done", 2, CONTRACT_T0, &won, &final, &E));
    ck_assert(!won); /* another generation */
    OK(store_try_complete(S, "b_done", 1, CONTRACT_T0 + 60 * SEC, &won, &final, &E));
    ck_assert(won);
    ck_assert_int_eq(final, complete_rows[_i].want);
    b = get_batch("b_done");
    ck_assert_int_eq(b.status, complete_rows[_i].want);
    ck_assert_int_eq(b.completed_at, CONTRACT_T0 + 60 * SEC);
    batch_release(&b);
    OK(store_try_complete(S, "b_done", 1, CONTRACT_T0 + 61 * SEC, &won, &final, &E));
    ck_assert(!won); /* not twice in a generation */
    ck_assert_int_eq(batch_status("b_done"), complete_rows[_i].want);
    contract_check_counts(S, "b_done");
}
END_TEST

START_TEST(try_complete_not_before_total)
{
    enum batch_status final;
    bool won = true;
    int i;

    contract_make_batch(S, "b_early", 5, 2);
    for (i = 0; i < 4; i++) {
        ck_assert(finish("b_early", 2, i, ITEM_COMPLETED));
        OK(store_try_complete(S, "b_early", 1, CONTRACT_T0, &won, &final, &E));
        ck_assert(!won);
        ck_assert_int_eq(batch_status("b_early"), BATCH_PROCESSING);
    }
    /* A creating batch does not complete even when every item is terminal. */
    contract_make_batch(S, "b_creating", 0, 1);
    OK(store_set_batch_status(S, "b_creating", BATCH_PROCESSING, BATCH_CREATING, CONTRACT_T0, &E));
    OK(store_try_complete(S, "b_creating", 1, CONTRACT_T0, &won, &final, &E));
    ck_assert(!won);
    contract_check_counts(S, "b_early");
}
END_TEST

static void complete_crowd(void *arg, int t)
{
    enum batch_status final;
    struct error err = {0};
    bool won = false;

    UNUSED(t);
    if (store_try_complete(S, arg, 1, CONTRACT_T0, &won, &final, &err) != ST_OK)
        atomic_fetch_add(&crowd_errors, 1);
    if (won)
        atomic_fetch_add(&crowd_won, 1);
}

START_TEST(try_complete_one_winner)
{
    int i;

    contract_make_batch(S, "b_win", 6, 3);
    for (i = 0; i < 6; i++)
        ck_assert(finish("b_win", 3, i, i == 4 ? ITEM_FAILED : ITEM_COMPLETED));
    atomic_store(&crowd_won, 0);
    atomic_store(&crowd_errors, 0);
    run_crowd(complete_crowd, "b_win");
    ck_assert_int_eq(atomic_load(&crowd_errors), 0);
    ck_assert_int_eq(atomic_load(&crowd_won), 1);
    ck_assert_int_eq(batch_status("b_win"), BATCH_COMPLETED_WITH_FAILURES);
}
END_TEST

/* ---- retry_failed ----------------------------------------------------- */

START_TEST(retry_failed_new_generation)
{
    struct item_page page;
    enum batch_status final;
    struct batch_counts n;
    enum item_begin r;
    struct batch b;
    struct item it;
    int64_t gen = 0;
    bool won;
    size_t i;
    int k;

    contract_make_batch(S, "b_retry", 6, 3);
    for (k = 0; k < 6; k++)
        ck_assert(finish("b_retry", 3, k, k == 1 || k == 4 ? ITEM_FAILED : ITEM_COMPLETED));
    OK(store_try_complete(S, "b_retry", 1, CONTRACT_T0, &won, &final, &E));
    ck_assert(won);
    ck_assert_int_eq(final, BATCH_COMPLETED_WITH_FAILURES);

    OK(store_retry_failed(S, "b_retry", CONTRACT_T0 + 100 * SEC, &gen, &page, &E));
    ck_assert_int_eq(gen, 2);
    ck_assert_uint_eq(page.n, 2);
    ck_assert_int_eq(page.items[0].index, 1);
    ck_assert_int_eq(page.items[1].index, 4);
    for (i = 0; i < page.n; i++) {
        ck_assert_int_eq(page.items[i].status, ITEM_PENDING);
        ck_assert_int_eq(page.items[i].generation, 2);
        ck_assert_int_eq(page.items[i].attempts, 0);
        ck_assert(!page.items[i].has_error);
        ck_assert_str_eq(page.items[i].provider_job_id, "");
        ck_assert_str_eq(page.items[i].url,
                         i ? "https://img.example/4.jpg" : "https://img.example/1.jpg");
    }
    store_item_page_release(&page);
    b = get_batch("b_retry");
    ck_assert_int_eq(b.status, BATCH_PROCESSING);
    ck_assert_int_eq(b.generation, 2);
    ck_assert_int_eq(b.completed_at, 0);
    batch_release(&b);
    n = counts("b_retry");
    ck_assert_int_eq(n.processed, 4);
    ck_assert_int_eq(n.success, 4);
    ck_assert_int_eq(n.failure, 0);
    contract_check_counts(S, "b_retry");
    ck_assert_int_eq(item_status("b_retry", 0), ITEM_COMPLETED); /* successes kept */

    /* The old generation's duplicated pushes do nothing. */
    ck_assert(!finish_as(S, "b_retry", 3, 1, 1, ITEM_FAILED, 1));
    {
        char id[ITEM_ID_MAX];

        item_id("b_retry", 4, id);
        OK(store_item_begin(S, "b_retry", id, 1, CONTRACT_T0, LEASE_US, &r, &it, &E));
        ck_assert_int_eq(r, BEGIN_STALE);
        item_release(&it);
    }
    OK(store_try_complete(S, "b_retry", 1, CONTRACT_T0, &won, &final, &E));
    ck_assert(!won);
    contract_check_counts(S, "b_retry");

    /* The new generation completes, once. */
    ck_assert(finish_as(S, "b_retry", 3, 1, 2, ITEM_COMPLETED, 5));
    OK(store_try_complete(S, "b_retry", 2, CONTRACT_T0, &won, &final, &E));
    ck_assert(!won);
    ck_assert(finish_as(S, "b_retry", 3, 4, 2, ITEM_COMPLETED, 5));
    OK(store_try_complete(S, "b_retry", 2, CONTRACT_T0 + 200 * SEC, &won, &final, &E));
    ck_assert(won);
    ck_assert_int_eq(final, BATCH_COMPLETED);
    OK(store_try_complete(S, "b_retry", 2, CONTRACT_T0 + 201 * SEC, &won, &final, &E));
    ck_assert(!won);
    contract_check_counts(S, "b_retry");

    /* Nothing failed any more: no new generation, the batch stays completed. */
    OK(store_retry_failed(S, "b_retry", CONTRACT_T0 + 300 * SEC, &gen, &page, &E));
    ck_assert_int_eq(gen, 2);
    ck_assert_uint_eq(page.n, 0);
    store_item_page_release(&page);
    ck_assert_int_eq(batch_status("b_retry"), BATCH_COMPLETED);
}
END_TEST

START_TEST(retry_failed_twice)
{
    enum batch_status final;
    struct item_page page;
    int64_t gen = 0;
    bool won;

    contract_make_batch(S, "b_retry2", 3, 2);
    ck_assert(finish("b_retry2", 2, 0, ITEM_FAILED));
    ck_assert(finish("b_retry2", 2, 1, ITEM_FAILED));
    ck_assert(finish("b_retry2", 2, 2, ITEM_COMPLETED));
    OK(store_try_complete(S, "b_retry2", 1, CONTRACT_T0, &won, &final, &E));
    ck_assert(won);
    OK(store_retry_failed(S, "b_retry2", CONTRACT_T0, &gen, &page, &E));
    ck_assert_int_eq(gen, 2);
    ck_assert_uint_eq(page.n, 2);
    store_item_page_release(&page);
    ck_assert(finish_as(S, "b_retry2", 2, 0, 2, ITEM_FAILED, 1));
    ck_assert(finish_as(S, "b_retry2", 2, 1, 2, ITEM_COMPLETED, 1));
    OK(store_try_complete(S, "b_retry2", 2, CONTRACT_T0, &won, &final, &E));
    ck_assert(won);
    ck_assert_int_eq(final, BATCH_COMPLETED_WITH_FAILURES);
    OK(store_retry_failed(S, "b_retry2", CONTRACT_T0, &gen, &page, &E));
    ck_assert_int_eq(gen, 3);
    ck_assert_uint_eq(page.n, 1);
    ck_assert_int_eq(page.items[0].index, 0);
    store_item_page_release(&page);
    ck_assert(finish_as(S, "b_retry2", 2, 0, 3, ITEM_COMPLETED, 1));
    OK(store_try_complete(S, "b_retry2", 3, CONTRACT_T0, &won, &final, &E));
    ck_assert(won);
    ck_assert_int_eq(final, BATCH_COMPLETED);
    contract_check_counts(S, "b_retry2");
}
END_TEST

START_TEST(retry_failed_preconditions)
{
    static const enum batch_status refused[] = {BATCH_CREATING, BATCH_PROCESSING, BATCH_CANCELLED,
                                                BATCH_FAILED};
    struct batch b, existing;
    struct item_page page;
    int64_t gen;
    char id[16];
    size_t i;

    for (i = 0; i < ARRAY_SIZE(refused); i++) {
        snprintf(id, sizeof(id), "b_pre%zu", i);
        contract_batch_fill(&b, id, "user-p", 1, 1, CONTRACT_T0);
        OK(store_create_batch(S, &b, &existing, &E));
        batch_release(&existing);
        batch_release(&b);
        put_range(S, id, 0, 1);
        ck_assert(finish(id, 1, 0, ITEM_FAILED));
        if (refused[i] != BATCH_CREATING)
            OK(store_set_batch_status(S, id, BATCH_CREATING, refused[i], CONTRACT_T0, &E));
        IS(ST_FAILED_PRECONDITION, store_retry_failed(S, id, CONTRACT_T0, &gen, &page, &E));
        store_item_page_release(&page);
        ck_assert_int_eq(item_status(id, 0), ITEM_FAILED);
        contract_check_counts(S, id);
    }
}
END_TEST

/* ---- costs, dropped jobs, the result cache ----------------------------- */

START_TEST(costs_add_up)
{
    struct batch_counts n;
    struct item it;
    char id[ITEM_ID_MAX];

    contract_make_batch(S, "b_cost", 4, 2);
    ck_assert(finish("b_cost", 2, 0, ITEM_COMPLETED));
    ck_assert(finish("b_cost", 2, 1, ITEM_COMPLETED));
    ck_assert(finish("b_cost", 2, 2, ITEM_FAILED));
    ck_assert(finish("b_cost", 2, 3, ITEM_COMPLETED));
    ck_assert(!finish("b_cost", 2, 3, ITEM_COMPLETED)); /* a duplicate costs nothing more */
    n = counts("b_cost");
    ck_assert_int_eq(n.cost_micros, 39000 * 3 + 0 + 1 + 3);
    item_id("b_cost", 3, id);
    OK(store_get_item(S, "b_cost", id, &it, &E));
    ck_assert_int_eq(it.result.cost_micros, 39003);
    item_release(&it);
}
END_TEST

START_TEST(drop_job_sends_the_item_back)
{
    enum item_begin r;
    struct item it;
    char id[ITEM_ID_MAX];

    contract_make_batch(S, "b_drop", 2, 1);
    item_id("b_drop", 0, id);
    OK(store_item_begin(S, "b_drop", id, 1, CONTRACT_T0, LEASE_US, &r, &it, &E));
    item_release(&it);
    OK(store_item_set_job(S, "b_drop", id, 1, "runway", "job-1", 3, CONTRACT_T0, &E));
    OK(store_item_drop_job(S, "b_drop", id, 2, "x", "other generation", CONTRACT_T0, &E));
    OK(store_get_item(S, "b_drop", id, &it, &E));
    ck_assert_int_eq(it.status, ITEM_POLLING); /* another generation: untouched */
    item_release(&it);
    OK(store_item_drop_job(S, "b_drop", id, 1, "provider_job_failed", "job failed: INTERNAL",
                           CONTRACT_T0, &E));
    OK(store_get_item(S, "b_drop", id, &it, &E));
    ck_assert_int_eq(it.status, ITEM_PENDING);
    ck_assert_str_eq(it.provider_job_id, "");
    ck_assert_int_eq(it.polls, 0);
    ck_assert(it.has_error);
    ck_assert_str_eq(it.error.code, "provider_job_failed");
    item_release(&it);
    /* The next delivery submits again instead of polling a dead job. */
    OK(store_item_begin(S, "b_drop", id, 1, CONTRACT_T0 + SEC, LEASE_US, &r, &it, &E));
    ck_assert_int_eq(r, BEGIN_STARTED);
    ck_assert_int_eq(it.attempts, 2);
    item_release(&it);
    /* Not polling: nothing to drop. */
    item_id("b_drop", 1, id);
    OK(store_item_drop_job(S, "b_drop", id, 1, "x", "y", CONTRACT_T0, &E));
    OK(store_get_item(S, "b_drop", id, &it, &E));
    ck_assert_int_eq(it.status, ITEM_PENDING);
    ck_assert(!it.has_error);
    item_release(&it);
    contract_check_counts(S, "b_drop");
}
END_TEST

START_TEST(result_cache_first_writer_wins)
{
    struct item_result a = {
        .key = "results/b/x.png", .content_type = "image/png", .bytes = 42, .provider = "gemini"};
    struct item_result b = {
        .key = "results/b/y.png", .content_type = "image/jpeg", .bytes = 7, .provider = "other"};
    struct item_result got;
    const char *key = "3b1f0c9e2d4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e";

    IS(ST_NOT_FOUND, store_cache_get(S, key, &got, &E));
    OK(store_cache_put(S, key, &a, CONTRACT_T0, &E));
    OK(store_cache_put(S, key, &b, CONTRACT_T0 + SEC, &E));
    OK(store_cache_get(S, key, &got, &E));
    ck_assert_str_eq(got.key, "results/b/x.png");
    ck_assert_str_eq(got.content_type, "image/png");
    ck_assert_int_eq(got.bytes, 42);
    ck_assert_str_eq(got.provider, "gemini");
    ck_assert(got.cached);
}
END_TEST

/* ---- API keys and rate windows ------------------------------------------ */

START_TEST(api_keys_round_trip)
{
    struct api_key k = {.hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                        .user_id = "crm-7",
                        .name = "production",
                        .created_at = CONTRACT_T0};
    struct api_key got;

    IS(ST_NOT_FOUND, store_api_key_get(S, k.hash, &got, &E));
    OK(store_api_key_put(S, &k, &E));
    OK(store_api_key_get(S, k.hash, &got, &E));
    ck_assert_str_eq(got.user_id, "crm-7");
    ck_assert_str_eq(got.name, "production");
    ck_assert(!got.disabled);
    ck_assert_int_eq(got.created_at, CONTRACT_T0);
    k.disabled = true;
    OK(store_api_key_put(S, &k, &E));
    OK(store_api_key_get(S, k.hash, &got, &E));
    ck_assert(got.disabled);
}
END_TEST

START_TEST(rate_windows_count)
{
    int64_t total = 0;

    OK(store_rate_count(S, "crm-7", "images", 100, 40, &total, &E));
    ck_assert_int_eq(total, 40);
    OK(store_rate_count(S, "crm-7", "images", 100, 25, &total, &E));
    ck_assert_int_eq(total, 65);
    OK(store_rate_count(S, "crm-7", "batches", 100, 1, &total, &E)); /* kinds apart */
    ck_assert_int_eq(total, 1);
    OK(store_rate_count(S, "crm-8", "images", 100, 5, &total, &E)); /* users apart */
    ck_assert_int_eq(total, 5);
    OK(store_rate_count(S, "crm-7", "images", 101, 3, &total, &E)); /* a new window */
    ck_assert_int_eq(total, 3);
}
END_TEST

/* ---- cancel_batch ----------------------------------------------------- */

START_TEST(cancel_batch_moves_items_and_counts)
{
    char id0[ITEM_ID_MAX], id1[ITEM_ID_MAX];
    struct item_page page;
    enum batch_status final;
    struct batch_counts n;
    enum item_begin r;
    struct batch b;
    struct item it;
    bool changed = false, won = true;

    contract_make_batch(S, "b_cancel", 10, 4);
    item_id("b_cancel", 0, id0);
    item_id("b_cancel", 1, id1);
    OK(store_item_begin(S, "b_cancel", id0, 1, CONTRACT_T0, LEASE_US, &r, &it, &E));
    item_release(&it);
    OK(store_item_set_job(S, "b_cancel", id1, 1, "runway", "job-1", 0, CONTRACT_T0, &E));
    ck_assert(finish("b_cancel", 4, 2, ITEM_COMPLETED));
    ck_assert(finish("b_cancel", 4, 3, ITEM_FAILED));

    OK(store_cancel_batch(S, "b_cancel", CONTRACT_T0 + 50 * SEC, &changed, &page, &E));
    ck_assert(changed);
    ck_assert_uint_eq(page.n, 2);
    ck_assert_int_eq(page.items[0].index, 0);
    ck_assert_int_eq(page.items[0].status, ITEM_PROCESSING);
    ck_assert_int_eq(page.items[1].index, 1);
    ck_assert_int_eq(page.items[1].status, ITEM_POLLING);
    ck_assert_str_eq(page.items[1].provider_job_id, "job-1");
    store_item_page_release(&page);
    b = get_batch("b_cancel");
    ck_assert_int_eq(b.status, BATCH_CANCELLED);
    ck_assert_int_eq(b.completed_at, CONTRACT_T0 + 50 * SEC);
    batch_release(&b);
    n = counts("b_cancel");
    ck_assert_int_eq(n.processed, 8);
    ck_assert_int_eq(n.cancelled, 6);
    ck_assert_int_eq(n.success, 1);
    ck_assert_int_eq(n.failure, 1);
    ck_assert_int_eq(item_status("b_cancel", 2), ITEM_COMPLETED); /* finished results kept */
    ck_assert_int_eq(item_status("b_cancel", 9), ITEM_CANCELLED);
    contract_check_counts(S, "b_cancel");

    /* A second cancel is harmless. */
    OK(store_cancel_batch(S, "b_cancel", CONTRACT_T0 + 60 * SEC, &changed, &page, &E));
    ck_assert(!changed);
    store_item_page_release(&page);
    n = counts("b_cancel");
    ck_assert_int_eq(n.processed, 8);
    b = get_batch("b_cancel");
    ck_assert_int_eq(b.completed_at, CONTRACT_T0 + 50 * SEC);
    batch_release(&b);

    /* Cancelled items cannot start; the in-flight ones finish as cancelled. */
    {
        char id9[ITEM_ID_MAX];

        item_id("b_cancel", 9, id9);
        OK(store_item_begin(S, "b_cancel", id9, 1, CONTRACT_T0, LEASE_US, &r, &it, &E));
        ck_assert_int_eq(r, BEGIN_TERMINAL);
        item_release(&it);
    }
    ck_assert(finish("b_cancel", 4, 0, ITEM_CANCELLED));
    ck_assert(finish("b_cancel", 4, 1, ITEM_CANCELLED));
    n = counts("b_cancel");
    ck_assert_int_eq(n.processed, 10);
    ck_assert_int_eq(n.success + n.failure + n.cancelled, 10);
    contract_check_counts(S, "b_cancel");
    OK(store_try_complete(S, "b_cancel", 1, CONTRACT_T0, &won, &final, &E));
    ck_assert(!won);
    ck_assert_int_eq(batch_status("b_cancel"), BATCH_CANCELLED);
    OK(store_cancel_batch(S, "b_cancel", CONTRACT_T0 + 70 * SEC, &changed, &page, &E));
    ck_assert(!changed);
    ck_assert_uint_eq(page.n, 0);
    store_item_page_release(&page);
}
END_TEST

START_TEST(cancel_finished_batch_changes_nothing)
{
    enum batch_status final;
    struct item_page page;
    bool changed = true, won;

    contract_make_batch(S, "b_fin_c", 2, 1);
    ck_assert(finish("b_fin_c", 1, 0, ITEM_COMPLETED));
    ck_assert(finish("b_fin_c", 1, 1, ITEM_COMPLETED));
    OK(store_try_complete(S, "b_fin_c", 1, CONTRACT_T0, &won, &final, &E));
    ck_assert(won);
    OK(store_cancel_batch(S, "b_fin_c", CONTRACT_T0, &changed, &page, &E));
    ck_assert(!changed);
    ck_assert_uint_eq(page.n, 0);
    store_item_page_release(&page);
    ck_assert_int_eq(batch_status("b_fin_c"), BATCH_COMPLETED);
    contract_check_counts(S, "b_fin_c");
}
END_TEST

/* ---- dead letters, ping ----------------------------------------------- */

START_TEST(dead_letter_put_overwrites)
{
    struct dead_letter dl = {0};
    char id[ITEM_ID_MAX];
    json_t *history;

    contract_make_batch(S, "b_dl", 1, 1);
    item_id("b_dl", 0, id);
    history = json_pack("[{s:i, s:s}, {s:i, s:s}]", "attempt", 1, "error", "timeout", "attempt", 2,
                        "error", "503");
    dl.batch_id = "b_dl";
    dl.item_id = id;
    dl.generation = 1;
    dl.error_code = "provider_unavailable";
    dl.error_message = "gave up after 2 attempts";
    dl.attempts = 2;
    dl.history = history;
    dl.now = CONTRACT_T0;
    OK(store_put_dead_letter(S, &dl, &E));
    dl.attempts = 3;
    dl.history = NULL;
    dl.error_message = NULL;
    OK(store_put_dead_letter(S, &dl, &E));
    json_decref(history);
    OK(store_ping(S, &E));
}
END_TEST

/* ---- the suite -------------------------------------------------------- */

static TCase *tcase(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return tc;
}

Suite *store_contract_suite(const char *name, struct store *(*open_fresh)(void),
                            void (*close_fn)(struct store *))
{
    Suite *s = suite_create(name);
    TCase *tc;

    open_store = open_fresh;
    close_store = close_fn;

    tc = tcase(s, "batches");
    tcase_add_loop_test(tc, batch_round_trip, 0, ARRAY_SIZE(batch_rows));
    tcase_add_loop_test(tc, unknown_batch_is_not_found, 0, OP__COUNT);
    tcase_add_test(tc, unknown_item_is_not_found);
    tcase_add_test(tc, duplicate_id_returns_first);
    tcase_add_test(tc, idempotency_claim_returns_first);
    tcase_add_loop_test(tc, set_batch_status_is_conditional, 0, ARRAY_SIZE(status_rows));
    tcase_add_test(tc, list_batches_newest_first);

    tc = tcase(s, "items");
    tcase_add_test(tc, put_items_is_idempotent);
    tcase_add_test(tc, put_items_large_batch);
    tcase_add_loop_test(tc, list_items_filters, 0, ARRAY_SIZE(list_rows));
    tcase_add_test(tc, list_items_tokens_cover_all_once);
    tcase_add_loop_test(tc, list_items_refuses_bad_tokens, 0, ARRAY_SIZE(bad_tokens));
    tcase_add_test(tc, list_items_refuses_bad_limits);

    tc = tcase(s, "attempts");
    tcase_add_test(tc, item_begin_results);
    tcase_add_test(tc, set_job_preconditions);
    tcase_add_test(tc, item_finish_counts_per_status);
    tcase_add_test(tc, item_finish_applies_once);
    tcase_add_test(tc, item_finish_concurrent_applies_once);
    tcase_add_test(tc, item_finish_refuses_bad_input);

    tc = tcase(s, "transitions");
    tcase_add_loop_test(tc, try_complete_once, 0, ARRAY_SIZE(complete_rows));
    tcase_add_test(tc, try_complete_not_before_total);
    tcase_add_test(tc, try_complete_one_winner);
    tcase_add_test(tc, retry_failed_new_generation);
    tcase_add_test(tc, retry_failed_twice);
    tcase_add_test(tc, retry_failed_preconditions);
    tcase_add_test(tc, cancel_batch_moves_items_and_counts);
    tcase_add_test(tc, cancel_finished_batch_changes_nothing);
    tcase_add_test(tc, dead_letter_put_overwrites);
    tcase_add_test(tc, costs_add_up);
    tcase_add_test(tc, drop_job_sends_the_item_back);
    tcase_add_test(tc, result_cache_first_writer_wins);
    tcase_add_test(tc, api_keys_round_trip);
    tcase_add_test(tc, rate_windows_count);
    return s;
}
