/* Genome datasets: FASTA(.gz) -> HDF5 conversion (strand prep) and the parallel reader used by
 * the training loader. The HDF5 schema is documented in README.md ("Dataset format"). */
#ifndef STRAND_DATASET_H
#define STRAND_DATASET_H

#include "strand/common.h"
#include "strand/tokenizer.h"

#include <hdf5.h>
#include <stdint.h>
#include <stdio.h>

/* Single-nucleotide tokenizer. Token ids are stable across versions of the format. */
enum strand_token {
    STRAND_TOKEN_A = 0,
    STRAND_TOKEN_C = 1,
    STRAND_TOKEN_G = 2,
    STRAND_TOKEN_T = 3,
    STRAND_TOKEN_N = 4,
    STRAND_TOKEN_PAD = 5, /* padding (never a training target) */
    STRAND_TOKEN_BOS = 6, /* start of a sequence, for generation prompts */
    STRAND_TOKEN_SEP = 7, /* record separator, reserved */
    STRAND_VOCAB_SIZE = 8,
};
/* Fill value of /tokens: not a token, so data HDF5 cannot find (a damaged chunk index) reads as
 * invalid instead of as A. Also pads the last chunk. 8-bit datasets use 255. */
#define STRAND_TOKEN_FILL 65535
#define STRAND_TOKEN_FILL_8BIT 255
/* A vocabulary above 65535 tokens (kmer:8) is stored in 32 bits, with this fill value. */
#define STRAND_TOKEN_FILL_32BIT 4294967295u
/* Largest vocabulary (kmer:8's 8 + 4^8 tokens, 32-bit in the file). */
#define STRAND_VOCAB_MAX 65544
/* Longest record name in bytes: what strand prep accepts and what readers keep whole. */
#define STRAND_RECORD_NAME_MAX 255
#define STRAND_TOKENIZER_NAME "nucleotide"
#define STRAND_TOKENIZER_VERSION 1
#define STRAND_DATASET_FORMAT_VERSION 1

/* Complement of a token (A<->T, C<->G, N and specials unchanged). */
strand_token_t strand_token_complement(strand_token_t token);
/* Character of a token ('A','C','G','T','N', '.' for specials). */
char strand_token_char(strand_token_t token);

/* ---- strand prep ---- */
typedef struct {
    const char *const *inputs; /* FASTA or gzipped FASTA paths */
    int n_inputs;
    const char *output;             /* dataset path (.h5) */
    double val_fraction;            /* last fraction of every record is validation (0 = none) */
    const char *const *val_records; /* or: whole records (by name) that form the validation split */
    int n_val_records;
    int verbose;                /* print one line per record */
    const char *tokenizer;      /* "nucleotide" (NULL), "kmer:K" or "bpe:V" (tokenizer.h) */
    const char *tokenizer_from; /* or: the tokenizer of this dataset (its merges, for bpe) */
    int64_t bpe_sample_bases;   /* bpe learns from at most this many training bases (0: default) */
} strand_prep_options;
/* Default cap on the training bases BPE learns from: its memory is about 40 bytes a base. */
#define STRAND_BPE_SAMPLE_BASES ((int64_t)1 << 25)

typedef struct {
    int64_t n_records;
    int64_t n_tokens, n_bases;
    int64_t n_train_tokens, n_val_tokens;
    char tokenizer[32];
    int vocab_size;
    int64_t input_bytes; /* bytes of FASTA text after decompression */
    double seconds;
} strand_prep_stats;

/* Convert FASTA inputs to one HDF5 dataset. Serial (one process). The output is written to
 * "<output>.tmp" and renamed on success, so a failed prep never leaves a half-written file. */
int strand_prep_run(const strand_prep_options *options, strand_prep_stats *stats);

/* ---- strand prep --task: synthetic long-range tasks (src/data/tasks.c; README "Task datasets") ---- */
/* Tokenizer names are "task:<name>"; each example is one record of `length` tokens. */
#define STRAND_TASK_TOKENIZER_PREFIX "task:"
#define STRAND_TASK_TOKENIZER_VERSION 1
typedef struct {
    const char *task;    /* "copy", "adding", "parity" or "recall" */
    const char *output;  /* dataset path (.h5) */
    int64_t length;      /* L: tokens per example (one record each) */
    int64_t distance;    /* D: the task's long-range distance (see README) */
    int64_t count;       /* examples */
    uint64_t seed;       /* every token is a pure function of (seed, example, position) */
    double val_fraction; /* the last floor(val_fraction * count) examples are validation */
} strand_task_options;

/* Write a task dataset (tokens, /loss_mask, records, splits) to "<output>.tmp", renamed on
 * success. Serial. Bad options are refused naming the flag and the reason. */
int strand_task_prep(const strand_task_options *options, strand_prep_stats *stats);

/* Example `example` of the task alone (options->output is not used): tokens[length] as the
 * dataset stores them, answer[j] = 1 when token j is an answer (its position j - 1 counts in
 * the loss mask). Refuses bad options as strand_task_prep does. */
int strand_task_example(const strand_task_options *options, int64_t example, uint16_t *tokens,
                        uint8_t *answer);

