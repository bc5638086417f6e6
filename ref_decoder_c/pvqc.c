/*
 * pvqc.c - the C reference decoder of the pvqc format, version 1.2.
 *
 * Read this file beside the specification: spec/pvqc.md (sections 1-4, 6-10),
 * spec/coding-rans.md (4.3),
 * spec/transforms.md (section 5), spec/codecs/pvq.md with spec/codecs/pvq-enumeration.md
 * (section 6.2), spec/codecs/trellis.md (6.3), spec/codecs/lattice.md (6.4) and
 * spec/codecs/pvqvr.md (6.5), spec/codecs/ecsq.md (6.6), spec/codecs/ectcq.md (6.7) and
 * spec/codecs/eclattice.md (6.8). Every function names the section it
 * implements and quotes the rule it follows. The order of the file is the order of
 * the specification:
 *
 *   0.    the handle, allocation, errors
 *   1.1   little-endian fields, the bounds-checked reader, UTF-8
 *   2     the file header (2.1, 2.2) and CRC-32 (2.3)
 *   3     the header block: metadata (3.2), tensor entries (3.3), payload entries (3.6)
 *   4.2   the raw payload coding
 *   4.3   the rans payload coding: header (4.3.1), coder (4.3.2), symbols (4.3.3), the
 *         operation order (4.3.4); decoded into the raw coding's bit string
 *   5     transforms: identity, the randomized Hadamard transform (transforms.md 5.3)
 *   6     codecs: raw (6.1), PVQ (6.2 and its enumeration), pvqvr (6.5, beside PVQ),
 *         trellis (6.3), lattice (6.4), ecsq (6.6), ectcq (6.7), eclattice (6.8)
 *   7     the payload layout (7.1) and the decoding procedure (7.3), with the
 *         rounding to a storage dtype that its step 4 uses (10.3)
 *   API   the functions of pvqc.h
 *
 * Arithmetic: build with -ffp-contract=off and without -ffast-math (spec 10.1). Every
 * float expression below is one IEEE binary32 operation whose result is stored in a
 * float; there is no reassociation and no fused multiply-add.
 *
 * Bounds: every read of the file goes through a `reader` (1.1) whose position can
 * never pass its end, or through a payload whose extent was checked against the file
 * (7.1) before any of its bytes are read. Sizes are computed with checked arithmetic,
 * and the limits of section 8 are checked before anything is allocated for them.
 */
#include "pvqc.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "pvqc.c needs FLT_EVAL_METHOD == 0 (no excess precision; on 32-bit x86 use -msse2 -mfpmath=sse): spec 10.1"
#endif

/* ---- section 8: limits ------------------------------------------------------------- */

#define FILE_HEADER_SIZE 32u
#define PAYLOAD_ALIGNMENT 64u
#define MAX_HEADER_SIZE 268435456u          /* 256 MiB */
#define MAX_FILE_SIZE (1ull << 50)
#define MAX_METADATA_ENTRIES 65535u
#define MAX_KEY_BYTES 1024u
#define MAX_VALUE_BYTES (16u * 1024u * 1024u)
#define MAX_TENSORS (1u << 20)
#define MAX_NAME_BYTES 4096u
#define MAX_RANK 8u
#define MAX_DIM (1ull << 40)
#define MAX_NUMEL (1ull << 48)
#define MAX_PAYLOADS 16u
#define MAX_BLOCK 65536u                    /* Hadamard block order (5.3.1) */
#define MAX_BASE_ORDER 256u                 /* base orders h <= 256 (5.3.2) */
#define PVQ_MAX_D 256u
#define PVQ_MAX_K 4096u
#define PVQ_MAX_GAIN_BITS 8u
#define PVQ_MAX_INDEX_BITS 1024u

static const uint8_t PVQC_MAGIC[8] = {0x89, 0x50, 0x56, 0x51, 0x43, 0x0D, 0x0A, 0x1A};

/* =====================================================================================
 * 0. The handle, allocation, errors
 * ===================================================================================== */

/* One stream of a tensor (section 4): `count` symbols of `width` bits. */
typedef struct stream_spec {
    const char *name;
    uint64_t count;
    unsigned width;
} stream_spec;

/* A stream in the raw coding's bit string (4.2): for coding 0 the payload itself, for
 * coding 1 (rans) the symbols decoded into such a string. */
typedef struct stream_view {
    const uint8_t *bytes;
    uint64_t length;    /* bytes: ceil(count * width / 8) (raw payloads: checked against the file) */
    uint64_t count;
    unsigned width;
    uint64_t base;      /* the first symbol in `bytes` (a rans stream decoded for a row range) */
} stream_view;

/* The decoded rans streams of one tensor (views of raw payloads are not kept here). */
typedef struct stream_set {
    const struct tensor_rec *t;
    uint8_t *buf[MAX_PAYLOADS];
    stream_view view[MAX_PAYLOADS];
    unsigned char held[MAX_PAYLOADS];
    uint64_t first[MAX_PAYLOADS], last[MAX_PAYLOADS]; /* the symbols held: [first, last) */
} stream_set;

/* A PayloadEntry (3.6) with the stream the codec puts at its position. */
typedef struct payload_rec {
    unsigned coding;
    uint64_t offset, length;
    uint32_t crc;
    stream_spec stream;
} payload_rec;

struct codec_def;
struct tensor_rec;

/* The walk through one row of a codec whose rows are walks (ectcq 6.7, eclattice 6.8):
 * where the row's symbols start in its two counted stream families (the prefix sums of
 * the row-count streams), where the walk stands in them, and the trellis state. */
typedef struct ec_cursor {
    uint64_t start[2];
    uint64_t pos[2];
    unsigned state;
} ec_cursor;

/* Per handle: one prefix sum of the row-count streams (row `row` of tensor `t` starts at
 * `start`), and the cursors of rows [r0, r1) of tensor `ct` at column `col`, so that the
 * column strips of decode_rows_rht resume the walks instead of restarting them. */
typedef struct ec_rows {
    const struct tensor_rec *t;
    uint64_t row, start[2];
    const struct tensor_rec *ct;
    uint64_t r0, r1, col, cap;
    ec_cursor *cur;
} ec_rows;

/* A TensorEntry (3.3): the raw directory fields, then what parsing its blocks gave. */
typedef struct tensor_rec {
    const uint8_t *name_bytes;
    size_t name_len;
    char *name;                     /* NUL-terminated copy (in the handle's name arena) */
    unsigned dtype, rank;
    const uint8_t *shape_bytes;     /* rank x u64 */
    uint64_t shape[MAX_RANK];
    uint64_t numel, rows, cols;
    unsigned transform_id;
    const uint8_t *tparams;
    size_t tparams_len;
    unsigned codec_id;
    const uint8_t *cparams;
    uint64_t cparams_len;
    unsigned payload_count;         /* as read: 0..255 */
    const uint8_t *payload_bytes;   /* payload_count x 21 bytes */
    payload_rec *payloads;
    /* parsed parameter blocks */
    const struct codec_def *codec;
    uint64_t rht_seed;
    uint32_t rht_row_block, rht_col_block;
    unsigned pvq_d, pvq_k, pvq_gain_bits, pvq_index_bits;
    const uint8_t *pvq_gain_table;  /* 2^gain_bits little-endian f32 */
    unsigned tr_code, tr_L, tr_k, tr_row_scales;
    float tr_scale;
    unsigned lat_stages, lat_row_scales;
    unsigned vr_k_count, vr_k_max, vr_pulse_bits; /* pvqvr; also pvq_d, pvq_gain_bits, pvq_gain_table, pvq_index_bits */
    const uint8_t *vr_k_values;     /* k_count x u16 */
    float ecsq_step;
    unsigned ecsq_n;                /* offset_count */
    const uint8_t *ecsq_offsets;    /* offset_count x little-endian f32 */
    unsigned tcq_v;                 /* ectcq state_bits (also ecsq_step, ecsq_n, ecsq_offsets) */
    uint64_t tcq_a0_count;
    float ecl_half_scale;           /* eclattice */
    uint64_t ecl_int_groups, ecl_res0_groups;
    float lat_scales[3];
    int checked;                    /* 1 once pvqc_check_tensor passed */
} tensor_rec;

typedef struct meta_rec {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    uint64_t value_len;
} meta_rec;

/* N(n, t) for 0 <= n <= d, 0 <= t <= k, each `limbs` little-endian uint64 limbs (6.2.4). */
typedef struct pvq_table {
    unsigned d, k, limbs;
    uint64_t *counts;
} pvq_table;

struct pvqc_file {
    pvqc_allocator al;
    const uint8_t *data;
    uint64_t size;
    void *owned;                    /* the copy made by pvqc_open_path */
    int open_ok;
    unsigned version_major, version_minor;
    uint32_t header_size;
    uint64_t file_size;
    size_t meta_count;
    meta_rec *meta;
    size_t tensor_count;
    tensor_rec *tensors;
    payload_rec *payloads;
    char *names;
    size_t *by_name;                /* tensor indices sorted by name, for pvqc_find_tensor */
    pvq_table table;                /* the last PVQ count table built */
    struct lattice_tables *lattice; /* 6.4.4.2 and 6.4.5, built on first use */
    stream_set cache;               /* 4.3: the whole rans streams of the last tensor checked */
    stream_set *active;             /* the decoded rans streams that codecs read during a call */
    ec_rows ecrows;                 /* row walks of ectcq and eclattice (6.7, 6.8) */
    uint32_t crc_table[256];        /* 2.3 */
    char message[640];
};

static void *default_alloc(void *opaque, size_t size) { (void)opaque; return malloc(size); }
static void default_free(void *opaque, void *ptr) { (void)opaque; free(ptr); }

/* Allocate n bytes (n may come from a checked product); NULL if it does not fit. */
static void *xalloc(pvqc_file *f, uint64_t n)
{
    if (n > (uint64_t)SIZE_MAX) return NULL;
    return f->al.alloc(f->al.opaque, n ? (size_t)n : 1u);
}

static void xfree(pvqc_file *f, void *p)
{
    if (p) f->al.free(f->al.opaque, p);
}

/* a * b, or 0 (false) on overflow of 64 bits. */
static int mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

const char *pvqc_error_name(pvqc_error code)
{
    switch (code) {
    case PVQC_OK: return "ok";
    case PVQC_ERR_FILE_TRUNCATED: return "file_truncated";
    case PVQC_ERR_MAGIC_INVALID: return "magic_invalid";
    case PVQC_ERR_VERSION_UNSUPPORTED: return "version_unsupported";
    case PVQC_ERR_RESERVED_NONZERO: return "reserved_nonzero";
    case PVQC_ERR_FILE_SIZE_MISMATCH: return "file_size_mismatch";
    case PVQC_ERR_LIMIT_EXCEEDED: return "limit_exceeded";
    case PVQC_ERR_CHECKSUM_MISMATCH: return "checksum_mismatch";
    case PVQC_ERR_HEADER_CORRUPT: return "header_corrupt";
    case PVQC_ERR_TRANSFORM_UNKNOWN: return "transform_unknown";
    case PVQC_ERR_CODEC_UNKNOWN: return "codec_unknown";
    case PVQC_ERR_PARAMS_INVALID: return "params_invalid";
    case PVQC_ERR_CODING_UNKNOWN: return "coding_unknown";
    case PVQC_ERR_PAYLOAD_LAYOUT_INVALID: return "payload_layout_invalid";
    case PVQC_ERR_PAYLOAD_CORRUPT: return "payload_corrupt";
    case PVQC_ERR_BAD_ARGUMENT: return "bad_argument";
    case PVQC_ERR_BUFFER_TOO_SMALL: return "buffer_too_small";
    case PVQC_ERR_OUT_OF_MEMORY: return "out_of_memory";
    case PVQC_ERR_NO_SUCH_TENSOR: return "no_such_tensor";
    case PVQC_ERR_IO: return "io_error";
    }
    return "unknown_error";
}

/* Record an error's message on the handle and return its code. */
#if defined(__GNUC__)
static pvqc_error fail(pvqc_file *f, pvqc_error code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#endif
static pvqc_error fail(pvqc_file *f, pvqc_error code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
    return code;
}

static pvqc_error out_of_memory(pvqc_file *f, const char *what)
{
    return fail(f, PVQC_ERR_OUT_OF_MEMORY, "out of memory (%s)", what);
}

/* Messages quote a tensor's name the way the Python decoder does: 'name' (at most 200 bytes). */
#define NAME_FMT "'%.*s'"
#define NAME_ARG(t) (int)((t)->name_len > 200 ? 200 : (t)->name_len), (const char *)(t)->name_bytes

typedef unsigned long long ull;

/* =====================================================================================
 * 1.1 Notation: little-endian integers, the reader, UTF-8
 * ===================================================================================== */

/* "All multi-byte integers are unsigned and little-endian." */
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32); }

/* "f32 is an IEEE 754 binary32 value, little-endian." */
static float lef32(const uint8_t *p)
{
    uint32_t u = le32(p);
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* A bounds-checked cursor over a length-delimited part of the file. Every read either
 * takes bytes that lie inside [data, data + size) or fails and leaves pos unchanged. */
typedef struct reader {
    const uint8_t *data;
    uint64_t size;
    uint64_t pos;
} reader;

static void rd_init(reader *r, const uint8_t *data, uint64_t size)
{
    r->data = data;
    r->size = size;
    r->pos = 0;
}

static int rd_take(reader *r, uint64_t n, const uint8_t **p)
{
    if (n > r->size - r->pos) return 0;
    *p = r->data + r->pos;
    r->pos += n;
    return 1;
}

static int rd_u8(reader *r, unsigned *v)
{
    const uint8_t *p;
    if (!rd_take(r, 1, &p)) return 0;
    *v = p[0];
    return 1;
}

static int rd_u16(reader *r, unsigned *v)
{
    const uint8_t *p;
    if (!rd_take(r, 2, &p)) return 0;
    *v = le16(p);
    return 1;
}

static int rd_u32(reader *r, uint32_t *v)
{
    const uint8_t *p;
    if (!rd_take(r, 4, &p)) return 0;
    *v = le32(p);
    return 1;
}

static int rd_u64(reader *r, uint64_t *v)
{
    const uint8_t *p;
    if (!rd_take(r, 8, &p)) return 0;
    *v = le64(p);
    return 1;
}

/* A sub-reader over the next n bytes (a length-delimited part, 1.3). */
static int rd_sub(reader *r, uint64_t n, reader *sub)
{
    const uint8_t *p;
    if (!rd_take(r, n, &p)) return 0;
    rd_init(sub, p, n);
    return 1;
}

/* 1.3: "Every length-delimited part is consumed exactly." */
static int rd_done(const reader *r) { return r->pos == r->size; }

/* The two params_invalid failures that every parameter block shares (1.3): its fields could
 * not all be read (`read_ok` 0), or they do not use the block exactly. `what` names the
 * block's owner ("pvq codec", "rht transform"). */
static pvqc_error params_misread(pvqc_file *f, const tensor_rec *t, const reader *r, int read_ok, const char *what)
{
    if (!read_ok)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": %s: cannot parse its parameter block",
                    NAME_ARG(t), what);
    return fail(f, PVQC_ERR_PARAMS_INVALID,
                "tensor " NAME_FMT ": %s: parameter block is %llu bytes but its fields use %llu", NAME_ARG(t), what,
                (ull)r->size, (ull)r->pos);
}

/* 1.1: "Strings are UTF-8 ... Invalid UTF-8 is corrupt." Strict UTF-8 (RFC 3629): no
 * overlong forms, no surrogates (U+D800..U+DFFF), nothing above U+10FFFF. */
static int utf8_valid(const uint8_t *s, uint64_t n)
{
    uint64_t i = 0;
    while (i < n) {
        unsigned c = s[i], need, lo = 0x80, hi = 0xBF;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) { need = 2; lo = 0xA0; }
        else if (c == 0xED) { need = 2; hi = 0x9F; }
        else if (c >= 0xE1 && c <= 0xEF) need = 2;
        else if (c == 0xF0) { need = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else if (c == 0xF4) { need = 3; hi = 0x8F; }
        else return 0;
        if (n - i <= need) return 0;
        if (s[i + 1] < lo || s[i + 1] > hi) return 0;
        for (unsigned j = 2; j <= need; j++)
            if (s[i + j] < 0x80 || s[i + j] > 0xBF) return 0;
        i += need + 1;
    }
    return 1;
}

/* 1.1: "str16: a u16 length ... str32: a u32 length ... with no terminator." */
static int rd_str(reader *r, int wide, const uint8_t **s, uint64_t *len, const char **why)
{
    uint64_t n;
    if (wide) {
        uint32_t v;
        if (!rd_u32(r, &v)) { *why = "a string length runs past the end"; return 0; }
        n = v;
    } else {
        unsigned v;
        if (!rd_u16(r, &v)) { *why = "a string length runs past the end"; return 0; }
        n = v;
    }
    if (!rd_take(r, n, s)) { *why = "a string runs past the end"; return 0; }
    if (!utf8_valid(*s, n)) { *why = "invalid UTF-8"; return 0; }
    *len = n;
    return 1;
}

/* =====================================================================================
 * 2. File structure and file header
 * ===================================================================================== */

/* 2.3 Checksums: CRC-32 (ISO 3309 / ITU-T V.42, as in zlib).
 * "table[n] = n, then 8 times: table[n] = (table[n] >> 1) ^ (0xEDB88320 if table[n] & 1 else 0)" */
static void crc32_init(uint32_t table[256])
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ ((c & 1u) ? 0xEDB88320u : 0u);
        table[n] = c;
    }
}

/* "crc = 0xFFFFFFFF; for each byte b: crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8);
 *  result = crc ^ 0xFFFFFFFF" */
