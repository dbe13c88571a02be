/* strand plan: predicted step time (compute per mixer, communication per mixer, I/O) and memory per
 * rank of a configuration over a list of rank counts, from a calibrated machine (src/perf). */
#include "cli.h"

#include "strand/memory_model.h"
#include "strand/perf.h"
#include "train/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_PLAN_RANKS = 64 };

static void plan_usage(FILE *out) {
    fprintf(out, "usage: strand plan --config FILE --ranks N,N,... [options]\n"
                 "       strand plan --mixer NAME --length L --channels C --ranks N,N,... [options]\n\n"
                 "Predict, for each rank count, one training step of the configuration (or one forward +\n"
                 "backward of a mixer, what `strand bench mixer` times) on the most loaded rank: compute\n"
                 "and communication per mixer, the rest of the model and the optimizer, the gradient\n"
                 "all-reduce, I/O, and the memory per rank of `strand train --dry-run`. Rates come from\n"
                 "a `strand calibrate` file; without one, documented defaults (and the output says so).\n"
                 "Then says where the configuration stops scaling (the step no faster at the same work,\n"
                 "or parallel efficiency under 50%%) and what dominates there.\n\n"
                 "options:\n"
                 "  --config FILE          the training configuration (as strand train; without it, the\n"
                 "                         defaults and --set keys)\n"
                 "  --mixer NAME           instead: one mixer, with --length and --channels\n"
                 "  --length L             window (train.seq_len) of --mixer\n"
                 "  --channels C           model.d_model of --mixer\n"
                 "  --set KEY=VALUE        override a configuration key (repeatable)\n"
                 "  --ranks LIST           rank counts, e.g. 1,2,4,8 or 1-4096 (powers of two)\n"
                 "  --ranks-per-node N     ranks on one node (default: all on one node)\n"
                 "  --node-memory SIZE     memory of a node, e.g. 256G (default: the machine file's)\n"
                 "  --machine FILE         the machine's constants (strand calibrate --out FILE)\n"
                 "  --json                 one JSON line per rank count instead of the table\n");
}

/* "1,2,4" or "A-B" (powers of two from A to B). */
static int parse_ranks(const char *text, int *ranks) {
    char *end = NULL;
    const char *dash = strchr(text, '-');
    if (dash && !strchr(text, ',')) {
        const long a = strtol(text, &end, 10);
        if (end != dash) return -1;
        const long b = strtol(dash + 1, &end, 10);
        if (*end || a < 1 || b < a || b > 1 << 24) return -1;
        int n = 0;
        for (long r = a; r <= b && n < MAX_PLAN_RANKS; r *= 2)
            ranks[n++] = (int)r;
        return n;
    }
    int n = 0;
    for (const char *p = text; *p;) {
        const long r = strtol(p, &end, 10);
        if (end == p || r < 1 || r > 1 << 24 || n == MAX_PLAN_RANKS) return -1;
        ranks[n++] = (int)r;
        if (*end == ',')
            end++;
        else if (*end)
            return -1;
        p = end;
    }
    return n;
}

/* "256G", "64GiB", "1.5T", or bytes. */
static double parse_size(const char *text) {
    char *end = NULL;
    double v = strtod(text, &end);
    if (end == text || v <= 0) return -1;
    const char unit = *end;
    if (unit == 'K' || unit == 'k')
        v *= 1024.0, end++;
    else if (unit == 'M')
        v *= 1024.0 * 1024, end++;
    else if (unit == 'G')
        v *= 1024.0 * 1024 * 1024, end++;
    else if (unit == 'T')
        v *= 1024.0 * 1024 * 1024 * 1024, end++;
    if (strcmp(end, "") != 0 && strcmp(end, "B") != 0 && strcmp(end, "iB") != 0) return -1;
    return v;
}

static void print_seconds(char *out, size_t size, double s) {
    if (s >= 100)
        snprintf(out, size, "%.0f", s);
    else if (s >= 1)
        snprintf(out, size, "%.2f", s);
    else if (s >= 1e-3)
        snprintf(out, size, "%.2fm", s * 1e3);
    else
        snprintf(out, size, "%.1fu", s * 1e6);
}

