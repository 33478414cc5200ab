/* GGUF/GGML quantized block layouts (bit-exact with the files llama.cpp writes).
 * All multi-byte fields are little-endian; 'd'/'m'/'dmin' halves are IEEE fp16 bits. */
#ifndef PG_KERNELS_QUANTS_H
#define PG_KERNELS_QUANTS_H

#include <stdint.h>

#ifdef __cplusplus /* the CUDA kernels (C++) read the same layouts */
#define PG_STATIC_ASSERT static_assert
#else
#define PG_STATIC_ASSERT _Static_assert
#endif

#define QK4_0 32
#define QK4_1 32
#define QK5_0 32
#define QK5_1 32
#define QK8_0 32
#define QK8_1 32
#define QK_K 256
#define K_SCALE_SIZE 12

typedef struct { uint16_t d; uint8_t qs[QK4_0 / 2]; } block_q4_0;            /* x = d*(q-8); low nibbles = first 16 */
typedef struct { uint16_t d, m; uint8_t qs[QK4_1 / 2]; } block_q4_1;         /* x = d*q + m */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; } block_q5_0; /* x = d*(q-16), bit 4 in qh */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; } block_q5_1;
typedef struct { uint16_t d; int8_t qs[QK8_0]; } block_q8_0;                 /* x = d*q */
typedef struct { uint16_t d, s; int8_t qs[QK8_1]; } block_q8_1;              /* s = d*sum(q) (activations) */

/* Super-blocks of 256: 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes. */
typedef struct { uint16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; } block_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; } block_q5_K;
/* 16 sub-blocks of 16 with int8 scales; 6-bit quants: 4 low bits in ql, 2 high bits in qh. */
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; } block_q6_K;
/* Activations for k-quant dot products: float scale, and sums of each 16 quants. */
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K;

PG_STATIC_ASSERT(sizeof(block_q4_0) == 18, "q4_0 layout");
PG_STATIC_ASSERT(sizeof(block_q4_1) == 20, "q4_1 layout");
PG_STATIC_ASSERT(sizeof(block_q5_0) == 22, "q5_0 layout");
PG_STATIC_ASSERT(sizeof(block_q5_1) == 24, "q5_1 layout");
PG_STATIC_ASSERT(sizeof(block_q8_0) == 34, "q8_0 layout");
PG_STATIC_ASSERT(sizeof(block_q8_1) == 36, "q8_1 layout");
PG_STATIC_ASSERT(sizeof(block_q4_K) == 144, "q4_K layout");
PG_STATIC_ASSERT(sizeof(block_q5_K) == 176, "q5_K layout");
PG_STATIC_ASSERT(sizeof(block_q6_K) == 210, "q6_K layout");
PG_STATIC_ASSERT(sizeof(block_q8_K) == 292, "q8_K layout");

#endif
