/*
 * Production authentication: API keys decide the user, a caller sees only
 * its own batches, and per-user rate limits answer 429 with Retry-After.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check_main.h"
#include "core/json.h"
#include "core/timeutil.h"
#include "harness.h"

static struct stack s;

static void start(void)
{
    static const char *const creator[] = {"AUTH=apikey", "RATE_LIMIT_IMAGES_PER_MIN=5",
                                          "RATE_LIMIT_BATCHES_PER_MIN=3", NULL};
    struct stack_opts o = {.creator_env = creator, .no_sim = true};

    stack_start(&s, &o);
}

static void stop(void)
{
    stack_stop(&s);
}

/* creator --create-api-key USER, with the stack's data directory. */
static char *new_key(const char *user)
{
    char cmd[1024], out[128];
    FILE *p;
    size_t n;

    snprintf(cmd, sizeof(cmd),
             "env DATA_DIR=%s/data QUEUE_CONFIG=%s/queue.json %s "
             "--create-api-key %s it",
             s.dir, s.dir, CREATOR_BIN, user);
    p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    n = fread(out, 1, sizeof(out) - 1, p);
    ck_assert_int_eq(WEXITSTATUS(pclose(p)), 0);
    out[n] = '\0';
    out[strcspn(out, "\n")] = '\0';
    ck_assert(strncmp(out, "bk_", 3) == 0);
    return strdup(out);
}

static json_t *call(const char *method, const char *path, const char *key, json_t *body,
                    long *status)
{
    char url[512], auth[256];
    const char *headers[] = {auth, NULL};

    snprintf(url, sizeof(url), "%s%s", s.creator_url, path);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", key ? key : "");
    return http_json_call(&s, method, url, body, key ? headers : NULL, status);
}

static json_t *one_image(const char *user)
{
    json_t *b = json_pack("{s:[s]}", "images", "https://a.example/1.jpg");

    if (user)
        json_object_set_new(b, "userId", json_string(user));
    return b;
}

START_TEST(keys_decide_the_user_and_hide_others)
{
    char *a = new_key("crm-a"), *b = new_key("crm-b"), path[256], id[128];
    json_t *body = one_image(NULL), *res;
    long status;

    res = call("POST", "/api/batch/create", NULL, body, &status);
    ck_assert_int_eq(status, 401);
    ck_assert_str_eq(json_str_or(res, "code", ""), "api_key_required");
    json_decref(res);
    res = call("POST", "/api/batch/create", "bk_wrong", body, &status);
    ck_assert_int_eq(status, 401);
    ck_assert_str_eq(json_str_or(res, "code", ""), "invalid_api_key");
    json_decref(res);
    res = call("POST", "/api/batch/create", a, body, &status); /* no userId: the key's */
    ck_assert_int_eq(status, 201);
    snprintf(id, sizeof(id), "%s", json_str_or(res, "batchId", ""));
    json_decref(res);
    json_decref(body);
    body = one_image("crm-b");
    res = call("POST", "/api/batch/create", a, body, &status);
    ck_assert_int_eq(status, 403);
    ck_assert_str_eq(json_str_or(res, "code", ""), "user_mismatch");
    json_decref(res);
    json_decref(body);

    snprintf(path, sizeof(path), "/api/batch/status/%s", id);
    res = call("GET", path, a, NULL, &status);
    ck_assert_int_eq(status, 200);
    ck_assert_str_eq(json_str_or(res, "userId", ""), "crm-a");
    json_decref(res);
    res = call("GET", path, b, NULL, &status); /* someone else's batch does not exist */
    ck_assert_int_eq(status, 404);
    json_decref(res);
    snprintf(path, sizeof(path), "/api/batch/%s/cancel", id);
    json_decref(call("POST", path, b, NULL, &status));
    ck_assert_int_eq(status, 404);
    json_decref(call("POST", path, a, NULL, &status));
    ck_assert_int_eq(status, 200);
    res = call("GET", "/api/batch?userId=crm-b", a, NULL, &status); /* the key wins */
    ck_assert_int_eq(status, 200);
    ck_assert_uint_eq(json_array_size(json_object_get(res, "batches")), 1);
    json_decref(res);
    free(a);
    free(b);
}
END_TEST

START_TEST(rate_limits_per_user)
{
    char *c = new_key("crm-c");
    json_t *big = json_pack("{s:[s,s,s,s,s,s]}", "images", "https://a.example/1.jpg",
                            "https://a.example/2.jpg", "https://a.example/3.jpg",
                            "https://a.example/4.jpg", "https://a.example/5.jpg",
                            "https://a.example/6.jpg"),
           *res;
    long status;
    int i, created = 0, limited = 0;

    res = call("POST", "/api/batch/create", c, big, &status); /* 6 images > 5 per minute */
    ck_assert_int_eq(status, 429);
    ck_assert_str_eq(json_str_or(res, "code", ""), "rate_limited");
    json_decref(res);
    json_decref(big);
    /* Stay inside one minute window, so the count is deterministic. */
    while (time_now_us() / 1000000 % 60 > 50)
        time_sleep_ms(500);
    for (i = 0; i < 4; i++) {
        json_t *b = one_image(NULL);

        res = call("POST", "/api/batch/create", c, b, &status);
        json_decref(b);
        created += status == 201;
        if (status == 429) {
            limited++;
            ck_assert_str_eq(json_str_or(res, "code", ""), "rate_limited");
        }
        json_decref(res);
    }
    /* The refused batch of 6 gave its count back: 3 batches per minute pass, the 4th not. */
    ck_assert_int_eq(created, 3);
    ck_assert_int_eq(limited, 1);
    free(c);
}
END_TEST

static Suite *suite(void)
{
    Suite *su = suite_create("e2e_apikeys");
    TCase *tc = tcase_create("apikeys");

    tcase_set_timeout(tc, 180);
    tcase_add_unchecked_fixture(tc, start, stop);
    tcase_add_test(tc, keys_decide_the_user_and_hide_others);
    tcase_add_test(tc, rate_limits_per_user);
    suite_add_tcase(su, tc);
    return su;
}
