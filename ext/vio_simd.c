/* volleyio SIMD kernels: WebSocket masking and UTF-8 validation with runtime dispatch.
 *
 * Masking:   AVX2 / SSE2 on x86-64, NEON on aarch64, 64-bit word loop elsewhere.
 *            (The NEON kernel is plain vld1q/veorq/vst1q; it has not been compiled or run on
 *            aarch64 hardware here. The MSVC cpuid/xgetbv path is likewise untested.)
 *            Ordinary stores only (non-temporal stores were much slower on hot data).
 * UTF-8:     AVX2 and SSSE3 versions of the lookup-table algorithm of Keiser & Lemire
 *            ("Validating UTF-8 in less than one instruction per byte", 2021), with an
 *            all-ASCII block fast path. The vector pass only answers "is there an error
 *            at or after this block"; the exact offset of the first bad byte is then found
 *            by the scalar state machine, restarted at the character boundary just
 *            before the flagged block (everything before that block is a valid prefix).
 *            On aarch64 UTF-8 validation is the scalar state machine (with an 8-byte
 *            ASCII word fast path): a NEON port has not been written yet because it
 *            could not be tested on hardware here.
 */
#include "vio_simd.h"

#include <string.h>

/* VIO_NO_SIMD=1 builds only the portable kernels (used to compile-check that path). */
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(VIO_NO_SIMD)
#define VIO_X86 1
#include <immintrin.h>
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#define VIO_TARGET(x)
#else
#define VIO_TARGET(x) __attribute__((target(x)))
#endif
#endif

#if (defined(__aarch64__) || defined(_M_ARM64)) && !defined(VIO_NO_SIMD)
#define VIO_NEON 1
#include <arm_neon.h>
#endif

/* ------------------------------------------------------------------ masking */

static void mask_scalar(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t k[4])
{
    uint8_t kb[8];
    uint64_t k64;
    size_t i = 0;
    memcpy(kb, k, 4);
    memcpy(kb + 4, k, 4);
    memcpy(&k64, kb, 8);
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= k64;
        memcpy(dst + i, &w, 8);
    }
    if (i + 4 <= n) {
        uint32_t w, k32;
        memcpy(&w, src + i, 4);
        memcpy(&k32, k, 4);
        w ^= k32;
        memcpy(dst + i, &w, 4);
        i += 4;
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ k[i & 3];
}

#ifdef VIO_X86
static void mask_sse2(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t k[4])
{
    __m128i kv;
    size_t i = 0;
    int32_t k32;
    if (n < 16) {
        mask_scalar(dst, src, n, k);
        return;
    }
    memcpy(&k32, k, 4);
    kv = _mm_set1_epi32(k32);
    for (; i + 64 <= n; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, kv));
        _mm_storeu_si128((__m128i *)(dst + i + 16), _mm_xor_si128(b, kv));
        _mm_storeu_si128((__m128i *)(dst + i + 32), _mm_xor_si128(c, kv));
        _mm_storeu_si128((__m128i *)(dst + i + 48), _mm_xor_si128(d, kv));
    }
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, kv));
    }
    if (i < n)
        mask_scalar(dst + i, src + i, n - i, k); /* i % 4 == 0: key phase unchanged */
}

VIO_TARGET("avx2")
static void mask_avx2(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t k[4])
{
    uint8_t rk[4];
    __m256i kv;
    size_t i = 0;
    int j;
    int32_t k32;
    if (n < 32) {
        mask_sse2(dst, src, n, k);
        return;
    }
    if (n >= 512) {
        /* Align the stores: process a short head, then rotate the key to match. */
        size_t head = (32 - ((uintptr_t)dst & 31)) & 31;
        if (head) {
            mask_scalar(dst, src, head, k);
            for (j = 0; j < 4; j++)
                rk[j] = k[(head + j) & 3];
            k = rk;
            dst += head;
            src += head;
            n -= head;
        }
    }
    memcpy(&k32, k, 4);
    kv = _mm256_set1_epi32(k32);
    for (; i + 128 <= n; i += 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(src + i + 64));
        __m256i d = _mm256_loadu_si256((const __m256i *)(src + i + 96));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(a, kv));
        _mm256_storeu_si256((__m256i *)(dst + i + 32), _mm256_xor_si256(b, kv));
        _mm256_storeu_si256((__m256i *)(dst + i + 64), _mm256_xor_si256(c, kv));
        _mm256_storeu_si256((__m256i *)(dst + i + 96), _mm256_xor_si256(d, kv));
    }
    for (; i + 32 <= n; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(a, kv));
    }
    if (i + 16 <= n) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(a, _mm256_castsi256_si128(kv)));
        i += 16;
    }
    if (i < n)
        mask_scalar(dst + i, src + i, n - i, k);
}
#endif /* VIO_X86 */

