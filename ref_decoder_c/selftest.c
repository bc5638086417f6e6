/*
 * selftest.c - prints the decoder's internal values for the check values that the
 * specification publishes (tests/test_c_decoder_spec.py compares them):
 *
 *   base_table  every base Hadamard matrix in table order, +1 -> 01, -1 -> ff (5.3.2)
 *   signs       the first 16 signs of seeds 0 and 12345, both sides (5.3.4)
 *   scale       c_b for the tabulated block orders (5.3.5)
 *   example4    the inverse RHT of transforms.md example 4, float32 little-endian (5.3.6)
 *   factor      the factorization of the tabulated block orders (5.3.3)
 *   count       N(d, k) by the recurrence table and by the closed form, in hex (6.2.4)
 *   enum        the vectors of indices 0 .. 17 for d = 3, k = 2 (pvq-enumeration.md 7)
 *   hyb_table, codes, trellis_*   trellis.md 6.3.A and the worked examples of 6.3.8
 *   lattice_pat, lattice_u, e8p, lattice_group   lattice.md 6.4.4.2, 6.4.5 and 6.4.7
 *   rans        coding-rans.md 4.3: payloads made by an encoder written from 4.3.5 decode
 *               back to their symbols (whole and a subset of chunks), in table and uniform
 *               mode, with bounds of every kind; symbols at or above a bound are rejected
 *   ectcq_next  next(S, 0), next(S, 1) of every state of the trellises of 6.7.4
 *
 * `pvqc-selftest strips FILE...` decodes the ectcq and eclattice tensors of the files in
 * column strips (6.7, 6.8: rows are walks; strips resume them) and compares with whole rows.
 *
 * It includes pvqc.c to reach its static functions.
 */
#include "pvqc.c"

static void hex_bytes(const char *key, const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    printf("%s ", key);
    for (size_t i = 0; i < n; i++) printf("%02x", b[i]);
    printf("\n");
}

static void print_hex_limbs(const uint64_t *x, unsigned n)
{
    int started = 0;
    for (unsigned l = n; l-- > 0;) {
        if (!started) {
            if (x[l] == 0 && l > 0) continue;
            printf("%llx", (ull)x[l]);
            started = 1;
        } else {
            printf("%016llx", (ull)x[l]);
        }
    }
}

/* ---- 4.3 the rans coding: round trips through an encoder written from 4.3.5 -------------- */

/* A tiny deterministic generator (splitmix64) for the test symbols. */
static uint64_t test_rng = 1;
static uint64_t rnd(void) { return mix64(test_rng += 0x9E3779B97F4A7C15ull); }

typedef struct enc_op {
    uint32_t f, c;
    unsigned p;
} enc_op;

/* The operations of symbol v (RANS_BOUND_LIMBS limbs) in decode order (4.3.3). */
static unsigned test_ops(unsigned mode, const uint32_t *freq, const uint32_t *cum, unsigned P, const rans_uniform *u,
                         const uint64_t *v, enc_op *ops)
{
    unsigned n = 0;
    if (mode == 0) {
        ops[0].f = freq[v[0]];
        ops[0].c = cum[v[0]];
        ops[0].p = P;
        return 1;
    }
    if (u->nops == 0) return 0;
    {
        unsigned t = mp_bits(v, u->low, u->b - u->low);
        if (u->top_even) { /* 4.3.2 even(n): f(v) = q + 1 for v < r, else q; c(v) = v q + min(v, r) */
            ops[n].f = t < u->r ? u->q + 1u : u->q;
            ops[n].c = t * u->q + (t < u->r ? t : u->r);
            ops[n].p = 16;
        }
        else { ops[n].f = 1; ops[n].c = t; ops[n].p = u->top_k; }
        n++;
    }
    for (unsigned pc = 0; pc < u->pieces; pc++) {
        unsigned i = u->pieces - 1u - pc, k = pc == 0 ? u->first_k : 16u;
        ops[n].f = 1;
        ops[n].c = mp_bits(v, 16u * i, k);
        ops[n].p = k;
        n++;
    }
    return n;
}

