/* strand probe: measurements of a trained model. `strand probe jacobian`: the span Jacobian of a
 * recurrent block, its singular values and the decay per step; `strand probe gradient`: the
 * gradient signal g(k) from one position's loss back to the block-0 input (strand/probe.h). */
#include "cli.h"

#include "strand/ckpt.h"
#include "strand/config.h"
#include "strand/probe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void probe_usage(FILE *out) {
    fprintf(out,
            "usage: strand probe jacobian --checkpoint FILE --block L --span K [options]\n"
            "       strand probe gradient --checkpoint FILE [options]\n\n"
            "probes:\n"
            "  jacobian   the span Jacobian of a recurrent block, its singular values, and the decay\n"
            "             per step next to the classic prediction\n"
            "  gradient   the gradient signal g(k) = ||d loss_T / d x_(T-k)|| against k, and its decay\n");
}

static void jacobian_usage(FILE *out) {
    fprintf(out,
            "usage: mpirun -n N strand probe jacobian --checkpoint FILE --block L --span K [--position T]\n"
            "                 [--data DATASET] [--offset O] [--window W] [--tokens ACGT...]\n"
            "                 [--lstm-path full|cell] [--csv FILE] [--set key=value ...]\n\n"
            "The end-to-end Jacobian of block L's state over K positions after position T of one window,\n"
            "  J = d s_(T+K) / d s_T = J_(T+K) ... J_(T+1),  J_j = d s_j / d s_(j-1)\n"
            "at the states of a forward over the window (rnn, ornn: J_j = diag(phi'(a_j)) W), in double.\n"
            "The window is sharded over the N ranks as in training (DP = 1): each rank multiplies its part\n"
            "of the span, rank 0 combines the parts in order, and ScaLAPACK gives J's singular values on a\n"
            "BLACS grid over the ranks. Prints the largest and smallest singular values, the spectral\n"
            "radius of W (LAPACK dgeev; lstm and gru: of each C x C gate block), and the decay per step:\n"
            "measured sigma_max^(1/K), and predicted, the mean over the span of the cell's factor:\n"
            "  rnn   rho(W) x mean |phi'(a_j)|      (||J_j|| ~ rho(W) |phi'|, Pascanu et al. 2013)\n"
            "  ornn  max_i |phi'(a_j,i)|            (W orthogonal: ||J_j||_2 = max |phi'| exactly)\n"
            "  lstm  mean forget gate f_j           (the cell path dc_j / dc_(j-1) = diag(f_j))\n"
            "  gru   mean update gate z_j           (the kept fraction: dh_j / dh_(j-1) = diag(z_j) + ...)\n"
            "Blocks: rnn, lstm, gru, ornn (the state-passing recurrences). For lstm the state is (h, c):\n"
            "--lstm-path full (default) probes the whole 2C x 2C Jacobian d (h, c)_(T+K) / d (h, c)_T;\n"
            "--lstm-path cell the product of the c -> c blocks, diag(f), the constant-error path alone.\n\n"
            "options:\n"
            "  --checkpoint FILE    a checkpoint, or a run or checkpoints directory (its latest)\n"
            "  --block L            0-based index into model.layers\n"
            "  --span K             positions the Jacobian spans (>= 1)\n"
            "  --position T         the state the span starts from (default 0); T + K < the window\n"
            "  --data FILE          dataset of the window (default: the checkpoint's data.path)\n"
            "  --offset O           the window's first token in the dataset's /tokens (default: the start\n"
            "                       of the first training range); the window stays inside one range\n"
            "  --window W           tokens in the window (default: the checkpoint's train.seq_len)\n"
            "  --tokens BASES       the window given as bases (A, C, G, T, N) instead of the dataset's\n"
            "  --lstm-path P        full (default) or cell, for lstm blocks\n"
            "  --csv FILE           every singular value: index,singular_value\n"
            "  --set KEY=VALUE      override a key, e.g. --set parallel.layout=zigzag\n"
            "  --quiet              no summary\n");
}

