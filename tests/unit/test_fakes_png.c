#include <string.h>

#include "check_main.h"
#include "png.h"

START_TEST(round_trip_and_staging)
{
    struct image room, back, staged;
    struct buf png, png2;

    image_demo_room(&room, 64, 48, 3);
    buf_init(&png, 1 << 20);
    ck_assert_int_eq(png_encode(&room, &png), ST_OK);
    ck_assert(png_is_png((const uint8_t *)png.data, png.len));
    ck_assert(png_decode((const uint8_t *)png.data, png.len, &back));
    ck_assert_int_eq(back.width, 64);
    ck_assert_int_eq(back.height, 48);
    ck_assert_mem_eq(back.rgb, room.rgb, 64 * 48 * 3);
    staged = back;
    image_stage(&staged, 5);
    ck_assert(memcmp(staged.rgb, room.rgb, 64 * 48 * 3) != 0); /* a visible change */
    buf_init(&png2, 1 << 20);
    ck_assert_int_eq(png_encode(&staged, &png2), ST_OK);
    ck_assert(png_decode((const uint8_t *)png2.data, png2.len, &back));
    image_release(&back);
    image_release(&staged);
    image_release(&room);
    buf_release(&png);
    buf_release(&png2);
}
END_TEST

START_TEST(rejects_garbage)
{
    struct image img;
    static const uint8_t junk[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 99};

    ck_assert(!png_decode((const uint8_t *)"GIF89a", 6, &img));
    ck_assert(!png_decode(junk, sizeof(junk), &img));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("fakes_png");
    TCase *tc = tcase_create("png");

    tcase_add_test(tc, round_trip_and_staging);
    tcase_add_test(tc, rejects_garbage);
    suite_add_tcase(s, tc);
    return s;
}
