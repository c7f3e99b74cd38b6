#include <string.h>

#include "batch/batch.h"
#include "batch/lang.h"
#include "core/codec.h"
#include "batch/model.h"
#include "batch/request.h"
#include "batch/tasks.h"
#include "check_main.h"
#include "core/json.h"
#include "core/util.h"

static const struct create_limits limits = {100, false};

/* The seed's validation cases and ours: body, expected code, Portuguese and English text. */
static const struct {
    const char *body;
    const char *code;
    const char *pt;
    const char *en;
} invalid[] = {
    {"{\"userId\":\"u\"}", "images_not_array", "Campo \"images\" deve ser um array",
     "field \"images\" must be an array"},
    {"{\"images\":\"x\",\"userId\":\"u\"}", "images_not_array",
     "Campo \"images\" deve ser um array", NULL},
    {"{\"images\":[],\"userId\":\"u\"}", "images_empty", "Lista de imagens vazia",
     "empty image list"},
    {"{\"images\":[\"https://a.example/1.jpg\"]}", "user_id_required",
     "Campo \"userId\" obrigatório", "field \"userId\" is required"},
    {"{\"images\":[\"https://a.example/1.jpg\"],\"userId\":\"\"}", "user_id_required", NULL, NULL},
    {"{\"images\":[\"https://a.example/1.jpg\"],\"userId\":7}", "invalid_user_id", NULL, NULL},
    {"{\"images\":[\"https://a.example/1.jpg\"],\"userId\":\"u\",\"type\":\"nope\"}",
     "unknown_type", "Tipo desconhecido: nope", "unknown type: nope"},
    {"{\"images\":[\"http://a.example/1.jpg\"],\"userId\":\"u\"}", "insecure_url",
     "Imagem 0: a URL deve usar https", "image 0: the URL must use https"},
    {"{\"images\":[\"https://a.example/1.jpg\",\"https://127.0.0.1/x.jpg\"],\"userId\":\"u\"}",
     "private_url", "Imagem 1: endereço privado, local ou de metadados não permitido", NULL},
    {"{\"images\":[\"https://169.254.169.254/computeMetadata/v1/\"],\"userId\":\"u\"}",
     "private_url", NULL, NULL},
    {"{\"images\":[\"https://[::1]/x\"],\"userId\":\"u\"}", "private_url", NULL, NULL},
    {"{\"images\":[\"https://10.1.2.3/x\"],\"userId\":\"u\"}", "private_url", NULL, NULL},
    {"{\"images\":[\"https://localhost/x\"],\"userId\":\"u\"}", "private_url", NULL, NULL},
    {"{\"images\":[\"https://metadata.google.internal/x\"],\"userId\":\"u\"}", "private_url", NULL,
     NULL},
    {"{\"images\":[\"https://2130706433/x\"],\"userId\":\"u\"}", "private_url", NULL, NULL},
    {"{\"images\":[\"ftp://a.example/x\"],\"userId\":\"u\"}", "invalid_url", NULL, NULL},
    {"{\"images\":[\"not a url\"],\"userId\":\"u\"}", "invalid_url", NULL, NULL},
    {"{\"images\":[42],\"userId\":\"u\"}", "invalid_image", NULL, NULL},
    {"{\"images\":[{\"metadata\":{}}],\"userId\":\"u\"}", "invalid_image", NULL, NULL},
    {"{\"images\":[{\"url\":\"https://a.example/x\",\"metadata\":[]}],\"userId\":\"u\"}",
     "invalid_metadata", NULL, NULL},
    {"{\"images\":[\"https://a.example/x\"],\"userId\":\"u\",\"priority\":\"urgent\"}",
     "invalid_priority", NULL, NULL},
    {"{\"images\":[\"https://a.example/x\"],\"userId\":\"u\",\"webhookUrl\":\"http://a.example\"}",
     "invalid_webhook_url", NULL, NULL},
    {"{\"images\":[\"https://a.example/x\"],\"userId\":\"u\",\"options\":[1]}", "invalid_options",
     NULL, NULL},
    {"{\"images\":[\"https://a.example/x\"],\"userId\":\"u\",\"dryRun\":\"yes\"}",
     "invalid_dry_run", NULL, NULL},
    {"[1,2]", "invalid_body", NULL, NULL},
};

