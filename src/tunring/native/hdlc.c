/*
 * RFC 1662 HDLC-like framing kernels; the specification is src/tunring/proto/rfc1662.py.
 *
 * Un-escaping copies runs of plain bytes 16 at a time and squeezes escapes out of 16-byte
 * blocks with SSSE3 (PSHUFB), where the CPU has it; the FCS folds 64 bytes at a time with
 * PCLMULQDQ.  Everything else, and CPUs without those, take the portable path: words of 8
 * bytes, and byte by byte without branches on the data.  Both paths give the same results
 * (the fuzz targets compare them); after LCP sets ACCM 0 about one byte in 128 is escaped,
 * before it (ACCM all-ones) about one in 7, so both the plain and the dense case matter.
 */
#include "hdlc.h"

#include "bytes.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TR_X86 1
#include <immintrin.h>
#endif

#define POLY 0x8408 /* x^16 + x^12 + x^5 + 1, reflected */
#define SCRATCH_BYTES 4096

#ifdef TR_X86
static int have_clmul, have_ssse3; /* set once at load time (hdlc_init) */
#endif

/* ---- FCS-16 ----------------------------------------------------------------------------- */

/* Slicing-by-8: fcs_table[k][b] is the register after byte b and then k zero bytes, from 0. */
static uint16_t fcs_table[8][256];

static void fcs_table_init(void)
{
    for (unsigned b = 0; b < 256; b++) {
        unsigned c = b;
        for (int i = 0; i < 8; i++)
            c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        fcs_table[0][b] = (uint16_t)c;
    }
    for (int k = 1; k < 8; k++)
        for (unsigned b = 0; b < 256; b++) {
            unsigned c = fcs_table[k - 1][b];
            fcs_table[k][b] = (uint16_t)((c >> 8) ^ fcs_table[0][c & 0xFF]);
        }
}

uint16_t tr_fcs16_portable(uint16_t fcs, const uint8_t *p, size_t len)
{
    uint32_t c = fcs;
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t x = tr_load64(p) ^ c;
        c = fcs_table[7][x & 0xFF] ^ fcs_table[6][x >> 8 & 0xFF] ^ fcs_table[5][x >> 16 & 0xFF] ^
            fcs_table[4][x >> 24 & 0xFF] ^ fcs_table[3][x >> 32 & 0xFF] ^ fcs_table[2][x >> 40 & 0xFF] ^
            fcs_table[1][x >> 48 & 0xFF] ^ fcs_table[0][x >> 56];
    }
    for (; len; p++, len--)
        c = (c >> 8) ^ fcs_table[0][(c ^ *p) & 0xFF];
    return (uint16_t)c;
}

#ifdef TR_X86
/*
 * Folding with carry-less multiplication, the method of Intel's "Fast CRC Computation for
 * Generic Polynomials Using PCLMULQDQ" for reflected CRCs.  The FCS-16 register is the register
 * of the reflected 32-bit CRC whose generator is G = x^16 * P (reflected 0x00008408: its upper
 * 16 bits stay 0), so the 32-bit method applies unchanged.  The constants are derived from G
 * at load time: k(n) = reflect32(x^n mod G) << 1 and mu = reflect33(x^64 div G).
 */
#define G_POLY 0x110210000ULL /* x^32 + x^28 + x^21 + x^16 */
static uint64_t fold4[2], fold1[2], fold64[2], barrett[2]; /* {low, high} qwords */

static uint64_t reflect(uint64_t v, int bits)
{
    uint64_t r = 0;
    for (int i = 0; i < bits; i++)
        r |= (v >> i & 1) << (bits - 1 - i);
    return r;
}

static uint64_t k_const(int n)
{
    uint64_t r = 1;
    for (int i = 0; i < n; i++) {
        r <<= 1;
        if (r >> 32)
            r ^= G_POLY;
    }
    return reflect(r, 32) << 1;
}

