/*
 * libFuzzer target: tr_lzs_decompress on hostile bytes.  Input: 2 bytes of output room (cap),
 * then the compressed packet.  Oracles: a bit-by-bit decoder written from the token grammar
 * (ANSI X3.241 as RFC 1974 describes it) below must accept exactly what the kernel accepts
 * and give the same bytes; on an error dst is untouched; nothing is written past the output.
 */
#include "guard.h"
#include "lzs.h"

struct bits {
    const uint8_t *p;
    size_t len, at; /* at: bit position */
};

ORACLE static int get(struct bits *b, unsigned n, uint64_t *v)
{
    *v = 0;
    for (unsigned i = 0; i < n; i++, b->at++) {
        if (b->at >= 8 * b->len)
            return -1;
        *v = *v << 1 | (b->p[b->at / 8] >> (7 - b->at % 8) & 1);
    }
    return 0;
}

/* 0 and *n on success, -1 for any malformed packet or output over cap. */
ORACLE static int reference(const uint8_t *src, size_t len, uint8_t *out, size_t cap, size_t *n)
{
    struct bits b = {src, len, 0};
    size_t o = 0;
    uint64_t v, offset, length;
    for (;;) {
        if (get(&b, 1, &v))
            return -1;
        if (!v) {
            if (get(&b, 8, &v) || o >= cap)
                return -1;
            out[o++] = (uint8_t)v;
            continue;
        }
        if (get(&b, 1, &v))
            return -1;
        int short_offset = (int)v;
        if (get(&b, short_offset ? 7 : 11, &offset))
            return -1;
        if (!offset) {
            if (!short_offset || (b.at + 7) / 8 != len)
                return -1;
            *n = o;
            return 0;
        }
        if (get(&b, 2, &v))
            return -1;
        if (v < 3) {
            length = v + 2;
        } else {
            if (get(&b, 2, &v))
                return -1;
            if (v < 3) {
                length = v + 5;
            } else {
                length = 8;
                for (;;) {
                    if (get(&b, 4, &v))
                        return -1;
                    length += v;
                    if (v != 15)
                        break;
                }
            }
        }
        if (offset > o || length > cap - o)
            return -1;
        for (uint64_t i = 0; i < length; i++, o++)
            out[o] = out[o - offset];
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cap = (size_t)take(&data, &size, 2);
    struct guarded src = guarded_at(0, data, size, 0), dst = guarded_at(1, NULL, cap, 0xEE);
    uint8_t *expected = guarded_at(2, NULL, cap, 0).p; /* reused: no allocation per input */
    size_t n = 0, ref_n = 0;
    struct tr_lzs_error err;
    int ref = reference(data, size, expected, cap, &ref_n);
    enum tr_lzs_status got = tr_lzs_decompress(src.p, size, dst.p, cap, &n, &err);
    CHECK((got == TR_LZS_OK) == (ref == 0));
    if (got == TR_LZS_OK) {
        CHECK(n == ref_n && memcmp(dst.p, expected, n) == 0 && all_equal(dst.p + n, cap - n, 0xEE));
    } else {
        CHECK(all_equal(dst.p, cap, 0xEE));
        if (got == TR_LZS_TOO_FAR)
            CHECK(err.offset > err.count);
    }
    guarded_free(&src);
    guarded_free(&dst);
    return 0;
}
