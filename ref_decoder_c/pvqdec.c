/*
 * pvqdec - decode a .pvqc file with the C reference decoder (pvqc.c), without Python.
 *
 *   pvqdec [--dtype float32|source|float16|bfloat16] FILE.pvqc OUT.safetensors
 *   pvqdec [--dtype ...] --raw DIR FILE.pvqc          (one DIR/<name>.bin per tensor)
 *   pvqdec --list FILE.pvqc                           (the tensor directory)
 *   pvqdec --check FILE.pvqc...                       (decode everything, write nothing)
 *
 * --dtype float32 (the default) writes every tensor as float32, raw tensors widened
 * exactly. --dtype source writes each tensor in its source dtype (raw tensors bit for
 * bit, quantized ones rounded by spec 10.3), like `pvqcodec decode`. --dtype float16 or
 * bfloat16 rounds the quantized tensors and keeps raw tensors in their source dtype,
 * like `pvqcodec decode --dtype`.
 *
 * Exit status 0 on success. On any error: exit 1 and one line on stderr,
 *   pvqdec: error [<error_name>]: <message>
 * with the spec's error name (section 9) for a bad file. Usage errors exit 2.
 * Outputs are written to a temporary file that is renamed into place.
 */
#include "pvqc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXIT_ERROR 1
#define EXIT_USAGE 2

typedef enum out_mode { MODE_FLOAT32, MODE_SOURCE, MODE_FLOAT16, MODE_BFLOAT16 } out_mode;

static void usage(void)
{
    fprintf(stderr,
            "usage: pvqdec [--dtype float32|source|float16|bfloat16] FILE.pvqc OUT.safetensors\n"
            "       pvqdec [--dtype ...] --raw DIR FILE.pvqc\n"
            "       pvqdec --list FILE.pvqc\n"
            "       pvqdec --check FILE.pvqc...\n");
}

static int report(pvqc_error e, const pvqc_file *f, const char *where)
{
    fprintf(stderr, "pvqdec: error [%s]: %s%s%s\n", pvqc_error_name(e), where ? where : "", where ? ": " : "",
            pvqc_error_message(f));
    return EXIT_ERROR;
}

static int io_error(const char *what, const char *path)
{
    fprintf(stderr, "pvqdec: error [io_error]: cannot %s %s\n", what, path);
    return EXIT_ERROR;
}

static pvqc_dtype output_dtype(out_mode mode, const pvqc_tensor_info *ti)
{
    int raw = ti->codec_id == 0;
    switch (mode) {
    case MODE_FLOAT32: return PVQC_DTYPE_FLOAT32;
    case MODE_SOURCE: return ti->dtype;
    case MODE_FLOAT16: return raw ? ti->dtype : PVQC_DTYPE_FLOAT16;
    case MODE_BFLOAT16: return raw ? ti->dtype : PVQC_DTYPE_BFLOAT16;
    }
    return PVQC_DTYPE_FLOAT32;
}

static const char *st_dtype(pvqc_dtype d)
{
    return d == PVQC_DTYPE_FLOAT32 ? "F32" : (d == PVQC_DTYPE_FLOAT16 ? "F16" : "BF16");
}

/* Byte order: pvqc and safetensors are little-endian; swap on a big-endian host. */
static int host_is_little_endian(void)
{
    const uint16_t probe = 1;
    unsigned char b;
    memcpy(&b, &probe, 1);
    return b == 1;
}

static void to_little_endian(void *buf, size_t n, size_t esize)
{
    unsigned char *p = (unsigned char *)buf, t;
    if (host_is_little_endian()) return;
    for (size_t i = 0; i < n; i++, p += esize)
        for (size_t j = 0; j < esize / 2; j++) {
            t = p[j];
            p[j] = p[esize - 1 - j];
            p[esize - 1 - j] = t;
        }
}

/* A growing text buffer for the safetensors JSON header. */
typedef struct text {
    char *s;
    size_t len, cap;
    int oom;
} text;

