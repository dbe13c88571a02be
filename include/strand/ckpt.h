/* Checkpoints and gradient files: parallel HDF5, one dataset per tensor in its natural shape,
 * written collectively (every rank writes its rows of every tensor, no gather to rank 0) and made
 * atomic by a temporary name, flush, fsync and rename. The schema is in README.md ("Checkpoint
 * format").
 *
 * Every function here is collective over its communicator unless it says "serial", and returns
 * the same status on every rank (failures that one rank sees are agreed). */
#ifndef STRAND_CKPT_H
#define STRAND_CKPT_H

#include "strand/config.h"
#include "strand/model.h"
#include "strand/tokenizer.h"

#include <stdint.h>

#define STRAND_CKPT_FORMAT_VERSION 1
#define STRAND_CKPT_KIND "strand checkpoint"
#define STRAND_GRADS_KIND "strand gradients"

enum {
    STRAND_CKPT_CONFIG_BYTES = 32768, /* resolved configuration text */
    STRAND_CKPT_PATH_BYTES = 1280,
    /* Exit status of `strand train` when it was preempted (SIGUSR1/SIGTERM): a checkpoint was
     * written and the run resumes from it when started again (sysexits.h EX_TEMPFAIL). */
    STRAND_EXIT_PREEMPTED = 75,
};

/* The training state besides the tensors. */
typedef struct {
    int64_t format_version;
    char strand_version[32];
    char real_type[16];         /* "float" or "double" */
    int64_t step;               /* optimizer steps done; also the data cursor: the next step's index */
    int64_t total_steps;        /* train.steps */
    int64_t tokens_seen;        /* training tokens consumed up to `step` */
    int64_t adam_t;             /* AdamW updates done (bias correction) */
    double lr;                  /* schedule state: the learning rate of the last step done */
    uint64_t seed;              /* RNG state: every random draw is a pure function of (seed, step, index) */
    double first_loss;          /* mean training loss (nats/token) of step 1; NaN when unknown */
    double last_loss;           /* of step `step` */
    double first_bpb, last_bpb; /* the same in bits per base (NaN in an older checkpoint) */
    char tokenizer[128];        /* the dataset's tokenizer ("" in an older checkpoint) */
    int64_t tokenizer_fingerprint;              /* strand_tokenizer.fingerprint, -1 when not stored */
    double elapsed_s;                           /* training seconds up to `step`, over all resumed runs */
    int dp, sp, world;                          /* the grid it was written at */
    int accum_steps;                            /* train.accum_steps it was written with */
    int64_t parameters;                         /* elements in all parameter tensors */
    int n_tensors;                              /* parameter tensors */
    char config_text[STRAND_CKPT_CONFIG_BYTES]; /* resolved configuration (strand_config_format) */
} strand_ckpt_meta;

/* The tensors: three arrays in the parameter table's layout. */
typedef struct {
    const strand_param_table *table;
    real_t *params, *m, *v; /* table->total each */
    /* State some mixers carry from one step to the next (STRAND_MIXER_CARRIES_STATE), this rank's part
     * (strand_model_carry_save); NULL or count 0 when there is none. Written to /carry; read by
     * strand_ckpt_read_carry, not strand_ckpt_read. */
    const real_t *carry;
    int64_t carry_count;
    /* The tokenizer, stored whole (a bpe one with its merges) so that sampling can encode a
     * prompt and decode the output without the dataset; NULL for a task dataset. */
    const strand_tokenizer *codec;
} strand_ckpt_state;

/* Fill the format fields of meta (format version, strand version, real type, parameter counts)
 * and the resolved text of config. */
void strand_ckpt_meta_init(strand_ckpt_meta *meta, const strand_config *config,
                           const strand_param_table *table);

/* Write "<dir>/ckpt-<meta->step>.h5": first to "<...>.h5.tmp" (HDF5 flush and close, fsync),
 * then rename and fsync the directory, so a kill at any moment leaves the previous checkpoint
 * loadable. Creates dir. Afterwards keeps only the newest `keep` complete checkpoints (keep <= 0
 * keeps all) and removes stale .tmp files. path_out (may be NULL) receives the final path.
 * Test hook: STRAND_FAULT_CKPT_SLEEP=S makes rank 0 sleep S seconds between the complete
 * temporary file and the rename (only for step STRAND_FAULT_CKPT_STEP when that is set). */