static uint64_t mu_const(void)
{
    /* Long division of x^64 by G: bit `bit` of the quotient is set when x^(32 + bit) remains. */
    uint64_t quotient = 0, rem = 0; /* x^64 itself is handled by the first step */
    for (int bit = 32; bit >= 0; bit--) {
        int top = bit == 32 ? 1 : (int)(rem >> (32 + bit) & 1);
        if (top) {
            quotient |= 1ULL << bit;
            rem ^= bit == 32 ? (G_POLY & 0xFFFFFFFFULL) << 32 : G_POLY << bit;
        }
    }
    return reflect(quotient, 33);
}

static void clmul_init(void)
{
    fold4[0] = k_const(4 * 128 + 32), fold4[1] = k_const(4 * 128 - 32);
    fold1[0] = k_const(128 + 32), fold1[1] = k_const(128 - 32);
    fold64[0] = k_const(64), fold64[1] = 0;
    barrett[0] = reflect(G_POLY, 33), barrett[1] = mu_const();
}

__attribute__((target("pclmul"))) static inline __m128i fold(__m128i x, __m128i k, __m128i data)
{
    return _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11)), data);
}

/* The register after p[0:16 * blocks], blocks >= 1. */
__attribute__((target("pclmul"))) static uint32_t fcs_clmul(uint32_t crc, const uint8_t *p, size_t blocks)
{
    __m128i k1 = _mm_loadu_si128((const __m128i *)fold1), x = _mm_loadu_si128((const __m128i *)p);
    x = _mm_xor_si128(x, _mm_cvtsi32_si128((int)crc));
    p += 16, blocks--;
    if (blocks >= 3) {
        __m128i k4 = _mm_loadu_si128((const __m128i *)fold4);
        __m128i x1 = x, x2 = _mm_loadu_si128((const __m128i *)p), x3 = _mm_loadu_si128((const __m128i *)(p + 16)),
                x4 = _mm_loadu_si128((const __m128i *)(p + 32));
        p += 48, blocks -= 3;
        for (; blocks >= 4; p += 64, blocks -= 4) {
            x1 = fold(x1, k4, _mm_loadu_si128((const __m128i *)p));
            x2 = fold(x2, k4, _mm_loadu_si128((const __m128i *)(p + 16)));
            x3 = fold(x3, k4, _mm_loadu_si128((const __m128i *)(p + 32)));
            x4 = fold(x4, k4, _mm_loadu_si128((const __m128i *)(p + 48)));
        }
        x = fold(fold(fold(x1, k1, x2), k1, x3), k1, x4);
    }
    for (; blocks; p += 16, blocks--)
        x = fold(x, k1, _mm_loadu_si128((const __m128i *)p));
    const __m128i mask32 = _mm_set_epi32(0, 0, 0, -1);
    x = _mm_xor_si128(_mm_clmulepi64_si128(x, k1, 0x10), _mm_srli_si128(x, 8)); /* 128 -> 64 bits */
    __m128i k64 = _mm_loadu_si128((const __m128i *)fold64);
    x = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x, mask32), k64, 0x00), _mm_srli_si128(x, 4)); /* -> 32 */
    __m128i b = _mm_loadu_si128((const __m128i *)barrett);
    __m128i t = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(x, mask32), b, 0x10), mask32);
    x = _mm_xor_si128(x, _mm_clmulepi64_si128(t, b, 0x00));
    return (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(x, 4));
}
#endif

static uint16_t fcs16(uint16_t fcs, const uint8_t *p, size_t len, int simd)
{
#ifdef TR_X86
    if (simd && have_clmul && len >= 16) {
        fcs = (uint16_t)fcs_clmul(fcs, p, len / 16);
        p += len & ~(size_t)15, len &= 15;
    }
#endif
    (void)simd;
    return tr_fcs16_portable(fcs, p, len);
}

uint16_t tr_fcs16(uint16_t fcs, const uint8_t *p, size_t len)
{
    return fcs16(fcs, p, len, 1);
}

/* ---- receive ---------------------------------------------------------------------------- */

struct unescape_state {
    uint32_t rx_accm;
    unsigned escaped; /* the last byte was a 7D: the next kept byte is XORed with 0x20 */
    unsigned flag;    /* a 7E was seen */
};

