#include <string.h>

#include "check_main.h"
#include "core/codec.h"

/* RFC 4648 section 10 vectors. */
static const struct {
    const char *plain, *std, *url;
} vectors[] = {
    {"", "", ""},
    {"f", "Zg==", "Zg"},
    {"fo", "Zm8=", "Zm8"},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg==", "Zm9vYg"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
    {"\xfb\xff", "+/8=", "-_8"},
};

START_TEST(base64_vectors)
{
    struct buf b;

    buf_init(&b, 1024);
    ck_assert_int_eq(base64_encode(&b, vectors[_i].plain, strlen(vectors[_i].plain), B64_STD),
                     ST_OK);
    ck_assert_str_eq(buf_str(&b), vectors[_i].std);
    ck_assert_uint_eq(b.len, base64_encoded_len(strlen(vectors[_i].plain), B64_STD));
    buf_reset(&b);
    ck_assert_int_eq(base64_encode(&b, vectors[_i].plain, strlen(vectors[_i].plain), B64_URL),
                     ST_OK);
    ck_assert_str_eq(buf_str(&b), vectors[_i].url);
    ck_assert_uint_eq(b.len, base64_encoded_len(strlen(vectors[_i].plain), B64_URL));
    buf_reset(&b);
    ck_assert_int_eq(base64_decode(&b, vectors[_i].std, strlen(vectors[_i].std)), ST_OK);
    ck_assert_str_eq(buf_str(&b), vectors[_i].plain);
    buf_reset(&b);
    ck_assert_int_eq(base64_decode(&b, vectors[_i].url, strlen(vectors[_i].url)), ST_OK);
    ck_assert_str_eq(buf_str(&b), vectors[_i].plain);
    buf_release(&b);
}
END_TEST

static const char *bad_base64[] = {"Z", "Zg=", "Zg===", "Zm9v\n", "Zm 9v", "Zh==", "*abc", "Zg=x"};

START_TEST(base64_rejects)
{
    struct buf b;

    buf_init(&b, 1024);
    ck_assert_msg(base64_decode(&b, bad_base64[_i], strlen(bad_base64[_i])) == ST_INVALID,
                  "accepted \"%s\"", bad_base64[_i]);
    buf_release(&b);
}
END_TEST

START_TEST(base64_bound)
{
    struct buf b;

    buf_init(&b, 8);
    ck_assert_int_eq(base64_encode(&b, "foobar", 6, B64_STD), ST_OK);
    ck_assert_int_eq(base64_encode(&b, "x", 1, B64_STD), ST_TOO_LARGE);
    buf_release(&b);
}
END_TEST

START_TEST(digests)
{
    char hex[65];
    uint8_t mac[32];

    sha256_hex("abc", 3, hex);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* RFC 4231 test case 2. */
    hmac_sha256("Jefe", 4, "what do ya want for nothing?", 28, mac);
    hex_encode(hex, mac, 32);
    ck_assert_str_eq(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    ck_assert(mem_equal_ct("abc", "abc", 3));
    ck_assert(!mem_equal_ct("abc", "abd", 3));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("core_codec");
    TCase *tc = tcase_create("codec");

    tcase_add_loop_test(tc, base64_vectors, 0, sizeof(vectors) / sizeof(vectors[0]));
    tcase_add_loop_test(tc, base64_rejects, 0, sizeof(bad_base64) / sizeof(bad_base64[0]));
    tcase_add_test(tc, base64_bound);
    tcase_add_test(tc, digests);
    suite_add_tcase(s, tc);
    return s;
}