static void print_json(const strand_plan_point *p, int mixer_plan) {
    printf("{\"plan\":\"%s\",\"ranks\":%d,\"nodes\":%d,\"ranks_per_node\":%d,\"sp\":%d,\"dp\":%d,",
           mixer_plan ? "mixer" : "train", p->ranks, p->nodes, p->ranks_per_node, p->sp, p->dp);
    if (p->refused[0]) {
        char text[600];
        strand_one_line(text, sizeof text, p->refused);
        /* the message has no quotes or backslashes of its own but a quoted name: escape both */
        printf("\"refused\":\"");
        for (const char *c = text; *c; c++)
            printf(*c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
        printf("\"}\n");
        return;
    }
    printf(
        "\"rows_per_rank\":%lld,\"tokens_per_step\":%.0f,\"step_s\":%.6g,\"compute_s\":%.6g,\"comm_s\":%.6g,"
        "\"io_s\":%.6g,\"other_compute_s\":%.6g,\"allreduce_s\":%.6g,\"memory_bytes\":%lld,\"fits\":%s,"
        "\"efficiency\":%.4g,\"dominant\":\"%s\",\"mixers\":[",
        (long long)p->rows, p->tokens_per_step, p->step_s, p->compute_s, p->comm_s, p->io_s,
        p->other_compute_s, p->allreduce_s, (long long)p->memory_bytes, p->fits ? "true" : "false",
        p->efficiency, p->dominant);
    for (int i = 0; i < p->mixers; i++)
        printf("%s{\"name\":\"%s\",\"compute_s\":%.6g,\"comm_s\":%.6g}", i ? "," : "", p->mixer_name[i],
               p->mixer_compute_s[i], p->mixer_comm_s[i]);
    printf("],\"refused\":null}\n");
}

static void print_table(const strand_plan_point *points, int count, int mixer_plan) {
    printf("%6s %5s %5s %4s %11s %9s %9s %9s %9s %10s %5s %5s  %s\n", "ranks", "nodes", "sp", "dp",
           "rows/rank", mixer_plan ? "fwd+bwd_s" : "step_s", "compute", "comm", "io", "mem/rank", "fits",
           "eff", "dominant");
    for (int i = 0; i < count; i++) {
        const strand_plan_point *p = &points[i];
        if (p->refused[0]) {
            printf("%6d %5d  refused: %s\n", p->ranks, p->nodes, p->refused);
            continue;
        }
        char t[4][32], mem[32];
        print_seconds(t[0], sizeof t[0], p->step_s);
        print_seconds(t[1], sizeof t[1], p->compute_s);
        print_seconds(t[2], sizeof t[2], p->comm_s);
        print_seconds(t[3], sizeof t[3], p->io_s);
        strand_format_bytes(mem, sizeof mem, (double)p->memory_bytes);
        printf("%6d %5d %5d %4d %11lld %9s %9s %9s %9s %10s %5s %4.0f%%  %s\n", p->ranks, p->nodes, p->sp,
               p->dp, (long long)p->rows, t[0], t[1], t[2], t[3], mem, p->fits ? "yes" : "NO",
               100 * p->efficiency, p->dominant);
    }
    printf("\nper mixer (all its blocks; seconds compute / communication):\n");
    for (int i = 0; i < count; i++) {
        const strand_plan_point *p = &points[i];
        if (p->refused[0]) continue;
        printf("%6d ranks:", p->ranks);
        for (int j = 0; j < p->mixers; j++) {
            char a[32], b[32];
            print_seconds(a, sizeof a, p->mixer_compute_s[j]);
            print_seconds(b, sizeof b, p->mixer_comm_s[j]);
            printf("  %s %s / %s", p->mixer_name[j], a, b);
        }
        if (!mixer_plan) {
            char a[32], b[32];
            print_seconds(a, sizeof a, p->other_compute_s);
            print_seconds(b, sizeof b, p->allreduce_s);
            printf("  | rest %s, all-reduce %s", a, b);
        }
        printf("\n");
    }
}

int cmd_plan(int argc, char **argv) {
    const char *name = "plan";
    const char *config_path = NULL, *mixer = NULL, *machine_path = NULL;
    long long length = 0;
    int channels = 0, json = 0, n_ranks = 0, ranks[MAX_PLAN_RANKS];
    strand_plan_nodes nodes = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            if (cli_world_rank() == 0) plan_usage(stdout);
            return CLI_OK;
        }
        if (strcmp(a, "--json") == 0) {
            json = 1;
            continue;
        }
        const int known = strcmp(a, "--config") == 0 || strcmp(a, "--mixer") == 0 ||
                          strcmp(a, "--length") == 0 || strcmp(a, "--channels") == 0 ||
                          strcmp(a, "--set") == 0 || strcmp(a, "--ranks") == 0 ||
                          strcmp(a, "--ranks-per-node") == 0 || strcmp(a, "--node-memory") == 0 ||
                          strcmp(a, "--machine") == 0;
        if (!known) {
            cli_error(name, "unknown option '%s' (see strand plan --help)", a);
            return CLI_USAGE;
        }
        if (i + 1 >= argc) {
            cli_error(name, "%s needs a value (see strand plan --help)", a);
            return CLI_USAGE;
        }
        const char *v = argv[++i];
        char *end = NULL;
        if (strcmp(a, "--config") == 0)
            config_path = v;
        else if (strcmp(a, "--mixer") == 0)
            mixer = v;
        else if (strcmp(a, "--machine") == 0)
            machine_path = v;
        else if (strcmp(a, "--length") == 0) {
            length = strtoll(v, &end, 10);
            if (*end || length < 1) {
                cli_error(name, "--length needs a positive integer, not '%s'", v);
                return CLI_USAGE;
            }
        } else if (strcmp(a, "--channels") == 0) {
            channels = (int)strtol(v, &end, 10);
            if (*end || channels < 1) {
                cli_error(name, "--channels needs a positive integer, not '%s'", v);
                return CLI_USAGE;
            }
        } else if (strcmp(a, "--ranks") == 0) {
            if ((n_ranks = parse_ranks(v, ranks)) <= 0) {
                cli_error(name, "--ranks needs rank counts like 1,2,4 or 1-4096 (at most %d), not '%s'",
                          MAX_PLAN_RANKS, v);
                return CLI_USAGE;
            }
        } else if (strcmp(a, "--ranks-per-node") == 0) {
            nodes.ranks_per_node = (int)strtol(v, &end, 10);
            if (*end || nodes.ranks_per_node < 1) {
                cli_error(name, "--ranks-per-node needs a positive integer, not '%s'", v);
                return CLI_USAGE;
            }
        } else if (strcmp(a, "--node-memory") == 0) {
            if ((nodes.node_memory_bytes = parse_size(v)) <= 0) {
                cli_error(name, "--node-memory needs a size like 256G, not '%s'", v);
                return CLI_USAGE;
            }
        }
    }
    if (config_path && mixer) {
        cli_error(name, "--config and --mixer exclude each other (see strand plan --help)");
        return CLI_USAGE;
    }
    if (mixer && (length == 0 || channels == 0)) {
        cli_error(name, "--mixer needs --length and --channels");
        return CLI_USAGE;
    }
    if (n_ranks == 0) {
        cli_error(name, "--ranks is required, e.g. --ranks 1,2,4");
        return CLI_USAGE;
    }

    /* Pure computation: every rank could do it, rank 0 prints. */
    strand_config config;
    strand_config_defaults(&config);
    int status = config_path ? strand_config_load_file(&config, config_path) : STRAND_OK;
    char text[128];
    if (status == STRAND_OK && mixer) {
        snprintf(text, sizeof text, "model.d_model=%d", channels);
        status = strand_config_set(&config, text);
        snprintf(text, sizeof text, "train.seq_len=%lld", length);
        if (status == STRAND_OK) status = strand_config_set(&config, text);
        snprintf(text, sizeof text, "model.layers=%.100s", mixer);
        if (status == STRAND_OK) status = strand_config_set(&config, text);
    }
    for (int i = 1; i < argc && status == STRAND_OK; i++)
        if (strcmp(argv[i], "--set") == 0) status = strand_config_set(&config, argv[++i]);
    if (status == STRAND_OK) status = strand_config_validate(&config);
    strand_machine machine;
    strand_machine_default(&machine);
    if (status == STRAND_OK && machine_path) status = strand_machine_read(machine_path, &machine);
    if (status == STRAND_OK) status = strand_memory_process_baseline(&nodes.baseline_bytes);
    /* Under mpirun a file may be missing on one node only: agree, so every rank exits alike. */
    if (strand_agree(MPI_COMM_WORLD, status) != STRAND_OK) return cli_report(name);
    if (nodes.node_memory_bytes <= 0) nodes.node_memory_bytes = machine.memory_per_node_bytes;

    strand_plan_point points[MAX_PLAN_RANKS];
    for (int i = 0; i < n_ranks && status == STRAND_OK; i++)
        status = mixer ? strand_perf_plan_mixer(&config, mixer, &machine, ranks[i], &nodes, &points[i])
                       : strand_perf_plan_train(&config, &machine, ranks[i], &nodes, &points[i]);
    if (status != STRAND_OK) return cli_report(name);
    strand_perf_efficiency(points, n_ranks);
    char why[256];
    strand_perf_scaling_limit(points, n_ranks, why, sizeof why);
    if (cli_world_rank() != 0) return CLI_OK;
    if (json) {
        for (int i = 0; i < n_ranks; i++)
            print_json(&points[i], mixer != NULL);
        fflush(stdout);
        return CLI_OK;
    }
    char mem[32];
    strand_format_bytes(mem, sizeof mem, nodes.node_memory_bytes);
    printf("strand plan: %s, %s precision; machine: %s; node memory %s\n",
           mixer         ? mixer
           : config_path ? config_path
                         : "defaults and --set",
           STRAND_REAL_NAME,
           machine_path ? machine_path : "built-in defaults (run strand calibrate for this machine's)", mem);
    if (mixer)
        printf("one forward + backward of %s, L = %lld, C = %d\n\n", mixer, length, channels);
    else
        printf("one training step: model.layers = %s, d_model %d, seq_len %lld, accum_steps %d\n\n",
               config.layers, config.d_model, (long long)config.seq_len, config.accum_steps);
    print_table(points, n_ranks, mixer != NULL);
    printf("\n%s\n", why[0] ? why : "scales through the last rank count given (efficiency >= 50%)");
    for (int i = 0; i < n_ranks; i++)
        if (!points[i].refused[0] && !points[i].fits) {
            printf("note: %d ranks do not fit: %d ranks per node need more than the node's memory\n",
                   points[i].ranks, points[i].ranks_per_node);
            break;
        }
    fflush(stdout);
    return CLI_OK;
}