START_TEST(rejects)
{
    json_t *body = json_parse(invalid[_i].body, strlen(invalid[_i].body), NULL);
    struct create_request req;
    struct error err;

    ck_assert_ptr_nonnull(body);
    ck_assert_int_eq(create_request_parse(body, &limits, LANG_PT, &req, &err), ST_INVALID);
    ck_assert_str_eq(err.code, invalid[_i].code);
    if (invalid[_i].pt)
        ck_assert_str_eq(err.message, invalid[_i].pt);
    ck_assert_int_eq(create_request_parse(body, &limits, LANG_EN, &req, &err), ST_INVALID);
    ck_assert_str_eq(err.code, invalid[_i].code);
    if (invalid[_i].en)
        ck_assert_str_eq(err.message, invalid[_i].en);
    json_decref(body);
}
END_TEST

START_TEST(too_many)
{
    json_t *body = json_pack("{s:[], s:s}", "images", "userId", "u");
    struct create_request req;
    struct error err;
    int i;

    for (i = 0; i < 101; i++)
        json_array_append_new(json_object_get(body, "images"),
                              json_sprintf("https://cdn.example.com/%d.jpg", i));
    ck_assert_int_eq(create_request_parse(body, &limits, LANG_PT, &req, &err), ST_INVALID);
    ck_assert_str_eq(err.code, "too_many_images");
    ck_assert_str_eq(err.message, "Máximo 100 imagens por batch");
    json_array_remove(json_object_get(body, "images"), 0);
    ck_assert_int_eq(create_request_parse(body, &limits, LANG_PT, &req, &err), ST_OK);
    ck_assert_uint_eq(req.n_images, 100);
    create_request_release(&req);
    json_decref(body);
}
END_TEST

START_TEST(accepts)
{
    const char *text =
        "{\"images\":[\"https://a.example/1.jpg\",{\"url\":\"https://b.example/2.png\","
        "\"metadata\":{\"prompt\":\"sofa\"}}],\"userId\":\"crm-7\",\"type\":"
        "\"video-runway\",\"priority\":\"high\",\"options\":{\"duration\":5},"
        "\"webhookUrl\":\"https://hooks.example/x\",\"dryRun\":true}";
    json_t *body = json_parse(text, strlen(text), NULL);
    struct create_request req;
    struct error err;

    ck_assert_int_eq(create_request_parse(body, &limits, LANG_PT, &req, &err), ST_OK);
    ck_assert_uint_eq(req.n_images, 2);
    ck_assert_str_eq(req.images[0].url, "https://a.example/1.jpg");
    ck_assert_ptr_null(req.images[0].metadata);
    ck_assert_str_eq(json_str_or(req.images[1].metadata, "prompt", ""), "sofa");
    ck_assert_str_eq(req.user_id, "crm-7");
    ck_assert_str_eq(req.type, "video-runway");
    ck_assert_str_eq(req.priority, "high");
    ck_assert_str_eq(req.webhook_url, "https://hooks.example/x");
    ck_assert(req.dry_run);
    create_request_release(&req);
    json_decref(body);
}
END_TEST

START_TEST(insecure_allowed_when_configured)
{
    const struct create_limits local = {100, true};
    const char *text = "{\"images\":[\"http://127.0.0.1:9000/demo/1.png\"],\"userId\":\"u\"}";
    json_t *body = json_parse(text, strlen(text), NULL);
    struct create_request req;
    struct error err;

    ck_assert_int_eq(create_request_parse(body, &local, LANG_PT, &req, &err), ST_OK);
    ck_assert_str_eq(req.type, "virtual-staging"); /* the seed's default */
    create_request_release(&req);
    json_decref(body);
}
END_TEST

START_TEST(languages)
{
    ck_assert_int_eq(lang_from_header(NULL), LANG_PT);
    ck_assert_int_eq(lang_from_header("en"), LANG_EN);
    ck_assert_int_eq(lang_from_header("en-US,en;q=0.9"), LANG_EN);
    ck_assert_int_eq(lang_from_header("pt-BR,en;q=0.5"), LANG_PT);
    ck_assert_int_eq(lang_from_header("english"), LANG_PT);
}
END_TEST

