/* `strand prep`: convert FASTA(.gz) files into a strand HDF5 dataset. Serial: under mpirun only
 * world rank 0 works and the outcome is agreed, so every rank exits with the same status. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "strand/dataset.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char prep_usage[] =
    "usage: strand prep --in A.fa[.gz] [B.fa.gz ...] [--in C.fa ...] --out DATA.h5\n"
    "                   [--val-fraction F | --val-records NAME1,NAME2] [--verbose] [--quiet]\n"
    "                   [--tokenizer nucleotide|kmer:K|bpe:V | --tokenizer-from OTHER.h5]\n"
    "                   [--bpe-sample BASES]\n"
    "\n"
    "       strand prep --task copy|adding|parity|recall --length L --distance D --count N\n"
    "                   [--seed S] [--val-fraction F] --out TASK.h5\n"
    "\n"
    "Convert FASTA files (plain or gzip/bgzip) into a strand dataset (HDF5).\n"
    "  --in PATH...         input FASTA files; every following argument up to the next option\n"
    "  --out PATH           output dataset; written to PATH.tmp and renamed when complete\n"
    "  --val-fraction F     the last floor(F * bases) bases of every record form the validation\n"
    "                       split (0 <= F < 1; default 0); no token crosses the split\n"
    "  --val-records LIST   comma-separated record names that go wholly to the validation split\n"
    "                       (may be combined with --val-fraction, which then applies to the rest)\n"
    "  --tokenizer T        nucleotide (default: one token per base), kmer:K (1 <= K <= 8:\n"
    "                       non-overlapping K-mers; a K-mer with an N, and a record's last\n"
    "                       bases short of K, are single-base tokens) or bpe:V (byte-pair merges\n"
    "                       learned on the training split, vocabulary up to V, default 4096)\n"
    "  --tokenizer-from D   use the tokenizer of dataset D (its merges, for bpe), so that two\n"
    "                       datasets share one vocabulary\n"
    "  --bpe-sample BASES   bpe learns from at most this many training bases, taken as evenly\n"
    "                       spaced blocks of 65536 (default 33554432: about 1.3 GB of memory)\n"
    "  --verbose            print one line per record\n"
    "  --quiet              print nothing on success\n"
    "Sequence letters: ACGT -> tokens 0-3, IUPAC codes RYSWKMBDHVN -> N (4), either case; lines\n"
    "starting with ';' are comments. Any other character is an error naming file:line:column.\n"
    "Line ends LF or CRLF (CR alone is refused). Record names: up to 255 bytes. No input may be\n"
    "PATH or PATH.tmp.\n"
    "With --task: a synthetic long-range task with a loss mask (README \"Task datasets\"); N examples\n"
    "of L tokens each, one record per example (train.seq_len = L); D is the task's distance; the\n"
    "last floor(F * N) examples are validation; --seed (default 1) fixes every token.\n";

static int prep_usage_error(const char *fmt, const char *what) {
    char message[512];
    snprintf(message, sizeof message, fmt, what);
    cli_error("prep", "%s (see strand prep --help)", message);
    return CLI_USAGE;
}

/* "--flag V": a whole number >= 0, or -1 with a usage error. */
static int64_t parse_count(const char *value, const char *flag, int *exit_code) {
    char *end = NULL;
    long long v = value ? strtoll(value, &end, 10) : -1;
    if (!value || end == value || *end != '\0' || v < 0) {
        char message[160];
        snprintf(message, sizeof message, "%s needs a whole number >= 0, not '%%s'", flag);
        *exit_code = prep_usage_error(message, value ? value : "");
        return -1;
    }
    return (int64_t)v;
}

/* "--name=value" or "--name value": the value, or NULL when missing. */
static const char *option_value(int argc, char **argv, int *i, const char *inline_value) {
    if (inline_value) return inline_value;
    if (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0) return argv[++*i];
    return NULL;
}

