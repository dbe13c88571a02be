/* strand grad: the loss and every parameter's gradient for the batch one training step uses,
 * from a checkpoint's state, at any (DP, SP). For checking a run against a reference
 * implementation, or one layout against another. */
#include "cli.h"

#include "strand/ckpt.h"
#include "strand/config.h"
#include "strand/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void grad_usage(FILE *out) {
    fprintf(out,
            "usage: mpirun -n N strand grad --checkpoint FILE --out GRADS.h5 [--data DATASET] [--step N]\n"
            "                               [--set section.key=value ...] [--quiet]\n\n"
            "Loads the state of a checkpoint and computes the mean loss and the unclipped gradient of\n"
            "every parameter for the batch that training step N uses (the same windows as training),\n"
            "then writes them to GRADS.h5: /grads/<layer>/<name> in the parameters' natural shapes,\n"
            "root attributes loss, grad_norm, step. The configuration is the checkpoint's; any\n"
            "dp x sp works (train.accum_steps is derived so that the step takes the same windows).\n\n"
            "options:\n"
            "  --checkpoint FILE    a checkpoint, or a run or checkpoints directory (its latest)\n"
            "  --out FILE           gradient file to write (replaced atomically)\n"
            "  --data FILE          dataset (default: the checkpoint's data.path)\n"
            "  --step N             1-based step number as in metrics.jsonl (default: the step after\n"
            "                       the checkpoint, which continues from it)\n"
            "  --set KEY=VALUE      override a key, e.g. --set parallel.sp=2 (keys that change the\n"
            "                       math are refused)\n"
            "  --quiet              no summary line\n");
}

int cmd_grad(int argc, char **argv) {
    const char *name = "grad";
    const char *checkpoint = NULL, *out = NULL, *data = NULL;
    int64_t step = 0;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            if (cli_world_rank() == 0) grad_usage(stdout);
            return CLI_OK;
        } else if (strcmp(arg, "--quiet") == 0) {
            quiet = 1;
        } else if (strcmp(arg, "--checkpoint") == 0 || strcmp(arg, "--out") == 0 ||
                   strcmp(arg, "--data") == 0 || strcmp(arg, "--step") == 0 || strcmp(arg, "--set") == 0) {
            if (i + 1 >= argc) {
                cli_error(name, "%s needs a value (see strand grad --help)", arg);
                return CLI_USAGE;
            }
            const char *value = argv[++i];
            if (strcmp(arg, "--checkpoint") == 0) checkpoint = value;
            if (strcmp(arg, "--out") == 0) out = value;
            if (strcmp(arg, "--data") == 0) data = value;
            if (strcmp(arg, "--step") == 0) {
                char *end = NULL;
                long long n = strtoll(value, &end, 10);
                if (!*value || *end || n < 1) {
                    cli_error(name, "--step needs a step number >= 1, not '%s'", value);
                    return CLI_USAGE;
                }
                step = n;
            }
        } else {
            cli_error(name, "unknown option '%s' (see strand grad --help)", arg);
            return CLI_USAGE;
        }
    }
    if (!checkpoint || !out) {
        cli_error(name, "--checkpoint and --out are required (see strand grad --help)");
        return CLI_USAGE;
    }
    char path[STRAND_CKPT_PATH_BYTES];
    strand_config config;
    if (cli_checkpoint_config(checkpoint, data, argc, argv, path, sizeof path, &config) != STRAND_OK)
        return cli_report(name);
    strand_grad_result result;
    if (strand_train_grad(&config, MPI_COMM_WORLD, path, step, out, &result) != STRAND_OK)
        return cli_report(name);
    if (!quiet && cli_world_rank() == 0) {
        printf("step %lld from %s (step %lld): loss %.9g, gradient norm %.9g, %lld parameters -> %s\n",
               (long long)result.step, path, (long long)result.checkpoint_step, result.loss, result.grad_norm,
               (long long)result.parameters, out);
        fflush(stdout);
    }
    return CLI_OK;
}
