#!/usr/bin/env bash
# Ranks given different configurations or different dataset contents are refused before training,
# on every rank, with one line naming the first differing key and both values; nothing hangs.
# Each case is an MPMD launch (rank 0 and rank 1 get different command lines, as a stale config
# copy or another --set on one node would give them) under a timeout:
#   train.steps, train.seq_len, train.eval_windows, checkpoint.every (would hang), train.seed
#   (would train nonsense), data.path (another file on rank 1), the same data.path with another
#   split on rank 1 (a private bind mount stands in for a stale node-local copy), strand eval with
#   another --windows on one rank, and train.offload (a per-rank scratch path: allowed to differ).
set -euo pipefail
: "${STRAND:?}" "${STRAND_SOURCE_DIR:?}" "${STRAND_MPIEXEC:?}"
source "$(dirname "${BASH_SOURCE[0]}")/cli_common.sh"
cli_begin consistency

fasta="$STRAND_SOURCE_DIR/data/lambda_phage_NC_001416.fa.gz"
"$STRAND" prep --quiet --in "$fasta" --out "$work/a.h5" --val-fraction 0.1 >/dev/null
"$STRAND" prep --quiet --in "$fasta" --out "$work/b.h5" --val-fraction 0.2 >/dev/null

cli_tiny_ini "$work/tiny.ini" "$work/a.h5" <<INI
[train]
seq_len = 128
steps = 10
log_every = 5
eval_windows = 2
INI

# mpmd NAME [rank-0 args] -- [rank-1 args]: strand train at 2 ranks, rank 1 with extra arguments.
# Sets rc; output in $work/NAME.out/.err. A hang (timeout's 124) is a failure.
mpmd() {
    local name=$1
    shift
    local zero=() one=()
    while [ "$1" != "--" ]; do zero+=("$1"); shift; done
    shift
    one=("$@")
    rc=0
    timeout 30 "$STRAND_MPIEXEC" --oversubscribe \
        -n 1 "$STRAND" train --config "$work/tiny.ini" --set "run.dir=$work/$name" --quiet "${zero[@]}" : \
        -n 1 "$STRAND" train --config "$work/tiny.ini" --set "run.dir=$work/$name" --quiet "${one[@]}" \
        >"$work/$name.out" 2>"$work/$name.err" || rc=$?
}

# refused NAME PATTERN [rank-0 args] -- [rank-1 args]: exit 1, exactly one error line matching
# PATTERN (a fixed string), and no training.
refused() {
    local name=$1 pattern=$2
    shift 2
    mpmd "$name" "$@"
    local line
    line=$(grep 'strand train: error:' "$work/$name.err" || true)
    if [ "$rc" -eq 124 ]; then
        fail "$name: hung (killed after 30 s)"
    elif [ "$rc" -ne 1 ]; then
        fail "$name: exit $rc, expected 1"; cat "$work/$name.err"
    elif [ "$(grep -c 'strand train: error:' "$work/$name.err")" -ne 1 ]; then
        fail "$name: expected exactly one error line:"; cat "$work/$name.err"
    elif ! grep -qF -- "$pattern" <<<"$line"; then
        fail "$name: message does not contain '$pattern':"; echo "$line"
    elif [ -s "$work/$name/metrics.jsonl" ]; then
        fail "$name: trained anyway"
    else
        ok "$name: $line"
    fi
}

same="(every rank must be given the same configuration)"
refused steps "configuration differs between ranks: train.steps = 10 on rank 0, 12 on rank 1 $same" \
    -- --set train.steps=12
refused seq_len "train.seq_len = 128 on rank 0, 256 on rank 1" -- --set train.seq_len=256
refused eval_windows "train.eval_windows = 2 on rank 0, 3 on rank 1" -- --set train.eval_windows=3
refused ckpt_every "checkpoint.every = 0 on rank 0, 5 on rank 1" -- --set checkpoint.every=5
refused seed "train.seed = 1234 on rank 0, 99 on rank 1" -- --set train.seed=99
# A stale config copy on one node: the file differs, the first differing key is named.
sed 's/^d_model = 16/d_model = 24/' "$work/tiny.ini" >"$work/stale.ini"
refused stale_file "model.d_model = 16 on rank 0, 24 on rank 1" -- --config "$work/stale.ini"
# Another dataset file on rank 1 (the other split): data.path is compared like every key.
refused data_path "data.path = $work/a.h5 on rank 0, $work/b.h5 on rank 1" -- --set "data.path=$work/b.h5"

