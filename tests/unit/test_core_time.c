#include <string.h>

#include "check_main.h"
#include "core/timeutil.h"

static const struct {
    const char *text;
    int64_t us;
    const char *canonical; /* NULL when text is canonical */
} good[] = {
    {"1970-01-01T00:00:00.000000Z", 0, NULL},
    {"2026-05-01T12:00:00.123456Z", 1777636800123456LL, NULL},
    {"2026-05-01T12:00:00Z", 1777636800000000LL, "2026-05-01T12:00:00.000000Z"},
    {"2026-05-01T12:00:00.1Z", 1777636800100000LL, "2026-05-01T12:00:00.100000Z"},
    {"2026-05-01T12:00:00.123456789Z", 1777636800123456LL, "2026-05-01T12:00:00.123456Z"},
    {"2026-05-01T14:00:00+02:00", 1777636800000000LL, "2026-05-01T12:00:00.000000Z"},
    {"2026-05-01T11:30:00.5-00:30", 1777636800500000LL, "2026-05-01T12:00:00.500000Z"},
    {"2024-02-29T00:00:00Z", 1709164800000000LL, "2024-02-29T00:00:00.000000Z"},
    {"1969-12-31T23:59:59.999999Z", -1, NULL},
};

START_TEST(rfc3339_good)
{
    int64_t us = 42;
    char out[RFC3339_MAX];

    ck_assert_msg(time_parse_rfc3339(good[_i].text, &us), "refused %s", good[_i].text);
    ck_assert_int_eq(us, good[_i].us);
    ck_assert(time_format_rfc3339(us, out, sizeof(out)));
    ck_assert_str_eq(out, good[_i].canonical ? good[_i].canonical : good[_i].text);
}
END_TEST

static const char *bad[] = {
    "",
    "2026-05-01",
    "2026-05-01T12:00:00",
    "2026-13-01T12:00:00Z",
    "2026-02-30T12:00:00Z",
    "2023-02-29T00:00:00Z",
    "2026-05-01T24:00:00Z",
    "2026-05-01T12:00:00.Z",
    "2026-05-01T12:00:00.1234567890Z",
    "2026-05-01T12:00:00Zjunk",
    "2026-05-01 12:00:00Z",
    "2026-05-01T12:00:00+0200",
    "20260501T120000Z",
};

START_TEST(rfc3339_bad)
{
    int64_t us;

    ck_assert_msg(!time_parse_rfc3339(bad[_i], &us), "accepted \"%s\"", bad[_i]);
}
END_TEST

START_TEST(http_date)
{
    int64_t us;

    ck_assert(time_parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT", &us));
    ck_assert_int_eq(us, 784111777000000LL);
    ck_assert(!time_parse_http_date("Sun, 06 Nov 1994 08:49:37 PST", &us));
    ck_assert(!time_parse_http_date("yesterday", &us));
    ck_assert(!time_parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT", &us));
    /* Found by fuzzing: a huge year overflowed the µs conversion. */
    ck_assert(!time_parse_http_date("Sun, 06 Nov 629246406991777 08:49:37 GMT", &us));
}
END_TEST

START_TEST(compact)
{
    char date[9], stamp[17];

    ck_assert(time_format_compact(1777636800123456LL, date, stamp));
    ck_assert_str_eq(date, "20260501");
    ck_assert_str_eq(stamp, "20260501T120000Z");
}
END_TEST

START_TEST(clocks_move)
{
    int64_t a = time_mono_us();

    time_sleep_ms(5);
    ck_assert_int_ge(time_mono_us() - a, 5000);
    ck_assert_int_gt(time_now_us(), 1700000000000000LL);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("core_time");
    TCase *tc = tcase_create("time");

    tcase_add_loop_test(tc, rfc3339_good, 0, sizeof(good) / sizeof(good[0]));
    tcase_add_loop_test(tc, rfc3339_bad, 0, sizeof(bad) / sizeof(bad[0]));
    tcase_add_test(tc, http_date);
    tcase_add_test(tc, compact);
    tcase_add_test(tc, clocks_move);
    suite_add_tcase(s, tc);
    return s;
}
