/* End-to-end training tests under MPI.
 *   test_train sharding FASTA   the loss of every step at SP = world size equals a single-rank
 *                               run; at 4 ranks DP=2 x SP=2 equals SP=4 with twice the accumulation
 *   test_train learning         a periodic sequence is learned below 0.1 bits/base
 *   test_train nan              a NaN seen by one rank stops every rank with the step number
 *   test_train loader FASTA     each rank's piece, gathered, is the window; reverse-complement
 *                               windows are the complement of the reversed window */
#define _POSIX_C_SOURCE 200809L
#include "test_tmpdir.h"
#include "test_util.h"

#include "strand/config.h"
#include "strand/dataset.h"
#include "data/loader.h"
#include "strand/train.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int world_rank, world_size;
static char tmpdir[256];

/* Rank 0 converts FASTA to a dataset; returns the agreed status. */
static int prep(const char *fasta, const char *out, double val_fraction) {
    int status = STRAND_OK;
    if (world_rank == 0) {
        const char *inputs[] = {fasta};
        strand_prep_options options = {
            .inputs = inputs, .n_inputs = 1, .output = out, .val_fraction = val_fraction};
        strand_prep_stats stats;
        status = strand_prep_run(&options, &stats);
        if (status) fprintf(stderr, "prep failed: %s\n", strand_error_message());
    }
    return strand_agree(MPI_COMM_WORLD, status);
}

static void base_config(strand_config *config, const char *data) {
    strand_config_defaults(config);
    const char *settings[] = {"model.d_model=32",  "model.layers=conv,conv", "model.conv_kernel=4",
                              "train.steps=20",    "train.warmup_steps=5",   "train.lr=3e-3",
                              "train.log_every=5", "train.eval_windows=0",   "model.mlp_hidden=64"};
    for (size_t i = 0; i < sizeof settings / sizeof *settings; i++)
        strand_config_set(config, settings[i]);
    snprintf(config->data_path, sizeof config->data_path, "%s", data);
}

static int run(const strand_config *config, MPI_Comm comm, double *history) {
    strand_train_options options = {.quiet = 1, .no_run_dir = 1, .loss_history = history};
    strand_train_result result;
    int status = strand_train(config, comm, &options, &result);
    if (status != STRAND_OK && world_rank == 0) fprintf(stderr, "train failed: %s\n", strand_error_message());
    return status;
}

static double max_relative_difference(const double *a, const double *b, int n) {
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]) / fmax(fabs(a[i]), 1e-30);
        if (!(d <= worst)) worst = d; /* NaN propagates */
    }
    return worst;
}

static void test_sharding(const char *fasta) {
    char data[512];
    snprintf(data, sizeof data, "%s/lambda.h5", tmpdir);
    CHECK(prep(fasta, data, 0.0) == STRAND_OK);
    strand_config config;
    base_config(&config, data);
    config.seq_len = 1001; /* uneven shards at 2, 3 and 4 ranks */
    double sharded[20], single[20];
    /* The whole world as one SP group. */
    CHECK(run(&config, MPI_COMM_WORLD, sharded) == STRAND_OK);
    /* Rank 0 alone as the reference. */
    if (world_rank == 0) {
        CHECK(run(&config, MPI_COMM_SELF, single) == STRAND_OK);
        double diff = max_relative_difference(sharded, single, 20);
        fprintf(stderr,
                "SP=%d vs SP=1: loss step 1 %.9g, step 20 %.9g vs %.9g, max relative difference %.3g\n",
                world_size, sharded[0], sharded[19], single[19], diff);
        CHECK_MSG(diff < 1e-5, "SP=%d loss differs from SP=1 by %.3g (relative)", world_size, diff);
        CHECK_MSG(sharded[19] < sharded[0] - 0.01, "loss did not fall: %.6f -> %.6f", sharded[0],
                  sharded[19]);
    }
    if (world_size == 4) {
        /* DP=2 x SP=2 with one window each equals SP=4 with two accumulated windows. */
        double dp_sp[20], sp_accum[20];
        strand_config a = config, b = config;
        a.dp = 2, a.sp = 2, a.accum_steps = 1;
        b.dp = 1, b.sp = 4, b.accum_steps = 2;
        CHECK(run(&a, MPI_COMM_WORLD, dp_sp) == STRAND_OK);
        CHECK(run(&b, MPI_COMM_WORLD, sp_accum) == STRAND_OK);
        double diff = max_relative_difference(dp_sp, sp_accum, 20);
        if (world_rank == 0)
            fprintf(stderr, "DP=2xSP=2 vs SP=4 accum 2: step 20 %.9g vs %.9g, max relative difference %.3g\n",
                    dp_sp[19], sp_accum[19], diff);
        CHECK_MSG(diff < 1e-5, "DP=2 x SP=2 differs from SP=4 x accum 2 by %.3g", diff);
    }
}