static uint32_t crc32(const uint32_t table[256], const uint8_t *p, uint64_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (uint64_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

/* 2.1 / 3.6 "A mismatch is corrupt (checksum_mismatch)". Fuzzing builds (compiled with
 * -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, the OSS-Fuzz convention; see the Makefile's
 * fuzz target) compute every CRC but accept a mismatch, so that mutated inputs reach the
 * checks behind it. A decoder that is used must never be built that way. */
static int crc_mismatch(uint32_t computed, uint32_t stored)
{
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    (void)computed;
    (void)stored;
    return 0;
#else
    return computed != stored;
#endif
}

static pvqc_error parse_header_block(pvqc_file *f, const uint8_t *block, uint64_t size);
static pvqc_error check_payload_layout(pvqc_file *f);

/* 2.1 File header and 2.2 Order of the first checks: "the file has at least 32 bytes
 * (file_truncated; if it has at least 8 bytes and they are not the magic,
 * magic_invalid), magic, version_major, flags, file_size against its limit and against
 * the real size, header_size against its limit and the file's end, header_crc. Then
 * it parses the header block (section 3) and checks the payload layout (section 7)." */
static pvqc_error parse_file(pvqc_file *f)
{
    const uint64_t size = f->size;
    reader r;
    const uint8_t *magic;
    unsigned major = 0, minor = 0;
    uint32_t flags = 0, header_size = 0, header_crc = 0;
    uint64_t file_size = 0;
    pvqc_error e;

    if (size < FILE_HEADER_SIZE) {
        if (size >= 8 && memcmp(f->data, PVQC_MAGIC, 8) != 0)
            return fail(f, PVQC_ERR_MAGIC_INVALID, "not a .pvqc file (wrong magic bytes)");
        if (size == 0) return fail(f, PVQC_ERR_FILE_TRUNCATED, "file is empty");
        return fail(f, PVQC_ERR_FILE_TRUNCATED, "file is %llu bytes, shorter than the 32-byte file header",
                    (ull)size);
    }
    rd_init(&r, f->data, FILE_HEADER_SIZE);
    rd_take(&r, 8, &magic);
    rd_u16(&r, &major);
    rd_u16(&r, &minor);
    rd_u32(&r, &flags);
    rd_u32(&r, &header_size);
    rd_u32(&r, &header_crc);
    rd_u64(&r, &file_size);

    if (memcmp(magic, PVQC_MAGIC, 8) != 0)
        return fail(f, PVQC_ERR_MAGIC_INVALID, "not a .pvqc file (wrong magic bytes)");
    if (major != PVQC_FORMAT_VERSION_MAJOR)
        return fail(f, PVQC_ERR_VERSION_UNSUPPORTED,
                    "file format version %u.%u is not supported; this reader supports %u.x (up to %u.%u)",
                    major, minor, PVQC_FORMAT_VERSION_MAJOR, PVQC_FORMAT_VERSION_MAJOR, PVQC_FORMAT_VERSION_MINOR);
    if (flags != 0)
        return fail(f, PVQC_ERR_RESERVED_NONZERO,
                    "file header flags are 0x%08lx; all flag bits are reserved and must be zero", (unsigned long)flags);
    if (file_size > MAX_FILE_SIZE)
        return fail(f, PVQC_ERR_LIMIT_EXCEEDED, "file_size %llu exceeds the limit %llu", (ull)file_size,
                    (ull)MAX_FILE_SIZE);
    if (size < file_size)
        return fail(f, PVQC_ERR_FILE_TRUNCATED, "file is %llu bytes but its header says %llu: truncated", (ull)size,
                    (ull)file_size);
    if (size > file_size)
        return fail(f, PVQC_ERR_FILE_SIZE_MISMATCH, "file is %llu bytes but its header says %llu: trailing bytes",
                    (ull)size, (ull)file_size);
    if (header_size > MAX_HEADER_SIZE)
        return fail(f, PVQC_ERR_LIMIT_EXCEEDED, "header_size %lu exceeds the limit %lu", (unsigned long)header_size,
                    (unsigned long)MAX_HEADER_SIZE);
    if ((uint64_t)header_size > size - FILE_HEADER_SIZE)
        return fail(f, PVQC_ERR_FILE_TRUNCATED, "header block (%lu bytes) runs past the end of the file",
                    (unsigned long)header_size);
    if (crc_mismatch(crc32(f->crc_table, f->data + FILE_HEADER_SIZE, header_size), header_crc))
        return fail(f, PVQC_ERR_CHECKSUM_MISMATCH, "header block CRC-32 mismatch: the file is damaged");

    f->version_major = major;
    f->version_minor = minor;
    f->header_size = header_size;
    f->file_size = file_size;
    e = parse_header_block(f, f->data + FILE_HEADER_SIZE, header_size);
    if (e != PVQC_OK) return e;
    return check_payload_layout(f);
}

/* =====================================================================================
 * 3. The header block
 * ===================================================================================== */

/* 3.2 MetadataEntry: "key str16, 1 to 1024 bytes; value str32, at most 16 MiB".
 * Reads the structure only (the rules on its values are checked in check_metadata). */
static int read_metadata_entry(reader *r, meta_rec *m, const char **why)
{
    uint64_t klen;
    if (!rd_str(r, 0, &m->key, &klen, why)) return 0;
    m->key_len = (size_t)klen;
    return rd_str(r, 1, &m->value, &m->value_len, why);
}

/* 3.3 TensorEntry and 3.6 PayloadEntry: the structure of one directory entry.
 *   name str16, dtype u8, rank u8, shape rank x u64, rows u64, cols u64,
 *   transform_id u8, transform_params (u16 length + bytes), codec_id u8,
 *   codec_params (u32 length + bytes), payload_count u8,
 *   payloads payload_count x (coding u8, offset u64, length u64, crc u32).
 * The rules on the values are checked in check_tensor_entry, after the whole block
 * has been read (section 9: "within the header block in field order"). */
static int read_tensor_entry(reader *r, tensor_rec *t, const char **why)
{
    uint64_t len;
    unsigned v;
    uint32_t len32;
    const uint8_t *p;
    if (!rd_str(r, 0, &t->name_bytes, &len, why)) return 0;
    t->name_len = (size_t)len;
    *why = "the entry runs past the end of the block";
    if (!rd_u8(r, &t->dtype) || !rd_u8(r, &t->rank)) return 0;
    if (!rd_take(r, 8ull * t->rank, &t->shape_bytes)) return 0;
    if (!rd_u64(r, &t->rows) || !rd_u64(r, &t->cols)) return 0;
    if (!rd_u8(r, &t->transform_id) || !rd_u16(r, &v)) return 0;
    if (!rd_take(r, v, &t->tparams)) return 0;
    t->tparams_len = v;
    if (!rd_u8(r, &t->codec_id) || !rd_u32(r, &len32)) return 0;
    if (!rd_take(r, len32, &t->cparams)) return 0;
    t->cparams_len = len32;
    if (!rd_u8(r, &t->payload_count)) return 0;
    if (!rd_take(r, 21ull * t->payload_count, &p)) return 0;
    t->payload_bytes = p;
    return 1;
}

/* For the uniqueness rules: sort (bytes, length, index) triples, then flag every entry
 * equal to an entry with a smaller index. */
typedef struct name_ref {
    const uint8_t *s;
    size_t len;
    size_t index;
} name_ref;

static int name_ref_cmp(const void *a, const void *b)
{
    const name_ref *x = (const name_ref *)a, *y = (const name_ref *)b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = n ? memcmp(x->s, y->s, n) : 0;
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index ? 1 : 0);
}

/* dup[i] = 1 if entry i repeats an earlier entry. refs is sorted on return. */
static void flag_duplicates(name_ref *refs, size_t n, unsigned char *dup)
{
    qsort(refs, n, sizeof *refs, name_ref_cmp);
    for (size_t i = 0; i < n; i++) dup[i] = 0;
    for (size_t i = 1; i < n; i++)
        if (refs[i].len == refs[i - 1].len && (refs[i].len == 0 || memcmp(refs[i].s, refs[i - 1].s, refs[i].len) == 0))
            dup[refs[i].index] = 1;
}

static pvqc_error check_tensor_entry(pvqc_file *f, tensor_rec *t, size_t index);

/* 3. The header block: "metadata_count u32 (at most 65,535), metadata, tensor_count u32
 * (at most 2^20), tensors. The header block must be consumed exactly (header_corrupt
 * otherwise). A structure that runs past the block's end is header_corrupt."
 *
 * Pass 1 reads the structure and checks the two count limits where they are read;
 * pass 2 stores the entries (sizes now known and bounded by the block's size);
 * pass 3 checks the rules on the values, entry by entry in file order. */
static pvqc_error parse_header_block(pvqc_file *f, const uint8_t *block, uint64_t size)
{
    reader r;
    uint32_t n_meta, n_tensors;
    uint64_t total_payloads = 0, total_names = 0, bytes;
    const char *why = "";
    size_t i;
    meta_rec m;
    tensor_rec t;
    name_ref *refs;
    unsigned char *dup;
    char *arena;
    pvqc_error e = PVQC_OK;

    /* pass 1 */
    rd_init(&r, block, size);
    if (!rd_u32(&r, &n_meta))
        return fail(f, PVQC_ERR_HEADER_CORRUPT, "header block cannot be parsed (metadata_count runs past its end)");
    if (n_meta > MAX_METADATA_ENTRIES)
        return fail(f, PVQC_ERR_LIMIT_EXCEEDED, "%lu metadata entries exceed the limit %u", (unsigned long)n_meta,
                    MAX_METADATA_ENTRIES);
    for (i = 0; i < n_meta; i++)
        if (!read_metadata_entry(&r, &m, &why))
            return fail(f, PVQC_ERR_HEADER_CORRUPT, "header block cannot be parsed (metadata entry %lu: %s)",
                        (unsigned long)i, why);
    if (!rd_u32(&r, &n_tensors))
        return fail(f, PVQC_ERR_HEADER_CORRUPT, "header block cannot be parsed (tensor_count runs past its end)");
    if (n_tensors > MAX_TENSORS)
        return fail(f, PVQC_ERR_LIMIT_EXCEEDED, "%lu tensors exceed the limit %u", (unsigned long)n_tensors,
                    MAX_TENSORS);
    for (i = 0; i < n_tensors; i++) {
        memset(&t, 0, sizeof t);
        if (!read_tensor_entry(&r, &t, &why))
            return fail(f, PVQC_ERR_HEADER_CORRUPT, "header block cannot be parsed (tensor entry %lu: %s)",
                        (unsigned long)i, why);
        total_payloads += t.payload_count;
        total_names += t.name_len + 1;
    }
    if (!rd_done(&r))
        return fail(f, PVQC_ERR_HEADER_CORRUPT, "header block has %llu unread bytes after the tensor directory",
                    (ull)(r.size - r.pos));

    /* pass 2: every count below is bounded by the block's size (each entry uses bytes) */
    f->meta_count = n_meta;
    f->tensor_count = n_tensors;
    f->meta = (meta_rec *)xalloc(f, (uint64_t)n_meta * sizeof(meta_rec));
    f->tensors = (tensor_rec *)xalloc(f, (uint64_t)n_tensors * sizeof(tensor_rec));
    f->payloads = (payload_rec *)xalloc(f, total_payloads * sizeof(payload_rec));
    f->names = (char *)xalloc(f, total_names);
    f->by_name = (size_t *)xalloc(f, (uint64_t)n_tensors * sizeof(size_t));
    bytes = (uint64_t)(n_meta > n_tensors ? n_meta : n_tensors);
    refs = (name_ref *)xalloc(f, bytes * sizeof(name_ref));
    dup = (unsigned char *)xalloc(f, bytes);
    if (!f->meta || !f->tensors || !f->payloads || !f->names || !f->by_name || !refs || !dup) {
        xfree(f, refs);
        xfree(f, dup);
        return out_of_memory(f, "tensor directory");
    }
    rd_init(&r, block, size);
    rd_u32(&r, &n_meta);
    for (i = 0; i < n_meta; i++) read_metadata_entry(&r, &f->meta[i], &why);
    rd_u32(&r, &n_tensors);
    arena = f->names;
    total_payloads = 0;
    for (i = 0; i < n_tensors; i++) {
        tensor_rec *tt = &f->tensors[i];
        memset(tt, 0, sizeof *tt);
        read_tensor_entry(&r, tt, &why);
        tt->name = arena;
        if (tt->name_len) memcpy(arena, tt->name_bytes, tt->name_len);
        arena[tt->name_len] = '\0';
        arena += tt->name_len + 1;
        tt->payloads = f->payloads + total_payloads;
        total_payloads += tt->payload_count;
    }

    /* pass 3a: 3.2 "Keys are unique within a file (header_corrupt); an empty key is
     * header_corrupt; longer keys or values are a limit." */
    for (i = 0; i < n_meta; i++) {
        refs[i].s = f->meta[i].key;
        refs[i].len = f->meta[i].key_len;
        refs[i].index = i;
    }
    flag_duplicates(refs, n_meta, dup);
    for (i = 0; i < n_meta && e == PVQC_OK; i++) {
        const meta_rec *mm = &f->meta[i];
        int shown = (int)(mm->key_len > 40 ? 40 : mm->key_len);
        if (mm->key_len > MAX_KEY_BYTES || mm->value_len > MAX_VALUE_BYTES)
            e = fail(f, PVQC_ERR_LIMIT_EXCEEDED, "metadata entry '%.*s' exceeds the key or value size limit", shown,
                     (const char *)mm->key);
        else if (mm->key_len == 0)
            e = fail(f, PVQC_ERR_HEADER_CORRUPT, "metadata key is empty");
        else if (dup[i])
            e = fail(f, PVQC_ERR_HEADER_CORRUPT, "metadata key '%.*s' appears twice", shown, (const char *)mm->key);
    }

    /* pass 3b: 3.3, each tensor's rules in field order, then "unique in the file" */
    if (e == PVQC_OK) {
        for (i = 0; i < n_tensors; i++) {
            refs[i].s = f->tensors[i].name_bytes;
            refs[i].len = f->tensors[i].name_len;
            refs[i].index = i;
        }
        flag_duplicates(refs, n_tensors, dup);
        for (i = 0; i < n_tensors; i++) f->by_name[i] = refs[i].index;
        for (i = 0; i < n_tensors && e == PVQC_OK; i++) {
            e = check_tensor_entry(f, &f->tensors[i], i);
            if (e == PVQC_OK && dup[i])
                e = fail(f, PVQC_ERR_HEADER_CORRUPT, "tensor name " NAME_FMT " appears twice", NAME_ARG(&f->tensors[i]));
        }
    }
    xfree(f, refs);
    xfree(f, dup);
    return e;
}

/* =====================================================================================
 * 4. Streams and payload codings
 * ===================================================================================== */

/* 4.2 "The payload's length must be exactly ceil(count * width / 8)". count * width
 * never overflows: count <= 2^48 symbols of at most 1024 bits (checked by the caller). */
static uint64_t raw_coding_length(const stream_spec *s)
{
    return (s->count * s->width + 7u) / 8u;
}

/* 4.2 The raw coding: "bit j of symbol i (bit 0 is the least significant) is bit number
 * p = i * width + j of the string, and bit p of the string is bit p mod 8 of byte
 * p div 8." Reads `nbits` <= 64 bits starting at bit position `p`. */
static uint64_t raw_read_bits(const uint8_t *bytes, uint64_t p, unsigned nbits)
{
    uint64_t v = 0, byte = p >> 3;
    unsigned got = 0, off = (unsigned)(p & 7u);
    while (got < nbits) {
        unsigned take = 8u - off;
        if (take > nbits - got) take = nbits - got;
        v |= (uint64_t)((bytes[byte] >> off) & ((1u << take) - 1u)) << got;
        got += take;
        byte++;
        off = 0;
    }
    return v;
}

/* Symbol i (width <= 64). Where 9 bytes are available, one 64-bit little-endian load
 * (and one more byte) replaces the byte loop; the result is the same. */
static uint64_t stream_symbol(const stream_view *s, uint64_t i)
{
    const uint64_t p = (i - s->base) * s->width, byte = p >> 3;
    const unsigned off = (unsigned)(p & 7u), w = s->width;
    if (byte + 9u <= s->length) {
        uint64_t v = le64(s->bytes + byte) >> off;
        if (off + w > 64u) v |= (uint64_t)s->bytes[byte + 8u] << (64u - off);
        return w < 64u ? v & ((1ull << w) - 1u) : v;
    }
    return raw_read_bits(s->bytes, p, w);
}

/* Symbol i of any width as little-endian 64-bit limbs (limb l = bits 64l .. 64l+63);
 * limbs beyond the symbol's width are set to 0. */
static void stream_symbol_limbs(const stream_view *s, uint64_t i, uint64_t *limbs, unsigned nlimbs)
{
    uint64_t p = (i - s->base) * s->width;
    for (unsigned l = 0; l < nlimbs; l++) {
        unsigned lo = 64u * l;
        unsigned n = lo >= s->width ? 0u : (s->width - lo > 64u ? 64u : s->width - lo);
        limbs[l] = n ? raw_read_bits(s->bytes, p + lo, n) : 0u;
    }
}

/* 4.2 "the unused high bits of the last byte must be zero (payload_corrupt)". */
static int raw_coding_padding_ok(const uint8_t *bytes, uint64_t length, const stream_spec *s)
{
    unsigned used = (unsigned)((s->count * s->width) % 8u);
    if (used == 0 || length == 0) return 1;
    return (bytes[length - 1] >> used) == 0;
}

/* ---- 4.3 The rANS coding (coding id 1, spec/coding-rans.md) ------------------------- */

#define RANS_LANES 32u
#define RANS_LOW (1u << 16)                 /* 4.3.2: 2^16 <= x < 2^32 between operations */
#define RANS_MAX_PRECISION 15u
#define RANS_MAX_ALPHABET 65536u
#define RANS_HEADER_BYTES 16u
#define RANS_STATE_WORDS 64u                /* 32 lanes x 2 words, the least a chunk holds */
#define RANS_BOUND_LIMBS (PVQ_MAX_INDEX_BITS / 64u + 2u)
#define RANS_MAX_OPS (1u + (PVQ_MAX_INDEX_BITS + 15u) / 16u)

/* 4.3.1 Payload layout, as read and checked by rans_parse_header. */
typedef struct rans_header {
    unsigned mode, precision;
    uint32_t chunk_symbols, chunk_count, alphabet;
    const uint8_t *freq;        /* alphabet x u16 */
    const uint8_t *chunk_end;   /* chunk_count x u64, in words from the start of the chunk data */
    const uint8_t *data;        /* the chunk data: 2 * chunk_end[C-1] bytes */
} rans_header;

static uint64_t rans_chunk_end(const rans_header *h, uint64_t j) { return j == 0 ? 0u : le64(h->chunk_end + 8u * (j - 1u)); }

/* One entry of the table operation's slot table (4.3.2, "table"): the value that owns the
 * slot, its frequency, and slot - c(value). */
typedef struct rans_slot {
    uint16_t sym;
    uint16_t off;
    uint32_t freq;
} rans_slot;

/* Uniform mode's operations for one bound N (4.3.3). Operation 0 is the top operation:
 * even(top_n) (`top_even`) or raw(top_k); then `pieces` raw operations, the first of
 * `first_k` bits, the others of 16 bits. The symbol is t * 2^low + the pieces. */
typedef struct rans_uniform {
    uint64_t nm1[RANS_BOUND_LIMBS];     /* N - 1 */
    unsigned b;                         /* bits of N - 1 */
    unsigned nops;                      /* operations per symbol: 0, 1, or 1 + pieces */
    unsigned low, pieces, first_k;
    unsigned top_n, top_k, top_even;
    uint32_t q, r, split;               /* even(top_n): q = 65536 div n, r = 65536 mod n, split = r (q + 1) */
    uint64_t m_q1, m_q;                 /* slot div (q + 1) = (slot * m_q1) >> 32; slot div q likewise */
} rans_uniform;

/* A stream's bounds (section 4): `count` distinct bounds and, if `index` is set, each
 * symbol's index into them (a decoded earlier stream); else every symbol has plans[0]. */
#define RANS_MAX_BOUNDS 256u
typedef struct rans_bounds {
    unsigned count;
    rans_uniform *plans;                /* RANS_MAX_BOUNDS entries */
    int index_stream;                   /* the stream holding each symbol's index, or -1 */
    int has_index;
    stream_view index;                  /* that stream, set up by rans_stream_decode */
} rans_bounds;

static const char *rans_mode_name(unsigned mode) { return mode == 0 ? "table" : "uniform"; }

/* Messages name the tensor and the payload, as the Python decoder's do. */
#define RANS_FMT "tensor " NAME_FMT ": rans payload '%s': "
#define RANS_ARG(t, s) NAME_ARG(t), (s)->name

/* 4.3.1: "The checks are made in the order of the table, and every one of them before any
 * chunk is decoded." Each field is read, then checked; a field that runs past the payload is
 * payload_corrupt as well. Nothing is allocated here: C is compared with the bytes left
 * before the chunk offsets are read, so a huge count cannot cause work or memory. */
static pvqc_error rans_parse_header(pvqc_file *f, const tensor_rec *t, const stream_spec *s, const uint8_t *bytes,
                                    uint64_t length, rans_header *h)
{
    reader r;
    const uint8_t *p;
    unsigned reserved;
    uint64_t want_chunks, sum = 0, prev = 0, T, words;
    rd_init(&r, bytes, length);
    memset(h, 0, sizeof *h);
    if (!rd_u8(&r, &h->mode)) return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "the payload is empty", RANS_ARG(t, s));
    if (h->mode > 1)
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "unknown mode %u (0 table, 1 uniform)", RANS_ARG(t, s), h->mode);
    if (!rd_u8(&r, &h->precision) || !rd_u16(&r, &reserved) || !rd_u32(&r, &h->chunk_symbols) ||
        !rd_u32(&r, &h->chunk_count) || !rd_u32(&r, &h->alphabet)) {
        /* the fields up to the truncation are still checked in order */
        if (r.pos >= 2 && (h->mode == 0 ? (h->precision < 1 || h->precision > RANS_MAX_PRECISION) : h->precision != 0))
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "precision %u out of range for %s mode", RANS_ARG(t, s),
                        h->precision, rans_mode_name(h->mode));
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "the %u-byte header runs past the payload's %llu bytes",
                    RANS_ARG(t, s), RANS_HEADER_BYTES, (ull)length);
    }
    if (h->mode == 0 ? (h->precision < 1 || h->precision > RANS_MAX_PRECISION) : h->precision != 0)
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "precision %u out of range for %s mode", RANS_ARG(t, s),
                    h->precision, rans_mode_name(h->mode));
    if (reserved != 0)
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "reserved field is %u, not 0", RANS_ARG(t, s), reserved);
    if (h->chunk_symbols < 1)
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "chunk_symbols is 0", RANS_ARG(t, s));
    /* "exactly ceil(count / S) (0 when count = 0)"; count <= 2^48, so no overflow */
    want_chunks = (s->count + h->chunk_symbols - 1u) / h->chunk_symbols;
    if (h->chunk_count != want_chunks)
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "chunk_count %u; %llu symbols in chunks of %u need %llu",
                    RANS_ARG(t, s), h->chunk_count, (ull)s->count, h->chunk_symbols, (ull)want_chunks);
    if (h->mode == 0) {
        /* "table: 1 to min(2^width, 65,536)" */
        uint64_t cap = s->width >= 16u ? RANS_MAX_ALPHABET : (1ull << s->width);
        if (h->alphabet < 1 || h->alphabet > cap)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "alphabet %u outside 1..%llu", RANS_ARG(t, s), h->alphabet,
                        (ull)cap);
    } else if (h->alphabet != 0) {
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "alphabet %u in uniform mode (must be 0)", RANS_ARG(t, s),
                    h->alphabet);
    }
    /* freq: "each at most 2^P, their sum exactly 2^P" */
    if (!rd_take(&r, 2ull * h->alphabet, &h->freq))
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "the frequency table runs past the payload's end",
                    RANS_ARG(t, s));
    for (uint32_t a = 0; a < h->alphabet; a++) {
        unsigned fr = le16(h->freq + 2u * a);
        if (fr > (1u << h->precision))
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "frequency %u of symbol %u exceeds 2^%u", RANS_ARG(t, s),
                        fr, a, h->precision);
        sum += fr;
    }
    if (h->mode == 0 && sum != (1ull << h->precision))
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "frequencies sum to %llu, not 2^%u", RANS_ARG(t, s), (ull)sum,
                    h->precision);
    /* padding: "zero bytes up to the next multiple of 8 of the offset" */
    T = (RANS_HEADER_BYTES + 2ull * h->alphabet + 7u) / 8u * 8u;
    if (!rd_take(&r, T - r.pos, &p))
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "the padding runs past the payload's end", RANS_ARG(t, s));
    for (uint64_t i = 0; i < T - (RANS_HEADER_BYTES + 2ull * h->alphabet); i++)
        if (p[i] != 0) return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "non-zero padding after the frequency table", RANS_ARG(t, s));
    /* chunk_end: C x u64 (8 C < 2^35 bytes, compared with what is left before any is read) */
    if (!rd_take(&r, 8ull * h->chunk_count, &h->chunk_end))
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "%u chunk offsets run past the payload's end", RANS_ARG(t, s),
                    h->chunk_count);
    for (uint32_t j = 0; j < h->chunk_count; j++) {
        uint64_t e = le64(h->chunk_end + 8u * j);
        if (e < prev)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "chunk_end decreases at chunk %u", RANS_ARG(t, s), j);
        if (e - prev < RANS_STATE_WORDS)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "chunk %u is %llu words long, under 64", RANS_ARG(t, s), j,
                        (ull)(e - prev));
        prev = e;
    }
    /* "the payload ends exactly at the end of the last chunk: length = T + 8C + 2 chunk_end[C-1]" */
    words = (length - r.pos) / 2u;
    if ((length - r.pos) % 2u != 0 || words != prev)
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "%llu bytes of chunk data; the chunk offsets end at %llu words",
                    RANS_ARG(t, s), (ull)(length - r.pos), (ull)prev);
    h->data = bytes + r.pos;
    return PVQC_OK;
}

/* 4.3.2, the table operation: "f(v) = freq[v], c(v) = freq[0] + .. + freq[v-1]; symbols of
 * zero frequency own no slot". slots has 2^P entries. */
static void rans_build_slots(const rans_header *h, rans_slot *slots)
{
    uint32_t c = 0;
    for (uint32_t a = 0; a < h->alphabet; a++) {
        uint32_t fr = le16(h->freq + 2u * a);
        for (uint32_t k = 0; k < fr; k++) {
            slots[c + k].sym = (uint16_t)a;
            slots[c + k].off = (uint16_t)k;
            slots[c + k].freq = fr;
        }
        c += fr;
    }
}

/* Number of bits of a multi-limb integer (0 for 0). */
static unsigned mp_bitlen(const uint64_t *a, unsigned n)
{
    for (unsigned l = n; l-- > 0;)
        if (a[l]) {
            unsigned bits = 64u * l;
            uint64_t v = a[l];
            while (v) { bits++; v >>= 1; }
            return bits;
        }
    return 0;
}

/* Bits pos .. pos + k - 1 (k <= 16) of a multi-limb integer of RANS_BOUND_LIMBS limbs. */
static unsigned mp_bits(const uint64_t *a, unsigned pos, unsigned k)
{
    unsigned l = pos / 64u, off = pos % 64u;
    uint64_t v = a[l] >> off;
    if (off + k > 64u && l + 1u < RANS_BOUND_LIMBS) v |= a[l + 1u] << (64u - off);
    return (unsigned)(v & ((1ull << k) - 1u));
}

/* 4.3.3 Uniform mode: the operations for a symbol in [0, N), given u->nm1 = N - 1. "With b =
 * the number of bits of N - 1: b = 0: no operation; 1 <= b <= 8: one even(N) operation
 * (raw(b) when N = 2^b); b > 8: with s = b - 8, first even(n_top) with n_top = ((N - 1) div
 * 2^s) + 1 (raw(8) when n_top = 256), then the s low bits in pieces of at most 16 bits from
 * the most significant". even(n)'s values: "q = 65536 div n, r = 65536 mod n: f(v) = q + 1
 * for v < r, else q; c(v) = v * q + min(v, r)", and "v = slot div (q+1) if slot < r * (q+1),
 * else r + (slot - r*(q+1)) div q". */
static void rans_uniform_init(rans_uniform *u)
{
    unsigned top;
    const uint64_t *nm1 = u->nm1;
    u->b = mp_bitlen(nm1, RANS_BOUND_LIMBS);
    u->nops = u->low = u->pieces = u->first_k = u->top_n = u->top_k = u->top_even = 0;
    if (u->b == 0) return;
    u->low = u->b > 8u ? u->b - 8u : 0u;
    top = mp_bits(nm1, u->low, u->b - u->low); /* (N - 1) div 2^s: at most 8 bits */
    u->top_n = top + 1u;
    u->pieces = (u->low + 15u) / 16u;
    u->first_k = u->low - 16u * (u->pieces ? u->pieces - 1u : 0u);
    u->nops = 1u + u->pieces;
    if ((u->top_n & (u->top_n - 1u)) == 0) {
        while ((1u << u->top_k) < u->top_n) u->top_k++;
    } else {
        /* 2^32 div d + 1 is an exact reciprocal for numerators below 2^16 and 256 <= d < 2^16:
         * slot * m / 2^32 = slot / d + e with 0 < e < 2^-16 <= 1 / d */
        u->top_even = 1;
        u->q = 65536u / u->top_n;
        u->r = 65536u % u->top_n;
        u->split = u->r * (u->q + 1u);
        u->m_q1 = (1ull << 32) / (u->q + 1u) + 1u;
        u->m_q = (1ull << 32) / u->q + 1u;
    }
}

/* OR the n <= 64 bits of v into a zeroed bit string at bit p (the raw coding's order, 4.2). */
static void put_bits(uint8_t *out, uint64_t p, uint64_t v, unsigned n)
{
    while (n > 0) {
        unsigned off = (unsigned)(p & 7u), take = 8u - off;
        if (take > n) take = n;
        out[p >> 3] |= (uint8_t)((v & ((1u << take) - 1u)) << off);
        v >>= take;
        p += take;
        n -= take;
    }
}

/* A decoding job: chunks [j0, j1) of one payload into `out`, the raw coding's bit string of
 * the symbols from j0 * S on (zeroed by the caller). */
typedef struct rans_job {
    const tensor_rec *t;
    const stream_spec *s;
    const rans_header *h;
    const rans_slot *slots;     /* table mode */
    const rans_bounds *bounds;  /* uniform mode */
    uint8_t *out;
    uint64_t out_len;           /* bytes */
} rans_job;

/* 4.3.2 The even(n) operation on state x: "v = slot div (q+1) if slot < r * (q+1), else
 * r + (slot - r*(q+1)) div q"; "f(v) = q + 1 for v < r, else q; c(v) = v * q + min(v, r)".
 * Both branches are computed and one is selected (the slot is random: a branch would be
 * mispredicted half the time). Returns the new state; the value goes to *value. */
static inline uint32_t rans_even(const rans_uniform *P, uint32_t x, uint32_t *value)
{
    const uint32_t slot = x & 0xFFFFu, hi = slot >= P->split;
    const uint32_t v_lo = (uint32_t)((slot * P->m_q1) >> 32);
    const uint32_t v_hi = P->r + (uint32_t)(((uint64_t)(uint32_t)(slot - P->split) * P->m_q) >> 32);
    const uint32_t v = hi ? v_hi : v_lo;
    *value = v;
    return (P->q + 1u - hi) * (x >> 16) + slot - (v * P->q + (hi ? P->r : v));
}

/* 4.3.2 "if x < 2^16: if the word stream is exhausted: payload_corrupt; x = x * 65536 + next word" */
#define RANS_REFILL(x, wp, we, on_exhausted)                        \
    do {                                                            \
        if ((x) < RANS_LOW) {                                       \
            if ((wp) == (we)) on_exhausted;                         \
            (x) = ((x) << 16) | (uint32_t)le16(wp);                 \
            (wp) += 2;                                              \
        }                                                           \
    } while (0)

/* Store the m values v[] (each below 2^min(width, 64)) as symbols i0 .. i0 + m - 1 of the
 * zeroed bit string (4.2's order): one pass of a little bit writer over their bytes. */
static void rans_pack(uint8_t *out, uint64_t i0, unsigned width, const uint64_t *v, unsigned m)
{
    unsigned l;
    if (width == 8u) {
        for (l = 0; l < m; l++) out[i0 + l] = (uint8_t)v[l];
    } else if (width == 16u) {
        for (l = 0; l < m; l++) {
            out[2u * (i0 + l)] = (uint8_t)v[l];
            out[2u * (i0 + l) + 1u] = (uint8_t)(v[l] >> 8);
        }
    } else if (width > 0u && width <= 56u) {
        uint64_t byte = (i0 * width) >> 3, acc = 0;
        unsigned nb = (unsigned)((i0 * width) & 7u); /* bits already taken in out[byte] */
        for (l = 0; l < m; l++) {
            acc |= v[l] << nb;
            nb += width;
            while (nb >= 8u) {
                out[byte++] |= (uint8_t)acc;
                acc >>= 8;
                nb -= 8u;
            }
        }
        if (nb > 0u) out[byte] |= (uint8_t)acc;
    } else if (width > 56u) {
        for (l = 0; l < m; l++) put_bits(out, (i0 + l) * width, v[l], width < 64u ? width : 64u);
    }
}

/* 4.3.4 Operation order, for chunk j: "for step t: for sub-step u: for lane l = 0 .. 31:
 * i = 32 t + l; if i < n and u < ops(i): run operation u of symbol i on lane l's state";
 * then "every lane's state must be exactly 2^16 and the word stream must be exhausted". */
static pvqc_error rans_decode_chunk(pvqc_file *f, const rans_job *J, uint64_t j, uint64_t out_first)
{
    const rans_header *h = J->h;
    const uint64_t start = rans_chunk_end(h, j), end = rans_chunk_end(h, j + 1u);
    const uint64_t first = j * h->chunk_symbols;
    const uint64_t n = J->s->count - first < h->chunk_symbols ? J->s->count - first : h->chunk_symbols;
    const unsigned width = J->s->width;
    const uint8_t *wp = h->data + 2u * start + 2u * RANS_STATE_WORDS, *const we = h->data + 2u * end;
    uint8_t *const out = J->out;
    uint32_t x[RANS_LANES];
    unsigned l;

    /* 4.3.1 "lane l's state being w[2l] + 65536 * w[2l+1]; each must be in [2^16, 2^32)" */
    for (l = 0; l < RANS_LANES; l++) {
        const uint8_t *w = h->data + 2u * start + 4u * l;
        x[l] = (uint32_t)le16(w) | ((uint32_t)le16(w + 2) << 16);
        if (x[l] < RANS_LOW)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "chunk %llu: initial state of lane %u is below 2^16",
                        RANS_ARG(J->t, J->s), (ull)j, l);
    }
    if (h->mode == 0) {
        /* 4.3.3 "Table mode. A symbol is one table operation; its value is the symbol." */
        const unsigned P = h->precision;
        const uint32_t mask = (1u << P) - 1u;
        uint64_t sym[RANS_LANES];
        for (uint64_t t0 = 0; t0 < n; t0 += RANS_LANES) {
            const unsigned m = n - t0 < RANS_LANES ? (unsigned)(n - t0) : RANS_LANES;
            for (l = 0; l < m; l++) {
                uint32_t xv = x[l];
                const rans_slot e = J->slots[xv & mask];
                xv = e.freq * (xv >> P) + e.off;
                RANS_REFILL(xv, wp, we, goto exhausted);
                x[l] = xv;
                sym[l] = e.sym;
            }
            rans_pack(out, first + t0 - out_first, width, sym, m);
        }
    } else {
        /* 4.3.3 "Uniform mode", each symbol with the operations of its bound */
        const rans_bounds *B = J->bounds;
        const rans_uniform *pl[RANS_LANES];
        uint64_t acc[RANS_LANES];
        unsigned char tight[RANS_LANES];
        for (uint64_t t0 = 0; t0 < n; t0 += RANS_LANES) {
            const unsigned m = n - t0 < RANS_LANES ? (unsigned)(n - t0) : RANS_LANES;
            unsigned maxops = 0;
            if (!B->has_index && B->plans[0].b <= 64u) {
                /* one bound of at most 64 bits (the common case, same operations as below):
                 * sub-step 0 is the top operation of every lane, then the raw pieces */
                const rans_uniform *P = &B->plans[0];
                if (P->nops == 0) continue;
                for (l = 0; l < m; l++) {
                    uint32_t xv = x[l], v;
                    if (P->top_even) {
                        xv = rans_even(P, xv, &v);
                    } else {
                        v = xv & ((1u << P->top_k) - 1u);
                        xv >>= P->top_k;
                    }
                    RANS_REFILL(xv, wp, we, goto exhausted);
                    x[l] = xv;
                    acc[l] = v;
                }
                for (unsigned u = 1; u < P->nops; u++) {
                    const unsigned k = u == 1 ? P->first_k : 16u;
                    const uint32_t kmask = (1u << k) - 1u;
                    for (l = 0; l < m; l++) {
                        uint32_t xv = x[l];
                        const uint32_t v = xv & kmask;
                        xv >>= k;
                        RANS_REFILL(xv, wp, we, goto exhausted);
                        x[l] = xv;
                        acc[l] = (acc[l] << k) | v;
                    }
                }
                for (l = 0; l < m; l++)
                    if (acc[l] > P->nm1[0])
                        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "symbol %llu is at or above its bound",
                                    RANS_ARG(J->t, J->s), (ull)(first + t0 + l));
                rans_pack(out, first + t0 - out_first, width, acc, m);
                continue;
            }
            for (l = 0; l < m; l++) {
                const uint64_t k = B->has_index ? stream_symbol(&B->index, first + t0 + l) : 0u;
                if (k >= B->count)
                    return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "symbol %llu: bound index %llu out of range",
                                RANS_ARG(J->t, J->s), (ull)(first + t0 + l), (ull)k);
                pl[l] = &B->plans[k];
                if (pl[l]->nops > maxops) maxops = pl[l]->nops;
            }
            for (unsigned u = 0; u < maxops; u++) {
                for (l = 0; l < m; l++) {
                    const rans_uniform *P = pl[l];
                    uint32_t xv = x[l], v;
                    unsigned k;
                    if (u >= P->nops) continue;
                    if (u == 0) {
                        /* the top operation: even(n_top), or raw(k) when n_top = 2^k */
                        if (P->top_even) {
                            xv = rans_even(P, xv, &v);
                        } else {
                            v = xv & ((1u << P->top_k) - 1u);
                            xv >>= P->top_k;
                        }
                        k = 0;
                    } else {
                        /* raw(k_i), i = pieces - u: bits 16 i .. 16 i + k_i - 1 */
                        k = u == 1 ? P->first_k : 16u;
                        v = xv & ((1u << k) - 1u);
                        xv >>= k;
                    }
                    RANS_REFILL(xv, wp, we, goto exhausted);
                    x[l] = xv;
                    if (P->b <= 64u) {
                        acc[l] = u == 0 ? v : (acc[l] << k) | v;
                    } else {
                        /* wide: the bits go to their place; compared with N - 1 from the top */
                        const unsigned at = u == 0 ? P->low : 16u * (P->pieces - u);
                        const unsigned lim = mp_bits(P->nm1, at, u == 0 ? 8u : k);
                        put_bits(out, (first + t0 + l - out_first) * width + at, v, u == 0 ? 8u : k);
                        if (u == 0) tight[l] = v == lim;
                        else if (tight[l]) {
                            if (v > lim)
                                return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "symbol %llu is at or above its bound",
                                            RANS_ARG(J->t, J->s), (ull)(first + t0 + l));
                            tight[l] = v == lim;
                        }
                    }
                }
            }
            /* "The symbol is t * 2^s + low. A symbol >= N is payload_corrupt." */
            for (l = 0; l < m; l++) {
                const rans_uniform *P = pl[l];
                if (P->nops == 0 || P->b > 64u) continue;
                if (acc[l] > P->nm1[0])
                    return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "symbol %llu is at or above its bound",
                                RANS_ARG(J->t, J->s), (ull)(first + t0 + l));
                rans_pack(out, first + t0 + l - out_first, width, &acc[l], 1);
            }
        }
    }
    for (l = 0; l < RANS_LANES; l++)
        if (x[l] != RANS_LOW)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "chunk %llu: lane %u ends in state %lu, not 2^16",
                        RANS_ARG(J->t, J->s), (ull)j, l, (unsigned long)x[l]);
    if (wp != we)
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "chunk %llu: %llu words left after its last symbol",
                    RANS_ARG(J->t, J->s), (ull)j, (ull)((uint64_t)(we - wp) / 2u));
    return PVQC_OK;
