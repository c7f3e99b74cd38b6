/*
 * test_pricing.c - the price table (providers.md section 5) and its
 * overrides from configuration.
 */
#include <math.h>
#include <string.h>

#include "check_main.h"
#include "core/util.h"
#include "providers/pricing.h"

#define TOL 1e-9

struct cost_row {
    const char *type;
    const char *model; /* model_or_null */
    const char *options;
    double want; /* < 0: no price */
};

static const struct cost_row default_rows[] = {
    /* virtual-staging: per image; the default model is gemini-3.1-flash-image */
    {"virtual-staging", NULL, NULL, 0.067},
    {"virtual-staging", "", "{}", 0.067},
    {"virtual-staging", "gemini-2.5-flash-image", NULL, 0.0394},
    {"virtual-staging", "gemini-3-pro-image", NULL, 0.134},
    {"virtual-staging", "gemini-3-pro-image", "{\"imageSize\":\"2K\"}", 0.134},
    {"virtual-staging", "gemini-3-pro-image", "{\"imageSize\":\"4K\"}", 0.24},
    {"virtual-staging", "gemini-3.1-flash-image", "{\"imageSize\":\"4K\"}", 0.067},
    {"virtual-staging", NULL, "{\"model\":\"gemini-3-pro-image\"}", 0.067}, /* not an option */
    {"virtual-staging", "gemini-9-ultra-image", NULL, -1},
    /* video-runway: per second, 5 s by default */
    {"video-runway", NULL, NULL, 0.25},
    {"video-runway", NULL, "{\"duration\":10}", 0.50},
    {"video-runway", NULL, "{\"duration\":2}", 0.10},
    {"video-runway", "gen4.5", NULL, 0.60},
    {"video-runway", NULL, "{\"model\":\"gen4.5\",\"duration\":10}", 1.20},
    {"video-runway", "gen4_turbo", "{\"model\":\"gen4.5\"}", 0.60}, /* the batch's model wins */
    {"video-runway", NULL, "{\"model\":\"gen3a_turbo\",\"duration\":10}", 0.50},
    {"video-runway", NULL, "{\"duration\":\"ten\"}", 0.25},
    {"video-runway", NULL, "{\"model\":\"veo3\"}", -1},
    /* video-pixverse: credits at $0.01, v5 540p 5 s by default */
    {"video-pixverse", NULL, NULL, 0.45},
    {"video-pixverse", NULL, "{\"quality\":\"360p\"}", 0.45},
    {"video-pixverse", NULL, "{\"quality\":\"720p\"}", 0.60},
    {"video-pixverse", NULL, "{\"quality\":\"1080p\"}", 1.20},
    {"video-pixverse", NULL, "{\"duration\":8}", 0.90},
    {"video-pixverse", NULL, "{\"quality\":\"720p\",\"duration\":8}", 1.20},
    {"video-pixverse", "v4.5", "{\"motionMode\":\"fast\"}", 0.90},
    {"video-pixverse", "v4.5", "{\"motionMode\":\"normal\"}", 0.45},
    {"video-pixverse", NULL, "{\"model\":\"v5.5\",\"duration\":10}", 0.90},
    {"video-pixverse", NULL, "{\"model\":\"v6\",\"quality\":\"720p\",\"duration\":15}", 1.80},
    {"video-pixverse", NULL, "{\"model\":\"c1\",\"duration\":1}", 0.09},
    {"video-pixverse", NULL, "{\"quality\":\"4k\"}", -1},
    {"video-pixverse", NULL, "{\"model\":\"v9\"}", -1},
    /* others */
    {"video-sora", NULL, NULL, -1},
    {NULL, NULL, NULL, -1},
};

static void check_row(const struct cost_row *r)
{
    json_t *o = r->options ? json_loads(r->options, 0, NULL) : NULL;
    double got;

    ck_assert(!r->options || o);
    got = pricing_item_cost(r->type, r->model, o);
    if (r->want < 0)
        ck_assert_msg(got < 0, "%s %s %s: %g, want no price", r->type ? r->type : "(null)",
                      r->model ? r->model : "-", r->options ? r->options : "-", got);
    else
        ck_assert_msg(fabs(got - r->want) < TOL, "%s %s %s: %g, want %g", r->type,
                      r->model ? r->model : "-", r->options ? r->options : "-", got, r->want);
    json_decref(o);
}

START_TEST(defaults_table)
{
    ck_assert_int_eq(pricing_load_overrides(NULL, NULL), ST_OK);
    check_row(&default_rows[_i]);
}
END_TEST

static const struct cost_row override_rows[] = {
    {"virtual-staging", NULL, NULL, 0.08},
    {"virtual-staging", NULL, "{\"imageSize\":\"4K\"}", 0.15},
    {"virtual-staging", "gemini-3-pro-image", NULL, 0.134}, /* untouched */
    {"virtual-staging", "gemini-4-image", NULL, 0.2},       /* a model the table lacked */
    {"video-runway", NULL, NULL, 0.30},
    {"video-runway", NULL, "{\"model\":\"veo3\",\"duration\":8}", 3.2},
    {"video-runway", "gen4.5", NULL, 0.60},
    {"video-pixverse", NULL, NULL, 45 * 0.0067},
    {"video-pixverse", NULL, "{\"duration\":8}", 100 * 0.0067},
    {"video-pixverse", NULL, "{\"model\":\"v6\",\"quality\":\"720p\"}", 70 * 0.0067},
    {"video-pixverse", NULL, "{\"model\":\"v6\",\"quality\":\"720p\",\"duration\":10}",
     140 * 0.0067},
    {"video-pixverse", NULL, "{\"model\":\"v5\",\"quality\":\"720p\"}", 60 * 0.0067},
    {"video-pixverse", "v4", "{\"motionMode\":\"fast\"}", 45 * 0.0067 * 3},
    {"video-pixverse", "x7", "{\"quality\":\"360p\"}", 10 * 0.0067},
};

