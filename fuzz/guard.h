/*
 * Buffers for the fuzz targets whose last byte touches an inaccessible page, so that a read or
 * write one byte past the end faults even inside code AddressSanitizer does not instrument (the
 * system liblz4 and zlib), and whose first byte follows one, for underruns.  Plus a reader
 * that takes the targets' parameters (a cap, an ACCM) from the front of the fuzz input.
 */
#ifndef TUNRING_FUZZ_GUARD_H
#define TUNRING_FUZZ_GUARD_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) __asan_poison_memory_region((p), (n))
#define UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#endif
#endif
#ifndef POISON
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define ARENAS 4
#define ARENA_BYTES (1u << 20) /* the largest buffer a target asks for */

struct guarded {
    uint8_t *p; /* p[0:len] is usable; p + len is the first byte of a PROT_NONE page */
    size_t len;
    int arena;
};

/* Arena `which` (made once: a page, ARENA_BYTES, a page, the outer two inaccessible). */
static inline uint8_t *arena_end(int which)
{
    static uint8_t *ends[ARENAS];
    if (!ends[which]) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        uint8_t *map = mmap(NULL, ARENA_BYTES + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map == MAP_FAILED)
            abort();
        mprotect(map, page, PROT_NONE);
        mprotect(map + page + ARENA_BYTES, page, PROT_NONE);
        ends[which] = map + page + ARENA_BYTES;
    }
    return ends[which];
}

/* len bytes in arena `which`, copied from `from` (or filled with `fill` if from is NULL),
 * ending against the guard page; the arena before them is poisoned for ASan. */
static inline struct guarded guarded_at(int which, const uint8_t *from, size_t len, uint8_t fill)
{
    if (len > ARENA_BYTES)
        abort();
    uint8_t *end = arena_end(which), *start = end - ARENA_BYTES;
    struct guarded g = {end - len, len, which};
    UNPOISON(start, ARENA_BYTES);
    POISON(start, ARENA_BYTES - len);
    if (from)
        memcpy(g.p, from, len);
    else
        memset(g.p, fill, len);
    return g;
}

static inline void guarded_free(struct guarded *g)
{
    (void)g; /* arenas are reused; the next guarded_at re-poisons */
}

/* Takes n bytes (big-endian) off the front of the input; zeros once it runs out. */
static inline uint64_t take(const uint8_t **data, size_t *size, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v = v << 8 | (*size ? **data : 0);
        if (*size)
            (*data)++, (*size)--;
    }
    return v;
}

/* Oracles and checks are not what the fuzzer should explore: no coverage feedback from them. */
#define ORACLE __attribute__((no_sanitize("coverage"), noinline))

/* Whether p[0:n] are all v (memcmp against a pattern: ASan checks the range once, not per byte). */
ORACLE static inline int all_equal(const uint8_t *p, size_t n, uint8_t v)
{
    static uint8_t pattern[4096];
    static int filled = -1;
    if (filled != v)
        memset(pattern, v, sizeof pattern), filled = v;
    for (size_t k; n; p += k, n -= k) {
        k = n < sizeof pattern ? n : sizeof pattern;
        if (memcmp(p, pattern, k))
            return 0;
    }
    return 1;
}

#define CHECK(cond)                                                                                         \
    do {                                                                                                    \
        if (!(cond))                                                                                        \
            __builtin_trap();                                                                               \
    } while (0)

#endif
