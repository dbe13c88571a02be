#!/usr/bin/env bash
# The memory model against measured peaks: for each configuration below, `strand train --dry-run`
# predicts the peak resident bytes of the most loaded rank, then 2 training steps run at the same
# rank count and metrics.jsonl reports the measured peak (the maximum over ranks). The dry run's
# memory plan must equal the plan training allocated byte for byte (summary.json planned_bytes).
# The test fails
# when |measured - predicted| > 5% of measured, or when the dry run's parameter count differs
# from the model's. Configurations cover conv, hyena, s4d, attn and a hybrid, recompute none and
# block, train.offload, both long-convolution strategies, post-norm/layernorm/swiglu, dp = 2, a parameter-heavy
# model (the gradient all-reduce's scratch), and 1-4 ranks with
# uneven shards; each is sized so that the prediction is well above the ~35 MB baseline.
# Also: --dry-run refuses bad --ranks (usage, exit 2) and an invalid configuration exactly as
# training does, runs without mpirun, and writes nothing.
# Skipped (77) in sanitizer builds: ASan's shadow memory and redzones inflate the resident size.
set -euo pipefail
: "${STRAND:?}" "${STRAND_SOURCE_DIR:?}" "${STRAND_MPIEXEC:?}"
if [ "${STRAND_SANITIZE:-OFF}" = "ON" ]; then
    echo "skip: sanitizer build (ASan inflates resident memory)"
    exit 77
fi
if [ ! -r /proc/self/status ]; then
    echo "skip: no /proc/self/status (the dry run reads VmRSS there)"
    exit 77
