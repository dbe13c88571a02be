/* Every rank must run with the same configuration and the same dataset: a stale config copy on
 * one node or another --set on one rank would otherwise hang a collective (train.steps,
 * checkpoint.every, train.eval_windows) or silently train nonsense (train.seq_len, train.seed, a
 * dataset copy with another split). The checks agree on a hash and, when it differs, name the
 * first difference with rank 0's value and the differing rank's. */
#ifndef STRAND_CONSISTENCY_H
#define STRAND_CONSISTENCY_H

#include "strand/config.h"
#include "strand/dataset.h"

#include <stdint.h>

/* 64-bit FNV-1a of `size` bytes, continuing from `hash` (start with STRAND_HASH_SEED). */
#define STRAND_HASH_SEED UINT64_C(0xcbf29ce484222325)
uint64_t strand_hash_bytes(uint64_t hash, const void *bytes, size_t size);

/* A hash of an open dataset's in-memory tables, from its public fields only: n_tokens, the record
 * table (names, offsets, lengths) and the train and val splits. The tokens themselves are not
 * read. */
uint64_t strand_dataset_tables_hash(const strand_dataset *dataset);

/* The text the configuration check compares: the strand build, then the resolved configuration
 * (strand_config_format) with the per-rank keys normalised. train.offload is per-rank: a
 * directory on each node's local scratch, where each rank writes its own unlinked file, so only
 * whether it is set is compared (that changes the collectives). Returns a malloc'ed string, or
 * NULL on allocation failure. */
char *strand_consistency_config_text(const strand_config *config);

/* Agree that every rank of `comm` holds the same configuration. Collective; returns the same
 * status on every rank. On a difference, STRAND_ERR_INPUT with "configuration differs between
 * ranks: KEY = V0 on rank 0, VR on rank R (every rank must be given the same configuration)",
 * R the lowest differing rank (its rank in MPI_COMM_WORLD). */
int strand_consistency_config(MPI_Comm comm, const strand_config *config);

/* Agree that every rank of `comm` passes the same `value` for an option outside the configuration
 * (--resume, --checkpoint, --step, ...). Collective; on a difference every rank returns
 * STRAND_ERR_INPUT with "NAME differs between ranks: V0 on rank 0, VR on rank R (...)". */
int strand_consistency_value(MPI_Comm comm, const char *name, const char *value);

/* Agree that every rank of `comm` opened a dataset with the same tables (a node-local copy made
 * with another split, or another genome, is caught). Collective; the same status on every rank;
 * the message names the first differing table with both ranks' values. */
int strand_consistency_dataset(MPI_Comm comm, const strand_dataset *dataset);

#endif