START_TEST(overrides_table)
{
    static const char overrides[] =
        "{\"gemini-3.1-flash-image\": 0.08, \"gemini:gemini-3.1-flash-image:4K\": 0.15,"
        " \"gemini:gemini-4-image\": 0.2, \"runway:gen4_turbo:per_second\": 0.06,"
        " \"runway:veo3:per_second\": 0.4, \"pixverse:credit\": 0.0067,"
        " \"pixverse:540p:8s\": 100, \"pixverse:v6:720p:5s\": 70,"
        " \"pixverse:fast_multiplier\": 3, \"pixverse:x7:360p:5s\": 10}";
    struct error err;

    error_clear(&err);
    ck_assert_msg(pricing_load_overrides(overrides, &err) == ST_OK, "%s", err.message);
    check_row(&override_rows[_i]);
    ck_assert_int_eq(pricing_load_overrides("", NULL), ST_OK);
}
END_TEST

START_TEST(lookup_and_replacement)
{
    ck_assert_int_eq(pricing_load_overrides(NULL, NULL), ST_OK);
    ck_assert_double_eq_tol(pricing_lookup("runway:gen4_turbo:per_second"), 0.05, TOL);
    ck_assert_double_eq_tol(pricing_lookup("pixverse:credit"), 0.01, TOL);
    ck_assert_double_eq_tol(pricing_lookup("pixverse:1080p:8s"), 240, TOL);
    ck_assert(pricing_lookup("runway:sora:per_second") < 0);
    ck_assert(pricing_lookup(NULL) < 0);

    ck_assert_int_eq(pricing_load_overrides("{\"runway:gen4_turbo:per_second\": 0}", NULL), ST_OK);
    ck_assert_double_eq_tol(pricing_item_cost("video-runway", NULL, NULL), 0, TOL); /* free */
    /* A new load replaces the previous overrides as a whole. */
    ck_assert_int_eq(pricing_load_overrides("{\"pixverse:credit\": 0.02}", NULL), ST_OK);
    ck_assert_double_eq_tol(pricing_item_cost("video-runway", NULL, NULL), 0.25, TOL);
    ck_assert_double_eq_tol(pricing_item_cost("video-pixverse", NULL, NULL), 0.90, TOL);
    ck_assert_int_eq(pricing_load_overrides("{}", NULL), ST_OK);
    ck_assert_double_eq_tol(pricing_item_cost("video-pixverse", NULL, NULL), 0.45, TOL);
}
END_TEST

START_TEST(bad_overrides_change_nothing)
{
    static const struct {
        const char *json, *says;
    } rows[] = {
        {"{\"gemini-3.1-flash-image\": ", "malformed json"},
        {"[0.05]", "not a json object"},
        {"{\"runway:gen4_turbo\": 0.05}", "\"runway:gen4_turbo\": not a known key form"},
        {"{\"runway:gen4_turbo:per_minute\": 0.05}", "not a known key form"},
        {"{\"gen4_turbo\": 0.05}", "not a known key form"},
        {"{\"gemini:bad model\": 0.05}", "not a known key form"},
        {"{\"gemini:gemini-3-pro-image:8K\": 0.05}", "not a known key form"},
        {"{\"pixverse:720p:16s\": 60}", "not a known key form"},
        {"{\"pixverse:4k:5s\": 60}", "not a known key form"},
        {"{\"pixverse:v5:720p\": 60}", "not a known key form"},
        {"{\"pixverse:credits\": 0.01}", "not a known key form"},
        {"{\"openai:gpt-image\": 0.04}", "not a known key form"},
        {"{\"pixverse:credit\": -0.01}", "must be a number >= 0"},
        {"{\"pixverse:credit\": \"0.01\"}", "must be a number >= 0"},
        {"{\"pixverse:credit\": null}", "must be a number >= 0"},
    };
    struct error err;
    size_t i;

    ck_assert_int_eq(pricing_load_overrides("{\"pixverse:credit\": 0.02}", NULL), ST_OK);
    for (i = 0; i < ARRAY_SIZE(rows); i++) {
        error_clear(&err);
        ck_assert_msg(pricing_load_overrides(rows[i].json, &err) == ST_INVALID, "%s accepted",
                      rows[i].json);
        ck_assert_str_eq(err.code, "invalid_pricing");
        ck_assert_msg(strstr(err.message, rows[i].says), "%s: message \"%s\"", rows[i].json,
                      err.message);
        ck_assert_double_eq_tol(pricing_lookup("pixverse:credit"), 0.02, TOL);
    }
    ck_assert_int_eq(pricing_load_overrides(NULL, NULL), ST_OK);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("pricing");
    TCase *tc = tcase_create("table");

    tcase_add_loop_test(tc, defaults_table, 0, (int)ARRAY_SIZE(default_rows));
    tcase_add_loop_test(tc, overrides_table, 0, (int)ARRAY_SIZE(override_rows));
    tcase_add_test(tc, lookup_and_replacement);
    tcase_add_test(tc, bad_overrides_change_nothing);
    suite_add_tcase(s, tc);
    return s;
}
