#!/usr/bin/env bash
# A file that one node does not see, simulated on one machine: rank 1 runs in its own mount
# namespace (unshare -m) where a directory is hidden by an empty tmpfs or made read-only.
#   dataset:     the dataset's directory is empty on rank 1
#   checkpoint:  the run's checkpoints/ is empty on rank 1 at resume
#   read-only:   the run directory is read-only on rank 1 when a checkpoint is written
#   private dir: the run directory is another (empty) file system on rank 1
# Each must end within the timeout with exit 1 and one error line that names rank 1; before the
# fix each hung inside a collective HDF5 open or create. Needs root (mounts); skips without it.
set -euo pipefail
: "${STRAND_MPIEXEC:?}"
source "$(dirname "${BASH_SOURCE[0]}")/cli_common.sh"
cli_need_root
cli_begin nodes

mkdir -p "$work/data"
cli_prep "$work/data/lambda.h5"
cli_tiny_ini "$work/tiny.ini" "$work/data/lambda.h5" <<INI
[train]
seq_len = 256
steps = 10
warmup_steps = 2
log_every = 5
eval_windows = 1
[checkpoint]
every = 5
INI

# two_ranks NAME SETUP RUN_DIR [train args]: rank 0 plain, rank 1 after SETUP (shell commands run
# in its private mount namespace). Sets rc; output in $work/NAME.out/.err.
two_ranks() {
    local name=$1 setup=$2 dir=$3
    shift 3
    rc=0
    timeout 60 "$STRAND_MPIEXEC" --oversubscribe \
        -n 1 "$STRAND" train --config "$work/tiny.ini" --set "run.dir=$dir" --quiet "$@" : \
        -n 1 unshare -m sh -c "$setup && exec \"\$0\" \"\$@\"" \
        "$STRAND" train --config "$work/tiny.ini" --set "run.dir=$dir" --quiet "$@" \
        >"$work/$name.out" 2>"$work/$name.err" || rc=$?
}

# expect NAME PATTERN: exit 1 within the timeout, one error line, matching PATTERN.
expect() {
    local name=$1 pattern=$2
    if [ "$rc" -eq 124 ]; then
        fail "$name: hung (killed after 60 s)"
    elif [ "$rc" -ne 1 ]; then
        fail "$name: exit $rc, expected 1"
        cat "$work/$name.err"
    elif [ "$(grep -c 'strand train: error:' "$work/$name.err")" -ne 1 ] || ! grep -qE -- "$pattern" "$work/$name.err"; then
        fail "$name: error line does not match /$pattern/:"
        cat "$work/$name.err"
    else
        ok "$name: $(grep 'strand train: error:' "$work/$name.err")"
    fi
}

two_ranks dataset "mount -t tmpfs none '$work/data'" "$work/run-dataset"
expect dataset "lambda.h5: no such file \(on rank 1\)"

# A run preempted after step 5 (checkpoint 5); its resume finds checkpoints/ empty on rank 1.
STRAND_FAULT_PREEMPT_STEP=5 timeout 60 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train \
    --config "$work/tiny.ini" --set "run.dir=$work/run" --quiet >/dev/null || [ $? -eq 75 ]
two_ranks checkpoint "mount -t tmpfs none '$work/run/checkpoints'" "$work/run-resume" --resume "$work/run"
expect checkpoint "ckpt-5.h5: no such file \(on rank 1\)"

mkdir -p "$work/run-ro"
two_ranks read-only "mount --bind '$work/run-ro' '$work/run-ro' && mount -o remount,bind,ro '$work/run-ro'" \
    "$work/run-ro" --no-resume
expect read-only "rank 1 cannot open .*ckpt-5.h5.tmp for writing: Read-only file system"
[ -e "$work/run-ro/checkpoints/ckpt-5.h5.tmp" ] && fail "read-only: left a temporary file behind"

mkdir -p "$work/run-private"
two_ranks private-dir "mount -t tmpfs none '$work/run-private'" "$work/run-private" --no-resume
expect private-dir "rank 1 cannot open .*ckpt-5.h5.tmp for writing: No such file"

cli_end "all node-file cases passed"
