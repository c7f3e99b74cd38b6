#include "png.h"

#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "core/util.h"

static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

void image_init(struct image *img, int width, int height, uint8_t r, uint8_t g, uint8_t b)
{
    size_t i, n = (size_t)width * (size_t)height;

    img->width = width;
    img->height = height;
    img->rgb = xmalloc(n * 3);
    for (i = 0; i < n; i++) {
        img->rgb[3 * i] = r;
        img->rgb[3 * i + 1] = g;
        img->rgb[3 * i + 2] = b;
    }
}

void image_release(struct image *img)
{
    free(img->rgb);
    memset(img, 0, sizeof(*img));
}

void image_fill_rect(struct image *img, int x, int y, int w, int h, uint8_t r, uint8_t g, uint8_t b)
{
    int i, j;

    for (j = y < 0 ? 0 : y; j < y + h && j < img->height; j++) {
        for (i = x < 0 ? 0 : x; i < x + w && i < img->width; i++) {
            uint8_t *p = img->rgb + ((size_t)j * (size_t)img->width + (size_t)i) * 3;

            p[0] = r;
            p[1] = g;
            p[2] = b;
        }
    }
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static enum status put_chunk(struct buf *out, const char *type, const uint8_t *data, size_t len)
{
    uint8_t head[8], tail[4];
    uLong crc;
    enum status st;

    put_u32(head, (uint32_t)len);
    memcpy(head + 4, type, 4);
    crc = crc32(0, (const Bytef *)type, 4);
    if (len)
        crc = crc32(crc, data, (uInt)len);
    put_u32(tail, (uint32_t)crc);
    if ((st = buf_append(out, head, 8)) != ST_OK || (st = buf_append(out, data, len)) != ST_OK)
        return st;
    return buf_append(out, tail, 4);
}

enum status png_encode(const struct image *img, struct buf *out)
{
    size_t row = (size_t)img->width * 3 + 1, raw_len = row * (size_t)img->height;
    uint8_t ihdr[13], *raw = xmalloc(raw_len);
    uLongf z_len = compressBound((uLong)raw_len);
    uint8_t *z = xmalloc(z_len);
    enum status st;
    int y;

    for (y = 0; y < img->height; y++) {
        raw[(size_t)y * row] = 0; /* filter: none */
        memcpy(raw + (size_t)y * row + 1, img->rgb + (size_t)y * (size_t)img->width * 3, row - 1);
    }
    if (compress2(z, &z_len, raw, (uLong)raw_len, Z_BEST_SPEED) != Z_OK)
        BUG("zlib compress2 failed");
    put_u32(ihdr, (uint32_t)img->width);
    put_u32(ihdr + 4, (uint32_t)img->height);
    ihdr[8] = 8;  /* bit depth */
    ihdr[9] = 2;  /* colour type RGB */
    ihdr[10] = 0; /* deflate */
    ihdr[11] = 0; /* adaptive filtering */
    ihdr[12] = 0; /* no interlace */
    st = buf_append(out, signature, 8);
    if (st == ST_OK)
        st = put_chunk(out, "IHDR", ihdr, sizeof(ihdr));
    if (st == ST_OK)
        st = put_chunk(out, "IDAT", z, z_len);
    if (st == ST_OK)
        st = put_chunk(out, "IEND", NULL, 0);
    free(z);
    free(raw);
    return st;
}

bool png_is_png(const uint8_t *data, size_t len)
{
    return len >= 8 && memcmp(data, signature, 8) == 0;
}

static uint8_t paeth(uint8_t a, uint8_t b, uint8_t c)
{
    int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);

    if (pa <= pb && pa <= pc)
        return a;
    return pb <= pc ? b : c;
}

/* Reverses the per-row filters in place; bpp bytes per pixel. */
static bool unfilter(uint8_t *raw, int width, int height, int bpp)
{
    size_t stride = (size_t)width * (size_t)bpp, row = stride + 1, i;
    int y;

    for (y = 0; y < height; y++) {
        uint8_t *cur = raw + (size_t)y * row + 1;
        uint8_t *prev = y > 0 ? raw + (size_t)(y - 1) * row + 1 : NULL;
        uint8_t filter = cur[-1];

        for (i = 0; i < stride; i++) {
            uint8_t a = i >= (size_t)bpp ? cur[i - (size_t)bpp] : 0;
            uint8_t b = prev ? prev[i] : 0;
            uint8_t c = prev && i >= (size_t)bpp ? prev[i - (size_t)bpp] : 0;

            switch (filter) {
            case 0:
                break;
            case 1:
                cur[i] = (uint8_t)(cur[i] + a);
                break;
            case 2:
                cur[i] = (uint8_t)(cur[i] + b);
                break;
            case 3:
                cur[i] = (uint8_t)(cur[i] + (uint8_t)((a + b) / 2));
                break;
            case 4:
                cur[i] = (uint8_t)(cur[i] + paeth(a, b, c));
                break;
            default:
                return false;
            }
        }
    }
    return true;
}

