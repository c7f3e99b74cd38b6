#include "mp4.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* ---- H.264 bitstream ---------------------------------------------------------- */

/* An RBSP being written, bit by bit (MSB first). */
struct bits {
    uint8_t *p;
    size_t len, cap;
    uint32_t acc;
    int n; /* bits in acc */
};

static void bits_byte(struct bits *b, uint8_t v)
{
    if (b->len == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 256;
        b->p = xrealloc(b->p, b->cap);
    }
    b->p[b->len++] = v;
}

static void put_bits(struct bits *b, uint32_t v, int n)
{
    while (n-- > 0) {
        b->acc = b->acc << 1 | ((v >> n) & 1);
        if (++b->n == 8) {
            bits_byte(b, (uint8_t)b->acc);
            b->acc = 0;
            b->n = 0;
        }
    }
}

/* Exp-Golomb ue(v). */
static void put_ue(struct bits *b, uint32_t v)
{
    uint32_t x = v + 1;
    int len = 0;

    while ((x >> len) > 1)
        len++;
    put_bits(b, 0, len);
    put_bits(b, x, len + 1);
}

static void put_se(struct bits *b, int32_t v)
{
    put_ue(b, v > 0 ? (uint32_t)(2 * v - 1) : (uint32_t)(-2 * v));
}

static bool byte_aligned(const struct bits *b)
{
    return b->n == 0;
}

static void put_trailing(struct bits *b)
{
    put_bits(b, 1, 1);
    while (!byte_aligned(b))
        put_bits(b, 0, 1);
}

/* A NAL unit: header byte, then the RBSP with emulation prevention bytes inserted. */
static void nal_escape(const struct bits *rbsp, uint8_t header, struct bits *out)
{
    size_t i;
    int zeros = 0;

    bits_byte(out, header);
    for (i = 0; i < rbsp->len; i++) {
        if (zeros >= 2 && rbsp->p[i] <= 3) {
            bits_byte(out, 3);
            zeros = 0;
        }
        bits_byte(out, rbsp->p[i]);
        zeros = rbsp->p[i] == 0 ? zeros + 1 : 0;
    }
}

#define PROFILE_BASELINE 66
#define CONSTRAINTS      0xc0 /* constraint_set0 and 1: Constrained Baseline */
#define LEVEL            30

static void write_sps(struct bits *nal, int width, int height)
{
    struct bits b = {0};

    put_bits(&b, PROFILE_BASELINE, 8);
    put_bits(&b, CONSTRAINTS, 8);
    put_bits(&b, LEVEL, 8);
    put_ue(&b, 0);                           /* seq_parameter_set_id */
    put_ue(&b, 0);                           /* log2_max_frame_num_minus4 */
    put_ue(&b, 2);                           /* pic_order_cnt_type: output order = decode order */
    put_ue(&b, 1);                           /* max_num_ref_frames */
    put_bits(&b, 0, 1);                      /* gaps_in_frame_num_value_allowed_flag */
    put_ue(&b, (uint32_t)(width / 16 - 1));  /* pic_width_in_mbs_minus1 */
    put_ue(&b, (uint32_t)(height / 16 - 1)); /* pic_height_in_map_units_minus1 */
    put_bits(&b, 1, 1);                      /* frame_mbs_only_flag */
    put_bits(&b, 1, 1);                      /* direct_8x8_inference_flag */
    put_bits(&b, 0, 1);                      /* frame_cropping_flag */
    put_bits(&b, 0, 1);                      /* vui_parameters_present_flag */
    put_trailing(&b);
    nal_escape(&b, 0x67, nal); /* nal_ref_idc 3, type 7 */
    free(b.p);
}

static void write_pps(struct bits *nal)
{
    struct bits b = {0};

    put_ue(&b, 0);      /* pic_parameter_set_id */
    put_ue(&b, 0);      /* seq_parameter_set_id */
    put_bits(&b, 0, 1); /* entropy_coding_mode_flag: CAVLC */
    put_bits(&b, 0, 1); /* bottom_field_pic_order_in_frame_present_flag */
    put_ue(&b, 0);      /* num_slice_groups_minus1 */
    put_ue(&b, 0);      /* num_ref_idx_l0_default_active_minus1 */
    put_ue(&b, 0);      /* num_ref_idx_l1_default_active_minus1 */
    put_bits(&b, 0, 1); /* weighted_pred_flag */
    put_bits(&b, 0, 2); /* weighted_bipred_idc */
    put_se(&b, 0);      /* pic_init_qp_minus26 */
    put_se(&b, 0);      /* pic_init_qs_minus26 */
    put_se(&b, 0);      /* chroma_qp_index_offset */
    put_bits(&b, 0, 1); /* deblocking_filter_control_present_flag */
    put_bits(&b, 0, 1); /* constrained_intra_pred_flag */
    put_bits(&b, 0, 1); /* redundant_pic_cnt_present_flag */
    put_trailing(&b);
    nal_escape(&b, 0x68, nal); /* nal_ref_idc 3, type 8 */
    free(b.p);
}