exhausted:
    return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, RANS_FMT "chunk %llu: a refill past the end of its words",
                RANS_ARG(J->t, J->s), (ull)j);
}

/* 4.3 The rans coding: parse and check the header (4.3.1), then decode chunks
 * [j0, j1) into `out`, the raw coding's bit string (4.2) of symbols j0 * S .. (zeroed here;
 * out_len bytes). `bounds`: the stream's bounds, for uniform mode (their plans set up). "A decoder may decode
 * any subset of chunks": the whole stream is chunks [0, C). */
static pvqc_error rans_decode(pvqc_file *f, const tensor_rec *t, const stream_spec *s, const rans_header *h,
                              const rans_bounds *bounds, uint64_t j0, uint64_t j1, uint8_t *out, uint64_t out_len)
{
    rans_job J;
    pvqc_error e = PVQC_OK;
    memset(&J, 0, sizeof J);
    J.t = t;
    J.s = s;
    J.h = h;
    J.out = out;
    J.out_len = out_len;
    if (out_len) memset(out, 0, (size_t)out_len);
    if (j0 >= j1) return PVQC_OK;
    if (h->mode == 0) {
        rans_slot *slots = (rans_slot *)xalloc(f, ((uint64_t)sizeof(rans_slot)) << h->precision);
        if (!slots) return out_of_memory(f, "rans slot table");
        rans_build_slots(h, slots);
        J.slots = slots;
        for (uint64_t j = j0; j < j1 && e == PVQC_OK; j++) e = rans_decode_chunk(f, &J, j, j0 * h->chunk_symbols);
        xfree(f, slots);
        return e;
    }
    J.bounds = bounds;
    for (uint64_t j = j0; j < j1 && e == PVQC_OK; j++) e = rans_decode_chunk(f, &J, j, j0 * h->chunk_symbols);
    return e;
}

/* =====================================================================================
 * 5. Transforms (spec/transforms.md, section 5.3)
 * ===================================================================================== */

/* 5.3.2 "Quadratic character: chi(0) = 0; chi(a) = +1 if a is a nonzero square mod p,
 * -1 otherwise." */
static void chi_table(unsigned p, int8_t *chi)
{
    for (unsigned a = 0; a < p; a++) chi[a] = -1;
    chi[0] = 0;
    for (unsigned x = 1; x < p; x++) chi[(x * x) % p] = 1;
}

static int is_prime(unsigned p)
{
    if (p < 2) return 0;
    for (unsigned d = 2; d * d <= p; d++)
        if (p % d == 0) return 0;
    return 1;
}

/* 5.3.2 The base table: "the orders h <= 256 whose odd part is greater than 1 and that
 * one of the two constructions gives with a prime p ... If both constructions give the
 * same order, Paley I is used." Returns 1 (Paley I), 2 (Paley II) or 0 (not a base order). */
static int base_construction(unsigned h, unsigned *p)
{
    if (h < 2 || h > MAX_BASE_ORDER || (h & (h - 1)) == 0) return 0;
    if (is_prime(h - 1) && (h - 1) % 4 == 3) { *p = h - 1; return 1; }
    if (h % 2 == 0 && h / 2 >= 2 && is_prime(h / 2 - 1) && (h / 2 - 1) % 4 == 1) { *p = h / 2 - 1; return 2; }
    return 0;
}

/* 5.3.2 Paley I (p = 3 mod 4, h = p + 1) and Paley II (p = 1 mod 4, h = 2(p + 1)).
 * Fills H (h x h, row-major, +1/-1). */
static void build_base_matrix(unsigned h, int8_t *H)
{
    unsigned p = 0, i, j;
    int8_t chi[MAX_BASE_ORDER];
    int kind = base_construction(h, &p);
    chi_table(p, chi);
    if (kind == 1) {
        /* H[0][j] = +1; H[i][0] = -1 (i >= 1); H[i][i] = +1; H[i][j] = chi((j - i) mod p) */
        for (i = 0; i < h; i++)
            for (j = 0; j < h; j++) {
                int8_t v;
                if (i == 0) v = 1;
                else if (j == 0) v = -1;
                else if (i == j) v = 1;
                else v = chi[(j - 1 + p - (i - 1)) % p];
                H[i * h + j] = v;
            }
    } else {
        /* C[0][0] = 0; C[0][j] = C[j][0] = 1; C[i][j] = chi((j - i) mod p) for 1 <= i, j <= p;
         * H[2i + r][2j + c] = M0[r][c] if i == j, else C[i][j] * M1[r][c] */
        static const int8_t M0[2][2] = {{1, -1}, {-1, -1}};
        static const int8_t M1[2][2] = {{1, 1}, {1, -1}};
        unsigned n = p + 1;
        for (i = 0; i < n; i++)
            for (j = 0; j < n; j++) {
                int c;
                if (i == 0 && j == 0) c = 0;
                else if (i == 0 || j == 0) c = 1;
                else c = chi[(j - 1 + p - (i - 1)) % p];
                for (unsigned rr = 0; rr < 2; rr++)
                    for (unsigned cc = 0; cc < 2; cc++)
                        H[(2 * i + rr) * h + 2 * j + cc] = (int8_t)(i == j ? M0[rr][cc] : c * M1[rr][cc]);
            }
    }
}

/* 5.3.3 Block orders and their factorization: "1. If b is a power of two: h = 1, q = b.
 * 2. Otherwise, write b = o * 2^v with o odd (o > 1). The candidates are the base orders
 * of the form h = o * 2^j with 0 <= j <= v. Take the smallest candidate as h and set
 * q = b / h. If there is no candidate, b is not a valid block order." */
static int factor_block(uint64_t b, unsigned *h, uint64_t *q)
{
    uint64_t o = b;
    unsigned v = 0, p;
    if (b < 1 || b > MAX_BLOCK) return 0;
    while ((o & 1u) == 0) { o >>= 1; v++; }
    if (o == 1) { *h = 1; *q = b; return 1; }
    for (unsigned j = 0; j <= v; j++) {
        uint64_t c = o << j;
        if (c > MAX_BASE_ORDER) break;
        if (base_construction((unsigned)c, &p)) { *h = (unsigned)c; *q = b / c; return 1; }
    }
    return 0;
}

/* 5.3.4 Sign vectors.
 * "mix64(z): z = (z XOR (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z XOR (z >> 27)) *
 *  0x94D049BB133111EB; z = z XOR (z >> 31)" */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* "sign(seed, side, i): u = mix64((seed + (2*i + side + 1) * 0x9E3779B97F4A7C15) mod 2^64);
 *  return -1 if bit 63 of u is 1, else +1". Returns 1 for -1. */
static int rht_sign_negative(uint64_t seed, unsigned side, uint64_t i)
{
    return (int)(mix64(seed + (2u * i + side + 1u) * 0x9E3779B97F4A7C15ull) >> 63);
}

/* 5.3.5 "c_b = float32( 1.0 / sqrt(float64(b)) )": binary64 sqrt and division, each
 * correctly rounded, then one rounding to binary32. */
static float rht_scale(uint64_t b)
{
    double s = sqrt((double)b);
    double c = 1.0 / s;
    return (float)c;
}

/* 5.3.1 The parameter block (16 bytes: seed u64, row_block u32, col_block u32) and its
 * validity: "reject the tensor with params_invalid if row_block or col_block is 0 or
 * greater than 65536, is not a valid block order (5.3.3), or row_block does not divide
 * m, or col_block does not divide n." */
static pvqc_error rht_parse_params(pvqc_file *f, tensor_rec *t)
{
    reader r;
    uint32_t blocks[2];
    const char *names[2] = {"row_block", "col_block"}, *sides[2] = {"rows", "cols"};
    uint64_t lens[2];
    unsigned h;
    uint64_t q;
    int read_ok;
    rd_init(&r, t->tparams, t->tparams_len);
    read_ok = rd_u64(&r, &t->rht_seed) && rd_u32(&r, &blocks[0]) && rd_u32(&r, &blocks[1]);
    if (!read_ok || !rd_done(&r)) return params_misread(f, t, &r, read_ok, "rht transform");
    if (t->rows == 0 || t->cols == 0)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": rht transform of an empty %llu x %llu matrix",
                    NAME_ARG(t), (ull)t->rows, (ull)t->cols);
    lens[0] = t->rows;
    lens[1] = t->cols;
    for (int s = 0; s < 2; s++) {
        uint64_t b = blocks[s];
        if (b < 1 || b > MAX_BLOCK)
            return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": rht %s = %llu is out of range 1 .. %u",
                        NAME_ARG(t), names[s], (ull)b, MAX_BLOCK);
        if (!factor_block(b, &h, &q))
            return fail(f, PVQC_ERR_PARAMS_INVALID,
                        "tensor " NAME_FMT ": rht %s = %llu is not a valid block order (not a power of two times a base order)",
                        NAME_ARG(t), names[s], (ull)b);
        if (lens[s] % b != 0)
            return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": rht %s = %llu does not divide %s = %llu",
                        NAME_ARG(t), names[s], (ull)b, sides[s], (ull)lens[s]);
    }
    t->rht_row_block = blocks[0];
    t->rht_col_block = blocks[1];
    return PVQC_OK;
}

/* 5.1 / 5.2 The identity transform (id 0): "parameter block empty: 0 bytes (any other length
 * is params_invalid)"; "W = W'. No arithmetic." */
static pvqc_error identity_parse_params(pvqc_file *f, tensor_rec *t)
{
    if (t->tparams_len != 0)
        return fail(f, PVQC_ERR_PARAMS_INVALID,
                    "tensor " NAME_FMT ": identity transform: parameter block is %lu bytes but its fields use 0",
                    NAME_ARG(t), (unsigned long)t->tparams_len);
    return PVQC_OK;
}

/* One side's block: b = h * q, H_h (NULL if h = 1), and s_i * c_b for its indices. */
typedef struct rht_side {
    uint64_t b, q;
    unsigned h;
    int8_t *H;          /* h x h */
    float c;            /* c_b */
} rht_side;

static pvqc_error rht_side_init(pvqc_file *f, rht_side *s, uint64_t b)
{
    s->b = b;
    s->H = NULL;
    factor_block(b, &s->h, &s->q); /* valid: checked by rht_parse_params */
    s->c = rht_scale(b);
    if (s->h > 1) {
        s->H = (int8_t *)xalloc(f, (uint64_t)s->h * s->h);
        if (!s->H) return out_of_memory(f, "Hadamard matrix");
        build_base_matrix(s->h, s->H);
    }
    return PVQC_OK;
}

/* 5.3.6 The inverse of one side, applied to `nvec` vectors at once: element i of the
 * block (i = i_h * q + i_2) of vector c is at v[i * ld + c]. The row side (axis 0)
 * calls this with the columns of a strip as its vectors; the column side with one row
 * (nvec = 1). `scale` holds s_i * c_b for the block's b indices ("Steps 3 and 4 can be
 * merged into one multiplication by the float32 constant s_i * c_b"). `tmp` holds
 * h * nvec floats. */
static void rht_inverse_block(float *v, size_t ld, size_t nvec, const rht_side *s, const float *scale, float *tmp)
{
    const uint64_t q = s->q;
    const unsigned h = s->h;
    uint64_t i, t, i2;
    size_t c;
    unsigned ih, j;

    /* Step 1, Sylvester part: "for t = 0 .. e-1 (stages in increasing order): for every
     * i_2 with bit t of i_2 equal to 0: a = v[i_h*q + i_2], b = v[i_h*q + i_2 + 2^t],
     * v[i_h*q + i_2] = a + b, v[i_h*q + i_2 + 2^t] = a - b" */
    for (ih = 0; ih < h; ih++)
        for (t = 1; t < q; t <<= 1)
            for (i2 = 0; i2 < q; i2++) {
                if (i2 & t) continue;
                float *a = v + (ih * q + i2) * ld, *b = v + (ih * q + i2 + t) * ld;
                for (c = 0; c < nvec; c++) {
                    float x = a[c], y = b[c];
                    a[c] = x + y;
                    b[c] = x - y;
                }
            }

    /* Step 2, dense part: "For each i_2, let w[j] = v[j*q + i_2]. For each i_h compute
     * z[i_h] = sum over j of H_h[j][i_h] * w[j] ... acc = w[0] or -w[0]; for j = 1 ..
     * h-1: acc = acc + w[j] or acc - w[j]" (strictly in order of increasing j). */
    if (h > 1) {
        for (i2 = 0; i2 < q; i2++) {
            for (j = 0; j < h; j++) memcpy(tmp + (size_t)j * nvec, v + (j * q + i2) * ld, nvec * sizeof(float));
            for (ih = 0; ih < h; ih++) {
                float *z = v + (ih * q + i2) * ld;
                const float *w0 = tmp;
                if (s->H[ih] > 0)
                    for (c = 0; c < nvec; c++) z[c] = w0[c];
                else
                    for (c = 0; c < nvec; c++) z[c] = -w0[c];
                for (j = 1; j < h; j++) {
                    const float *wj = tmp + (size_t)j * nvec;
                    if (s->H[(size_t)j * h + ih] > 0)
                        for (c = 0; c < nvec; c++) z[c] = z[c] + wj[c];
                    else
                        for (c = 0; c < nvec; c++) z[c] = z[c] - wj[c];
                }
            }
        }
    }

    /* Steps 3 and 4: "v[i] = v[i] * c_b", then "x[k*b + i] = v[i] * s[k*b + i]", as one
     * multiplication by s_i * c_b. */
    for (i = 0; i < s->b; i++) {
        float *x = v + i * ld;
        const float m = scale[i];
        for (c = 0; c < nvec; c++) x[c] = x[c] * m;
    }
}

/* The column side (axis 1) of one row of length n: every block of b_c entries.
 * Same procedure as rht_inverse_block with one vector, written with the block viewed as
 * h rows of q contiguous values so that the inner loops run over contiguous memory. */
static void rht_inverse_row(float *x, uint64_t n, const rht_side *s, const float *scale, float *tmp)
{
    const uint64_t q = s->q, b = s->b;
    const unsigned h = s->h;
    for (uint64_t k0 = 0; k0 < n; k0 += b) {
        float *v = x + k0;
        const float *sc = scale + k0;
        uint64_t t, base, i;
        unsigned ih, j;
        /* step 1: pairs (i_2, i_2 + t) with bit t of i_2 clear, i.e. i_2 = base + u, u < t */
        for (ih = 0; ih < h; ih++) {
            float *sub = v + (uint64_t)ih * q;
            for (t = 1; t < q; t <<= 1)
                for (base = 0; base < q; base += 2 * t)
                    for (i = 0; i < t; i++) {
                        float a = sub[base + i], bb = sub[base + i + t];
                        sub[base + i] = a + bb;
                        sub[base + i + t] = a - bb;
                    }
        }
        /* step 2: z[i_h][i_2] = sum_j H[j][i_h] * w[j][i_2], j increasing; w copied first */
        if (h > 1) {
            memcpy(tmp, v, b * sizeof(float));
            for (ih = 0; ih < h; ih++) {
                float *z = v + (uint64_t)ih * q;
                if (s->H[ih] > 0)
                    for (i = 0; i < q; i++) z[i] = tmp[i];
                else
                    for (i = 0; i < q; i++) z[i] = -tmp[i];
                for (j = 1; j < h; j++) {
                    const float *w = tmp + (uint64_t)j * q;
                    if (s->H[(size_t)j * h + ih] > 0)
                        for (i = 0; i < q; i++) z[i] = z[i] + w[i];
                    else
                        for (i = 0; i < q; i++) z[i] = z[i] - w[i];
                }
            }
        }
        /* steps 3 and 4 */
        for (i = 0; i < b; i++) v[i] = v[i] * sc[i];
    }
}

/* =====================================================================================
 * 6. Codecs
 * ===================================================================================== */

/* A codec (section 6): its parameter block, its streams, the checks on its payloads'
 * content, and its decoder, which writes W'[r0..r1) x [c0..c1) (float32, the
 * transformed domain) to dst with a row stride of ld floats. `col_align` is the column
 * granularity the decoder prefers (it decodes whole groups). */
typedef struct codec_def {
    unsigned id;
    const char *name;
    int quantizes;
    int needs_identity;
    pvqc_error (*parse_params)(pvqc_file *f, tensor_rec *t);
    unsigned (*streams)(const tensor_rec *t, stream_spec *out);
    pvqc_error (*check)(pvqc_file *f, tensor_rec *t);
    pvqc_error (*decode)(pvqc_file *f, tensor_rec *t, uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1, float *dst,
                         size_t ld);
    uint64_t (*col_align)(const tensor_rec *t);
    /* The symbols [*s0, *s1) of stream i that decode reads for rows [r0, r1). Streams
     * 0 .. i-1 are readable (payload_stream) over their own ranges: a codec whose row
     * starts depend on earlier streams (ectcq, eclattice) reads them there. */
    void (*stream_range)(pvqc_file *f, const tensor_rec *t, unsigned i, uint64_t r0, uint64_t r1, uint64_t *s0,
                         uint64_t *s1);
    /* Section 4, bounded streams: the number of distinct bounds of stream i, with N - 1 of
     * each in b->plans[k].nm1 (zeroed by the caller) and, for more than one, the earlier
     * stream that holds each symbol's index into them in b->index_stream (else -1); 0 if
     * the stream is not bounded (its bound is 2^width). */
    unsigned (*stream_bounds)(pvqc_file *f, const tensor_rec *t, unsigned i, rans_bounds *b);
} codec_def;

/* Stream i of a tensor: a raw payload as it lies in the file, or the active decoded rans
 * stream (set up by check_tensor and pvqc_decode_rows for this tensor). */
static stream_view raw_payload_view(const pvqc_file *f, const tensor_rec *t, unsigned i)
{
    stream_view s;
    s.bytes = f->data + t->payloads[i].offset;
    s.length = t->payloads[i].length;
    s.count = t->payloads[i].stream.count;
    s.width = t->payloads[i].stream.width;
    s.base = 0;
    return s;
}

static stream_view payload_stream(const pvqc_file *f, const tensor_rec *t, unsigned i)
{
    return t->payloads[i].coding != 0 ? f->active->view[i] : raw_payload_view(f, t, i);
}

/* Streams of symbols per row ("row_scales"), or of `per` symbols per group of `rows_per` rows. */
static void rows_to_symbols(uint64_t r0, uint64_t r1, uint64_t rows_per, uint64_t per, uint64_t *s0, uint64_t *s1)
{
    *s0 = r0 / rows_per * per;
    *s1 = (r1 + rows_per - 1u) / rows_per * per;
}

static unsigned no_stream_bounds(pvqc_file *f, const tensor_rec *t, unsigned i, rans_bounds *b)
{
    (void)f;
    (void)t;
    (void)i;
    (void)b;
    return 0;
}

/* ---- 6.1 The raw codec (id 0) ------------------------------------------------------- */

/* 3.4 Source dtypes: bits per element. */
static unsigned dtype_bits(unsigned dtype) { return dtype == PVQC_DTYPE_FLOAT32 ? 32u : 16u; }

/* 6.1 "Parameter block: empty." */
static pvqc_error raw_parse_params(pvqc_file *f, tensor_rec *t)
{
    if (t->cparams_len != 0)
        return fail(f, PVQC_ERR_PARAMS_INVALID,
                    "tensor " NAME_FMT ": raw codec: parameter block is %llu bytes but its fields use 0", NAME_ARG(t),
                    (ull)t->cparams_len);
    return PVQC_OK;
}

/* 6.1 "One stream, values: count = numel, width = the source dtype's bits (3.4)." */
static unsigned raw_streams(const tensor_rec *t, stream_spec *out)
{
    out[0].name = "values";
    out[0].count = t->numel;
    out[0].width = dtype_bits(t->dtype);
    return 1;
}

static pvqc_error raw_check(pvqc_file *f, tensor_rec *t)
{
    (void)f;
    (void)t;
    return PVQC_OK;
}

/* 10.1 / 3.4: "float16 and bfloat16 widen to float32 exactly". */
static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, u;
    float x;
    if (exp == 0x1F) u = sign | 0x7F800000u | (man << 13);
    else if (exp != 0) u = sign | ((exp + 112u) << 23) | (man << 13);
    else if (man == 0) u = sign;
    else {
        exp = 113;
        while ((man & 0x400u) == 0) { man <<= 1; exp--; }
        u = sign | (exp << 23) | ((man & 0x3FFu) << 13);
    }
    memcpy(&x, &u, sizeof x);
    return x;
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static float u32_as_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* 6.1 "Symbol i is the bit pattern of element i in row-major order. Decoded value: the
 * element itself (float16 and bfloat16 widen to float32 exactly)." */
static pvqc_error raw_decode(pvqc_file *f, tensor_rec *t, uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1,
                             float *dst, size_t ld)
{
    stream_view s = payload_stream(f, t, 0);
    for (uint64_t r = r0; r < r1; r++) {
        float *out = dst + (r - r0) * ld;
        for (uint64_t c = c0; c < c1; c++) {
            const uint8_t *p = s.bytes + (r * t->cols + c - s.base) * (s.width / 8u);
            if (t->dtype == PVQC_DTYPE_FLOAT32) out[c - c0] = u32_as_f32(le32(p));
            else if (t->dtype == PVQC_DTYPE_FLOAT16) out[c - c0] = f16_to_f32(le16(p));
            else out[c - c0] = bf16_to_f32(le16(p));
        }
    }
    return PVQC_OK;
}

static uint64_t raw_col_align(const tensor_rec *t)
{
    (void)t;
    return 1;
}

static void raw_stream_range(pvqc_file *f, const tensor_rec *t, unsigned i, uint64_t r0, uint64_t r1, uint64_t *s0,
                             uint64_t *s1)
{
    (void)f;
    (void)i;
    rows_to_symbols(r0, r1, 1, t->cols, s0, s1);
}

/* ---- 6.2 The PVQ codec (id 1) ------------------------------------------------------- */

/* pvq-enumeration.md section 2, closed form: "N(n, t) = sum_{i = 1 .. min(n, t)} 2^i *
 * C(n, i) * C(t-1, i-1) for t >= 1". Computed exactly in 32-bit limbs, the terms by
 * term_i = term_{i-1} * 2 (n-i+1) (t-i+1) / (i (i-1)) (an exact division). This is the
 * second, independent implementation of N (the table of pvq_table_build is the first).
 * Returns 0 if N(n, t) >= 2^1088 (then index_bits > 1024), else 1 with N in out[]. */
#define BIG_LIMBS 40u     /* 1280 bits */
#define BIG_CAP_LIMBS 34u /* values must stay below 2^1088 */
static int pvq_count_closed(unsigned n, unsigned t, uint32_t out[BIG_LIMBS])
{
    uint32_t term[BIG_LIMBS];
    unsigned i, l;
    memset(out, 0, BIG_LIMBS * sizeof(uint32_t));
    if (t == 0) { out[0] = 1; return 1; }
    if (n == 0) return 1;
    memset(term, 0, sizeof term);
    term[0] = 2u * n; /* i = 1: 2 * n * 1 */
    out[0] = term[0];
    for (i = 2; i <= n && i <= t; i++) {
        uint64_t mul = 2ull * (n - i + 1) * (t - i + 1), div = (uint64_t)i * (i - 1), carry = 0, rem = 0;
        for (l = 0; l < BIG_LIMBS; l++) {
            uint64_t x = (uint64_t)term[l] * mul + carry;
            term[l] = (uint32_t)x;
            carry = x >> 32;
        }
        for (l = BIG_LIMBS; l-- > 0;) {
            uint64_t x = (rem << 32) | term[l];
            term[l] = (uint32_t)(x / div);
            rem = x % div;
        }
        carry = 0;
        for (l = 0; l < BIG_LIMBS; l++) {
            uint64_t x = (uint64_t)out[l] + term[l] + carry;
            out[l] = (uint32_t)x;
            carry = x >> 32;
        }
        for (l = BIG_CAP_LIMBS; l < BIG_LIMBS; l++)
            if (out[l] != 0) return 0;
    }
    return 1;
}

/* pvq-enumeration.md section 1: "index_bits(d, k) = ceil(log2 N(d, k)), the smallest b
 * with N(d, k) <= 2^b". Returns PVQ_MAX_INDEX_BITS + 1 when it is beyond the limit. */
static unsigned pvq_index_bits(unsigned d, unsigned k)
{
    uint32_t n[BIG_LIMBS];
    unsigned l, bits = 0;
    if (!pvq_count_closed(d, k, n)) return PVQ_MAX_INDEX_BITS + 1;
    /* bit length of N - 1 (N >= 2 for d, k >= 1) */
    for (l = 0; l < BIG_LIMBS; l++) {
        if (n[l] != 0) { n[l]--; break; }
        n[l] = 0xFFFFFFFFu;
    }
    for (l = BIG_LIMBS; l-- > 0;)
        if (n[l] != 0) {
            uint32_t v = n[l];
            bits = 32u * l;
            while (v) { bits++; v >>= 1; }
            break;
        }
    return bits;
}

/* N(d, k) as `limbs` little-endian 64-bit limbs (it fits: index_bits <= 1024). */
static void pvq_count64(unsigned d, unsigned k, uint64_t *out, unsigned limbs)
{
    uint32_t n[BIG_LIMBS];
    pvq_count_closed(d, k, n);
    for (unsigned l = 0; l < limbs; l++)
        out[l] = 2u * l + 1u < BIG_LIMBS ? ((uint64_t)n[2 * l] | ((uint64_t)n[2 * l + 1] << 32)) : 0u;
}

