/*
 * libFuzzer target: tr_lz4_decompress (over the system liblz4, which ASan does not instrument:
 * the guard pages around src and dst catch any access outside them).  Input: a mode byte,
 * 2 bytes of room, then an LZ4 block (mode even) or a packet that is first compressed with
 * LZ4_compress_default and must come back whole (mode odd).
 */
#include <lz4.h>

#include "guard.h"
#include "inflate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned mode = (unsigned)take(&data, &size, 1);
    size_t cap = (size_t)take(&data, &size, 2);
    if (mode & 1) {
        struct guarded packed = guarded_at(0, NULL, (size_t)LZ4_compressBound((int)size), 0);
        int n = LZ4_compress_default((const char *)data, (char *)packed.p, (int)size, (int)packed.len);
        CHECK(n > 0);
        struct guarded out = guarded_at(1, NULL, size, 0xEE);
        long got = tr_lz4_decompress(packed.p, (size_t)n, out.p, size);
        CHECK(size ? got == (long)size && memcmp(out.p, data, size) == 0 : got < 0); /* no room: refused */
        guarded_free(&out);
        guarded_free(&packed);
        return 0;
    }
    struct guarded src = guarded_at(2, data, size, 0), dst = guarded_at(3, NULL, cap, 0xEE);
    long got = tr_lz4_decompress(src.p, size, dst.p, cap);
    CHECK(got <= (long)cap && (cap || got < 0));
    guarded_free(&src);
    guarded_free(&dst);
    return 0;
}