/* 4.3.5 "To encode value v of an operation with total 2^p: if x >= f(v) * 2^(32 - p) it emits
 * the word x mod 65536 and sets x = x div 65536, then sets x = (x div f(v)) * 2^p + (x mod
 * f(v)) + c(v)." */
static void test_encode_op(uint64_t *x, const enc_op *op, uint16_t *words, size_t *nw)
{
    if (*x >= ((uint64_t)op->f << (32u - op->p))) {
        words[(*nw)++] = (uint16_t)(*x & 0xFFFFu);
        *x >>= 16;
    }
    *x = (*x / op->f << op->p) + *x % op->f + op->c;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8u * i));
}

/* Encode `count` symbols (sym: count x RANS_BOUND_LIMBS limbs) as a rans payload (4.3.1).
 * The encoder starts every lane at 2^16 and runs the chunk's operations in exactly the
 * reverse of the order of 4.3.4. Returns the payload's length. */
static size_t test_encode(unsigned mode, unsigned P, const uint32_t *freq, uint32_t A, const uint64_t *nm1,
                          const uint64_t *sym, uint64_t count, uint32_t S, uint8_t *out, pvqc_file *f)
{
    static uint32_t cum[65536];
    static uint16_t words[1u << 20];
    rans_uniform u;
    const uint32_t C = (uint32_t)((count + S - 1u) / S);
    const size_t T = (16u + 2u * A + 7u) / 8u * 8u;
    size_t pos = T + 8u * C;
    uint64_t end = 0;
    memset(&u, 0, sizeof u);
    memcpy(u.nm1, nm1, sizeof u.nm1);
    rans_uniform_init(&u);
    for (uint32_t a = 0, c = 0; a < A; a++) { cum[a] = c; c += freq[a]; }
    memset(out, 0, T);
    out[0] = (uint8_t)mode;
    out[1] = (uint8_t)P;
    put_le(out + 4, S, 4);
    put_le(out + 8, C, 4);
    put_le(out + 12, A, 4);
    for (uint32_t a = 0; a < A; a++) put_le(out + 16 + 2u * a, freq[a], 2);
    for (uint32_t j = 0; j < C; j++) {
        const uint64_t first = (uint64_t)j * S, n = count - first < S ? count - first : S;
        uint64_t x[32];
        size_t nw = 0;
        enc_op ops[RANS_MAX_OPS];
        for (unsigned l = 0; l < 32; l++) x[l] = RANS_LOW;
        for (uint64_t t = (n + 31u) / 32u; t-- > 0;) {
            unsigned maxops = 0;
            for (unsigned l = 0; l < 32 && 32u * t + l < n; l++) {
                unsigned k = test_ops(mode, freq, cum, P, &u, sym + (first + 32u * t + l) * RANS_BOUND_LIMBS, ops);
                if (k > maxops) maxops = k;
            }
            for (unsigned sub = maxops; sub-- > 0;)
                for (unsigned l = 32; l-- > 0;) {
                    const uint64_t i = 32u * t + l;
                    unsigned k;
                    if (i >= n) continue;
                    k = test_ops(mode, freq, cum, P, &u, sym + (first + i) * RANS_BOUND_LIMBS, ops);
                    if (sub < k) test_encode_op(&x[l], &ops[sub], words, &nw);
                }
        }
        for (unsigned l = 0; l < 32; l++) {
            put_le(out + pos + 4u * l, x[l] & 0xFFFFu, 2);
            put_le(out + pos + 4u * l + 2u, x[l] >> 16, 2);
        }
        pos += 128;
        for (size_t k = 0; k < nw; k++, pos += 2) put_le(out + pos, words[nw - 1u - k], 2);
        end += 64u + nw;
        put_le(out + T + 8u * j, end, 8);
    }
    (void)f;
    return pos;
}

/* Decode chunks [j0, j1) of the payload; 1 if the symbols equal sym's, else 0; -1 if the
 * decoder rejected the payload. */
