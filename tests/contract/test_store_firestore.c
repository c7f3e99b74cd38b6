/*
 * The store contract suite on the Firestore adapter, against Google's
 * Firestore emulator (FIRESTORE_EMULATOR_HOST=host:port), the database wiped
 * before each test; plus what only this adapter has: JSON that Firestore
 * cannot hold as a map, chunked and parallel put_items.
 *
 * Without FIRESTORE_EMULATOR_HOST the suite is skipped (exit 77), unless
 * REQUIRE_FIRESTORE_EMULATOR=1 makes that a failure.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "contract/store_contract.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "gcp/firestore.h"
#include "http/client.h"
#include "store/firestore_store.h"

static const char *emulator;
static char project[64];
static struct http_client *http;

/* DELETE .../emulator/v1/projects/{p}/databases/(default)/documents, until it answers 200. */
static void wipe(void)
{
    const char *headers[] = {"Authorization: Bearer owner", NULL};
    struct http_call call = {.method = "DELETE", .headers = headers, .timeout_ms = 10000};
    struct http_result res;
    struct error err = {0};
    char url[256];
    int attempt;

    ck_assert(str_printf(url, sizeof(url),
                         "http://%s/emulator/v1/projects/%s/databases/(default)/documents",
                         emulator, project));
    call.url = url;
    http_result_init(&res);
    /* A transaction left open by a failed test holds locks: the wipe aborts until they lapse. */
    for (attempt = 1; attempt <= 40; attempt++) {
        if (http_client_do(http, &call, &res, &err) == ST_OK && res.status == 200)
            break;
        time_sleep_ms(500);
    }
    ck_assert_msg(res.status == 200, "cannot wipe the emulator: %s (status %ld)", err.message,
                  res.status);
    http_result_release(&res);
}

static struct store *open_with(const struct firestore_store_options *base)
{
    struct firestore_store_options o = *base;
    struct error err = {0};
    struct store *s;

    wipe();
    o.client_options.emulator_host = emulator;
    o.client_options.project_id = project;
    o.client_options.http = http;
    s = store_firestore_open(&o, &err);
    ck_assert_msg(s != NULL, "open: %s", err.message);
    return s;
}

static struct store *open_fresh(void)
{
    struct firestore_store_options o = {0};

    return open_with(&o);
}

static void close_fresh(struct store *s)
{
    store_close(s);
}

/* ---- what only Firestore has ---------------------------------------------- */

START_TEST(unmappable_json_round_trips)
{
    static const char *const docs[] = {
        "{\"grid\":[[1,2],[3,4]]}",
        "{\"__meta__\":1,\"ok\":true}",
        "{\"\":\"empty key\"}",
        "{\"unicode ключ\":\"valeur é\",\"n\":-9223372036854775808,\"x\":1.5e300}",
    };
    struct store *s = open_fresh();
    struct batch b, existing, got;
    struct error err = {0};
    struct item it, back;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(docs); i++) {
        char id[32];

        str_printf(id, sizeof(id), "b_json%zu", i);
        contract_batch_fill(&b, id, "user-json", 1, 1, CONTRACT_T0);
        b.options = json_loads(docs[i], 0, NULL);
        ck_assert_ptr_nonnull(b.options);
        ck_assert_int_eq(store_create_batch(s, &b, &existing, &err), ST_OK);
        batch_release(&existing);
        ck_assert_int_eq(store_get_batch(s, id, &got, &err), ST_OK);
        ck_assert_msg(json_equal(got.options, b.options), "options %zu differ", i);
        batch_release(&got);

        item_init(&it);
        str_copy(it.batch_id, sizeof(it.batch_id), id);
        item_id_for_index(id, 0, it.id);
        it.url = xstrdup("https://img.example/0.jpg");
        it.metadata = json_incref(b.options);
        ck_assert_int_eq(store_put_items(s, id, &it, 1, &err), ST_OK);
        ck_assert_int_eq(store_get_item(s, id, it.id, &back, &err), ST_OK);
        ck_assert_msg(json_equal(back.metadata, it.metadata), "metadata %zu differs", i);
        item_release(&back);
        item_release(&it);
        batch_release(&b);
    }
    close_fresh(s);
}
END_TEST