static int parse_int64(const char *text, int64_t min, int64_t *value) {
    char *end = NULL;
    long long n = strtoll(text, &end, 10);
    if (!*text || *end || n < min) return -1;
    *value = n;
    return 0;
}

static int cmd_probe_jacobian(int argc, char **argv) {
    const char *name = "probe jacobian";
    const char *checkpoint = NULL, *data = NULL;
    strand_probe_options o = {.offset = -1, .jacobian = {.block = -1}};
    int64_t block = -1, span = 0, position = 0;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            if (cli_world_rank() == 0) jacobian_usage(stdout);
            return CLI_OK;
        }
        if (strcmp(arg, "--quiet") == 0) {
            quiet = 1;
            continue;
        }
        static const char *const valued[] = {"--checkpoint", "--block",  "--span",   "--position",
                                             "--data",       "--offset", "--window", "--tokens",
                                             "--lstm-path",  "--csv",    "--set",    NULL};
        int known = 0;
        for (int k = 0; valued[k]; k++)
            known |= strcmp(arg, valued[k]) == 0;
        if (!known) {
            cli_error(name, "unknown option '%s' (see strand probe jacobian --help)", arg);
            return CLI_USAGE;
        }
        if (i + 1 >= argc) {
            cli_error(name, "%s needs a value (see strand probe jacobian --help)", arg);
            return CLI_USAGE;
        }
        const char *value = argv[++i];
        int bad = 0;
        if (strcmp(arg, "--checkpoint") == 0) checkpoint = value;
        if (strcmp(arg, "--data") == 0) data = value;
        if (strcmp(arg, "--tokens") == 0) o.tokens = value;
        if (strcmp(arg, "--csv") == 0) o.csv = value;
        if (strcmp(arg, "--block") == 0) bad = parse_int64(value, 0, &block) || block > 1000000;
        if (strcmp(arg, "--span") == 0) bad = parse_int64(value, 1, &span);
        if (strcmp(arg, "--position") == 0) bad = parse_int64(value, 0, &position);
        if (strcmp(arg, "--offset") == 0) bad = parse_int64(value, 0, &o.offset);
        if (strcmp(arg, "--window") == 0) bad = parse_int64(value, 2, &o.window);
        if (bad) {
            cli_error(name, "%s needs a whole number >= %d, not '%s'", arg,
                      strcmp(arg, "--span") == 0     ? 1
                      : strcmp(arg, "--window") == 0 ? 2
                                                     : 0,
                      value);
            return CLI_USAGE;
        }
        if (strcmp(arg, "--lstm-path") == 0) {
            if (strcmp(value, "full") == 0) {
                o.jacobian.lstm_path = STRAND_PROBE_LSTM_FULL;
            } else if (strcmp(value, "cell") == 0) {
                o.jacobian.lstm_path = STRAND_PROBE_LSTM_CELL;
            } else {
                cli_error(name, "--lstm-path is full or cell, not '%s'", value);
                return CLI_USAGE;
            }
        }
    }
    if (!checkpoint || block < 0 || span < 1) {
        cli_error(name, "--checkpoint, --block and --span are required (see strand probe jacobian --help)");
        return CLI_USAGE;
    }
    if (o.tokens && (data || o.offset >= 0 || o.window > 0)) {
        cli_error(name, "--tokens gives the window: --data, --offset and --window do not apply");
        return CLI_USAGE;
    }
    o.jacobian.block = (int)block;
    o.jacobian.span = span;
    o.jacobian.position = position;
    char path[STRAND_CKPT_PATH_BYTES];
    strand_config config;
    if (cli_checkpoint_config(checkpoint, data, argc, argv, path, sizeof path, &config) != STRAND_OK)
        return cli_report(name);
    o.checkpoint = path;
    strand_probe_result result;
    const int status = strand_probe_run(&config, MPI_COMM_WORLD, &o, &result);
    const strand_probe_jacobian_result *j = &result.jacobian;
    if (status == STRAND_OK && !quiet && cli_world_rank() == 0) {
        printf(
            "block %d (%s, C = %d) of %s (step %lld): J = d %s_(t+k) / d %s_t, %d x %d, t = %lld, k = %lld\n",
            o.jacobian.block, j->mixer, config.d_model, path, (long long)result.checkpoint_step, j->state,
            j->state, j->n, j->n, (long long)position, (long long)span);
        if (result.offset >= 0)
            printf("window: %lld tokens from offset %lld of %s, over %d rank%s\n", (long long)result.window,
                   (long long)result.offset, config.data_path, result.sp, result.sp == 1 ? "" : "s");
        else
            printf("window: %lld given bases, over %d rank%s\n", (long long)result.window, result.sp,
                   result.sp == 1 ? "" : "s");
        printf("singular values: max %.10e, min %.10e\n", j->sigma_max, j->sigma_min);
        printf("spectral radius:");
        for (int g = 0; g < j->gates; g++)
            printf(" %s%c%s = %.6f", j->gates > 1 ? "rho(W_" : "rho(",
                   j->gates > 1 ? j->gate_names[2 * g] : 'W', ")", j->radius[g]);
        printf("\n");
        printf("decay per step: measured sigma_max^(1/k) = %.6f, predicted %.6f (%s; mean factor %.6f)\n",
               j->measured_decay, j->predicted_decay, j->decay_formula, j->mean_factor);
        if (o.csv) printf("singular values: %s\n", o.csv);
        fflush(stdout);
    }
    strand_probe_jacobian_free(&result.jacobian);
    return status == STRAND_OK ? CLI_OK : cli_report(name);
}