/* Limbs of an integer of `bits` bits. */
static unsigned limbs_for_bits(unsigned bits) { return bits <= 64 ? 1u : (bits + 63u) / 64u; }

static unsigned mp_siglimbs(const uint64_t *a, unsigned n);

/* N(d, k) in out[] and the number of limbs it needs (index_bits + 1 bits are enough:
 * N(d, k) <= 2^index_bits). out has room for PVQ_MAX_INDEX_BITS / 64 + 2 limbs. */
static unsigned pvq_count_limbs(unsigned d, unsigned k, uint64_t *out)
{
    unsigned limbs = limbs_for_bits(pvq_index_bits(d, k) + 1u);
    pvq_count64(d, k, out, limbs);
    return mp_siglimbs(out, limbs);
}

/* 6.2.1 Parameter block: "group_size (D) u16 1 to 256, pulses (K) u16 1 to 4096,
 * gain_bits u8 0 to 8, gain_table 2^gain_bits x f32 finite values. The block is exactly
 * 5 + 4 * 2^gain_bits bytes. Values outside the allowed ranges, a non-finite table
 * entry, or index_bits(D, K) > 1024 (6.2.4) are params_invalid." */
static pvqc_error pvq_parse_params(pvqc_file *f, tensor_rec *t)
{
    reader r, table;
    unsigned d, k, gb, i;
    int read_ok;
    rd_init(&r, t->cparams, t->cparams_len);
    read_ok = rd_u16(&r, &d) && rd_u16(&r, &k) && rd_u8(&r, &gb) &&
              rd_sub(&r, gb <= PVQ_MAX_GAIN_BITS ? (4ull << gb) : 0u, &table);
    if (!read_ok || !rd_done(&r)) return params_misread(f, t, &r, read_ok, "pvq codec");
    if (d < 1 || d > PVQ_MAX_D)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": pvq group_size %u outside 1..%u", NAME_ARG(t),
                    d, PVQ_MAX_D);
    if (k < 1 || k > PVQ_MAX_K)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": pvq pulses %u outside 1..%u", NAME_ARG(t), k,
                    PVQ_MAX_K);
    if (gb > PVQ_MAX_GAIN_BITS)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": pvq gain_bits %u exceeds %u", NAME_ARG(t), gb,
                    PVQ_MAX_GAIN_BITS);
    t->pvq_index_bits = pvq_index_bits(d, k);
    if (t->pvq_index_bits > PVQ_MAX_INDEX_BITS)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": pvq index of N(%u, %u) needs more than %u bits",
                    NAME_ARG(t), d, k, PVQ_MAX_INDEX_BITS);
    for (i = 0; i < (1u << gb); i++) {
        if ((le32(table.data + 4u * i) & 0x7F800000u) == 0x7F800000u) /* exponent all ones: inf or NaN */
            return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": pvq gain_table holds a non-finite value",
                        NAME_ARG(t));
    }
    t->pvq_d = d;
    t->pvq_k = k;
    t->pvq_gain_bits = gb;
    t->pvq_gain_table = table.data;
    return PVQC_OK;
}

/* 6.2.2 "G_r = ceil(cols / D) groups" per row. */
static uint64_t pvq_groups_per_row(const tensor_rec *t) { return (t->cols + t->pvq_d - 1) / t->pvq_d; }

/* 6.2.3 Streams: row_scales (rows x 16 bits), gains (G x gain_bits), shapes
 * (G x index_bits(D, K)), G = rows * G_r. */
static unsigned pvq_streams(const tensor_rec *t, stream_spec *out)
{
    uint64_t groups = t->rows * pvq_groups_per_row(t); /* <= numel <= 2^48 since cols >= 1 */
    out[0].name = "row_scales";
    out[0].count = t->rows;
    out[0].width = 16;
    out[1].name = "gains";
    out[1].count = groups;
    out[1].width = t->pvq_gain_bits;
    out[2].name = "shapes";
    out[2].count = groups;
    out[2].width = t->pvq_index_bits;
    return 3;
}

/* Multi-limb helpers (little-endian uint64 limbs) for the enumeration. */
static int mp_less(const uint64_t *a, const uint64_t *b, unsigned n)
{
    while (n-- > 0)
        if (a[n] != b[n]) return a[n] < b[n];
    return 0;
}

static void mp_sub(uint64_t *a, const uint64_t *b, unsigned n)
{
    uint64_t borrow = 0;
    for (unsigned l = 0; l < n; l++) {
        uint64_t x = a[l], y = b[l], s = x - y, s2 = s - borrow;
        borrow = (uint64_t)((x < y) | (s < borrow));
        a[l] = s2;
    }
}

static void mp_add(uint64_t *a, const uint64_t *b, unsigned n)
{
    uint64_t carry = 0;
    for (unsigned l = 0; l < n; l++) {
        uint64_t x = a[l], s = x + b[l], s2 = s + carry;
        carry = (uint64_t)((s < x) | (s2 < s));
        a[l] = s2;
    }
}

/* Significant limbs of a (at least 1), looking at its first n. */
static unsigned mp_siglimbs(const uint64_t *a, unsigned n)
{
    while (n > 1 && a[n - 1] == 0) n--;
    return n;
}

#define PVQ_T(T_, n_, t_) ((T_)->counts + ((size_t)(n_) * ((T_)->k + 1u) + (t_)) * (T_)->limbs)

/* pvq-enumeration.md section 2, the recurrence: "N(n, 0) = 1; N(0, t) = 0 for t >= 1;
 * N(n, t) = N(n-1, t) + N(n, t-1) + N(n-1, t-1)" (section 8: "A table of N(n, t) for
 * 0 <= n <= d, 0 <= t <= k serves both directions; it can be filled by the recurrence
 * using additions only"). Every entry is <= N(d, k), so `limbs` limbs of N(d, k) hold
 * them all. The table is cached on the handle for the next tensor with the same (d, k). */
static pvqc_error pvq_table_get(pvqc_file *f, unsigned d, unsigned k, const pvq_table **out)
{
    pvq_table *T = &f->table;
    uint64_t entries, bytes, nd[PVQ_MAX_INDEX_BITS / 64u + 2u];
    unsigned limbs, n, t;
    if (T->counts && T->d == d && T->k == k) { *out = T; return PVQC_OK; }
    xfree(f, T->counts);
    T->counts = NULL;
    limbs = pvq_count_limbs(d, k, nd);
    entries = (uint64_t)(d + 1u) * (k + 1u);
    if (!mul_u64(entries, (uint64_t)limbs * sizeof(uint64_t), &bytes)) return out_of_memory(f, "pvq count table");
    T->counts = (uint64_t *)xalloc(f, bytes);
    if (!T->counts) return out_of_memory(f, "pvq count table");
    T->d = d;
    T->k = k;
    T->limbs = limbs;
    memset(T->counts, 0, (size_t)bytes);
    PVQ_T(T, 0, 0)[0] = 1;
    for (n = 1; n <= d; n++) {
        PVQ_T(T, n, 0)[0] = 1;
        for (t = 1; t <= k; t++) {
            uint64_t *dst = PVQ_T(T, n, t);
            memcpy(dst, PVQ_T(T, n - 1, t), limbs * sizeof(uint64_t));
            mp_add(dst, PVQ_T(T, n, t - 1), limbs);
            mp_add(dst, PVQ_T(T, n - 1, t - 1), limbs);
        }
    }
    *out = T;
    return PVQC_OK;
}

/* pvq-enumeration.md section 4, decoding an index, for tables of one limb:
 *     if b >= N(d, k): reject (payload_corrupt)
 *     k_rem = k
 *     for i = 0, 1, ..., d-1:
 *         r = d - i - 1
 *         if b < N(r, k_rem): y_i = 0
 *         else:
 *             b = b - N(r, k_rem); j = 1
 *             loop: c = N(r, k_rem - j)
 *                   if b < c: y_i = +j; exit loop
 *                   if b < 2 * c: y_i = -j; b = b - c; exit loop
 *                   b = b - 2 * c; j = j + 1
 *         k_rem = k_rem - |y_i|
 * ("b < 2 * c may equally be tested as: subtract c, then test b < c".)
 * Returns 0 if b >= N(d, k) (or, defensively, if the walk leaves the table). k may be any
 * pulse count up to the table's (pvqvr's K_g). */
static int pvq_decode_index1(const pvq_table *T, unsigned k, uint64_t b, int32_t *y)
{
    const unsigned d = T->d;
    const uint64_t *N = T->counts;
    const size_t row = (size_t)T->k + 1u; /* the table's stride */
    unsigned krem = k, i, j;
    if (b >= N[(size_t)d * row + k]) return 0;
    for (i = 0; i < d; i++) {
        const uint64_t *Nr = N + (size_t)(d - i - 1) * row;
        if (krem == 0) { y[i] = 0; continue; }
        if (b < Nr[krem]) { y[i] = 0; continue; }
        b -= Nr[krem];
        for (j = 1;; j++) {
            uint64_t c;
            if (j > krem) return 0;
            c = Nr[krem - j];
            if (b < c) { y[i] = (int32_t)j; break; }
            b -= c;
            if (b < c) { y[i] = -(int32_t)j; break; }
            b -= c;
        }
        krem -= j;
    }
    return 1;
}

/* The same procedure on multi-limb integers (section 8: "every intermediate value lies
 * in [0, N(d, k)]"). At position i, b < N(r + 1, k_rem), so the arithmetic runs over
 * the `m` significant limbs of that bound. b is overwritten. */
static int pvq_decode_index(const pvq_table *T, unsigned k, uint64_t *b, int32_t *y)
{
    const unsigned d = T->d;
    unsigned krem = k, i, j, m = T->limbs;
    if (!mp_less(b, PVQ_T(T, d, k), m)) return 0;
    m = mp_siglimbs(PVQ_T(T, d, k), m);
    for (i = 0; i < d; i++) {
        const unsigned r = d - i - 1;
        if (krem == 0) { y[i] = 0; continue; }
        if (mp_less(b, PVQ_T(T, r, krem), m)) {
            y[i] = 0;
        } else {
            mp_sub(b, PVQ_T(T, r, krem), m);
            for (j = 1;; j++) {
                const uint64_t *c;
                if (j > krem) return 0;
                c = PVQ_T(T, r, krem - j);
                if (mp_less(b, c, m)) { y[i] = (int32_t)j; break; }
                mp_sub(b, c, m);
                if (mp_less(b, c, m)) { y[i] = -(int32_t)j; break; }
                mp_sub(b, c, m);
            }
            krem -= j;
        }
        m = mp_siglimbs(PVQ_T(T, r, krem), m);
    }
    return 1;
}

/* 6.2.3 content rules: "A row scale that is not finite (float16 exponent all ones) is
 * payload_corrupt. ... A shape index b_g >= N(D, K) is payload_corrupt (never clamped)."
 * (q_g < 2^gain_bits always holds in the raw coding.) Checked over the whole tensor,
 * row scales first, then the shape indices in group order. */
static pvqc_error pvq_check(pvqc_file *f, tensor_rec *t)
{
    stream_view scales = payload_stream(f, t, 0), shapes = payload_stream(f, t, 2);
    uint64_t nd[PVQ_MAX_INDEX_BITS / 64u + 2u], b[PVQ_MAX_INDEX_BITS / 64u + 2u], g;
    unsigned limbs = pvq_count_limbs(t->pvq_d, t->pvq_k, nd);
    for (uint64_t r = 0; r < t->rows; r++)
        if (((stream_symbol(&scales, r) >> 10) & 0x1Fu) == 0x1Fu)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": pvq row scale of row %llu is not finite",
                        NAME_ARG(t), (ull)r);
    for (g = 0; g < shapes.count; g++) {
        int bad;
        if (limbs == 1) {
            bad = stream_symbol(&shapes, g) >= nd[0];
        } else {
            stream_symbol_limbs(&shapes, g, b, limbs);
            bad = !mp_less(b, nd, limbs);
        }
        if (bad)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": PVQ index of group %llu is >= N(%u, %u)",
                        NAME_ARG(t), (ull)g, t->pvq_d, t->pvq_k);
    }
    return PVQC_OK;
}

/* 6.2.5 Decoded value (bit-exact), for group g of row r:
 *     ss   = sum over i of y_i * y_i            (an exact integer, 1 <= ss <= K^2 <= 2^24)
 *     nrm  = sqrt(float32(ss))                  (float32 square root, correctly rounded)
 *     a    = float32(s_r) * gain_table[q_g]     (float16 -> float32 is exact)
 *     c    = a / nrm                            (float32 division)
 *     x_i  = c * float32(y_i)                   for i = 0 .. D-1
 * "x_i is the value of W' at row r, column c*D + i (discarded if that column is >= cols)."
 * One group's values, written where its columns fall in [c0, c1); shared by pvq and pvqvr (6.5.5). */
static void pvq_write_group(const int32_t *y, unsigned d, float s, float gain, uint64_t gc, uint64_t c0, uint64_t c1,
                            float *out)
{
    int32_t ss = 0;
    float nrm, a, c;
    for (unsigned i = 0; i < d; i++) ss += y[i] * y[i];
    nrm = sqrtf((float)ss);
    a = s * gain;
    c = a / nrm;
    for (unsigned i = 0; i < d; i++) {
        const uint64_t col = gc * d + i;
        if (col >= c0 && col < c1) out[col - c0] = c * (float)y[i];
    }
}

/* 6.2 Decodes the groups that cover columns [c0, c1) of rows [r0, r1). */
static pvqc_error pvq_decode(pvqc_file *f, tensor_rec *t, uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1,
                             float *dst, size_t ld)
{
    const unsigned d = t->pvq_d;
    const uint64_t gpr = pvq_groups_per_row(t);
    stream_view scales = payload_stream(f, t, 0), gains = payload_stream(f, t, 1), shapes = payload_stream(f, t, 2);
    const pvq_table *T = NULL;
    int32_t y[PVQ_MAX_D];
    uint64_t b[PVQ_MAX_INDEX_BITS / 64u + 2u];
    pvqc_error e = pvq_table_get(f, d, t->pvq_k, &T);
    if (e != PVQC_OK) return e;
    for (uint64_t r = r0; r < r1; r++) {
        const float s = f16_to_f32((uint16_t)stream_symbol(&scales, r));
        float *out = dst + (r - r0) * ld;
        for (uint64_t gc = c0 / d; gc * d < c1; gc++) {
            const uint64_t g = r * gpr + gc;
            const uint64_t q = t->pvq_gain_bits ? stream_symbol(&gains, g) : 0u;
            const float gain = lef32(t->pvq_gain_table + 4u * q);
            int ok;
            if (T->limbs == 1) {
                ok = pvq_decode_index1(T, T->k, stream_symbol(&shapes, g), y);
            } else {
                stream_symbol_limbs(&shapes, g, b, T->limbs);
                ok = pvq_decode_index(T, T->k, b, y);
            }
            if (!ok)
                return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": PVQ index of group %llu is >= N(%u, %u)",
                            NAME_ARG(t), (ull)g, d, t->pvq_k);
            pvq_write_group(y, d, s, gain, gc, c0, c1, out);
        }
    }
    return PVQC_OK;
}

static uint64_t pvq_col_align(const tensor_rec *t) { return t->pvq_d; }

static void pvq_stream_range(pvqc_file *f, const tensor_rec *t, unsigned i, uint64_t r0, uint64_t r1, uint64_t *s0,
                             uint64_t *s1)
{
    (void)f;
    rows_to_symbols(r0, r1, 1, i == 0 ? 1u : pvq_groups_per_row(t), s0, s1);
}

/* 6.2.3 (since 1.1): "the shapes stream is bounded by N(D, K)". */
static unsigned pvq_stream_bounds(pvqc_file *f, const tensor_rec *t, unsigned i, rans_bounds *b)
{
    uint64_t *nm1 = b->plans[0].nm1;
    (void)f;
    if (i != 2) return 0;
    pvq_count_limbs(t->pvq_d, t->pvq_k, nm1);
    for (unsigned l = 0; l < RANS_BOUND_LIMBS; l++) /* N - 1 (N >= 2) */
        if (nm1[l]-- != 0) break;
    return 1;
}

/* ---- 6.5 The variable-rate PVQ codec (id 4, spec/codecs/pvqvr.md) ------------------- */

#define PVQVR_MAX_K_COUNT 256u

static unsigned pvqvr_k(const tensor_rec *t, unsigned p) { return le16(t->vr_k_values + 2u * p); }

/* 6.5.1 Parameter block: "group_size (D) u16 1 to 256; k_count u16 1 to 256; k_values
 * k_count x u16 each 0 to 4096, strictly increasing; gain_bits u8 0 to 8; gain_table
 * 2^gain_bits x f32 finite values. The block is exactly 5 + 2 k_count + 4 2^gain_bits bytes
 * ... the fields are checked in the order of the table, the 1024-bit rule after k_values."
 * Here and below index_bits(D, 0) = 0 and N(D, 0) = 1. */
static pvqc_error pvqvr_parse_params(pvqc_file *f, tensor_rec *t)
{
    reader r, kv, table;
    unsigned d, kc, gb, i;
    int read_ok;
    rd_init(&r, t->cparams, t->cparams_len);
    read_ok = rd_u16(&r, &d) && rd_u16(&r, &kc) && rd_sub(&r, kc <= PVQVR_MAX_K_COUNT ? 2ull * kc : 0u, &kv) &&
              rd_u8(&r, &gb) && rd_sub(&r, gb <= PVQ_MAX_GAIN_BITS ? (4ull << gb) : 0u, &table);
    if (!read_ok || !rd_done(&r)) return params_misread(f, t, &r, read_ok, "pvqvr codec");
    if (d < 1 || d > PVQ_MAX_D)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": pvqvr group_size %u outside 1..%u", NAME_ARG(t),
                    d, PVQ_MAX_D);
    if (kc < 1 || kc > PVQVR_MAX_K_COUNT)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": pvqvr k_count %u outside 1..%u", NAME_ARG(t),
                    kc, PVQVR_MAX_K_COUNT);
    for (i = 0; i < kc; i++)
        if (le16(kv.data + 2u * i) > PVQ_MAX_K)
            return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": pvqvr k_values hold a pulse count above %u",
                        NAME_ARG(t), PVQ_MAX_K);
    for (i = 1; i < kc; i++)
        if (le16(kv.data + 2u * i) <= le16(kv.data + 2u * (i - 1u)))
            return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": pvqvr k_values are not strictly increasing",
                        NAME_ARG(t));
    t->vr_k_max = le16(kv.data + 2u * (kc - 1u));
    t->pvq_index_bits = t->vr_k_max ? pvq_index_bits(d, t->vr_k_max) : 0u;
    if (t->pvq_index_bits > PVQ_MAX_INDEX_BITS)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": pvqvr index of N(%u, %u) needs more than %u bits",
                    NAME_ARG(t), d, t->vr_k_max, PVQ_MAX_INDEX_BITS);
    if (gb > PVQ_MAX_GAIN_BITS)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": pvqvr gain_bits %u exceeds %u", NAME_ARG(t), gb,
                    PVQ_MAX_GAIN_BITS);
    for (i = 0; i < (1u << gb); i++)
        if ((le32(table.data + 4u * i) & 0x7F800000u) == 0x7F800000u)
            return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": pvqvr gain_table holds a non-finite value",
                        NAME_ARG(t));
    t->pvq_d = d;
    t->pvq_k = t->vr_k_max;
    t->pvq_gain_bits = gb;
    t->pvq_gain_table = table.data;
    t->vr_k_count = kc;
    t->vr_k_values = kv.data;
    /* "pulse_bits = ceil(log2 k_count), the number of bits of k_count - 1" */
    for (t->vr_pulse_bits = 0; ((kc - 1u) >> t->vr_pulse_bits) != 0; t->vr_pulse_bits++) {}
    return PVQC_OK;
}

/* 6.5.3 Streams: row_scales (rows x 16), gains (G x gain_bits), pulses (G x pulse_bits),
 * shapes (G x index_bits(D, K_max)); 6.5.2 "G = rows * G_r", G_r = ceil(cols / D). */
static unsigned pvqvr_streams(const tensor_rec *t, stream_spec *out)
{
    unsigned n = pvq_streams(t, out);
    out[3] = out[2];
    out[2].name = "pulses";
    out[2].width = t->vr_pulse_bits;
    return n + 1u;
}

static void pvqvr_stream_range(pvqc_file *f, const tensor_rec *t, unsigned i, uint64_t r0, uint64_t r1, uint64_t *s0,
                               uint64_t *s1)
{
    (void)f;
    rows_to_symbols(r0, r1, 1, i == 0 ? 1u : pvq_groups_per_row(t), s0, s1);
}

/* N(D, K) - 1 in nm1 (RANS_BOUND_LIMBS limbs), N(D, 0) = 1. */
static void pvqvr_count_minus_one(unsigned d, unsigned k, uint64_t *nm1)
{
    memset(nm1, 0, RANS_BOUND_LIMBS * sizeof(uint64_t));
    pvq_count_limbs(d, k, nm1);
    for (unsigned l = 0; l < RANS_BOUND_LIMBS; l++)
        if (nm1[l]-- != 0) break;
}

/* 6.5.3 "pulses ... bounded (section 4): every bound is k_count"; "shapes ... bounded: the
 * bound of symbol g is N(D, K_g) with K_g = k_values[p_g]". */
static unsigned pvqvr_stream_bounds(pvqc_file *f, const tensor_rec *t, unsigned i, rans_bounds *b)
{
    (void)f;
    if (i == 2) {
        b->plans[0].nm1[0] = t->vr_k_count - 1u;
        return 1;
    }
    if (i != 3) return 0;
    for (unsigned p = 0; p < t->vr_k_count; p++) pvqvr_count_minus_one(t->pvq_d, pvqvr_k(t, p), b->plans[p].nm1);
    if (t->vr_k_count > 1) b->index_stream = 2;
    return t->vr_k_count;
}

/* 6.5.3 content rules, over the whole tensor: "A row scale that is not finite ... A pulse
 * index p_g >= k_count is payload_corrupt ... A decoder checks the pulse indices before it
 * uses them to bound the shapes. A shape index b_g >= N(D, K_g) is payload_corrupt (never
 * clamped). In particular a group with K_g = 0 must have b_g = 0." */
static pvqc_error pvqvr_check(pvqc_file *f, tensor_rec *t)
{
    stream_view scales = payload_stream(f, t, 0), pulses = payload_stream(f, t, 2), shapes = payload_stream(f, t, 3);
    uint64_t b[RANS_BOUND_LIMBS], g, (*nm1)[RANS_BOUND_LIMBS];
    const unsigned limbs = limbs_for_bits(t->pvq_index_bits + 1u);
    for (uint64_t r = 0; r < t->rows; r++)
        if (((stream_symbol(&scales, r) >> 10) & 0x1Fu) == 0x1Fu)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": pvqvr row scale of row %llu is not finite",
                        NAME_ARG(t), (ull)r);
    for (g = 0; g < pulses.count; g++)
        if (stream_symbol(&pulses, g) >= t->vr_k_count)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": pvqvr pulse index of group %llu is >= k_count %u",
                        NAME_ARG(t), (ull)g, t->vr_k_count);
    nm1 = (uint64_t(*)[RANS_BOUND_LIMBS])xalloc(f, (uint64_t)t->vr_k_count * sizeof *nm1);
    if (!nm1) return out_of_memory(f, "pvqvr bounds");
    for (unsigned p = 0; p < t->vr_k_count; p++) pvqvr_count_minus_one(t->pvq_d, pvqvr_k(t, p), nm1[p]);
    for (g = 0; g < shapes.count; g++) {
        const unsigned p = (unsigned)stream_symbol(&pulses, g);
        memset(b, 0, sizeof b);
        if (shapes.width > 0) stream_symbol_limbs(&shapes, g, b, limbs);
        if (mp_less(nm1[p], b, RANS_BOUND_LIMBS)) { /* b > N - 1 */
            xfree(f, nm1);
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": pvqvr shape index of group %llu is >= N(%u, %u)",
                        NAME_ARG(t), (ull)g, t->pvq_d, pvqvr_k(t, p));
        }
    }
    xfree(f, nm1);
    return PVQC_OK;
}

/* 6.5.4 / 6.5.5 Decoded value, for group g of row r: "If K_g >= 1: exactly section 6.2.5
 * with the group's shape y" = decode(b_g, D, K_g); "If K_g = 0: x_i = +0.0 ... whatever s_r
 * and q_g are." Decodes the groups that cover columns [c0, c1) of rows [r0, r1). */
static pvqc_error pvqvr_decode(pvqc_file *f, tensor_rec *t, uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1,
                               float *dst, size_t ld)
{
    const unsigned d = t->pvq_d;
    const uint64_t gpr = pvq_groups_per_row(t);
    stream_view scales = payload_stream(f, t, 0), gains = payload_stream(f, t, 1), pulses = payload_stream(f, t, 2),
                shapes = payload_stream(f, t, 3);
    const pvq_table *T = NULL;
    int32_t y[PVQ_MAX_D];
    uint64_t b[PVQ_MAX_INDEX_BITS / 64u + 2u];
    if (t->vr_k_max > 0) {
        pvqc_error e = pvq_table_get(f, d, t->vr_k_max, &T);
        if (e != PVQC_OK) return e;
    }
    for (uint64_t r = r0; r < r1; r++) {
        const float s = f16_to_f32((uint16_t)stream_symbol(&scales, r));
        float *out = dst + (r - r0) * ld;
        for (uint64_t gc = c0 / d; gc * d < c1; gc++) {
            const uint64_t g = r * gpr + gc;
            const uint64_t q = t->pvq_gain_bits ? stream_symbol(&gains, g) : 0u;
            const uint64_t p = t->vr_pulse_bits ? stream_symbol(&pulses, g) : 0u;
            const unsigned k = p < t->vr_k_count ? pvqvr_k(t, (unsigned)p) : 0u;
            const float gain = lef32(t->pvq_gain_table + 4u * q);
            int ok = p < t->vr_k_count;
            if (ok && k == 0) {
                for (unsigned i = 0; i < d; i++) {
                    const uint64_t col = gc * d + i;
                    if (col >= c0 && col < c1) out[col - c0] = 0.0f;
                }
                continue;
            }
            if (ok && T->limbs == 1) {
                ok = pvq_decode_index1(T, k, stream_symbol(&shapes, g), y);
            } else if (ok) {
                stream_symbol_limbs(&shapes, g, b, T->limbs);
                ok = pvq_decode_index(T, k, b, y);
            }
            if (!ok)
                return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": pvqvr group %llu is corrupt", NAME_ARG(t),
                            (ull)g);
            pvq_write_group(y, d, s, gain, gc, c0, c1, out);
        }
    }
    return PVQC_OK;
}

/* ---- 6.3 The trellis codec (id 2, spec/codecs/trellis.md) -------------------------- */

#define TRELLIS_TILE 16u

