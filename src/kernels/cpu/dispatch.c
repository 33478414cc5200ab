/* Runtime ISA dispatch for the fast CPU kernels: detects AVX2/AVX-512 once (kcpu_isa_force can
 * only lower the level, for tests and benchmarks), and keeps each thread's kernel team size. */
#include <cpuid.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/thread_pool.h"
#include "kernels/cpu/cpu_impl.h"

static kcpu_fns g_fns[3];                          /* by level; scalar stays all-NULL */
static k_type_traits g_traits[3][PAGODA_DTYPE_COUNT];
static int g_max_level, g_level;
static _Thread_local int g_threads; /* <= 0: all cores; per thread, so each engine's thread runs its own team size */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* F16C via cpuid leaf 1, ECX bit 29: clang 14's __builtin_cpu_supports has no "f16c". */
static int has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}

static int detect_level(void) {
    __builtin_cpu_init();
    /* __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0). */
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c()))
        return KCPU_ISA_SCALAR;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16"))
        return KCPU_ISA_AVX512;
    return KCPU_ISA_AVX2;
}

static void build_traits(int level) {
    for (int t = 0; t < PAGODA_DTYPE_COUNT; t++) {
        const k_type_traits *r = kref_traits(t);
        if (!r) continue;
        g_traits[level][t] = *r;
        if (g_fns[level].from_float[t]) g_traits[level][t].from_float = g_fns[level].from_float[t];
        if (r->vec_dot && g_fns[level].vec_dot[t]) g_traits[level][t].vec_dot = g_fns[level].vec_dot[t];
    }
}

static void init_once(void) {
    g_max_level = detect_level();
    if (g_max_level >= KCPU_ISA_AVX2) {
        kcpu_fill_float_avx2(&g_fns[KCPU_ISA_AVX2]);
        kcpu_fill_quant_avx2(&g_fns[KCPU_ISA_AVX2]);
        kcpu_fill_kquant_avx2(&g_fns[KCPU_ISA_AVX2]);
        kcpu_fill_convert_avx2(&g_fns[KCPU_ISA_AVX2]);
    }
    if (g_max_level >= KCPU_ISA_AVX512) {
        /* AVX-512 starts from the AVX2 table and replaces what it does better. */
        g_fns[KCPU_ISA_AVX512] = g_fns[KCPU_ISA_AVX2];
        kcpu_fill_float_avx512(&g_fns[KCPU_ISA_AVX512]);
        kcpu_fill_quant_avx512(&g_fns[KCPU_ISA_AVX512]);
        kcpu_fill_kquant_avx512(&g_fns[KCPU_ISA_AVX512]);
    }
    for (int l = 0; l <= g_max_level; l++) build_traits(l);
    g_level = g_max_level;
}

static void ensure_init(void) { pthread_once(&g_once, init_once); }

const kcpu_fns *kcpu_active(void) {
    ensure_init();
    return &g_fns[g_level];
}

int kcpu_isa_max(void) {
    ensure_init();
    return g_max_level;
}

int kcpu_isa_level(void) {
    ensure_init();
    return g_level;
}

int kcpu_isa_force(int level) {
    ensure_init();
    if (level < 0) level = 0;
    g_level = level < g_max_level ? level : g_max_level;
    return g_level;
}

const char *kcpu_isa(void) {
    static const char *names[3] = {"scalar", "avx2", "avx512"};
    return names[kcpu_isa_level()];
}

const k_type_traits *kcpu_traits(int dtype) {
    ensure_init();
    const k_type_traits *r = kref_traits(dtype);
    if (!r) return NULL;
    return &g_traits[g_level][dtype];
}

void kcpu_set_threads(int n) { g_threads = n; }

int kcpu_get_threads(void) {
    return g_threads > 0 ? g_threads : pg_cpu_count();
}