START_TEST(put_items_in_parallel_chunks)
{
    struct firestore_store_options o = {.put_chunk_writes = 100, .put_parallel = 3};
    struct firestore_stats before, after;
    struct item_query q = {.limit = 1000};
    struct store *s = open_with(&o);
    struct item_page page;
    struct error err = {0};
    struct item *items;
    int64_t t0, n = 1200, i;

    contract_make_batch(s, "b_chunks", 0, 4);
    items = xcalloc((size_t)n, sizeof(*items));
    for (i = 0; i < n; i++) {
        char url[64];

        item_init(&items[i]);
        item_id_for_index("b_chunks", i, items[i].id);
        items[i].index = i;
        str_printf(url, sizeof(url), "https://img.example/%lld.jpg", (long long)i);
        items[i].url = xstrdup(url);
    }
    firestore_stats(store_firestore_client(s), &before);
    t0 = time_mono_ms();
    ck_assert_int_eq(store_put_items(s, "b_chunks", items, (size_t)n, &err), ST_OK);
    firestore_stats(store_firestore_client(s), &after);
    fprintf(stderr, "put_items: %lld items in chunks of 100, 3 in flight: %lld ms, %llu calls\n",
            (long long)n, (long long)(time_mono_ms() - t0),
            (unsigned long long)(after.calls - before.calls));
    ck_assert_uint_eq(after.writes - before.writes, (uint64_t)n);
    /* Again: every write meets ALREADY_EXISTS and nothing changes. */
    ck_assert_int_eq(store_put_items(s, "b_chunks", items, (size_t)n, &err), ST_OK);
    firestore_stats(store_firestore_client(s), &before);
    ck_assert_uint_eq(before.writes, after.writes);
    q.offset = 1199;
    ck_assert_int_eq(store_list_items(s, "b_chunks", &q, &page, &err), ST_OK);
    ck_assert_uint_eq(page.n, 1);
    ck_assert_int_eq(page.items[0].index, 1199);
    store_item_page_release(&page);
    contract_check_counts(s, "b_chunks");
    for (i = 0; i < n; i++)
        item_release(&items[i]);
    free(items);
    close_fresh(s);
}
END_TEST

START_TEST(bad_document_ids_are_invalid)
{
    struct store *s = open_fresh();
    struct batch b, existing;
    struct error err = {0};

    contract_batch_fill(&b, "a/b", "user-x", 1, 1, CONTRACT_T0);
    ck_assert_int_eq(store_create_batch(s, &b, &existing, &err), ST_INVALID);
    batch_release(&b);
    contract_batch_fill(&b, "__x__", "user-x", 1, 1, CONTRACT_T0);
    ck_assert_int_eq(store_create_batch(s, &b, &existing, &err), ST_INVALID);
    batch_release(&b);
    ck_assert_int_eq(store_get_batch(s, "..", &existing, &err), ST_INVALID);
    batch_release(&existing);
    close_fresh(s);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = store_contract_suite("store_firestore", open_fresh, close_fresh);
    TCase *tc = tcase_create("firestore");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, unmappable_json_round_trips);
    tcase_add_test(tc, put_items_in_parallel_chunks);
    tcase_add_test(tc, bad_document_ids_are_invalid);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    const char *require = getenv("REQUIRE_FIRESTORE_EMULATOR");
    SRunner *sr;
    int failed;

    emulator = getenv("FIRESTORE_EMULATOR_HOST");
    if (!emulator || !*emulator) {
        if (require && strcmp(require, "1") == 0) {
            fprintf(stderr, "FIRESTORE_EMULATOR_HOST is not set but REQUIRE_FIRESTORE_EMULATOR=1: "
                            "start the emulator (gcloud emulators firestore start "
                            "--host-port=127.0.0.1:PORT) and export the variable\n");
            return EXIT_FAILURE;
        }
        printf("skipped: FIRESTORE_EMULATOR_HOST not set\n");
        return 77;
    }
    str_printf(project, sizeof(project), "contract-%ld-%lld", (long)getpid(),
               (long long)(time_now_us() / 1000000));
    http = http_client_new(NULL);
    sr = srunner_create(suite());
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    http_client_free(http);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
