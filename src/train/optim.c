/* AdamW, clipping and the learning-rate schedule. */
#define _DEFAULT_SOURCE
#include "train/optim.h"

#include <math.h>

int strand_adamw_create(strand_adamw *opt, int64_t n) {
    opt->n = n;
    opt->t = 0;
    STRAND_ALLOC(opt->m, n, "AdamW first moment");
    STRAND_ALLOC(opt->v, n, "AdamW second moment");
    return STRAND_OK;
}

void strand_adamw_free(strand_adamw *opt) {
    strand_free(opt->m);
    strand_free(opt->v);
    opt->m = opt->v = NULL;
}

double strand_lr_at(const strand_config *config, int64_t step) {
    const double peak = config->lr, floor_lr = config->lr * config->min_lr_ratio;
    const int64_t warmup = config->warmup_steps < config->steps ? config->warmup_steps : config->steps;
    if (warmup > 0 && step < warmup) return peak * (double)(step + 1) / (double)warmup;
    int64_t decay_steps = config->steps - warmup;
    if (decay_steps <= 1) return peak;
    double progress = (double)(step - warmup) / (double)(decay_steps - 1);
    if (progress > 1) progress = 1;
    return floor_lr + 0.5 * (peak - floor_lr) * (1.0 + cos(M_PI * progress));
}

double strand_grad_norm(const real_t *grads, int64_t n) {
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)grads[i] * (double)grads[i];
    return sqrt(sum);
}

double strand_clip_grads(real_t *grads, int64_t n, double norm, double max_norm) {
    if (max_norm <= 0 || norm <= max_norm) return 1.0;
    const real_t scale = (real_t)(max_norm / (norm + 1e-6));
    for (int64_t i = 0; i < n; i++)
        grads[i] *= scale;
    return scale;
}

void strand_adamw_update(strand_adamw *opt, const strand_param_table *table, real_t *params,
                         const real_t *grads, double lr, const strand_config *config) {
    opt->t++;
    const double b1 = config->beta1, b2 = config->beta2;
    const real_t correction1 = (real_t)(1.0 - pow(b1, (double)opt->t));
    const real_t correction2 = (real_t)(1.0 - pow(b2, (double)opt->t));
    const real_t eps = (real_t)config->adam_eps, rate = (real_t)lr;
    for (int i = 0; i < table->count; i++) {
        const strand_param_info *p = &table->items[i];
        /* Decoupled decay: shrink the weight directly, not through the gradient. */
        const real_t decay = p->decay ? (real_t)(1.0 - lr * config->weight_decay) : (real_t)1;
        real_t *restrict w = params + p->offset, *restrict m = opt->m + p->offset,
                         *restrict v = opt->v + p->offset;
        const real_t *restrict g = grads + p->offset;
        for (int64_t j = 0; j < p->size; j++) {
            m[j] = (real_t)b1 * m[j] + (real_t)(1 - b1) * g[j];
            v[j] = (real_t)b2 * v[j] + (real_t)(1 - b2) * g[j] * g[j];
            const real_t m_hat = m[j] / correction1, v_hat = v[j] / correction2;
            w[j] = w[j] * decay - rate * m_hat / (sqrt(v_hat) + eps);
        }
    }
}
