/*
 * libFuzzer target: tr_hdlc_decode_frame (and its portable path) on hostile bytes.
 * Input: one byte choosing the receive ACCM (0, all-ones, or the next 4 bytes), then the bytes
 * between two flags.  Oracles: a byte-by-byte decoder written from RFC 1662 (4.2, 7.1, C.2)
 * below, the portable path, and the contract (untouched on error, tail untouched on success,
 * never a byte outside the buffer: it ends against a guard page and ASan watches the rest).
 */
#include "guard.h"
#include "hdlc.h"

ORACLE static uint16_t fcs_bitwise(const uint8_t *p, size_t n)
{
    uint16_t fcs = 0xFFFF;
    for (size_t i = 0; i < n; i++) {
        fcs ^= p[i];
        for (int k = 0; k < 8; k++)
            fcs = fcs & 1 ? (fcs >> 1) ^ 0x8408 : fcs >> 1;
    }
    return fcs;
}

/* RFC 1662 byte by byte: status, the un-escaped length, the frame into out. */
ORACLE static enum tr_hdlc_status reference(const uint8_t *raw, size_t n, uint32_t accm, uint8_t *out, size_t *len)
{
    size_t w = 0;
    int esc = 0, flag = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t b = raw[i];
        if (b < 32 && (accm >> b & 1))
            continue;
        if (b == 0x7E)
            flag = 1;
        if (esc)
            out[w++] = b ^ 0x20, esc = 0;
        else if (b == 0x7D)
            esc = 1;
        else
            out[w++] = b;
    }
    *len = w;
    if (flag)
        return TR_HDLC_FLAG_INSIDE;
    if (esc)
        return TR_HDLC_TRAILING_ESCAPE;
    if (w < 4)
        return TR_HDLC_TOO_SHORT;
    return fcs_bitwise(out, w) == 0xF0B8 ? TR_HDLC_OK : TR_HDLC_BAD_FCS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned mode = (unsigned)take(&data, &size, 1) % 3;
    uint32_t accm = mode == 0 ? 0 : mode == 1 ? 0xFFFFFFFFu : (uint32_t)take(&data, &size, 4);
    struct guarded fast = guarded_at(0, data, size, 0), portable = guarded_at(1, data, size, 0);
    uint8_t *expected = guarded_at(2, NULL, size, 0).p; /* reused: no allocation per input */
    size_t ref_len, fast_len, portable_len;
    enum tr_hdlc_status ref = reference(data, size, accm, expected, &ref_len);
    enum tr_hdlc_status got = tr_hdlc_decode_frame(fast.p, size, accm, &fast_len);
    enum tr_hdlc_status got_portable = tr_hdlc_decode_frame_portable(portable.p, size, accm, &portable_len);
    CHECK(got == ref && got_portable == ref);
    CHECK(got == TR_HDLC_FLAG_INSIDE || (fast_len == ref_len && portable_len == ref_len));
    CHECK(memcmp(fast.p, portable.p, size) == 0);
    if (got == TR_HDLC_OK) {
        CHECK(memcmp(fast.p, expected, ref_len) == 0);             /* the frame, FCS included */
        CHECK(memcmp(fast.p + ref_len, data + ref_len, size - ref_len) == 0); /* the rest as it was */
    } else {
        CHECK(memcmp(fast.p, data, size) == 0); /* untouched */
    }
    CHECK(tr_fcs16(0x1234, data, size) == tr_fcs16_portable(0x1234, data, size));
    guarded_free(&fast);
    guarded_free(&portable);
    return 0;
}
