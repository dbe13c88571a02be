/* Per-rank memory model (see memory_model.h): the model's and the trainer's memory plan, built by
 * the same declarations that allocate it, summed per component; plus what is not strand's own
 * allocation (MPI's allreduce scratch, the process baseline). */
#define _POSIX_C_SOURCE 200809L
#include "strand/memory_model.h"

#include "strand/model.h"
#include "strand/train.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Scratch Open MPI's MPI_Allreduce of the gradient takes beyond the array itself: measured (Open
 * MPI 4.1, 16.8M and 8.4M floats) as half the array at 2, 3 and 4 ranks, which is what the ring
 * algorithm's two blocks of count/world values take at 4; on larger worlds those blocks shrink. */
static int64_t allreduce_scratch(int64_t bytes, int64_t world) {
    if (world < 2) return 0;
    return world <= 4 ? bytes / 2 : 2 * bytes / world;
}

static int check_grid(const strand_config *c, int sp, int dp, int layout) {
    if (sp < 1 || dp < 1)
        STRAND_FAIL(STRAND_ERR_CONFIG, "memory model: a grid of sp = %d x dp = %d ranks is empty", sp, dp);
    const int64_t minimum = layout == STRAND_LAYOUT_ZIGZAG ? 2 * (int64_t)sp : sp;
    if (c->seq_len < minimum)
        STRAND_FAIL(STRAND_ERR_CONFIG,
                    "train.seq_len = %lld is smaller than the %d ranks of a sequence-parallel group%s",
                    (long long)c->seq_len, sp,
                    layout == STRAND_LAYOUT_ZIGZAG ? " times 2 (zigzag layout)" : "");
    return STRAND_OK;
}

/* The SP rank with the largest shard: the most loaded one (the first of them). */
static int most_loaded_rank(const strand_shard *shard, int sp) {
    int best = 0;
    for (int r = 1; r < sp; r++)
        if (shard->shard_lengths[r] > shard->shard_lengths[best]) best = r;
    return best;
}

/* The model's and the trainer's plan for this shard, summed, plus MPI's allreduce scratch. */
static int fill_report(const strand_config *config, const strand_shard *shard, int sp, int dp,
                       strand_memory_report *out, strand_plan *keep) {
    strand_plan plan;
    int64_t parameters = 0;
    int status = strand_model_plan(config, shard, &plan, &parameters);
    if (status == STRAND_OK) {
        strand_train_buffers buffers;
        status = strand_train_plan(&plan, parameters, shard->T, &buffers);
    }
    if (status != STRAND_OK) {
        strand_plan_free(&plan);
        return status;
    }
    out->sp = sp, out->dp = dp, out->layout = shard->layout, out->rows = shard->T;
    out->parameters = parameters;
    out->shared_mixers = plan.share;
    out->conv_strategy = plan.conv_strategy;
    strand_plan_bytes(&plan, out->bytes);
    out->planned = strand_plan_bytes(&plan, NULL);
    out->bytes[STRAND_MEM_GRADS] += allreduce_scratch(parameters * (int64_t)sizeof(real_t), sp * (int64_t)dp);
    /* layout.c's table of every rank's shard length */
    out->bytes[STRAND_MEM_DATA] += (sp * 8 + 63) / 64 * 64;
    if (keep)
        *keep = plan;
    else
        strand_plan_free(&plan);
    return STRAND_OK;
}

int strand_memory_estimate(const strand_config *config, int sp, int dp, strand_memory_report *out) {
    memset(out, 0, sizeof *out);
    const int layout = strand_train_layout(config);
    STRAND_CALL(check_grid(config, sp, dp, layout));
    /* A grid that does not exist: no communicator; the most loaded rank's shard. */
    strand_grid grid;
    memset(&grid, 0, sizeof grid);
    grid.world = grid.sp_comm = grid.dp_comm = MPI_COMM_NULL;
    grid.sp_size = sp, grid.dp_size = dp, grid.world_size = sp * dp;
    strand_shard shard;
    STRAND_CALL(strand_shard_init(&shard, &grid, config->seq_len, layout));
    grid.sp_rank = most_loaded_rank(&shard, sp);
    strand_shard_free(&shard);
    int status = strand_shard_init(&shard, &grid, config->seq_len, layout);
    if (status == STRAND_OK) status = fill_report(config, &shard, sp, dp, out, NULL);
    strand_shard_free(&shard);
    STRAND_CALL(status);
    strand_memory_set_baseline(out, STRAND_MEMORY_BASELINE_DEFAULT);
    return STRAND_OK;
}

int strand_memory_estimate_here(const strand_config *config, const strand_shard *shard,
                                strand_memory_report *out, strand_plan *plan) {
    memset(out, 0, sizeof *out);
    STRAND_CALL(fill_report(config, shard, shard->grid->sp_size, shard->grid->dp_size, out, plan));
    strand_memory_set_baseline(out, STRAND_MEMORY_BASELINE_DEFAULT);
    return STRAND_OK;
}

void strand_memory_set_baseline(strand_memory_report *report, int64_t bytes) {
    report->bytes[STRAND_MEM_BASELINE] = bytes;
    report->total = 0;
    for (int i = 0; i < STRAND_MEM_COMPONENTS; i++)
        report->total += report->bytes[i];
}

/* ---- baseline ---- */

/* What training touches after the dry run's point (config parsed, MPI initialised) outside
 * strand's buffers: HDF5 and its MPI-IO driver on the first read, OpenBLAS's GEMM buffer, FFTW's
 * plans and twiddles, MPI's collective scratch and the pages of program text the step runs.
 * Calibrated as measured peak - (dry-run VmRSS + strand's buffers) over the nine configurations of
 * tests/memory/test_memory_model.sh (float, Open MPI 4.1, 1-4 ranks): 8.4 to 12.7 MB, median
 * 10.9 MB; a tiny 1-rank model (d_model 16, 256 tokens) gave 8 MB. */
enum { TOUCHED_LATER_BYTES = 11 * 1024 * 1024 };

int strand_memory_process_baseline(int64_t *bytes) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) STRAND_FAIL(STRAND_ERR_IO, "cannot read /proc/self/status: %s", strerror(errno));
    char line[256];
    long long kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kib = strtoll(line + 6, NULL, 10);
    fclose(f);
    if (kib < 0) STRAND_FAIL(STRAND_ERR_IO, "/proc/self/status has no VmRSS line");
    *bytes = (int64_t)kib * 1024 + TOUCHED_LATER_BYTES;
    return STRAND_OK;
}

const char *strand_memory_component_name(int component) {
    static const char *const names[STRAND_MEM_COMPONENTS] = {
        "params",       "grads",  "adamw", "activations", "block_inputs", "head",
        "grad_scratch", "mixers", "fft",   "ring",        "data",         "baseline"};
    return component >= 0 && component < STRAND_MEM_COMPONENTS ? names[component] : "?";
}