/* 6.3.A The HYB table T: 512 rows of two binary16 bit patterns (normative listing). */
static const uint16_t TRELLIS_HYB[512][2] = {
    /*   0 */ {0x0000, 0xA9A9}, {0x35C2, 0x3D61}, {0x39A1, 0xB34E}, {0x3EA4, 0xBC4E},
    /*   4 */ {0x395A, 0x3B62}, {0x359D, 0xB489}, {0x3B7A, 0xBD21}, {0x3A0E, 0x37E4},
    /*   8 */ {0x40B8, 0x3A2D}, {0x3572, 0xBD0B}, {0x391D, 0x3065}, {0x3F4D, 0xADD7},
    /*  12 */ {0x2EEE, 0x3C3A}, {0x350E, 0xAA4B}, {0x3D71, 0xB8CF}, {0x35F4, 0x39E3},
    /*  16 */ {0x3DD1, 0x3E81}, {0x3AF1, 0xBAE5}, {0x36A6, 0x3608}, {0x3E0D, 0x3A3B},
    /*  20 */ {0x3677, 0xBB2E}, {0x2C92, 0x271C}, {0x3D8C, 0x30E0}, {0x296E, 0xB9F0},
    /*  24 */ {0x3672, 0x3FC6}, {0x3C6C, 0xB4A4}, {0x306F, 0x36F3}, {0x3ADF, 0x3D5C},
    /*  28 */ {0x39E5, 0xB83B}, {0x3E58, 0xBFBC}, {0x3C37, 0x3A35}, {0x35C9, 0xB865},
    /*  32 */ {0x38A0, 0xBEF5}, {0x3C1B, 0x3486}, {0x2C7B, 0xB519}, {0x2C4D, 0x3DF6},
    /*  36 */ {0x3A98, 0xAD26}, {0x401A, 0xBA28}, {0x37D7, 0x3C7F}, {0x380B, 0xB40A},
    /*  40 */ {0x3D1C, 0xBC86}, {0x398A, 0x39A2}, {0x2C47, 0xACAC}, {0x392C, 0xBCF7},
    /*  44 */ {0x396F, 0x34F5}, {0x3FDC, 0x3548}, {0x302E, 0xBC8E}, {0x375B, 0x274E},
    /*  48 */ {0x3E41, 0xB50F}, {0x3341, 0x3B0D}, {0x3CF2, 0x4064}, {0x3C6F, 0xB9A0},
    /*  52 */ {0x3621, 0x3850}, {0x3DAA, 0x3CB1}, {0x391A, 0xBADB}, {0x346D, 0x31E5},
    /*  56 */ {0x3DAB, 0x37A8}, {0x3330, 0xBA67}, {0x26CC, 0xC067}, {0x3CEA, 0xAA53},
    /*  60 */ {0x2AB9, 0x3889}, {0x38BF, 0x3E6C}, {0x3B48, 0xB643}, {0x2AA3, 0x2EBA},
    /*  64 */ {0x3B66, 0x3C38}, {0x384D, 0xB830}, {0x3C18, 0xBEDF}, {0x3C12, 0x384A},
    /*  68 */ {0x323F, 0xB6C2}, {0x345D, 0xBE4E}, {0x3B41, 0x2EF2}, {0x4106, 0xB5C3},
    /*  72 */ {0x3412, 0x3D2A}, {0x3929, 0xB133}, {0x3E72, 0xBB2F}, {0x388F, 0x3B43},
    /*  76 */ {0x346E, 0xB23B}, {0x3BB2, 0xBC9A}, {0x3957, 0x3803}, {0x401A, 0x3A9C},
    /*  80 */ {0x3668, 0xBCAA}, {0x3869, 0x310A}, {0x3EDD, 0x2771}, {0x287E, 0x3BF3},
    /*  84 */ {0x303D, 0xA1F3}, {0x3D4A, 0xB7B2}, {0x34B6, 0x398D}, {0x3CF0, 0x3E54},
    /*  88 */ {0x3AF7, 0xBA0C}, {0x3538, 0x356A}, {0x3D7F, 0x3A9F}, {0x36E7, 0xBA78},
    /*  92 */ {0x38A2, 0xC0FB}, {0x3D32, 0x3367}, {0x2D4B, 0xB94F}, {0x340F, 0x3F55},
    /*  96 */ {0x3C39, 0xB27C}, {0x2D49, 0x355A}, {0x39CD, 0x3D45}, {0x39B2, 0xB712},
    /* 100 */ {0x3E15, 0xBE7B}, {0x3B8E, 0x3A62}, {0x3595, 0xB75B}, {0x3935, 0xBE60},
    /* 104 */ {0x3B89, 0x3541}, {0x2943, 0xB084}, {0x27E0, 0xBDA4}, {0x3A0E, 0xA5E5},
    /* 108 */ {0x3FB7, 0xB8A3}, {0x363E, 0x3C5B}, {0x3701, 0xB1DD}, {0x3D18, 0xBBDE},
    /* 112 */ {0x38CC, 0x3994}, {0x4042, 0x3DD1}, {0x3981, 0xBC85}, {0x38BC, 0x351C},
    /* 116 */ {0x3F39, 0x36DE}, {0x3237, 0xBC3E}, {0x3590, 0x29C4}, {0x3DFA, 0xB261},
    /* 120 */ {0x30F3, 0x3A9E}, {0x3BB5, 0x4007}, {0x3C5B, 0xB8BE}, {0x34DE, 0x37EC},
    /* 124 */ {0x3D03, 0x3CC0}, {0x3932, 0xBA17}, {0x3010, 0x2E3A}, {0x3D3A, 0x3854},
    /* 128 */ {0x3410, 0xB9BC}, {0x311A, 0xC008}, {0x3CA3, 0x27EC}, {0x2244, 0x37AA},
    /* 132 */ {0x374E, 0x3E30}, {0x3AF7, 0xB4EA}, {0x404A, 0xBDE0}, {0x3A73, 0x3C37},
    /* 136 */ {0x381E, 0xB703}, {0x3C3B, 0xBE21}, {0x3B5D, 0x3889}, {0x3177, 0xB502},
    /* 140 */ {0x35B5, 0xBDE0}, {0x3AA4, 0x30FF}, {0x4079, 0xB169}, {0x3111, 0x3CEF},
    /* 144 */ {0x389B, 0xAEB4}, {0x3E43, 0xB9EB}, {0x379C, 0x3B12}, {0x30B3, 0xADB6},
    /* 148 */ {0x3BD8, 0xBC19}, {0x38A1, 0x37FA}, {0x3F4F, 0x3B0E}, {0x3734, 0xBC4A},
    /* 152 */ {0x3749, 0x313D}, {0x3E73, 0x3055}, {0x277C, 0xBB68}, {0x38C8, 0x411B},
    /* 156 */ {0x3D1C, 0xB5ED}, {0x3323, 0x3923}, {0x3C32, 0x3E2F}, {0x3AEB, 0xB93D},
    /* 160 */ {0x3379, 0x346F}, {0x3CF9, 0x3AF0}, {0x372B, 0xB9C2}, {0x393F, 0xC050},
    /* 164 */ {0x3CD7, 0x34CD}, {0x2F27, 0xB8A0}, {0x2FD7, 0x3EEE}, {0x3BFF, 0xAFE5},
    /* 168 */ {0x2815, 0x31C5}, {0x38CF, 0x3D27}, {0x396C, 0xB5C4}, {0x3DF5, 0xBD8E},
    /* 172 */ {0x3AB5, 0x3A7C}, {0x3521, 0xB5E5}, {0x39B3, 0xBDD4}, {0x3AD8, 0x35D3},
    /* 176 */ {0x413D, 0x35F2}, {0x2F90, 0xBD50}, {0x3976, 0x2660}, {0x3F4F, 0xB6B1},
    /* 180 */ {0x34C3, 0x3C2F}, {0x3592, 0xAF9F}, {0x3D0C, 0xBAC6}, {0x3815, 0x3973},
    /* 184 */ {0x3F1F, 0x3D99}, {0x39C3, 0xBC16}, {0x3804, 0x350E}, {0x3EA8, 0x381F},
    /* 188 */ {0x33EF, 0xBBD5}, {0x3214, 0x28D2}, {0x3DB1, 0xADFE}, {0x2DCE, 0x3A20},
    /* 192 */ {0x3A0E, 0x3F98}, {0x3C40, 0xB7D4}, {0x3356, 0x36FB}, {0x3C6A, 0x3CC8},
    /* 196 */ {0x3936, 0xB957}, {0x3D3B, 0xC0A8}, {0x3CCB, 0x38BF}, {0x345A, 0xB90B},
    /* 200 */ {0x345F, 0xBF71}, {0x3C58, 0x2E86}, {0x23E8, 0xB5F9}, {0x3553, 0x3DF3},
    /* 204 */ {0x3A95, 0xB35B}, {0x3FD6, 0xBCA2}, {0x398C, 0x3C2D}, {0x37AC, 0xB5B1},
    /* 208 */ {0x3C58, 0xBD79}, {0x3A9B, 0x38B4}, {0x2EFF, 0xB180}, {0x36DE, 0xBD74},
    /* 212 */ {0x39FF, 0x3233}, {0x401A, 0xA485}, {0x2C90, 0x3CAF}, {0x37E8, 0xAB2F},
    /* 216 */ {0x3E12, 0xB8C6}, {0x3633, 0x3AD1}, {0x3EDA, 0x402B}, {0x3BEB, 0xBB3D},
    /* 220 */ {0x37DE, 0x37C1}, {0x3E90, 0x3B74}, {0x37D7, 0xBBD4}, {0x358F, 0x30DC},
    /* 224 */ {0x3E0B, 0x3357}, {0x2D65, 0xBAD4}, {0x35F0, 0x4084}, {0x3CE9, 0xB44C},
    /* 228 */ {0x3115, 0x38A3}, {0x3B12, 0x3E0D}, {0x3ACC, 0xB877}, {0x300A, 0x3180},
    /* 232 */ {0x3C79, 0x3B2C}, {0x3744, 0xB90D}, {0x39D7, 0xBFB4}, {0x3C7B, 0x35BD},
    /* 236 */ {0x3018, 0xB7C3}, {0x1E3E, 0x3E8B}, {0x3B80, 0xAAB9}, {0x412E, 0xBACE},
    /* 240 */ {0x37C6, 0x3D04}, {0x3911, 0xB48C}, {0x3DDF, 0xBCC8}, {0x39E4, 0x3A82},
    /* 244 */ {0x3458, 0xB45D}, {0x3A1B, 0xBD50}, {0x3A25, 0x363B}, {0x4080, 0x3797},
    /* 248 */ {0x3240, 0xBCFB}, {0x38D0, 0x2BFC}, {0x3EF1, 0xB46D}, {0x32D1, 0x3BFB},
    /* 252 */ {0x32E0, 0xAB64}, {0x3CFA, 0xB9C1}, {0x36CF, 0x393D}, {0x3E25, 0x3D89},
    /* 256 */ {0x39F0, 0xBB55}, {0x368D, 0x34C3}, {0x3E20, 0x38B6}, {0x34AB, 0xBB2B},
    /* 260 */ {0x30B5, 0xC181}, {0x3D64, 0x165C}, {0x288F, 0x3993}, {0x38AC, 0x3F3A},
    /* 264 */ {0x3C1D, 0xB648}, {0x310F, 0x35B5}, {0x3BB6, 0x3CC9}, {0x3926, 0xB89D},
    /* 268 */ {0x3D0E, 0xBFBD}, {0x3C5F, 0x3914}, {0x3472, 0xB855}, {0x35F4, 0xBEE4},
    /* 272 */ {0x3C0A, 0x313B}, {0x2665, 0xB35B}, {0x330A, 0x3DB2}, {0x3A25, 0xB11F},
    /* 276 */ {0x3F6A, 0xBB79}, {0x38B2, 0x3C1C}, {0x36DF, 0xB46B}, {0x3C6D, 0xBCDE},
    /* 280 */ {0x39DB, 0x38CA}, {0x4115, 0x3C98}, {0x37DC, 0xBD09}, {0x3953, 0x330D},
    /* 284 */ {0x3F9C, 0x2F1A}, {0x1ED1, 0xBC6A}, {0x3652, 0xA4AD}, {0x3DDF, 0xB776},
    /* 288 */ {0x34E4, 0x3A7F}, {0x3D69, 0x3F8E}, {0x3BEC, 0xBA53}, {0x3681, 0x3754},
    /* 292 */ {0x3DE6, 0x3BCA}, {0x3829, 0xBB14}, {0x32CF, 0x2F13}, {0x3DA4, 0x34FD},
    /* 296 */ {0x3026, 0xBA37}, {0x3267, 0x4026}, {0x3CB1, 0xB19C}, {0x2E91, 0x3809},
    /* 300 */ {0x39E2, 0x3DE8}, {0x3A9C, 0xB778}, {0x4008, 0xBFEA}, {0x3BFC, 0x3B55},
    /* 304 */ {0x372E, 0xB859}, {0x3A5D, 0xBEF4}, {0x3C1E, 0x3685}, {0x3017, 0xB614},
    /* 308 */ {0x2E3D, 0xBE2A}, {0x3AF7, 0x20DD}, {0x4087, 0xB8A2}, {0x3610, 0x3CDA},
    /* 312 */ {0x389F, 0xB2DB}, {0x3DC9, 0xBC1A}, {0x391B, 0x3A76}, {0x31F6, 0xB13D},
    /* 316 */ {0x3A6E, 0xBCD2}, {0x3971, 0x3677}, {0x4007, 0x388A}, {0x3433, 0xBCA4},
    /* 320 */ {0x3818, 0x2DA1}, {0x3E97, 0xB0D3}, {0x305B, 0x3B8A}, {0x3C83, 0x4144},
    /* 324 */ {0x3CE1, 0xB8CD}, {0x3587, 0x38F2}, {0x3D58, 0x3D81}, {0x3A0A, 0xBA84},
    /* 328 */ {0x34FD, 0x342A}, {0x3D9F, 0x3935}, {0x3536, 0xBA7D}, {0x3482, 0xC0AA},
    /* 332 */ {0x3D16, 0x2D8B}, {0x2103, 0xB8F6}, {0x36EB, 0x3EE6}, {0x3BE6, 0xB4DA},
    /* 336 */ {0x2D9F, 0x33B2}, {0x3AAC, 0x3CC1}, {0x3902, 0xB7D5}, {0x3D0E, 0xBEB6},
    /* 340 */ {0x3BE9, 0x3956}, {0x3450, 0xB72E}, {0x3753, 0xBE61}, {0x3B72, 0x32E4},
    /* 344 */ {0x41D0, 0xAE5A}, {0x2F86, 0x3D6E}, {0x39A4, 0xAE4B}, {0x3F17, 0xB9FF},
    /* 348 */ {0x37CA, 0x3C02}, {0x35C3, 0xB25D}, {0x3C7A, 0xBC4E}, {0x3920, 0x38CC},
    /* 352 */ {0x402B, 0x3C75}, {0x3858, 0xBCA0}, {0x389F, 0x3387}, {0x3F14, 0x331F},
    /* 356 */ {0x2CD4, 0xBC22}, {0x3438, 0x1D95}, {0x3DA8, 0xB58E}, {0x3360, 0x3A1C},
    /* 360 */ {0x3C71, 0x3F2C}, {0x3BDC, 0xB975}, {0x352B, 0x36AD}, {0x3D4C, 0x3C07},
    /* 364 */ {0x3851, 0xBA56}, {0x3BD0, 0xC195}, {0x3D3F, 0x3622}, {0x3144, 0xB992},
    /* 368 */ {0x2B3C, 0x3FB8}, {0x3C74, 0xADD2}, {0x2B1C, 0x369B}, {0x38CC, 0x3DBF},
    /* 372 */ {0x3A5A, 0xB619}, {0x3F37, 0xBE30}, {0x3B12, 0x3B6C}, {0x36E6, 0xB74C},
    /* 376 */ {0x3ACF, 0xBE4B}, {0x3B82, 0x3723}, {0x2EA1, 0xB404}, {0x320F, 0xBDCA},
    /* 380 */ {0x3A64, 0x2BF8}, {0x402A, 0xB630}, {0x347C, 0x3CAA}, {0x3814, 0xB0D6},
    /* 384 */ {0x3DB1, 0xBAF8}, {0x385B, 0x3A58}, {0x4094, 0x3FD5}, {0x3AAD, 0xBC58},
    /* 388 */ {0x38BD, 0x3686}, {0x3F4D, 0x3931}, {0x351D, 0xBC4B}, {0x368E, 0x2E56},
    /* 392 */ {0x3E3E, 0xA8E0}, {0x2C55, 0x3B0D}, {0x3A57, 0x4082}, {0x3CC0, 0xB7D2},
    /* 396 */ {0x3454, 0x3891}, {0x3CA5, 0x3D78}, {0x3A11, 0xB9B9}, {0x3274, 0x3229},
    /* 400 */ {0x3D23, 0x399F}, {0x3595, 0xB9CD}, {0x3654, 0xC02E}, {0x3CC4, 0x312D},
    /* 404 */ {0x29AB, 0xB846}, {0x34C3, 0x3E96}, {0x3B84, 0xB312}, {0x416D, 0xBDD2},
    /* 408 */ {0x39B2, 0x3CB3}, {0x38C7, 0xB67F}, {0x3D15, 0xBDE2}, {0x3B1A, 0x3983},
    /* 412 */ {0x33CC, 0xB59A}, {0x3841, 0xBDE4}, {0x3ACB, 0x341E}, {0x40CE, 0x2D09},
    /* 416 */ {0x266F, 0x3D27}, {0x3912, 0xA9D4}, {0x3ECD, 0xB8B6}, {0x364A, 0x3BC0},
    /* 420 */ {0x3425, 0xAFC2}, {0x3C7E, 0xBB8F}, {0x386A, 0x38B9}, {0x3F3F, 0x3C85},
    /* 424 */ {0x38AD, 0xBC39}, {0x37C6, 0x3393}, {0x3E96, 0x351F}, {0x3051, 0xBBAC},
    /* 428 */ {0x3623, 0x4245}, {0x3D6D, 0xB3A0}, {0x3135, 0x39A9}, {0x3B50, 0x3EE5},
    /* 432 */ {0x3BBB, 0xB8A2}, {0x33B5, 0x35BB}, {0x3CBB, 0x3C20}, {0x3865, 0xB99B},
    /* 436 */ {0x3B99, 0xC073}, {0x3CDA, 0x371C}, {0x3206, 0xB8E3}, {0x2C58, 0xBF37},
    /* 440 */ {0x3C32, 0xA3DC}, {0x2503, 0x34AD}, {0x3798, 0x3D92}, {0x3A07, 0xB4D2},
    /* 444 */ {0x3EDE, 0xBD23}, {0x3A31, 0x3B70}, {0x3665, 0xB5EB}, {0x3B2E, 0xBDB1},
    /* 448 */ {0x3AC8, 0x3799}, {0x4253, 0x3A70}, {0x3452, 0xBD6B}, {0x39C6, 0x2EBB},
    /* 452 */ {0x3FC7, 0xB34D}, {0x3215, 0x3C75}, {0x36D0, 0xAE22}, {0x3D93, 0xB9D8},
    /* 456 */ {0x374A, 0x3A27}, {0x3EF6, 0x3ECF}, {0x3AD9, 0xBBC6}, {0x3808, 0x3663},
    /* 460 */ {0x3EA6, 0x39C1}, {0x35DF, 0xBBE3}, {0x3494, 0x2DBF}, {0x3DE6, 0x2C03},
    /* 464 */ {0x2012, 0x3A84}, {0x389D, 0x4026}, {0x3C9A, 0xB62B}, {0x3271, 0x3815},
    /* 468 */ {0x3C04, 0x3D6D}, {0x3A04, 0xB8F6}, {0x3FF1, 0xC190}, {0x3CAB, 0x39F5},
    /* 472 */ {0x35C8, 0xB91A}, {0x37E6, 0xBF9B}, {0x3C71, 0x3345}, {0x2C35, 0xB6FC},
    /* 476 */ {0x31A4, 0x3E46}, {0x3B14, 0xB0B1}, {0x4077, 0xBC0C}, {0x38C7, 0x3C9D},
    /* 480 */ {0x3876, 0xB53B}, {0x3D1B, 0xBD2B}, {0x3A4F, 0x399C}, {0x3221, 0xB3AA},
    /* 484 */ {0x38C1, 0xBD6B}, {0x3A1F, 0x34A0}, {0x404E, 0x32E1}, {0x2B5F, 0xBCDC},
    /* 488 */ {0x386C, 0x9986}, {0x3E87, 0xB720}, {0x34E7, 0x3B6E}, {0x4015, 0x423B},
    /* 492 */ {0x3C7B, 0xBA90}, {0x3773, 0x3890}, {0x3E65, 0x3C9D}, {0x38ED, 0xBBA4},
    /* 496 */ {0x3632, 0x331A}, {0x3E1E, 0x367B}, {0x31E9, 0xBB0D}, {0x3053, 0x40ED},
    /* 500 */ {0x3D2E, 0xB074}, {0x2E9A, 0x3923}, {0x39F4, 0x3EA7}, {0x3B8A, 0xB7B7},
    /* 504 */ {0x3107, 0x3456}, {0x3C34, 0x3C31}, {0x3864, 0xB8E3}, {0x3BE0, 0xBFBE},
    /* 508 */ {0x3C75, 0x37ED}, {0x3260, 0xB829}, {0x31A9, 0xBEC0}, {0x3BD7, 0x2A8F},
};

/* 6.3.6: V, the values per step: 1 for 1mad and 3inst, 2 for hyb. */
static unsigned trellis_v(unsigned code) { return code == 2u ? 2u : 1u; }

/* 6.3.1 Parameter block (8 bytes): "code u8: 0 1mad, 1 3inst, 2 hyb; L u8: k*V <= L <= 16;
 * k u8: 1 to 8; flags u8: bit 0 row_scales, bits 1-7 reserved, 0; scale f32: finite.
 * An unknown code, k outside 1..8, L outside k*V .. 16, a reserved flag bit that is set,
 * or a scale that is not finite is params_invalid." */
static pvqc_error trellis_parse_params(pvqc_file *f, tensor_rec *t)
{
    reader r;
    unsigned code, L, k, flags;
    uint32_t scale_bits;
    int read_ok;
    rd_init(&r, t->cparams, t->cparams_len);
    read_ok = rd_u8(&r, &code) && rd_u8(&r, &L) && rd_u8(&r, &k) && rd_u8(&r, &flags) && rd_u32(&r, &scale_bits);
    if (!read_ok || !rd_done(&r)) return params_misread(f, t, &r, read_ok, "trellis codec");
    if (code > 2)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": trellis code %u unknown (0 1mad, 1 3inst, 2 hyb)",
                    NAME_ARG(t), code);
    if (k < 1 || k > 8)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": trellis k %u outside 1..8", NAME_ARG(t), k);
    if (L < k * trellis_v(code) || L > 16)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": trellis L %u outside k*V..16 = %u..16", NAME_ARG(t),
                    L, k * trellis_v(code));
    if (flags & ~1u)
        return fail(f, PVQC_ERR_PARAMS_INVALID,
                    "tensor " NAME_FMT ": trellis flags 0x%02x set reserved bits (only bit 0, row_scales, is defined)",
                    NAME_ARG(t), flags);
    if ((scale_bits & 0x7F800000u) == 0x7F800000u)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": trellis scale is not finite", NAME_ARG(t));
    t->tr_code = code;
    t->tr_L = L;
    t->tr_k = k;
    t->tr_row_scales = flags & 1u;
    t->tr_scale = u32_as_f32(scale_bits);
    return PVQC_OK;
}

/* 6.3.2 "TR = ceil(rows / 16) x TC = ceil(cols / 16) tiles". */
static uint64_t trellis_tile_cols(const tensor_rec *t) { return (t->cols + TRELLIS_TILE - 1) / TRELLIS_TILE; }
static uint64_t trellis_tile_rows(const tensor_rec *t) { return (t->rows + TRELLIS_TILE - 1) / TRELLIS_TILE; }

/* 6.3.4 Streams: trellis (8k * TR * TC symbols of 32 bits: word u_j of tile m is symbol
 * 8k m + j), then row_scales (rows x 16) if the flag is set. TR * TC <= numel. */
static unsigned trellis_streams(const tensor_rec *t, stream_spec *out)
{
    out[0].name = "trellis";
    out[0].count = 8u * t->tr_k * trellis_tile_rows(t) * trellis_tile_cols(t);
    out[0].width = 32;
    if (!t->tr_row_scales) return 1;
    out[1].name = "row_scales";
    out[1].count = t->rows;
    out[1].width = 16;
    return 2;
}

/* 6.3.4 "A row scale that is not finite (float16 exponent field all ones) is
 * payload_corrupt. No other content of either stream is invalid." */
static pvqc_error trellis_check(pvqc_file *f, tensor_rec *t)
{
    stream_view rs;
    if (!t->tr_row_scales) return PVQC_OK;
    rs = payload_stream(f, t, 1);
    for (uint64_t r = 0; r < t->rows; r++)
        if (((stream_symbol(&rs, r) >> 10) & 0x1Fu) == 0x1Fu)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": trellis row scale of row %llu is not finite",
                        NAME_ARG(t), (ull)r);
    return PVQC_OK;
}

/* 6.3.6.1 1mad: "x = (34038481 * s + 76625530) mod 2^32; sigma = the sum of the four bytes
 * of x; c_0 = float32(sigma - 510)". */
static float trellis_1mad(uint32_t s)
{
    uint32_t x = 34038481u * s + 76625530u;
    int sigma = (int)((x & 255u) + ((x >> 8) & 255u) + ((x >> 16) & 255u) + (x >> 24));
    return (float)(sigma - 510);
}

/* 6.3.6.2 3inst: "x = (89226354 * s + 64248484) mod 2^32; r = (x AND 0x8FFF8FFF) XOR
 * 0x3B603B60; c_0 = float32(binary16(f32(r >> 16) + f32(r AND 0xFFFF)))" (the float32 sum is
 * exact; binary16 rounds to nearest, ties to even). */
static uint16_t f32_to_f16(float x);
static float trellis_3inst(uint32_t s)
{
    uint32_t x = 89226354u * s + 64248484u;
    uint32_t r = (x & 0x8FFF8FFFu) ^ 0x3B603B60u;
    float sum = f16_to_f32((uint16_t)(r >> 16)) + f16_to_f32((uint16_t)(r & 0xFFFFu));
    return f16_to_f32(f32_to_f16(sum));
}

/* 6.3.6.3 hyb: "x = (s * s + s) mod 2^32; i = (x >> 6) AND 511; c_0 = f32(T[i][0] XOR 0x8000)
 * if (x >> 15) AND 1 = 1, else f32(T[i][0]); c_1 = f32(T[i][1])". */
static float trellis_hyb(uint32_t s, unsigned v)
{
    uint32_t x = s * s + s;
    uint32_t i = (x >> 6) & 511u;
    if (v == 1) return f16_to_f32(TRELLIS_HYB[i][1]);
    return f16_to_f32((uint16_t)(TRELLIS_HYB[i][0] ^ (((x >> 15) & 1u) ? 0x8000u : 0u)));
}

/* 6.3.7 "W'[r, col] = c_v(s_t) * a_r" for value n = t*V + v of tile (I, J), with 6.3.3's
 * state "s_t = sum over i = 0 .. L-1 of b[(p + i) mod N] * 2^(L-1-i), p = t*k*V" read from
 * the tile's words ("bit b[i] is bit 31 - (i mod 32) of word u_{i div 32}"), and 6.3.5's
 * factor "a_r = scale, or float32(h_r) * scale". */
static pvqc_error trellis_decode(pvqc_file *f, tensor_rec *t, uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1,
                                 float *dst, size_t ld)
{
    const unsigned k = t->tr_k, L = t->tr_L, V = trellis_v(t->tr_code);
    const unsigned W = 8u * k;
    const uint64_t tc = trellis_tile_cols(t);
    stream_view words = payload_stream(f, t, 0), rs;
    if (t->tr_row_scales) rs = payload_stream(f, t, 1);
    for (uint64_t r = r0; r < r1; r++) {
        const float a = t->tr_row_scales ? f16_to_f32((uint16_t)stream_symbol(&rs, r)) * t->tr_scale : t->tr_scale;
        float *out = dst + (r - r0) * ld;
        for (uint64_t c = c0; c < c1; c++) {
            const uint64_t tile = (r / TRELLIS_TILE) * tc + c / TRELLIS_TILE;
            const unsigned n = (unsigned)((r % TRELLIS_TILE) * TRELLIS_TILE + c % TRELLIS_TILE);
            const unsigned step = n / V, v = n % V;
            const unsigned p = step * k * V, q = p / 32u, o = p % 32u;
            /* the funnel shift of 6.3.3: o + L <= 47, so words q and q + 1 (mod W) hold the state */
            const uint64_t hi = stream_symbol(&words, tile * W + q);
            const uint64_t lo = stream_symbol(&words, tile * W + (q + 1u) % W);
            const uint32_t s = (uint32_t)((((hi << 32) | lo) >> (64u - L - o)) & ((1u << L) - 1u));
            float code;
            if (t->tr_code == 0) code = trellis_1mad(s);
            else if (t->tr_code == 1) code = trellis_3inst(s);
            else code = trellis_hyb(s, v);
            out[c - c0] = code * a;
        }
    }
    return PVQC_OK;
}

