#include <string.h>

#include "check_main.h"
#include "core/error.h"

static const struct {
    enum status st;
    int http;
    const char *code;
} table[] = {
    {ST_OK, 200, "ok"},
    {ST_INVALID, 400, "invalid_argument"},
    {ST_UNAUTHENTICATED, 401, "unauthenticated"},
    {ST_PERMISSION_DENIED, 403, "permission_denied"},
    {ST_NOT_FOUND, 404, "not_found"},
    {ST_METHOD_NOT_ALLOWED, 405, "method_not_allowed"},
    {ST_CONFLICT, 409, "conflict"},
    {ST_ALREADY_EXISTS, 409, "already_exists"},
    {ST_TOO_LARGE, 413, "payload_too_large"},
    {ST_UNSUPPORTED_MEDIA, 415, "unsupported_media_type"},
    {ST_RATE_LIMITED, 429, "rate_limited"},
    {ST_UNAVAILABLE, 503, "unavailable"},
    {ST_TIMEOUT, 504, "deadline_exceeded"},
    {ST_INTERNAL, 500, "internal"},
};

START_TEST(status_table)
{
    ck_assert_int_eq(status_http(table[_i].st), table[_i].http);
    ck_assert_str_eq(status_code(table[_i].st), table[_i].code);
}
END_TEST

static const struct {
    long http;
    enum status st;
} from_http[] = {
    {200, ST_OK},          {204, ST_OK},          {400, ST_INVALID},      {401, ST_UNAUTHENTICATED},
    {404, ST_NOT_FOUND},   {408, ST_TIMEOUT},     {429, ST_RATE_LIMITED}, {500, ST_INTERNAL},
    {502, ST_UNAVAILABLE}, {503, ST_UNAVAILABLE}, {504, ST_TIMEOUT},      {418, ST_INVALID},
};

START_TEST(http_mapping)
{
    ck_assert_int_eq(status_from_http(from_http[_i].http), from_http[_i].st);
}
END_TEST

START_TEST(json_body)
{
    struct error err;
    json_t *body;

    error_clear(&err);
    ck_assert_int_eq(error_set(&err, ST_INVALID, "images_empty", "lista de imagens vazia"),
                     ST_INVALID);
    body = error_to_json(&err);
    ck_assert_str_eq(json_string_value(json_object_get(body, "error")), "lista de imagens vazia");
    ck_assert_str_eq(json_string_value(json_object_get(body, "code")), "images_empty");
    json_decref(body);
    error_set(&err, ST_NOT_FOUND, NULL, "batch b_1 not found");
    ck_assert_str_eq(error_code(&err), "not_found");
    error_prefix(&err, "cannot read status");
    ck_assert_str_eq(err.message, "cannot read status: batch b_1 not found");
    ck_assert(status_is_transient(ST_UNAVAILABLE));
    ck_assert(!status_is_transient(ST_INVALID));
    ck_assert_int_eq(error_set(NULL, ST_IO, NULL, "x"), ST_IO);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("core_error");
    TCase *tc = tcase_create("error");

    tcase_add_loop_test(tc, status_table, 0, sizeof(table) / sizeof(table[0]));
    tcase_add_loop_test(tc, http_mapping, 0, sizeof(from_http) / sizeof(from_http[0]));
    tcase_add_test(tc, json_body);
    suite_add_tcase(s, tc);
    return s;
}