static void put(text *t, const char *s, size_t n)
{
    if (t->oom) return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        char *p;
        while (cap < t->len + n + 1) cap *= 2;
        p = (char *)realloc(t->s, cap);
        if (!p) { t->oom = 1; return; }
        t->s = p;
        t->cap = cap;
    }
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

static void puts_(text *t, const char *s) { put(t, s, strlen(s)); }

static void putu(text *t, unsigned long long v)
{
    char b[32];
    snprintf(b, sizeof b, "%llu", v);
    puts_(t, b);
}

/* A JSON string: the name is valid UTF-8 (the decoder checked), so only quotes,
 * backslashes and control characters need escapes. */
static void put_json_string(text *t, const char *s, size_t n)
{
    put(t, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(t, e, 2);
        } else if (c < 0x20) {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            puts_(t, e);
        } else {
            put(t, (const char *)&s[i], 1);
        }
    }
    put(t, "\"", 1);
}

static int finish_output(const char *tmp, const char *path)
{
    if (rename(tmp, path) != 0) {
        remove(path); /* platforms whose rename does not replace */
        if (rename(tmp, path) != 0) {
            remove(tmp);
            return io_error("rename the output to", path);
        }
    }
    return 0;
}

/* Decode tensor i into a new buffer in dtype dt; *bytes receives its size. Errors name
 * `where` (the file) when it is not NULL. */
static int decode_one(pvqc_file *f, size_t i, pvqc_dtype dt, void **buf, size_t *bytes, const char *where)
{
    pvqc_tensor_info ti;
    pvqc_error e = pvqc_get_tensor_info(f, i, &ti);
    unsigned long long n;
    if (e != PVQC_OK) return report(e, f, where);
    n = (unsigned long long)ti.numel * pvqc_dtype_size(dt);
    if (n > (unsigned long long)(size_t)-1) {
        fprintf(stderr, "pvqdec: error [out_of_memory]: tensor '%s' needs %llu bytes\n", ti.name, n);
        return EXIT_ERROR;
    }
    *bytes = (size_t)n;
    *buf = malloc(n ? (size_t)n : 1u);
    if (!*buf) {
        fprintf(stderr, "pvqdec: error [out_of_memory]: tensor '%s' needs %llu bytes\n", ti.name, n);
        return EXIT_ERROR;
    }
    e = pvqc_decode_tensor(f, i, dt, *buf, *bytes);
    if (e != PVQC_OK) {
        free(*buf);
        *buf = NULL;
        return report(e, f, where);
    }
    to_little_endian(*buf, (size_t)ti.numel, pvqc_dtype_size(dt));
    return 0;
}