static uint64_t trellis_col_align(const tensor_rec *t)
{
    (void)t;
    return TRELLIS_TILE;
}

static void trellis_stream_range(pvqc_file *f, const tensor_rec *t, unsigned i, uint64_t r0, uint64_t r1, uint64_t *s0,
                                 uint64_t *s1)
{
    (void)f;
    if (i == 0) rows_to_symbols(r0, r1, TRELLIS_TILE, 8u * t->tr_k * trellis_tile_cols(t), s0, s1);
    else rows_to_symbols(r0, r1, 1, 1, s0, s1);
}

/* ---- 6.4 The lattice codec (id 3, spec/codecs/lattice.md) -------------------------- */

/* 6.4.4.2 The pattern table, as 2A (odd integers 1, 3, 5): "PAT[0] .. PAT[226]: every
 * pattern with |A|^2 <= 10, in ascending lexicographic order ... PAT[227] .. PAT[255]: the
 * vectors of {1/2, 3/2}^8 with |A|^2 = 12 ... sorted in ascending lexicographic order, of
 * which the first 29 are taken." Enumerating {1, 3, 5}^8 with coordinate 0 as the most
 * significant digit visits the vectors in ascending lexicographic order. */
static void lattice_patterns(int8_t pat[256][8])
{
    int n = 0, pass;
    for (pass = 0; pass < 2; pass++)
        for (unsigned idx = 0; idx < 6561u && n < 256; idx++) {
            int8_t a[8];
            unsigned x = idx;
            int sq = 0, has5 = 0;
            for (int i = 7; i >= 0; i--) {
                a[i] = (int8_t)(1 + 2 * (int)(x % 3u));
                x /= 3u;
                sq += a[i] * a[i];
                has5 |= a[i] == 5;
            }
            /* |A|^2 = sq / 4: pass 0 takes sq <= 40; pass 1 the {1, 3} vectors with sq = 48 */
            if ((pass == 0 && sq <= 40) || (pass == 1 && !has5 && sq == 48)) {
                memcpy(pat[n], a, 8);
                n++;
            }
        }
}

/* 6.4.5 Conway and Sloane's nearest point of E8 to z: "round every coordinate of z to the
 * nearest integer; if the rounded coordinates have an odd sum, round the coordinate that
 * was farthest from an integer the other way; call the result f(z); Q(z) is the nearer to z
 * of f(z) and f(z - 1/2) + 1/2". (Exact in binary64: every value is a multiple of 2^-10.) */
static void e8_f(const double z[8], double out[8])
{
    long sum = 0;
    int far = 0;
    double worst = -1.0;
    for (int i = 0; i < 8; i++) {
        out[i] = floor(z[i] + 0.5);
        sum += (long)out[i];
        if (fabs(z[i] - out[i]) > worst) {
            worst = fabs(z[i] - out[i]);
            far = i;
        }
    }
    if (sum % 2 != 0) out[far] += z[far] > out[far] ? 1.0 : -1.0;
}

static void e8_nearest(const double z[8], double q[8])
{
    double a[8], b[8], zh[8], da = 0, db = 0;
    e8_f(z, a);
    for (int i = 0; i < 8; i++) zh[i] = z[i] - 0.5;
    e8_f(zh, b);
    for (int i = 0; i < 8; i++) {
        b[i] += 0.5;
        da += (z[i] - a[i]) * (z[i] - a[i]);
        db += (z[i] - b[i]) * (z[i] - b[i]);
    }
    memcpy(q, da <= db ? a : b, sizeof a);
}

/* 6.4.5 The stage table: "lambda_l = sum_j bit_j(l) g_j; t_l = y - 2 Q(y / 2) with
 * y = lambda_l + a, a = (1, 2, 4, ..., 128) / 512; m = (t_0 + ... + t_255) / 256;
 * U[l] = t_l - m". Every value is a multiple of 2^-17 below 2 in magnitude: exact. */
static void lattice_stage_table(float U[256][8])
{
    static const double G[8][8] = {
        {2, 0, 0, 0, 0, 0, 0, 0},   {-1, 1, 0, 0, 0, 0, 0, 0}, {0, -1, 1, 0, 0, 0, 0, 0},
        {0, 0, -1, 1, 0, 0, 0, 0},  {0, 0, 0, -1, 1, 0, 0, 0}, {0, 0, 0, 0, -1, 1, 0, 0},
        {0, 0, 0, 0, 0, -1, 1, 0},  {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5},
    };
    double tl[256][8], mean[8] = {0};
    for (unsigned l = 0; l < 256; l++) {
        double y[8], z[8], q[8];
        for (int i = 0; i < 8; i++) y[i] = (double)(1u << i) / 512.0;
        for (int j = 0; j < 8; j++)
            if (l & (1u << j))
                for (int i = 0; i < 8; i++) y[i] += G[j][i];
        for (int i = 0; i < 8; i++) z[i] = y[i] / 2.0;
        e8_nearest(z, q);
        for (int i = 0; i < 8; i++) {
            tl[l][i] = y[i] - 2.0 * q[i];
            mean[i] += tl[l][i];
        }
    }
    for (int i = 0; i < 8; i++) mean[i] /= 256.0;
    for (unsigned l = 0; l < 256; l++)
        for (int i = 0; i < 8; i++) U[l][i] = (float)(tl[l][i] - mean[i]);
}

/* Both tables, built once per handle. */
struct lattice_tables {
    int8_t pat[256][8]; /* 2 PAT[k][i] */
    float U[256][8];
};

static const struct lattice_tables *lattice_tables_get(pvqc_file *f)
{
    if (!f->lattice) {
        f->lattice = (struct lattice_tables *)xalloc(f, sizeof(struct lattice_tables));
        if (!f->lattice) return NULL;
        lattice_patterns(f->lattice->pat);
        lattice_stage_table(f->lattice->U);
    }
    return f->lattice;
}


/* 6.4.1 Parameter block: "stages u8: 1, 2 or 3; flags u8: bit 0 row_scales, bits 1-7
 * reserved, 0; scales stages x f32: finite. The block is exactly 2 + 4 * stages bytes." */
static pvqc_error lattice_parse_params(pvqc_file *f, tensor_rec *t)
{
    reader r, sc;
    unsigned stages, flags;
    int read_ok;
    rd_init(&r, t->cparams, t->cparams_len);
    read_ok = rd_u8(&r, &stages) && rd_u8(&r, &flags) && rd_sub(&r, 4ull * stages, &sc);
    if (!read_ok || !rd_done(&r)) return params_misread(f, t, &r, read_ok, "lattice codec");
    if (stages < 1 || stages > 3)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": lattice stages %u outside 1..3", NAME_ARG(t), stages);
    if (flags & ~1u)
        return fail(f, PVQC_ERR_PARAMS_INVALID,
                    "tensor " NAME_FMT ": lattice flags 0x%02x set reserved bits (0xfe must be 0)", NAME_ARG(t), flags);
    for (unsigned j = 0; j < stages; j++) {
        uint32_t u = le32(sc.data + 4u * j);
        if ((u & 0x7F800000u) == 0x7F800000u)
            return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": lattice stage scale %u is not finite",
                        NAME_ARG(t), j + 1);
        t->lat_scales[j] = u32_as_f32(u);
    }
    t->lat_stages = stages;
    t->lat_row_scales = flags & 1u;
    return PVQC_OK;
}

/* 6.4.2 "G_r = ceil(cols / 8) groups" per row. */
static uint64_t lattice_groups_per_row(const tensor_rec *t) { return (t->cols + 7u) / 8u; }

/* 6.4.3 Streams: row_scales (if the flag is set), patterns, signs, stage2 (stages >= 2),
 * stage3 (stages = 3). */
static unsigned lattice_streams(const tensor_rec *t, stream_spec *out)
{
    static const char *const names[3] = {"patterns", "signs", "stage2"};
    const uint64_t groups = t->rows * lattice_groups_per_row(t);
    unsigned n = 0;
    if (t->lat_row_scales) {
        out[n].name = "row_scales";
        out[n].count = t->rows;
        out[n].width = 16;
        n++;
    }
    for (unsigned j = 0; j < t->lat_stages + 1u; j++) {
        out[n].name = j < 3 ? names[j] : "stage3";
        out[n].count = groups;
        out[n].width = 8;
        n++;
    }
    return n;
}

/* 6.4.3 "Every 8-bit value of patterns, signs, stage2 and stage3 is valid ... A row scale
 * that is not finite (float16 exponent all ones) is payload_corrupt." */
static pvqc_error lattice_check(pvqc_file *f, tensor_rec *t)
{
    stream_view rs;
    if (!t->lat_row_scales) return PVQC_OK;
    rs = payload_stream(f, t, 0);
    for (uint64_t r = 0; r < t->rows; r++)
        if (((stream_symbol(&rs, r) >> 10) & 0x1Fu) == 0x1Fu)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": lattice row scale of row %llu is not finite",
                        NAME_ARG(t), (ull)r);
    return PVQC_OK;
}

/* 6.4.4.4 Decoding a codeword (a, b) to the E8P point P, as the integers 4 P_i:
 * "1. B = the base of pattern a (PAT[a], its last coordinate negated if the sum of A is
 * odd). 2. p = popcount(b) mod 2; m = b XOR p. 3. v_i = -B_i if bit i of m is 1, else B_i.
 * 4. P_i = v_i + 1/4 if p = 0, v_i - 1/4 if p = 1" ("4 P_i = 2 (2 v_i) + 1 or - 1"). */
static void lattice_point(const int8_t pat[256][8], unsigned a, unsigned b, int P4[8])
{
    int sum = 0, p = 0;
    unsigned m;
    for (int i = 0; i < 8; i++) {
        sum += pat[a][i];
        p ^= (int)((b >> i) & 1u);
    }
    m = b ^ (unsigned)p;
    for (int i = 0; i < 8; i++) {
        int v2 = pat[a][i];                                /* 2 B_i */
        if (i == 7 && (sum / 2) % 2 != 0) v2 = -v2;        /* sum of A = sum / 2 (sum of 2A is even) */
        if ((m >> i) & 1u) v2 = -v2;
        P4[i] = 2 * v2 + (p ? -1 : 1);
    }
}

/* 6.4.6 Decoded value, in this order, float32:
 *     v_i = P_i * s_1
 *     v_i = v_i + (U[l2_g][i] * s_2)          if stages >= 2
 *     v_i = v_i + (U[l3_g][i] * s_3)          if stages = 3
 *     v_i = v_i * float32(q_r)                if row_scales = 1
 * "v_i is the value of W' at row r, column 8c + i (discarded if that column is >= cols)." */
static pvqc_error lattice_decode(pvqc_file *f, tensor_rec *t, uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1,
                                 float *dst, size_t ld)
{
    const struct lattice_tables *tb = lattice_tables_get(f);
    const unsigned first = t->lat_row_scales ? 1u : 0u;
    const uint64_t gpr = lattice_groups_per_row(t);
    stream_view rs, pa = payload_stream(f, t, first), sg = payload_stream(f, t, first + 1u), st[2];
    if (!tb) return out_of_memory(f, "lattice tables");
    if (t->lat_row_scales) rs = payload_stream(f, t, 0);
    for (unsigned j = 0; j + 1u < t->lat_stages; j++) st[j] = payload_stream(f, t, first + 2u + j);
    for (uint64_t r = r0; r < r1; r++) {
        const float q = t->lat_row_scales ? f16_to_f32((uint16_t)stream_symbol(&rs, r)) : 1.0f;
        float *out = dst + (r - r0) * ld;
        for (uint64_t gc = c0 / 8u; gc * 8u < c1; gc++) {
            const uint64_t g = r * gpr + gc;
            int P4[8];
            lattice_point(tb->pat, (unsigned)stream_symbol(&pa, g), (unsigned)stream_symbol(&sg, g), P4);
            for (unsigned i = 0; i < 8; i++) {
                const uint64_t col = gc * 8u + i;
                float v = ((float)P4[i] / 4.0f) * t->lat_scales[0]; /* P4 / 4 is exact */
                for (unsigned j = 0; j + 1u < t->lat_stages; j++)
                    v = v + tb->U[stream_symbol(&st[j], g)][i] * t->lat_scales[j + 1];
                if (t->lat_row_scales) v = v * q;
                if (col >= c0 && col < c1) out[col - c0] = v;
            }
        }
    }
    return PVQC_OK;
}

static uint64_t lattice_col_align(const tensor_rec *t)
{
    (void)t;
    return 8;
}

static void lattice_stream_range(pvqc_file *f, const tensor_rec *t, unsigned i, uint64_t r0, uint64_t r1, uint64_t *s0,
                                 uint64_t *s1)
{
    (void)f;
    rows_to_symbols(r0, r1, 1, t->lat_row_scales && i == 0 ? 1u : lattice_groups_per_row(t), s0, s1);
}

/* ---- 6.6 The entropy-coded scalar codec (id 5, spec/codecs/ecsq.md) ---------------- */

/* 6.6.1 Parameter block: "step f32 finite and > 0; flags u8 0 (reserved); reserved u8 0;
 * offset_count (n) u16 0 to 65,535; offsets n x f32 finite values. The block is exactly
 * 8 + 4 n bytes. A value outside its allowed range is params_invalid; the fields are
 * checked in the order of the table." */
static pvqc_error ecsq_parse_params(pvqc_file *f, tensor_rec *t)
{
    reader r, offs;
    unsigned flags, reserved, n;
    uint32_t step_bits;
    float step;
    int read_ok;
    rd_init(&r, t->cparams, t->cparams_len);
    read_ok = rd_u32(&r, &step_bits) && rd_u8(&r, &flags) && rd_u8(&r, &reserved) && rd_u16(&r, &n) &&
              rd_sub(&r, 4ull * n, &offs);
    if (!read_ok || !rd_done(&r)) return params_misread(f, t, &r, read_ok, "ecsq codec");
    step = u32_as_f32(step_bits);
    if ((step_bits & 0x7F800000u) == 0x7F800000u || !(step > 0.0f))
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": ecsq step %.9g is not a finite value > 0",
                    NAME_ARG(t), (double)step);
    if (flags != 0)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": ecsq flags 0x%02x: no flag is defined, must be 0",
                    NAME_ARG(t), flags);
    if (reserved != 0)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": ecsq reserved byte 0x%02x must be 0", NAME_ARG(t),
                    reserved);
    for (unsigned k = 0; k < n; k++)
        if ((le32(offs.data + 4u * k) & 0x7F800000u) == 0x7F800000u)
            return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": ecsq offset %u is not finite", NAME_ARG(t), k);
    t->ecsq_step = step;
    t->ecsq_n = n;
    t->ecsq_offsets = offs.data;
    return PVQC_OK;
}

/* 6.6.2 Stream: indices (rows * cols x 16), "symbol r * cols + c is row r, column c". Not
 * bounded; "Every 16-bit symbol is valid: this codec has no payload_corrupt condition of
 * its own". */
static unsigned ecsq_streams(const tensor_rec *t, stream_spec *out)
{
    out[0].name = "indices";
    out[0].count = t->rows * t->cols;
    out[0].width = 16;
    return 1;
}

static pvqc_error ecsq_check(pvqc_file *f, tensor_rec *t)
{
    (void)f;
    (void)t;
    return PVQC_OK;
}

/* 6.6.4 Decoded value of magnitude m and a sign, also ectcq's (6.7.6, m <= 65536): "off(m) =
 * offsets[min(m, n) - 1] for n >= 1 and 0 for n = 0; if m == 0: x = +0.0; else
 * t = float32(m) - off(m); a = t * step; x = -a if negative else a" (float32(m) is exact;
 * the negation flips the sign bit only). */
static float ecsq_magnitude_value(const tensor_rec *t, uint32_t m, int negative)
{
    float off, d, a;
    if (m == 0) return 0.0f;
    off = t->ecsq_n ? lef32(t->ecsq_offsets + 4u * ((m < t->ecsq_n ? m : t->ecsq_n) - 1u)) : 0.0f;
    d = (float)m - off;
    a = d * t->ecsq_step;
    return negative ? -a : a;
}

/* 6.6.3 for symbol s: "m = (s + 1) div 2; negative = s != 0 and s mod 2 == 0" (m <= 32768). */
static float ecsq_value(const tensor_rec *t, unsigned s)
{
    return ecsq_magnitude_value(t, (s + 1u) >> 1, (s & 1u) == 0);
}

/* 6.6.4 "x is the value of W' at the symbol's row and column." */
static pvqc_error ecsq_decode(pvqc_file *f, tensor_rec *t, uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1,
                              float *dst, size_t ld)
{
    stream_view s = payload_stream(f, t, 0);
    for (uint64_t r = r0; r < r1; r++) {
        float *out = dst + (r - r0) * ld;
        for (uint64_t c = c0; c < c1; c++) out[c - c0] = ecsq_value(t, (unsigned)stream_symbol(&s, r * t->cols + c));
    }
    return PVQC_OK;
}

/* ---- Rows that are walks: ectcq (6.7) and eclattice (6.8) ------------------------------
 * In both codecs a row's symbols start in each stream where the prefix sums of the
 * row-count streams (streams 0 and, for eclattice, 1) say, and a row decodes from its
 * first column on. The helpers below keep what makes row ranges and column strips cheap:
 * one prefix sum per handle, and the walk cursors of the last strip's rows. */

static unsigned ec_row_count_streams(const tensor_rec *t) { return t->codec_id == 7u ? 2u : 1u; }

/* "The number of bits of n": the least w with 2^w > n (the width of a row-count stream). */
static unsigned ec_count_bits(uint64_t n)
{
    unsigned w = 0;
    while (w < 64 && (n >> w) != 0) w++;
    return w;
}

/* Remember that row r of t starts at start[]. */
static void ec_row_memo(pvqc_file *f, const tensor_rec *t, uint64_t r, const uint64_t start[2])
{
    f->ecrows.t = t;
    f->ecrows.row = r;
    f->ecrows.start[0] = start[0];
    f->ecrows.start[1] = start[1];
}

/* start[k] = the sum of stream k's symbols 0 .. r-1 (k < ec_row_count_streams), from the
 * handle's memo when it stands at or before row r. */
static void ec_row_start(pvqc_file *f, const tensor_rec *t, uint64_t r, uint64_t start[2])
{
    ec_rows *m = &f->ecrows;
    uint64_t row = 0, s[2] = {0, 0};
    if (m->t == t && m->row <= r) {
        row = m->row;
        s[0] = m->start[0];
        s[1] = m->start[1];
    }
    for (unsigned k = 0; k < ec_row_count_streams(t); k++) {
        const stream_view v = payload_stream(f, t, k);
        /* a symbol of a row-count stream is below 2^width <= 2 cols: the sum stays below 2^49 */
        for (uint64_t i = row; i < r; i++) s[k] += stream_symbol(&v, i);
    }
    start[0] = s[0];
    start[1] = s[1];
    ec_row_memo(f, t, r, start);
}

/* A decode call over rows [r0, r1) from column `col`: 1 if the handle holds those rows'
 * cursors at `col` (the previous strip stopped there). Otherwise, if the call will stop
 * before the rows' end (`keep`), room for the cursors it leaves. */
static pvqc_error ec_cursors_begin(pvqc_file *f, const tensor_rec *t, uint64_t r0, uint64_t r1, uint64_t col, int keep,
                                   int *resume)
{
    ec_rows *m = &f->ecrows;
    uint64_t bytes;
    *resume = m->ct == t && m->r0 == r0 && m->r1 == r1 && m->col == col;
    if (*resume || !keep) return PVQC_OK;
    m->ct = NULL;
    if (r1 - r0 <= m->cap) return PVQC_OK;
    xfree(f, m->cur);
    m->cur = NULL;
    m->cap = 0;
    if (!mul_u64(r1 - r0, sizeof(ec_cursor), &bytes) || !(m->cur = (ec_cursor *)xalloc(f, bytes)))
        return out_of_memory(f, "row cursors");
    m->cap = r1 - r0;
    return PVQC_OK;
}

/* The end of such a call: the cursors stand at `col` (kept) or are dropped. */
static void ec_cursors_end(pvqc_file *f, const tensor_rec *t, uint64_t r0, uint64_t r1, uint64_t col, int keep)
{
    ec_rows *m = &f->ecrows;
    m->ct = keep ? t : NULL;
    m->r0 = r0;
    m->r1 = r1;
    m->col = col;
}

/* ---- 6.7 The entropy-constrained trellis-coded codec (id 6, spec/codecs/ectcq.md) ------ */

/* 6.7.4 Ungerboeck's parity-check polynomials h0, h1 for v = 3 .. 8 state bits. */
static const unsigned ECTCQ_H0[9] = {0, 0, 0, 013, 023, 045, 0103, 0235, 0515};
static const unsigned ECTCQ_H1[9] = {0, 0, 0, 004, 004, 010, 0024, 0126, 0362};

/* 6.7.1 Parameter block: "step f32 finite and > 0; state_bits (v) u8 3 to 8; flags u8 0;
 * offset_count (n) u16; a0_count u64 at most rows * cols; offsets n x f32 finite values.
 * The block is exactly 16 + 4 n bytes ... the fields are checked in the order of the
 * table." */
static pvqc_error ectcq_parse_params(pvqc_file *f, tensor_rec *t)
{
    reader r, offs;
    unsigned v, flags, n;
    uint32_t step_bits;
    uint64_t a0_count;
    float step;
    int read_ok;
    rd_init(&r, t->cparams, t->cparams_len);
    read_ok = rd_u32(&r, &step_bits) && rd_u8(&r, &v) && rd_u8(&r, &flags) && rd_u16(&r, &n) && rd_u64(&r, &a0_count) &&
              rd_sub(&r, 4ull * n, &offs);
    if (!read_ok || !rd_done(&r)) return params_misread(f, t, &r, read_ok, "ectcq codec");
    step = u32_as_f32(step_bits);
    if ((step_bits & 0x7F800000u) == 0x7F800000u || !(step > 0.0f))
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": ectcq step %.9g is not a finite value > 0",
                    NAME_ARG(t), (double)step);
    if (v < 3 || v > 8)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": ectcq state_bits %u outside 3..8", NAME_ARG(t), v);
    if (flags != 0)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": ectcq flags 0x%02x: no flag is defined, must be 0",
                    NAME_ARG(t), flags);
    if (a0_count > t->numel)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": ectcq a0_count %llu exceeds rows * cols = %llu",
                    NAME_ARG(t), (ull)a0_count, (ull)t->numel);
    for (unsigned k = 0; k < n; k++)
        if ((le32(offs.data + 4u * k) & 0x7F800000u) == 0x7F800000u)
            return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": ectcq offset %u is not finite", NAME_ARG(t), k);
    t->ecsq_step = step;
    t->ecsq_n = n;
    t->ecsq_offsets = offs.data;
    t->tcq_v = v;
    t->tcq_a0_count = a0_count;
    return PVQC_OK;
}

/* 6.7.3 Streams: row_a0 (rows x count_bits, bounded by cols + 1; "count_bits is the number
 * of bits of cols"), a0 (a0_count x 16), a1 (rows * cols - a0_count x 16). */
static unsigned ectcq_streams(const tensor_rec *t, stream_spec *out)
{
    out[0].name = "row_a0";
    out[0].count = t->rows;
    out[0].width = ec_count_bits(t->cols);
    out[1].name = "a0";
    out[1].count = t->tcq_a0_count;
    out[1].width = 16;
    out[2].name = "a1";
    out[2].count = t->numel - t->tcq_a0_count;
    out[2].width = 16;
    return 3;
}

/* 6.7.3 "row_a0 ... bounded (section 4): every bound is cols + 1". */
static unsigned ectcq_stream_bounds(pvqc_file *f, const tensor_rec *t, unsigned i, rans_bounds *b)
{
    (void)f;
    if (i != 0) return 0;
    b->plans[0].nm1[0] = t->cols;
    return 1;
}

/* 6.7.3 "Row r's symbols start at start0(r) = row_a0[0] + .. + row_a0[r-1] in a0 and at
 * start1(r) = r * cols - start0(r) in a1"; row_a0 itself is read from row 0 on. */
static void ectcq_stream_range(pvqc_file *f, const tensor_rec *t, unsigned i, uint64_t r0, uint64_t r1, uint64_t *s0,
                               uint64_t *s1)
{
    uint64_t a[2], b[2];
    if (i == 0) {
        *s0 = 0;
        *s1 = r1;
        return;
    }
    ec_row_start(f, t, r0, a);
    ec_row_start(f, t, r1, b);
    *s0 = i == 1 ? a[0] : r0 * t->cols - a[0];
    *s1 = i == 1 ? b[0] : r1 * t->cols - b[0];
}

/* 6.7.4 next(S, z1): "w'_k = w_(k+1) xor (h1_k and z1) xor (h0_k and u), k = 1 .. v, with
 * w_(v+1) = 0", w_k = bit k-1 of S, u = S mod 2. Bit k-1 of S >> 1 is w_(k+1) (0 for k = v,
 * as S < 2^v), and bit k-1 of h >> 1 is h_k, so the rule is three shifts and xors. */
static unsigned ectcq_next_state(unsigned v, unsigned S, unsigned z1)
{
    return (S >> 1) ^ (z1 ? ECTCQ_H1[v] >> 1 : 0u) ^ ((S & 1u) ? ECTCQ_H0[v] >> 1 : 0u);
}

/* 6.7.6 The walk of row r over columns [c, c_end) from cursor `cur` (k0 = pos[0] -
 * start[0]; k1 = c - k0), writing W'[r][c] to out[c - c0] for c >= c0 when out is not NULL:
 *   u = S mod 2; "if u == 0: if k0 == row_a0[r]: payload_corrupt; s = a0[start0(r) + k0];
 *   else: if k1 == cols - row_a0[r]: payload_corrupt; s = a1[start1(r) + k1];
 *   j = s + 1 if (s + u) is odd, else -s (6.7.5); W'[r][i] = the ecsq value (6.6.4) of
 *   magnitude m = |j| and sign negative = (j < 0); S = next(S, z1) with z1 = (j mod 4) div 2".
 * Returns 0 where the row takes more symbols of a union than its count gives. */
static int ectcq_walk(const tensor_rec *t, const stream_view *a0, const stream_view *a1, uint64_t r, uint64_t row_a0,
                      ec_cursor *cur, uint64_t c, uint64_t c_end, float *out, uint64_t c0)
{
    const uint64_t cols = t->cols, start1 = r * cols - cur->start[0];
    const unsigned v = t->tcq_v;
    unsigned S = cur->state;
    uint64_t k0 = cur->pos[0] - cur->start[0];
    int ok = 1;
    for (; c < c_end; c++) {
        const unsigned u = S & 1u;
        unsigned s, odd;
        uint32_t j;
        if (u == 0) {
            if (k0 == row_a0) { ok = 0; break; }
            s = (unsigned)stream_symbol(a0, cur->start[0] + k0++);
        } else {
            if (c - k0 == cols - row_a0) { ok = 0; break; }
            s = (unsigned)stream_symbol(a1, start1 + (c - k0));
        }
        odd = (s + u) & 1u;
        j = odd ? s + 1u : 0u - s;       /* two's complement of j */
        if (out && c >= c0) out[c - c0] = ecsq_magnitude_value(t, odd ? s + 1u : s, !odd && s != 0);
        S = ectcq_next_state(v, S, (j >> 1) & 1u);
    }
    cur->state = S;
    cur->pos[0] = cur->start[0] + k0;
    return ok;
}

/* 6.7.3 / 6.7.6 content rules over the whole tensor, in order: "A row_a0[r] above cols is
 * payload_corrupt by the stream's bound"; "The sum of all row_a0[r] must be exactly
 * a0_count"; every row's walk takes exactly row_a0[r] symbols of a0. */
