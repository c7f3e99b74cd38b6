#include <stdio.h>
#include <string.h>

#include "check_main.h"
#include "core/metrics.h"

static char *render(void)
{
    struct buf b;

    buf_init(&b, 1 << 20);
    ck_assert_int_eq(metrics_render(&b), ST_OK);
    return buf_take(&b, NULL);
}

START_TEST(counter_and_gauge)
{
    struct metric *c = metric_counter("t_items_total", "items by outcome", "type,outcome");
    struct metric *g = metric_gauge("t_in_flight", "in flight", NULL);
    const char *ok[] = {"virtual-staging", "success"};
    const char *quote[] = {"a\"b\\c\nd", "x"};
    char *text;

    ck_assert_ptr_eq(metric_counter("t_items_total", "again", "type,outcome"), c);
    metric_add(c, ok, 1);
    metric_add(c, ok, 2);
    metric_add(c, quote, 1);
    metric_set(g, NULL, 7);
    ck_assert_double_eq(metric_value(c, ok), 3);
    text = render();
    ck_assert_msg(strstr(text, "# TYPE t_items_total counter\n") != NULL, "%s", text);
    ck_assert_msg(strstr(text, "t_items_total{type=\"virtual-staging\",outcome=\"success\"} 3\n"),
                  "%s", text);
    ck_assert_msg(strstr(text, "t_items_total{type=\"a\\\"b\\\\c\\nd\",outcome=\"x\"} 1\n"), "%s",
                  text);
    ck_assert_msg(strstr(text, "t_in_flight 7\n") != NULL, "%s", text);
    free(text);
}
END_TEST

START_TEST(histogram)
{
    const double bounds[] = {0.1, 1, 10};
    struct metric *h = metric_histogram("t_latency_seconds", "latency", "provider", bounds, 3);
    const char *p[] = {"gemini"};
    char *text;

    metric_observe(h, p, 0.05);
    metric_observe(h, p, 0.5);
    metric_observe(h, p, 5);
    metric_observe(h, p, 50);
    text = render();
    ck_assert_msg(strstr(text, "t_latency_seconds_bucket{provider=\"gemini\",le=\"0.1\"} 1\n"),
                  "%s", text);
    ck_assert(strstr(text, "t_latency_seconds_bucket{provider=\"gemini\",le=\"1\"} 2\n"));
    ck_assert(strstr(text, "t_latency_seconds_bucket{provider=\"gemini\",le=\"10\"} 3\n"));
    ck_assert(strstr(text, "t_latency_seconds_bucket{provider=\"gemini\",le=\"+Inf\"} 4\n"));
    ck_assert(strstr(text, "t_latency_seconds_sum{provider=\"gemini\"} 55.55\n"));
    ck_assert(strstr(text, "t_latency_seconds_count{provider=\"gemini\"} 4\n"));
    free(text);
}
END_TEST

START_TEST(series_are_bounded)
{
    struct metric *c = metric_counter("t_bounded_total", "bounded", "key");
    const char *other[] = {"other"};
    char key[32];
    int i;

    for (i = 0; i < METRICS_MAX_SERIES + 100; i++) {
        const char *v[] = {key};

        snprintf(key, sizeof(key), "k%d", i);
        metric_add(c, v, 1);
    }
    ck_assert_double_eq(metric_value(c, other), 100);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("core_metrics");
    TCase *tc = tcase_create("metrics");

    tcase_add_test(tc, counter_and_gauge);
    tcase_add_test(tc, histogram);
    tcase_add_test(tc, series_are_bounded);
    suite_add_tcase(s, tc);
    return s;
}
