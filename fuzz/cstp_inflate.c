/*
 * libFuzzer target: tr_cstp_inflate, one stream over a sequence of records (the system zlib is
 * not instrumented by ASan: guard pages around every buffer catch accesses outside them).
 * Input: a mode byte, then records as [2-byte cap][2-byte length][record] until the input
 * ends or a record is refused (the stream is unusable after that, as on a connection).
 * Mode odd: the records are made here from the input, the way a CSTP peer makes them (sync
 * flush, chained adler32), and must come back whole, and fail with one byte less room.
 */
#include "guard.h"
#include "inflate.h"

static void init(z_stream *z)
{
    memset(z, 0, sizeof *z);
    CHECK(inflateInit2(z, TR_DEFLATE_WBITS) == Z_OK);
}

static void round_trip(const uint8_t *data, size_t size)
{
    z_stream tx, rx;
    memset(&tx, 0, sizeof tx);
    /* memLevel 1: a small hash table, so each input does not clear 64 KiB (any level inflates alike) */
    CHECK(deflateInit2(&tx, Z_DEFAULT_COMPRESSION, Z_DEFLATED, TR_DEFLATE_WBITS, 1, Z_DEFAULT_STRATEGY) == Z_OK);
    init(&rx);
    uint32_t sent = 1, received = 1;
    while (size) {
        size_t piece = (size_t)take(&data, &size, 1) * 8; /* packets of 0..2040 bytes */
        piece = piece < size ? piece : size;
        size_t room = deflateBound(&tx, (uLong)piece) + 16;
        uint8_t *record = malloc(room + TR_ADLER32_BYTES);
        tx.next_in = (Bytef *)data, tx.avail_in = (uInt)piece;
        tx.next_out = record, tx.avail_out = (uInt)room;
        int status = deflate(&tx, Z_SYNC_FLUSH); /* Z_BUF_ERROR: a second empty flush adds nothing */
        CHECK((status == Z_OK || status == Z_BUF_ERROR) && tx.avail_in == 0);
        size_t len = room - tx.avail_out;
        sent = (uint32_t)adler32(sent, data, (uInt)piece);
        for (int i = 0; i < 4; i++)
            record[len + i] = (uint8_t)(sent >> (24 - 8 * i));
        struct guarded in = guarded_at(0, record, len + 4, 0), out = guarded_at(1, NULL, piece, 0xEE);
        size_t n;
        int zerr;
        CHECK(tr_cstp_inflate(&rx, &received, in.p, len + 4, out.p, piece, &n, &zerr) == TR_INFLATE_OK);
        CHECK(n == piece && memcmp(out.p, data, piece) == 0 && received == sent);
        guarded_free(&out);
        guarded_free(&in);
        free(record);
        data += piece, size -= piece;
    }
    deflateEnd(&tx);
    inflateEnd(&rx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (take(&data, &size, 1) & 1) {
        round_trip(data, size);
        return 0;
    }
    z_stream z;
    init(&z);
    uint32_t adler = 1;
    while (size) {
        size_t cap = (size_t)take(&data, &size, 2), len = (size_t)take(&data, &size, 2);
        len = len < size ? len : size;
        struct guarded in = guarded_at(0, data, len, 0), out = guarded_at(1, NULL, cap, 0xEE);
        size_t n = 0;
        int zerr = 0;
        uint32_t before = adler;
        enum tr_inflate_status status = tr_cstp_inflate(&z, &adler, in.p, len, out.p, cap, &n, &zerr);
        CHECK(status == TR_INFLATE_OK ? n <= cap && adler == (uint32_t)adler32(before, out.p, (uInt)n) : adler == before);
        guarded_free(&in);
        guarded_free(&out);
        data += len, size -= len;
        if (status != TR_INFLATE_OK)
            break;
    }
    inflateEnd(&z);
    return 0;
}