/* A random 8-base motif repeated: every base is predictable from the previous 7, which lie in the
 * receptive field of two kernel-4 convolutions (1 + 3 + 3 positions back = 7). */
static void test_learning(void) {
    char fasta[512], data[512];
    snprintf(fasta, sizeof fasta, "%s/periodic.fa", tmpdir);
    snprintf(data, sizeof data, "%s/periodic.h5", tmpdir);
    if (world_rank == 0) {
        FILE *f = fopen(fasta, "w");
        const char motif[] = "ACGGTCAT";
        fprintf(f, ">periodic synthetic\n");
        for (int i = 0; i < 40000; i++) {
            fputc(motif[i % 8], f);
            if (i % 80 == 79) fputc('\n', f);
        }
        fputc('\n', f);
        fclose(f);
    }
    CHECK(prep(fasta, data, 0.1) == STRAND_OK);
    strand_config config;
    base_config(&config, data);
    config.seq_len = 512;
    config.steps = 150;
    config.warmup_steps = 10;
    config.eval_windows = 4;
    strand_train_options options = {.quiet = 1, .no_run_dir = 1};
    strand_train_result result;
    int status = strand_train(&config, MPI_COMM_WORLD, &options, &result);
    CHECK(status == STRAND_OK);
    if (world_rank == 0)
        fprintf(stderr, "periodic: bits/base %.4f -> %.4f, validation %.4f\n", result.first_bpb,
                result.final_bpb, result.val_bpb);
    CHECK_MSG(result.final_bpb < 0.1, "final bits/base %.4f is not below 0.1", result.final_bpb);
    CHECK_MSG(result.val_bpb < 0.1, "validation bits/base %.4f is not below 0.1", result.val_bpb);
    CHECK(result.first_bpb > 1.5);
}

static void test_nan(const char *fasta) {
    char data[512];
    snprintf(data, sizeof data, "%s/lambda.h5", tmpdir);
    CHECK(prep(fasta, data, 0.0) == STRAND_OK);
    strand_config config;
    base_config(&config, data);
    config.seq_len = 256;
    setenv("STRAND_FAULT_NAN_STEP", "7", 1);
    char rank_text[16];
    snprintf(rank_text, sizeof rank_text, "%d", world_size - 1);
    setenv("STRAND_FAULT_RANK", rank_text, 1);
    double history[20];
    int status = run(&config, MPI_COMM_WORLD, history);
    unsetenv("STRAND_FAULT_NAN_STEP");
    CHECK(status == STRAND_ERR_NUMERIC);
    CHECK_MSG(strstr(strand_error_message(), "step 7") != NULL, "message: %s", strand_error_message());
}

