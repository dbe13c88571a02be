/* Every rank must run with the same configuration and the same dataset: a stale config copy on
 * one node or another --set on one rank would otherwise hang a collective (train.steps,
 * checkpoint.every, train.eval_windows) or silently train nonsense (train.seq_len, train.seed, a
 * dataset copy with another split). Rank 0's configuration text is compared exactly on every
 * rank (train.offload's directory excepted: each node's own scratch, so only whether it is set is
 * compared); the dataset by its tables. A difference is named with rank 0's value and the lowest
 * differing rank's. */
#ifndef STRAND_CONSISTENCY_H
#define STRAND_CONSISTENCY_H

#include "strand/config.h"
#include "strand/dataset.h"

#include <stdint.h>

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
