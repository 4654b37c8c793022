/*
 * LZ4 blocks ("oc-lz4") and CSTP deflate records, decompressed straight into the caller's
 * buffer: the kernels behind tunring.proto.compress's lz4_decompress_into and
 * DeflateDecompressor, which are the specification.  Plain C over liblz4 and zlib, no Python.
 */
#ifndef TUNRING_INFLATE_H
#define TUNRING_INFLATE_H

#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#define TR_DEFLATE_WBITS (-12) /* raw deflate, 4 KiB window */
#define TR_ADLER32_BYTES 4

/*
 * Decompress the LZ4 block src[0:len] into dst[0:cap] with LZ4_decompress_safe (never past
 * cap).  Returns the bytes written, or a negative LZ4 error code (-1 for an empty dst, as the
 * reference refuses it before decompressing).  On an error dst may hold partial output.
 */
long tr_lz4_decompress(const uint8_t *src, size_t len, uint8_t *dst, size_t cap);

enum tr_inflate_status {
    TR_INFLATE_OK = 0,
    TR_INFLATE_NO_ADLER, /* record shorter than its adler32 */
    TR_INFLATE_CORRUPT,  /* zlib refused the data: *zerr and the stream's msg say why */
    TR_INFLATE_EXCEEDS,  /* more than cap bytes */
    TR_INFLATE_ENDED,    /* a final block: CSTP never ends the stream */
    TR_INFLATE_ADLER,    /* the adler32 does not match */
};

/*
 * One CSTP deflate record (raw deflate after a sync flush, then the big-endian adler32 of all
 * data of this direction so far) into dst[0:cap], on the connection's stream `z` (inflateInit2
 * with TR_DEFLATE_WBITS) whose running adler32 is *adler.  On TR_INFLATE_OK sets *out_len and
 * advances *adler.  Any other status leaves the stream unusable (the peer's history now holds
 * data we do not have); dst may then hold unchecked output, never more than cap bytes.
 * Bounds the output exactly as the reference does: input left when dst is full is an error
 * only if it still yields a byte.
 */
enum tr_inflate_status tr_cstp_inflate(z_stream *z, uint32_t *adler, const uint8_t *record, size_t len, uint8_t *dst,
                                       size_t cap, size_t *out_len, int *zerr);

#endif