static int test_decode(pvqc_file *f, const tensor_rec *t, const stream_spec *s, const uint8_t *payload, size_t len,
                       const uint64_t *nm1, const uint64_t *sym, uint64_t j0, uint64_t j1)
{
    rans_header h;
    static uint8_t bits[1u << 22];
    static rans_uniform plan;
    rans_bounds bounds;
    stream_view v;
    uint64_t first, last, limbs[RANS_BOUND_LIMBS];
    if (rans_parse_header(f, t, s, payload, len, &h) != PVQC_OK) return -1;
    if (j1 > h.chunk_count) j1 = h.chunk_count;
    first = j0 * h.chunk_symbols;
    last = j1 * h.chunk_symbols < s->count ? j1 * h.chunk_symbols : s->count;
    if (j0 >= j1) last = first;
    v.bytes = bits;
    v.length = ((last - first) * s->width + 7u) / 8u;
    v.count = s->count;
    v.width = s->width;
    v.base = first;
    memset(&bounds, 0, sizeof bounds);
    memset(&plan, 0, sizeof plan);
    memcpy(plan.nm1, nm1, sizeof plan.nm1);
    rans_uniform_init(&plan);
    bounds.count = 1;
    bounds.plans = &plan;
    if (rans_decode(f, t, s, &h, &bounds, j0, j1, bits, v.length) != PVQC_OK) return -1;
    for (uint64_t i = first; i < last; i++) {
        unsigned nl = limbs_for_bits(s->width ? s->width : 1u);
        memset(limbs, 0, sizeof limbs);
        stream_symbol_limbs(&v, i, limbs, nl);
        if (memcmp(limbs, sym + i * RANS_BOUND_LIMBS, sizeof limbs) != 0) return 0;
    }
    return 1;
}

/* One case: encode, decode whole and a middle subset of chunks, then every single-byte change
 * of the payload must be rejected as payload_corrupt or decode to other symbols (never crash). */
static void rans_case(pvqc_file *f, const char *label, unsigned mode, unsigned P, const uint32_t *freq, uint32_t A,
                      const uint64_t *nm1_in, unsigned width, const uint64_t *sym, uint64_t count, uint32_t S,
                      int expect_ok)
{
    static uint8_t payload[1u << 22], bad[1u << 22];
    tensor_rec t;
    stream_spec s;
    uint64_t nm1[RANS_BOUND_LIMBS];
    size_t len;
    int whole, part = 1, damaged_ok = 0;
    uint64_t C;
    memset(&t, 0, sizeof t);
    t.name_bytes = (const uint8_t *)"t";
    t.name_len = 1;
    s.name = "test";
    s.count = count;
    s.width = width;
    memset(nm1, 0, sizeof nm1);
    if (nm1_in) memcpy(nm1, nm1_in, sizeof nm1);
    else for (unsigned b = 0; b < width; b++) nm1[b / 64u] |= 1ull << (b % 64u);
    len = test_encode(mode, P, freq, A, nm1, sym, count, S, payload, f);
    C = (count + S - 1u) / S;
    whole = test_decode(f, &t, &s, payload, len, nm1, sym, 0, C);
    if (C >= 3) part = test_decode(f, &t, &s, payload, len, nm1, sym, 1, C - 1u);
    if (expect_ok && len <= 4096) { /* damage: each byte ^ 0x01 and ^ 0x80 */
        for (size_t i = 0; i < len; i++)
            for (unsigned m = 1; m <= 0x80; m <<= 7) {
                int r;
                memcpy(bad, payload, len);
                bad[i] ^= (uint8_t)m;
                r = test_decode(f, &t, &s, bad, len, nm1, sym, 0, C);
                if (r == 1) damaged_ok++; /* possible only where a word was never read */
            }
    }
    if (expect_ok)
        printf("rans %s %s %llu symbols %llu bytes\n", label, whole == 1 && part == 1 ? "ok" : "FAIL", (ull)count,
               (ull)len);
    else
        printf("rans %s %s\n", label, whole == -1 ? "rejected" : "ACCEPTED");
    (void)damaged_ok;
}

