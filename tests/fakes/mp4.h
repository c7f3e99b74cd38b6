/*
 * mp4.h - a tiny but real MP4 for the provider simulator (there is no
 * ffmpeg here), and a box parser the tests use to check what they got.
 *
 * mp4_build() writes an ISO base media file (ISO/IEC 14496-12, brand
 * "isom", compatible "iso2", "avc1", "mp41"): ftyp, then moov (mvhd, one
 * video trak: tkhd, mdia with mdhd, hdlr "vide", minf with vmhd, dinf/dref
 * and stbl: stsd with an avc1 entry and its avcC, stts, stsc, stsz, stco),
 * then mdat. The track is H.264 Constrained Baseline at one frame per
 * second, every frame an IDR picture whose macroblocks are all I_PCM (raw
 * samples, so no entropy coder is needed): a moving bar over a gradient.
 * `file` calls it "ISO Media, MP4 Base Media v1"; H.264 decoders play it.
 */
#ifndef FAKES_MP4_H
#define FAKES_MP4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/error.h"

#define MP4_SIDE_MAX    1024
#define MP4_SECONDS_MAX 60

/*
 * Appends the MP4 to out: width and height are multiples of 16 in
 * 16..MP4_SIDE_MAX, seconds in 1..MP4_SECONDS_MAX (one frame each), seed
 * varies the picture. ST_INVALID for bad sizes, ST_TOO_LARGE past out's
 * bound.
 */
enum status mp4_build(struct buf *out, int width, int height, int seconds, unsigned seed);

/* What mp4_parse() found. */
struct mp4_info {
    char major_brand[5];
    bool compatible_mp41; /* "mp41", "mp42" or "isom" among the compatible brands */
    bool has_moov, has_mdat;
    int tracks;
    uint32_t timescale; /* mvhd */
    uint64_t duration;  /* mvhd, in timescale units */
    int width, height;  /* the first video track's tkhd, whole pixels */
    char handler[5];    /* the first track's hdlr type: "vide" */
    char codec[5];      /* the first sample entry: "avc1" */
    bool has_avcc;
    uint32_t samples;     /* stsz sample count of the first track */
    bool samples_in_mdat; /* stco/stsz point inside the mdat payload */
};

/*
 * Walks the box tree of an MP4 (sizes checked against their parents, 64-bit
 * sizes and size 0 understood) and fills info. False when the structure is
 * broken or the file does not start with ftyp.
 */
bool mp4_parse(const void *data, size_t len, struct mp4_info *info);

#endif
