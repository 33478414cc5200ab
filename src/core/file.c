#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

pagoda_status pg_open_regular(const char *path, int *fd_out, struct stat *sb_out) {
    *fd_out = -1;
    /* O_NONBLOCK: a read-only open of a FIFO returns at once instead of waiting for a writer */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return pg_fail(PAGODA_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        pagoda_status st = pg_fail(PAGODA_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return st;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return pg_fail(PAGODA_ERR_IO, "%s: not a regular file", path);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        pagoda_status st = pg_fail(PAGODA_ERR_IO, "%s: fcntl: %s", path, strerror(errno));
        close(fd);
        return st;
    }
    if (sb_out) *sb_out = sb;
    *fd_out = fd;
    return PAGODA_OK;
}

pagoda_status pg_read_file(const char *path, size_t max_bytes, char **data, size_t *len) {
    *data = NULL, *len = 0;
    int fd;
    struct stat sb;
    pagoda_status st = pg_open_regular(path, &fd, &sb);
    if (st) return st;
    if (sb.st_size < 0 || (unsigned long long)sb.st_size > max_bytes) {
        close(fd);
        return pg_fail(PAGODA_ERR_FORMAT, "%s: larger than %zu bytes", path, max_bytes);
    }
    size_t want = (size_t)sb.st_size, n = 0;
    char *buf = malloc(want + 1);
    if (!buf) {
        close(fd);
        return pg_fail(PAGODA_ERR_NOMEM, "out of memory reading %s", path);
    }
    /* the size from fstat bounds the read: a file that grows meanwhile is read up to that size */
    while (n < want) {
        ssize_t r = read(fd, buf + n, want - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            st = pg_fail(PAGODA_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return st;
        }
        if (r == 0) break; /* shrank meanwhile */
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *data = buf, *len = n;
    return PAGODA_OK;
}
