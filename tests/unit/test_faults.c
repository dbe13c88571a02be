/* Allocation fault injection: for n = 1, 2, ... the n-th allocation (strand_alloc) on one chosen
 * rank fails, in small train, eval, sample and grad runs (a model with every kind of mixer), until
 * a run gets through all its allocations. Every failed run must return the same error on every
 * rank (agreed), with a one-line message, within a bounded time (a watchdog aborts a hung case
 * and names it), and leave no partial file behind (no .tmp, no gradient file). The runs are
 * in-process, one after the other: state a failed run leaves behind would show up in the next.
 *   test_faults RANK GENOME.fa.gz    (under mpirun; RANK is the world rank whose allocation fails)
 */
#define _POSIX_C_SOURCE 200809L
#include "test_tmpdir.h"
#include "test_util.h"

#include "strand/ckpt.h"
#include "strand/config.h"
#include "strand/dataset.h"
#include "strand/sample.h"
#include "strand/train.h"

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { CASE_SECONDS = 15, MAX_CASES = 1000 };

static int world_rank, world_size, fail_rank;
static char tmpdir[256], checkpoint[STRAND_CKPT_PATH_BYTES];
static const char *current_command = "";
static volatile sig_atomic_t current_n = 0;

static void on_watchdog(int signal_number) {
    (void)signal_number;
    char line[160];
    const int n = snprintf(line, sizeof line, "test_faults: %s with allocation %d failing on rank %d hung\n",
                           current_command, (int)current_n, fail_rank);
    if (write(2, line, (size_t)n) < 0) {
    }
    /* For a debugger: TEST_FAULTS_WAIT=1 keeps the hung ranks where they are. */
    if (getenv("TEST_FAULTS_WAIT"))
        for (;;)
            pause();
    MPI_Abort(MPI_COMM_WORLD, 3);
}

static void base_config(strand_config *c, const char *dataset) {
    strand_config_defaults(c);
    const char *settings[] = {"model.d_model=16",     "model.layers=conv,hyena,attn,s4d",
                              "model.mlp_hidden=32",  "attn.heads=2",
                              "s4d.state=4",          "hyena.filter_width=8",
                              "train.seq_len=96",     "train.steps=2",
                              "train.warmup_steps=1", "train.log_every=1",
                              "train.eval_windows=2", "checkpoint.every=1"};
    for (size_t i = 0; i < sizeof settings / sizeof *settings; i++)
        CHECK_MSG(strand_config_set(c, settings[i]) == STRAND_OK, "%s: %s", settings[i],
                  strand_error_message());
    snprintf(c->data_path, sizeof c->data_path, "%s", dataset);
}

