/*
 * fuzz_pvqc.c - libFuzzer harness over the C decoder's parse-and-decode entry points.
 *
 *   make fuzz                      (clang, with AddressSanitizer and UBSan)
 *   build/fuzz_pvqc -max_len=65536 CORPUS_DIR SEED_DIR
 *
 * For each input: open it from memory (every header and layout check), then for each
 * tensor check its payloads and decode it (whole, as float32; a row range as float16 and
 * bfloat16), with output buffers of exactly the announced size so that AddressSanitizer
 * catches any write past them; then a row range of every tensor again, which decodes the
 * chunks of rans payloads that the rows need (the handle keeps only the last tensor's
 * decoded streams). Tensors above 2^20 elements are only checked, and those above 2^24
 * not even that (a rans payload of a few bytes can hold that many symbols: checking them
 * is slow, and needs their decoded streams in memory), to keep each run fast. Any crash,
 * sanitizer report or leak is a finding.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pvqc.h"

#define MAX_DECODE_ELEMENTS (1u << 20)
#define MAX_CHECK_ELEMENTS (1u << 24)

static void decode_middle_rows(pvqc_file *f, size_t i, const pvqc_tensor_info *ti)
{
    uint64_t r0 = ti->rows / 3, r1 = ti->rows - ti->rows / 4;
    size_t bytes = (size_t)((r1 - r0) * ti->cols) * 2u;
    uint16_t *out = (uint16_t *)malloc(bytes ? bytes : 1);
    if (out) {
        pvqc_decode_rows(f, i, r0, r1, PVQC_DTYPE_FLOAT16, out, bytes);
        pvqc_decode_rows(f, i, r0, r1, PVQC_DTYPE_BFLOAT16, out, bytes);
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pvqc_file *f = NULL;
    /* a private copy of exactly `size` bytes: reads past it are caught */
    uint8_t *copy = (uint8_t *)malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    if (pvqc_open_memory(copy, size, NULL, &f) == PVQC_OK) {
        size_t n = pvqc_tensor_count(f), idx;
        for (size_t i = 0; i < pvqc_metadata_count(f); i++) {
            const char *k, *v;
            size_t kl, vl;
            pvqc_get_metadata(f, i, &k, &kl, &v, &vl);
        }
        for (size_t i = 0; i < n; i++) {
            pvqc_tensor_info ti;
            if (pvqc_get_tensor_info(f, i, &ti) != PVQC_OK) continue;
            pvqc_find_tensor(f, ti.name, ti.name_len, &idx);
            if (ti.numel > MAX_CHECK_ELEMENTS || pvqc_check_tensor(f, i) != PVQC_OK) continue;
            if (ti.numel > MAX_DECODE_ELEMENTS) continue;
            {
                size_t bytes = (size_t)ti.numel * 4u;
                float *out = (float *)malloc(bytes ? bytes : 1);
                if (out) {
                    pvqc_decode_tensor(f, i, PVQC_DTYPE_FLOAT32, out, bytes);
                    free(out);
                }
            }
            if (ti.rows > 0) decode_middle_rows(f, i, &ti);
        }
        for (size_t i = 0; i < n; i++) {
            pvqc_tensor_info ti;
            if (pvqc_get_tensor_info(f, i, &ti) != PVQC_OK || ti.numel > MAX_DECODE_ELEMENTS || ti.rows == 0) continue;
            if (pvqc_check_tensor(f, i) == PVQC_OK) decode_middle_rows(f, i, &ti);
        }
    }
    pvqc_close(f);
    free(copy);
    return 0;
}
