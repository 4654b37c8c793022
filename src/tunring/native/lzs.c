/*
 * LZS kernels; the specification is the LZS part of src/tunring/proto/compress.py.
 *
 * Tokens, most significant bit first:
 *   0 bbbbbbbb                 literal byte
 *   1 1 ooooooo <length>       match, offset 1..127 (offset 0: the end marker)
 *   1 0 ooooooooooo <length>   match, offset 1..2047
 *   <length>: 00=2 01=3 10=4 1100=5 1101=6 1110=7; 1111: then nibbles, each 1111 adds 15 and
 *   the first other nibble n ends it: 8 + 15*k + n.
 * As in the reference, bits past the end read as zeros, literals are checked against the
 * output room only at the end marker and matches one by one.
 */
#include "lzs.h"

#include "bytes.h"

#include <stdlib.h>
#include <string.h>

/* At least 57 bits of src from bit p on, most significant first, zeros past the end. */
static inline uint64_t bits_at(const uint8_t *src, size_t len, uint64_t p)
{
    uint64_t byte = p >> 3, x = 0;
    if (byte < len && len - byte >= 8) {
        memcpy(&x, src + byte, 8);
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        x = __builtin_bswap64(x);
#endif
    } else {
        for (uint64_t i = byte; i < byte + 8; i++)
            x = x << 8 | (i < len ? src[i] : 0);
    }
    return x << (p & 7);
}

/* The <length> field at bit *p (see the top); advances *p past it. */
static uint64_t read_length(const uint8_t *src, size_t len, uint64_t *p)
{
    unsigned code = (unsigned)(bits_at(src, len, *p) >> 60);
    if (code < 12) {
        *p += 2;
        return 2 + (code >> 2);
    }
    *p += 4;
    if (code < 15)
        return code - 7;
    /* Count the 1 bits up to the first 0 (zeros past the end guarantee one): k whole 1111
     * nibbles, then the nibble holding that 0 ends the length. */
    uint64_t ones = 0;
    for (;;) {
        uint64_t x = bits_at(src, len, *p + ones);
        unsigned run = ~x ? (unsigned)__builtin_clzll(~x) : 64;
        if (run < 56) {
            ones += run;
            break;
        }
        ones += 56; /* only 57 bits are sure to be real: go on from a nibble boundary */
    }
    uint64_t k = ones >> 2;
    *p += 4 * k;
    uint64_t nibble = bits_at(src, len, *p) >> 60;
    *p += 4;
    return 8 + 15 * k + nibble;
}

/* dst[o:o+length] = the bytes `offset` back, repeating when they overlap. */
static void copy_match(uint8_t *dst, size_t o, size_t offset, size_t length)
{
    uint8_t *to = dst + o;
    const uint8_t *from = to - offset;
    if (offset >= length) {
        memcpy(to, from, length);
        return;
    }
    memcpy(to, from, offset); /* then double the copied pattern, never overlapping */
    for (size_t done = offset; done < length;) {
        size_t step = done < length - done ? done : length - done;
        memcpy(to + done, to, step);
        done += step;
    }
}

/* One pass over the tokens: with dst NULL it only checks and counts. */
static enum tr_lzs_status lzs_pass(const uint8_t *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len,
                                   struct tr_lzs_error *err)
{
    uint64_t nbits = (uint64_t)len * 8, p = 0;
    size_t o = 0;
    for (;;) {
        uint64_t x = bits_at(src, len, p);
        if (!(x >> 63)) {
            if (p > nbits || nbits - p < 9)
                return TR_LZS_NO_END;
            if (dst && o < cap)
                dst[o] = (uint8_t)(x >> 55);
            o++;
            p += 9;
            continue;
        }
        size_t offset;
        if (x >> 62 & 1) {
            offset = (size_t)(x >> 55 & 0x7F);
            p += 9;
            if (!offset) { /* end marker */
                if (p > nbits)
                    return TR_LZS_END_CUT;
                size_t used = (size_t)((p + 7) / 8);
                if (used != len)
                    return err->count = len - used, TR_LZS_TRAILING;
                if (o > cap)
                    return TR_LZS_EXCEEDS;
                *out_len = o;
                return TR_LZS_OK;
            }
        } else {
            offset = (size_t)(x >> 51 & 0x7FF);
            p += 13;
            if (!offset)
                return TR_LZS_OFFSET_ZERO;
        }
        uint64_t length = read_length(src, len, &p);
        if (offset > o)
            return err->offset = offset, err->count = o, TR_LZS_TOO_FAR;
        if (o > cap || length > cap - o)
            return TR_LZS_EXCEEDS;
        if (dst)
            copy_match(dst, o, offset, (size_t)length);
        o += (size_t)length;
    }
}