bool png_decode(const uint8_t *data, size_t len, struct image *out)
{
    size_t pos = 8, raw_len, i;
    uint32_t width = 0, height = 0;
    int bpp = 0;
    struct buf idat;
    uint8_t *raw = NULL;
    uLongf got;
    bool ok = false;

    memset(out, 0, sizeof(*out));
    if (!png_is_png(data, len))
        return false;
    buf_init(&idat, 64 << 20);
    while (pos + 12 <= len) {
        uint32_t n = get_u32(data + pos);
        const uint8_t *type = data + pos + 4, *body = data + pos + 8;

        if (n > len - pos - 12)
            goto out;
        if (memcmp(type, "IHDR", 4) == 0) {
            if (n != 13)
                goto out;
            width = get_u32(body);
            height = get_u32(body + 4);
            if (body[8] != 8 || (body[9] != 2 && body[9] != 6) || body[10] || body[11] || body[12])
                goto out;
            bpp = body[9] == 2 ? 3 : 4;
            if (width == 0 || height == 0 || width > 8192 || height > 8192)
                goto out;
        } else if (memcmp(type, "IDAT", 4) == 0) {
            if (buf_append(&idat, body, n) != ST_OK)
                goto out;
        } else if (memcmp(type, "IEND", 4) == 0) {
            break;
        }
        pos += 12 + n;
    }
    if (!bpp || idat.len == 0)
        goto out;
    raw_len = ((size_t)width * (size_t)bpp + 1) * height;
    raw = xmalloc(raw_len);
    got = (uLongf)raw_len;
    if (uncompress(raw, &got, (const Bytef *)idat.data, (uLong)idat.len) != Z_OK ||
        got != raw_len || !unfilter(raw, (int)width, (int)height, bpp))
        goto out;
    out->width = (int)width;
    out->height = (int)height;
    out->rgb = xmalloc((size_t)width * height * 3);
    for (i = 0; i < (size_t)width * height; i++) {
        size_t y = i / width, x = i % width;
        const uint8_t *px = raw + y * ((size_t)width * (size_t)bpp + 1) + 1 + x * (size_t)bpp;

        memcpy(out->rgb + 3 * i, px, 3);
    }
    ok = true;
out:
    free(raw);
    buf_release(&idat);
    return ok;
}

void image_demo_room(struct image *img, int width, int height, unsigned seed)
{
    uint8_t wr = (uint8_t)(200 + seed * 7 % 50), wg = (uint8_t)(190 + seed * 13 % 60),
            wb = (uint8_t)(170 + seed * 17 % 80);

    image_init(img, width, height, wr, wg, wb);
    /* floor */
    image_fill_rect(img, 0, height * 2 / 3, width, height - height * 2 / 3,
                    (uint8_t)(120 + seed % 60), (uint8_t)(90 + seed % 40), 60);
    /* window */
    image_fill_rect(img, width / 3, height / 6, width / 3, height / 3, 170, 210, 240);
    image_fill_rect(img, width / 2 - 1, height / 6, 3, height / 3, 240, 240, 240);
}

void image_stage(struct image *img, unsigned seed)
{
    int w = img->width, h = img->height;

    /* rug */
    image_fill_rect(img, w / 5, h * 3 / 4, w * 3 / 5, h / 8, (uint8_t)(150 + seed % 80), 40, 50);
    /* sofa: seat, back, arms */
    image_fill_rect(img, w / 4, h * 3 / 5, w / 2, h / 10, 60, 80, (uint8_t)(110 + seed % 100));
    image_fill_rect(img, w / 4, h / 2, w / 2, h / 10, 50, 70, (uint8_t)(100 + seed % 100));
    image_fill_rect(img, w / 4 - w / 20, h / 2, w / 20, h / 5, 45, 65, 95);
    image_fill_rect(img, w * 3 / 4, h / 2, w / 20, h / 5, 45, 65, 95);
    /* plant */
    image_fill_rect(img, w * 7 / 8, h * 3 / 5, w / 30 + 1, h / 6, 110, 70, 40);
    image_fill_rect(img, w * 7 / 8 - w / 30, h / 2, w / 10, h / 10, 40, 140, 60);
}
