/* rtcp segment codec; see codec.h for the interface and why it is shaped so. */
#include "codec.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(RTCP_NO_SIMD)
#define RTCP_HAVE_AVX2_PATH 1
#include <immintrin.h>
#endif

/* ---- RFC 1071 checksum ------------------------------------------------
 *
 * The ones' complement sum is independent of byte order (RFC 1071 2(B)), so
 * we add native-order 64-bit words and swap the folded 16-bit result once at
 * the end on little-endian hosts.  Carries out of bit 63 are added back in
 * (end-around), so the folded result is 0 only for all-zero input, and a sum
 * of 0xFFFF gives checksum 0x0000 as RFC 1071 requires.
 */

static inline uint64_t add_carry(uint64_t a, uint64_t b)
{
    a += b;
    return a + (a < b);
}

static inline uint16_t fold_finish(uint64_t s)
{
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (uint16_t)~s;
#else
    return (uint16_t)~(((s >> 8) | (s << 8)) & 0xffffu);
#endif
}

/* The last < 8 bytes, zero-padded: also pads an odd final byte, as RFC 1071
 * requires, because the tail always starts at an even offset. */
static inline uint64_t tail_word(const unsigned char *p, size_t n)
{
    uint64_t t = 0;
    memcpy(&t, p, n);
    return t;
}

/* Sum of 8-byte words; four independent accumulators keep the carry chains
 * apart, with carries counted separately and added back at the end. */
static uint64_t sum_portable(const unsigned char *p, size_t n)
{
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, carries = 0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, p + i, 8);
        memcpy(&w1, p + i + 8, 8);
        memcpy(&w2, p + i + 16, 8);
        memcpy(&w3, p + i + 24, 8);
        a0 += w0;
        carries += a0 < w0;
        a1 += w1;
        carries += a1 < w1;
        a2 += w2;
        carries += a2 < w2;
        a3 += w3;
        carries += a3 < w3;
    }
    uint64_t s = add_carry(add_carry(a0, a1), add_carry(a2, a3));
    s = add_carry(s, carries);
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        s = add_carry(s, w);
    }
    return add_carry(s, tail_word(p + i, n - i));
}

#ifdef RTCP_HAVE_AVX2_PATH
/* Zero-extend 32-bit halves into 64-bit lanes: no carries can be lost below
 * 2^32 words.  About twice the portable loop's speed on 64 KiB.  With dst,
 * also copies p there as it goes: encode reads the payload once, not once to
 * copy it and again to sum the copy. */
__attribute__((target("avx2"))) static uint64_t sum_avx2(unsigned char *dst,
                                                          const unsigned char *p, size_t n)
{
    const __m256i z = _mm256_setzero_si256();
    __m256i a0 = z, a1 = z, a2 = z, a3 = z;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)(p + i));
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(p + i + 32));
        if (dst) {
            _mm256_storeu_si256((__m256i *)(dst + i), v0);
            _mm256_storeu_si256((__m256i *)(dst + i + 32), v1);
        }
        a0 = _mm256_add_epi64(a0, _mm256_unpacklo_epi32(v0, z));
        a1 = _mm256_add_epi64(a1, _mm256_unpackhi_epi32(v0, z));
        a2 = _mm256_add_epi64(a2, _mm256_unpacklo_epi32(v1, z));
        a3 = _mm256_add_epi64(a3, _mm256_unpackhi_epi32(v1, z));
    }
    a0 = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, a0);
    uint64_t s = add_carry(add_carry(lanes[0], lanes[1]), add_carry(lanes[2], lanes[3]));
    if (dst)
        memcpy(dst + i, p + i, n - i);
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        s = add_carry(s, w);
    }
    return add_carry(s, tail_word(p + i, n - i));
}

static int have_avx2 = -1; /* racy first use is benign: every writer stores the same value */
#endif

/* The sum of n bytes at p; with dst, they are copied there too. */
static inline uint64_t sum_bytes(unsigned char *dst, const unsigned char *p, size_t n)
{
#ifdef RTCP_HAVE_AVX2_PATH
    if (n >= 128) {
        if (have_avx2 < 0) {
            __builtin_cpu_init();
            have_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
        }
        if (have_avx2)
            return sum_avx2(dst, p, n);
    }
#endif
    if (dst)
        memcpy(dst, p, n);
    return sum_portable(p, n);
}

uint16_t rtcp_checksum(const char *data, size_t len)
{
    return fold_finish(sum_bytes(NULL, (const unsigned char *)data, len));
}

uint16_t rtcp_checksum_portable(const char *data, size_t len)
{
    return fold_finish(sum_portable((const unsigned char *)data, len));
}

/* ---- decode ------------------------------------------------------------ */

static inline uint32_t be16(const unsigned char *p)
{
    return ((uint32_t)p[0] << 8) | p[1];
}