int cmd_prep(int argc, char **argv) {
    int rank = cli_world_rank();

    const char **inputs = calloc((size_t)argc + 1, sizeof *inputs);
    /* At most one name per argument plus one per comma. */
    size_t max_names = (size_t)argc + 1;
    for (int i = 1; i < argc; i++)
        for (const char *c = argv[i]; *c; c++)
            max_names += *c == ',';
    const char **val_records = calloc(max_names, sizeof *val_records);
    char **owned = calloc((size_t)argc + 1, sizeof *owned); /* copies of --val-records lists */
    int n_inputs = 0, n_val = 0, n_owned = 0, quiet = 0, verbose = 0, exit_code = 0;
    const char *output = NULL, *task = NULL, *tokenizer = NULL, *tokenizer_from = NULL;
    int64_t bpe_sample = 0;
    int64_t length = -1, distance = -1, count = -1, seed = 1;
    double val_fraction = 0.0;
    if (!inputs || !val_records || !owned) {
        cli_error("prep", "out of memory");
        exit_code = CLI_FAILURE;
        goto done;
    }
    for (int i = 1; i < argc && exit_code == 0; i++) {
        char flag[64];
        const char *arg = argv[i], *inline_value = NULL;
        const char *equals = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
        size_t flag_length = equals ? (size_t)(equals - arg) : strlen(arg);
        if (flag_length >= sizeof flag) flag_length = sizeof flag - 1;
        memcpy(flag, arg, flag_length);
        flag[flag_length] = '\0';
        if (equals) inline_value = equals + 1;
        if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0) {
            if (rank == 0) fputs(prep_usage, stdout);
            goto done;
        } else if (strcmp(flag, "--in") == 0) {
            int before = n_inputs;
            if (inline_value && inline_value[0]) inputs[n_inputs++] = inline_value;
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
                inputs[n_inputs++] = argv[++i];
            if (n_inputs == before) exit_code = prep_usage_error("%s needs at least one FASTA path", "--in");
        } else if (strcmp(flag, "--out") == 0) {
            const char *value = option_value(argc, argv, &i, inline_value);
            if (!value || !value[0])
                exit_code = prep_usage_error("%s needs a path", "--out");
            else if (output)
                exit_code = prep_usage_error("%s given twice", "--out");
            else
                output = value;
        } else if (strcmp(flag, "--val-fraction") == 0) {
            const char *value = option_value(argc, argv, &i, inline_value);
            char *end = NULL;
            val_fraction = value ? strtod(value, &end) : NAN;
            if (!value || end == value || *end != '\0' || !(val_fraction >= 0.0 && val_fraction < 1.0))
                exit_code =
                    prep_usage_error("--val-fraction needs a number in [0, 1), not '%s'", value ? value : "");
        } else if (strcmp(flag, "--val-records") == 0) {
            const char *value = option_value(argc, argv, &i, inline_value);
            char *copy = value ? strdup(value) : NULL;
            if (!copy || !copy[0]) {
                free(copy);
                exit_code =
                    prep_usage_error("%s needs a comma-separated list of record names", "--val-records");
                break;
            }
            owned[n_owned++] = copy;
            for (char *name = copy; name;) {
                char *comma = strchr(name, ',');
                if (comma) *comma = '\0';
                if (!name[0]) {
                    exit_code = prep_usage_error("%s has an empty record name", "--val-records");
                    break;
                }
                val_records[n_val++] = name;
                name = comma ? comma + 1 : NULL;
            }
        } else if (strcmp(flag, "--tokenizer") == 0) {
            tokenizer = option_value(argc, argv, &i, inline_value);
            if (!tokenizer || !tokenizer[0])
                exit_code = prep_usage_error("%s needs nucleotide, kmer:K or bpe:V", "--tokenizer");
        } else if (strcmp(flag, "--tokenizer-from") == 0) {
            tokenizer_from = option_value(argc, argv, &i, inline_value);
            if (!tokenizer_from || !tokenizer_from[0])
                exit_code = prep_usage_error("%s needs a dataset path", "--tokenizer-from");
        } else if (strcmp(flag, "--bpe-sample") == 0) {
            bpe_sample = parse_count(option_value(argc, argv, &i, inline_value), "--bpe-sample", &exit_code);
        } else if (strcmp(flag, "--task") == 0) {
            task = option_value(argc, argv, &i, inline_value);
            if (!task || !task[0] ||
                (strcmp(task, "copy") && strcmp(task, "adding") && strcmp(task, "parity") &&
                 strcmp(task, "recall")))
                exit_code = prep_usage_error("%s needs copy, adding, parity or recall", "--task");
        } else if (strcmp(flag, "--length") == 0) {
            length = parse_count(option_value(argc, argv, &i, inline_value), "--length", &exit_code);
        } else if (strcmp(flag, "--distance") == 0) {
            distance = parse_count(option_value(argc, argv, &i, inline_value), "--distance", &exit_code);
        } else if (strcmp(flag, "--count") == 0) {
            count = parse_count(option_value(argc, argv, &i, inline_value), "--count", &exit_code);
        } else if (strcmp(flag, "--seed") == 0) {
            seed = parse_count(option_value(argc, argv, &i, inline_value), "--seed", &exit_code);
        } else if (strcmp(flag, "--quiet") == 0 && !equals) {
            quiet = 1;
        } else if (strcmp(flag, "--verbose") == 0 && !equals) {
            verbose = 1;
        } else if (strncmp(arg, "-", 1) == 0) {
            exit_code = prep_usage_error("unknown option '%s'", arg);
        } else {
            exit_code = prep_usage_error("unexpected argument '%s' (input files follow --in)", arg);
        }
    }
    if (exit_code == 0 && task) {
        if (n_inputs > 0 || n_val > 0 || tokenizer || tokenizer_from)
            exit_code = prep_usage_error(
                "%s generates its examples: --in, --val-records and --tokenizer do not apply", "--task");
        else if (length < 0)
            exit_code = prep_usage_error("%s is required with --task", "--length");
        else if (distance < 0)
            exit_code = prep_usage_error("%s is required with --task", "--distance");
        else if (count < 0)
            exit_code = prep_usage_error("%s is required with --task", "--count");
        else if (!output)
            exit_code = prep_usage_error("%s is required", "--out");
        if (exit_code != 0) goto done;
        strand_task_options task_options = {.task = task,
                                            .output = output,
                                            .length = length,
                                            .distance = distance,
                                            .count = count,
                                            .seed = (uint64_t)seed,
                                            .val_fraction = val_fraction};
        strand_prep_stats task_stats = {0};
        int task_status = rank == 0 ? strand_task_prep(&task_options, &task_stats) : STRAND_OK;
        task_status = strand_agree(MPI_COMM_WORLD, task_status);
        if (task_status != STRAND_OK)
            exit_code = cli_report("prep");
        else if (rank == 0 && !quiet)
            printf(
                "strand prep: wrote %s: task %s, %lld examples of %lld tokens (train %lld, val %lld tokens), "
                "distance %lld, seed %lld\n",
                output, task, (long long)count, (long long)length, (long long)task_stats.n_train_tokens,
                (long long)task_stats.n_val_tokens, (long long)distance, (long long)seed);
        goto done;
    }
    if (exit_code == 0 && (length >= 0 || distance >= 0 || count >= 0))
        exit_code = prep_usage_error("%s, --distance and --count need --task", "--length");
    if (exit_code == 0 && tokenizer && tokenizer_from)
        exit_code = prep_usage_error("%s and --tokenizer-from exclude each other", "--tokenizer");
    if (exit_code == 0 && n_inputs == 0) exit_code = prep_usage_error("%s is required", "--in");
    if (exit_code == 0 && !output) exit_code = prep_usage_error("%s is required", "--out");
    if (exit_code != 0) goto done; /* every rank parsed the same arguments: no agreement needed */

    strand_prep_options options = {
        .inputs = inputs,
        .n_inputs = n_inputs,
        .output = output,
        .val_fraction = val_fraction,
        .val_records = val_records,
        .n_val_records = n_val,
        .verbose = verbose && !quiet,
        .tokenizer = tokenizer,
        .tokenizer_from = tokenizer_from,
        .bpe_sample_bases = bpe_sample,
    };
    strand_prep_stats stats = {0};
    int status = rank == 0 ? strand_prep_run(&options, &stats) : STRAND_OK;
    status = strand_agree(MPI_COMM_WORLD, status);
    if (status != STRAND_OK) {
        exit_code = cli_report("prep");
    } else if (rank == 0 && !quiet) {
        double mb = (double)stats.input_bytes / 1e6;
        printf(
            "strand prep: wrote %s: %lld record%s, %lld bases, %s (vocabulary %d) %lld tokens (train %lld, "
            "val %lld), %.3f bases per token, from %d file%s; %.1f MB of FASTA in %.2f s (%.1f MB/s)\n",
            output, (long long)stats.n_records, stats.n_records == 1 ? "" : "s", (long long)stats.n_bases,
            stats.tokenizer, stats.vocab_size, (long long)stats.n_tokens, (long long)stats.n_train_tokens,
            (long long)stats.n_val_tokens,
            stats.n_tokens > 0 ? (double)stats.n_bases / (double)stats.n_tokens : 0.0, n_inputs,
            n_inputs == 1 ? "" : "s", mb, stats.seconds, stats.seconds > 0 ? mb / stats.seconds : 0.0);
    }
done:
    fflush(stdout);
    for (int i = 0; i < n_owned; i++)
        free(owned[i]);
    free(owned);
    free(inputs);
    free(val_records);
    return exit_code;
}