/* Video-range samples (16..235) never contain the zero bytes start codes are made of. */
static uint8_t luma_at(int x, int y, int width, int frame, unsigned seed)
{
    int bar = (int)((unsigned)(frame * 16) + seed * 7u) % (width > 16 ? width : 16);

    if (x >= bar && x < bar + 8)
        return 220;
    return (uint8_t)(40 + (x * 120) / width + (y % 16));
}

/* One IDR picture, every macroblock I_PCM. */
static void write_idr(struct bits *nal, int width, int height, int frame, unsigned seed)
{
    struct bits b = {0};
    int mbx, mby, x, y;

    put_ue(&b, 0);                         /* first_mb_in_slice */
    put_ue(&b, 7);                         /* slice_type: I, all slices */
    put_ue(&b, 0);                         /* pic_parameter_set_id */
    put_bits(&b, 0, 4);                    /* frame_num (0 in an IDR picture) */
    put_ue(&b, (uint32_t)(frame % 65536)); /* idr_pic_id: differs between neighbours */
    put_bits(&b, 0, 1);                    /* no_output_of_prior_pics_flag */
    put_bits(&b, 0, 1);                    /* long_term_reference_flag */
    put_se(&b, 0);                         /* slice_qp_delta */
    for (mby = 0; mby < height / 16; mby++) {
        for (mbx = 0; mbx < width / 16; mbx++) {
            put_ue(&b, 25); /* mb_type I_PCM */
            while (!byte_aligned(&b))
                put_bits(&b, 0, 1); /* pcm_alignment_zero_bit */
            for (y = 0; y < 16; y++)
                for (x = 0; x < 16; x++)
                    put_bits(&b, luma_at(mbx * 16 + x, mby * 16 + y, width, frame, seed), 8);
            for (y = 0; y < 64; y++) /* Cb, 8x8 */
                put_bits(&b, (uint8_t)(120 + (seed % 16)), 8);
            for (y = 0; y < 64; y++) /* Cr, 8x8 */
                put_bits(&b, (uint8_t)(128 + (frame % 8)), 8);
        }
    }
    put_trailing(&b);
    nal_escape(&b, 0x65, nal); /* nal_ref_idc 3, type 5: IDR */
    free(b.p);
}

/* ---- boxes -------------------------------------------------------------------- */

struct w {
    struct buf *out;
    enum status st;
};

static void w_bytes(struct w *w, const void *p, size_t n)
{
    if (w->st == ST_OK)
        w->st = buf_append(w->out, p, n);
}

static void w_u8(struct w *w, uint32_t v)
{
    uint8_t b = (uint8_t)v;

    w_bytes(w, &b, 1);
}

static void w_u16(struct w *w, uint32_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};

    w_bytes(w, b, 2);
}

static void w_u32(struct w *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

    w_bytes(w, b, 4);
}

static void w_zeros(struct w *w, size_t n)
{
    while (n-- > 0)
        w_u8(w, 0);
}

/* Starts a box; returns where its size goes. */
static size_t box_begin(struct w *w, const char *type)
{
    size_t at = w->out->len;

    w_u32(w, 0);
    w_bytes(w, type, 4);
    return at;
}

static size_t full_box_begin(struct w *w, const char *type, uint32_t version_flags)
{
    size_t at = box_begin(w, type);

    w_u32(w, version_flags);
    return at;
}

static void box_end(struct w *w, size_t at)
{
    size_t size = w->out->len - at;
    uint8_t *p;

    if (w->st != ST_OK)
        return;
    p = (uint8_t *)w->out->data + at;
    p[0] = (uint8_t)(size >> 24);
    p[1] = (uint8_t)(size >> 16);
    p[2] = (uint8_t)(size >> 8);
    p[3] = (uint8_t)size;
}

static void w_matrix(struct w *w)
{
    static const uint32_t unity[9] = {0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000};
    size_t i;

    for (i = 0; i < 9; i++)
        w_u32(w, unity[i]);
}

#define TIMESCALE 1000

