/*
 * png.h - just enough PNG for the fakes: encode an RGB image, decode the
 * 8-bit RGB/RGBA non-interlaced PNGs we produce (and most photos saved as
 * PNG), and draw on the pixels. Used by the provider simulator to return
 * "the input with a visible change" and by the demo to serve real images.
 */
#ifndef FAKES_PNG_H
#define FAKES_PNG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

struct image {
    int width, height;
    uint8_t *rgb; /* width * height * 3 bytes, owned */
};

/* Allocates a width x height image filled with one colour. */
void image_init(struct image *img, int width, int height, uint8_t r, uint8_t g, uint8_t b);
void image_release(struct image *img);

/* Fills a rectangle (clipped to the image). */
void image_fill_rect(struct image *img, int x, int y, int w, int h, uint8_t r, uint8_t g,
                     uint8_t b);

/* Appends the PNG encoding of img to out. */
enum status png_encode(const struct image *img, struct buf *out);

/*
 * Decodes a PNG (8-bit RGB or RGBA, not interlaced, at most 8192x8192).
 * Returns false for anything else or any corruption.
 */
bool png_decode(const uint8_t *data, size_t len, struct image *out);

/* True when data starts with the PNG signature. */
bool png_is_png(const uint8_t *data, size_t len);

/*
 * A demo "room photo": walls, floor and a window whose colours vary with
 * seed, so every demo image differs.
 */
void image_demo_room(struct image *img, int width, int height, unsigned seed);

/* Virtual staging, simulated: draws a sofa, a rug and a plant on img. */
void image_stage(struct image *img, unsigned seed);

#endif