# The same data.path naming another file on rank 1 only (a node-local copy made with another
# --val-fraction): a private mount namespace binds the other file over it for rank 1 alone.
# strand's datasets carry a whole-file checksum header that the open compares across ranks; files
# without one (written by an older strand: h5unjam strips it here) are caught by the comparison
# of the dataset's tables, which names the first differing table.
# split_case NAME A B PATTERN: rank 1 sees B at A's path; exit 1, one error line containing PATTERN
split_case() {
    local name=$1 a=$2 b=$3 pattern=$4
    rc=0
    timeout 30 "$STRAND_MPIEXEC" --oversubscribe \
        -n 1 "$STRAND" train --config "$work/tiny.ini" --set "run.dir=$work/$name" --set "data.path=$a" --quiet : \
        -n 1 unshare -m sh -c 'mount --bind "$1" "$2" && shift 2 && exec "$@"' sh "$b" "$a" \
        "$STRAND" train --config "$work/tiny.ini" --set "run.dir=$work/$name" --set "data.path=$a" --quiet \
        >"$work/$name.out" 2>"$work/$name.err" || rc=$?
    local line
    line=$(grep 'strand train: error:' "$work/$name.err" || true)
    if [ "$rc" -ne 1 ] || [ "$(grep -c 'strand train: error:' "$work/$name.err")" -ne 1 ]; then
        fail "$name: exit $rc, expected 1 with one error line"; cat "$work/$name.err"
    elif ! grep -qF -- "$pattern" <<<"$line"; then
        fail "$name: message lacks '$pattern':"; echo "$line"
    elif [ -s "$work/$name/metrics.jsonl" ]; then
        fail "$name: trained anyway"
    else
        ok "$name: $line"
    fi
}
if [ "$(id -u)" -eq 0 ] && unshare -m true 2>/dev/null; then
    split_case split "$work/a.h5" "$work/b.h5" "rank 1"
    h5unjam -i "$work/a.h5" -o "$work/a0.h5" -u "$work/a.ub" >/dev/null
    h5unjam -i "$work/b.h5" -o "$work/b0.h5" -u "$work/b.ub" >/dev/null
    split_case split_tables "$work/a0.h5" "$work/b0.h5" \
        "dataset $work/a0.h5 differs between ranks: split/train = 1 range of 43652 tokens on rank 0, 1 range of 38802 tokens on rank 1 (every rank must read the same dataset file"
else
    echo "skip split: needs root and unshare -m for a private bind mount"
fi

# train.offload is a directory on each node's local scratch: the path may differ per rank (each rank
# writes its own unlinked file there); whether offload is on may not (it changes the collectives).
mpmd offload --set "train.offload=$work/scratch0" -- --set "train.offload=$work/scratch1"
if [ "$rc" -ne 0 ] || [ ! -s "$work/offload/summary.json" ]; then
    fail "offload: per-rank train.offload paths: exit $rc"; cat "$work/offload.err"
else
    ok "offload: train.offload may differ between ranks"
fi
refused offload_on_off "train.offload = <a directory> on rank 0, \"\" on rank 1" \
    --set "train.offload=$work/scratch0" --

# strand eval shares the start path: another --windows on one rank is refused, not hung.
ck=$work/offload
rc=0
timeout 30 "$STRAND_MPIEXEC" --oversubscribe -n 1 "$STRAND" eval --checkpoint "$ck" --windows 2 : \
    -n 1 "$STRAND" eval --checkpoint "$ck" --windows 3 >"$work/eval.out" 2>"$work/eval.err" || rc=$?
if [ "$rc" -ne 1 ] || ! grep -qF "strand eval: error: configuration differs between ranks: train.eval_windows = 2 on rank 0, 3 on rank 1" "$work/eval.err"; then
    fail "eval: exit $rc, expected 1 naming train.eval_windows"; cat "$work/eval.err"
else
    ok "eval: $(grep 'error:' "$work/eval.err")"
fi

# And the same configuration on both ranks still trains.
mpmd good --
if [ "$rc" -ne 0 ] || [ "$(wc -l <"$work/good/metrics.jsonl")" -ne 10 ]; then
    fail "good: exit $rc"; cat "$work/good.err"
else
    ok "good: identical configurations train"
fi

# Options outside the configuration are agreed too: --resume on one rank only would start the
# ranks at different steps (rank 1 at step 10 of 10, rank 0 at 0), another --step in strand grad
# would mix the gradients of two batches.
ck=$work/good/checkpoints/ckpt-10.h5
refused resume_one_rank "--resume/--no-resume differs between ranks: (neither) on rank 0, --resume $ck on rank 1" \
    -- --resume "$ck"
rc=0
timeout 30 "$STRAND_MPIEXEC" --oversubscribe -n 1 "$STRAND" grad --checkpoint "$ck" --step 5 --out "$work/g.h5" : \
    -n 1 "$STRAND" grad --checkpoint "$ck" --step 6 --out "$work/g.h5" >"$work/grad.out" 2>"$work/grad.err" || rc=$?
if [ "$rc" -ne 1 ] || ! grep -qF "strand grad: error: --step differs between ranks: 5 on rank 0, 6 on rank 1" "$work/grad.err"; then
    fail "grad: exit $rc, expected 1 naming --step"; cat "$work/grad.err"
else
    ok "grad: $(grep 'error:' "$work/grad.err")"
fi

cli_end "all rank-consistency cases behaved"