/* The moov box; samples[i] are the sizes, first_offset where the first sample starts. */
static void write_moov(struct w *w, int width, int height, const struct bits *sps,
                       const struct bits *pps, const uint32_t *sizes, int n, uint32_t first_offset)
{
    uint32_t duration = (uint32_t)n * TIMESCALE;
    size_t moov, trak, mdia, minf, dinf, stbl, stsd, avc1, avcc, at;
    char compressor[32];
    int i;

    moov = box_begin(w, "moov");
    at = full_box_begin(w, "mvhd", 0);
    w_u32(w, 0); /* creation_time */
    w_u32(w, 0); /* modification_time */
    w_u32(w, TIMESCALE);
    w_u32(w, duration);
    w_u32(w, 0x00010000); /* rate 1.0 */
    w_u16(w, 0x0100);     /* volume 1.0 */
    w_zeros(w, 2 + 8);    /* reserved */
    w_matrix(w);
    w_zeros(w, 24); /* pre_defined */
    w_u32(w, 2);    /* next_track_ID */
    box_end(w, at);

    trak = box_begin(w, "trak");
    at = full_box_begin(w, "tkhd", 3); /* enabled, in movie */
    w_u32(w, 0);
    w_u32(w, 0);
    w_u32(w, 1); /* track_ID */
    w_u32(w, 0);
    w_u32(w, duration);
    w_zeros(w, 8);
    w_u16(w, 0); /* layer */
    w_u16(w, 0); /* alternate_group */
    w_u16(w, 0); /* volume: video */
    w_u16(w, 0);
    w_matrix(w);
    w_u32(w, (uint32_t)width << 16);
    w_u32(w, (uint32_t)height << 16);
    box_end(w, at);

    mdia = box_begin(w, "mdia");
    at = full_box_begin(w, "mdhd", 0);
    w_u32(w, 0);
    w_u32(w, 0);
    w_u32(w, TIMESCALE);
    w_u32(w, duration);
    w_u16(w, 0x55c4); /* "und" */
    w_u16(w, 0);
    box_end(w, at);
    at = full_box_begin(w, "hdlr", 0);
    w_u32(w, 0);
    w_bytes(w, "vide", 4);
    w_zeros(w, 12);
    w_bytes(w, "VideoHandler", 13);
    box_end(w, at);

    minf = box_begin(w, "minf");
    at = full_box_begin(w, "vmhd", 1);
    w_zeros(w, 8); /* graphicsmode, opcolor */
    box_end(w, at);
    dinf = box_begin(w, "dinf");
    at = full_box_begin(w, "dref", 0);
    w_u32(w, 1);
    box_end(w, full_box_begin(w, "url ", 1)); /* media in this file */
    box_end(w, at);
    box_end(w, dinf);

    stbl = box_begin(w, "stbl");
    stsd = full_box_begin(w, "stsd", 0);
    w_u32(w, 1);
    avc1 = box_begin(w, "avc1");
    w_zeros(w, 6); /* reserved */
    w_u16(w, 1);   /* data_reference_index */
    w_zeros(w, 16);
    w_u16(w, (uint32_t)width);
    w_u16(w, (uint32_t)height);
    w_u32(w, 0x00480000); /* 72 dpi */
    w_u32(w, 0x00480000);
    w_u32(w, 0);
    w_u16(w, 1); /* frame_count */
    memset(compressor, 0, sizeof(compressor));
    compressor[0] = 12;
    memcpy(compressor + 1, "provider-sim", 12);
    w_bytes(w, compressor, sizeof(compressor));
    w_u16(w, 0x0018); /* depth */
    w_u16(w, 0xffff); /* pre_defined -1 */
    avcc = box_begin(w, "avcC");
    w_u8(w, 1); /* configurationVersion */
    w_u8(w, PROFILE_BASELINE);
    w_u8(w, CONSTRAINTS);
    w_u8(w, LEVEL);
    w_u8(w, 0xff); /* lengthSizeMinusOne 3 */
    w_u8(w, 0xe1); /* one SPS */
    w_u16(w, (uint32_t)sps->len);
    w_bytes(w, sps->p, sps->len);
    w_u8(w, 1); /* one PPS */
    w_u16(w, (uint32_t)pps->len);
    w_bytes(w, pps->p, pps->len);
    box_end(w, avcc);
    box_end(w, avc1);
    box_end(w, stsd);

    at = full_box_begin(w, "stts", 0);
    w_u32(w, 1);
    w_u32(w, (uint32_t)n);
    w_u32(w, TIMESCALE); /* one frame a second */
    box_end(w, at);
    at = full_box_begin(w, "stsc", 0);
    w_u32(w, 1);
    w_u32(w, 1);
    w_u32(w, (uint32_t)n); /* every sample in one chunk */
    w_u32(w, 1);
    box_end(w, at);
    at = full_box_begin(w, "stsz", 0);
    w_u32(w, 0);
    w_u32(w, (uint32_t)n);
    for (i = 0; i < n; i++)
        w_u32(w, sizes[i]);
    box_end(w, at);
    at = full_box_begin(w, "stco", 0);
    w_u32(w, 1);
    w_u32(w, first_offset);
    box_end(w, at);
    box_end(w, stbl);
    box_end(w, minf);
    box_end(w, mdia);
    box_end(w, trak);
    box_end(w, moov);
}

