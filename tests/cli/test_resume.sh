#!/usr/bin/env bash
# Checkpoint and resume through the strand binary:
#   metrics:     grad_norm_by_block has one norm per block, within grad_norm
#   bit-exact:   20 steps at SP=2 uninterrupted == 10 steps, preempted (on one rank only), + 10
#                resumed (metrics.jsonl step/loss/bpb/lr/grad_norm/grad_norm_by_block/tokens compared
#                as text)
#   SIGUSR1:     a real signal to mpirun mid-run: exit 75, a checkpoint at the step it stopped,
#                and the resumed run equals the uninterrupted one bit for bit
#   kill -9:     the job killed while checkpoint 10 is being written (STRAND_FAULT_CKPT_SLEEP holds
#                it between the complete .tmp and the rename): the resume takes checkpoint 5, loses
#                no step past it, and metrics.jsonl ends with each step once
#   reshard:     written at 2 ranks, resumed at 3; written at 4, resumed at 1 (losses within 1e-5)
#   refusals:    another model shape, another configuration, a corrupt, a truncated checkpoint, and a
#                run directory whose only checkpoint is corrupt (refused, never restarted from 0)
#   grad / info: strand grad reproduces the logged loss of the step after a checkpoint; strand info
#                summarises a checkpoint
# Every mpirun runs under a timeout: a hang fails the test.
set -euo pipefail
: "${STRAND:?}" "${STRAND_SOURCE_DIR:?}" "${STRAND_MPIEXEC:?}"
work=$(mktemp -d /tmp/strand_resume.XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
ok() { echo "ok   $*"; }

"$STRAND" prep --quiet --in "$STRAND_SOURCE_DIR/data/lambda_phage_NC_001416.fa.gz" --out "$work/lambda.h5" \
    --val-fraction 0.05 >/dev/null

cat >"$work/tiny.ini" <<INI
[model]
d_model = 16
layers = conv,conv
mlp_hidden = 32
[train]
seq_len = 256
steps = 20
warmup_steps = 4
log_every = 5
eval_windows = 2
[checkpoint]
every = 5
keep = 10
[data]
path = $work/lambda.h5
INI

# train NP RUN_DIR [args...]: strand train at NP ranks; sets rc, output in RUN_DIR.out/.err
train() {
    local np=$1 dir=$2
    shift 2
    rc=0
    timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n "$np" "$STRAND" train --config "$work/tiny.ini" \
        --set "run.dir=$dir" --quiet "$@" >"$dir.out" 2>"$dir.err" || rc=$?
    if [ "$rc" -eq 124 ]; then fail "strand train in $dir hung"; fi
}

# The per-step numbers that must not change across a resume (timings do).
numbers() { sed -E 's/^(\{"step":[0-9]+,"loss":[^,]*,"bpb":[^,]*,"lr":[^,]*,"grad_norm":[^,]*,"grad_norm_by_block":\[[^]]*\],)"tokens_per_s":[^,]*,("tokens":[0-9]+).*/\1\2/' "$1"; }
steps_once() { # every step 1..20 exactly once, in order
    [ "$(sed -E 's/^\{"step":([0-9]+),.*/\1/' "$1" | tr '\n' ' ')" = "$(seq -s ' ' 1 20) " ]
}
# close A B: the losses of the steps both files have agree within 1e-5 (relative)
close() {
    awk -F'[:,]' 'NR == FNR { ref[$2] = $4; next }
        { d = $4 - ref[$2]; if (d < 0) d = -d; s = ref[$2] < 0 ? -ref[$2] : ref[$2];
          if (!($2 in ref) || d > 1e-5 * s) { printf "step %s: %s vs %s\n", $2, $4, ref[$2]; bad = 1 } }
        END { exit bad }' "$1" "$2"
}

# ---- the reference: 20 steps at SP=2, uninterrupted ----
ref=$work/ref
train 2 "$ref"
if [ "$rc" -ne 0 ] || ! steps_once "$ref/metrics.jsonl" || [ ! -s "$ref/summary.json" ]; then
    fail "reference run: exit $rc"; cat "$ref.err"; exit 1
fi
ok "reference run: 20 steps, checkpoints $(ls "$ref/checkpoints" | tr '\n' ' ')"

# Per-block gradient norms: one per block, each positive, and their squares add up to at most the
# whole gradient's (the embedding and the final norm are outside the blocks).
by_block=$(sed -nE 's/.*"grad_norm":([^,]+),"grad_norm_by_block":\[([^]]*)\].*/\1 \2/p' "$ref/metrics.jsonl" |
    awk '{ n = split($2, v, ","); s = 0; bad = (n != 2); for (i = 1; i <= n; i++) { s += v[i] * v[i]; if (v[i] <= 0) bad = 1 }
           if (s > $1 * $1 * (1 + 1e-6)) bad = 1; lines++; bads += bad } END { print lines + 0, bads + 0 }')
if [ "$by_block" = "20 0" ]; then
    ok "metrics.jsonl: grad_norm_by_block holds 2 positive norms per step, within grad_norm"
else
    fail "grad_norm_by_block: (lines, bad lines) = ($by_block), expected (20, 0)"
fi

# ---- bit-exact: 10 steps, preempted, then resumed ----
# Only rank 1 "receives the signal": the ranks must agree on it and stop together.
run=$work/exact
STRAND_FAULT_PREEMPT_STEP=10 STRAND_FAULT_RANK=1 train 2 "$run"
if [ "$rc" -ne 75 ] || [ ! -s "$run/checkpoints/ckpt-10.h5" ] || [ -e "$run/summary.json" ]; then
    fail "preempted at step 10: exit $rc (expected 75), checkpoint 10 and no summary"; cat "$run.err"
else
    train 2 "$run"
    if [ "$rc" -ne 0 ] || ! grep -q "resuming from $run/checkpoints/ckpt-10.h5" "$run.out"; then
        fail "resume after step 10: exit $rc"; cat "$run.out" "$run.err"
    elif ! steps_once "$run/metrics.jsonl" || ! diff <(numbers "$ref/metrics.jsonl") <(numbers "$run/metrics.jsonl"); then
        fail "10 + resumed 10 steps differ from 20 uninterrupted steps (above)"
    elif ! diff <(sed -E 's/"seconds":[^,]*,//; s/"peak_rss_bytes":[0-9]+//' "$ref/summary.json") \
        <(sed -E 's/"seconds":[^,]*,//; s/"peak_rss_bytes":[0-9]+//' "$run/summary.json"); then
        fail "summary.json differs after a resume"
    else
        ok "bit-exact resume at SP=2: 10 + 10 steps == 20 steps"
    fi
fi

# ---- bit-exact with attention's segment memory (carried from one step to the next) ----
memory=(--set model.layers=attn,conv --set attn.heads=2 --set attn.segment_memory=true)
mref=$work/mref
train 2 "$mref" "${memory[@]}"
run=$work/mexact
STRAND_FAULT_PREEMPT_STEP=10 STRAND_FAULT_RANK=0 train 2 "$run" "${memory[@]}"
if [ "$rc" -ne 75 ]; then
    fail "segment memory: preempt at step 10: exit $rc (expected 75)"; cat "$run.err"
else
    train 2 "$run" "${memory[@]}"
    if [ "$rc" -ne 0 ] || grep -q "runs without it" "$run.out"; then
        fail "segment memory: resume: exit $rc, or the memory was not restored"; cat "$run.out" "$run.err"
    elif ! diff <(numbers "$mref/metrics.jsonl") <(numbers "$run/metrics.jsonl"); then
        fail "segment memory: 10 + resumed 10 steps differ from 20 uninterrupted steps (above)"
    else
        ok "bit-exact resume with attn.segment_memory at SP=2 (the memory is in the checkpoint)"
    fi
    # On another grid the rows belong to other positions: resumed without them, and said so.
    cp -r "$run" "$work/mreshard"
    rm -f "$work/mreshard/summary.json"
    train 3 "$work/mreshard" "${memory[@]}" --resume "$run/checkpoints/ckpt-10.h5"
    if [ "$rc" -ne 0 ] || ! grep -q "belongs to another grid" "$work/mreshard.out"; then
        fail "segment memory: resume at 3 ranks: exit $rc, expected a note"; cat "$work/mreshard.out" "$work/mreshard.err"
    else
        ok "segment memory: resumed at 3 ranks without it, with a note"
    fi
fi

# ---- a real SIGUSR1 to mpirun mid-run ----
run=$work/signal
mkdir -p "$run"
rc=0
STRAND_FAULT_STEP_SLEEP=0.15 timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train \
    --config "$work/tiny.ini" --set "run.dir=$run" --quiet >"$run.out" 2>"$run.err" &
pid=$!
for _ in $(seq 1 200); do
    [ -s "$run/metrics.jsonl" ] && [ "$(wc -l <"$run/metrics.jsonl")" -ge 3 ] && break
    sleep 0.05
done
# To mpirun itself (timeout's child): Open MPI forwards SIGUSR1 to the ranks.
kill -USR1 "$(ps -o pid= --ppid "$pid" | head -n 1 | tr -d ' ')"
wait "$pid" || rc=$?
stopped=$(sed -nE 's/^preempted after step ([0-9]+) of 20.*/\1/p' "$run.out")
if [ "$rc" -ne 75 ] || [ -z "$stopped" ] || [ ! -s "$run/checkpoints/ckpt-$stopped.h5" ]; then
    fail "SIGUSR1: exit $rc (expected 75), stopped after '${stopped}'"; cat "$run.out" "$run.err"
elif [ "$stopped" -ge 20 ] || [ "$(wc -l <"$run/metrics.jsonl")" -ne "$stopped" ]; then
    fail "SIGUSR1: stopped after step $stopped with $(wc -l <"$run/metrics.jsonl") metric lines"
else
    train 2 "$run"
    if [ "$rc" -ne 0 ] || ! steps_once "$run/metrics.jsonl" || ! diff <(numbers "$ref/metrics.jsonl") <(numbers "$run/metrics.jsonl"); then
        fail "SIGUSR1: resumed run (exit $rc) differs from the uninterrupted one"
    else
        ok "SIGUSR1 after step $stopped: exit 75, checkpoint written, resumed bit for bit"
    fi
fi

# ---- kill -9 while checkpoint 10 is being written ----
run=$work/killed
mkdir -p "$run"
STRAND_FAULT_CKPT_STEP=10 STRAND_FAULT_CKPT_SLEEP=60 timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n 2 \
    "$STRAND" train --config "$work/tiny.ini" --set "run.dir=$run" --quiet >"$run.out" 2>"$run.err" &
pid=$!
for _ in $(seq 1 400); do
    [ -e "$run/checkpoints/ckpt-10.h5.tmp" ] && break
    sleep 0.05
done
if [ ! -e "$run/checkpoints/ckpt-10.h5.tmp" ]; then
    fail "kill -9: ckpt-10.h5.tmp never appeared"; kill "$pid" 2>/dev/null || true
fi
# The whole job at once, as a node failure would: timeout, mpirun and its ranks, by pid.
mpirun_pid=$(ps -o pid= --ppid "$pid" | head -n 1 | tr -d ' ')
ranks=$(ps -o pid= --ppid "${mpirun_pid:-$pid}" | tr '\n' ' ')
# shellcheck disable=SC2086 # several pids
kill -9 $ranks ${mpirun_pid:-} "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
if [ -e "$run/checkpoints/ckpt-10.h5" ] || [ ! -e "$run/checkpoints/ckpt-5.h5" ]; then
    fail "kill -9: expected ckpt-5.h5 and no ckpt-10.h5: $(ls "$run/checkpoints")"
else
    train 2 "$run"
    if [ "$rc" -ne 0 ] || ! grep -q "resuming from $run/checkpoints/ckpt-5.h5: step 5" "$run.out"; then
        fail "kill -9: resume exit $rc"; cat "$run.out" "$run.err"
    elif ! steps_once "$run/metrics.jsonl" || ! diff <(numbers "$ref/metrics.jsonl") <(numbers "$run/metrics.jsonl"); then
        fail "kill -9: metrics after the resume are not steps 1-20 once, equal to the reference"
    elif ls "$run/checkpoints" | grep -q '\.tmp$'; then
        fail "kill -9: a .tmp file is left: $(ls "$run/checkpoints")"
    else
        ok "kill -9 during checkpoint 10: resumed from checkpoint 5, no step lost, each step once"
    fi
fi

# ---- reshard: written at 2, resumed at 3; written at 4, resumed at 1 ----
run=$work/sp3
train 3 "$run" --set parallel.sp=3 --resume "$ref/checkpoints/ckpt-10.h5"
if [ "$rc" -ne 0 ] || ! grep -q "written at dp 1 x sp 2, now dp 1 x sp 3" "$run.out"; then
    fail "reshard 2 -> 3: exit $rc"; cat "$run.out" "$run.err"
elif [ "$(wc -l <"$run/metrics.jsonl")" -ne 10 ] || ! close "$ref/metrics.jsonl" "$run/metrics.jsonl"; then
    fail "reshard 2 -> 3: steps 11-20 differ from the reference (above)"
else
    ok "reshard 2 -> 3: steps 11-20 within 1e-5"
fi
run=$work/sp4
STRAND_FAULT_PREEMPT_STEP=10 train 4 "$run" --set parallel.sp=4
if [ "$rc" -ne 75 ]; then
    fail "reshard 4 -> 1: the 4-rank run exited $rc, expected 75"; cat "$run.err"
else
    train 1 "$run" --set parallel.sp=1
    if [ "$rc" -ne 0 ] || ! grep -q "written at dp 1 x sp 4, now dp 1 x sp 1" "$run.out"; then
        fail "reshard 4 -> 1: exit $rc"; cat "$run.out" "$run.err"
    elif ! steps_once "$run/metrics.jsonl" || ! close "$ref/metrics.jsonl" "$run/metrics.jsonl"; then
        fail "reshard 4 -> 1: losses differ from the reference (above)"
    else
        ok "reshard 4 -> 1: steps 1-20 within 1e-5 of SP=2"
    fi
fi

# ---- refusals: exit 1, one error line that names the reason, nothing trained ----
refused() {
    local name=$1 pattern=$2
    shift 2
    local dir=$work/refused-$name
    train 2 "$dir" "$@"
    if [ "$rc" -ne 1 ]; then
        fail "refuse $name: exit $rc, expected 1"; cat "$dir.err"
    elif [ "$(grep -c 'strand train: error:' "$dir.err")" -ne 1 ] || ! grep -qE -- "$pattern" "$dir.err"; then
        fail "refuse $name: message does not match /$pattern/:"; cat "$dir.err"
    elif [ -s "$dir/metrics.jsonl" ]; then
        fail "refuse $name: it trained anyway"
    else
        ok "refuse $name: $(grep 'strand train: error:' "$dir.err")"
    fi
}
ck=$ref/checkpoints/ckpt-10.h5
refused shape "block0.mixer/weight: checkpoint shape \(16,4\), model \(16,3\)" --set model.conv_kernel=3 --resume "$ck"
refused config "configuration differs from the checkpoint's: train.lr = 0.001 here, 0.003 in the checkpoint" \
    --set train.lr=1e-3 --resume "$ck"
cp "$ck" "$work/corrupt.h5"
head -c 4096 /dev/urandom | dd of="$work/corrupt.h5" conv=notrunc status=none
refused corrupt "corrupt.h5: not an HDF5 file or corrupt" --resume "$work/corrupt.h5"
cp "$ck" "$work/truncated.h5"
truncate -s $(($(stat -c %s "$ck") / 2)) "$work/truncated.h5"
refused truncated "truncated.h5: the file has [0-9]* bytes, its checksum header says [0-9]* .truncated" --resume "$work/truncated.h5"
refused missing "nothere.h5: No such file" --resume "$work/nothere.h5"
# A run directory whose only checkpoint is corrupt is refused, not silently restarted at step 0.
mkdir -p "$work/refused-autocorrupt/checkpoints"
cp "$work/corrupt.h5" "$work/refused-autocorrupt/checkpoints/ckpt-15.h5"
refused autocorrupt "ckpt-15.h5: not an HDF5 file or corrupt .*no checkpoint in .* loads"

# ---- strand grad and strand info ----
out=$work/grad.out
rc=0
timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" grad --checkpoint "$ck" --out "$work/g2.h5" \
    >"$out" 2>&1 || rc=$?
want=$(sed -nE 's/^\{"step":11,"loss":([^,]*),.*/\1/p' "$ref/metrics.jsonl")
got=$(sed -nE 's/^step 11 from .*: loss ([^,]*),.*/\1/p' "$out")
if [ "$rc" -ne 0 ] || [ "$got" != "$want" ]; then
    fail "strand grad at SP=2: exit $rc, loss '$got', metrics.jsonl step 11 has '$want'"; cat "$out"
else
    ok "strand grad at SP=2: loss of step 11 = $got, as logged"
fi
rc=0
# A run directory means its latest checkpoint: one that holds checkpoint 10 only.
mkdir -p "$work/only10/checkpoints"
cp "$ck" "$work/only10/checkpoints/"
timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n 4 "$STRAND" grad --checkpoint "$work/only10" --step 11 --out "$work/g4.h5" \
    >"$out" 2>&1 || rc=$?
got4=$(sed -nE 's/^step 11 from .*: loss ([^,]*),.*/\1/p' "$out")
if [ "$rc" -ne 0 ] || ! awk -v a="$got4" -v b="$want" 'BEGIN { d = a - b; exit !(d < 1e-5 * b && -d < 1e-5 * b) }'; then
    fail "strand grad at SP=4 from the run's latest: exit $rc, loss '$got4' vs '$want'"; cat "$out"
elif ! h5dump -H -d /grads/block1.mlp.fc/weight "$work/g4.h5" | grep -q 'SIMPLE { ( 32, 16 )'; then
    fail "strand grad: /grads/block1.mlp.fc/weight is not (32, 16)"; h5dump -H -d /grads/block1.mlp.fc/weight "$work/g4.h5"
else
    ok "strand grad at SP=4: loss $got4, gradients in natural shapes"
fi
info=$("$STRAND" info "$ck" 2>&1) || true
if ! grep -q "step 10 of 20" <<<"$info" || ! grep -q "written at world 2 (dp 1 x sp 2)" <<<"$info" ||
    ! grep -qE "block0.mixer/weight +\(16,4\)" <<<"$info"; then
    fail "strand info on a checkpoint:"; echo "$info"
else
    ok "strand info summarises a checkpoint"
fi

[ "$failures" -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
echo "all resume cases behaved"