static void test_loader(const char *fasta) {
    char data[512];
    snprintf(data, sizeof data, "%s/lambda.h5", tmpdir);
    CHECK(prep(fasta, data, 0.1) == STRAND_OK);
    strand_dataset dataset;
    CHECK(strand_dataset_open(&dataset, data, MPI_COMM_WORLD) == STRAND_OK);
    const int64_t seq_len = 1003;
    strand_loader loader, rc_loader;
    CHECK(strand_loader_init(&loader, &dataset, seq_len, 42, 0) == STRAND_OK);
    CHECK(strand_loader_init(&rc_loader, &dataset, seq_len, 42, 1) == STRAND_OK);
    int64_t start = 0, count = 0;
    strand_split_range(seq_len, world_size, world_rank, &start, &count);
    strand_token_t *piece = malloc(sizeof(strand_token_t) * ((size_t)count + 1));
    strand_token_t *whole = malloc(sizeof(strand_token_t) * ((size_t)seq_len + 1));
    int *counts = malloc(sizeof(int) * (size_t)world_size),
        *displs = malloc(sizeof(int) * (size_t)world_size);
    for (int r = 0; r < world_size; r++) {
        int64_t s0 = 0, n0 = 0;
        strand_split_range(seq_len, world_size, r, &s0, &n0);
        counts[r] = (int)n0;
        displs[r] = (int)s0;
    }
    int reversed_seen = 0, forward_seen = 0;
    for (int64_t step = 0; step < 16; step++) {
        strand_window w = strand_loader_train_window(&loader, step, 0);
        strand_window w_rc = strand_loader_train_window(&rc_loader, step, 0);
        /* The window is a function of (seed, step, index) only: same offset with or without
         * augmentation, and inside one training range. */
        CHECK(w.offset == w_rc.offset && w.reverse == 0);
        int inside = 0;
        for (int64_t i = 0; i < dataset.n_train; i++)
            if (w.offset >= dataset.train[i].offset &&
                w.offset + seq_len + 1 <= dataset.train[i].offset + dataset.train[i].length)
                inside = 1;
        CHECK_MSG(inside, "window at %lld leaves the training split", (long long)w.offset);
        /* Pieces gathered over the ranks are the window read by one reader. */
        CHECK(strand_loader_read(&loader, w, start, count, piece) == STRAND_OK);
        MPI_Allgatherv(piece, (int)count, STRAND_MPI_TOKEN, whole, counts, displs, STRAND_MPI_TOKEN,
                       MPI_COMM_WORLD);
        strand_token_t *expect = malloc(sizeof(strand_token_t) * ((size_t)seq_len + 1));
        CHECK(strand_dataset_read(&dataset, w.offset, seq_len + 1, expect) == STRAND_OK);
        CHECK(memcmp(whole, expect, sizeof *whole * (size_t)seq_len) == 0);
        CHECK(piece[count] == expect[start + count]); /* the target of the last local position */
        /* Reverse complement: position i is the complement of position seq_len - i. */
        CHECK(strand_loader_read(&rc_loader, w_rc, start, count, piece) == STRAND_OK);
        int bad = 0;
        for (int64_t i = 0; i <= count; i++) {
            strand_token_t want =
                w_rc.reverse ? strand_token_complement(expect[seq_len - (start + i)]) : expect[start + i];
            if (piece[i] != want) bad++;
        }
        CHECK_MSG(bad == 0, "step %lld: %d tokens differ (reverse %d)", (long long)step, bad, w_rc.reverse);
        reversed_seen += w_rc.reverse;
        forward_seen += !w_rc.reverse;
        free(expect);
    }
    CHECK(reversed_seen > 0 && forward_seen > 0);
    /* Validation windows are spread over the validation split. */
    strand_window v;
    CHECK(strand_loader_val_window(&loader, 0, 4, &v) == 1);
    CHECK(v.offset >= dataset.val[0].offset);
    free(piece), free(whole), free(counts), free(displs);
    strand_loader_free(&loader);
    strand_loader_free(&rc_loader);
    strand_dataset_close(&dataset);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    test_tmpdir_make(tmpdir, (int)sizeof tmpdir, "train");
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "sharding") == 0 && argc > 2)
        test_sharding(argv[2]);
    else if (strcmp(mode, "learning") == 0)
        test_learning();
    else if (strcmp(mode, "nan") == 0 && argc > 2)
        test_nan(argv[2]);
    else if (strcmp(mode, "loader") == 0 && argc > 2)
        test_loader(argv[2]);
    else
        fprintf(stderr, "usage: test_train sharding|learning|nan|loader [FASTA]\n");
    test_tmpdir_remove(tmpdir);
    int status = test_finish("test_train");
    int any = 0;
    MPI_Allreduce(&status, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Finalize();
    return any;
}