enum status mp4_build(struct buf *out, int width, int height, int seconds, unsigned seed)
{
    struct bits sps = {0}, pps = {0}, mdat = {0};
    uint32_t sizes[MP4_SECONDS_MAX];
    struct buf probe;
    struct w w = {out, ST_OK}, pw;
    size_t start = out->len, ftyp, moov_len, at;
    int i;

    if (width < 16 || height < 16 || width > MP4_SIDE_MAX || height > MP4_SIDE_MAX || width % 16 ||
        height % 16 || seconds < 1 || seconds > MP4_SECONDS_MAX)
        return ST_INVALID;
    write_sps(&sps, width, height);
    write_pps(&pps);
    for (i = 0; i < seconds; i++) {
        struct bits nal = {0};

        write_idr(&nal, width, height, i, seed);
        /* Samples are NAL units with 4-byte lengths (avcC lengthSizeMinusOne 3). */
        bits_byte(&mdat, (uint8_t)(nal.len >> 24));
        bits_byte(&mdat, (uint8_t)(nal.len >> 16));
        bits_byte(&mdat, (uint8_t)(nal.len >> 8));
        bits_byte(&mdat, (uint8_t)nal.len);
        for (size_t k = 0; k < nal.len; k++)
            bits_byte(&mdat, nal.p[k]);
        sizes[i] = (uint32_t)(nal.len + 4);
        free(nal.p);
    }

    ftyp = box_begin(&w, "ftyp");
    w_bytes(&w, "isom", 4);
    w_u32(&w, 0x200);
    w_bytes(&w, "isomiso2avc1mp41", 16);
    box_end(&w, ftyp);

    /* The moov's size does not depend on the offset it holds: measure it once. */
    buf_init(&probe, (size_t)1 << 24);
    pw.out = &probe;
    pw.st = ST_OK;
    write_moov(&pw, width, height, &sps, &pps, sizes, seconds, 0);
    moov_len = probe.len;
    buf_release(&probe);
    write_moov(&w, width, height, &sps, &pps, sizes, seconds,
               (uint32_t)(out->len - start + moov_len + 8));

    at = box_begin(&w, "mdat");
    w_bytes(&w, mdat.p, mdat.len);
    box_end(&w, at);
    free(sps.p);
    free(pps.p);
    free(mdat.p);
    if (w.st != ST_OK)
        out->len = start;
    return w.st;
}

/* ---- parsing ------------------------------------------------------------------ */

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

struct parse {
    struct mp4_info *info;
    const uint8_t *base;
    size_t mdat_start, mdat_end; /* payload */
    uint64_t chunk_offset;
    uint64_t samples_bytes;
    bool in_first_track;
    bool saw_stco, saw_stsz;
};

static bool is_container(const char *t)
{
    static const char *const c[] = {"moov", "trak", "mdia", "minf", "stbl", "dinf", "edts"};
    size_t i;

    for (i = 0; i < ARRAY_SIZE(c); i++)
        if (memcmp(t, c[i], 4) == 0)
            return true;
    return false;
}

static bool walk(struct parse *ps, size_t from, size_t to, int depth);