static void gradient_usage(FILE *out) {
    fprintf(
        out,
        "usage: mpirun -n N strand probe gradient --checkpoint FILE [--data DATASET] [--windows n]\n"
        "                 [--window W] [--position T] [--csv FILE] [--plot FILE.png] [--set key=value ...]\n"
        "                 [--quiet]\n\n"
        "The gradient signal g(k) = || d loss_T / d x_(T-k) ||, k = 0 .. T: x is the block-0 input (the\n"
        "embedding's output) and loss_T the loss at position T alone (the loss weights one-hot at T),\n"
        "averaged over n windows: consecutive windows of the dataset's validation ranges, or of its\n"
        "training ranges when no validation range holds one (the summary says which). The window is\n"
        "sharded over the N ranks as in training (DP = 1). Prints two least-squares fits of the mean\n"
        "over k >= 1 (k = 0 has the residual path's direct term): per step, r from ln g = a + k ln r;\n"
        "per decade, the slope s of log10 g against log10 k (g falls 10^-s-fold per decade of k).\n\n"
        "options:\n"
        "  --checkpoint FILE    a checkpoint, or a run or checkpoints directory (its latest)\n"
        "  --data FILE          dataset of the windows (default: the checkpoint's data.path)\n"
        "  --windows n          windows averaged (default 1)\n"
        "  --window W           tokens in each window (default: the checkpoint's train.seq_len)\n"
        "  --position T         the loss's position (default: the window's last, W - 1)\n"
        "  --csv FILE           k,mean_norm,std,min,max (over the windows)\n"
        "  --plot FILE.png      log g against log k, by gnuplot (Debian package gnuplot-nox)\n"
        "  --set KEY=VALUE      override a key, e.g. --set parallel.layout=zigzag\n"
        "  --quiet              no summary\n");
}

