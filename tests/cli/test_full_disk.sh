#!/usr/bin/env bash
# A full disk during a checkpoint write: run.dir on a small tmpfs that holds one checkpoint.
# The run must stop within the timeout with exit 1 and one error line saying the disk is full
# (before the fix the ranks hung in HDF5's collective close), leave no temporary file, and keep
# every earlier checkpoint intact: each still verifies, and the run resumes from the newest one
# on a disk with room and completes. Needs root (mount); skips without it.
set -euo pipefail
: "${STRAND_MPIEXEC:?}"
source "$(dirname "${BASH_SOURCE[0]}")/cli_common.sh"
cli_need_root
cli_begin full
cli_cleanup() {
    umount "$work/small" 2>/dev/null || true
}

cli_prep "$work/lambda.h5"
cat >"$work/tiny.ini" <<INI
[model]
d_model = 128
layers = conv,conv
mlp_hidden = 256
[train]
seq_len = 256
steps = 20
warmup_steps = 4
log_every = 5
eval_windows = 1
[checkpoint]
every = 5
keep = 10
[data]
path = $work/lambda.h5
INI
mkdir -p "$work/small"
# Room for one checkpoint and not two (the tensors take twice the bytes in the double build).
size=5m
[ "${STRAND_REAL:-float}" = double ] && size=9m
mount -t tmpfs -o "size=$size" none "$work/small"
rc=0
timeout 60 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --config "$work/tiny.ini" \
    --set "run.dir=$work/small/run" --quiet >"$work/out" 2>"$work/err" || rc=$?
if [ "$rc" -eq 124 ]; then
    fail "the run hung on the full disk"
elif [ "$rc" -ne 1 ] || [ "$(grep -c 'strand train: error:' "$work/err")" -ne 1 ] ||
    ! grep -q 'No space left on device\|not enough space' "$work/err"; then
    fail "exit $rc, expected 1 with one 'No space left on device' line:"
    cat "$work/err"
else
    ok "stopped: $(grep 'strand train: error:' "$work/err")"
fi
ls "$work/small/run/checkpoints"/*.tmp >/dev/null 2>&1 && fail "a temporary checkpoint was left behind"
kept=$(ls "$work/small/run/checkpoints" | grep -c '^ckpt-[0-9]*\.h5$' || true)
[ "$kept" -ge 1 ] || fail "no checkpoint was written before the disk filled"
for ck in "$work/small/run/checkpoints"/ckpt-*.h5; do
    if "$STRAND" info "$ck" | grep -q "file checksum: CRC-32 of all"; then
        ok "intact: $(basename "$ck")"
    else
        fail "$(basename "$ck") does not verify"
    fi
done
# The newest checkpoint carries the run on a disk with room.
cp -r "$work/small/run" "$work/run"
rc=0
timeout 60 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --config "$work/tiny.ini" \
    --set "run.dir=$work/run" --quiet >"$work/out2" 2>"$work/err2" || rc=$?
if [ "$rc" -eq 0 ] && grep -q '^resuming from .*ckpt-' "$work/out2" && [ -s "$work/run/summary.json" ]; then
    ok "resumed from the newest checkpoint and completed"
else
    fail "resume after the full disk: exit $rc"
    cat "$work/err2"
fi

cli_end "full-disk case passed"
