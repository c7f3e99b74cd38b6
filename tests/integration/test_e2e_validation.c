/* The seed's validation cases over HTTP, and partner URLs that point inside. */
#include <string.h>

#include "check_main.h"
#include "core/json.h"
#include "core/util.h"
#include "harness.h"

static struct stack s;

static void start(void)
{
    static const char *const strict[] = {"ALLOW_INSECURE_URLS=false", "MAX_IMAGES_PER_BATCH=100",
                                         "MAX_BODY_BYTES=65536", NULL};
    struct stack_opts o = {.creator_env = strict, .no_sim = true};

    stack_start(&s, &o);
}

static void stop(void)
{
    stack_stop(&s);
}

static json_t *post_raw(const char *body, const char *ctype, const char *lang, long *status)
{
    struct http_call call;
    struct http_result res;
    struct error err;
    char url[128], h1[64], h2[64];
    const char *headers[3] = {h1, h2, NULL};
    json_t *out;

    snprintf(url, sizeof(url), "%s/api/batch/create", s.creator_url);
    snprintf(h1, sizeof(h1), "Content-Type: %s", ctype);
    snprintf(h2, sizeof(h2), "Accept-Language: %s", lang ? lang : "pt-BR");
    memset(&call, 0, sizeof(call));
    call.method = "POST";
    call.url = url;
    call.headers = headers;
    call.body = body;
    call.body_len = strlen(body);
    http_result_init(&res);
    ck_assert_int_eq(http_client_do(s.client, &call, &res, &err), ST_OK);
    *status = res.status;
    out = json_loadb(res.body.data ? res.body.data : "", res.body.len, 0, NULL);
    http_result_release(&res);
    return out;
}

static const struct {
    const char *body;
    int status;
    const char *code;
    const char *message; /* Portuguese, the default */
} cases[] = {
    {"{\"userId\":\"u\"}", 400, "images_not_array", "Campo \"images\" deve ser um array"},
    {"{\"images\":{},\"userId\":\"u\"}", 400, "images_not_array", NULL},
    {"{\"images\":[],\"userId\":\"u\"}", 400, "images_empty", "Lista de imagens vazia"},
    {"{\"images\":[\"https://a.example/1.jpg\"]}", 400, "user_id_required",
     "Campo \"userId\" obrigatório"},
    {"{\"images\":[\"https://a.example/1.jpg\"],\"userId\":\"u\",\"type\":\"x\"}", 400,
     "unknown_type", "Tipo desconhecido: x"},
    {"{\"images\":[\"https://127.0.0.1/a.png\"],\"userId\":\"u\"}", 400, "private_url", NULL},
    {"{\"images\":[\"https://169.254.169.254/computeMetadata/v1/\"],\"userId\":\"u\"}", 400,
     "private_url", NULL},
    {"{\"images\":[\"http://a.example/1.jpg\"],\"userId\":\"u\"}", 400, "insecure_url", NULL},
    {"{\"images\":[\"https://a.example/1.jpg\"", 400, "malformed_json", NULL},
};

START_TEST(refusals)
{
    long status;
    json_t *j = post_raw(cases[_i].body, "application/json", NULL, &status);

    ck_assert_int_eq(status, cases[_i].status);
    ck_assert_str_eq(json_str_or(j, "code", ""), cases[_i].code);
    if (cases[_i].message)
        ck_assert_str_eq(json_str_or(j, "error", ""), cases[_i].message);
    json_decref(j);
    ck_assert_int_eq(db_count(&s, "SELECT COUNT(*) FROM batches"), 0);
}
END_TEST

START_TEST(over_the_limit_and_english)
{
    json_t *body = json_pack("{s:[], s:s}", "images", "userId", "u"), *j;
    long status;
    char *text;
    int i;

    for (i = 0; i < 101; i++)
        json_array_append_new(json_object_get(body, "images"),
                              json_sprintf("https://cdn.example.com/%d.jpg", i));
    text = json_dumps(body, JSON_COMPACT);
    j = post_raw(text, "application/json", NULL, &status);
    ck_assert_int_eq(status, 400);
    ck_assert_str_eq(json_str_or(j, "error", ""), "Máximo 100 imagens por batch");
    json_decref(j);
    j = post_raw(text, "application/json", "en-US,en;q=0.9", &status);
    ck_assert_str_eq(json_str_or(j, "error", ""), "at most 100 images per batch");
    ck_assert_str_eq(json_str_or(j, "code", ""), "too_many_images");
    json_decref(j);
    free(text);
    json_decref(body);
}
END_TEST

START_TEST(oversized_body_and_wrong_type)
{
    char *big = xmalloc(100000);
    json_t *j;
    long status;

    memset(big, ' ', 99999);
    big[0] = '{';
    big[99998] = '}';
    big[99999] = '\0';
    j = post_raw(big, "application/json", NULL, &status);
    ck_assert_int_eq(status, 413);
    ck_assert_str_eq(json_str_or(j, "code", ""), "payload_too_large");
    json_decref(j);
    free(big);
    j = post_raw("{}", "text/plain", NULL, &status);
    ck_assert_int_eq(status, 415);
    ck_assert_str_eq(json_str_or(j, "code", ""), "unsupported_media_type");
    json_decref(j);
}
END_TEST

START_TEST(unknown_batch_and_bad_query)
{
    char url[256];
    long status;
    json_t *j;

    snprintf(url, sizeof(url), "%s/api/batch/status/batch_nope", s.creator_url);
    j = http_json_call(&s, "GET", url, NULL, NULL, &status);
    ck_assert_int_eq(status, 404);
    ck_assert_str_eq(json_str_or(j, "error", ""), "Batch não encontrado");
    json_decref(j);
    snprintf(url, sizeof(url), "%s/api/batch/status/batch_nope?limit=0", s.creator_url);
    j = http_json_call(&s, "GET", url, NULL, NULL, &status);
    ck_assert_int_eq(status, 400);
    ck_assert_str_eq(json_str_or(j, "code", ""), "invalid_query");
    json_decref(j);
}
END_TEST

static Suite *suite(void)
{
    Suite *su = suite_create("e2e_validation");
    TCase *tc = tcase_create("validation");

    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, start, stop);
    tcase_add_loop_test(tc, refusals, 0, sizeof(cases) / sizeof(cases[0]));
    tcase_add_test(tc, over_the_limit_and_english);
    tcase_add_test(tc, oversized_body_and_wrong_type);
    tcase_add_test(tc, unknown_batch_and_bad_query);
    suite_add_tcase(su, tc);
    return su;
}
