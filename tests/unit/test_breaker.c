#include "check_main.h"
#include "core/breaker.h"

START_TEST(opens_after_threshold_and_recovers)
{
    struct breaker_options o = {3, 1000};
    struct breaker *b = breaker_new("t1", &o);
    int64_t retry = 0;

    ck_assert(breaker_allow(b, 0, &retry));
    breaker_record(b, false, 0);
    breaker_record(b, false, 1);
    ck_assert_int_eq(breaker_state(b, 2), BREAKER_CLOSED);
    breaker_record(b, true, 2); /* a success resets the count */
    breaker_record(b, false, 3);
    breaker_record(b, false, 4);
    ck_assert_int_eq(breaker_state(b, 5), BREAKER_CLOSED);
    breaker_record(b, false, 10);
    ck_assert_int_eq(breaker_state(b, 11), BREAKER_OPEN);
    ck_assert(!breaker_allow(b, 500, &retry));
    ck_assert_int_eq(retry, 510);
    /* After open_ms: one probe at a time. */
    ck_assert(breaker_allow(b, 1010, &retry));
    ck_assert_int_eq(breaker_state(b, 1010), BREAKER_HALF_OPEN);
    ck_assert(!breaker_allow(b, 1011, &retry));
    breaker_record(b, false, 1020); /* the probe failed: open again */
    ck_assert_int_eq(breaker_state(b, 1021), BREAKER_OPEN);
    ck_assert(!breaker_allow(b, 2000, &retry));
    ck_assert(breaker_allow(b, 2020, &retry));
    breaker_record(b, true, 2030);
    ck_assert_int_eq(breaker_state(b, 2031), BREAKER_CLOSED);
    ck_assert(breaker_allow(b, 2032, &retry));
    breaker_free(b);
}
END_TEST

START_TEST(defaults)
{
    struct breaker *b = breaker_new("t2", NULL);
    int i;

    for (i = 0; i < 4; i++)
        breaker_record(b, false, i);
    ck_assert_int_eq(breaker_state(b, 5), BREAKER_CLOSED);
    breaker_record(b, false, 5);
    ck_assert_int_eq(breaker_state(b, 6), BREAKER_OPEN);
    ck_assert_int_eq(breaker_state(b, 30005), BREAKER_HALF_OPEN);
    ck_assert_str_eq(breaker_state_name(BREAKER_HALF_OPEN), "half_open");
    breaker_free(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("breaker");
    TCase *tc = tcase_create("breaker");

    tcase_add_test(tc, opens_after_threshold_and_recovers);
    tcase_add_test(tc, defaults);
    suite_add_tcase(s, tc);
    return s;
}