/*
 * One word in[0:8] without a 7E, without "7D 7D", without a 7D right after an open escape, and
 * without control characters when some are discarded (valid frames have none of these): XOR
 * the byte after each 7D, remove the 7Ds.  The result is the low 8 - *removed bytes; *esc
 * says whether the last byte was a 7D.  Returns 0, changing nothing, for any other word.
 */
static inline int unescape_word(uint64_t x, uint32_t rx_accm, unsigned *esc, uint64_t *out, unsigned *removed)
{
    uint64_t m = tr_eq_mask(x, TR_HDLC_ESCAPE);
    if (tr_eq_mask(x, TR_HDLC_FLAG) | (m & m << 8) | (rx_accm ? tr_has_control(x) : 0) ||
        (*esc && (x & 0xFF) == TR_HDLC_ESCAPE))
        return 0;
    x ^= (m >> 2) << 8 | (uint64_t)*esc << 5; /* 0x20 into each byte after a 7D */
    *esc = (unsigned)(m >> 63);
    unsigned k = 0;
    while (m) { /* highest 7D first, so the lower ones stay where they are */
        unsigned byte = (unsigned)(63 - __builtin_clzll(m)) >> 3;
        uint64_t below = (1ULL << (8 * byte)) - 1;
        x = (x & below) | (x >> 8 & ~below);
        m &= below;
        k++;
    }
    *out = x;
    *removed = k;
    return 1;
}

/* Bytes at the start of p[0:len] (whole words, at most `room`) that are certainly copied as
 * they are, un-escaping or escaping: none is 7C..7F (7D, 7E and two neighbours: one cheap
 * test) or, when the ACCM is not 0, a control character. */
static size_t plain_prefix(const uint8_t *p, size_t len, size_t room, uint32_t accm)
{
    size_t n = 0, most = len < room ? len : room;
#ifdef __SSE2__
    const __m128i high6 = _mm_set1_epi8((char)0xFC), near_flag = _mm_set1_epi8(0x7C), c0 = _mm_set1_epi8((char)0xE0);
    for (; most - n >= 16; n += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + n));
        __m128i hit = _mm_cmpeq_epi8(_mm_and_si128(v, high6), near_flag);
        if (accm)
            hit = _mm_or_si128(hit, _mm_cmpeq_epi8(_mm_and_si128(v, c0), _mm_setzero_si128()));
        if (_mm_movemask_epi8(hit))
            break;
    }
#endif
    for (; most - n >= 8; n += 8) {
        uint64_t x = tr_load64(p + n);
        if (tr_has_zero((x ^ TR_ONES * 0x7C) & TR_ONES * 0xFC) | (accm ? tr_has_control(x) : 0))
            break;
    }
    return n;
}

#ifdef TR_X86
/* For each 8-bit keep mask: the PSHUFB indices of the kept bytes, in order, and their count. */
static uint8_t keep_shuffle[256][8], keep_count[256];

static void keep_tables_init(void)
{
    for (unsigned mask = 0; mask < 256; mask++) {
        unsigned n = 0;
        for (unsigned i = 0; i < 8; i++)
            if (mask >> i & 1)
                keep_shuffle[mask][n++] = (uint8_t)i;
        for (unsigned i = n; i < 8; i++)
            keep_shuffle[mask][i] = 0x80; /* PSHUFB writes 0 */
        keep_count[mask] = (uint8_t)n;
    }
}

/*
 * The 16-byte blocks at the start of in[0:len] that unescape_word's conditions allow, un-escaped
 * into out while 16 bytes of room remain: the 7Ds' followers XORed at once, the 7Ds squeezed
 * out by PSHUFB per 8-byte half.  Adds the bytes read and written to *r and *w.
 */