/* ---- reading a dataset ---- */
typedef struct {
    int64_t offset; /* first token in /tokens */
    int64_t length;
} strand_token_range;

typedef struct {
    hid_t file, tokens; /* HDF5 handles */
    int64_t n_tokens;
    int64_t n_bases; /* bases all tokens cover */
    int64_t n_records;
    char (*record_names)[STRAND_RECORD_NAME_MAX + 1]; /* n_records names, NUL-terminated */
    int64_t *record_offsets, *record_lengths;
    strand_token_range *train, *val; /* split ranges in /tokens coordinates */
    int64_t n_train, n_val;
    int file_checksummed;   /* the whole file is covered by a checksum (filesum.h; 0: an older file) */
    int tokens_checksummed; /* /tokens' chunks carry Fletcher32 checksums (0: an older file) */
    int64_t tokens_fill;    /* /tokens' fill value, or -1 when it has none */
    int token_bytes;        /* bytes per token in the file: 2, or 1 (an older file) */
    int vocab_size;         /* the tokenizer's vocabulary: every token is below it */
    char tokenizer[128];    /* the tokenizer's name */
    strand_tokenizer codec; /* a DNA tokenizer's tables (zeroed for a task dataset) */
    int32_t *token_bases;   /* [vocab_size] bases each token covers (1 for every task token) */
    hid_t mask;             /* /loss_mask (uint8, one per token: 1 where that position's target
                               counts), or H5I_INVALID_HID: every target counts */
    int record_windows;     /* root attribute record_windows = 1: windows start at record starts */
    char path[1024];
} strand_dataset;

/* Open and validate a dataset on all ranks of `comm` (collective; MPI-IO driver). Refuses, with
 * file and reason, a missing or corrupt file, another tokenizer or an unknown format version.
 * The result is agreed across `comm`. */
int strand_dataset_open(strand_dataset *dataset, const char *path, MPI_Comm comm);
/* Open and validate a dataset on this process alone (serial HDF5), every byte verified first:
 * strand info, strand export and prep --tokenizer-from. Close with strand_dataset_close. */
int strand_dataset_open_serial(strand_dataset *dataset, const char *path);
/* Read tokens [offset, offset + count) into out (independent I/O: each rank its own hyperslab). */
int strand_dataset_read(strand_dataset *dataset, int64_t offset, int64_t count, strand_token_t *out);
/* Loss mask of positions [offset, offset + count) (1: the target of that position, the token
 * after it, counts; 0: it does not) as weights; all ones when the dataset has no /loss_mask. */
int strand_dataset_read_mask(strand_dataset *dataset, int64_t offset, int64_t count, real_t *out);
/* Is this a task dataset (tokenizer "task:*")? */
int strand_dataset_is_task(const strand_dataset *dataset);
/* Free everything; safe on a zeroed or already closed struct. Collective over the open's comm (the
 * MPI-IO file close is collective). */
void strand_dataset_close(strand_dataset *dataset);

/* Decode every record of a dataset back to its bases and write them to `out` as FASTA (one
 * ">name" line per record, 80 bases a line): strand export. Serial. */
int strand_dataset_export(const char *path, FILE *out);
/* Print a human summary of a dataset file to stdout (strand info). */
int strand_dataset_print_info(const char *path);

/* Is `path` a strand dataset (an HDF5 file with a root attribute "format_version" and /tokens)?
 * Serial. Fails only when the file is missing, unreadable or not HDF5. */
int strand_dataset_probe(const char *path, int *is_dataset);

/* ---- HDF5 helpers shared by strand's HDF5 code ---- */
/* Turn off HDF5's automatic error-stack printing: failures become strand errors instead. */
void strand_h5_quiet(void);
/* Record "PATH: WHAT (HDF5: <innermost HDF5 message>)" as STRAND_ERR_IO, clear the HDF5 error
 * stack and return STRAND_ERR_IO. */
int strand_h5_error(const char *file, int line, const char *path, const char *what);
#define STRAND_H5_FAIL(path, what) return strand_h5_error(__FILE__, __LINE__, (path), (what))
/* Close any HDF5 identifier (file, group, dataset, attribute, dataspace, datatype, property list)
 * and set it to H5I_INVALID_HID; ignores identifiers that are not valid. */
void strand_h5_close(hid_t *id);
/* Scalar attributes on `object`; `path` names the file in error messages. */
int strand_h5_write_string_attribute(hid_t object, const char *name, const char *value, const char *path);
int strand_h5_write_int_attribute(hid_t object, const char *name, int64_t value, const char *path);
int strand_h5_write_double_attribute(hid_t object, const char *name, double value, const char *path);
/* Read a string attribute (fixed- or variable-length) into value[capacity], truncating. *found is
 * 0 (and STRAND_OK returned) when the attribute does not exist. */
int strand_h5_read_string_attribute(hid_t object, const char *name, char *value, size_t capacity, int *found,
                                    const char *path);
/* Read an integer attribute of any integer type. *found as above. */
int strand_h5_read_int_attribute(hid_t object, const char *name, int64_t *value, int *found,
                                 const char *path);

#endif
