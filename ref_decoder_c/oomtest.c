/*
 * oomtest.c - every allocation failure path of the decoder, through the public API.
 *
 *   oomtest FILE.pvqc...
 *
 * For n = 0, 1, 2, ...: open the file with an allocator that fails from its n-th call on,
 * then check and decode every tensor (float32 and bfloat16, whole and a row range). Every
 * call must return PVQC_OK or PVQC_ERR_OUT_OF_MEMORY (never crash or leak: run it under
 * AddressSanitizer), and the allocator's live count must be 0 after pvqc_close. Stops at
 * the first n at which the allocator refused nothing. Prints "oomtest: OK <runs>" or the first problem.
 */
#include <stdio.h>
#include <stdlib.h>

#include "pvqc.h"

typedef struct budget {
    long calls, fail_from, live;
} budget;

static void *limited_alloc(void *opaque, size_t size)
{
    budget *b = (budget *)opaque;
    void *p;
    if (b->calls++ >= b->fail_from) return NULL;
    p = malloc(size);
    if (p) b->live++;
    return p;
}

static void limited_free(void *opaque, void *ptr)
{
    budget *b = (budget *)opaque;
    if (ptr) {
        b->live--;
        free(ptr);
    }
}

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    long n;
    unsigned char *buf;
    if (!fp) return NULL;
    if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return NULL;
    }
    buf = (unsigned char *)malloc(n ? (size_t)n : 1u);
    if (buf && n && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    *size = (size_t)n;
    return buf;
}

static int ok(pvqc_error e) { return e == PVQC_OK || e == PVQC_ERR_OUT_OF_MEMORY; }

/* One run; returns -1 on a problem, 1 if the allocator refused a call, 0 if it never had to. */
static int run(const unsigned char *data, size_t size, long fail_from)
{
    budget b = {0, fail_from, 0};
    pvqc_allocator al = {limited_alloc, limited_free, NULL};
    pvqc_file *f = NULL;
    pvqc_error e;
    int ooms = 0;
    al.opaque = &b;
    e = pvqc_open_memory(data, size, &al, &f);
    if (!ok(e)) { fprintf(stderr, "oomtest: open gave %s\n", pvqc_error_name(e)); return -1; }
    if (e == PVQC_ERR_OUT_OF_MEMORY) ooms++;
    if (e == PVQC_OK) {
        for (size_t i = 0; i < pvqc_tensor_count(f); i++) {
            pvqc_tensor_info ti;
            float *out;
            if (pvqc_get_tensor_info(f, i, &ti) != PVQC_OK) return -1;
            out = (float *)malloc(ti.numel ? (size_t)ti.numel * 4u : 1u);
            if (!out) return -1;
            e = pvqc_decode_tensor(f, i, PVQC_DTYPE_FLOAT32, out, (size_t)ti.numel * 4u);
            if (!ok(e)) { fprintf(stderr, "oomtest: decode gave %s\n", pvqc_error_name(e)); free(out); return -1; }
            ooms += e != PVQC_OK;
            e = pvqc_decode_rows(f, i, ti.rows / 2, ti.rows, PVQC_DTYPE_BFLOAT16, out, (size_t)ti.numel * 4u);
            if (!ok(e)) { fprintf(stderr, "oomtest: decode_rows gave %s\n", pvqc_error_name(e)); free(out); return -1; }
            ooms += e != PVQC_OK;
            free(out);
        }
    }
    pvqc_close(f);
    if (f == NULL && e != PVQC_ERR_OUT_OF_MEMORY) return -1;
    if (b.live != 0) { fprintf(stderr, "oomtest: %ld allocations left after close\n", b.live); return -1; }
    if (b.calls > fail_from && ooms == 0) { fprintf(stderr, "oomtest: a refused allocation was not reported\n"); return -1; }
    return b.calls > fail_from; /* 1: the allocator refused a call (try the next n) */
}

int main(int argc, char **argv)
{
    long runs = 0;
    for (int a = 1; a < argc; a++) {
        size_t size = 0;
        unsigned char *data = read_file(argv[a], &size);
        if (!data) { fprintf(stderr, "oomtest: cannot read %s\n", argv[a]); return 1; }
        for (long n = 0;; n++) {
            int r = run(data, size, n);
            runs++;
            if (r < 0) { fprintf(stderr, "oomtest: %s, failing from allocation %ld\n", argv[a], n); free(data); return 1; }
            if (r == 0) break;
        }
        free(data);
    }
    printf("oomtest: OK %ld runs\n", runs);
    return 0;
}
