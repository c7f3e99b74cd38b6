/*
 * The full flow with BACKEND=gcp: creator and worker against Google's
 * Firestore emulator (behind a proxy injecting ABORTED and UNAVAILABLE),
 * fake Cloud Tasks really dispatching the pushes with Google-style ID
 * tokens (some delivered twice), and a fake metadata server for tokens.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "core/json.h"
#include "harness.h"

START_TEST(hundred_images_with_faults_and_duplicates)
{
    static const char *const proxy[] = {"PROXY_ABORT_RATE=0.1", "PROXY_UNAVAILABLE_RATE=0.05",
                                        NULL};
    static const char *const tasks[] = {"FAKE_DUPLICATE_RATE=0.2", NULL};
    struct stack_opts o = {.gcp = true, .proxy_env = proxy, .tasks_env = tasks};
    struct stack s;
    long status;
    const char *id;
    json_t *doc, *stats;
    char url[128];

    stack_start(&s, &o);
    id = create_demo_batch(&s, 100, NULL, &status);
    ck_assert_int_eq(status, 201);
    doc = wait_batch(&s, id, 300);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed");
    ck_assert_int_eq(jint(doc, "processedImages"), 100);
    ck_assert_int_eq(jint(doc, "successCount"), 100);
    ck_assert_int_eq(jint(doc, "failureCount"), 0);
    assert_results_are_images(&s, doc);
    json_decref(doc);
    /* The faults really happened. */
    snprintf(url, sizeof(url), "%s/proxy/stats", s.proxy_url);
    stats = http_json_call(&s, "GET", url, NULL, NULL, &status);
    ck_assert_int_eq(status, 200);
    {
        char *text = json_dumps(stats, JSON_COMPACT);

        fprintf(stderr, "proxy stats: %s\n", text);
        free(text);
    }
    json_decref(stats);
    snprintf(url, sizeof(url), "%s/fake/stats", s.tasks_url);
    stats = http_json_call(&s, "GET", url, NULL, NULL, &status);
    ck_assert_int_eq(status, 200);
    {
        char *text = json_dumps(stats, JSON_COMPACT);

        fprintf(stderr, "cloud tasks stats: %s\n", text);
        free(text);
    }
    json_decref(stats);
    stack_stop(&s);
}
END_TEST

static Suite *suite(void)
{
    Suite *su;
    TCase *tc;

    if (!stack_gcp_available()) {
        if (getenv("REQUIRE_FIRESTORE_EMULATOR") &&
            strcmp(getenv("REQUIRE_FIRESTORE_EMULATOR"), "1") == 0) {
            fprintf(stderr, "FIRESTORE_EMULATOR_HOST is not set but the emulator is required\n");
            exit(1);
        }
        printf("skipped: FIRESTORE_EMULATOR_HOST not set\n");
        exit(77);
    }
    su = suite_create("e2e_gcp");
    tc = tcase_create("gcp");

    tcase_set_timeout(tc, 400);
    tcase_add_test(tc, hundred_images_with_faults_and_duplicates);
    suite_add_tcase(su, tc);
    return su;
}
