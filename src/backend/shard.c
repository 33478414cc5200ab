/* Shards of weights for tensor parallelism (see backend.h). */
#include "backend/backend.h"
#include "core/dtype.h"
#include "core/log.h"

#include <string.h>

pagoda_status be_shard_view(const pg_tensor *t, const pg_shard *s, pg_tensor *out) {
    const char *name = t->name ? t->name : "weight";
    if (s->count < 1 || s->index < 0 || s->index >= s->count)
        return pg_fail(PAGODA_ERR_INVALID, "%s: shard %d of %d", name, s->index, s->count);
    *out = *t;
    if (s->count == 1 || !t->data) return PAGODA_OK;
    if (pg_tensor_has_qmeta(t))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: shards of weights with scales/zero points (not yet)", name);
    if (s->dim == PG_SHARD_COLS)
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: column shards need a strided copy (not yet)", name);
    if (t->n_out % s->count)
        return pg_fail(PAGODA_ERR_INVALID, "%s: %lld rows do not split into %d equal shards", name, (long long)t->n_out,
                       s->count);
    size_t rs = 0;
    if (!dtype_row_size(t->dtype, t->n_in, &rs)) return pg_fail(PAGODA_ERR_INVALID, "%s: bad row size", name);
    int64_t rows = t->n_out / s->count;
    out->data = (const char *)t->data + (size_t)(rows * s->index) * rs;
    out->n_out = rows;
    return PAGODA_OK;
}

/* The part of one dimension of t that s selects: [first, first + n) of the rows or columns, with
 * the bytes of a source row and of a shard row. */
static pagoda_status shard_geom(const pg_tensor *t, const pg_shard *s, int64_t *first, int64_t *n, size_t *src_row,
                                size_t *dst_row) {
    const char *name = t->name ? t->name : "weight";
    if (s->count < 1 || s->index < 0 || s->index >= s->count)
        return pg_fail(PAGODA_ERR_INVALID, "%s: shard %d of %d", name, s->index, s->count);
    if (pg_tensor_has_qmeta(t))
        return pg_fail(PAGODA_ERR_UNSUPPORTED, "%s: shards of weights with scales/zero points (not yet)", name);
    const pg_dtype_info *di = dtype_info(t->dtype);
    if (!di || !di->name || !dtype_row_size(t->dtype, t->n_in, src_row))
        return pg_fail(PAGODA_ERR_INVALID, "%s: bad type or row size", name);
    int64_t dim = s->dim == PG_SHARD_ROWS ? t->n_out : t->n_in;
    if (dim % s->count)
        return pg_fail(PAGODA_ERR_INVALID, "%s: %lld %s do not split into %d equal shards", name, (long long)dim,
                       s->dim == PG_SHARD_ROWS ? "rows" : "columns", s->count);
    *n = dim / s->count, *first = *n * s->index;
    if (s->dim == PG_SHARD_ROWS) {
        *dst_row = *src_row;
        return PAGODA_OK;
    }
    if (*n % di->block_size)
        return pg_fail(PAGODA_ERR_INVALID, "%s: a shard of %lld columns is not a whole number of %s blocks (%d "
                       "elements each): cannot split %lld columns %d ways", name, (long long)*n, di->name,
                       di->block_size, (long long)t->n_in, s->count);
    return dtype_row_size(t->dtype, *n, dst_row) ? PAGODA_OK : pg_fail(PAGODA_ERR_INVALID, "%s: bad row size", name);
}

pagoda_status be_shard_bytes(const pg_tensor *t, const pg_shard *s, size_t *bytes) {
    int64_t first = 0, n = 0;
    size_t src_row = 0, dst_row = 0;
    pagoda_status st = shard_geom(t, s, &first, &n, &src_row, &dst_row);
    if (st) return st;
    int64_t rows = s->dim == PG_SHARD_ROWS ? n : t->n_out;
    if (!pg_mul_size(dst_row, (size_t)rows, bytes)) return pg_fail(PAGODA_ERR_INVALID, "shard size overflows");
    return PAGODA_OK;
}

pagoda_status be_shard_copy(const pg_tensor *t, const pg_shard *s, void *dst, pg_tensor *out) {
    int64_t first = 0, n = 0;
    size_t src_row = 0, dst_row = 0;
    pagoda_status st = shard_geom(t, s, &first, &n, &src_row, &dst_row);
    if (st) return st;
    *out = *t;
    out->data = dst;
    if (s->dim == PG_SHARD_ROWS) {
        memcpy(dst, (const char *)t->data + (size_t)first * src_row, (size_t)n * src_row);
        out->n_out = n;
        return PAGODA_OK;
    }
    size_t off = 0; /* bytes before column `first` in a row: whole blocks */
    if (first > 0 && !dtype_row_size(t->dtype, first, &off)) return pg_fail(PAGODA_ERR_INVALID, "bad row size");
    for (int64_t r = 0; r < t->n_out; r++)
        memcpy((char *)dst + (size_t)r * dst_row, (const char *)t->data + (size_t)r * src_row + off, dst_row);
    out->n_in = n;
    return PAGODA_OK;
}
