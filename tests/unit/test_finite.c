/* core/finite (NaN/Inf by bits in f32, f16, bf16; aligned, misaligned and strided) and core/file
 * (regular files only: a FIFO, a folder and a device are refused at once, never read). */
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"
#include "core/finite.h"
#include "core/fp16.h"
#include "test_util.h"

enum { N = 10007 };

static void test_f32(void) {
    static float x[N + 1];
    for (int i = 0; i < N; i++) x[i] = (i % 2 ? -1.0f : 1.0f) * (float)i * 1e30f; /* up to ~1e34: finite */
    x[5] = FLT_MAX, x[6] = -FLT_MAX, x[7] = FLT_MIN / 4; /* extremes and a subnormal are finite */
    CHECK(pg_first_nonfinite(x, N, PG_FLOAT_F32) == -1, "finite f32");
    x[9000] = NAN;
    x[9500] = INFINITY;
    CHECK(pg_first_nonfinite(x, N, PG_FLOAT_F32) == 9000, "first NaN at 9000");
    CHECK(pg_first_nonfinite(x, 9000, PG_FLOAT_F32) == -1, "before it: none");
    x[9000] = 0;
    CHECK(pg_first_nonfinite(x, N, PG_FLOAT_F32) == 9500, "+inf at 9500");
    x[9500] = -INFINITY;
    CHECK(pg_first_nonfinite(x, N, PG_FLOAT_F32) == 9500, "-inf at 9500");
    x[9500] = 1;
    /* misaligned: the same values one byte off */
    static unsigned char buf[4 * N + 8];
    x[N - 1] = NAN;
    memcpy(buf + 1, x, 4 * N);
    CHECK(pg_first_nonfinite(buf + 1, N, PG_FLOAT_F32) == N - 1, "misaligned f32");
    CHECK(pg_first_nonfinite(x, 0, PG_FLOAT_F32) == -1, "empty");
}

static void test_half(pg_float_kind k, uint16_t max_finite, uint16_t inf, uint16_t nan) {
    static uint16_t h[N];
    for (int i = 0; i < N; i++) h[i] = (uint16_t)(i * 37) & 0x3fff; /* exponents below all-ones */
    h[10] = max_finite, h[11] = (uint16_t)(max_finite | 0x8000), h[12] = 1 /* subnormal */;
    CHECK(pg_first_nonfinite(h, N, k) == -1, "finite (kind %d)", k);
    h[4097] = (uint16_t)(inf | 0x8000);
    CHECK(pg_first_nonfinite(h, N, k) == 4097, "-inf at 4097 (kind %d)", k);
    h[3] = nan;
    CHECK(pg_first_nonfinite(h, N, k) == 3, "NaN at 3 (kind %d)", k);
    static unsigned char buf[2 * N + 4];
    memcpy(buf + 1, h, 2 * N);
    CHECK(pg_first_nonfinite(buf + 1, N, k) == 3, "misaligned (kind %d)", k);
}

/* Scales inside 18-byte blocks (Q4_0-like): only the two bytes at the stride count. */
static void test_strided(void) {
    enum { NB = 1000, BS = 18 };
    static unsigned char blocks[NB * BS];
    memset(blocks, 0xff, sizeof blocks); /* the quants: all-ones bytes, which are not scales */
    for (int b = 0; b < NB; b++) {
        uint16_t d = pg_fp32_to_fp16(0.01f * (float)b);
        memcpy(blocks + b * BS, &d, 2);
    }
    CHECK(pg_first_nonfinite_strided(blocks, NB, BS, PG_FLOAT_F16) == -1, "finite scales");
    uint16_t bad = 0x7e00;
    memcpy(blocks + 777 * BS, &bad, 2);
    CHECK(pg_first_nonfinite_strided(blocks, NB, BS, PG_FLOAT_F16) == 777, "NaN scale in block 777");
    float f = INFINITY;
    static unsigned char fb[NB * 12];
    memcpy(fb + 500 * 12 + 4, &f, 4);
    CHECK(pg_first_nonfinite_strided(fb + 4, NB - 1, 12, PG_FLOAT_F32) == 500, "f32 scale at an offset");
}

static void test_files(void) {
    char dir[] = "/tmp/pagoda_test_file_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp: %s", strerror(errno));
        return;
    }
    char fifo[256], reg[256];
    snprintf(fifo, sizeof fifo, "%s/config.json", dir);
    snprintf(reg, sizeof reg, "%s/small.json", dir);
    CHECK(mkfifo(fifo, 0600) == 0, "mkfifo: %s", strerror(errno));
    int fd = -2;
    /* no writer ever opens the FIFO: a blocking open would hang here */
    CHECK(pg_open_regular(fifo, &fd, NULL) == PAGODA_ERR_IO && fd == -1, "FIFO refused");
    CHECK(strstr(pagoda_last_error(), "config.json: not a regular file") != NULL, "message: %s", pagoda_last_error());
    char *data = NULL;
    size_t len = 1;
    CHECK(pg_read_file(fifo, 1 << 20, &data, &len) == PAGODA_ERR_IO && !data && len == 0, "read_file: FIFO refused");
    CHECK(pg_read_file(dir, 1 << 20, &data, &len) == PAGODA_ERR_IO, "a folder is refused");
    CHECK(pg_read_file("/dev/zero", 1 << 20, &data, &len) == PAGODA_ERR_IO, "a device is refused");
    CHECK(strstr(pagoda_last_error(), "not a regular file") != NULL, "message: %s", pagoda_last_error());
    CHECK(pg_read_file("/nonexistent/x.json", 1 << 20, &data, &len) == PAGODA_ERR_IO, "missing file");
    FILE *f = fopen(reg, "w");
    fputs("{\"a\": 1}", f);
    fclose(f);
    CHECK(pg_read_file(reg, 8, &data, &len) == PAGODA_OK && len == 8 && !strcmp(data, "{\"a\": 1}"), "exact cap");
    free(data);
    CHECK(pg_read_file(reg, 7, &data, &len) == PAGODA_ERR_FORMAT && !data, "over the cap");
    CHECK(strstr(pagoda_last_error(), "larger than 7 bytes") != NULL, "message: %s", pagoda_last_error());
    struct stat sb;
    CHECK(pg_open_regular(reg, &fd, &sb) == PAGODA_OK && fd >= 0 && sb.st_size == 8, "regular file opens");
    if (fd >= 0) {
        int fl = fcntl(fd, F_GETFL), cl = fcntl(fd, F_GETFD);
        CHECK(!(fl & O_NONBLOCK) && (cl & FD_CLOEXEC), "blocking, close-on-exec descriptor");
        close(fd);
    }
    unlink(fifo), unlink(reg), rmdir(dir);
}

int main(void) {
    test_f32();
    test_half(PG_FLOAT_F16, 0x7bff, 0x7c00, 0x7e00);
    test_half(PG_FLOAT_BF16, 0x7f7f, 0x7f80, 0x7fc0);
    test_strided();
    test_files();
    TEST_DONE();
}
