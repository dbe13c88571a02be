/* strand sample: generate bases after a prompt with a checkpoint's model. */
#include "cli.h"

#include "strand/ckpt.h"
#include "strand/config.h"
#include "strand/sample.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void sample_usage(FILE *out) {
    fprintf(out, "usage: mpirun -n N strand sample --checkpoint FILE --prompt ACGT... --length N [--seed S]\n"
                 "                                 [--temperature T] [--mode incremental|recompute]\n"
                 "                                 [--set key=value ...]\n\n"
                 "Generates N bases after the prompt and prints prompt + generated bases as FASTA. The draw\n"
                 "for position t depends only on (seed, t) and the model's output, so both modes and any\n"
                 "number of ranks give the same bases. A mixer whose size depends on the training window\n"
                 "(a key where 0 means train.seq_len) keeps the training window's.\n\n"
                 "modes:\n"
                 "  incremental (default)  rank 0 feeds one position at a time through each mixer's step\n"
                 "                         mode, plus the MLPs and head\n"
                 "  recompute              re-runs the causal forward over the whole window (sharded over\n"
                 "                         the ranks) for every base\n\n"
                 "cost per base, by mixer (incremental; recompute):\n");
    for (int i = 0; strand_mixer_at(i); i++) {
        const strand_mixer_ops *ops = strand_mixer_at(i);
        fprintf(out, "  %-8s %s; %s\n", ops->name, ops->step_cost ? ops->step_cost : "no step mode",
                ops->forward_cost ? ops->forward_cost : "?");
    }
    fprintf(out, "\noptions:\n"
                 "  --checkpoint FILE    a checkpoint, or a run or checkpoints directory (its latest)\n"
                 "  --prompt TEXT        A, C, G, T or N (either case), at least one base\n"
                 "  --length N           bases to generate\n"
                 "  --seed S             random seed (default 1)\n"
                 "  --temperature T      softmax temperature > 0 (default 1)\n"
                 "  --mode M             incremental (default) or recompute\n"
                 "  --set KEY=VALUE      override a key, e.g. --set fft.strategy=alltoall\n");
}

int cmd_sample(int argc, char **argv) {
    const char *name = "sample";
    strand_sample_options options = {NULL, NULL, 0, 1, 1.0, STRAND_SAMPLE_INCREMENTAL};
    const char *checkpoint = NULL;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            if (cli_world_rank() == 0) sample_usage(stdout);
            return CLI_OK;
        }
        const int known = strcmp(arg, "--checkpoint") == 0 || strcmp(arg, "--prompt") == 0 ||
                          strcmp(arg, "--length") == 0 || strcmp(arg, "--seed") == 0 ||
                          strcmp(arg, "--temperature") == 0 || strcmp(arg, "--mode") == 0 ||
                          strcmp(arg, "--set") == 0;
        if (!known) {
            cli_error(name, "unknown option '%s' (see strand sample --help)", arg);
            return CLI_USAGE;
        }
        if (i + 1 >= argc) {
            cli_error(name, "%s needs a value (see strand sample --help)", arg);
            return CLI_USAGE;
        }
        const char *value = argv[++i];
        char *end = NULL;
        if (strcmp(arg, "--checkpoint") == 0) checkpoint = value;
        if (strcmp(arg, "--prompt") == 0) options.prompt = value;
        if (strcmp(arg, "--length") == 0) {
            long long n = strtoll(value, &end, 10);
            if (!*value || *end || n < 1) {
                cli_error(name, "--length needs a whole number >= 1, not '%s'", value);
                return CLI_USAGE;
            }
            options.length = n;
        }
        if (strcmp(arg, "--seed") == 0) {
            unsigned long long n = strtoull(value, &end, 10);
            if (!*value || *end || value[0] == '-') {
                cli_error(name, "--seed needs a whole number >= 0, not '%s'", value);
                return CLI_USAGE;
            }
            options.seed = n;
        }
        if (strcmp(arg, "--mode") == 0) {
            if (strcmp(value, "incremental") == 0) {
                options.mode = STRAND_SAMPLE_INCREMENTAL;
            } else if (strcmp(value, "recompute") == 0) {
                options.mode = STRAND_SAMPLE_RECOMPUTE;
            } else {
                cli_error(name, "--mode needs incremental or recompute, not '%s'", value);
                return CLI_USAGE;
            }
        }
        if (strcmp(arg, "--temperature") == 0) {
            double t = strtod(value, &end);
            if (!*value || *end || !(t > 0) || t > 1e6) {
                cli_error(name, "--temperature needs a number > 0, not '%s'", value);
                return CLI_USAGE;
            }
            options.temperature = t;
        }
    }
    if (!checkpoint || !options.prompt || options.length == 0) {
        cli_error(name, "--checkpoint, --prompt and --length are required (see strand sample --help)");
        return CLI_USAGE;
    }
    char path[STRAND_CKPT_PATH_BYTES];
    strand_config config;
    if (cli_checkpoint_config(checkpoint, NULL, argc, argv, path, sizeof path, &config) != STRAND_OK)
        return cli_report(name);
    options.checkpoint = path;
    char *out = NULL;
    int status = strand_sample(&config, MPI_COMM_WORLD, &options, &out);
    if (status == STRAND_OK && cli_world_rank() == 0) {
        printf(">sample seed=%llu temperature=%g prompt_length=%zu length=%lld checkpoint=%s\n",
               (unsigned long long)options.seed, options.temperature, strlen(options.prompt),
               (long long)options.length, path);
        const size_t n = strlen(out);
        for (size_t i = 0; i < n; i += 80)
            printf("%.80s\n", out + i);
        fflush(stdout);
    }
    free(out);
    return status == STRAND_OK ? CLI_OK : cli_report(name);
}
