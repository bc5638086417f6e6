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

int main(void)
{
    pvqc_file *f = new_handle(NULL);
    static int8_t H[MAX_BASE_ORDER * MAX_BASE_ORDER];
    unsigned p, h;
    uint64_t q;
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
            if (pvq_decode_index1(T, b, y)) printf("enum %llu %d %d %d\n", (ull)b, y[0], y[1], y[2]);
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
    pvqc_close(f);
    return 0;
}