__attribute__((target("ssse3"))) static void unescape_blocks(const uint8_t *in, size_t len, uint8_t *out,
                                                              size_t room, uint32_t rx_accm, unsigned *esc,
                                                              size_t *r, size_t *w)
{
    const __m128i escape = _mm_set1_epi8(TR_HDLC_ESCAPE), flag = _mm_set1_epi8(TR_HDLC_FLAG);
    const __m128i xor20 = _mm_set1_epi8(TR_HDLC_ESCAPE_XOR), c0 = _mm_set1_epi8((char)0xE0);
    size_t i = 0, o = 0;
    unsigned e = *esc;
    while (len - i >= 16 && room - o >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(in + i));
        __m128i is_escape = _mm_cmpeq_epi8(v, escape), stop = _mm_cmpeq_epi8(v, flag);
        if (rx_accm)
            stop = _mm_or_si128(stop, _mm_cmpeq_epi8(_mm_and_si128(v, c0), _mm_setzero_si128()));
        unsigned m = (unsigned)_mm_movemask_epi8(is_escape);
        if (_mm_movemask_epi8(stop) || (m & m << 1) || (e & m))
            break;
        if (m | e) {
            __m128i follow = _mm_and_si128(_mm_slli_si128(is_escape, 1), xor20);
            v = _mm_xor_si128(v, _mm_or_si128(follow, _mm_cvtsi32_si128((int)(e << 5))));
            e = m >> 15;
            unsigned keep_lo = ~m & 0xFF, keep_hi = ~m >> 8 & 0xFF;
            __m128i lo = _mm_shuffle_epi8(v, _mm_loadl_epi64((const __m128i *)keep_shuffle[keep_lo]));
            __m128i hi = _mm_shuffle_epi8(_mm_srli_si128(v, 8), _mm_loadl_epi64((const __m128i *)keep_shuffle[keep_hi]));
            /* Both stores end within out + o + 16 <= in + i + 16 (in place: loaded already) and
             * within room; the bytes past the kept ones are overwritten by what follows. */
            _mm_storel_epi64((__m128i *)(out + o), lo);
            o += keep_count[keep_lo];
            _mm_storel_epi64((__m128i *)(out + o), hi);
            o += keep_count[keep_hi];
        } else {
            _mm_storeu_si128((__m128i *)(out + o), v);
            o += 16;
        }
        i += 16;
    }
    *esc = e;
    *r += i;
    *w += o;
}
#endif

/* The exact rule for in[r:end], byte by byte without branches on the data; writes below room. */
static inline void unescape_bytes(const uint8_t *in, size_t *rp, size_t end, uint8_t *out, size_t room,
                                  size_t *wp, struct unescape_state *st, unsigned *esc)
{
    uint8_t sink;
    size_t r = *rp, w = *wp;
    unsigned e = *esc, flag = 0;
    uint32_t accm = st->rx_accm;
    for (; r < end; r++) {
        unsigned b = in[r];
        unsigned discard = (b < 32) & (unsigned)(accm >> (b & 31));
        unsigned escape = (b == TR_HDLC_ESCAPE) & !e;
        *(w < room ? out + w : &sink) = (uint8_t)(b ^ (e << 5));
        w += !(discard | escape);
        e = (e & discard) | escape;
        flag |= b == TR_HDLC_FLAG;
    }
    st->flag |= flag;
    *rp = r, *wp = w, *esc = e;
}

/*
 * Un-escape in[0:len] into out[0:room] and return the length of the result (which may exceed
 * room: bytes past it are counted, not written).  out is in itself or earlier (w <= r holds
 * throughout, so in place works) or a separate buffer.  RFC 1662 4.2's discard comes first: a
 * control character in rx_accm is dropped and does not end an escape.  A 7E sets st->flag and
 * stops.
 */