static void rans_selftest(pvqc_file *f)
{
    static uint64_t sym[20000 * RANS_BOUND_LIMBS];
    static uint32_t freq[65536];
    uint64_t nm1[RANS_BOUND_LIMBS];
    const uint64_t n = 3001; /* 94 steps, the last one partial */
#define SYM(i) sym[(uint64_t)(i) * RANS_BOUND_LIMBS]
    /* table mode, 4-bit symbols from a skewed table, P = 12, chunks of 1000 (the last partial) */
    memset(sym, 0, sizeof sym);
    {
        static const uint32_t fr[16] = {2000, 1000, 500, 300, 100, 50, 40, 30, 20, 20, 10, 10, 5, 5, 5, 1};
        uint32_t cum[17] = {0};
        for (unsigned a = 0; a < 16; a++) { freq[a] = fr[a]; cum[a + 1] = cum[a] + fr[a]; }
        freq[0] += 4096 - cum[16];
        for (unsigned a = 0; a < 16; a++) cum[a + 1] = cum[a] + freq[a];
        for (uint64_t i = 0; i < n; i++) {
            uint32_t r = (uint32_t)(rnd() % 4096u), a = 0;
            while (cum[a + 1] <= r) a++;
            SYM(i) = a;
        }
        rans_case(f, "table_w4_p12", 0, 12, freq, 16, NULL, 4, sym, n, 1000, 1);
        rans_case(f, "table_w4_one_chunk", 0, 12, freq, 16, NULL, 4, sym, n, 65536, 1);
        rans_case(f, "table_w4_s1", 0, 12, freq, 16, NULL, 4, sym, 70, 1, 1);
    }
    /* table mode, 16-bit alphabet with zero frequencies, P = 15 */
    memset(sym, 0, sizeof sym);
    memset(freq, 0, sizeof freq);
    for (unsigned a = 0; a < 65536u; a += 3) freq[a] = 1;           /* 21846 slots */
    freq[65535] = 32768u - 21845u;                                  /* 65535 is one of them */
    for (uint64_t i = 0; i < n; i++) SYM(i) = (rnd() & 1) ? 65535u : (rnd() % 21846u) * 3u;
    rans_case(f, "table_w16_p15", 0, 15, freq, 65536, NULL, 16, sym, n, 512, 1);
    /* table mode, one symbol of frequency 2^P: no word at all; width 0 */
    memset(sym, 0, sizeof sym);
    freq[0] = 2;
    rans_case(f, "table_w0_single", 0, 1, freq, 1, NULL, 0, sym, n, 1024, 1);
    /* table mode on a 30-bit stream (alphabet 65,536 at most) */
    freq[0] = 1; freq[1] = 3;
    for (uint64_t i = 0; i < n; i++) SYM(i) = rnd() % 4u ? 1u : 0u;
    rans_case(f, "table_w30_p2", 0, 2, freq, 2, NULL, 30, sym, n, 777, 1);
    /* empty stream */
    rans_case(f, "table_empty", 0, 2, freq, 2, NULL, 30, sym, 0, 777, 1);
    rans_case(f, "uniform_empty", 1, 0, NULL, 0, NULL, 30, sym, 0, 7, 1);

    /* uniform mode: bounds of every kind of b */
    {
        static const uint64_t bounds[] = {1, 2, 3, 128, 200, 255, 256, 257, 300, 511, 512, 1000003, 65536, 65537,
                                          (1ull << 24) + 12345, 0xFFFFFFFFFFFFFFFFull};
        for (unsigned k = 0; k < sizeof bounds / sizeof bounds[0]; k++) {
            char label[64];
            unsigned width = 64;
            memset(nm1, 0, sizeof nm1);
            nm1[0] = bounds[k] - 1u;
            while (width > 1 && ((bounds[k] - 1u) >> (width - 1u)) == 0) width--;
            if (bounds[k] == 0xFFFFFFFFFFFFFFFFull) width = 64;
            memset(sym, 0, sizeof sym);
            for (uint64_t i = 0; i < n; i++) SYM(i) = i < 3 ? (i == 0 ? 0 : bounds[k] - 1u) : rnd() % bounds[k];
            snprintf(label, sizeof label, "uniform_N%llu", (ull)bounds[k]);
            rans_case(f, label, 1, 0, NULL, 0, nm1, width, sym, n, 640, 1);
        }
        /* no bound: 2^width, width 1, 13, 64 */
        for (uint64_t i = 0; i < n; i++) SYM(i) = rnd() & 1u;
        rans_case(f, "uniform_w1", 1, 0, NULL, 0, NULL, 1, sym, n, 300, 1);
        for (uint64_t i = 0; i < n; i++) SYM(i) = rnd() & 0x1FFFu;
        rans_case(f, "uniform_w13", 1, 0, NULL, 0, NULL, 13, sym, n, 300, 1);
        for (uint64_t i = 0; i < n; i++) SYM(i) = rnd();
        rans_case(f, "uniform_w64", 1, 0, NULL, 0, NULL, 64, sym, n, 300, 1);
    }
    /* uniform mode, wide: N(64, 160) (a PVQ bound of more than 64 bits) and a 1000-bit bound */
    {
        const unsigned cases[2][2] = {{64, 160}, {256, 700}}; /* 237 and 995 bits */
        for (unsigned c = 0; c < 2; c++) {
            unsigned width = pvq_index_bits(cases[c][0], cases[c][1]), nl;
            char label[64];
            memset(nm1, 0, sizeof nm1);
            nl = pvq_count_limbs(cases[c][0], cases[c][1], nm1);
            for (unsigned l = 0; l < RANS_BOUND_LIMBS; l++) if (nm1[l]-- != 0) break;
            memset(sym, 0, sizeof sym);
            for (uint64_t i = 0; i < 1000; i++) {
                uint64_t *v = &SYM(i);
                if (i == 1) { memcpy(v, nm1, sizeof nm1); continue; }   /* N - 1 */
                if (i == 0) continue;                                      /* 0 */
                /* below N - 1: copy its top limb minus something, random below */
                for (unsigned l = 0; l < nl; l++) v[l] = rnd();
                v[nl - 1u] = nm1[nl - 1u] ? rnd() % nm1[nl - 1u] : 0u;
            }
            snprintf(label, sizeof label, "uniform_pvq_%u_%u_%ubits", cases[c][0], cases[c][1], width);
            rans_case(f, label, 1, 0, NULL, 0, nm1, width, sym, 1000, 100, 1);
            /* N itself (and N - 1 + 2^16) must be rejected */
            memcpy(&SYM(1), nm1, sizeof nm1);
            for (unsigned l = 0; l < RANS_BOUND_LIMBS; l++) if (++sym[RANS_BOUND_LIMBS + l] != 0) break;
            snprintf(label, sizeof label, "uniform_pvq_%u_%u_symbol_N", cases[c][0], cases[c][1]);
            rans_case(f, label, 1, 0, NULL, 0, nm1, width, sym, 1000, 100, 0);
        }
    }
    /* uniform, narrow: a symbol >= N that the operations can express (N = 257: t = 128, low = 1) */
    memset(nm1, 0, sizeof nm1);
    nm1[0] = 256;
    memset(sym, 0, sizeof sym);
    SYM(40) = 257;
    rans_case(f, "uniform_N257_symbol_257", 1, 0, NULL, 0, nm1, 9, sym, 100, 64, 0);
#undef SYM
}