#ifdef VIO_NEON
static void mask_neon(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t k[4])
{
    uint8_t kb[16];
    uint8x16_t kv;
    size_t i = 0;
    int j;
    if (n < 16) {
        mask_scalar(dst, src, n, k);
        return;
    }
    for (j = 0; j < 16; j++)
        kb[j] = k[j & 3];
    kv = vld1q_u8(kb);
    for (; i + 64 <= n; i += 64) {
        uint8x16_t a = vld1q_u8(src + i);
        uint8x16_t b = vld1q_u8(src + i + 16);
        uint8x16_t c = vld1q_u8(src + i + 32);
        uint8x16_t d = vld1q_u8(src + i + 48);
        vst1q_u8(dst + i, veorq_u8(a, kv));
        vst1q_u8(dst + i + 16, veorq_u8(b, kv));
        vst1q_u8(dst + i + 32, veorq_u8(c, kv));
        vst1q_u8(dst + i + 48, veorq_u8(d, kv));
    }
    for (; i + 16 <= n; i += 16)
        vst1q_u8(dst + i, veorq_u8(vld1q_u8(src + i), kv));
    if (i < n)
        mask_scalar(dst + i, src + i, n - i, k);
}
#endif

/* ------------------------------------------------------------------ UTF-8 scalar */

int vio_is_ascii(const uint8_t *s, size_t n)
{
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        acc |= w;
        if ((i & 63) == 56 && (acc & 0x8080808080808080ULL))
            return 0;
    }
    for (; i < n; i++)
        acc |= s[i];
    return (acc & 0x8080808080808080ULL) == 0;
}

/* The RFC 3629 state machine. Returns -1 (state updated) or the first bad offset. */
static ptrdiff_t utf8_scalar(vio_utf8_state *st, const uint8_t *s, size_t n)
{
    unsigned need = st->need, lo = st->lo, hi = st->hi;
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (need) {
            if (c < lo || c > hi)
                return (ptrdiff_t)i;
            need--;
            lo = 0x80;
            hi = 0xBF;
            i++;
            continue;
        }
        if (c < 0x80) {
            i++;
            while (i + 8 <= n) {
                uint64_t w;
                memcpy(&w, s + i, 8);
                if (w & 0x8080808080808080ULL)
                    break;
                i += 8;
            }
            continue;
        }
        if (c < 0xC2)
            return (ptrdiff_t)i;
        if (c < 0xE0) {
            need = 1;
            lo = 0x80;
            hi = 0xBF;
        } else if (c < 0xF0) {
            need = 2;
            lo = (c == 0xE0) ? 0xA0 : 0x80;
            hi = (c == 0xED) ? 0x9F : 0xBF;
        } else if (c < 0xF5) {
            need = 3;
            lo = (c == 0xF0) ? 0x90 : 0x80;
            hi = (c == 0xF4) ? 0x8F : 0xBF;
        } else {
            return (ptrdiff_t)i;
        }
        i++;
    }
    st->need = (uint8_t)need;
    st->lo = (uint8_t)lo;
    st->hi = (uint8_t)hi;
    return -1;
}

/* A vector pass: returns (size_t)-1 when s[0:n] is valid and complete, else an offset r
 * such that s[0:r] is a valid (possibly truncated) prefix and the problem lies at or
 * after r - 3. */
typedef size_t (*utf8_prefix_fn)(const uint8_t *s, size_t n);

static size_t utf8_prefix_none(const uint8_t *s, size_t n)
{
    (void)s;
    (void)n;
    return 0;
}

#ifdef VIO_X86
/* Error classes of the lookup-table algorithm (one bit each, TOO_LARGE_1000 and
 * OVERLONG_4 deliberately share a bit). */
#define U8_TOO_SHORT 0x01
#define U8_TOO_LONG 0x02
#define U8_OVERLONG_3 0x04
#define U8_TOO_LARGE 0x08
#define U8_SURROGATE 0x10
#define U8_OVERLONG_2 0x20
#define U8_TOO_LARGE_1000 0x40
#define U8_OVERLONG_4 0x40
#define U8_TWO_CONTS 0x80
#define U8_CARRY (U8_TOO_SHORT | U8_TOO_LONG | U8_TWO_CONTS)