static pvqc_error ectcq_check(pvqc_file *f, tensor_rec *t)
{
    const stream_view rc = payload_stream(f, t, 0), a0 = payload_stream(f, t, 1), a1 = payload_stream(f, t, 2);
    uint64_t sum = 0, r;
    for (r = 0; r < t->rows; r++) {
        const uint64_t n = stream_symbol(&rc, r);
        if (n > t->cols)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": ectcq row_a0 of row %llu is %llu, above cols %llu",
                        NAME_ARG(t), (ull)r, (ull)n, (ull)t->cols);
        sum += n;
    }
    if (sum != t->tcq_a0_count)
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": ectcq row_a0 sums to %llu, a0_count is %llu",
                    NAME_ARG(t), (ull)sum, (ull)t->tcq_a0_count);
    sum = 0;
    for (r = 0; r < t->rows; r++) {
        const uint64_t n = stream_symbol(&rc, r);
        ec_cursor cur;
        cur.start[0] = cur.pos[0] = sum;
        cur.start[1] = cur.pos[1] = 0;
        cur.state = 0;
        if (!ectcq_walk(t, &a0, &a1, r, n, &cur, 0, t->cols, NULL, 0))
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT,
                        "tensor " NAME_FMT ": ectcq row %llu does not take row_a0[r] = %llu values of union A_0",
                        NAME_ARG(t), (ull)r, (ull)n);
        sum += n;
    }
    return PVQC_OK;
}

/* 6.7.6 "Each row r is decoded on its own, by a walk through the trellis from state 0",
 * over columns [c0, c1) of rows [r0, r1): resumed from the handle's cursors when the call
 * continues the previous strip, else walked from column 0. */
static pvqc_error ectcq_decode(pvqc_file *f, tensor_rec *t, uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1,
                               float *dst, size_t ld)
{
    const stream_view rc = payload_stream(f, t, 0), a0 = payload_stream(f, t, 1), a1 = payload_stream(f, t, 2);
    const int keep = c1 < t->cols;
    uint64_t start[2];
    int resume;
    pvqc_error e = ec_cursors_begin(f, t, r0, r1, c0, keep, &resume);
    if (e != PVQC_OK) return e;
    if (!resume) ec_row_start(f, t, r0, start);
    for (uint64_t r = r0; r < r1; r++) {
        const uint64_t n = stream_symbol(&rc, r);
        ec_cursor cur;
        int ok = 1;
        if (resume) {
            cur = f->ecrows.cur[r - r0];
        } else {
            cur.start[0] = cur.pos[0] = start[0];
            cur.start[1] = cur.pos[1] = 0;
            cur.state = 0;
            start[0] += n;
            if (c0 > 0) ok = ectcq_walk(t, &a0, &a1, r, n, &cur, 0, c0, NULL, 0);
        }
        if (ok) ok = ectcq_walk(t, &a0, &a1, r, n, &cur, c0, c1, dst + (r - r0) * ld, c0);
        if (!ok) { /* the check rejects such rows first */
            ec_cursors_end(f, t, r0, r1, c1, 0);
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": ectcq row %llu is corrupt", NAME_ARG(t),
                        (ull)r);
        }
        if (keep) f->ecrows.cur[r - r0] = cur;
    }
    if (!resume) ec_row_memo(f, t, r1, start);
    ec_cursors_end(f, t, r0, r1, c1, keep);
    return PVQC_OK;
}

/* ---- 6.8 The entropy-coded E8 lattice codec (id 7, spec/codecs/eclattice.md) ------------ */

/* 6.8.2 "G_r = ceil(cols / 8)" groups per row. */
static uint64_t eclattice_groups_per_row(const tensor_rec *t) { return (t->cols + 7u) / 8u; }

/* 6.8.1 Parameter block (exactly 24 bytes): "half_scale f32 finite and > 0; flags u8 0;
 * reserved 3 x u8 0 each; int_groups u64 at most G; int_res0_groups u64 at most int_groups
 * ... the fields are checked in the order of the table". */
static pvqc_error eclattice_parse_params(pvqc_file *f, tensor_rec *t)
{
    reader r;
    unsigned flags, res[3];
    uint32_t hs_bits;
    uint64_t n_i, n_0;
    float hs;
    int read_ok;
    rd_init(&r, t->cparams, t->cparams_len);
    read_ok = rd_u32(&r, &hs_bits) && rd_u8(&r, &flags) && rd_u8(&r, &res[0]) && rd_u8(&r, &res[1]) &&
              rd_u8(&r, &res[2]) && rd_u64(&r, &n_i) && rd_u64(&r, &n_0);
    if (!read_ok || !rd_done(&r)) return params_misread(f, t, &r, read_ok, "eclattice codec");
    hs = u32_as_f32(hs_bits);
    if ((hs_bits & 0x7F800000u) == 0x7F800000u || !(hs > 0.0f))
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": eclattice half_scale %.9g is not a finite value > 0",
                    NAME_ARG(t), (double)hs);
    if (flags != 0)
        return fail(f, PVQC_ERR_PARAMS_INVALID,
                    "tensor " NAME_FMT ": eclattice flags 0x%02x: no flag is defined, must be 0", NAME_ARG(t), flags);
    for (unsigned k = 0; k < 3; k++)
        if (res[k] != 0)
            return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": eclattice reserved byte %u is 0x%02x, must be 0",
                        NAME_ARG(t), k, res[k]);
    if (n_i > t->rows * eclattice_groups_per_row(t))
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": eclattice int_groups %llu exceeds the %llu groups",
                    NAME_ARG(t), (ull)n_i, (ull)(t->rows * eclattice_groups_per_row(t)));
    if (n_0 > n_i)
        return fail(f, PVQC_ERR_PARAMS_INVALID,
                    "tensor " NAME_FMT ": eclattice int_res0_groups %llu exceeds int_groups %llu", NAME_ARG(t),
                    (ull)n_0, (ull)n_i);
    t->ecl_half_scale = hs;
    t->ecl_int_groups = n_i;
    t->ecl_res0_groups = n_0;
    return PVQC_OK;
}

/* 6.8.3 Streams. "w_r = the number of bits of G_r": row_int, row_int_res0 (rows x w_r);
 * first (G), mid_int (6 n_i), mid_half (6 (G - n_i)), last_res0 (n_0), last_res2
 * (n_i - n_0), last_half (G - n_i), all 16 bits. */
static unsigned eclattice_streams(const tensor_rec *t, stream_spec *out)
{
    static const char *const names[8] = {"row_int", "row_int_res0", "first", "mid_int",
                                         "mid_half", "last_res0", "last_res2", "last_half"};
    const uint64_t G = t->rows * eclattice_groups_per_row(t), n_i = t->ecl_int_groups, n_0 = t->ecl_res0_groups;
    const uint64_t count[8] = {t->rows, t->rows, G, 6u * n_i, 6u * (G - n_i), n_0, n_i - n_0, G - n_i};
    for (unsigned i = 0; i < 8; i++) {
        out[i].name = names[i];
        out[i].count = count[i];
        out[i].width = i < 2 ? ec_count_bits(eclattice_groups_per_row(t)) : 16u;
    }
    return 8;
}

/* 6.8.3 row_int and row_int_res0: "bounded (section 4): every bound is G_r + 1". */
static unsigned eclattice_stream_bounds(pvqc_file *f, const tensor_rec *t, unsigned i, rans_bounds *b)
{
    (void)f;
    if (i > 1) return 0;
    b->plans[0].nm1[0] = eclattice_groups_per_row(t);
    return 1;
}

/* 6.8.3 "row r starts at symbol r G_r of first, 6 I_<r of mid_int, 6 (r G_r - I_<r) of
 * mid_half, Z_<r of last_res0, I_<r - Z_<r of last_res2 and r G_r - I_<r of last_half";
 * the row-count streams are read from row 0 on. */
static void eclattice_stream_range(pvqc_file *f, const tensor_rec *t, unsigned i, uint64_t r0, uint64_t r1,
                                   uint64_t *s0, uint64_t *s1)
{
    const uint64_t gr = eclattice_groups_per_row(t);
    uint64_t a[2], b[2], rr[2] = {r0, r1}, *o[2] = {s0, s1}, *st[2] = {a, b};
    if (i < 2) {
        *s0 = 0;
        *s1 = r1;
        return;
    }
    ec_row_start(f, t, r0, a);
    ec_row_start(f, t, r1, b);
    for (unsigned k = 0; k < 2; k++) {
        const uint64_t g = rr[k] * gr, I = st[k][0], Z = st[k][1];
        *o[k] = i == 2 ? g : i == 3 ? 6u * I : i == 4 ? 6u * (g - I) : i == 5 ? Z : i == 6 ? I - Z : g - I;
    }
}

/* 6.8.3 "unzigzag(s) = (s + 1) / 2 for odd s and -s / 2 for even s". */
static int32_t eclattice_unzigzag(unsigned s) { return (s & 1u) ? (int32_t)((s + 1u) >> 1) : -(int32_t)(s >> 1); }

/* 6.8.4 step 1: "c_0 = unzigzag(s) of the next first symbol; the coset is k = c_0 mod 2". */
static int32_t eclattice_c0(const stream_view *first, uint64_t g)
{
    return eclattice_unzigzag((unsigned)stream_symbol(first, g));
}

/* 6.8.4 step 2: "for k = 0, c_i = 2 * unzigzag(s) of the next six mid_int symbols; for
 * k = 1, c_i = 2 * unzigzag(s) + 1 of the next six mid_half symbols", from symbol 6 p of
 * `mid` (the stream of coset k). */
static void eclattice_mid(const stream_view *mid, uint64_t p, unsigned k, int32_t c[8])
{
    for (unsigned i = 1; i < 7; i++)
        c[i] = 2 * eclattice_unzigzag((unsigned)stream_symbol(mid, 6u * p + (i - 1u))) + (int32_t)k;
}

/* 6.8.4 step 3: "r = (-(c_0 + c_1 + .. + c_6)) mod 4" (|c_i| < 2^17: the sum fits). */
static unsigned eclattice_residue(const int32_t c[8])
{
    int64_t sum = 0;
    for (unsigned i = 0; i < 7; i++) sum += c[i];
    return (unsigned)(0u - (uint64_t)sum) & 3u;
}

/* 6.8.4 step 4, c_7 of residue r from symbol s of its stream: "r = 0: 4 * unzigzag(s); r = 2:
 * 4 * unzigzag(s) + 2; r = 1: 4 * unzigzag(s) + 1; r = 3: -(4 * unzigzag(s) + 1)". */
static int32_t eclattice_c7(unsigned r, unsigned s)
{
    const int32_t q = 4 * eclattice_unzigzag(s);
    return r == 0 ? q : r == 2 ? q + 2 : r == 1 ? q + 1 : -(q + 1);
}

/* 6.8.4 and 6.8.5 for groups [j, j_end) of row r, from cursor `cur` (pos[0]: the tensor's
 * integer-coset groups before the next group, pos[1]: its residue-0 groups before it).
 * Writes "x_i = float32(c_i) * half_scale" to out[col - c0] for the columns 8j + i in
 * [c0, c1). The row-count checks of 6.8.3 have passed: every position lies in its stream.
 * v: the eight streams. */
static void eclattice_walk(const tensor_rec *t, const stream_view *v, uint64_t r, ec_cursor *cur, uint64_t j,
                           uint64_t j_end, float *out, uint64_t c0, uint64_t c1)
{
    const uint64_t gr = eclattice_groups_per_row(t);
    const float hs = t->ecl_half_scale;
    for (; j < j_end; j++) {
        const uint64_t g = r * gr + j, half = g - cur->pos[0]; /* half-integer groups before g */
        int32_t c[8];
        unsigned k, res;
        c[0] = eclattice_c0(&v[2], g);
        k = (unsigned)c[0] & 1u;
        eclattice_mid(&v[3 + k], k ? half : cur->pos[0], k, c);
        res = eclattice_residue(c);
        if (res == 0) c[7] = eclattice_c7(0, (unsigned)stream_symbol(&v[5], cur->pos[1]++));
        else if (res == 2) c[7] = eclattice_c7(2, (unsigned)stream_symbol(&v[6], cur->pos[0] - cur->pos[1]));
        else c[7] = eclattice_c7(res, (unsigned)stream_symbol(&v[7], half));
        if (k == 0) cur->pos[0]++;
        if (out)
            for (unsigned i = 0; i < 8; i++) {
                const uint64_t col = 8u * j + i;
                if (col >= c0 && col < c1) out[col - c0] = (float)c[i] * hs;
            }
    }
}

static void eclattice_views(const pvqc_file *f, const tensor_rec *t, stream_view v[8])
{
    for (unsigned i = 0; i < 8; i++) v[i] = payload_stream(f, t, i);
}

/* 6.8.3 "Row counts (checks, payload_corrupt, in this order): 1. after streams 0 and 1:
 * the sums are n_i and n_0, and Z_r <= I_r for every row (a symbol above G_r already broke
 * its bound); 2. after stream 2: the number of groups of row r whose c_0 is even is I_r;
 * 3. after streams 3 and 4: the number of integer-coset groups of row r with residue 0 is
 * Z_r". */
static pvqc_error eclattice_check(pvqc_file *f, tensor_rec *t)
{
    const uint64_t gr = eclattice_groups_per_row(t);
    stream_view v[8];
    uint64_t sum_i = 0, sum_0 = 0, r, j, p;
    eclattice_views(f, t, v);
    for (r = 0; r < t->rows; r++) {
        const uint64_t I = stream_symbol(&v[0], r), Z = stream_symbol(&v[1], r);
        if (I > gr || Z > gr)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT,
                        "tensor " NAME_FMT ": eclattice row count of row %llu is above its bound G_r + 1 = %llu",
                        NAME_ARG(t), (ull)r, (ull)(gr + 1u));
        sum_i += I;
        sum_0 += Z;
    }
    if (sum_i != t->ecl_int_groups || sum_0 != t->ecl_res0_groups)
        return fail(f, PVQC_ERR_PAYLOAD_CORRUPT,
                    "tensor " NAME_FMT ": eclattice row counts sum to %llu and %llu; int_groups %llu, int_res0_groups %llu",
                    NAME_ARG(t), (ull)sum_i, (ull)sum_0, (ull)t->ecl_int_groups, (ull)t->ecl_res0_groups);
    for (r = 0; r < t->rows; r++)
        if (stream_symbol(&v[1], r) > stream_symbol(&v[0], r))
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": eclattice row %llu has Z_r > I_r", NAME_ARG(t),
                        (ull)r);
    for (r = 0; r < t->rows; r++) {
        uint64_t even = 0;
        for (j = 0; j < gr; j++) even += ((unsigned)eclattice_c0(&v[2], r * gr + j) & 1u) == 0;
        if (even != stream_symbol(&v[0], r))
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT,
                        "tensor " NAME_FMT ": eclattice row %llu has %llu integer-coset groups; row_int says %llu",
                        NAME_ARG(t), (ull)r, (ull)even, (ull)stream_symbol(&v[0], r));
    }
    for (r = 0, p = 0; r < t->rows; r++) {
        uint64_t zeros = 0;
        for (j = 0; j < gr; j++) {
            int32_t c[8];
            c[0] = eclattice_c0(&v[2], r * gr + j);
            if ((unsigned)c[0] & 1u) continue;
            eclattice_mid(&v[3], p++, 0, c);
            zeros += eclattice_residue(c) == 0;
        }
        if (zeros != stream_symbol(&v[1], r))
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT,
                        "tensor " NAME_FMT ": eclattice row %llu has %llu residue-0 groups; row_int_res0 says %llu",
                        NAME_ARG(t), (ull)r, (ull)zeros, (ull)stream_symbol(&v[1], r));
    }
    return PVQC_OK;
}

/* 6.8.4 / 6.8.5 over the groups that cover columns [c0, c1) of rows [r0, r1): resumed from
 * the handle's cursors when the call continues the previous strip, else from the row's
 * first group. Padding columns (>= cols) are computed and discarded. */
static pvqc_error eclattice_decode(pvqc_file *f, tensor_rec *t, uint64_t r0, uint64_t r1, uint64_t c0, uint64_t c1,
                                   float *dst, size_t ld)
{
    const uint64_t j0 = c0 / 8u, j1 = (c1 + 7u) / 8u;
    const int keep = c1 < t->cols;
    stream_view v[8];
    uint64_t start[2];
    int resume;
    pvqc_error e = ec_cursors_begin(f, t, r0, r1, 8u * j0, keep, &resume);
    if (e != PVQC_OK) return e;
    eclattice_views(f, t, v);
    if (!resume) ec_row_start(f, t, r0, start);
    for (uint64_t r = r0; r < r1; r++) {
        ec_cursor cur;
        if (resume) {
            cur = f->ecrows.cur[r - r0];
        } else {
            cur.start[0] = cur.pos[0] = start[0];
            cur.start[1] = cur.pos[1] = start[1];
            cur.state = 0;
            start[0] += stream_symbol(&v[0], r);
            start[1] += stream_symbol(&v[1], r);
            eclattice_walk(t, v, r, &cur, 0, j0, NULL, 0, 0);
        }
        eclattice_walk(t, v, r, &cur, j0, j1, dst + (r - r0) * ld, c0, c1);
        if (keep) f->ecrows.cur[r - r0] = cur;
    }
    if (!resume) ec_row_memo(f, t, r1, start);
    ec_cursors_end(f, t, r0, r1, 8u * j1, keep);
    return PVQC_OK;
}

/* 6. The codec registry: "Any other id is codec_unknown (a decoder names the id and the
 * codecs it knows)." A codec joins by adding its entry. */
static const codec_def CODECS[] = {
    {0, "raw", 0, 1, raw_parse_params, raw_streams, raw_check, raw_decode, raw_col_align, raw_stream_range,
     no_stream_bounds},
    {1, "pvq", 1, 0, pvq_parse_params, pvq_streams, pvq_check, pvq_decode, pvq_col_align, pvq_stream_range,
     pvq_stream_bounds},
    {2, "trellis", 1, 0, trellis_parse_params, trellis_streams, trellis_check, trellis_decode, trellis_col_align,
     trellis_stream_range, no_stream_bounds},
    {3, "lattice", 1, 0, lattice_parse_params, lattice_streams, lattice_check, lattice_decode, lattice_col_align,
     lattice_stream_range, no_stream_bounds},
    {4, "pvqvr", 1, 0, pvqvr_parse_params, pvqvr_streams, pvqvr_check, pvqvr_decode, pvq_col_align,
     pvqvr_stream_range, pvqvr_stream_bounds},
    {5, "ecsq", 1, 0, ecsq_parse_params, ecsq_streams, ecsq_check, ecsq_decode, raw_col_align, raw_stream_range,
     no_stream_bounds},
    {6, "ectcq", 1, 0, ectcq_parse_params, ectcq_streams, ectcq_check, ectcq_decode, raw_col_align,
     ectcq_stream_range, ectcq_stream_bounds},
    {7, "eclattice", 1, 0, eclattice_parse_params, eclattice_streams, eclattice_check, eclattice_decode,
     lattice_col_align, eclattice_stream_range, eclattice_stream_bounds},
};

static const codec_def *codec_by_id(unsigned id)
{
    for (size_t i = 0; i < sizeof CODECS / sizeof CODECS[0]; i++)
        if (CODECS[i].id == id) return &CODECS[i];
    return NULL;
}

static const char *transform_name(unsigned id) { return id == 0 ? "identity" : (id == 1 ? "rht" : "unknown"); }

/* 3.3 TensorEntry rules, checked after the whole block was read: "The checks of one
 * TensorEntry run in this order: the name (empty: header_corrupt; too long:
 * limit_exceeded), the dtype, the rank, each dimension, numel, the matrix view; then
 * transform_id (transform_unknown), codec_id (codec_unknown); then the rules that are all
 * params_invalid: a tensor with numel = 0 must use the raw codec, the raw codec requires
 * the identity transform, the transform's parameter block (section 5), the codec's
 * parameter block (section 6); then payload_count (limit, then the codec's stream count:
 * payload_layout_invalid), and for each payload in order its coding (coding_unknown) and,
 * for the raw coding, its length (payload_layout_invalid)." */
static pvqc_error check_tensor_entry(pvqc_file *f, tensor_rec *t, size_t index)
{
    const uint64_t NUMEL_CAP = MAX_NUMEL + 1u; /* saturation value: "beyond the limit" */
    uint64_t numel = 1, rc;
    unsigned i, nstreams;
    stream_spec specs[MAX_PAYLOADS];
    pvqc_error e;

    if (t->name_len == 0) return fail(f, PVQC_ERR_HEADER_CORRUPT, "tensor %lu has an empty name", (unsigned long)index);
    if (t->name_len > MAX_NAME_BYTES)
        return fail(f, PVQC_ERR_LIMIT_EXCEEDED, "tensor %lu: name longer than %u bytes", (unsigned long)index,
                    MAX_NAME_BYTES);
    if (t->dtype < 1 || t->dtype > 3)
        return fail(f, PVQC_ERR_HEADER_CORRUPT, "tensor " NAME_FMT ": unknown dtype id %u", NAME_ARG(t), t->dtype);
    if (t->rank > MAX_RANK)
        return fail(f, PVQC_ERR_LIMIT_EXCEEDED, "tensor " NAME_FMT ": rank %u exceeds the limit %u", NAME_ARG(t),
                    t->rank, MAX_RANK);
    for (i = 0; i < t->rank; i++) {
        uint64_t dim = le64(t->shape_bytes + 8u * i);
        t->shape[i] = dim;
        if (dim > MAX_DIM)
            return fail(f, PVQC_ERR_LIMIT_EXCEEDED, "tensor " NAME_FMT ": dimension %llu exceeds the limit %llu",
                        NAME_ARG(t), (ull)dim, (ull)MAX_DIM);
        /* saturating product: any value above the limit stands for "too many"; a 0 wins */
        if (numel == 0 || dim == 0) numel = 0;
        else if (!mul_u64(numel, dim, &numel) || numel > NUMEL_CAP) numel = NUMEL_CAP;
    }
    if (numel > MAX_NUMEL)
        return fail(f, PVQC_ERR_LIMIT_EXCEEDED, "tensor " NAME_FMT ": more than %llu elements", NAME_ARG(t),
                    (ull)MAX_NUMEL);
    if (t->rows > MAX_NUMEL || t->cols > MAX_NUMEL || !mul_u64(t->rows, t->cols, &rc) || rc != numel)
        return fail(f, PVQC_ERR_HEADER_CORRUPT, "tensor " NAME_FMT ": matrix view %llu x %llu does not hold its %llu elements",
                    NAME_ARG(t), (ull)t->rows, (ull)t->cols, (ull)numel);
    t->numel = numel;
    if (t->transform_id > 1)
        return fail(f, PVQC_ERR_TRANSFORM_UNKNOWN, "unknown transform id %u; this reader knows 0 (identity), 1 (rht)",
                    t->transform_id);
    t->codec = codec_by_id(t->codec_id);
    if (!t->codec)
        return fail(f, PVQC_ERR_CODEC_UNKNOWN, "unknown codec id %u; this reader knows 0 (raw), 1 (pvq), 2 (trellis), 3 (lattice), 4 (pvqvr), 5 (ecsq), 6 (ectcq), 7 (eclattice)",
                    t->codec_id);
    if (numel == 0 && t->codec->quantizes)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": a tensor with no elements must use the raw codec",
                    NAME_ARG(t));
    if (t->codec->needs_identity && t->transform_id != 0)
        return fail(f, PVQC_ERR_PARAMS_INVALID, "tensor " NAME_FMT ": codec %s requires the identity transform",
                    NAME_ARG(t), t->codec->name);
    e = t->transform_id == 0 ? identity_parse_params(f, t) : rht_parse_params(f, t);
    if (e != PVQC_OK) return e;
    e = t->codec->parse_params(f, t);
    if (e != PVQC_OK) return e;
    nstreams = t->codec->streams(t, specs);
    if (t->payload_count > MAX_PAYLOADS)
        return fail(f, PVQC_ERR_LIMIT_EXCEEDED, "tensor " NAME_FMT ": %u payloads exceed the limit %u", NAME_ARG(t),
                    t->payload_count, MAX_PAYLOADS);
    if (t->payload_count != nstreams)
        return fail(f, PVQC_ERR_PAYLOAD_LAYOUT_INVALID, "tensor " NAME_FMT ": has %u payloads; codec %s defines %u",
                    NAME_ARG(t), t->payload_count, t->codec->name, nstreams);
    for (i = 0; i < t->payload_count; i++) {
        const uint8_t *p = t->payload_bytes + 21u * i;
        payload_rec *pr = &t->payloads[i];
        pr->coding = p[0];
        pr->offset = le64(p + 1);
        pr->length = le64(p + 9);
        pr->crc = le32(p + 17);
        pr->stream = specs[i];
        if (pr->coding > 1)
            return fail(f, PVQC_ERR_CODING_UNKNOWN, "unknown payload coding id %u; this reader knows 0 (raw), 1 (rans)",
                        pr->coding);
        if (pr->coding == 0 && pr->length != raw_coding_length(&specs[i]))
            return fail(f, PVQC_ERR_PAYLOAD_LAYOUT_INVALID,
                        "tensor " NAME_FMT ": raw payload '%s' is %llu bytes; %llu symbols of %u bits need %llu",
                        NAME_ARG(t), specs[i].name, (ull)pr->length, (ull)specs[i].count, specs[i].width,
                        (ull)raw_coding_length(&specs[i]));
    }
    return PVQC_OK;
}

/* =====================================================================================
 * 7. Payload layout and the decoding procedure
 * ===================================================================================== */

static uint64_t align64(uint64_t x) { return (x + (PAYLOAD_ALIGNMENT - 1u)) / PAYLOAD_ALIGNMENT * PAYLOAD_ALIGNMENT; }

/* 7.1 Layout: "The first payload starts at align64(32 + header_size); each next one at
 * align64(end of the previous) ... All bytes between the header block and the first
 * payload and between payloads are zero. The file ends exactly at the end of the last
 * payload. A payload that runs past the end of the file is file_truncated." */
static pvqc_error check_payload_layout(pvqc_file *f)
{
    uint64_t pos = FILE_HEADER_SIZE + (uint64_t)f->header_size;
    for (size_t ti = 0; ti < f->tensor_count; ti++) {
        const tensor_rec *t = &f->tensors[ti];
        for (unsigned i = 0; i < t->payload_count; i++) {
            const payload_rec *p = &t->payloads[i];
            uint64_t expect = align64(pos), end = expect < f->size ? expect : f->size;
            if (p->offset != expect)
                return fail(f, PVQC_ERR_PAYLOAD_LAYOUT_INVALID,
                            "tensor " NAME_FMT ": payload '%s' at offset %llu, expected %llu", NAME_ARG(t),
                            p->stream.name, (ull)p->offset, (ull)expect);
            for (uint64_t b = pos; b < end; b++)
                if (f->data[b] != 0)
                    return fail(f, PVQC_ERR_PAYLOAD_LAYOUT_INVALID, "non-zero padding before offset %llu",
                                (ull)expect);
            if (p->offset > f->file_size || p->length > f->file_size - p->offset)
                return fail(f, PVQC_ERR_FILE_TRUNCATED, "tensor " NAME_FMT ": payload '%s' runs past the end of the file",
                            NAME_ARG(t), p->stream.name);
            pos = p->offset + p->length;
        }
    }
    if (pos != f->file_size)
        return fail(f, PVQC_ERR_PAYLOAD_LAYOUT_INVALID, "%llu bytes after the last payload", (ull)(f->file_size - pos));
    return PVQC_OK;
}

static void stream_set_free(pvqc_file *f, stream_set *set)
{
    for (unsigned i = 0; i < MAX_PAYLOADS; i++) xfree(f, set->buf[i]);
    memset(set, 0, sizeof *set);
}

/* 4.3: decode rans payload i of t into set: the chunks that hold symbols [s0, s1) (the
 * whole stream for [0, count); "A decoder may decode any subset of chunks"). The result is
 * the raw coding's bit string of those chunks' symbols, which the codecs read. A stream
 * whose bounds are indexed by an earlier stream (pvqvr's shapes by its pulses) has that
 * stream decoded over at least the same symbols first. */
