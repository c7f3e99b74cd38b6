#include <math.h>

#include "check_main.h"
#include "core/backoff.h"

/* The two worked examples of gcp.md 1.4 plus the 1 s / 60 s / 4 doublings queue. */
static const struct {
    struct retry_config rc;
    double delays[12];
    int n;
} schedules[] = {
    {{.min_backoff = 10, .max_backoff = 300, .max_doublings = 3},
     {10, 20, 40, 80, 160, 240, 300, 300},
     8},
    {{.min_backoff = 10, .max_backoff = 200, .max_doublings = 0},
     {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120},
     12},
    {{.min_backoff = 1, .max_backoff = 60, .max_doublings = 4}, {1, 2, 4, 8, 16, 32, 48}, 7},
    {{.min_backoff = 0.1, .max_backoff = 3600, .max_doublings = 16},
     {0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 102.4, 204.8},
     12},
};

START_TEST(cloud_tasks_schedule)
{
    int k;

    for (k = 1; k <= schedules[_i].n; k++) {
        double got = backoff_cloud_tasks(&schedules[_i].rc, k);

        ck_assert_msg(fabs(got - schedules[_i].delays[k - 1]) < 1e-9,
                      "schedule %d retry %d: got %g want %g", _i, k, got,
                      schedules[_i].delays[k - 1]);
    }
}
END_TEST

START_TEST(zero_doublings_reaches_cap)
{
    struct retry_config rc = {.min_backoff = 10, .max_backoff = 200, .max_doublings = 0};

    ck_assert_double_eq(backoff_cloud_tasks(&rc, 20), 200);
    ck_assert_double_eq(backoff_cloud_tasks(&rc, 21), 200);
    ck_assert_double_eq(backoff_cloud_tasks(&rc, 1000), 200);
}
END_TEST

/* Stop rule: both limits must be spent. */
static const struct {
    int max_attempts;
    double max_duration;
    int done;
    double elapsed;
    bool retry;
} stop_rules[] = {
    {8, 0, 7, 1000, true},    /* attempts left, no time limit */
    {8, 0, 8, 0, false},      /* attempts spent, zero duration is always spent */
    {5, 3600, 5, 10, true},   /* attempts spent but time left: keep going */
    {5, 3600, 2, 4000, true}, /* time spent but attempts left */
    {5, 3600, 5, 3600, false}, {-1, 0, 100000, 1e9, true}, /* unlimited */
    {-1, 60, 3, 120, true},                                /* -1 attempts is never spent */
    {1, 0, 1, 0, false},                                   /* single attempt */
};

START_TEST(stop_rule)
{
    struct retry_config rc = {.max_attempts = stop_rules[_i].max_attempts,
                              .max_retry_duration = stop_rules[_i].max_duration};

    ck_assert_msg(backoff_should_retry(&rc, stop_rules[_i].done, stop_rules[_i].elapsed) ==
                      stop_rules[_i].retry,
                  "row %d", _i);
}
END_TEST

START_TEST(jitter_bounds)
{
    ck_assert_int_eq(backoff_jitter_ms(1, 100, 10000, 0.0), 0);
    ck_assert_int_eq(backoff_jitter_ms(1, 100, 10000, 0.5), 50);
    ck_assert_int_eq(backoff_jitter_ms(3, 100, 10000, 0.5), 200);
    ck_assert_int_eq(backoff_jitter_ms(30, 100, 10000, 0.5), 5000);
    ck_assert_int_le(backoff_jitter_ms(60, 100, 10000, 0.9999999), 10000);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("core_backoff");
    TCase *tc = tcase_create("backoff");

    tcase_add_loop_test(tc, cloud_tasks_schedule, 0, sizeof(schedules) / sizeof(schedules[0]));
    tcase_add_test(tc, zero_doublings_reaches_cap);
    tcase_add_loop_test(tc, stop_rule, 0, sizeof(stop_rules) / sizeof(stop_rules[0]));
    tcase_add_test(tc, jitter_bounds);
    suite_add_tcase(s, tc);
    return s;
}