/* Rank 0: does `dir` (recursively) hold a temporary or partial file? */
static int has_partial_file(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    struct dirent *entry;
    while (!found && (entry = readdir(d)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        const size_t len = strlen(entry->d_name);
        if (len > 4 && strcmp(entry->d_name + len - 4, ".tmp") == 0) {
            fprintf(stderr, "partial file left behind: %s\n", path);
            found = 1;
        }
        struct stat st;
        if (!found && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) found = has_partial_file(path);
    }
    closedir(d);
    return found;
}

typedef int (*command_fn)(const strand_config *config, const char *dir);

static int run_train(const strand_config *config, const char *dir) {
    strand_config c = *config;
    snprintf(c.run_dir, sizeof c.run_dir, "%s", dir);
    strand_train_options options = {.quiet = 1, .no_auto_resume = 1};
    strand_train_result result;
    return strand_train(&c, MPI_COMM_WORLD, &options, &result);
}

static int run_eval(const strand_config *config, const char *dir) {
    char csv[1100];
    snprintf(csv, sizeof csv, "%s/by_position.csv", dir);
    strand_eval_result result;
    return strand_train_eval(config, MPI_COMM_WORLD, checkpoint, 2, csv, 8, &result);
}

static int run_grad(const strand_config *config, const char *dir) {
    char out[1100];
    snprintf(out, sizeof out, "%s/grads.h5", dir);
    strand_grad_result result;
    return strand_train_grad(config, MPI_COMM_WORLD, checkpoint, 2, out, &result);
}

static int run_sample(const strand_config *config, const char *dir) {
    (void)dir;
    char *out = NULL;
    strand_sample_options options = {
        .checkpoint = checkpoint, .prompt = "ACGTACGT", .length = 8, .seed = 3, .temperature = 1.0};
    const int status = strand_sample(config, MPI_COMM_WORLD, &options, &out);
    free(out);
    return status;
}

/* Every rank returned the same status. */
static int agreed(int status) {
    int low = status, high = status;
    MPI_Allreduce(MPI_IN_PLACE, &low, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &high, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return low == high;
}

/* n = 1, 2, ... until the command succeeds; returns the number of allocations tried. */
static int sweep(const char *name, command_fn command, const strand_config *config) {
    current_command = name;
    /* Without a fault the command must succeed, or the sweep would prove nothing. */
    char clean[512];
    snprintf(clean, sizeof clean, "%s/%s-clean", tmpdir, name);
    if (world_rank == 0) mkdir(clean, 0775);
    MPI_Barrier(MPI_COMM_WORLD);
    strand_fault_alloc_arm(0);
    const int clean_status = command(config, clean);
    CHECK_MSG(clean_status == STRAND_OK, "%s without a fault: %s", name, strand_error_message());
    if (clean_status != STRAND_OK) return 0;
    int n = 1, failed_runs = 0;
    for (; n <= MAX_CASES; n++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s-%d", tmpdir, name, n);
        if (world_rank == 0) mkdir(dir, 0775);
        MPI_Barrier(MPI_COMM_WORLD);
        current_n = n;
        strand_fault_alloc_arm(world_rank == fail_rank ? n : 0);
        strand_error_clear();
        alarm(CASE_SECONDS);
        const int status = command(config, dir);
        alarm(0);
        const int64_t calls = strand_fault_alloc_calls();
        strand_fault_alloc_arm(0);
        CHECK_MSG(agreed(status), "%s, allocation %d: ranks returned different statuses", name, n);
        int partial = world_rank == 0 ? has_partial_file(dir) : 0;
        if (world_rank == 0) {
            char grads[600];
            snprintf(grads, sizeof grads, "%s/grads.h5", dir);
            if (status != STRAND_OK && access(grads, F_OK) == 0) {
                fprintf(stderr, "%s: a failed run left %s\n", name, grads);
                partial = 1;
            }
        }
        MPI_Bcast(&partial, 1, MPI_INT, 0, MPI_COMM_WORLD);
        CHECK_MSG(!partial, "%s, allocation %d: partial file left behind", name, n);
        if (status == STRAND_OK) {
            /* Past the last allocation of the failing rank: every allocation was tried. */
            int tried_all = world_rank == fail_rank ? calls < n : 1;
            MPI_Bcast(&tried_all, 1, MPI_INT, fail_rank, MPI_COMM_WORLD);
            CHECK_MSG(tried_all, "%s: allocation %d did not fail, yet the run succeeded", name, n);
            break;
        }
        failed_runs++;
        const char *message = strand_error_message();
        CHECK_MSG(message[0] != '\0', "%s, allocation %d: failed without a message", name, n);
        CHECK_MSG(strchr(message, '\n') == NULL, "%s, allocation %d: message is not one line", name, n);
        if (world_rank == 0 && n <= 3) fprintf(stderr, "%s, allocation %d: %s\n", name, n, message);
        if (world_rank == 0) {
            char command_line[600];
            snprintf(command_line, sizeof command_line, "rm -rf '%s'", dir);
            if (system(command_line) != 0) fprintf(stderr, "could not remove %s\n", dir);
        }
    }
    if (world_rank == 0)
        fprintf(stderr,
                "%s at %d ranks: %d allocation sites on rank %d tried, each failed run agreed, none hung\n",
                name, world_size, n - 1, fail_rank);
    CHECK_MSG(n <= MAX_CASES, "%s: still failing after %d allocations", name, MAX_CASES);
    CHECK_MSG(failed_runs == n - 1 && n > 1, "%s: %d failed runs for %d allocations", name, failed_runs,
              n - 1);
    return n - 1;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    strand_h5_quiet();
    if (argc < 3) {
        fprintf(stderr, "usage: test_faults RANK GENOME.fa.gz\n");
        MPI_Finalize();
        return 2;
    }
    fail_rank = atoi(argv[1]) % world_size;
    signal(SIGALRM, on_watchdog);
    test_tmpdir_make(tmpdir, (int)sizeof tmpdir, "faults");
    CHECK(tmpdir[0] != '\0');
    char dataset[512];
    snprintf(dataset, sizeof dataset, "%s/lambda.h5", tmpdir);
    int status = STRAND_OK;
    if (world_rank == 0) {
        const char *inputs[1] = {argv[2]};
        strand_prep_options options = {
            .inputs = inputs, .n_inputs = 1, .output = dataset, .val_fraction = 0.1};
        strand_prep_stats stats;
        status = strand_prep_run(&options, &stats);
    }
    CHECK(strand_agree(MPI_COMM_WORLD, status) == STRAND_OK);
    strand_config config;
    base_config(&config, dataset);

    /* A checkpoint for eval, grad and sample, written without faults. */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/reference", tmpdir);
    CHECK_MSG(run_train(&config, dir) == STRAND_OK, "reference run: %s", strand_error_message());
    snprintf(checkpoint, sizeof checkpoint, "%s/checkpoints/ckpt-2.h5", dir);

    int total = 0;
    total += sweep("train", run_train, &config);
    total += sweep("eval", run_eval, &config);
    total += sweep("grad", run_grad, &config);
    total += sweep("sample", run_sample, &config);
    if (world_rank == 0)
        fprintf(stderr, "test_faults: %d allocation sites at %d ranks (failing on rank %d), none hung\n",
                total, world_size, fail_rank);
    test_tmpdir_remove(tmpdir);
    int failures = test_failures;
    MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    int rc = world_rank == 0 ? test_finish("test_faults") : 0;
    rc = failures ? 1 : rc;
    MPI_Finalize();
    return rc;
}
