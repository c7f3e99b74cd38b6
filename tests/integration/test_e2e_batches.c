/* Fast Track end to end: 10 and 100 images through the real binaries. */
#include <string.h>

#include "check_main.h"
#include "core/json.h"
#include "harness.h"

static void run(int n)
{
    struct stack s;
    long status;
    const char *id;
    json_t *doc;

    stack_start(&s, NULL);
    id = create_demo_batch(&s, n, NULL, &status);
    ck_assert_int_eq(status, 201);
    doc = wait_batch(&s, id, 120);
    ck_assert_str_eq(json_str_or(doc, "status", ""), "completed");
    ck_assert_int_eq(jint(doc, "totalImages"), n);
    ck_assert_int_eq(jint(doc, "processedImages"), n);
    ck_assert_int_eq(jint(doc, "successCount"), n);
    ck_assert_int_eq(jint(doc, "failureCount"), 0);
    ck_assert_int_eq(jint(doc, "progress"), 100);
    ck_assert(json_is_null(json_object_get(doc, "estimatedCompletion")));
    assert_results_are_images(&s, doc);
    json_decref(doc);
    stack_stop(&s);
}

START_TEST(ten_images)
{
    run(10);
}
END_TEST

START_TEST(hundred_images)
{
    run(100);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("e2e_batches");
    TCase *tc = tcase_create("batches");

    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, ten_images);
    tcase_add_test(tc, hundred_images);
    suite_add_tcase(s, tc);
    return s;
}
