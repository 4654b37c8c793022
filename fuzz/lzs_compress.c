/*
 * libFuzzer target: tr_lzs_compress on any packet.  Oracles: the output fits the bound, and
 * decompresses (with room for exactly the packet, and with one byte less) to the packet.
 */
#include "guard.h"
#include "lzs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct guarded src = guarded_at(0, data, size, 0);
    size_t bound = tr_lzs_compress_bound(size);
    struct guarded packed = guarded_at(1, NULL, bound, 0);
    size_t n = tr_lzs_compress(src.p, size, packed.p);
    CHECK(n > 0 && n <= bound);
    struct guarded out = guarded_at(2, NULL, size, 0xEE);
    size_t got;
    struct tr_lzs_error err;
    CHECK(tr_lzs_decompress(packed.p, n, out.p, size, &got, &err) == TR_LZS_OK);
    CHECK(got == size && memcmp(out.p, data, size) == 0);
    if (size) {
        struct guarded small = guarded_at(3, NULL, size - 1, 0xEE);
        CHECK(tr_lzs_decompress(packed.p, n, small.p, size - 1, &got, &err) == TR_LZS_EXCEEDS);
        guarded_free(&small);
    }
    guarded_free(&out);
    guarded_free(&packed);
    guarded_free(&src);
    return 0;
}