/* Indexed by the high nibble of the previous byte. */
#define U8_T1                                                                                   \
    U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG, U8_TOO_LONG,  \
        U8_TOO_LONG, U8_TWO_CONTS, U8_TWO_CONTS, U8_TWO_CONTS, U8_TWO_CONTS,                    \
        U8_TOO_SHORT | U8_OVERLONG_2, U8_TOO_SHORT, U8_TOO_SHORT | U8_OVERLONG_3 | U8_SURROGATE, \
        U8_TOO_SHORT | U8_TOO_LARGE | U8_TOO_LARGE_1000 | U8_OVERLONG_4
/* Indexed by the low nibble of the previous byte. */
#define U8_T2                                                                              \
    U8_CARRY | U8_OVERLONG_3 | U8_OVERLONG_2 | U8_OVERLONG_4, U8_CARRY | U8_OVERLONG_2,    \
        U8_CARRY, U8_CARRY, U8_CARRY | U8_TOO_LARGE, U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000, \
        U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000, U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000, \
        U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000, U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000, \
        U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000, U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000, \
        U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000,                                        \
        U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000 | U8_SURROGATE,                         \
        U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000, U8_CARRY | U8_TOO_LARGE | U8_TOO_LARGE_1000
/* Indexed by the high nibble of the current byte. */
#define U8_T3                                                                                  \
    U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT,         \
        U8_TOO_SHORT, U8_TOO_SHORT,                                                            \
        U8_TOO_LONG | U8_OVERLONG_2 | U8_TWO_CONTS | U8_OVERLONG_3 | U8_TOO_LARGE_1000 | U8_OVERLONG_4, \
        U8_TOO_LONG | U8_OVERLONG_2 | U8_TWO_CONTS | U8_OVERLONG_3 | U8_TOO_LARGE,             \
        U8_TOO_LONG | U8_OVERLONG_2 | U8_TWO_CONTS | U8_SURROGATE | U8_TOO_LARGE,              \
        U8_TOO_LONG | U8_OVERLONG_2 | U8_TWO_CONTS | U8_SURROGATE | U8_TOO_LARGE,              \
        U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT, U8_TOO_SHORT

VIO_TARGET("avx2")
static inline __m256i u8_block_avx2(__m256i in, __m256i prev, __m256i t1, __m256i t2, __m256i t3)
{
    const __m256i nib = _mm256_set1_epi8(0x0F);
    __m256i carried = _mm256_permute2x128_si256(prev, in, 0x21);
    __m256i p1 = _mm256_alignr_epi8(in, carried, 15);
    __m256i p2 = _mm256_alignr_epi8(in, carried, 14);
    __m256i p3 = _mm256_alignr_epi8(in, carried, 13);
    __m256i b1h = _mm256_shuffle_epi8(t1, _mm256_and_si256(_mm256_srli_epi16(p1, 4), nib));
    __m256i b1l = _mm256_shuffle_epi8(t2, _mm256_and_si256(p1, nib));
    __m256i b2h = _mm256_shuffle_epi8(t3, _mm256_and_si256(_mm256_srli_epi16(in, 4), nib));
    __m256i special = _mm256_and_si256(_mm256_and_si256(b1h, b1l), b2h);
    __m256i third = _mm256_subs_epu8(p2, _mm256_set1_epi8((char)(0xE0 - 0x80)));
    __m256i fourth = _mm256_subs_epu8(p3, _mm256_set1_epi8((char)(0xF0 - 0x80)));
    __m256i must23 = _mm256_and_si256(_mm256_or_si256(third, fourth), _mm256_set1_epi8((char)0x80));
    return _mm256_xor_si256(must23, special);
}