static inline uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void put16(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static inline void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Layout code of a known option (see codec.h), 0 for an unknown kind. */
static inline int64_t layout_code(uint32_t kind, uint32_t olen)
{
    switch (kind) {
    case 2: return 1;
    case 3: return 2;
    case 4: return 3;
    case 8: return 4;
    case 5: return 4 + (olen - 2) / 8;
    default: return 0;
    }
}

/* Shared by both entry points; info may be NULL.  Check order (the Python
 * backend's too, so both report the same error): length, checksum, data
 * offset, options.  The checksum goes before the structure so that a
 * corrupted datagram counts as a checksum failure rather than as malformed. */
static int64_t decode_impl(const unsigned char *p, size_t len, rtcp_segment_info *info)
{
    rtcp_segment_info dummy;
    if (info == NULL)
        info = &dummy; /* records are written but unused: cheaper than branching */
    info->error_offset = 0;
    if (len < RTCP_HEADER_SIZE)
        return RTCP_ERR_SHORT;
    if (rtcp_checksum((const char *)p, len) != 0)
        return RTCP_ERR_CHECKSUM;
    uint32_t hl = (uint32_t)(p[12] >> 4) * 4;
    info->error_offset = 12;
    if (hl < RTCP_HEADER_SIZE)
        return RTCP_ERR_OFFSET_SMALL;
    if (hl > len)
        return RTCP_ERR_OFFSET_PAST;

    int64_t layout = hl / 4;
    uint32_t n = 0, i = RTCP_HEADER_SIZE;
    while (i < hl) {
        uint32_t kind = p[i];
        if (kind == 0)
            break;
        if (kind == 1) {
            i++;
            continue;
        }
        info->error_offset = i;
        if (i + 1 >= hl)
            return RTCP_ERR_OPTION_PAST; /* no room for the length byte */
        uint32_t olen = p[i + 1];
        if (olen < 2)
            return RTCP_ERR_OPTION_SHORT;
        if (i + olen > hl)
            return RTCP_ERR_OPTION_PAST;
        rtcp_option *o = &info->options[n];
        o->kind = kind;
        o->offset = i + 2;
        o->length = olen - 2;
        o->a = 0;
        o->b = 0;
        switch (kind) {
        case 2: /* MSS */
            if (olen != 4)
                return RTCP_ERR_OPTION_SIZE;
            o->a = be16(p + i + 2);
            break;
        case 3: /* window scale */
            if (olen != 3)
                return RTCP_ERR_OPTION_SIZE;
            o->a = p[i + 2];
            break;
        case 4: /* SACK permitted */
            if (olen != 2)
                return RTCP_ERR_OPTION_SIZE;
            break;
        case 5: /* SACK: 1..4 blocks of two 32-bit edges */
            if (olen < 10 || olen > 34 || (olen - 2) % 8 != 0)
                return RTCP_ERR_OPTION_SIZE;
            o->a = (olen - 2) / 8;
            break;
        case 8: /* timestamps */
            if (olen != 10)
                return RTCP_ERR_OPTION_SIZE;
            o->a = be32(p + i + 2);
            o->b = be32(p + i + 6);
            break;
        default: /* unknown: kept as raw bytes */
            break;
        }
        int64_t code = layout_code(kind, olen);
        if (n >= RTCP_LAYOUT_MAX_OPTIONS || code == 0)
            layout |= RTCP_LAYOUT_GENERIC;
        else
            layout |= (code | (int64_t)(i - RTCP_HEADER_SIZE) << 4) << (4 + 10 * n);
        n++; /* at most 20: each counted option takes >= 2 of the 40 bytes */
        i += olen;
    }

    info->src_port = be16(p);
    info->dst_port = be16(p + 2);
    info->seq = be32(p + 4);
    info->ack = be32(p + 8);
    info->flags = p[13];
    info->window = be16(p + 14);
    info->urgent = be16(p + 18);
    info->header_len = hl;
    info->n_options = n;
    info->error_offset = 0;
    return layout;
}

int64_t rtcp_decode(const char *data, size_t len)
{
    return decode_impl((const unsigned char *)data, len, NULL);
}

int64_t rtcp_decode_info(const char *data, size_t len, rtcp_segment_info *info)
{
    return decode_impl((const unsigned char *)data, len, info);
}

/* ---- encode ------------------------------------------------------------ */

long rtcp_encode(char *out, size_t cap,
                 uint16_t src_port, uint16_t dst_port, uint32_t seq, uint32_t ack,
                 uint8_t flags, uint16_t window, uint16_t urgent,
                 const char *opts, size_t opts_len,
                 const char *payload, size_t payload_len)
{
    if (opts_len > RTCP_MAX_OPTION_BYTES)
        return RTCP_ERR_OPTIONS_TOO_LONG;
    size_t hl = RTCP_HEADER_SIZE + ((opts_len + 3) & ~(size_t)3);
    if (cap < hl || cap - hl < payload_len)
        return RTCP_ERR_BUFFER;
    unsigned char *p = (unsigned char *)out;
    put16(p, src_port);
    put16(p + 2, dst_port);
    put32(p + 4, seq);
    put32(p + 8, ack);
    p[12] = (unsigned char)((hl / 4) << 4);
    p[13] = flags;
    put16(p + 14, window);
    put16(p + 16, 0);
    put16(p + 18, urgent);
    if (opts_len)
        memcpy(p + RTCP_HEADER_SIZE, opts, opts_len);
    memset(p + RTCP_HEADER_SIZE + opts_len, 0, hl - RTCP_HEADER_SIZE - opts_len);
    /* The header's length is a multiple of 4, so the payload's 16-bit words
     * line up with the datagram's: its sum adds to the header's. */
    uint64_t sum = sum_portable(p, hl);
    if (payload_len)
        sum = add_carry(sum, sum_bytes(p + hl, (const unsigned char *)payload, payload_len));
    put16(p + 16, fold_finish(sum));
    return (long)(hl + payload_len);
}
