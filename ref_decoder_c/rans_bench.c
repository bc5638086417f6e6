/*
 * rans_bench.c - decode throughput of the rans coding (spec 4.3) on one core, for
 * bench/rans_c_throughput.py.
 *
 *   rans_bench PAYLOAD COUNT WIDTH [BOUND_HEX] [SECONDS]
 *
 * Decodes the whole payload (a stream of COUNT symbols of WIDTH bits; uniform mode
 * bounded by BOUND_HEX, N in hexadecimal, or 2^WIDTH if absent or "-") repeatedly for at
 * least SECONDS (default 1) of processor time and prints "symbols_per_s <float> runs <n>". It includes
 * pvqc.c to reach the decoder's own functions; the payload is decoded exactly as the
 * library decodes a whole stream (header checks, then every chunk into the raw coding's
 * bit string), without the file's other checks.
 */
#include <time.h>

#include "pvqc.c"

/* Processor time of this process (C99 has no wall clock finer than a second; on a loaded
 * machine processor time is also the fairer measure of one core's work). */
static double now(void) { return (double)clock() / CLOCKS_PER_SEC; }

static void parse_hex(const char *s, uint64_t *limbs)
{
    size_t n = strlen(s);
    memset(limbs, 0, RANS_BOUND_LIMBS * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++) {
        char c = s[n - 1 - i];
        unsigned v = (unsigned)(c >= 'a' ? c - 'a' + 10 : (c >= 'A' ? c - 'A' + 10 : c - '0'));
        limbs[i / 16] |= (uint64_t)v << (4u * (i % 16));
    }
}

int main(int argc, char **argv)
{
    pvqc_file *f = new_handle(NULL);
    tensor_rec t;
    stream_spec s;
    rans_header h;
    rans_bounds bounds;
    static rans_uniform plan;
    uint8_t *payload, *out;
    long len;
    uint64_t out_len;
    double seconds = argc > 5 ? atof(argv[5]) : 1.0, t0, el;
    long runs = 0;
    FILE *fp;
    if (argc < 4 || !f) {
        fprintf(stderr, "usage: rans_bench PAYLOAD COUNT WIDTH [BOUND_HEX|-] [SECONDS]\n");
        return 2;
    }
    fp = fopen(argv[1], "rb");
    if (!fp || fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) return 2;
    payload = (uint8_t *)malloc((size_t)len + 1);
    if (!payload || fread(payload, 1, (size_t)len, fp) != (size_t)len) return 2;
    fclose(fp);
    memset(&t, 0, sizeof t);
    t.name_bytes = (const uint8_t *)"bench";
    t.name_len = 5;
    s.name = "bench";
    s.count = strtoull(argv[2], NULL, 10);
    s.width = (unsigned)atoi(argv[3]);
    memset(&plan, 0, sizeof plan);
    if (argc > 4 && strcmp(argv[4], "-") != 0) {
        parse_hex(argv[4], plan.nm1);
        for (unsigned l = 0; l < RANS_BOUND_LIMBS; l++) /* N - 1 */
            if (plan.nm1[l]-- != 0) break;
    } else {
        for (unsigned b = 0; b < s.width; b++) plan.nm1[b / 64u] |= 1ull << (b % 64u);
    }
    rans_uniform_init(&plan);
    memset(&bounds, 0, sizeof bounds);
    bounds.count = 1;
    bounds.plans = &plan;
    out_len = (s.count * s.width + 7u) / 8u;
    out = (uint8_t *)malloc((size_t)out_len + 1);
    if (!out) return 2;
    t0 = now();
    do {
        if (rans_parse_header(f, &t, &s, payload, (uint64_t)len, &h) != PVQC_OK ||
            rans_decode(f, &t, &s, &h, &bounds, 0, h.chunk_count, out, out_len) != PVQC_OK) {
            fprintf(stderr, "rans_bench: %s\n", pvqc_error_message(f));
            return 1;
        }
        runs++;
        el = now() - t0;
    } while (el < seconds);
    printf("symbols_per_s %.6g runs %ld\n", (double)s.count * (double)runs / el, runs);
    free(out);
    free(payload);
    pvqc_close(f);
    return 0;
}
