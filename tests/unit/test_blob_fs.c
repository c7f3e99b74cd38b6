#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob/fs_blob.h"
#include "check_main.h"

static char root[64];

static struct blob *open_tmp(void)
{
    struct error err;
    struct blob *b;

    snprintf(root, sizeof(root), "/tmp/blobtest.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
    b = blob_fs_open(root, "http://127.0.0.1:8080/files", &err);
    ck_assert_msg(b != NULL, "%s", err.message);
    return b;
}

START_TEST(put_get_url)
{
    struct blob *b = open_tmp();
    struct buf out;
    char ct[64], url[256];
    struct error err;

    ck_assert_int_eq(blob_put(b, "results/b1/i1-g1.png", "PNGDATA", 7, "image/png", &err), ST_OK);
    ck_assert_int_eq(blob_put(b, "results/b1/i1-g1.png", "OTHER", 5, "image/png", &err),
                     ST_ALREADY_EXISTS);
    buf_init(&out, 1024);
    ck_assert_int_eq(blob_get(b, "results/b1/i1-g1.png", &out, ct, sizeof(ct), &err), ST_OK);
    ck_assert_str_eq(buf_str(&out), "PNGDATA"); /* create-only: the first write stays */
    ck_assert_str_eq(ct, "image/png");
    buf_release(&out);
    buf_init(&out, 3);
    ck_assert_int_eq(blob_get(b, "results/b1/i1-g1.png", &out, ct, sizeof(ct), &err), ST_TOO_LARGE);
    buf_release(&out);
    buf_init(&out, 1024);
    ck_assert_int_eq(blob_get(b, "results/b1/none.png", &out, ct, sizeof(ct), &err), ST_NOT_FOUND);
    buf_release(&out);
    ck_assert_int_eq(blob_url(b, "results/b1/i1-g1.png", url, sizeof(url), &err), ST_OK);
    ck_assert_str_eq(url, "http://127.0.0.1:8080/files/results/b1/i1-g1.png");
    blob_close(b);
}
END_TEST

static const char *bad_keys[] = {"", "/abs", "a/../b", "a//b", "a/", "sp ace", "q?x", "..", "a\\b"};

START_TEST(key_rules)
{
    struct blob *b = open_tmp();
    struct error err;

    ck_assert(!blob_key_valid(bad_keys[_i]));
    ck_assert_int_eq(blob_put(b, bad_keys[_i], "x", 1, "text/plain", &err), ST_INVALID);
    blob_close(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("blob_fs");
    TCase *tc = tcase_create("fs");

    tcase_add_test(tc, put_get_url);
    tcase_add_loop_test(tc, key_rules, 0, sizeof(bad_keys) / sizeof(bad_keys[0]));
    suite_add_tcase(s, tc);
    return s;
}