static size_t unescape(const uint8_t *in, size_t len, uint8_t *out, size_t room, struct unescape_state *st, int simd)
{
    size_t r = 0, w = 0;
    unsigned esc = st->escaped, removed;
    (void)simd;
    while (r < len && !st->flag) {
        uint64_t x;
#ifdef TR_X86
        if (simd && have_ssse3) {
            if (w <= room)
                unescape_blocks(in + r, len - r, out + w, room - w, st->rx_accm, &esc, &r, &w);
        } else
#endif
        if (!esc) {
            size_t plain = plain_prefix(in + r, len - r, w <= room ? room - w : 0, st->rx_accm);
            if (out + w != in + r)
                memmove(out + w, in + r, plain); /* in place, out may overlap in */
            r += plain, w += plain;
        }
        if (len - r >= 8 && w <= room && room - w >= 8 &&
            unescape_word(tr_load64(in + r), st->rx_accm, &esc, &x, &removed)) {
            tr_store64(out + w, x); /* w <= r: the bytes it covers from r on were loaded already */
            r += 8, w += 8 - removed;
        } else if (r < len) {
            unescape_bytes(in, &r, len - r >= 8 ? r + 8 : len, out, room, &w, st, &esc);
        }
    }
    st->escaped = esc;
    return w;
}

static enum tr_hdlc_status decode_frame(uint8_t *buf, size_t len, uint32_t rx_accm, size_t *frame_len, int simd)
{
    /* Pass 1 un-escapes into scratch, a piece at a time, only to learn the length and the FCS:
     * buf stays as it is until the frame is known to be good, as in the reference. */
    uint8_t scratch[SCRATCH_BYTES];
    struct unescape_state st = {rx_accm, 0, 0};
    uint16_t fcs = TR_HDLC_FCS_INIT;
    size_t total = 0, moved_from = len;
    for (size_t at = 0; at < len;) {
        size_t piece = len - at < SCRATCH_BYTES ? len - at : SCRATCH_BYTES;
        size_t n = unescape(buf + at, piece, scratch, SCRATCH_BYTES, &st, simd);
        if (st.flag)
            return *frame_len = total + n, TR_HDLC_FLAG_INSIDE;
        fcs = fcs16(fcs, scratch, n, simd);
        if (n != piece && moved_from == len)
            moved_from = at; /* the first piece that shrank: nothing before it moves */
        total += n;
        at += piece;
    }
    *frame_len = total;
    if (st.escaped)
        return TR_HDLC_TRAILING_ESCAPE;
    if (total < TR_HDLC_MIN_FRAME_BYTES)
        return TR_HDLC_TOO_SHORT;
    if (fcs != TR_HDLC_FCS_GOOD)
        return TR_HDLC_BAD_FCS;
    if (moved_from < len) {
        /* Pass 2, in place from the first piece that shrank (no escape was open there).  It
         * cannot write out of bounds whatever the bytes are; if they changed since pass 1
         * (memory a peer can write) the result is refused rather than trusted. */
        struct unescape_state again = {rx_accm, 0, 0};
        uint8_t *from = buf + moved_from;
        size_t room = total - moved_from;
        if (unescape(from, len - moved_from, from, room, &again, simd) != room || again.flag || again.escaped)
            return TR_HDLC_CHANGED;
    }
    return TR_HDLC_OK;
}

enum tr_hdlc_status tr_hdlc_decode_frame(uint8_t *buf, size_t len, uint32_t rx_accm, size_t *frame_len)
{
    return decode_frame(buf, len, rx_accm, frame_len, 1);
}

enum tr_hdlc_status tr_hdlc_decode_frame_portable(uint8_t *buf, size_t len, uint32_t rx_accm, size_t *frame_len)
{
    return decode_frame(buf, len, rx_accm, frame_len, 0);
}

/* ---- transmit --------------------------------------------------------------------------- */

static inline unsigned must_escape(unsigned b, uint32_t tx_accm)
{
    return (b == TR_HDLC_ESCAPE) | (b == TR_HDLC_FLAG) | ((b < 32) & (unsigned)(tx_accm >> (b & 31)));
}

static inline uint64_t may_escape(uint64_t x, uint32_t tx_accm)
{
    return tr_has_byte(x, TR_HDLC_ESCAPE) | tr_has_byte(x, TR_HDLC_FLAG) | (tx_accm ? tr_has_control(x) : 0);
}

