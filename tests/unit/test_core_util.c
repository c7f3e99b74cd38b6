#include <string.h>

#include "check_main.h"
#include "core/buf.h"
#include "core/id.h"
#include "core/util.h"

static const struct {
    const char *s;
    int64_t min, max;
    bool ok;
    int64_t v;
} ints[] = {
    {"0", 0, 10, true, 0},
    {"10", 0, 10, true, 10},
    {"11", 0, 10, false, 0},
    {"-1", 0, 10, false, 0},
    {"-5", -10, 10, true, -5},
    {"", 0, 10, false, 0},
    {" 1", 0, 10, false, 0},
    {"1 ", 0, 10, false, 0},
    {"1x", 0, 10, false, 0},
    {"0x10", 0, 100, false, 0},
    {"9223372036854775807", 0, INT64_MAX, true, INT64_MAX},
    {"9223372036854775808", 0, INT64_MAX, false, 0},
};

START_TEST(parse_ints)
{
    int64_t v = 0;

    ck_assert_msg(str_to_i64(ints[_i].s, ints[_i].min, ints[_i].max, &v) == ints[_i].ok,
                  "row %d \"%s\"", _i, ints[_i].s);
    if (ints[_i].ok)
        ck_assert_int_eq(v, ints[_i].v);
}
END_TEST

START_TEST(copies_truncate)
{
    char small[4];

    ck_assert(str_copy(small, sizeof(small), "abc"));
    ck_assert_str_eq(small, "abc");
    ck_assert(!str_copy(small, sizeof(small), "abcd"));
    ck_assert_str_eq(small, "abc");
    ck_assert(!str_printf(small, sizeof(small), "%d", 12345));
    ck_assert(str_printf(small, sizeof(small), "%d", 123));
    ck_assert(str_starts_with("/api/batch", "/api"));
    ck_assert(!str_starts_with(NULL, "/api"));
    ck_assert(str_ieq("Content-Type", "content-type"));
}
END_TEST

START_TEST(buffer_bound)
{
    struct buf b;
    char *taken;
    size_t len;

    buf_init(&b, 8);
    ck_assert_str_eq(buf_str(&b), "");
    ck_assert_int_eq(buf_append_str(&b, "12345"), ST_OK);
    ck_assert_int_eq(buf_printf(&b, "%d", 678), ST_OK);
    ck_assert_str_eq(buf_str(&b), "12345678");
    ck_assert_int_eq(buf_append(&b, "9", 1), ST_TOO_LARGE);
    ck_assert_int_eq(buf_printf(&b, "x"), ST_TOO_LARGE);
    ck_assert_str_eq(buf_str(&b), "12345678");
    taken = buf_take(&b, &len);
    ck_assert_uint_eq(len, 8);
    ck_assert_str_eq(taken, "12345678");
    ck_assert_uint_eq(b.len, 0);
    free(taken);
    buf_release(&b);
}
END_TEST

START_TEST(bounded_strings)
{
    char *p;

    ck_assert_uint_eq(str_bounded_len("abc", 10), 3);
    ck_assert_uint_eq(str_bounded_len("abcdef", 4), 4);
    /* "aé" is 61 c3 a9: cutting at 2 would split the é */
    ck_assert_uint_eq(str_bounded_len("a\xc3\xa9", 2), 1);
    p = str_dup_bounded("a\xc3\xa9z", 2);
    ck_assert_str_eq(p, "a");
    free(p);
    ck_assert_ptr_null(str_dup_bounded(NULL, 3));
    ck_assert_int_eq(i64_add_sat(INT64_MAX, 1), INT64_MAX);
    ck_assert_int_eq(i64_add_sat(INT64_MIN, -1), INT64_MIN);
    ck_assert_int_eq(i64_add_sat(2, 3), 5);
}
END_TEST

START_TEST(ids)
{
    char a[40], b[40], uuid[37], trace[33];
    size_t i;

    ck_assert(id_random(a, sizeof(a), "batch_", 20));
    ck_assert(id_random(b, sizeof(b), "batch_", 20));
    ck_assert_uint_eq(strlen(a), 26);
    ck_assert_str_ne(a, b);
    for (i = 6; i < 26; i++)
        ck_assert(strchr("0123456789abcdefghijklmnopqrstuvwxyz", a[i]) != NULL);
    ck_assert(!id_random(a, 10, "batch_", 20));
    id_uuid4(uuid);
    ck_assert_uint_eq(strlen(uuid), 36);
    ck_assert_int_eq(uuid[14], '4');
    ck_assert(strchr("89ab", uuid[19]) != NULL);
    id_trace(trace);
    ck_assert_uint_eq(strlen(trace), 32);
    ck_assert(random_unit() >= 0.0 && random_unit() < 1.0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("core_util");
    TCase *tc = tcase_create("util");

    tcase_add_loop_test(tc, parse_ints, 0, sizeof(ints) / sizeof(ints[0]));
    tcase_add_test(tc, copies_truncate);
    tcase_add_test(tc, buffer_bound);
    tcase_add_test(tc, ids);
    tcase_add_test(tc, bounded_strings);
    suite_add_tcase(s, tc);
    return s;
}
