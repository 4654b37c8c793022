/* Unaligned little-endian 64-bit loads and stores, and whole-word byte tests (SWAR). */
#ifndef TUNRING_BYTES_H
#define TUNRING_BYTES_H

#include <stdint.h>
#include <string.h>

#define TR_ONES 0x0101010101010101ULL
#define TR_HIGHS 0x8080808080808080ULL

static inline uint64_t tr_load64(const uint8_t *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    x = __builtin_bswap64(x);
#endif
    return x;
}

static inline void tr_store64(uint8_t *p, uint64_t x)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    x = __builtin_bswap64(x);
#endif
    memcpy(p, &x, 8);
}

/* Nonzero iff some byte of x is zero (exact: no false positives or negatives for the test). */
static inline uint64_t tr_has_zero(uint64_t x)
{
    return (x - TR_ONES) & ~x & TR_HIGHS;
}

/* 0x80 in exactly the bytes of x that equal b, 0 elsewhere (no carries between bytes). */
static inline uint64_t tr_eq_mask(uint64_t x, uint8_t b)
{
    uint64_t t = x ^ (TR_ONES * b);
    return ~(((t & ~TR_HIGHS) + ~TR_HIGHS) | t) & TR_HIGHS;
}

/* Nonzero iff some byte of x equals b. */
static inline uint64_t tr_has_byte(uint64_t x, uint8_t b)
{
    return tr_has_zero(x ^ (TR_ONES * b));
}

/* Nonzero iff some byte of x is a control character (< 0x20). */
static inline uint64_t tr_has_control(uint64_t x)
{
    return tr_has_zero(x & (TR_ONES * 0xE0));
}

#endif
