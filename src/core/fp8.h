/* FP8 E4M3FN (1 sign, 4 exponent bits of bias 7, 3 mantissa bits; no infinities, 0x7f/0xff NaN,
 * largest finite 448) conversions, scalar. */
#ifndef PG_CORE_FP8_H
#define PG_CORE_FP8_H

#include <math.h>
#include <stdint.h>

#include "core/fp16.h"

#define PG_FP8_E4M3_MAX 448.0f

/* Exact. The magnitude bits shifted left 7 are a half of 2^-8 the value (subnormals too). */
static inline float pg_fp8_e4m3_to_fp32(uint8_t v) {
    if ((v & 0x7f) == 0x7f) return NAN;
    float a = pg_fp16_to_fp32((uint16_t)((v & 0x7f) << 7)) * 256.0f;
    return v & 0x80 ? -a : a;
}

/* Round to nearest even; beyond +-448 saturates to +-448; NaN stays NaN. */
static inline uint8_t pg_fp32_to_fp8_e4m3(float f) {
    uint32_t x = pg_fp32_to_bits(f);
    uint8_t sign = (uint8_t)((x >> 24) & 0x80);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint8_t)(sign | 0x7f);
    float a = pg_fp32_from_bits(ax);
    if (a >= PG_FP8_E4M3_MAX) return (uint8_t)(sign | 0x7e);
    if (a < 0.015625f) /* below 2^-6: subnormal steps of 2^-9 (8 steps round up to the smallest normal, code 8) */
        return (uint8_t)(sign | (uint8_t)rintf(a * 512.0f));
    ax += 0x7ffffu + ((ax >> 20) & 1); /* round the mantissa to 3 bits, half to even */
    uint32_t e = (ax >> 23) - 120, m = (ax >> 20) & 7;
    if (e > 15 || (e == 15 && m == 7)) return (uint8_t)(sign | 0x7e); /* rounded up past 448 */
    return (uint8_t)(sign | (e << 3) | m);
}

#endif