static bool leaf(struct parse *ps, const char *type, const uint8_t *p, size_t n, size_t payload_at)
{
    struct mp4_info *in = ps->info;
    uint32_t i, count;

    if (memcmp(type, "mdat", 4) == 0) {
        in->has_mdat = true;
        ps->mdat_start = payload_at;
        ps->mdat_end = payload_at + n;
        return true;
    }
    if (memcmp(type, "mvhd", 4) == 0) {
        if (n < 4)
            return false;
        if (p[0] == 1 && n >= 32) {
            in->timescale = rd32(p + 20);
            in->duration = rd64(p + 24);
        } else if (n >= 20) {
            in->timescale = rd32(p + 12);
            in->duration = rd32(p + 16);
        } else {
            return false;
        }
        return true;
    }
    if (!ps->in_first_track)
        return true;
    if (memcmp(type, "tkhd", 4) == 0 && n >= 84) {
        size_t off = p[0] == 1 ? 88 : 76;

        if (n >= off + 8) {
            in->width = (int)(rd32(p + off) >> 16);
            in->height = (int)(rd32(p + off + 4) >> 16);
        }
    } else if (memcmp(type, "hdlr", 4) == 0 && n >= 12) {
        memcpy(in->handler, p + 8, 4);
        in->handler[4] = '\0';
    } else if (memcmp(type, "stsd", 4) == 0 && n >= 16) {
        uint32_t esize = rd32(p + 8);

        memcpy(in->codec, p + 12, 4);
        in->codec[4] = '\0';
        /* A visual sample entry is 78 bytes before its child boxes (avcC). */
        if (esize >= 8 + 78 + 8 && 8 + esize <= n)
            in->has_avcc = memcmp(p + 8 + 8 + 78 + 4, "avcC", 4) == 0;
    } else if (memcmp(type, "stsz", 4) == 0 && n >= 12) {
        uint32_t size = rd32(p + 4);

        count = rd32(p + 8);
        in->samples = count;
        ps->saw_stsz = true;
        if (size != 0) {
            ps->samples_bytes = (uint64_t)size * count;
        } else {
            if ((uint64_t)count * 4 > n - 12)
                return false;
            for (i = 0; i < count; i++)
                ps->samples_bytes += rd32(p + 12 + 4 * i);
        }
    } else if (memcmp(type, "stco", 4) == 0 && n >= 12) {
        count = rd32(p + 4);
        if (count >= 1 && n >= 12) {
            ps->chunk_offset = rd32(p + 8);
            ps->saw_stco = true;
        }
    }
    return true;
}

static bool walk(struct parse *ps, size_t from, size_t to, int depth)
{
    size_t at = from;

    if (depth > 16)
        return false;
    while (at < to) {
        uint64_t size;
        size_t header = 8;
        char type[5];

        if (to - at < 8)
            return false;
        size = rd32(ps->base + at);
        memcpy(type, ps->base + at + 4, 4);
        type[4] = '\0';
        if (size == 1) {
            if (to - at < 16)
                return false;
            size = rd64(ps->base + at + 8);
            header = 16;
        } else if (size == 0) {
            size = to - at;
        }
        if (size < header || size > to - at)
            return false;
        if (depth == 0 && at == 0 && strcmp(type, "ftyp") != 0)
            return false;
        if (strcmp(type, "ftyp") == 0 && depth == 0) {
            size_t k;

            if (size < 16)
                return false;
            memcpy(ps->info->major_brand, ps->base + at + 8, 4);
            ps->info->major_brand[4] = '\0';
            for (k = at + 16; k + 4 <= at + size; k += 4)
                if (memcmp(ps->base + k, "mp41", 4) == 0 || memcmp(ps->base + k, "mp42", 4) == 0 ||
                    memcmp(ps->base + k, "isom", 4) == 0)
                    ps->info->compatible_mp41 = true;
        } else if (is_container(type)) {
            if (strcmp(type, "moov") == 0)
                ps->info->has_moov = true;
            if (strcmp(type, "trak") == 0) {
                ps->info->tracks++;
                ps->in_first_track = ps->info->tracks == 1;
            }
            if (!walk(ps, at + header, at + (size_t)size, depth + 1))
                return false;
            if (strcmp(type, "trak") == 0)
                ps->in_first_track = false;
        } else if (!leaf(ps, type, ps->base + at + header, (size_t)size - header, at + header)) {
            return false;
        }
        at += (size_t)size;
    }
    return true;
}

bool mp4_parse(const void *data, size_t len, struct mp4_info *info)
{
    struct parse ps;

    ASSERT(info);
    memset(info, 0, sizeof(*info));
    if (!data || len < 16)
        return false;
    memset(&ps, 0, sizeof(ps));
    ps.info = info;
    ps.base = data;
    if (!walk(&ps, 0, len, 0))
        return false;
    info->samples_in_mdat = info->has_mdat && ps.saw_stco && ps.saw_stsz &&
                            ps.chunk_offset >= ps.mdat_start &&
                            ps.chunk_offset + ps.samples_bytes <= ps.mdat_end;
    return info->major_brand[0] != '\0';
}