static int write_safetensors(pvqc_file *f, out_mode mode, const char *path)
{
    size_t n = pvqc_tensor_count(f), i, tmp_len = strlen(path) + 16;
    unsigned long long offset = 0, hlen;
    text h = {NULL, 0, 0, 0};
    char *tmp;
    FILE *fp;
    unsigned char len8[8];
    int rc = 0;

    puts_(&h, "{");
    for (i = 0; i < n; i++) {
        pvqc_tensor_info ti;
        pvqc_dtype dt;
        unsigned long long bytes;
        pvqc_get_tensor_info(f, i, &ti);
        dt = output_dtype(mode, &ti);
        bytes = (unsigned long long)ti.numel * pvqc_dtype_size(dt);
        if (i) puts_(&h, ",");
        put_json_string(&h, ti.name, ti.name_len);
        puts_(&h, ":{\"dtype\":\"");
        puts_(&h, st_dtype(dt));
        puts_(&h, "\",\"shape\":[");
        for (unsigned d = 0; d < ti.rank; d++) {
            if (d) puts_(&h, ",");
            putu(&h, ti.shape[d]);
        }
        puts_(&h, "],\"data_offsets\":[");
        putu(&h, offset);
        puts_(&h, ",");
        putu(&h, offset + bytes);
        puts_(&h, "]}");
        offset += bytes;
    }
    puts_(&h, "}");
    while (h.len % 8 != 0) puts_(&h, " ");
    if (h.oom) {
        free(h.s);
        fprintf(stderr, "pvqdec: error [out_of_memory]: safetensors header\n");
        return EXIT_ERROR;
    }
    hlen = h.len;
    for (i = 0; i < 8; i++) len8[i] = (unsigned char)(hlen >> (8 * i));

    tmp = (char *)malloc(tmp_len);
    if (!tmp) {
        free(h.s);
        fprintf(stderr, "pvqdec: error [out_of_memory]: path\n");
        return EXIT_ERROR;
    }
    snprintf(tmp, tmp_len, "%s.pvqdec-tmp", path);
    fp = fopen(tmp, "wb");
    if (!fp) {
        free(h.s);
        rc = io_error("write", tmp);
        free(tmp);
        return rc;
    }
    if (fwrite(len8, 1, 8, fp) != 8 || fwrite(h.s, 1, h.len, fp) != h.len) rc = io_error("write", tmp);
    free(h.s);
    for (i = 0; i < n && rc == 0; i++) {
        pvqc_tensor_info ti;
        void *buf = NULL;
        size_t bytes = 0;
        pvqc_get_tensor_info(f, i, &ti);
        rc = decode_one(f, i, output_dtype(mode, &ti), &buf, &bytes, NULL);
        if (rc == 0 && bytes && fwrite(buf, 1, bytes, fp) != bytes) rc = io_error("write", tmp);
        free(buf);
    }
    if (fclose(fp) != 0 && rc == 0) rc = io_error("write", tmp);
    if (rc == 0) rc = finish_output(tmp, path);
    else remove(tmp);
    free(tmp);
    return rc;
}

/* --raw DIR: DIR/<name>.bin, the name with every byte outside [A-Za-z0-9._-] (and a
 * leading '.') written as %XX. */
static int write_raw(pvqc_file *f, out_mode mode, const char *dir)
{
    size_t n = pvqc_tensor_count(f);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        pvqc_tensor_info ti;
        size_t cap = strlen(dir) + 3 * 4096 + 32, len, j;
        char *path, *tmp;
        void *buf = NULL;
        size_t bytes = 0;
        FILE *fp;
        pvqc_get_tensor_info(f, i, &ti);
        path = (char *)malloc(cap);
        tmp = (char *)malloc(cap + 16);
        if (!path || !tmp) {
            free(path);
            free(tmp);
            fprintf(stderr, "pvqdec: error [out_of_memory]: path\n");
            return EXIT_ERROR;
        }
        len = (size_t)snprintf(path, cap, "%s/", dir);
        for (j = 0; j < ti.name_len; j++) {
            unsigned char c = (unsigned char)ti.name[j];
            int plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                        c == '-' || (c == '.' && j > 0);
            if (plain) path[len++] = (char)c;
            else len += (size_t)snprintf(path + len, cap - len, "%%%02X", c);
        }
        snprintf(path + len, cap - len, ".bin");
        snprintf(tmp, cap + 16, "%s.pvqdec-tmp", path);
        rc = decode_one(f, i, output_dtype(mode, &ti), &buf, &bytes, NULL);
        if (rc == 0) {
            fp = fopen(tmp, "wb");
            if (!fp) rc = io_error("write", tmp);
            else {
                if (bytes && fwrite(buf, 1, bytes, fp) != bytes) rc = io_error("write", tmp);
                if (fclose(fp) != 0 && rc == 0) rc = io_error("write", tmp);
                if (rc == 0) rc = finish_output(tmp, path);
                else remove(tmp);
            }
        }
        free(buf);
        free(path);
        free(tmp);
    }
    return rc;
}