static size_t count_escapes(const uint8_t *p, size_t len, uint32_t tx_accm)
{
    size_t count = 0, i = 0;
    while (len - i >= 8) {
        i += plain_prefix(p + i, len - i, len - i, tx_accm); /* what plain_prefix passes needs no escape */
        if (len - i < 8)
            break;
        if (may_escape(tr_load64(p + i), tx_accm))
            for (size_t k = i; k < i + 8; k++)
                count += must_escape(p[k], tx_accm);
        i += 8;
    }
    for (; i < len; i++)
        count += must_escape(p[i], tx_accm);
    return count;
}

size_t tr_hdlc_encoded_size(const uint8_t *src, size_t len, uint32_t tx_accm, int leading_flag, uint16_t *fcs)
{
    *fcs = tr_fcs16(TR_HDLC_FCS_INIT, src, len) ^ 0xFFFF;
    uint8_t tail[2] = {(uint8_t)(*fcs & 0xFF), (uint8_t)(*fcs >> 8)};
    return (leading_flag ? 1 : 0) + len + count_escapes(src, len, tx_accm) + 2 + count_escapes(tail, 2, tx_accm) +
           1;
}

/* Escape p[0:len] into out[0:room]; returns the bytes written, or room + 1 if they do not fit. */
static size_t escape(const uint8_t *p, size_t len, uint8_t *out, size_t room, uint32_t tx_accm)
{
    size_t w = 0, i = 0;
    while (i < len) {
        size_t plain = plain_prefix(p + i, len - i, room - w, tx_accm);
        if (plain) {
            memcpy(out + w, p + i, plain);
            i += plain, w += plain;
        }
        if (len - i >= 8 && room - w >= 8) {
            uint64_t x = tr_load64(p + i);
            if (!may_escape(x, tx_accm)) {
                tr_store64(out + w, x);
                i += 8, w += 8;
                continue;
            }
        }
        size_t end = len - i >= 8 ? i + 8 : len;
        for (; i < end; i++) {
            unsigned b = p[i], e = must_escape(b, tx_accm);
            if (room - w < 1 + e)
                return room + 1;
            out[w] = TR_HDLC_ESCAPE; /* overwritten by b itself when it needs no escape */
            out[w + e] = (uint8_t)(b ^ (e << 5));
            w += 1 + e;
        }
    }
    return w;
}

size_t tr_hdlc_encode_frame(const uint8_t *src, size_t len, uint16_t fcs, uint8_t *dst, size_t room,
                            uint32_t tx_accm, int leading_flag)
{
    uint8_t tail[2] = {(uint8_t)(fcs & 0xFF), (uint8_t)(fcs >> 8)};
    size_t w = 0;
    if (room < 3)
        return 0;
    room--; /* the closing flag's place */
    if (leading_flag)
        dst[w++] = TR_HDLC_FLAG;
    w += escape(src, len, dst + w, room - w, tx_accm);
    if (w > room)
        return 0;
    w += escape(tail, 2, dst + w, room - w, tx_accm);
    if (w > room)
        return 0;
    dst[w++] = TR_HDLC_FLAG;
    return w;
}

/* ---- stream splitting ------------------------------------------------------------------- */

int tr_hdlc_scan(const uint8_t *data, size_t len, int (*span)(void *ctx, size_t start, size_t end), void *ctx,
                 size_t *rest, size_t *garbage)
{
    const uint8_t *flag = memchr(data, TR_HDLC_FLAG, len);
    if (!flag) {
        *rest = *garbage = len;
        return 0;
    }
    size_t first = (size_t)(flag - data), start = first + 1;
    *garbage = first;
    while (start <= len && (flag = memchr(data + start, TR_HDLC_FLAG, len - start))) {
        size_t end = (size_t)(flag - data);
        if (end > start && span(ctx, start, end))
            return -1;
        start = end + 1;
    }
    *rest = start - 1;
    return 0;
}

/* ---- load time -------------------------------------------------------------------------- */

__attribute__((constructor)) static void hdlc_init(void)
{
    fcs_table_init();
#ifdef TR_X86
    __builtin_cpu_init(); /* a constructor may run before the compiler's own CPU probe */
    have_clmul = __builtin_cpu_supports("pclmul");
    have_ssse3 = __builtin_cpu_supports("ssse3");
    clmul_init();
    keep_tables_init();
#endif
}