int strand_ckpt_write(const char *dir, const strand_ckpt_meta *meta, const strand_ckpt_state *state, int keep,
                      MPI_Comm comm, char *path_out, size_t path_size);

/* Validate `path` as a checkpoint for this model before anything is read: file, kind, format
 * version, real type, every tensor of `table` present with its shape in /params, /optim/m and
 * /optim/v, no tensor the model lacks; with config (may be NULL) every configuration key that
 * changes the math equal, and windows per step (dp x accum_steps) equal to windows_per_step
 * (<= 0 skips that check). The refusal names the mismatch. meta is filled on every rank.
 * table may be NULL: then only the header is read. */
int strand_ckpt_check(const char *path, const strand_param_table *table, const strand_config *config,
                      int64_t windows_per_step, MPI_Comm comm, strand_ckpt_meta *meta);

/* Read the tensors of a checkpoint that passed strand_ckpt_check with the same table, at any
 * world size: every rank reads its rows of each tensor (collective) and the rows are all-gathered.
 * The tensors' checksums are verified; the whole file was verified by strand_ckpt_check or
 * strand_ckpt_find, and every rank must see that same file (its header is compared). On failure
 * the arrays' contents are unspecified: the caller must not use them (strand_train stops). */
int strand_ckpt_read(const char *path, const strand_ckpt_state *state, MPI_Comm comm);

/* Read this rank's carried mixer state (count values) into carry when the checkpoint has one
 * written by as many ranks with the same count on every rank; the caller checks the grid and
 * layout are the same (the rows belong to positions). *restored = 0 (and STRAND_OK) when it
 * cannot be used; a corrupt one is refused. */
int strand_ckpt_read_carry(const char *path, real_t *carry, int64_t count, MPI_Comm comm, int *restored);
/* Resolve a checkpoint argument: a file is itself; a directory (a run directory: its checkpoints/
 * subdirectory is searched) means its newest complete ckpt-<step>.h5 that passes
 * strand_ckpt_check (newer ones that fail are skipped with a note on stderr; .tmp files are never
 * considered). When the directory (or path) does not exist or holds no checkpoint, *found = 0
 * and STRAND_OK, unless `required`, which makes that an error. When checkpoints exist but none
 * passes, fails with the newest one's reason. */
int strand_ckpt_find(const char *path, int required, const strand_param_table *table,
                     const strand_config *config, int64_t windows_per_step, MPI_Comm comm, char *path_out,
                     size_t path_size, strand_ckpt_meta *meta, int *found);

/* The configuration a checkpoint was written with: defaults, then every key of its text. */
int strand_ckpt_config(const strand_ckpt_meta *meta, strand_config *config);

/* The directory checkpoints of a run live in: "<run_dir>/checkpoints". */
void strand_ckpt_dir(const char *run_dir, char *out, size_t size);

/* ---- gradient files (strand grad) ---- */
typedef struct {
    int64_t step;           /* 1-based step number, as in metrics.jsonl */
    double loss, grad_norm; /* mean loss of the step's batch; norm of the unclipped gradient */
    int64_t tokens;         /* tokens in the batch */
    int dp, sp, world;      /* grid it was computed at */
    char checkpoint[STRAND_CKPT_PATH_BYTES];
    int64_t checkpoint_step;
} strand_grads_meta;

/* Write gradients as /grads/<layer>/<name> (natural shapes), atomically like a checkpoint. */
int strand_grads_write(const char *path, const strand_grads_meta *meta, const strand_param_table *table,
                       const real_t *grads, const char *config_text, MPI_Comm comm);

/* ---- serial helpers for strand info ---- */
/* *kind: 1 for a checkpoint, 2 for a gradient file, 0 for another HDF5 file. Fails only when the
 * file is missing, unreadable or not HDF5. Serial. */
int strand_ckpt_probe(const char *path, int *kind);
/* Print a summary (step, tokens, configuration, grid, tensors with shapes). Serial. */
int strand_ckpt_print_info(const char *path);

#endif
