/* Shards of weights for tensor parallelism (see backend.h). */
#include "backend/backend.h"
#include "core/dtype.h"
#include "core/log.h"

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
