"""cffi build script (out-of-line, API mode) for the C reference decoder.

setup.py names it in `cffi_modules`, so `pip install .` and `pip install -e .` compile
`pvqcodec._pvqc_c` from ref_decoder_c/pvqc.c with the machine's C compiler. By hand:

    python ref_decoder_c/build_cffi.py      # builds pvqcodec/_pvqc_c*.so in place (e.g. after editing pvqc.c)
"""

import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

CDEF = """
typedef enum pvqc_error {
    PVQC_OK = 0,
    PVQC_ERR_FILE_TRUNCATED = 1,
    PVQC_ERR_MAGIC_INVALID = 2,
    PVQC_ERR_VERSION_UNSUPPORTED = 3,
    PVQC_ERR_RESERVED_NONZERO = 4,
    PVQC_ERR_FILE_SIZE_MISMATCH = 5,
    PVQC_ERR_LIMIT_EXCEEDED = 6,
    PVQC_ERR_CHECKSUM_MISMATCH = 7,
    PVQC_ERR_HEADER_CORRUPT = 8,
    PVQC_ERR_TRANSFORM_UNKNOWN = 9,
    PVQC_ERR_CODEC_UNKNOWN = 10,
    PVQC_ERR_PARAMS_INVALID = 11,
    PVQC_ERR_CODING_UNKNOWN = 12,
    PVQC_ERR_PAYLOAD_LAYOUT_INVALID = 13,
    PVQC_ERR_PAYLOAD_CORRUPT = 14,
    PVQC_ERR_BAD_ARGUMENT = 100,
    PVQC_ERR_BUFFER_TOO_SMALL = 101,
    PVQC_ERR_OUT_OF_MEMORY = 102,
    PVQC_ERR_NO_SUCH_TENSOR = 103,
    PVQC_ERR_IO = 104
} pvqc_error;

typedef enum pvqc_dtype {
    PVQC_DTYPE_FLOAT32 = 1,
    PVQC_DTYPE_FLOAT16 = 2,
    PVQC_DTYPE_BFLOAT16 = 3
} pvqc_dtype;

typedef struct pvqc_allocator {
    void *(*alloc)(void *opaque, size_t size);
    void (*free)(void *opaque, void *ptr);
    void *opaque;
} pvqc_allocator;

typedef struct pvqc_file pvqc_file;

typedef struct pvqc_tensor_info {
    const char *name;
    size_t name_len;
    pvqc_dtype dtype;
    unsigned rank;
    uint64_t shape[8];
    uint64_t numel;
    uint64_t rows, cols;
    unsigned transform_id;
    unsigned codec_id;
    const char *transform_name;
    const char *codec_name;
    unsigned payload_count;
    uint64_t payload_bytes;
} pvqc_tensor_info;

const char *pvqc_error_name(pvqc_error code);
const char *pvqc_error_message(const pvqc_file *f);
pvqc_error pvqc_open_memory(const void *data, size_t size, const pvqc_allocator *alloc, pvqc_file **out);
pvqc_error pvqc_open_path(const char *path, const pvqc_allocator *alloc, pvqc_file **out);
void pvqc_close(pvqc_file *f);
void pvqc_file_version(const pvqc_file *f, unsigned *major, unsigned *minor);
size_t pvqc_metadata_count(const pvqc_file *f);
pvqc_error pvqc_get_metadata(pvqc_file *f, size_t index, const char **key, size_t *key_len,
                             const char **value, size_t *value_len);
size_t pvqc_tensor_count(const pvqc_file *f);
pvqc_error pvqc_get_tensor_info(pvqc_file *f, size_t index, pvqc_tensor_info *info);
pvqc_error pvqc_find_tensor(pvqc_file *f, const char *name, size_t name_len, size_t *index);
pvqc_error pvqc_check_tensor(pvqc_file *f, size_t index);
size_t pvqc_dtype_size(pvqc_dtype dtype);
pvqc_error pvqc_decode_rows(pvqc_file *f, size_t index, uint64_t row_begin, uint64_t row_end,
                            pvqc_dtype out_dtype, void *out, size_t out_size);
pvqc_error pvqc_decode_tensor(pvqc_file *f, size_t index, pvqc_dtype out_dtype, void *out, size_t out_size);
"""


def _compile_args():
    if sys.platform == "win32":
        return ["/fp:precise"]  # MSVC: no contraction under /fp:precise
    # Spec 10.1: no fused multiply-add, no fast-math; C99. -O3 vectorizes the transform's
    # loops over independent lanes, which changes no result (no reassociation without fast-math).
    return ["-std=c99", "-ffp-contract=off", "-O3"]


def make_builder(absolute: bool = False) -> FFI:
    """The FFI builder; setuptools wants source paths relative to the project root."""
    where = HERE if absolute else os.path.relpath(HERE)
    builder = FFI()
    builder.cdef(CDEF)
    builder.set_source(
        "pvqcodec._pvqc_c",
        '#include "pvqc.h"',
        sources=[os.path.join(where, "pvqc.c")],
        include_dirs=[where],
        extra_compile_args=_compile_args(),
        libraries=[] if sys.platform == "win32" else ["m"],
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    import shutil
    import tempfile

    root = os.path.dirname(HERE)
    os.chdir(root)
    with tempfile.TemporaryDirectory() as tmp:  # generated C and objects stay out of the tree
        built = make_builder(absolute=True).compile(tmpdir=tmp, verbose=True)
        dest = os.path.join(root, "pvqcodec", os.path.basename(built))
        # copy, then rename over the old module: processes that have it loaded keep the old
        # inode (overwriting a mapped shared object in place can crash them)
        shutil.copy(built, dest + ".tmp")
        os.replace(dest + ".tmp", dest)
        print(dest)
