/* strand bench: micro-benchmarks of strand's kernels under mpirun, dispatched from a table like the
 * top-level commands. Each prints one JSON line on rank 0. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} bench_entry;

static const bench_entry benches[] = {
    {"fftconv", bench_conv,
     "distributed FFT long convolution (bare, or a long-convolution mixer), forward and backward"},
    {"conv", bench_conv, "the same as fftconv"},
    {"ring", bench_attn, "ring attention over the sequence-parallel group"},
    {"mixer", bench_mixer, "any registered mixer's forward and backward, next to same-run sgemm and sgemv"},
    {"rnn", bench_rnn, "a recurrent cell (rnn, lstm, gru, ornn): bench mixer for the recurrent mixers"},
    {"scan", bench_scan,
     "a scan mixer (mamba, mingru, minlstm, s4d): bench mixer plus the scan's bytes sent and read floor"},
    {"train", bench_train,
     "whole training steps of a configured model (every layer, loss, backward, all-reduce, AdamW)"},
};
enum { N_BENCHES = sizeof benches / sizeof *benches };

static void bench_usage(FILE *out) {
    fprintf(out, "usage: mpirun -n N strand bench <benchmark> [options]\n\nbenchmarks:\n");
    for (int i = 0; i < N_BENCHES; i++)
        fprintf(out, "  %-8s %s\n", benches[i].name, benches[i].help);
    fprintf(out, "\n'strand bench <benchmark> --help' describes its options.\n");
}

int cmd_bench(int argc, char **argv) {
    const int rank = cli_world_rank();
    if (argc < 2) {
        if (rank == 0) bench_usage(stderr);
        return CLI_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (rank == 0) bench_usage(stdout);
        return CLI_OK;
    }
    for (int i = 0; i < N_BENCHES; i++)
        if (strcmp(argv[1], benches[i].name) == 0) return benches[i].run(argc - 1, argv + 1);
    cli_error("bench", "unknown benchmark '%s' (see strand bench --help)", argv[1]);
    return CLI_USAGE;
}
