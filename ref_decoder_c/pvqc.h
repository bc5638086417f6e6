/*
 * pvqc.h - the C reference decoder of the pvqc format, version 1.2.
 *
 * One header and one source file (pvqc.c), C99, nothing beyond the C standard
 * library. The source follows the specification (spec/pvqc.md, spec/transforms.md,
 * spec/coding-rans.md, spec/codecs/pvq.md, spec/codecs/pvq-enumeration.md,
 * spec/codecs/trellis.md, spec/codecs/lattice.md, spec/codecs/pvqvr.md, spec/codecs/ecsq.md, spec/codecs/ectcq.md,
 * spec/codecs/eclattice.md) section by
 * section; each function names
 * the section it implements.
 *
 * Usage:
 *
 *     pvqc_file *f = NULL;
 *     pvqc_error e = pvqc_open_memory(bytes, size, NULL, &f);
 *     if (e != PVQC_OK) { fprintf(stderr, "[%s] %s\n", pvqc_error_name(e), pvqc_error_message(f)); }
 *     else {
 *         pvqc_tensor_info ti;
 *         pvqc_get_tensor_info(f, 0, &ti);
 *         float *w = malloc(ti.numel * sizeof(float));
 *         e = pvqc_decode_tensor(f, 0, PVQC_DTYPE_FLOAT32, w, ti.numel * sizeof(float));
 *     }
 *     pvqc_close(f);
 *
 * Memory: the caller owns the file's bytes (they must outlive the handle and are
 * never written) and every output buffer. The decoder's own allocations (the tensor
 * directory, count tables, scratch rows, decoded rans streams) go through an optional
 * allocator. A tensor with rans payloads (spec 4.3) is decoded into its streams' raw
 * bit strings (about its raw-coded size) for the check that precedes every decode; the
 * handle keeps the last such tensor's streams for the decode that follows.
 * There is no global state: separate handles may be used from separate threads at
 * the same time; one handle must not be used by two threads at once.
 *
 * Errors: every function that can fail returns a pvqc_error. The codes of spec
 * section 9 have the spec's names (pvqc_error_name); the handle keeps a one-line
 * message naming the offending value (pvqc_error_message). Nothing aborts, exits
 * or reads or writes outside the buffers it is given.
 */
#ifndef PVQC_H
#define PVQC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PVQC_FORMAT_VERSION_MAJOR 1
#define PVQC_FORMAT_VERSION_MINOR 2

/* Error codes. 1..14 are the rejection conditions of spec section 9, with the same
 * names as the conformance suite and the Python decoder (pvqcodec/errors.py). */
typedef enum pvqc_error {
    PVQC_OK = 0,
    PVQC_ERR_FILE_TRUNCATED = 1,         /* "file_truncated" */
    PVQC_ERR_MAGIC_INVALID = 2,          /* "magic_invalid" */
    PVQC_ERR_VERSION_UNSUPPORTED = 3,    /* "version_unsupported" */
    PVQC_ERR_RESERVED_NONZERO = 4,       /* "reserved_nonzero" */
    PVQC_ERR_FILE_SIZE_MISMATCH = 5,     /* "file_size_mismatch" */
    PVQC_ERR_LIMIT_EXCEEDED = 6,         /* "limit_exceeded" */
    PVQC_ERR_CHECKSUM_MISMATCH = 7,      /* "checksum_mismatch" */
    PVQC_ERR_HEADER_CORRUPT = 8,         /* "header_corrupt" */
    PVQC_ERR_TRANSFORM_UNKNOWN = 9,      /* "transform_unknown" */
    PVQC_ERR_CODEC_UNKNOWN = 10,         /* "codec_unknown" */
    PVQC_ERR_PARAMS_INVALID = 11,        /* "params_invalid" */
    PVQC_ERR_CODING_UNKNOWN = 12,        /* "coding_unknown" */
    PVQC_ERR_PAYLOAD_LAYOUT_INVALID = 13, /* "payload_layout_invalid" */
    PVQC_ERR_PAYLOAD_CORRUPT = 14,       /* "payload_corrupt" */
    /* The caller's mistakes and the environment (not properties of a file). */
    PVQC_ERR_BAD_ARGUMENT = 100,         /* "bad_argument": NULL pointer, index or row range out of range, unknown dtype, a handle whose open failed */
    PVQC_ERR_BUFFER_TOO_SMALL = 101,     /* "buffer_too_small": the output buffer cannot hold the result */
    PVQC_ERR_OUT_OF_MEMORY = 102,        /* "out_of_memory": the allocator returned NULL, or a size does not fit size_t */
    PVQC_ERR_NO_SUCH_TENSOR = 103,       /* "no_such_tensor": pvqc_find_tensor found no tensor of that name */
    PVQC_ERR_IO = 104                    /* "io_error": pvqc_open_path could not read the file */
} pvqc_error;

/* Source and output dtypes (spec section 3.4; the values are the format's dtype ids). */
typedef enum pvqc_dtype {
    PVQC_DTYPE_FLOAT32 = 1,
    PVQC_DTYPE_FLOAT16 = 2,
    PVQC_DTYPE_BFLOAT16 = 3
} pvqc_dtype;

