/* Placeholder until the draft-model proposer lands: refuses. */
#include "core/log.h"
#include "engine/spec.h"

pagoda_status spec_draft_create(pagoda_model *draft, const pagoda_engine_config *c, int32_t max_seqs,
                                int32_t max_model_len, spec_proposer **out) {
    (void)draft, (void)c, (void)max_seqs, (void)max_model_len;
    *out = NULL;
    return pg_fail(PAGODA_ERR_UNSUPPORTED, "draft-model speculation is not built yet");
}