/* ---- 6.7 / 6.8 rows that are walks: column strips ----------------------------------------- */

/* For every ectcq and eclattice tensor of the file: W' (the codec's output before any
 * transform) decoded in column strips of several widths, each strip resuming the walks
 * where the previous one stopped, and from columns where no walk stands (so the rows are
 * walked from column 0), must equal W' decoded in one call. Prints "strips NAME ok" or
 * "strips NAME mismatch", or "strips NAME error CODE". */
static int strips_selftest(const char *path)
{
    pvqc_file *f = NULL;
    pvqc_error e = pvqc_open_path(path, NULL, &f);
    int bad = 0;
    if (e != PVQC_OK) {
        printf("strips %s open %s\n", path, pvqc_error_name(e));
        pvqc_close(f);
        return 1;
    }
    for (size_t ti = 0; ti < f->tensor_count; ti++) {
        tensor_rec *t = &f->tensors[ti];
        const uint64_t n = t->rows * t->cols;
        static const uint64_t widths[] = {1, 3, 8, 13, 64, 100};
        float *full, *part;
        if (t->codec_id != 6 && t->codec_id != 7) continue;
        e = check_tensor(f, t);
        full = (float *)malloc((size_t)n * sizeof(float) + 1);
        part = (float *)malloc((size_t)n * sizeof(float) + 1);
        if (!full || !part) return 1;
        f->active = &f->cache;
        if (e == PVQC_OK) e = t->codec->decode(f, t, 0, t->rows, 0, t->cols, full, (size_t)t->cols);
        for (size_t w = 0; w < sizeof widths / sizeof widths[0] && e == PVQC_OK; w++) {
            /* row blocks of 3 rows; strips left to right, then the same strips right to left */
            for (int order = 0; order < 2 && e == PVQC_OK; order++)
                for (uint64_t r = 0; r < t->rows && e == PVQC_OK; r += 3) {
                    const uint64_t r1 = r + 3 < t->rows ? r + 3 : t->rows;
                    const uint64_t nstrips = (t->cols + widths[w] - 1) / widths[w];
                    memset(part, 0xFF, (size_t)n * sizeof(float));
                    for (uint64_t k = 0; k < nstrips && e == PVQC_OK; k++) {
                        const uint64_t s = order == 0 ? k : nstrips - 1 - k;
                        const uint64_t c0 = s * widths[w], c1 = c0 + widths[w] < t->cols ? c0 + widths[w] : t->cols;
                        e = t->codec->decode(f, t, r, r1, c0, c1, part + r * t->cols + c0, (size_t)t->cols);
                    }
                    if (e == PVQC_OK && memcmp(part + r * t->cols, full + r * t->cols,
                                               (size_t)((r1 - r) * t->cols) * sizeof(float)) != 0)
                        bad = 1;
                }
        }
        f->active = NULL;
        if (e != PVQC_OK) printf("strips %s error %s\n", t->name, pvqc_error_name(e));
        else printf("strips %s %s\n", t->name, bad ? "mismatch" : "ok");
        bad |= e != PVQC_OK;
        free(full);
        free(part);
    }
    pvqc_close(f);
    return bad;
}