static pvqc_error rans_stream_decode(pvqc_file *f, tensor_rec *t, unsigned i, uint64_t s0, uint64_t s1,
                                     stream_set *set)
{
    const payload_rec *p = &t->payloads[i];
    const stream_spec *s = &p->stream;
    rans_header h;
    uint64_t j0, j1, first, last, len;
    uint8_t *buf = NULL;
    rans_bounds bounds;
    pvqc_error e = rans_parse_header(f, t, s, f->data + p->offset, p->length, &h);
    if (e != PVQC_OK) return e;
    if (s1 > s->count) s1 = s->count;
    if (s0 > s1) s0 = s1;
    j0 = s0 / h.chunk_symbols;
    j1 = s1 > s0 ? (s1 - 1u) / h.chunk_symbols + 1u : j0;
    first = j0 * h.chunk_symbols;
    last = j1 * h.chunk_symbols < s->count ? j1 * h.chunk_symbols : s->count; /* < 2^64: j1, S < 2^32 */
    if (last < first) last = first;
    len = ((last - first) * s->width + 7u) / 8u; /* <= 2^48 symbols of <= 1024 bits */
    memset(&bounds, 0, sizeof bounds);
    bounds.index_stream = -1;
    if (h.mode == 1) {
        bounds.plans = (rans_uniform *)xalloc(f, RANS_MAX_BOUNDS * (uint64_t)sizeof(rans_uniform));
        if (!bounds.plans) return out_of_memory(f, "rans bounds");
        memset(bounds.plans, 0, RANS_MAX_BOUNDS * sizeof(rans_uniform));
        bounds.count = t->codec->stream_bounds(f, t, i, &bounds);
        if (bounds.count == 0) { /* 4.3.3: "else 2^width" */
            bounds.count = 1;
            for (unsigned b = 0; b < s->width; b++) bounds.plans[0].nm1[b / 64u] |= 1ull << (b % 64u);
        } else if (bounds.index_stream >= 0) {
            const unsigned k = (unsigned)bounds.index_stream; /* < i */
            if (t->payloads[k].coding == 0) {
                bounds.index = raw_payload_view(f, t, k);
            } else {
                if (!set->held[k] || set->first[k] > first || set->last[k] < last) {
                    const uint64_t a = set->held[k] && set->first[k] < first ? set->first[k] : first;
                    const uint64_t b = set->held[k] && set->last[k] > last ? set->last[k] : last;
                    e = rans_stream_decode(f, t, k, a, b, set);
                }
                bounds.index = set->view[k];
            }
            bounds.has_index = 1;
        }
        for (unsigned k = 0; k < bounds.count; k++) rans_uniform_init(&bounds.plans[k]);
    }
    if (e == PVQC_OK) {
        buf = (uint8_t *)xalloc(f, len);
        if (!buf) e = out_of_memory(f, "decoded rans stream");
        else e = rans_decode(f, t, s, &h, &bounds, j0, j1, buf, len);
    }
    xfree(f, bounds.plans);
    if (e != PVQC_OK) {
        xfree(f, buf);
        return e;
    }
    xfree(f, set->buf[i]);
    set->t = t;
    set->buf[i] = buf;
    set->view[i].bytes = buf;
    set->view[i].length = len;
    set->view[i].count = s->count;
    set->view[i].width = s->width;
    set->view[i].base = first;
    set->held[i] = 1;
    set->first[i] = first;
    set->last[i] = last;
    return PVQC_OK;
}

static int has_rans_payload(const tensor_rec *t)
{
    for (unsigned i = 0; i < t->payload_count; i++)
        if (t->payloads[i].coding != 0) return 1;
    return 0;
}

/* 7.3 step 1 and the codec's content rules: "For each payload in order: verify its CRC
 * (2.3), then decode it with its coding (4)"; then the codec's checks (for PVQ: row
 * scales, then shape indices). Done once per tensor; a failure is reported every time.
 * The decoded rans streams stay on the handle (one tensor's at a time) for the decode
 * that usually follows. */
static pvqc_error check_tensor(pvqc_file *f, tensor_rec *t)
{
    pvqc_error e;
    if (t->checked) return PVQC_OK;
    if (has_rans_payload(t)) stream_set_free(f, &f->cache);
    for (unsigned i = 0; i < t->payload_count; i++) {
        const payload_rec *p = &t->payloads[i];
        const uint8_t *bytes = f->data + p->offset;
        if (crc_mismatch(crc32(f->crc_table, bytes, p->length), p->crc))
            e = fail(f, PVQC_ERR_CHECKSUM_MISMATCH,
                     "tensor " NAME_FMT ": payload '%s' CRC-32 mismatch: the file is damaged", NAME_ARG(t),
                     p->stream.name);
        else if (p->coding == 1)
            e = rans_stream_decode(f, t, i, 0, p->stream.count, &f->cache);
        else if (!raw_coding_padding_ok(bytes, p->length, &p->stream))
            e = fail(f, PVQC_ERR_PAYLOAD_CORRUPT,
                     "tensor " NAME_FMT ": payload '%s': raw stream has non-zero padding bits in its last byte",
                     NAME_ARG(t), p->stream.name);
        else
            e = PVQC_OK;
        if (e != PVQC_OK) {
            if (has_rans_payload(t)) stream_set_free(f, &f->cache);
            return e;
        }
    }
    f->active = &f->cache;
    e = t->codec->check(f, t);
    f->active = NULL;
    if (e != PVQC_OK) {
        if (has_rans_payload(t)) stream_set_free(f, &f->cache);
        return e;
    }
    t->checked = 1;
    return PVQC_OK;
}

/* 10.3 "To float16: IEEE round to nearest, ties to even (overflow to infinity)." The spec
 * does not define NaNs here; this keeps the sign and the top 10 payload bits (and sets the
 * lowest if none is left, so that the result stays a NaN), as the Python decoder (numpy)
 * does and as the spec's exact float16 -> float32 widening (3.4) reverses. */
static uint16_t f32_to_f16(float x)
{
    uint32_t u, sign, exp, man, h, rem;
    int e;
    memcpy(&u, &x, sizeof u);
    sign = (u >> 16) & 0x8000u;
    exp = (u >> 23) & 0xFFu;
    man = u & 0x7FFFFFu;
    if (exp == 0xFF) return (uint16_t)(sign | 0x7C00u | (man ? ((man >> 13) ? (man >> 13) : 1u) : 0u));
    e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7C00u);
    if (e <= 0) {
        unsigned shift;
        uint32_t half;
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000u;
        shift = (unsigned)(14 - e);
        h = man >> shift;
        rem = man & ((1u << shift) - 1u);
        half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    h = ((uint32_t)e << 10) | (man >> 13);
    rem = man & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

/* 10.3 "To bfloat16: for a non-NaN binary32 bit pattern u, (u + 0x7FFF + ((u >> 16) & 1))
 * >> 16; a NaN becomes 0x7FC0 with its sign bit." */
static uint16_t f32_to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)(((u >> 16) & 0x8000u) | 0x7FC0u);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static void store_converted(const float *src, size_t n, pvqc_dtype dt, void *dst)
{
    size_t i;
    if (dt == PVQC_DTYPE_FLOAT32) {
        if ((const void *)src != dst) memcpy(dst, src, n * sizeof(float));
    } else if (dt == PVQC_DTYPE_FLOAT16) {
        uint16_t *o = (uint16_t *)dst;
        for (i = 0; i < n; i++) o[i] = f32_to_f16(src[i]);
    } else {
        uint16_t *o = (uint16_t *)dst;
        for (i = 0; i < n; i++) o[i] = f32_to_bf16(src[i]);
    }
}

/* Scratch memory for one decode call, freed by decode_scratch_free. */
typedef struct decode_scratch {
    float *x;       /* rows of the result in float32 when the output is not float32 */
    float *strip;   /* row side: b_r x strip width */
    float *tmp;     /* h x strip width, or b_c for the column side */
    float *rscale;  /* s_i * c_b for one row block */
    float *cscale;  /* s_j * c_b for every column */
    rht_side rs, cs;
} decode_scratch;

static void decode_scratch_free(pvqc_file *f, decode_scratch *s)
{
    xfree(f, s->x);
    xfree(f, s->strip);
    xfree(f, s->tmp);
    xfree(f, s->rscale);
    xfree(f, s->cscale);
    xfree(f, s->rs.H);
    xfree(f, s->cs.H);
}

static float *alloc_floats(pvqc_file *f, uint64_t a, uint64_t b)
{
    uint64_t n, bytes;
    if (!mul_u64(a, b, &n) || !mul_u64(n, sizeof(float), &bytes)) return NULL;
    return (float *)xalloc(f, bytes);
}

/* 7.3 step 3: "For a codec other than raw, every value of W must be finite: an infinity or
 * a NaN (which only scales that overflow can produce) is payload_corrupt. A decoder that
 * decodes only some rows checks the rows it decodes." x holds rows [r, r + n) of W. */
static pvqc_error check_finite_rows(pvqc_file *f, const tensor_rec *t, const float *x, uint64_t r, uint64_t n)
{
    const uint64_t count = n * t->cols;
    uint64_t i;
    if (t->codec_id == 0) return PVQC_OK;
    for (i = 0; i < count; i++) {
        uint32_t u;
        memcpy(&u, x + i, sizeof u);
        if ((u & 0x7F800000u) == 0x7F800000u)
            return fail(f, PVQC_ERR_PAYLOAD_CORRUPT, "tensor " NAME_FMT ": decoded value of row %llu is not finite",
                        NAME_ARG(t), (unsigned long long)(r + i / t->cols));
    }
    return PVQC_OK;
}

/* 7.3 steps 2-4 for rows [r0, r1) of a tensor whose transform is the identity: the codec's
 * values are the result. Float32 output is written in place; other dtypes go through a
 * float32 buffer of a few rows. */
static pvqc_error decode_rows_identity(pvqc_file *f, tensor_rec *t, uint64_t r0, uint64_t r1, pvqc_dtype dt,
                                       uint8_t *out, decode_scratch *s)
{
    const uint64_t cols = t->cols, esize = pvqc_dtype_size(dt);
    uint64_t chunk = cols >= 65536u ? 1u : 65536u / cols;
    if (dt == PVQC_DTYPE_FLOAT32) {
        pvqc_error e = t->codec->decode(f, t, r0, r1, 0, cols, (float *)out, (size_t)cols);
        return e != PVQC_OK ? e : check_finite_rows(f, t, (const float *)out, r0, r1 - r0);
    }
    if (chunk > r1 - r0) chunk = r1 - r0;
    s->x = alloc_floats(f, chunk, cols);
    if (!s->x) return out_of_memory(f, "decode buffer");
    for (uint64_t r = r0; r < r1; r += chunk) {
        uint64_t n = r1 - r < chunk ? r1 - r : chunk;
        pvqc_error e = t->codec->decode(f, t, r, r + n, 0, cols, s->x, (size_t)cols);
        if (e == PVQC_OK) e = check_finite_rows(f, t, s->x, r, n);
        if (e != PVQC_OK) return e;
        store_converted(s->x, (size_t)(n * cols), dt, out + (r - r0) * cols * esize);
    }
    return PVQC_OK;
}

/* 7.3 steps 2-4 with the randomized Hadamard transform (5.3.6): "First apply the row side
 * to every column vector (along axis 0, block b_r, signs side 0). Then apply the column
 * side to every row vector of that float32 result (along axis 1, block b_c, signs side 1)."
 *
 * Rows [r0, r1) need the row blocks that cover them (5.3.9, "Shards"). For each such
 * block, the codec decodes W' in strips of columns (b_r rows x a few groups), the row
 * side runs on the strip's columns, and the rows that were asked for are kept; then the
 * column side runs on each kept row. */
static pvqc_error decode_rows_rht(pvqc_file *f, tensor_rec *t, uint64_t r0, uint64_t r1, pvqc_dtype dt,
                                  uint8_t *out, decode_scratch *s)
{
    const uint64_t cols = t->cols, br = t->rht_row_block, esize = pvqc_dtype_size(dt);
    const uint64_t align = t->codec->col_align(t);
    uint64_t width, j, kb, need_rows;
    pvqc_error e;

    e = rht_side_init(f, &s->rs, br);
    if (e == PVQC_OK) e = rht_side_init(f, &s->cs, t->rht_col_block);
    if (e != PVQC_OK) return e;

    /* strip width: whole codec groups, about 64 columns */
    width = align >= 64u ? align : (64u + align - 1u) / align * align;
    if (width > cols) width = cols;
    need_rows = r1 - r0 < br ? r1 - r0 : br;
    s->strip = alloc_floats(f, br, width);
    s->tmp = alloc_floats(f, (uint64_t)s->rs.h * width > s->cs.b ? (uint64_t)s->rs.h * width : s->cs.b, 1);
    s->rscale = alloc_floats(f, br, 1);
    s->cscale = alloc_floats(f, cols, 1);
    if (dt != PVQC_DTYPE_FLOAT32) s->x = alloc_floats(f, need_rows, cols);
    if (!s->strip || !s->tmp || !s->rscale || !s->cscale || (dt != PVQC_DTYPE_FLOAT32 && !s->x))
        return out_of_memory(f, "transform buffers");
    for (j = 0; j < cols; j++) s->cscale[j] = rht_sign_negative(t->rht_seed, 1, j) ? -s->cs.c : s->cs.c;

    for (kb = r0 / br * br; kb < r1; kb += br) {
        /* rows [lo, hi) of this block were asked for */
        const uint64_t lo = kb > r0 ? kb : r0, hi = kb + br < r1 ? kb + br : r1;
        float *X = dt == PVQC_DTYPE_FLOAT32 ? (float *)out + (lo - r0) * cols : s->x;
        for (uint64_t i = 0; i < br; i++) s->rscale[i] = rht_sign_negative(t->rht_seed, 0, kb + i) ? -s->rs.c : s->rs.c;
        for (uint64_t c0 = 0; c0 < cols; c0 += width) {
            const uint64_t c1 = c0 + width < cols ? c0 + width : cols, w = c1 - c0;
            e = t->codec->decode(f, t, kb, kb + br, c0, c1, s->strip, (size_t)width);
            if (e != PVQC_OK) return e;
            rht_inverse_block(s->strip, (size_t)width, (size_t)w, &s->rs, s->rscale, s->tmp);
            for (uint64_t r = lo; r < hi; r++) memcpy(X + (r - lo) * cols + c0, s->strip + (r - kb) * width, (size_t)w * sizeof(float));
        }
        for (uint64_t r = lo; r < hi; r++) rht_inverse_row(X + (r - lo) * cols, cols, &s->cs, s->cscale, s->tmp);
        e = check_finite_rows(f, t, X, lo, hi - lo);
        if (e != PVQC_OK) return e;
        if (dt != PVQC_DTYPE_FLOAT32) store_converted(X, (size_t)((hi - lo) * cols), dt, out + (lo - r0) * cols * esize);
    }
    return PVQC_OK;
}

/* =====================================================================================
 * API (pvqc.h)
 * ===================================================================================== */

const char *pvqc_error_message(const pvqc_file *f)
{
    if (!f) return "out of memory (no handle)";
    return f->message;
}

size_t pvqc_dtype_size(pvqc_dtype dtype)
{
    switch (dtype) {
    case PVQC_DTYPE_FLOAT32: return 4;
    case PVQC_DTYPE_FLOAT16:
    case PVQC_DTYPE_BFLOAT16: return 2;
    }
    return 0;
}

static pvqc_file *new_handle(const pvqc_allocator *alloc)
{
    pvqc_allocator al;
    pvqc_file *f;
    if (alloc && alloc->alloc && alloc->free) al = *alloc;
    else {
        al.alloc = default_alloc;
        al.free = default_free;
        al.opaque = NULL;
    }
    f = (pvqc_file *)al.alloc(al.opaque, sizeof *f);
    if (!f) return NULL;
    memset(f, 0, sizeof *f);
    f->al = al;
    crc32_init(f->crc_table);
    return f;
}

pvqc_error pvqc_open_memory(const void *data, size_t size, const pvqc_allocator *alloc, pvqc_file **out)
{
    pvqc_file *f;
    pvqc_error e;
    if (!out) return PVQC_ERR_BAD_ARGUMENT;
    *out = f = new_handle(alloc);
    if (!f) return PVQC_ERR_OUT_OF_MEMORY;
    if (!data && size > 0) return fail(f, PVQC_ERR_BAD_ARGUMENT, "data is NULL but size is %llu", (ull)size);
    f->data = (const uint8_t *)data;
    f->size = size;
    e = parse_file(f);
    if (e == PVQC_OK) {
        f->open_ok = 1;
        f->message[0] = '\0';
    }
    return e;
}

pvqc_error pvqc_open_path(const char *path, const pvqc_allocator *alloc, pvqc_file **out)
{
    pvqc_file *f;
    FILE *fp;
    long len;
    uint8_t *buf;
    pvqc_error e;
    if (!out) return PVQC_ERR_BAD_ARGUMENT;
    *out = f = new_handle(alloc);
    if (!f) return PVQC_ERR_OUT_OF_MEMORY;
    if (!path) return fail(f, PVQC_ERR_BAD_ARGUMENT, "path is NULL");
    fp = fopen(path, "rb");
    if (!fp) return fail(f, PVQC_ERR_IO, "cannot open %.400s", path);
    if (fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return fail(f, PVQC_ERR_IO, "cannot find the size of %.400s", path);
    }
    buf = (uint8_t *)xalloc(f, (uint64_t)len);
    if (!buf) {
        fclose(fp);
        return out_of_memory(f, "file contents");
    }
    f->owned = buf;
    if (len > 0 && fread(buf, 1, (size_t)len, fp) != (size_t)len) {
        fclose(fp);
        return fail(f, PVQC_ERR_IO, "cannot read %.400s", path);
    }
    fclose(fp);
    f->data = buf;
    f->size = (uint64_t)len;
    e = parse_file(f);
    if (e == PVQC_OK) {
        f->open_ok = 1;
        f->message[0] = '\0';
    } else {
        /* prefix the path, as the Python decoder does */
        char tmp[sizeof f->message];
        memcpy(tmp, f->message, sizeof tmp);
        snprintf(f->message, sizeof f->message, "%.200s: %.420s", path, tmp);
    }
    return e;
}

void pvqc_close(pvqc_file *f)
{
    if (!f) return;
    xfree(f, f->meta);
    xfree(f, f->tensors);
    xfree(f, f->payloads);
    xfree(f, f->names);
    xfree(f, f->by_name);
    xfree(f, f->table.counts);
    xfree(f, f->lattice);
    stream_set_free(f, &f->cache);
    xfree(f, f->ecrows.cur);
    xfree(f, f->owned);
    f->al.free(f->al.opaque, f);
}

void pvqc_file_version(const pvqc_file *f, unsigned *major, unsigned *minor)
{
    if (major) *major = f && f->open_ok ? f->version_major : 0;
    if (minor) *minor = f && f->open_ok ? f->version_minor : 0;
}

size_t pvqc_metadata_count(const pvqc_file *f) { return f && f->open_ok ? f->meta_count : 0; }
size_t pvqc_tensor_count(const pvqc_file *f) { return f && f->open_ok ? f->tensor_count : 0; }

static pvqc_error check_handle(pvqc_file *f)
{
    if (!f) return PVQC_ERR_BAD_ARGUMENT;
    if (!f->open_ok) return fail(f, PVQC_ERR_BAD_ARGUMENT, "the file is not open (its open failed)");
    return PVQC_OK;
}

pvqc_error pvqc_get_metadata(pvqc_file *f, size_t index, const char **key, size_t *key_len, const char **value,
                             size_t *value_len)
{
    pvqc_error e = check_handle(f);
    if (e != PVQC_OK) return e;
    if (index >= f->meta_count)
        return fail(f, PVQC_ERR_BAD_ARGUMENT, "metadata index %llu out of range (%llu entries)", (ull)index,
                    (ull)f->meta_count);
    if (key) *key = (const char *)f->meta[index].key;
    if (key_len) *key_len = f->meta[index].key_len;
    if (value) *value = (const char *)f->meta[index].value;
    if (value_len) *value_len = (size_t)f->meta[index].value_len;
    return PVQC_OK;
}

static pvqc_error get_tensor(pvqc_file *f, size_t index, tensor_rec **t)
{
    pvqc_error e = check_handle(f);
    if (e != PVQC_OK) return e;
    if (index >= f->tensor_count)
        return fail(f, PVQC_ERR_BAD_ARGUMENT, "tensor index %llu out of range (%llu tensors)", (ull)index,
                    (ull)f->tensor_count);
    *t = &f->tensors[index];
    return PVQC_OK;
}

pvqc_error pvqc_get_tensor_info(pvqc_file *f, size_t index, pvqc_tensor_info *info)
{
    tensor_rec *t = NULL;
    pvqc_error e = get_tensor(f, index, &t);
    if (e != PVQC_OK) return e;
    if (!info) return fail(f, PVQC_ERR_BAD_ARGUMENT, "info is NULL");
    memset(info, 0, sizeof *info);
    info->name = t->name;
    info->name_len = t->name_len;
    info->dtype = (pvqc_dtype)t->dtype;
    info->rank = t->rank;
    for (unsigned i = 0; i < t->rank; i++) info->shape[i] = t->shape[i];
    info->numel = t->numel;
    info->rows = t->rows;
    info->cols = t->cols;
    info->transform_id = t->transform_id;
    info->codec_id = t->codec_id;
    info->transform_name = transform_name(t->transform_id);
    info->codec_name = t->codec->name;
    info->payload_count = t->payload_count;
    for (unsigned i = 0; i < t->payload_count; i++) info->payload_bytes += t->payloads[i].length;
    return PVQC_OK;
}

pvqc_error pvqc_find_tensor(pvqc_file *f, const char *name, size_t name_len, size_t *index)
{
    size_t lo = 0, hi;
    name_ref key;
    pvqc_error e = check_handle(f);
    if (e != PVQC_OK) return e;
    if ((!name && name_len) || !index) return fail(f, PVQC_ERR_BAD_ARGUMENT, "name or index is NULL");
    key.s = (const uint8_t *)name;
    key.len = name_len;
    key.index = 0;
    hi = f->tensor_count;
    while (lo < hi) { /* first entry >= name in the sorted order (ties: smallest index) */
        size_t mid = lo + (hi - lo) / 2;
        const tensor_rec *t = &f->tensors[f->by_name[mid]];
        name_ref cur;
        cur.s = t->name_bytes;
        cur.len = t->name_len;
        cur.index = 1; /* compare names only: any real entry sorts after key on a tie */
        if (name_ref_cmp(&cur, &key) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < f->tensor_count) {
        const tensor_rec *t = &f->tensors[f->by_name[lo]];
        if (t->name_len == name_len && (name_len == 0 || memcmp(t->name_bytes, name, name_len) == 0)) {
            *index = f->by_name[lo];
            return PVQC_OK;
        }
    }
    return fail(f, PVQC_ERR_NO_SUCH_TENSOR, "no tensor named '%.*s' in this file", (int)(name_len > 200 ? 200 : name_len),
                name ? name : "");
}

pvqc_error pvqc_check_tensor(pvqc_file *f, size_t index)
{
    tensor_rec *t = NULL;
    pvqc_error e = get_tensor(f, index, &t);
    if (e != PVQC_OK) return e;
    return check_tensor(f, t);
}

static pvqc_error decode_rows_with_streams(pvqc_file *f, tensor_rec *t, uint64_t row_begin, uint64_t row_end,
                                           pvqc_dtype out_dtype, void *out, uint64_t n, size_t esize);

pvqc_error pvqc_decode_rows(pvqc_file *f, size_t index, uint64_t row_begin, uint64_t row_end, pvqc_dtype out_dtype,
                            void *out, size_t out_size)
{
    tensor_rec *t = NULL;
    uint64_t n, bytes;
    const size_t esize = pvqc_dtype_size(out_dtype);
    stream_set part;
    pvqc_error e = get_tensor(f, index, &t);
    if (e != PVQC_OK) return e;
    if (esize == 0) return fail(f, PVQC_ERR_BAD_ARGUMENT, "unknown output dtype %d", (int)out_dtype);
    if (row_begin > row_end || row_end > t->rows)
        return fail(f, PVQC_ERR_BAD_ARGUMENT, "row range [%llu, %llu) is not inside the tensor's %llu rows",
                    (ull)row_begin, (ull)row_end, (ull)t->rows);
    n = (row_end - row_begin) * t->cols; /* <= numel <= 2^48 */
    if (!mul_u64(n, esize, &bytes) || bytes > (uint64_t)out_size)
        return fail(f, PVQC_ERR_BUFFER_TOO_SMALL, "the output needs %llu bytes; the buffer has %llu",
                    (ull)(n * esize), (ull)out_size);
    if (!out && bytes > 0) return fail(f, PVQC_ERR_BAD_ARGUMENT, "out is NULL");
    e = check_tensor(f, t);
    if (e != PVQC_OK || n == 0) return e;

    /* The rans streams: those of the check if they are still on the handle, else the
     * chunks that the rows (with the RHT: their whole row blocks) need. */
    memset(&part, 0, sizeof part);
    if (has_rans_payload(t)) {
        if (f->cache.t == t) {
            f->active = &f->cache;
        } else {
            uint64_t a = row_begin, b = row_end;
            if (t->transform_id == 1) {
                a = a / t->rht_row_block * t->rht_row_block;
                b = (b + t->rht_row_block - 1u) / t->rht_row_block * t->rht_row_block;
                if (b > t->rows) b = t->rows;
            }
            f->active = &part; /* stream_range may read the streams before i */
            for (unsigned i = 0; i < t->payload_count && e == PVQC_OK; i++) {
                uint64_t s0, s1;
                if (t->payloads[i].coding == 0) continue;
                t->codec->stream_range(f, t, i, a, b, &s0, &s1);
                e = rans_stream_decode(f, t, i, s0, s1, &part);
            }
            if (e != PVQC_OK) {
                f->active = NULL;
                stream_set_free(f, &part);
                return e;
            }
        }
    }
    e = decode_rows_with_streams(f, t, row_begin, row_end, out_dtype, out, n, esize);
    f->active = NULL;
    stream_set_free(f, &part);
    return e;
}

/* pvqc_decode_rows once the streams are in place (f->active). */
static pvqc_error decode_rows_with_streams(pvqc_file *f, tensor_rec *t, uint64_t row_begin, uint64_t row_end,
                                           pvqc_dtype out_dtype, void *out, uint64_t n, size_t esize)
{
    decode_scratch s;
    pvqc_error e;
    /* 6.1 / 10.3 "A decoder writing the source dtype copies the bit patterns unchanged,
     * NaN payloads included." */
    if (!t->codec->quantizes && (unsigned)out_dtype == t->dtype) {
        const stream_view v = payload_stream(f, t, 0);
        const uint8_t *src = v.bytes + (row_begin * t->cols - v.base) * esize;
        uint8_t *o = (uint8_t *)out;
        for (uint64_t i = 0; i < n; i++) {
            if (esize == 4) {
                uint32_t v = le32(src + 4u * i);
                memcpy(o + 4u * i, &v, 4);
            } else {
                uint16_t v = le16(src + 2u * i);
                memcpy(o + 2u * i, &v, 2);
            }
        }
        return PVQC_OK;
    }
    memset(&s, 0, sizeof s);
    if (t->transform_id == 0) e = decode_rows_identity(f, t, row_begin, row_end, out_dtype, (uint8_t *)out, &s);
    else e = decode_rows_rht(f, t, row_begin, row_end, out_dtype, (uint8_t *)out, &s);
    decode_scratch_free(f, &s);
    return e;
}

pvqc_error pvqc_decode_tensor(pvqc_file *f, size_t index, pvqc_dtype out_dtype, void *out, size_t out_size)
{
    tensor_rec *t = NULL;
    pvqc_error e = get_tensor(f, index, &t);
    if (e != PVQC_OK) return e;
    return pvqc_decode_rows(f, index, 0, t->rows, out_dtype, out, out_size);
}
