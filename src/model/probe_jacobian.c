/* strand probe jacobian on a model: which block, the checks of the span, then the span Jacobian
 * (recurrent_probe.c), its singular values (ScaLAPACK) and W's spectral radius (LAPACK). */
#include "strand/probe.h"

#include "model/mixers/recurrent.h"
#include "model/model_internal.h"
#include "parallel/dense.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* LAPACK (OpenBLAS): eigenvalues of a real general matrix. Trailing lengths: gfortran ABI. */
void dgeev_(const char *jobvl, const char *jobvr, const int *n, double *a, const int *lda, double *wr,
            double *wi, double *vl, const int *ldvl, double *vr, const int *ldvr, double *work,
            const int *lwork, int *info, size_t, size_t);

void strand_probe_jacobian_free(strand_probe_jacobian_result *result) {
    strand_free(result->sigma);
    strand_free(result->jacobian);
    result->sigma = result->jacobian = NULL;
}

/* The spectral radius of each C x C gate block of w (G C, C), into radius (G). Serial. */
static int gate_radii(const real_t *w, int G, int C, double *radius) {
    const int64_t nn = (int64_t)C * C;
    int lwork = 4 * C + (int)nn, info = 0, ld = 1;
    double *a = strand_alloc(sizeof(double) * (size_t)(2 * nn + 6 * C), "probe eigenvalues");
    if (!a) return STRAND_ERR_NOMEM;
    double *wr = a + nn, *wi = wr + C, *work = wi + C;
    for (int g = 0; g < G && info == 0; g++) {
        /* column-major sees the transpose: the same eigenvalues */
        for (int64_t i = 0; i < nn; i++)
            a[i] = (double)w[g * nn + i];
        dgeev_("N", "N", &C, a, &C, wr, wi, NULL, &ld, NULL, &ld, work, &lwork, &info, 1, 1);
        double m = 0;
        for (int i = 0; i < C; i++)
            m = fmax(m, hypot(wr[i], wi[i]));
        radius[g] = m;
    }
    strand_free(a);
    if (info != 0)
        STRAND_FAIL(STRAND_ERR_NUMERIC, "probe jacobian: LAPACK dgeev failed (info %d) on W", info);
    return STRAND_OK;
}

static int check_request(const strand_model *model, const strand_shard *shard,
                         const strand_probe_jacobian_options *o) {
    if (o->block < 0 || o->block >= model->n_layers)
        STRAND_FAIL(STRAND_ERR_INPUT, "--block %d: the model has %d block%s (0 to %d)", o->block,
                    model->n_layers, model->n_layers == 1 ? "" : "s", model->n_layers - 1);
    const strand_mixer *mixer = &model->blocks[o->block].mixer;
    if (!strand_recurrent_probeable(mixer))
        STRAND_FAIL(
            STRAND_ERR_INPUT,
            "--block %d is a %s block: strand probe jacobian needs a recurrent block (rnn, lstm, gru, "
            "ornn)",
            o->block, mixer->ops->name);
    const strand_recurrent *r = mixer->state;
    if (o->lstm_path != STRAND_PROBE_LSTM_FULL && strcmp(r->name, "lstm") != 0)
        STRAND_FAIL(STRAND_ERR_INPUT, "--lstm-path cell applies to lstm blocks only; block %d is %s",
                    o->block, r->name);
    if (o->span < 1)
        STRAND_FAIL(STRAND_ERR_INPUT, "--span %lld: give at least 1 position", (long long)o->span);
    if (o->position < 0)
        STRAND_FAIL(STRAND_ERR_INPUT, "--position %lld: give a position >= 0", (long long)o->position);
    if (o->position + o->span >= shard->window)
        STRAND_FAIL(STRAND_ERR_INPUT,
                    "--position %lld --span %lld ends at position %lld, past the window's last position %lld "
                    "(a window of %lld tokens)",
                    (long long)o->position, (long long)o->span, (long long)(o->position + o->span),
                    (long long)shard->window - 1, (long long)shard->window);
    return STRAND_OK;
}

int strand_probe_jacobian(const strand_model *model, const strand_shard *shard,
                          const strand_probe_jacobian_options *o, strand_probe_jacobian_result *result) {
    memset(result, 0, sizeof *result);
    MPI_Comm comm = shard->grid->sp_comm;
    /* the arguments are the same on every rank, and so is the refusal */
    STRAND_CALL(strand_agree(comm, check_request(model, shard, o)));
    const strand_mixer *mixer = &model->blocks[o->block].mixer;
    const strand_recurrent *r = mixer->state;
    const int C = r->C, cell = o->lstm_path == STRAND_PROBE_LSTM_CELL;
    const int first = cell ? C : 0, n = cell ? C : r->S;
    snprintf(result->mixer, sizeof result->mixer, "%s", r->name);
    result->state = cell ? "c" : r->S == 2 * C ? "(h, c)" : "h";
    result->n = n;
    result->gates = r->G;
    result->gate_names = r->G == 4 ? "i f o g" : r->G == 3 ? "r z n" : "W";
    result->decay_formula = r->cell->decay_formula;
    const int root = shard->grid->sp_rank == 0;
    result->sigma = strand_alloc(sizeof(double) * (size_t)n, "probe singular values");
    if (root) result->jacobian = strand_alloc(sizeof(double) * (size_t)n * (size_t)n, "probe jacobian");
    STRAND_CALL(
        strand_agree(comm, !result->sigma || (root && !result->jacobian) ? STRAND_ERR_NOMEM : STRAND_OK));
    double decay[2];
    STRAND_CALL(strand_recurrent_span_jacobian(mixer, model->params, shard, o->position, o->span, first, n,
                                               result->jacobian, decay));
    strand_dense_grid grid;
    int status = strand_dense_grid_init(&grid, comm, 0, 0);
    if (status == STRAND_OK)
        status = strand_dense_singular_values(&grid, n, n, result->jacobian, 0, result->sigma);
    strand_dense_grid_free(&grid);
    STRAND_CALL(status);
    /* W as the forward used it (ornn: the Cayley transform of S) */
    const real_t *w = r->cell->custom_w ? r->w_eff : model->params + r->w_off;
    STRAND_CALL(strand_agree(comm, root ? gate_radii(w, r->G, C, result->radius) : STRAND_OK));
    STRAND_CALL_MPI(MPI_Bcast(result->radius, 4, MPI_DOUBLE, 0, comm));
    result->sigma_max = result->sigma[0];
    result->sigma_min = result->sigma[n - 1];
    result->measured_decay = pow(result->sigma_max, 1.0 / (double)o->span);
    result->mean_factor = decay[0] / decay[1];
    result->predicted_decay = result->mean_factor * (r->cell->decay_times_radius ? result->radius[0] : 1.0);
    return STRAND_OK;
}