/* ---- 6.7.4 the trellises: next(S, 0) and next(S, 1) of every state ------------------------- */

static void ectcq_selftest(void)
{
    for (unsigned v = 3; v <= 8; v++) {
        printf("ectcq_next %u", v);
        for (unsigned S = 0; S < (1u << v); S++)
            printf(" %u,%u", ectcq_next_state(v, S, 0), ectcq_next_state(v, S, 1));
        printf("\n");
    }
}

int main(int argc, char **argv)
{
    pvqc_file *f;
    static int8_t H[MAX_BASE_ORDER * MAX_BASE_ORDER];
    unsigned p, h;
    uint64_t q;
    if (argc >= 3 && strcmp(argv[1], "strips") == 0) {
        int bad = 0;
        for (int i = 2; i < argc; i++) bad |= strips_selftest(argv[i]);
        return bad;
    }
    f = new_handle(NULL);
    if (!f) return 1;

    printf("base_table ");
    for (h = 2; h <= MAX_BASE_ORDER; h++) {
        if (!base_construction(h, &p)) continue;
        build_base_matrix(h, H);
        for (unsigned i = 0; i < h * h; i++) printf("%02x", (unsigned)(uint8_t)H[i]);
    }
    printf("\n");

    {
        const uint64_t seeds[2] = {0, 12345};
        for (int s = 0; s < 2; s++)
            for (unsigned side = 0; side < 2; side++) {
                printf("signs %llu %u ", (ull)seeds[s], side);
                for (uint64_t i = 0; i < 16; i++) putchar(rht_sign_negative(seeds[s], side, i) ? '-' : '+');
                printf("\n");
            }
    }

    {
        const uint64_t bs[] = {1, 2, 4, 12, 20, 28, 36, 512, 576, 1792, 4096, 65536};
        for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) {
            float c = rht_scale(bs[i]);
            uint32_t u;
            memcpy(&u, &c, 4);
            printf("scale %llu %08lx\n", (ull)bs[i], (unsigned long)u);
        }
    }

    {
        const uint64_t bs[] = {1, 256, 12, 24, 192, 576, 768, 1536, 1792, 3072, 14336, 28672, 104, 11008, 6, 3, 98304};
        for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) {
            if (factor_block(bs[i], &h, &q)) printf("factor %llu %u %llu\n", (ull)bs[i], h, (ull)q);
            else printf("factor %llu invalid\n", (ull)bs[i]);
        }
    }

    {
        /* transforms.md 5.3.6 example 4: m = 48, n = 40, seed 0x0123456789ABCDEF, b_r = 24, b_c = 20 */
        enum { M = 48, N = 40 };
        static float W[M * N], tmp[24 * N], rsc[24], csc[N];
        const uint64_t seed = 0x0123456789ABCDEFull;
        rht_side rs, cs;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) W[i * N + j] = (float)(((7 * i + 3 * j) % 23) - 11) / 4.0f;
        if (rht_side_init(f, &rs, 24) != PVQC_OK || rht_side_init(f, &cs, 20) != PVQC_OK) return 1;
        for (int j = 0; j < N; j++) csc[j] = rht_sign_negative(seed, 1, (uint64_t)j) ? -cs.c : cs.c;
        for (int k = 0; k < M; k += 24) {
            for (int i = 0; i < 24; i++) rsc[i] = rht_sign_negative(seed, 0, (uint64_t)(k + i)) ? -rs.c : rs.c;
            rht_inverse_block(W + k * N, N, N, &rs, rsc, tmp);
        }
        for (int i = 0; i < M; i++) rht_inverse_row(W + i * N, N, &cs, csc, tmp);
        hex_bytes("example4", W, sizeof W); /* little-endian hosts */
        xfree(f, rs.H);
        xfree(f, cs.H);
    }

    {
        const unsigned dk[][2] = {{8, 6}, {32, 20}, {32, 22}, {64, 52}, {64, 199}, {6, 6}, {141, 4096}, {1, 4096}, {256, 300}};
        uint64_t nd[PVQ_MAX_INDEX_BITS / 64u + 2u];
        for (size_t i = 0; i < sizeof dk / sizeof dk[0]; i++) {
            const pvq_table *T;
            unsigned d = dk[i][0], k = dk[i][1], limbs;
            if (pvq_index_bits(d, k) > PVQ_MAX_INDEX_BITS) {
                printf("count %u %u beyond\n", d, k);
                continue;
            }
            limbs = pvq_count_limbs(d, k, nd);
            if (pvq_table_get(f, d, k, &T) != PVQC_OK) return 1;
            printf("count %u %u %u ", d, k, pvq_index_bits(d, k));
            print_hex_limbs(nd, limbs);
            printf(" ");
            print_hex_limbs(PVQ_T(T, d, k), T->limbs);
            printf("\n");
        }
    }

    {
        const pvq_table *T;
        int32_t y[3];
        if (pvq_table_get(f, 3, 2, &T) != PVQC_OK) return 1;
        for (uint64_t b = 0; b < 20; b++) {
            if (pvq_decode_index1(T, T->k, b, y)) printf("enum %llu %d %d %d\n", (ull)b, y[0], y[1], y[2]);
            else printf("enum %llu rejected\n", (ull)b);
        }
    }
    /* 6.3.A the HYB table; 6.3.8 code values of some states */
    hex_bytes("hyb_table", TRELLIS_HYB, sizeof TRELLIS_HYB); /* little-endian hosts */
    {
        const uint32_t states[] = {0x0000, 0x0001, 0x00B5, 0x1234, 0x8000, 0xBEEF, 0xFFFF};
        for (size_t i = 0; i < sizeof states / sizeof states[0]; i++) {
            float v[4] = {trellis_1mad(states[i]), trellis_3inst(states[i]), trellis_hyb(states[i], 0),
                          trellis_hyb(states[i], 1)};
            uint32_t u[4];
            memcpy(u, v, sizeof u);
            printf("codes %04lx %08lx %08lx %08lx %08lx\n", (unsigned long)states[i], (unsigned long)u[0],
                   (unsigned long)u[1], (unsigned long)u[2], (unsigned long)u[3]);
        }
    }
    {
        /* 6.3.8 the one-tile example: words 12345678 9ABCDEF0 0F1E2D3C 4B5A6978, four times */
        static const uint32_t w4[4] = {0x12345678u, 0x9ABCDEF0u, 0x0F1E2D3Cu, 0x4B5A6978u};
        static uint8_t bytes[64];
        static float out[256];
        payload_rec pr;
        tensor_rec t;
        for (int i = 0; i < 16; i++)
            for (int b = 0; b < 4; b++) bytes[4 * i + b] = (uint8_t)(w4[i % 4] >> (8 * b));
        memset(&t, 0, sizeof t);
        memset(&pr, 0, sizeof pr);
        pr.offset = 0;
        pr.length = 64;
        pr.stream.count = 16;
        pr.stream.width = 32;
        t.payloads = &pr;
        t.rows = t.cols = 16;
        t.tr_code = 0;
        t.tr_L = 12;
        t.tr_k = 2;
        t.tr_scale = u32_as_f32(0x3BDD82FDu);
        f->data = bytes;
        f->size = sizeof bytes;
        trellis_decode(f, &t, 0, 16, 0, 16, out, 16);
        hex_bytes("trellis_1mad_tile", out, sizeof out);
        t.tr_code = 2;
        t.tr_L = 16;
        t.tr_scale = 1.0f;
        trellis_decode(f, &t, 0, 1, 0, 4, out, 4);
        hex_bytes("trellis_hyb_row0", out, 16);
    }
    {
        /* 6.4.4.2 / 6.4.5 tables; 6.4.7 the codeword table and the three-stage group */
        const struct lattice_tables *tb = lattice_tables_get(f);
        static int32_t u17[256][8];
        static const unsigned words[] = {0x0000, 0x0001, 0x0101, 0xE2A5, 0xE3FF};
        uint8_t bytes[8];
        payload_rec pr[5];
        tensor_rec t;
        float out[8];
        if (!tb) return 1;
        hex_bytes("lattice_pat", tb->pat, sizeof tb->pat);
        for (int l = 0; l < 256; l++)
            for (int i = 0; i < 8; i++) u17[l][i] = (int32_t)(tb->U[l][i] * 131072.0f);
        hex_bytes("lattice_u", u17, sizeof u17); /* little-endian hosts */
        for (size_t w = 0; w < sizeof words / sizeof words[0]; w++) {
            int P4[8];
            lattice_point(tb->pat, words[w] >> 8, words[w] & 0xFFu, P4);
            printf("e8p %04x %d %d %d %d %d %d %d %d\n", words[w], P4[0], P4[1], P4[2], P4[3], P4[4], P4[5], P4[6],
                   P4[7]);
        }
        /* streams, one byte each: row scale 0x3B33 (2 bytes), pattern, sign, l2, l3 */
        bytes[0] = 0x33;
        bytes[1] = 0x3B;
        bytes[2] = 0xE2;
        bytes[3] = 0xA5;
        bytes[4] = 2;
        bytes[5] = 255;
        memset(&t, 0, sizeof t);
        memset(pr, 0, sizeof pr);
        for (int i = 0; i < 5; i++) {
            pr[i].offset = i == 0 ? 0u : (uint64_t)i + 1u;
            pr[i].length = i == 0 ? 2u : 1u;
            pr[i].stream.count = 1;
            pr[i].stream.width = i == 0 ? 16u : 8u;
        }
        t.payloads = pr;
        t.rows = 1;
        t.cols = 8;
        t.lat_stages = 3;
        t.lat_row_scales = 1;
        t.lat_scales[0] = u32_as_f32(0x3F917F34u);
        t.lat_scales[1] = u32_as_f32(0x3F12CDF0u);
        t.lat_scales[2] = u32_as_f32(0x3E95EB4Du);
        f->data = bytes;
        f->size = sizeof bytes;
        lattice_decode(f, &t, 0, 1, 0, 8, out, 8);
        printf("lattice_group");
        for (int i = 0; i < 8; i++) {
            uint32_t u;
            memcpy(&u, &out[i], 4);
            printf(" %08lx", (unsigned long)u);
        }
        printf("\n");
    }
    rans_selftest(f);
    ectcq_selftest();
    pvqc_close(f);
    return 0;
}
