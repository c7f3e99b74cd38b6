#include <string.h>

#include "check_main.h"
#include "core/json.h"

static const char *doc = "{\"s\":\"x\",\"i\":5,\"d\":2.5,\"b\":true,\"o\":{},\"a\":[1],\"n\":null}";

static const struct {
    const char *field;
    char kind; /* s i d b o a */
    enum json_need need;
    enum status st;
    const char *message;
} rows[] = {
    {"s", 's', JSON_REQUIRED, ST_OK, NULL},
    {"i", 's', JSON_REQUIRED, ST_INVALID, "field \"i\" must be a string"},
    {"i", 'i', JSON_REQUIRED, ST_OK, NULL},
    {"d", 'i', JSON_REQUIRED, ST_INVALID, "field \"d\" must be an integer in [0, 10]"},
    {"d", 'd', JSON_REQUIRED, ST_OK, NULL},
    {"i", 'd', JSON_REQUIRED, ST_OK, NULL},
    {"b", 'b', JSON_REQUIRED, ST_OK, NULL},
    {"s", 'b', JSON_REQUIRED, ST_INVALID, "field \"s\" must be a boolean"},
    {"o", 'o', JSON_REQUIRED, ST_OK, NULL},
    {"a", 'o', JSON_REQUIRED, ST_INVALID, "field \"a\" must be an object"},
    {"a", 'a', JSON_REQUIRED, ST_OK, NULL},
    {"o", 'a', JSON_REQUIRED, ST_INVALID, "field \"o\" must be an array"},
    {"missing", 's', JSON_REQUIRED, ST_INVALID, "field \"missing\" is required"},
    {"missing", 's', JSON_OPTIONAL, ST_OK, NULL},
    {"n", 'a', JSON_REQUIRED, ST_INVALID, "field \"n\" is required"},
    {"n", 'a', JSON_OPTIONAL, ST_OK, NULL},
};

START_TEST(getters)
{
    json_t *v = json_parse(doc, strlen(doc), NULL);
    struct error err;
    enum status st = ST_INTERNAL;
    const char *s;
    int64_t i;
    double d;
    bool b;
    json_t *j;

    ck_assert_ptr_nonnull(v);
    error_clear(&err);
    switch (rows[_i].kind) {
    case 's':
        st = json_get_string(v, rows[_i].field, rows[_i].need, &s, &err);
        break;
    case 'i':
        st = json_get_int(v, rows[_i].field, rows[_i].need, 0, 10, &i, &err);
        break;
    case 'd':
        st = json_get_double(v, rows[_i].field, rows[_i].need, 0, 10, &d, &err);
        break;
    case 'b':
        st = json_get_bool(v, rows[_i].field, rows[_i].need, &b, &err);
        break;
    case 'o':
        st = json_get_object(v, rows[_i].field, rows[_i].need, &j, &err);
        break;
    case 'a':
        st = json_get_array(v, rows[_i].field, rows[_i].need, &j, &err);
        break;
    }
    ck_assert_int_eq(st, rows[_i].st);
    if (rows[_i].message) {
        ck_assert_str_eq(err.message, rows[_i].message);
        ck_assert_str_eq(err.code, "invalid_field");
    }
    json_decref(v);
}
END_TEST

static const char *malformed[] = {"",    "{", "{\"a\":1,\"a\":2}", "[1,]", "{\"a\":\"\\u0000\"}",
                                  "\xff"};

START_TEST(parse_errors)
{
    struct error err;

    error_clear(&err);
    ck_assert_ptr_null(json_parse(malformed[_i], strlen(malformed[_i]), &err));
    ck_assert_int_eq(err.status, ST_INVALID);
    ck_assert_str_eq(err.code, "malformed_json");
    ck_assert(strstr(err.message, "malformed json at line") == err.message);
}
END_TEST

START_TEST(dump_and_defaults)
{
    json_t *v = json_pack("{s:f, s:s, s:I}", "x", 0.1, "s", "é", "n", (json_int_t)1 << 60);
    char *text = json_dump_compact(v);

    ck_assert_str_eq(text, "{\"x\":0.10000000000000001,\"s\":\"é\",\"n\":1152921504606846976}");
    ck_assert_str_eq(json_str_or(v, "s", "d"), "é");
    ck_assert_str_eq(json_str_or(v, "x", "d"), "d");
    ck_assert_int_eq(json_int_or(v, "n", 0), (int64_t)1 << 60);
    ck_assert_int_eq(json_int_or(v, "zz", 7), 7);
    ck_assert_ptr_null(json_dump_compact(NULL));
    free(text);
    json_decref(v);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("core_json");
    TCase *tc = tcase_create("json");

    tcase_add_loop_test(tc, getters, 0, sizeof(rows) / sizeof(rows[0]));
    tcase_add_loop_test(tc, parse_errors, 0, sizeof(malformed) / sizeof(malformed[0]));
    tcase_add_test(tc, dump_and_defaults);
    suite_add_tcase(s, tc);
    return s;
}