enum tr_lzs_status tr_lzs_decompress(const uint8_t *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len,
                                     struct tr_lzs_error *err)
{
    enum tr_lzs_status status = lzs_pass(src, len, NULL, cap, out_len, err);
    if (status != TR_LZS_OK)
        return status;
    size_t checked = *out_len;
    /* The second pass writes at most what the first counted (its bounds are rechecked, so
     * bytes that changed in between, in memory a peer can write, cannot take it further). */
    status = lzs_pass(src, len, dst, checked, out_len, err);
    return status;
}

/* ---- compression ------------------------------------------------------------------------ */

#define HASH_BITS 12
#define WINDOW (TR_LZS_MAX_OFFSET + 1) /* a power of two: chain links by position mod WINDOW */

struct bit_writer {
    uint8_t *out;
    size_t at;       /* whole bytes written */
    uint64_t acc;    /* pending bits, right-aligned */
    unsigned count;  /* how many */
};

static inline void put_bits(struct bit_writer *bw, uint64_t value, unsigned nbits)
{
    while (nbits) { /* at most 32 at a time, so acc never holds more than 39 bits */
        unsigned take = nbits > 32 ? 32 : nbits;
        nbits -= take;
        bw->acc = bw->acc << take | (value >> nbits & ((1ULL << take) - 1));
        bw->count += take;
        while (bw->count >= 8) {
            bw->count -= 8;
            bw->out[bw->at++] = (uint8_t)(bw->acc >> bw->count);
        }
    }
}

static void put_match(struct bit_writer *bw, size_t offset, size_t length)
{
    if (offset < 128)
        put_bits(bw, 0x180 | offset, 9);
    else
        put_bits(bw, 0x1000 | offset, 13);
    if (length < 5) {
        put_bits(bw, length - 2, 2);
    } else if (length < 8) {
        put_bits(bw, length + 7, 4);
    } else {
        size_t k = (length - 8) / 15;
        for (size_t i = 0; i <= k; i++)
            put_bits(bw, 0xF, 4);
        put_bits(bw, (length - 8) % 15, 4);
    }
}

static inline unsigned hash2(const uint8_t *p)
{
    return ((unsigned)p[0] << 8 | p[1]) * 0x9E37u >> (16 - HASH_BITS) & ((1u << HASH_BITS) - 1);
}

static size_t common_prefix(const uint8_t *a, const uint8_t *b, size_t limit)
{
    size_t n = 0;
    for (; limit - n >= 8; n += 8) { /* a word at a time: the first differing byte is the lowest */
        uint64_t x = tr_load64(a + n) ^ tr_load64(b + n);
        if (x)
            return n + (size_t)__builtin_ctzll(x) / 8;
    }
    while (n < limit && a[n] == b[n])
        n++;
    return n;
}

size_t tr_lzs_compress_bound(size_t len)
{
    return (9 * len + 9 + 7) / 8;
}

size_t tr_lzs_compress(const uint8_t *src, size_t len, uint8_t *dst)
{
    /* Every position enters the chains, including those inside matches: the reference
     * searches the whole history (bytes.rfind), so this must find what it finds. */
    int32_t *head = malloc(sizeof(int32_t) * ((1u << HASH_BITS) + WINDOW));
    if (!head)
        return 0;
    int32_t *link = head + (1u << HASH_BITS); /* link[j % WINDOW]: the previous j' with j's hash */
    memset(head, 0xFF, sizeof(int32_t) << HASH_BITS);
    struct bit_writer bw = {dst, 0, 0, 0};
    size_t i = 0, inserted = 0;
    while (i + 2 <= len) {
        for (; inserted < i; inserted++) {
            unsigned h = hash2(src + inserted);
            link[inserted % WINDOW] = head[h];
            head[h] = (int32_t)inserted;
        }
        size_t lo = i > TR_LZS_MAX_OFFSET ? i - TR_LZS_MAX_OFFSET : 0, limit = len - i, best = 0, where = 0;
        for (int32_t j = head[hash2(src + i)]; j >= 0 && (size_t)j >= lo; j = link[j % WINDOW]) {
            size_t n = common_prefix(src + j, src + i, limit); /* may run past i: overlap is fine */
            if (n > best) /* nearest first, so equals keep the nearest, as rfind does */
                best = n, where = (size_t)j;
            if (best == limit)
                break;
        }
        if (best < 2) {
            put_bits(&bw, src[i], 9); /* literal: a 0 flag, then the byte */
            i++;
            continue;
        }
        put_match(&bw, i - where, best);
        i += best;
    }
    for (; i < len; i++)
        put_bits(&bw, src[i], 9);
    put_bits(&bw, 0x180, 9); /* end marker */
    if (bw.count)
        bw.out[bw.at++] = (uint8_t)(bw.acc << (8 - bw.count));
    free(head);
    return bw.at;
}