/* Optional allocator. alloc(opaque, size) returns NULL on failure; free(opaque, NULL)
 * must be harmless. Pass NULL to pvqc_open_* to use malloc and free. */
typedef struct pvqc_allocator {
    void *(*alloc)(void *opaque, size_t size);
    void (*free)(void *opaque, void *ptr);
    void *opaque;
} pvqc_allocator;

typedef struct pvqc_file pvqc_file;

/* What the tensor directory says about one tensor (spec section 3.3). */
typedef struct pvqc_tensor_info {
    const char *name;        /* UTF-8, NUL-terminated, owned by the handle */
    size_t name_len;         /* bytes, without the terminator (a name may contain U+0000) */
    pvqc_dtype dtype;        /* the source dtype */
    unsigned rank;           /* 0..8 */
    uint64_t shape[8];       /* shape[0..rank-1] */
    uint64_t numel;          /* product of the shape (1 for rank 0) */
    uint64_t rows, cols;     /* the matrix view (spec 3.5): decoding works on rows */
    unsigned transform_id;   /* 0 identity, 1 rht */
    unsigned codec_id;       /* 0 raw, 1 pvq, 2 trellis, 3 lattice, 4 pvqvr, 5 ecsq, 6 ectcq, 7 eclattice */
    const char *transform_name;
    const char *codec_name;
    unsigned payload_count;
    uint64_t payload_bytes;  /* sum of the payloads' lengths */
} pvqc_tensor_info;

/* The spec's name of an error code ("magic_invalid", ...); "ok" for PVQC_OK. Never NULL. */
const char *pvqc_error_name(pvqc_error code);

/* The message of the last error on this handle ("" if none). Never NULL; a NULL
 * handle gives a fixed text (the only way to get NULL is running out of memory). */
const char *pvqc_error_message(const pvqc_file *f);

/* Open a file held in memory: validates the file header, the whole header block and
 * the payload layout (spec 7.2) without touching a payload. `data` is borrowed: it
 * must stay valid and unchanged until pvqc_close. `alloc` may be NULL (malloc/free);
 * it is copied.
 *
 * *out receives a handle whatever the result, except when the handle itself cannot
 * be allocated (then *out = NULL and PVQC_ERR_OUT_OF_MEMORY). After a failed open the
 * handle only answers pvqc_error_message; pass it to pvqc_close. */
pvqc_error pvqc_open_memory(const void *data, size_t size, const pvqc_allocator *alloc, pvqc_file **out);

/* Convenience: read a whole file into memory (through the allocator) and open it.
 * The handle owns that copy. Same contract as pvqc_open_memory. */
pvqc_error pvqc_open_path(const char *path, const pvqc_allocator *alloc, pvqc_file **out);

/* Free the handle and everything it allocated. NULL is harmless. */
void pvqc_close(pvqc_file *f);

/* The file's format version (major is always 1 for an open handle). */
void pvqc_file_version(const pvqc_file *f, unsigned *major, unsigned *minor);

/* Metadata entries (spec 3.2), in file order. Key and value point into the file's
 * bytes; they are NOT NUL-terminated. */
size_t pvqc_metadata_count(const pvqc_file *f);
pvqc_error pvqc_get_metadata(pvqc_file *f, size_t index, const char **key, size_t *key_len,
                             const char **value, size_t *value_len);

/* Tensors, in directory order. */
size_t pvqc_tensor_count(const pvqc_file *f);
pvqc_error pvqc_get_tensor_info(pvqc_file *f, size_t index, pvqc_tensor_info *info);
pvqc_error pvqc_find_tensor(pvqc_file *f, const char *name, size_t name_len, size_t *index);

/* Check everything about one tensor's payloads that a decoder must check (CRCs, the
 * coding, the codec's content rules) without producing values. Every decode runs
 * this first (once per tensor and handle), so a tensor decodes either completely and
 * correctly or not at all, whatever row range is asked for. For rans payloads this
 * decodes every chunk. */
pvqc_error pvqc_check_tensor(pvqc_file *f, size_t index);

/* Bytes per element of an output dtype (4 or 2), 0 for an unknown value. */
size_t pvqc_dtype_size(pvqc_dtype dtype);

/* Decode rows [row_begin, row_end) of a tensor's matrix view (spec 7.3), row-major,
 * (row_end - row_begin) * cols elements of out_dtype, into `out` (out_size bytes).
 * float32 output is the spec's exact values (section 10); float16 and bfloat16 are
 * rounded from them by section 10.3. A raw tensor decoded to its own source dtype is
 * copied bit for bit. The row range may be empty. Rans payloads: the streams of the last
 * tensor checked are reused; for another tensor only the chunks that hold the range's
 * symbols are decoded (with the RHT, those of the row blocks it touches). */
pvqc_error pvqc_decode_rows(pvqc_file *f, size_t index, uint64_t row_begin, uint64_t row_end,
                            pvqc_dtype out_dtype, void *out, size_t out_size);

/* The whole tensor: pvqc_decode_rows(f, index, 0, rows, ...). */
pvqc_error pvqc_decode_tensor(pvqc_file *f, size_t index, pvqc_dtype out_dtype, void *out, size_t out_size);

#ifdef __cplusplus
}
#endif
#endif /* PVQC_H */
