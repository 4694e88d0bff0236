/* rtcp segment codec: the per-datagram hot path in C.
 *
 * The wire format is TCP's header (RFC 9293 3.1) carried as a whole UDP
 * payload, checksummed with the RFC 1071 Internet checksum over the segment
 * alone (no pseudo-header).  See SPEC.md section 1.
 *
 * Python reaches these functions through cffi, where every call costs a few
 * hundred nanoseconds, so the interface is deliberately coarse: one call
 * encodes a whole segment, one call validates and parses one.
 */
#ifndef RTCP_CODEC_H
#define RTCP_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define RTCP_HEADER_SIZE 20
#define RTCP_MAX_OPTION_BYTES 40
/* Every option that is not EOL/NOP takes at least two bytes. */
#define RTCP_MAX_OPTIONS 20

/* Error codes (negative); rtcp/_codec_py.py mirrors them. */
#define RTCP_ERR_SHORT -1            /* datagram shorter than 20 bytes */
#define RTCP_ERR_CHECKSUM -2         /* checksum does not verify */
#define RTCP_ERR_OFFSET_SMALL -3     /* data offset < 5 */
#define RTCP_ERR_OFFSET_PAST -4      /* data offset past the datagram */
#define RTCP_ERR_OPTION_SHORT -5     /* option length < 2 */
#define RTCP_ERR_OPTION_PAST -6      /* option runs past the header */
#define RTCP_ERR_OPTION_SIZE -7      /* known option with the wrong length */
#define RTCP_ERR_OPTIONS_TOO_LONG -8 /* encode: option bytes > 40 */
#define RTCP_ERR_BUFFER -9           /* encode: output buffer too small */

/* One decoded option.  All fields are uint32_t so that Python can read the
 * whole record array with a single struct.unpack_from. */
typedef struct {
    uint32_t kind;
    uint32_t offset; /* of the option's value (after kind and length) */
    uint32_t length; /* of the option's value */
    uint32_t a;      /* MSS, shift, TSval, or the SACK block count */
    uint32_t b;      /* TSecr */
} rtcp_option;

/* What rtcp_decode_info() reports; field order is the Segment's. */
typedef struct {
    uint32_t src_port;
    uint32_t dst_port;
    uint32_t seq;
    uint32_t ack;
    uint32_t flags;
    uint32_t window;
    uint32_t urgent;
    uint32_t header_len;   /* payload offset */
    uint32_t n_options;
    uint32_t error_offset; /* byte offset of the fault when decode fails */
    rtcp_option options[RTCP_MAX_OPTIONS];
} rtcp_segment_info;

/* RFC 1071 checksum of data: 0 means a checksummed segment verifies.  The
 * value is in host order (the high byte goes first on the wire). */
uint16_t rtcp_checksum(const char *data, size_t len);

/* The same, always through the portable 8-bytes-at-a-time loop (the default
 * may use SIMD); exported so tests can compare the two. */
uint16_t rtcp_checksum_portable(const char *data, size_t len);

/* rtcp_decode() validates a datagram and returns its "layout": everything
 * but the values, so that the Python side can keep one parser specialised to
 * each layout it meets (a connection's segments repeat a handful) and read
 * the values straight from the datagram with one struct.unpack_from:
 *   bits 0..3     data offset, in 32-bit words (the payload starts at 4x);
 *   10 bits for each of the first four options, from bit 4: a 4-bit code
 *     (1 MSS, 2 window scale, 3 SACK-permitted, 4 timestamps, 4 + n SACK
 *     with n blocks) and the option's 6-bit offset from byte 20;
 *   RTCP_LAYOUT_GENERIC set when there are more options or an unknown kind:
 *     then call rtcp_decode_info() for the option records.
 * Errors are the negative RTCP_ERR_* codes. */
#define RTCP_LAYOUT_MAX_OPTIONS 4
#define RTCP_LAYOUT_GENERIC ((int64_t)1 << 62)
int64_t rtcp_decode(const char *data, size_t len);

/* The same validation, also filling *info (header fields and option records;
 * on error, info->error_offset locates the fault). */
int64_t rtcp_decode_info(const char *data, size_t len, rtcp_segment_info *info);

/* Write header, options (padded with zeros to a multiple of 4) and payload
 * into out, with the checksum filled in.  Returns the segment length or an
 * RTCP_ERR_* code.  opts holds the already serialised options. */
long rtcp_encode(char *out, size_t cap,
                 uint16_t src_port, uint16_t dst_port, uint32_t seq, uint32_t ack,
                 uint8_t flags, uint16_t window, uint16_t urgent,
                 const char *opts, size_t opts_len,
                 const char *payload, size_t payload_len);

#endif /* RTCP_CODEC_H */