VIO_TARGET("avx2")
static size_t utf8_prefix_avx2(const uint8_t *s, size_t n)
{
    const __m256i t1 = _mm256_setr_epi8(U8_T1, U8_T1);
    const __m256i t2 = _mm256_setr_epi8(U8_T2, U8_T2);
    const __m256i t3 = _mm256_setr_epi8(U8_T3, U8_T3);
    const __m256i maxv = _mm256_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, (char)0xEF, (char)0xDF, (char)0xBF);
    __m256i prev = _mm256_setzero_si256();
    __m256i incomplete = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(s + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(s + i + 32));
        if (_mm256_movemask_epi8(_mm256_or_si256(a, b)) == 0) {
            if (!_mm256_testz_si256(incomplete, incomplete))
                return i;
            prev = b;
            continue;
        }
        {
            __m256i err = _mm256_or_si256(u8_block_avx2(a, prev, t1, t2, t3),
                                          u8_block_avx2(b, a, t1, t2, t3));
            if (!_mm256_testz_si256(err, err))
                return i;
        }
        incomplete = _mm256_subs_epu8(b, maxv);
        prev = b;
    }
    for (; i + 32 <= n; i += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(s + i));
        if (_mm256_movemask_epi8(a) == 0) {
            if (!_mm256_testz_si256(incomplete, incomplete))
                return i;
            incomplete = _mm256_setzero_si256();
        } else {
            __m256i err = u8_block_avx2(a, prev, t1, t2, t3);
            if (!_mm256_testz_si256(err, err))
                return i;
            incomplete = _mm256_subs_epu8(a, maxv);
        }
        prev = a;
    }
    if (i < n) {
        /* Zero padding is ASCII, so a sequence truncated by the end shows up as an error
         * and is then classified exactly by the scalar pass. */
        uint8_t buf[32];
        __m256i a, err;
        memset(buf, 0, sizeof buf);
        memcpy(buf, s + i, n - i);
        a = _mm256_loadu_si256((const __m256i *)buf);
        err = _mm256_or_si256(u8_block_avx2(a, prev, t1, t2, t3), incomplete);
        if (!_mm256_testz_si256(err, err))
            return i;
        return (size_t)-1;
    }
    if (!_mm256_testz_si256(incomplete, incomplete))
        return n;
    return (size_t)-1;
}

VIO_TARGET("ssse3")
static inline __m128i u8_block_ssse3(__m128i in, __m128i prev, __m128i t1, __m128i t2, __m128i t3)
{
    const __m128i nib = _mm_set1_epi8(0x0F);
    __m128i p1 = _mm_alignr_epi8(in, prev, 15);
    __m128i p2 = _mm_alignr_epi8(in, prev, 14);
    __m128i p3 = _mm_alignr_epi8(in, prev, 13);
    __m128i b1h = _mm_shuffle_epi8(t1, _mm_and_si128(_mm_srli_epi16(p1, 4), nib));
    __m128i b1l = _mm_shuffle_epi8(t2, _mm_and_si128(p1, nib));
    __m128i b2h = _mm_shuffle_epi8(t3, _mm_and_si128(_mm_srli_epi16(in, 4), nib));
    __m128i special = _mm_and_si128(_mm_and_si128(b1h, b1l), b2h);
    __m128i third = _mm_subs_epu8(p2, _mm_set1_epi8((char)(0xE0 - 0x80)));
    __m128i fourth = _mm_subs_epu8(p3, _mm_set1_epi8((char)(0xF0 - 0x80)));
    __m128i must23 = _mm_and_si128(_mm_or_si128(third, fourth), _mm_set1_epi8((char)0x80));
    return _mm_xor_si128(must23, special);
}

static inline int m128_nonzero(__m128i v)
{
    return _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_setzero_si128())) != 0xFFFF;
}

VIO_TARGET("ssse3")
static size_t utf8_prefix_ssse3(const uint8_t *s, size_t n)
{
    const __m128i t1 = _mm_setr_epi8(U8_T1);
    const __m128i t2 = _mm_setr_epi8(U8_T2);
    const __m128i t3 = _mm_setr_epi8(U8_T3);
    const __m128i maxv = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                       (char)0xEF, (char)0xDF, (char)0xBF);
    __m128i prev = _mm_setzero_si128();
    __m128i incomplete = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        if (_mm_movemask_epi8(a) == 0) {
            if (m128_nonzero(incomplete))
                return i;
            incomplete = _mm_setzero_si128();
        } else {
            if (m128_nonzero(u8_block_ssse3(a, prev, t1, t2, t3)))
                return i;
            incomplete = _mm_subs_epu8(a, maxv);
        }
        prev = a;
    }
    if (i < n) {
        uint8_t buf[16];
        __m128i a;
        memset(buf, 0, sizeof buf);
        memcpy(buf, s + i, n - i);
        a = _mm_loadu_si128((const __m128i *)buf);
        if (m128_nonzero(_mm_or_si128(u8_block_ssse3(a, prev, t1, t2, t3), incomplete)))
            return i;
        return (size_t)-1;
    }
    if (m128_nonzero(incomplete))
        return n;
    return (size_t)-1;
}
#endif /* VIO_X86 */

/* ------------------------------------------------------------------ dispatch */

typedef void (*mask_fn)(uint8_t *, const uint8_t *, size_t, const uint8_t *);

