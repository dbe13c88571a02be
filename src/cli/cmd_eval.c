/* strand eval: bits per base of a checkpoint's model on the validation split, and the loss as a
 * function of the position in the window (how much of the long context the model uses). */
#include "cli.h"

#include "strand/ckpt.h"
#include "strand/config.h"
#include "strand/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void eval_usage(FILE *out) {
    fprintf(out,
            "usage: mpirun -n N strand eval --checkpoint FILE [--data DATASET] [--windows N]\n"
            "                               [--per-position FILE.csv] [--bin N] [--set key=value ...]\n\n"
            "Bits per base of the checkpoint's model on the validation split of the dataset: N windows\n"
            "of train.seq_len tokens spread evenly over the split (the windows training evaluates at its\n"
            "end with train.eval_windows = N). Runs at any dp x sp.\n\n"
            "options:\n"
            "  --checkpoint FILE    a checkpoint, or a run or checkpoints directory (its latest)\n"
            "  --data FILE          dataset (default: the checkpoint's data.path)\n"
            "  --windows N          validation windows (default: the checkpoint's train.eval_windows, or 8)\n"
            "  --per-position FILE  CSV of the mean loss by position in the window: position_start,\n"
            "                       position_end, loss_nats, bits_per_base\n"
            "  --bin N              positions per CSV row (default: 1 up to 4096 positions, else\n"
            "                       seq_len / 4096)\n"
            "  --set KEY=VALUE      override a key, e.g. --set parallel.sp=2\n");
}

static int parse_count(const char *text, int64_t *value) {
    char *end = NULL;
    long long n = strtoll(text, &end, 10);
    if (!*text || *end || n < 1) return -1;
    *value = n;
    return 0;
}

int cmd_eval(int argc, char **argv) {
    const char *name = "eval";
    const char *checkpoint = NULL, *data = NULL, *csv = NULL;
    int64_t windows = 0, bin = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            if (cli_world_rank() == 0) eval_usage(stdout);
            return CLI_OK;
        }
        const int takes_value = strcmp(arg, "--checkpoint") == 0 || strcmp(arg, "--data") == 0 ||
                                strcmp(arg, "--windows") == 0 || strcmp(arg, "--per-position") == 0 ||
                                strcmp(arg, "--bin") == 0 || strcmp(arg, "--set") == 0;
        if (!takes_value) {
            cli_error(name, "unknown option '%s' (see strand eval --help)", arg);
            return CLI_USAGE;
        }
        if (i + 1 >= argc) {
            cli_error(name, "%s needs a value (see strand eval --help)", arg);
            return CLI_USAGE;
        }
        const char *value = argv[++i];
        if (strcmp(arg, "--checkpoint") == 0) checkpoint = value;
        if (strcmp(arg, "--data") == 0) data = value;
        if (strcmp(arg, "--per-position") == 0) csv = value;
        if ((strcmp(arg, "--windows") == 0 && parse_count(value, &windows) != 0) ||
            (strcmp(arg, "--bin") == 0 && parse_count(value, &bin) != 0)) {
            cli_error(name, "%s needs a whole number >= 1, not '%s'", arg, value);
            return CLI_USAGE;
        }
    }
    if (!checkpoint) {
        cli_error(name, "--checkpoint is required (see strand eval --help)");
        return CLI_USAGE;
    }
    /* A directory means its latest checkpoint; its configuration, then the overrides. */
    char path[STRAND_CKPT_PATH_BYTES];
    strand_config config;
    if (cli_checkpoint_config(checkpoint, data, argc, argv, path, sizeof path, &config) != STRAND_OK)
        return cli_report(name);
    if (windows == 0) windows = config.eval_windows > 0 ? config.eval_windows : 8;
    if (bin == 0) bin = config.seq_len <= 4096 ? 1 : config.seq_len / 4096;
    strand_eval_result result;
    if (strand_train_eval(&config, MPI_COMM_WORLD, path, windows, csv, bin, &result) != STRAND_OK)
        return cli_report(name);
    if (cli_world_rank() == 0) {
        printf(
            "validation bits/base %.6f over %lld windows of %lld tokens (%s, step %lld, %lld parameters)\n",
            result.val_bpb, (long long)result.windows, (long long)config.seq_len, path,
            (long long)result.checkpoint_step, (long long)result.parameters);
        if (fabs(result.bases_per_token - 1.0) > 1e-12)
            printf("validation bits/token %.6f, %.4f bases per token\n", result.val_bits_per_token,
                   result.bases_per_token);
        if (!isnan(result.answer_accuracy))
            printf("answer_accuracy %.6f (argmax == target on the loss mask's positions)\n",
                   result.answer_accuracy);
        if (csv) printf("per-position loss: %s (bins of %lld positions)\n", csv, (long long)bin);
        fflush(stdout);
    }
    return CLI_OK;
}
