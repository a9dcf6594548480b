/* volleyio SIMD kernels: WebSocket masking and UTF-8 validation.
 *
 * Runtime CPU dispatch happens once in vio_simd_init(); the entry points below
 * then call through function pointers chosen for this CPU.
 */
#ifndef VIO_SIMD_H
#define VIO_SIMD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Incremental UTF-8 state: `need` continuation bytes still expected, the next one
 * must lie in [lo, hi]. need == 0 means "at a character boundary". */
typedef struct {
    uint8_t need;
    uint8_t lo;
    uint8_t hi;
} vio_utf8_state;

void vio_simd_init(void);
/* Testing aid: 0 scalar, 1 SSE2/NEON, 2 SSSE3, 3 AVX2, -1 best; clamped to the CPU. */
int vio_simd_set_level(int level);
const char *vio_mask_impl_name(void);
const char *vio_utf8_impl_name(void);

/* dst[i] = src[i] ^ key[(i) % 4] where key4 already includes any offset rotation;
 * dst may equal src (in place), otherwise they must not overlap. */
void vio_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key4[4]);

/* -1 if s[0:n] is complete valid UTF-8; else offset of the first bad byte, or n
 * when s is a valid but truncated prefix. */
ptrdiff_t vio_utf8_check(const uint8_t *s, size_t n);

/* Incremental: continue from *st. Returns -1 if everything is a valid prefix
 * (updating *st), else the offset within s of the first bad byte. */
ptrdiff_t vio_utf8_feed(vio_utf8_state *st, const uint8_t *s, size_t n);

/* Nonzero when every byte is < 0x80. */
int vio_is_ascii(const uint8_t *s, size_t n);

#ifdef __cplusplus
}
#endif
#endif