static mask_fn g_mask = mask_scalar;
static const char *g_mask_name = "scalar";
static utf8_prefix_fn g_utf8 = utf8_prefix_none;
static const char *g_utf8_name = "scalar";
static int g_best_level = 0;

static int cpu_level(void)
{
#ifdef VIO_X86
#if defined(_MSC_VER) && !defined(__clang__)
    int info[4];
    int level = 1; /* SSE2 is baseline on x86-64 */
    __cpuid(info, 0);
    if (info[0] >= 1) {
        __cpuid(info, 1);
        if (info[2] & (1 << 9))
            level = 2; /* SSSE3 */
        if ((info[2] & (1 << 27)) && (info[2] & (1 << 28))) { /* OSXSAVE + AVX */
            if ((_xgetbv(0) & 6) == 6) {
                int info7[4];
                __cpuid(info, 0);
                if (info[0] >= 7) {
                    __cpuidex(info7, 7, 0);
                    if (info7[1] & (1 << 5))
                        level = 3; /* AVX2 */
                }
            }
        }
    }
    return level;
#else
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        return 3;
    if (__builtin_cpu_supports("ssse3"))
        return 2;
    return 1;
#endif
#elif defined(VIO_NEON)
    return 1;
#else
    return 0;
#endif
}

/* level: 0 scalar, 1 SSE2 (NEON on aarch64), 2 SSSE3, 3 AVX2; clamped to what the CPU has.
 * Returns the level in effect. */
int vio_simd_set_level(int level)
{
    if (level < 0 || level > g_best_level)
        level = g_best_level;
    g_mask = mask_scalar;
    g_mask_name = "scalar";
    g_utf8 = utf8_prefix_none;
    g_utf8_name = "scalar";
#ifdef VIO_X86
    if (level >= 1) {
        g_mask = mask_sse2;
        g_mask_name = "sse2";
    }
    if (level >= 2) {
        g_utf8 = utf8_prefix_ssse3;
        g_utf8_name = "ssse3";
    }
    if (level >= 3) {
        g_mask = mask_avx2;
        g_mask_name = "avx2";
        g_utf8 = utf8_prefix_avx2;
        g_utf8_name = "avx2";
    }
#elif defined(VIO_NEON)
    if (level >= 1) {
        g_mask = mask_neon;
        g_mask_name = "neon";
    }
#endif
    return level;
}

void vio_simd_init(void)
{
    g_best_level = cpu_level();
    vio_simd_set_level(g_best_level);
}

const char *vio_mask_impl_name(void) { return g_mask_name; }
const char *vio_utf8_impl_name(void) { return g_utf8_name; }

void vio_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key4[4])
{
    g_mask(dst, src, n, key4);
}

/* The character boundary at or just before r, given that s[0:r] is a valid prefix. */
static size_t boundary_before(const uint8_t *s, size_t r)
{
    size_t k;
    for (k = 1; k <= 3 && k <= r; k++) {
        uint8_t c = s[r - k];
        if (c < 0x80)
            return r;
        if (c >= 0xC0)
            return r - k;
    }
    return r;
}

#define VIO_SIMD_MIN 32

ptrdiff_t vio_utf8_check(const uint8_t *s, size_t n)
{
    vio_utf8_state st = {0, 0x80, 0xBF};
    size_t j = 0;
    ptrdiff_t e;
    if (n >= VIO_SIMD_MIN) {
        size_t r = g_utf8(s, n);
        if (r == (size_t)-1)
            return -1;
        j = boundary_before(s, r);
    }
    e = utf8_scalar(&st, s + j, n - j);
    if (e >= 0)
        return (ptrdiff_t)j + e;
    return st.need ? (ptrdiff_t)n : -1;
}

ptrdiff_t vio_utf8_feed(vio_utf8_state *st, const uint8_t *s, size_t n)
{
    size_t i = 0, j;
    ptrdiff_t e;
    while (st->need && i < n) {
        uint8_t c = s[i];
        if (c < st->lo || c > st->hi)
            return (ptrdiff_t)i;
        st->need--;
        st->lo = 0x80;
        st->hi = 0xBF;
        i++;
    }
    if (i == n)
        return -1;
    j = i;
    if (n - i >= VIO_SIMD_MIN) {
        size_t r = g_utf8(s + i, n - i);
        if (r == (size_t)-1)
            return -1;
        j = i + boundary_before(s + i, r);
    }
    e = utf8_scalar(st, s + j, n - j);
    if (e >= 0)
        return (ptrdiff_t)j + e;
    return -1;
}
