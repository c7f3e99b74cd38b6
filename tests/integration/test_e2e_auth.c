/*
 * Push authentication: a push without a token, with a token for another
 * audience, an expired one, one signed by another key or for another
 * service account is refused (401/403) and changes nothing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check_main.h"
#include "core/json.h"
#include "gcp/jwt.h"
#include "harness.h"

static struct stack s;
static char *local_key;

static void start(void)
{
    char path[512];
    FILE *f;
    long n;

    stack_start(&s, NULL);
    snprintf(path, sizeof(path), "%s/data/keys/dispatcher.pem", s.dir);
    f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    local_key = calloc(1, (size_t)n + 1);
    ck_assert_int_eq(fread(local_key, 1, (size_t)n, f), (size_t)n);
    fclose(f);
}

static void stop(void)
{
    free(local_key);
    stack_stop(&s);
}

static char *token(const char *key, const char *aud, const char *email, long iat, long exp)
{
    json_t *claims =
        json_pack("{s:s, s:s, s:s, s:s, s:b, s:I, s:I}", "iss",
                  "https://local-dispatcher.batchd.invalid", "aud", aud, "sub", email, "email",
                  email, "email_verified", 1, "iat", (json_int_t)iat, "exp", (json_int_t)exp);
    struct error err;
    EVP_PKEY *pk = NULL;
    char kid[JWT_KID_LEN + 1], *out = NULL;

    ck_assert_int_eq(jwt_key_load_private(key, &pk, &err), ST_OK);
    ck_assert_int_eq(jwt_key_id(pk, kid, &err), ST_OK);
    EVP_PKEY_free(pk);
    ck_assert_int_eq(jwt_sign_rs256(key, kid, claims, &out, &err), ST_OK);
    json_decref(claims);
    return out;
}

static long push_with(const char *tok)
{
    char auth[8192];
    const char *headers[] = {auth, NULL};
    json_t *body = json_pack("{s:s, s:s, s:s, s:i}", "kind", "item", "batchId", "batch_x", "itemId",
                             "0000-00000", "generation", 1);
    long status;

    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", tok ? tok : "");
    json_decref(http_json_call(&s, "POST", s.worker_url, body, tok ? headers : NULL, &status));
    json_decref(body);
    return status;
}

START_TEST(refused_pushes)
{
    long now = (long)time(NULL);
    char *other_key = NULL, *t;
    struct error err;
    const char *email = "dispatcher@local.batchd.invalid";

    ck_assert_int_eq(push_with(NULL), 401);
    t = token(local_key, "https://evil.example/api/batch/worker", email, now, now + 600);
    ck_assert_int_eq(push_with(t), 401);
    free(t);
    t = token(local_key, s.worker_url, email, now - 7200, now - 3600);
    ck_assert_int_eq(push_with(t), 401);
    free(t);
    ck_assert_int_eq(jwt_rsa_generate(2048, &other_key, &err), ST_OK);
    t = token(other_key, s.worker_url, email, now, now + 600);
    ck_assert_int_eq(push_with(t), 401);
    free(t);
    free(other_key);
    t = token(local_key, s.worker_url, "someone@else.invalid", now, now + 600);
    ck_assert_int_eq(push_with(t), 403);
    free(t);
    ck_assert_int_eq(push_with("not.a.token"), 401);
    /* The right token is accepted (the batch does not exist: dropped, 200). */
    t = token(local_key, s.worker_url, email, now, now + 600);
    ck_assert_int_eq(push_with(t), 200);
    free(t);
    ck_assert_int_eq(db_count(&s, "SELECT COUNT(*) FROM items"), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *su = suite_create("e2e_auth");
    TCase *tc = tcase_create("auth");

    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, start, stop);
    tcase_add_test(tc, refused_pushes);
    suite_add_tcase(su, tc);
    return su;
}