static int cmd_probe_gradient(int argc, char **argv) {
    const char *name = "probe gradient";
    const char *checkpoint = NULL, *data = NULL;
    strand_probe_gradient_options o = {.windows = 1, .position = -1};
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            if (cli_world_rank() == 0) gradient_usage(stdout);
            return CLI_OK;
        }
        if (strcmp(arg, "--quiet") == 0) {
            quiet = 1;
            continue;
        }
        static const char *const valued[] = {"--checkpoint", "--data", "--windows", "--window", "--position",
                                             "--csv",        "--plot", "--set",     NULL};
        int known = 0;
        for (int k = 0; valued[k]; k++)
            known |= strcmp(arg, valued[k]) == 0;
        if (!known) {
            cli_error(name, "unknown option '%s' (see strand probe gradient --help)", arg);
            return CLI_USAGE;
        }
        if (i + 1 >= argc) {
            cli_error(name, "%s needs a value (see strand probe gradient --help)", arg);
            return CLI_USAGE;
        }
        const char *value = argv[++i];
        int64_t min = 0;
        int bad = 0;
        if (strcmp(arg, "--checkpoint") == 0) checkpoint = value;
        if (strcmp(arg, "--data") == 0) data = value;
        if (strcmp(arg, "--csv") == 0) o.csv = value;
        if (strcmp(arg, "--plot") == 0) o.plot = value;
        if (strcmp(arg, "--windows") == 0) min = 1, bad = parse_int64(value, min, &o.windows);
        if (strcmp(arg, "--window") == 0) min = 2, bad = parse_int64(value, min, &o.window);
        if (strcmp(arg, "--position") == 0) min = 0, bad = parse_int64(value, min, &o.position);
        if (bad) {
            cli_error(name, "%s needs a whole number >= %lld, not '%s'", arg, (long long)min, value);
            return CLI_USAGE;
        }
    }
    if (!checkpoint) {
        cli_error(name, "--checkpoint is required (see strand probe gradient --help)");
        return CLI_USAGE;
    }
    char path[STRAND_CKPT_PATH_BYTES];
    strand_config config;
    if (cli_checkpoint_config(checkpoint, data, argc, argv, path, sizeof path, &config) != STRAND_OK)
        return cli_report(name);
    o.checkpoint = path;
    strand_probe_gradient_result r;
    const int status = strand_probe_gradient_run(&config, MPI_COMM_WORLD, &o, &r);
    if (status == STRAND_OK && !quiet && cli_world_rank() == 0) {
        printf("g(k) = ||d loss_T / d x_(T-k)|| of %s (step %lld), T = %lld, k = 0 .. %lld\n", path,
               (long long)r.checkpoint_step, (long long)r.position, (long long)r.position);
        printf("windows: %lld %s window%s of %lld tokens of %s, over %d rank%s\n", (long long)r.windows,
               r.from_validation ? "validation" : "training", r.windows == 1 ? "" : "s", (long long)r.window,
               config.data_path, r.sp, r.sp == 1 ? "" : "s");
        printf("g(0) %.6e, g(1) %.6e, g(T) %.6e\n", r.mean[0], r.position >= 1 ? r.mean[1] : 0.0,
               r.mean[r.position]);
        printf("decay (fit over %lld points, k >= 1): per step r = %.6f (ln g against k); per decade "
               "slope s = %.6f (log10 g against log10 k)\n",
               (long long)r.fit_points, r.per_step, r.power);
        if (o.csv) printf("curve: %s\n", o.csv);
        if (o.plot) printf("plot: %s\n", o.plot);
        fflush(stdout);
    }
    strand_probe_gradient_free(&r);
    return status == STRAND_OK ? CLI_OK : cli_report(name);
}

int cmd_probe(int argc, char **argv) {
    if (argc < 2) {
        if (cli_world_rank() == 0) probe_usage(stderr);
        return CLI_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        if (cli_world_rank() == 0) probe_usage(stdout);
        return CLI_OK;
    }
    if (strcmp(argv[1], "jacobian") == 0) return cmd_probe_jacobian(argc - 1, argv + 1);
    if (strcmp(argv[1], "gradient") == 0) return cmd_probe_gradient(argc - 1, argv + 1);
    cli_error("probe", "unknown probe '%s' (probes: jacobian, gradient; see strand probe --help)", argv[1]);
    return CLI_USAGE;
}
