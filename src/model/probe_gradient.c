/* strand probe gradient on a model: the loss at one position T only (model->loss_weights one-hot
 * at T), one backward, and the norm of each row of the block-0 input's gradient, placed by its
 * global position so that every rank ends with the whole curve g(k), k = 0 .. T. */
#include "strand/probe.h"

#include <math.h>
#include <string.h>

int strand_probe_gradient(strand_model *model, const strand_shard *shard, const strand_token_t *inputs,
                          const strand_token_t *targets, int64_t position, double *g) {
    MPI_Comm comm = shard->grid->sp_comm;
    if (position < 0 || position >= shard->window)
        STRAND_FAIL(STRAND_ERR_INPUT, "--position %lld is outside the window (0 to %lld)",
                    (long long)position, (long long)shard->window - 1);
    if (position + 1 > INT32_MAX)
        STRAND_FAIL(STRAND_ERR_INPUT, "--position %lld: the curve does not fit one MPI call",
                    (long long)position);
    const int64_t T = shard->T, C = model->C, n = position + 1;
    real_t *weights = strand_alloc(sizeof(real_t) * (size_t)(T > 0 ? T : 1), "probe loss weights");
    STRAND_CALL(strand_agree(comm, weights ? STRAND_OK : STRAND_ERR_NOMEM));
    for (int64_t i = 0; i < T; i++)
        weights[i] = strand_shard_position(shard, i) == position ? (real_t)1 : (real_t)0;
    const real_t *kept = model->loss_weights;
    model->loss_weights = weights;
    /* one window on its own: no state carried in from a previous one */
    strand_model_reset(model);
    double loss = 0;
    int status = strand_agree(comm, strand_model_forward(model, inputs, targets, shard, &loss));
    if (status == STRAND_OK) {
        /* backward adds: start from zero so the parameter gradient stays finite over many windows */
        memset(model->grads, 0, sizeof(real_t) * (size_t)model->table.total);
        status = strand_agree(comm, strand_model_backward(model, inputs, shard, 1));
    }
    model->loss_weights = kept;
    strand_free(weights);
    STRAND_CALL(status);
    /* rows after T get no gradient from loss_T (causality): only k = T - p >= 0 is kept. Each k
     * comes from exactly one rank and the others add 0, so the sum is exact at any SP. */
    const real_t *dx = strand_model_input_grad(model);
    memset(g, 0, sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < T; i++) {
        const int64_t p = strand_shard_position(shard, i);
        if (p > position) continue;
        double s = 0;
        for (int64_t c = 0; c < C; c++)
            s += (double)dx[i * C + c] * (double)dx[i * C + c];
        g[position - p] = sqrt(s);
    }
    STRAND_CALL_MPI(MPI_Allreduce(MPI_IN_PLACE, g, (int)n, MPI_DOUBLE, MPI_SUM, comm));
    return STRAND_OK;
}

int64_t strand_probe_gradient_fit(const double *g, int64_t n, double *per_step, double *power) {
    /* two least-squares lines over k >= 1 with g(k) > 0 (k = 0 carries the residual path's direct
     * term): ln g = a + k ln r (per_step = r) and log10 g = b + s log10 k (power = s) */
    double sk = 0, sy = 0, skk = 0, sky = 0, sl = 0, sll = 0, sly = 0, sy10 = 0;
    int64_t m = 0;
    for (int64_t k = 1; k < n; k++) {
        if (!(g[k] > 0) || !isfinite(g[k])) continue;
        const double y = log(g[k]), l = log10((double)k), y10 = log10(g[k]);
        sk += (double)k, skk += (double)k * (double)k, sy += y, sky += (double)k * y;
        sl += l, sll += l * l, sly += l * y10, sy10 += y10;
        m++;
    }
    *per_step = *power = NAN;
    if (m < 2) return m;
    const double dk = (double)m * skk - sk * sk, dl = (double)m * sll - sl * sl;
    if (dk > 0) *per_step = exp(((double)m * sky - sk * sy) / dk);
    if (dl > 0) *power = ((double)m * sly - sl * sy10) / dl;
    return m;
}
