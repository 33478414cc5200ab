/* IEEE half and bfloat16 conversions (scalar; SIMD code uses F16C / shifts). */
#ifndef PG_CORE_FP16_H
#define PG_CORE_FP16_H

#include <stdint.h>
#include <string.h>

static inline float pg_fp32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t pg_fp32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float pg_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        if (man == 0) return pg_fp32_from_bits(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31) return pg_fp32_from_bits(sign | 0x7f800000u | (man << 13));
    return pg_fp32_from_bits(sign | ((exp + 112) << 23) | (man << 13));
}

/* Round to nearest even, like F16C's vcvtps2ph with rounding mode 0. */
static inline uint16_t pg_fp32_to_fp16(float f) {
    uint32_t x = pg_fp32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0)); /* inf/nan */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);                                  /* overflow */
    if (ax < 0x38800000u) {                                                                   /* subnormal or zero */
        float a = pg_fp32_from_bits(ax);
        /* adding 0.5 in this magic shifts the value so its low bits round correctly */
        float r = a + 0.5f;
        return (uint16_t)(sign | (pg_fp32_to_bits(r) - 0x3f000000u));
    }
    uint32_t mant_odd = (ax >> 13) & 1;
    ax += 0xc8000fffu + mant_odd; /* rebias exponent (-112<<23) and round half to even */
    return (uint16_t)(sign | (ax >> 13));
}

static inline float pg_bf16_to_fp32(uint16_t h) { return pg_fp32_from_bits((uint32_t)h << 16); }

static inline uint16_t pg_fp32_to_bf16(float f) {
    uint32_t x = pg_fp32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 64); /* quiet nan */
    return (uint16_t)((x + (0x7fff + ((x >> 16) & 1))) >> 16);
}

#endif