START_TEST(task_bodies)
{
    struct task_body t, back;
    struct task_spec spec, again;
    char buf[TASK_BODY_MAX], buf2[TASK_BODY_MAX];
    struct error err;
    static const char *bad[] = {
        "{}",
        "{\"kind\":\"item\",\"batchId\":\"b\",\"generation\":1}",
        "{\"kind\":\"item\",\"batchId\":\"b/../x\",\"itemId\":\"i\",\"generation\":1}",
        "{\"kind\":\"zap\",\"batchId\":\"b\",\"itemId\":\"i\",\"generation\":1}",
        "{\"kind\":\"fanout\",\"batchId\":\"b\",\"generation\":1,\"start\":5,\"end\":5}",
        "{\"kind\":\"poll\",\"batchId\":\"b\",\"itemId\":\"i\",\"generation\":1}",
        "{\"kind\":\"poll\",\"batchId\":\"b\",\"itemId\":\"i\",\"generation\":1,\"poll\":1}",
        "{\"kind\":\"item\",\"batchId\":\"b\",\"itemId\":\"i\",\"generation\":0}",
        "not json",
    };
    size_t i;

    memset(&t, 0, sizeof(t));
    t.kind = TASK_POLL;
    str_copy(t.batch_id, sizeof(t.batch_id), "batch_abc");
    str_copy(t.item_id, sizeof(t.item_id), "9f2c-00042");
    t.generation = 2;
    t.poll = 3;
    task_spec_for(&t, 5, buf, &spec);
    ck_assert_int_eq(task_body_decode(spec.body, spec.body_len, &back, &err), ST_OK);
    ck_assert_int_eq(back.kind, TASK_POLL);
    ck_assert_str_eq(back.batch_id, "batch_abc");
    ck_assert_str_eq(back.item_id, "9f2c-00042");
    ck_assert_int_eq(back.generation, 2);
    ck_assert_int_eq(back.poll, 3);
    ck_assert_int_eq(spec.schedule_time, 5);
    task_spec_for(&t, 0, buf2, &again);
    ck_assert_str_eq(spec.name, again.name); /* deterministic */
    t.poll = 4;
    task_spec_for(&t, 0, buf2, &again);
    ck_assert_str_ne(spec.name, again.name);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(task_body_decode(bad[i], strlen(bad[i]), &back, &err) == ST_INVALID,
                      "accepted %s", bad[i]);
        ck_assert_str_eq(err.code, "invalid_task");
    }
}
END_TEST

START_TEST(ids_and_shards)
{
    char a[ITEM_ID_MAX], b[ITEM_ID_MAX], name[TASK_NAME_MAX];
    int hist[16] = {0}, i;

    item_id_for_index("batch_x", 42, a);
    item_id_for_index("batch_x", 42, b);
    ck_assert_str_eq(a, b);
    ck_assert_uint_eq(strlen(a), 10);
    ck_assert_str_eq(a + 4, "-00042");
    item_id_for_index("batch_y", 42, b);
    ck_assert_str_ne(a, b);
    for (i = 0; i < 1600; i++) {
        item_id_for_index("batch_x", i, a);
        hist[item_shard(a, 16)]++;
    }
    for (i = 0; i < 16; i++)
        ck_assert_msg(hist[i] > 50 && hist[i] < 150, "shard %d has %d of 1600", i, hist[i]);
    ck_assert_int_eq(item_shard("anything", 1), 0);
    queue_task_name("i-b x/y", name);
    ck_assert_uint_eq(strlen(name), 8 + 1 + 7);
    ck_assert_str_eq(name + 9, "i-b_x_y");
}
END_TEST

/* The Standard Webhooks reference vector (secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw). */
START_TEST(webhook_signature_vector)
{
    struct buf key;
    char sig[128];

    buf_init(&key, 64);
    ck_assert_int_eq(base64_decode(&key, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 32), ST_OK);
    webhook_signature((const unsigned char *)key.data, key.len, "msg_p5jXN8AQM9LWM0D4loKWxJek",
                      1614265330, "{\"test\": 2432232314}", sig, sizeof(sig));
    ck_assert_str_eq(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    buf_release(&key);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("batch_request");
    TCase *tc = tcase_create("request");

    tcase_add_loop_test(tc, rejects, 0, sizeof(invalid) / sizeof(invalid[0]));
    tcase_add_test(tc, too_many);
    tcase_add_test(tc, accepts);
    tcase_add_test(tc, insecure_allowed_when_configured);
    tcase_add_test(tc, languages);
    tcase_add_test(tc, task_bodies);
    tcase_add_test(tc, ids_and_shards);
    tcase_add_test(tc, webhook_signature_vector);
    suite_add_tcase(s, tc);
    return s;
}