fi
work=$(mktemp -d /tmp/strand_memory.XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

"$STRAND" prep --quiet --in "$STRAND_SOURCE_DIR/data/lambda_phage_NC_001416.fa.gz" --out "$work/lambda.h5" \
    --val-fraction 0.02 >/dev/null
common=(--set "data.path=$work/lambda.h5" --set train.steps=2 --set train.eval_windows=0
    --set checkpoint.every=0 --set model.mlp_hidden=64)

# value KEY LINE: the number after KEY= in a dry-run line
value() { sed -nE "s/.*[ :]$1=([0-9]+).*/\1/p" <<<"$2"; }

# check NAME NP KEY=VALUE...: predict, train 2 steps, compare.
check() {
    local name=$1 np=$2
    shift 2
    local sets=("${common[@]}") run="$work/$name" rc=0
    for kv in "$@"; do sets+=(--set "$kv"); done
    local line
    line=$(timeout 60 "$STRAND_MPIEXEC" --oversubscribe -n "$np" "$STRAND" train --dry-run "${sets[@]}" |
        grep '^dry-run:' | head -1) || true
    if [ -z "$line" ]; then fail "$name: no dry-run line"; return; fi
    timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n "$np" "$STRAND" train "${sets[@]}" --set "run.dir=$run" \
        --quiet --progress plain >"$run.out" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then fail "$name: training exit $rc"; cat "$run.out"; return; fi
    local predicted measured params
    predicted=$(value predicted_peak_bytes "$line")
    measured=$(grep -o '"peak_rss_bytes":[0-9]*' "$run/summary.json" 2>/dev/null | cut -d: -f2 || true)
    [ -n "$measured" ] || measured=$(tail -1 "$run/metrics.jsonl" | grep -o '"peak_rss_bytes":[0-9]*' | cut -d: -f2)
    params=$(grep -o '"parameters":[0-9]*' "$run/summary.json" | cut -d: -f2)
    local verdict
    verdict=$(awk -v p="$predicted" -v m="$measured" 'BEGIN { d = m - p; if (d < 0) d = -d; print (m > 0 && d <= 0.05 * m) ? "ok" : "bad" }')
    awk -v n="$name" -v r="$np" -v p="$predicted" -v m="$measured" -v v="$verdict" \
        'BEGIN { printf "%-4s %-24s ranks %d  predicted %8.1f MB  measured %8.1f MB  ratio %.3f\n", v == "ok" ? "ok" : "FAIL", n, r, p / 1e6, m / 1e6, p / m }'
    [ "$verdict" = ok ] || failures=$((failures + 1))
    # The dry run's plan is the plan training allocated, to the byte (the same declarations).
    local planned
    planned=$(grep -o '"planned_bytes":[0-9]*' "$run/summary.json" | cut -d: -f2)
    if [ "$planned" != "$(value planned_bytes "$line")" ]; then
        fail "$name: dry run plans $(value planned_bytes "$line") bytes, training allocated $planned"
    else
        echo "ok   $name: dry-run plan = allocated plan = $planned bytes"
    fi
    if [ "$params" != "$(value parameters "$line")" ]; then
        fail "$name: dry run counts $(value parameters "$line") parameters, the model has $params"
    fi
}

check conv-1r 1 model.layers=conv,conv model.d_model=128 train.seq_len=40000
check hyena-recompute-2r 2 model.layers=hyena,hyena model.d_model=64 train.seq_len=40001 train.recompute=block
check s4d-3r 3 model.layers=s4d,s4d model.d_model=64 s4d.state=8 train.seq_len=40000
check s4d-fftw-mpi-2r 2 model.layers=s4d model.d_model=64 s4d.state=8 train.seq_len=40001 fft.strategy=fftw-mpi
check attn-zigzag-4r 4 model.layers=attn,attn model.d_model=512 attn.heads=8 train.seq_len=4099
check hybrid-recompute-3r 3 model.layers=hyena,attn,conv,hyena,attn model.d_model=192 attn.heads=4 \
    train.seq_len=7001 train.recompute=block
check offload-2r 2 model.layers=conv,conv,conv,conv,conv model.d_model=128 train.seq_len=40000 \
    "train.offload=$work/offload"
check wide-mlp-2r 2 model.layers=conv,conv model.d_model=1024 model.mlp_hidden=2048 train.seq_len=512
check postnorm-dp2-2r 2 model.layers=conv,s4d model.d_model=96 model.norm=layernorm model.norm_position=post \
    model.mlp=swiglu s4d.state=8 train.seq_len=20001 parallel.dp=2

# A hypothetical rank count gives the same row as running on it (here: sp = 2 from one process).
alone=$("$STRAND" train --dry-run "${common[@]}" --set model.layers=conv --set train.seq_len=1001 --ranks 2 |
    grep '^dry-run: sp=2') || true
two=$("$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --dry-run "${common[@]}" --set model.layers=conv \
    --set train.seq_len=1001 | grep '^dry-run: sp=2') || true
strip() { sed -E 's/ (predicted_peak_bytes|baseline)=[0-9]+//g' <<<"$1"; }
if [ -z "$alone" ] || [ "$(strip "$alone")" != "$(strip "$two")" ]; then
    fail "--ranks 2 without mpirun ('$alone') differs from 2 ranks ('$two')"
else
    echo "ok   --ranks 2 from one process equals the row at 2 ranks"
fi

# Usage errors: exit 2 with one line.
for bad in 0 2,x -3 "" 2,,4; do
    rc=0
    "$STRAND" train --dry-run "${common[@]}" --ranks "$bad" >/dev/null 2>"$work/usage.err" || rc=$?
    if [ "$rc" -ne 2 ] || [ "$(grep -c 'error:' "$work/usage.err")" -ne 1 ]; then
        fail "--ranks '$bad': exit $rc, expected 2 with one error line"
    fi
done
rc=0
"$STRAND" train "${common[@]}" --ranks 2 >/dev/null 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "--ranks without --dry-run: exit $rc, expected 2"

# An invalid configuration fails the dry run as it fails training (same line, same exit code).
for bad in model.layers=conv,bogus train.seq_len=3 attn.heads=5; do
    sets=("${common[@]}" --set "model.layers=attn,conv" --set train.seq_len=4000 --set "$bad" --set "run.dir=$work/bad")
    rc1=0 rc2=0
    "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --dry-run "${sets[@]}" >/dev/null 2>"$work/dry.err" || rc1=$?
    "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train "${sets[@]}" --quiet >/dev/null 2>"$work/train.err" || rc2=$?
    dry=$(grep 'strand train: error:' "$work/dry.err" || true)
    trained=$(grep 'strand train: error:' "$work/train.err" || true)
    if [ "$rc1" -eq 0 ] || [ "$rc1" -ne "$rc2" ] || [ -z "$dry" ] || [ "$dry" != "$trained" ]; then
        fail "$bad: dry run exit $rc1 ($dry), training exit $rc2 ($trained)"
    else
        echo "ok   $bad refused alike: $dry"
    fi
done
rm -rf "$work/bad"

# Nothing written: a dry run leaves run.dir absent.
"$STRAND" train --dry-run "${common[@]}" --set model.layers=conv --set "run.dir=$work/never" >/dev/null
[ ! -e "$work/never" ] || fail "--dry-run created run.dir"

if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)"
    exit 1
fi
echo "all memory model checks passed"
