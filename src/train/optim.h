/* AdamW with decoupled weight decay over the flat parameter array, global-norm clipping and the
 * learning-rate schedule (linear warmup, then cosine decay to lr * min_lr_ratio). */
#ifndef STRAND_OPTIM_H
#define STRAND_OPTIM_H

#include "strand/config.h"
#include "strand/model.h"

typedef struct {
    real_t *m, *v; /* first and second moments, mirroring the parameter array */
    int64_t n;
    int64_t t; /* updates done (for bias correction) */
} strand_adamw;

int strand_adamw_create(strand_adamw *opt, int64_t n);
void strand_adamw_free(strand_adamw *opt);
/* Learning rate for 0-based step `step` of `config->steps`. */
double strand_lr_at(const strand_config *config, int64_t step);
/* L2 norm of the gradient array (double accumulation). */
double strand_grad_norm(const real_t *grads, int64_t n);
/* Scale grads so their norm is at most max_norm (no-op when max_norm <= 0). Returns the scale. */
double strand_clip_grads(real_t *grads, int64_t n, double norm, double max_norm);
/* One AdamW update; weight decay only where the table says so. */
void strand_adamw_update(strand_adamw *opt, const strand_param_table *table, real_t *params,
                         const real_t *grads, double lr, const strand_config *config);

#endif
