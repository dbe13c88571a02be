#!/usr/bin/env bash
# strand train refuses bad input on every rank with one clear line and a non-zero exit, never
# hanging: each case runs under a timeout at 2 ranks (a hang fails the test).
set -euo pipefail
: "${STRAND:?}" "${STRAND_SOURCE_DIR:?}" "${STRAND_MPIEXEC:?}"
work=$(mktemp -d /tmp/strand_errors.XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
fasta="$STRAND_SOURCE_DIR/data/lambda_phage_NC_001416.fa.gz"
"$STRAND" prep --quiet --in "$fasta" --out "$work/lambda.h5" --val-fraction 0.05 >/dev/null

cat >"$work/tiny.ini" <<INI
[model]
d_model = 16
layers = conv,conv
[train]
seq_len = 128
steps = 5
log_every = 1
eval_windows = 0
[data]
path = $work/lambda.h5
[run]
dir = $work/run
INI

# expect NAME EXIT_CODE PATTERN -- ARGS...: run strand train at NP (default 2) ranks and check the exit code,
# that stderr holds exactly one error line, and that it matches PATTERN.
expect() {
    local name=$1 code=$2 pattern=$3
    shift 4
    local out="$work/$name.out" err="$work/$name.err" rc=0
    timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n "${NP:-2}" "$STRAND" train "$@" >"$out" 2>"$err" || rc=$?
    local lines
    lines=$(grep -c 'strand train: error:' "$err" || true)
    if [ "$rc" -eq 124 ]; then
        echo "FAIL $name: hung (killed after 120 s)"; failures=$((failures + 1))
    elif [ "$rc" -ne "$code" ]; then
        echo "FAIL $name: exit $rc, expected $code"; cat "$err"; failures=$((failures + 1))
    elif [ "$lines" -ne 1 ]; then
        echo "FAIL $name: $lines error lines, expected exactly 1"; cat "$err"; failures=$((failures + 1))
    elif ! grep -q -E -- "$pattern" "$err"; then
        echo "FAIL $name: message does not match /$pattern/:"; cat "$err"; failures=$((failures + 1))
    else
        echo "ok   $name: $(grep 'strand train: error:' "$err")"
    fi
}

c="$work/tiny.ini"
expect unknown_key 1 "unknown config key 'train.lrr' \(did you mean 'train.lr'\?\)" -- --config "$c" --set train.lrr=1e-3
# The vocabulary is the dataset's: a model.vocab that differs is refused before any step.
expect vocab 1 "model.vocab = 16, but the tokenizer of .*lambda.h5 has 8 tokens" -- --config "$c" --set model.vocab=16
expect out_of_range 1 "train.lr = -1: out of range" -- --config "$c" --set train.lr=-1
expect bad_value 1 "model.norm" -- --config "$c" --set model.norm=batchnorm
expect unknown_flag 2 "unknown option '--stpes'" -- --config "$c" --stpes 10
expect missing_config 1 "cannot open config file" -- --config "$work/nope.ini"
NP=4 expect seq_len_below_sp 1 "train.seq_len = 3 is smaller than the 4 ranks" -- --config "$c" --set train.seq_len=3
expect seq_len_too_long 1 "train.seq_len = 100000 .*longest: [0-9]+ tokens" -- --config "$c" --set train.seq_len=100000
expect missing_dataset 1 "nothere.h5" -- --config "$c" --set data.path="$work/nothere.h5"
head -c 4096 /dev/urandom >"$work/corrupt.h5"
expect corrupt_dataset 1 "corrupt.h5" -- --config "$c" --set data.path="$work/corrupt.h5"
expect bad_grid 1 "parallel.sp = 3 does not divide the 2 ranks" -- --config "$c" --set parallel.sp=3
STRAND_FAULT_NAN_STEP=3 STRAND_FAULT_RANK=1 expect nan_loss 1 "diverged at step 3" -- --config "$c"
# The NaN stopped the run: the metrics of steps 1-2 are kept, no summary claims success.
if [ "$(wc -l <"$work/run/metrics.jsonl")" -ne 2 ] || [ -e "$work/run/summary.json" ]; then
    echo "FAIL nan_loss: expected 2 metric lines and no summary.json"; failures=$((failures + 1))
fi

# Activation offload: a scratch directory that cannot exist, and a transfer that fails on one rank
# only (a full local disk); both end the job on every rank with one line.
expect offload_dir 1 "train.offload: cannot create directory /proc/strand-offload" -- --config "$c" --set model.layers=conv,conv,conv,conv --set train.offload=/proc/strand-offload
STRAND_FAULT_OFFLOAD_RANK=1 expect offload_io 1 "train.offload: writing block 0's input .* failed" -- --config "$c" --set model.layers=conv,conv,conv,conv,conv --set train.offload="$work/scratch"

# A file line error: misspelt key inside a config file names file and line.
printf '[model]\nd_modle = 32\n' >"$work/bad.ini"
expect misspelt_in_file 1 "bad.ini:2: .*did you mean 'model.d_model'" -- --config "$work/bad.ini"

# And a good run still works at the end.
rc=0
timeout 300 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --config "$c" --quiet >/dev/null 2>"$work/good.err" || rc=$?
if [ "$rc" -ne 0 ]; then echo "FAIL good run: exit $rc"; cat "$work/good.err"; failures=$((failures + 1)); else echo "ok   good run"; fi

[ "$failures" -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
echo "all error cases behaved"
