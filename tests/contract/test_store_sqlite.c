/*
 * The store contract suite on the SQLite adapter (a fresh database file per
 * test), plus what only SQLite has: files, schema versions, and two
 * processes sharing one database.
 */
#include <dirent.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "contract/store_contract.h"
#include "core/timeutil.h"
#include "core/util.h"
#include "store/sqlite_store.h"

static char tmp_dir[64];

/* Removes dir and everything below it (test directories are shallow). */
static void remove_tree(const char *dir)
{
    char path[512];
    struct dirent *e;
    DIR *d = opendir(dir);

    if (!d)
        return;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (e->d_type == DT_DIR)
            remove_tree(path);
        else
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static void make_tmp_dir(void)
{
    str_copy(tmp_dir, sizeof(tmp_dir), "/tmp/store_sqlite_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
}

static void db_path(char *out, size_t cap, const char *rel)
{
    ck_assert(str_printf(out, cap, "%s/%s", tmp_dir, rel));
}

static struct store *open_fresh(void)
{
    struct error err = {0};
    struct store *s;
    char path[256];

    make_tmp_dir();
    db_path(path, sizeof(path), "batch.db");
    s = store_sqlite_open(path, &err);
    ck_assert_msg(s != NULL, "open %s: %s", path, err.message);
    return s;
}

static void close_fresh(struct store *s)
{
    store_close(s);
    remove_tree(tmp_dir);
}

/* ---- files and schema ------------------------------------------------- */

static int64_t pragma_int(const char *path, const char *pragma)
{
    sqlite3_stmt *st = NULL;
    sqlite3 *db = NULL;
    int64_t v = -1;

    ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(db, pragma, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_type(st, 0) == SQLITE_TEXT
                ? (strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0)
                : sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

START_TEST(open_creates_directories_and_schema)
{
    struct error err = {0};
    struct batch b;
    struct store *s;
    char path[256];

    make_tmp_dir();
    db_path(path, sizeof(path), "data/deeper/batch.db");
    s = store_sqlite_open(path, &err);
    ck_assert_msg(s != NULL, "%s", err.message);
    ck_assert_str_eq(s->name, "sqlite");
    ck_assert_int_eq(store_ping(s, &err), ST_OK);
    contract_make_batch(s, "b_keep", 3, 2);
    store_close(s);

    ck_assert_int_eq(pragma_int(path, "PRAGMA user_version"), SQLITE_STORE_SCHEMA_VERSION);
    ck_assert_int_eq(pragma_int(path, "PRAGMA journal_mode"), 1); /* wal */

    /* Reopening keeps the data. */
    s = store_sqlite_open(path, &err);
    ck_assert_msg(s != NULL, "%s", err.message);
    ck_assert_int_eq(store_get_batch(s, "b_keep", &b, &err), ST_OK);
    ck_assert_int_eq(b.status, BATCH_PROCESSING);
    batch_release(&b);
    contract_check_counts(s, "b_keep");
    store_close(s);
    remove_tree(tmp_dir);
}
END_TEST

START_TEST(open_refuses_newer_schema_and_bad_paths)
{
    struct error err = {0};
    sqlite3 *db = NULL;
    char path[256];

    make_tmp_dir();
    db_path(path, sizeof(path), "future.db");
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    ck_assert_ptr_null(store_sqlite_open(path, &err));
    ck_assert_int_eq(err.status, ST_FAILED_PRECONDITION);
    ck_assert_msg(strstr(err.message, "99") != NULL, "%s", err.message);

    error_clear(&err);
    ck_assert_ptr_null(store_sqlite_open("", &err));
    ck_assert_int_eq(err.status, ST_INVALID);

    /* A file where a directory should be. */
    db_path(path, sizeof(path), "future.db/x/batch.db");
    error_clear(&err);
    ck_assert_ptr_null(store_sqlite_open(path, &err));
    ck_assert_int_eq(err.status, ST_IO);
    remove_tree(tmp_dir);
}
END_TEST

START_TEST(memory_database_works)
{
    struct error err = {0};
    struct store *s = store_sqlite_open(":memory:", &err);

    ck_assert_msg(s != NULL, "%s", err.message);
    contract_make_batch(s, "b_mem", 5, 2);
    contract_check_counts(s, "b_mem");
    store_close(s);
}
END_TEST

START_TEST(token_of_another_listing_is_invalid)
{
    struct item_query q = {.limit = 2};
    struct store *s = open_fresh();
    struct item_page page;
    char token[PAGE_TOKEN_MAX];
    struct error err = {0};

    contract_make_batch(s, "b_one", 5, 1);
    contract_make_batch(s, "b_two", 5, 1);
    ck_assert_int_eq(store_list_items(s, "b_one", &q, &page, &err), ST_OK);
    str_copy(token, sizeof(token), page.next_token);
    store_item_page_release(&page);
    ck_assert_str_ne(token, "");
    q.page_token = token;
    ck_assert_int_eq(store_list_items(s, "b_two", &q, &page, &err), ST_INVALID);
    store_item_page_release(&page);
    q.has_status = true; /* same batch, another filter */
    q.status = ITEM_PENDING;
    ck_assert_int_eq(store_list_items(s, "b_one", &q, &page, &err), ST_INVALID);
    store_item_page_release(&page);
    close_fresh(s);
}
END_TEST

/* ---- two processes, eight threads each -------------------------------- */

#define MP_ITEMS   500
#define MP_SHARDS  8
#define MP_THREADS 8
#define MP_PROCS   2

struct mp_ctx {
    struct store *s;
    int proc;
    atomic_int applied, won, errors;
};

struct mp_thread {
    struct mp_ctx *ctx;
    int t;
};

/*
 * Each process delivers every item (the other process's deliveries are
 * duplicates), thread t taking the items i with i % MP_THREADS == t, the
 * processes walking in opposite directions so that they collide.
 */
static void *mp_worker(void *p)
{
    struct mp_thread *m = p;
    struct mp_ctx *ctx = m->ctx;
    int k;

    for (k = 0; k < MP_ITEMS; k++) {
        int i = ctx->proc == 0 ? k : MP_ITEMS - 1 - k;
        struct item_outcome o = {0};
        enum batch_status final;
        char id[ITEM_ID_MAX];
        struct error err = {0};
        enum item_begin r;
        bool applied = false, won = false;
        struct item it;

        if (i % MP_THREADS != m->t)
            continue;
        item_id_for_index("b_mp", i, id);
        if (store_item_begin(ctx->s, "b_mp", id, 1, time_now_us(), 30000000, &r, &it, &err))
            atomic_fetch_add(&ctx->errors, 1);
        item_release(&it);
        o.status = i % 10 == 0 ? ITEM_FAILED : ITEM_COMPLETED;
        o.error_code = "x";
        o.duration_ms = 10;
        o.now = time_now_us();
        if (store_item_finish(ctx->s, "b_mp", id, 1, item_shard(id, MP_SHARDS), &o, &applied, &err))
            atomic_fetch_add(&ctx->errors, 1);
        if (applied)
            atomic_fetch_add(&ctx->applied, 1);
        if (store_try_complete(ctx->s, "b_mp", 1, time_now_us(), &won, &final, &err))
            atomic_fetch_add(&ctx->errors, 1);
        if (won)
            atomic_fetch_add(&ctx->won, 1);
    }
    return NULL;
}

/* The child: opens its own store, runs the threads, reports applied/won/errors on fd. */
static void mp_child(const char *path, int proc, int fd)
{
    struct mp_thread th[MP_THREADS];
    pthread_t tid[MP_THREADS];
    struct mp_ctx ctx = {0};
    struct error err = {0};
    int t, out[3];

    ctx.proc = proc;
    ctx.s = store_sqlite_open(path, &err);
    if (!ctx.s)
        _exit(2);
    for (t = 0; t < MP_THREADS; t++) {
        th[t] = (struct mp_thread){&ctx, t};
        pthread_create(&tid[t], NULL, mp_worker, &th[t]);
    }
    for (t = 0; t < MP_THREADS; t++)
        pthread_join(tid[t], NULL);
    store_close(ctx.s);
    out[0] = atomic_load(&ctx.applied);
    out[1] = atomic_load(&ctx.won);
    out[2] = atomic_load(&ctx.errors);
    _exit(write(fd, out, sizeof(out)) == (ssize_t)sizeof(out) ? 0 : 3);
}

START_TEST(two_processes_finish_each_item_once)
{
    int applied = 0, won = 0, errors = 0, p, status, fds[MP_PROCS][2], got[3];
    pid_t pids[MP_PROCS];
    struct error err = {0};
    struct batch_counts n;
    struct store *s;
    struct batch b;
    char path[256];
    int64_t t0 = time_mono_ms();

    make_tmp_dir();
    db_path(path, sizeof(path), "shared.db");
    s = store_sqlite_open(path, &err);
    ck_assert_msg(s != NULL, "%s", err.message);
    contract_make_batch(s, "b_mp", MP_ITEMS, MP_SHARDS);
    store_close(s); /* no connection crosses fork() */

    for (p = 0; p < MP_PROCS; p++) {
        ck_assert_int_eq(pipe(fds[p]), 0);
        pids[p] = fork();
        ck_assert_int_ge(pids[p], 0);
        if (pids[p] == 0) {
            close(fds[p][0]);
            mp_child(path, p, fds[p][1]);
        }
        close(fds[p][1]);
    }
    for (p = 0; p < MP_PROCS; p++) {
        ck_assert_int_eq(waitpid(pids[p], &status, 0), pids[p]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d status %d", p,
                      status);
        ck_assert_int_eq(read(fds[p][0], got, sizeof(got)), (ssize_t)sizeof(got));
        close(fds[p][0]);
        applied += got[0];
        won += got[1];
        errors += got[2];
    }
    ck_assert_int_eq(errors, 0);
    ck_assert_int_eq(applied, MP_ITEMS);
    ck_assert_int_eq(won, 1);

    s = store_sqlite_open(path, &err);
    ck_assert_msg(s != NULL, "%s", err.message);
    ck_assert_int_eq(store_get_counts(s, "b_mp", &n, &err), ST_OK);
    ck_assert_int_eq(n.processed, MP_ITEMS);
    ck_assert_int_eq(n.failure, MP_ITEMS / 10);
    ck_assert_int_eq(n.success, MP_ITEMS - MP_ITEMS / 10);
    ck_assert_int_eq(n.duration_ms_sum, 10 * (MP_ITEMS - MP_ITEMS / 10));
    ck_assert_int_eq(store_get_batch(s, "b_mp", &b, &err), ST_OK);
    ck_assert_int_eq(b.status, BATCH_COMPLETED_WITH_FAILURES);
    batch_release(&b);
    contract_check_counts(s, "b_mp");
    store_close(s);
    remove_tree(tmp_dir);
    fprintf(stderr, "two processes x %d threads, %d items: %lld ms\n", MP_THREADS, MP_ITEMS,
            (long long)(time_mono_ms() - t0));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = store_contract_suite("store_sqlite", open_fresh, close_fresh);
    TCase *tc = tcase_create("sqlite");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, open_creates_directories_and_schema);
    tcase_add_test(tc, open_refuses_newer_schema_and_bad_paths);
    tcase_add_test(tc, memory_database_works);
    tcase_add_test(tc, token_of_another_listing_is_invalid);
    tcase_add_test(tc, two_processes_finish_each_item_once);
    suite_add_tcase(s, tc);
    return s;
}