static int list_tensors(pvqc_file *f)
{
    size_t n = pvqc_tensor_count(f);
    unsigned major, minor;
    pvqc_file_version(f, &major, &minor);
    printf("pvqc version %u.%u, %lu tensors\n", major, minor, (unsigned long)n);
    for (size_t i = 0; i < n; i++) {
        pvqc_tensor_info ti;
        pvqc_get_tensor_info(f, i, &ti);
        printf("%s\t%s\t[", ti.name, ti.dtype == PVQC_DTYPE_FLOAT32 ? "float32" : (ti.dtype == PVQC_DTYPE_FLOAT16 ? "float16" : "bfloat16"));
        for (unsigned d = 0; d < ti.rank; d++) printf(d ? ", %llu" : "%llu", (unsigned long long)ti.shape[d]);
        printf("]\t%llux%llu\t%s\t%s\t%llu bytes\n", (unsigned long long)ti.rows, (unsigned long long)ti.cols,
               ti.transform_name, ti.codec_name, (unsigned long long)ti.payload_bytes);
    }
    return 0;
}

static int check_all(pvqc_file *f, const char *where)
{
    size_t n = pvqc_tensor_count(f);
    for (size_t i = 0; i < n; i++) {
        pvqc_tensor_info ti;
        void *buf = NULL;
        size_t bytes = 0;
        int rc;
        pvqc_get_tensor_info(f, i, &ti);
        rc = decode_one(f, i, PVQC_DTYPE_FLOAT32, &buf, &bytes, where);
        free(buf);
        if (rc) return rc;
    }
    if (where) printf("%s: ", where);
    printf("OK (%lu tensors decoded)\n", (unsigned long)n);
    return 0;
}

int main(int argc, char **argv)
{
    out_mode mode = MODE_FLOAT32;
    const char *raw_dir = NULL, *input = NULL, *output = NULL;
    int list = 0, check = 0, rc, nfiles = 0;
    const char **files = (const char **)malloc((size_t)argc * sizeof(char *));
    pvqc_file *f = NULL;
    pvqc_error e;

    if (!files) {
        fprintf(stderr, "pvqdec: error [out_of_memory]: arguments\n");
        return EXIT_ERROR;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--dtype") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            if (strcmp(v, "float32") == 0) mode = MODE_FLOAT32;
            else if (strcmp(v, "source") == 0) mode = MODE_SOURCE;
            else if (strcmp(v, "float16") == 0) mode = MODE_FLOAT16;
            else if (strcmp(v, "bfloat16") == 0) mode = MODE_BFLOAT16;
            else {
                free(files);
                usage();
                return EXIT_USAGE;
            }
        } else if (strcmp(a, "--raw") == 0 && i + 1 < argc) {
            raw_dir = argv[++i];
        } else if (strcmp(a, "--list") == 0) {
            list = 1;
        } else if (strcmp(a, "--check") == 0) {
            check = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            free(files);
            usage();
            return 0;
        } else if (a[0] == '-' && a[1] != '\0') {
            free(files);
            usage();
            return EXIT_USAGE;
        } else {
            files[nfiles++] = a;
            if (!input) input = a;
            else if (!output) output = a;
        }
    }

    if (check && !list && !raw_dir && nfiles >= 1) {
        /* --check FILE...: every file, one line each; exit 1 if any is bad */
        int bad = 0;
        for (int i = 0; i < nfiles; i++) {
            e = pvqc_open_path(files[i], NULL, &f);
            if (e != PVQC_OK) rc = report(e, f, NULL);
            else rc = check_all(f, nfiles > 1 ? files[i] : NULL);
            pvqc_close(f);
            f = NULL;
            if (rc) bad = 1;
        }
        free(files);
        return bad ? EXIT_ERROR : 0;
    }
    free(files);
    if (!input || nfiles > 2 || check || (!output && !raw_dir && !list) || (output && list) || (list && nfiles != 1)) {
        usage();
        return EXIT_USAGE;
    }

    e = pvqc_open_path(input, NULL, &f);
    if (e != PVQC_OK) {
        rc = report(e, f, NULL);
        pvqc_close(f);
        return rc;
    }
    if (list) rc = list_tensors(f);
    else {
        rc = 0;
        if (output) rc = write_safetensors(f, mode, output);
        if (rc == 0 && raw_dir) rc = write_raw(f, mode, raw_dir);
    }
    pvqc_close(f);
    return rc;
}
