/*
 * libFuzzer target: tr_hdlc_encode_frame.  Input: a flags byte (leading flag, ACCM choice),
 * maybe a 4-byte ACCM, then the frame.  Oracles: the size pass and the write agree; the
 * encoded body holds no 7E and no control character of the ACCM unescaped; decoding it with
 * that ACCM gives the frame back; too little room writes nothing and returns 0.
 */
#include "guard.h"
#include "hdlc.h"

/* No 7E and no control character of the ACCM left unescaped. */
ORACLE static int escaped_properly(const uint8_t *p, size_t n, uint32_t accm)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] == 0x7E || (p[i] < 32 && (accm >> p[i] & 1)))
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned flags = (unsigned)take(&data, &size, 1);
    int leading = flags & 1;
    unsigned mode = (flags >> 1) % 3;
    uint32_t accm = mode == 0 ? 0 : mode == 1 ? 0xFFFFFFFFu : (uint32_t)take(&data, &size, 4);
    struct guarded src = guarded_at(0, data, size, 0);
    uint16_t fcs;
    size_t need = tr_hdlc_encoded_size(src.p, size, accm, leading, &fcs);
    CHECK(need >= size + 3 + (size_t)leading && need <= 2 * (size + 2) + 2);
    struct guarded dst = guarded_at(1, NULL, need, 0xEE);
    CHECK(tr_hdlc_encode_frame(src.p, size, fcs, dst.p, need, accm, leading) == need);
    size_t start = (size_t)leading;
    CHECK(dst.p[need - 1] == 0x7E && (!leading || dst.p[0] == 0x7E));
    CHECK(escaped_properly(dst.p + start, need - 1 - start, accm));
    size_t body = need - 1 - start, n;
    enum tr_hdlc_status back = tr_hdlc_decode_frame(dst.p + start, body, accm, &n);
    CHECK(n == size + 2 && (size >= 2 ? back == TR_HDLC_OK && memcmp(dst.p + start, data, size) == 0
                                      : back == TR_HDLC_TOO_SHORT)); /* under 4 bytes with the FCS */
    struct guarded small = guarded_at(2, NULL, need - 1, 0xEE);
    CHECK(tr_hdlc_encode_frame(src.p, size, fcs, small.p, need - 1, accm, leading) == 0);
    guarded_free(&small);
    guarded_free(&dst);
    guarded_free(&src);
    return 0;
}
