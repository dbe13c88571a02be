#!/usr/bin/env bash
# Preemption signals, real ones, at 2 ranks:
#   twice:       SIGUSR1 mid-run, then another SIGUSR1 (and a SIGTERM to the ranks) after the
#                preemption checkpoint, while the process is on its way out (STRAND_FAULT_EXIT_SLEEP
#                holds it there): the exit status stays 75
#   validation:  SIGUSR1 to mpirun, or SIGTERM to the ranks, during the final validation
#                (STRAND_FAULT_EVAL_SLEEP makes it slow): exit 75, no summary.json; the resumed
#                run trains no step, redoes the validation and writes summary.json
#   sbatch:      jobs/train.sbatch, with stand-ins for srun and scontrol, forwards the first of two
#                USR1s to strand and requeues the job on its exit 75
set -euo pipefail
: "${STRAND:?}" "${STRAND_SOURCE_DIR:?}" "${STRAND_MPIEXEC:?}"
source "$(dirname "${BASH_SOURCE[0]}")/cli_common.sh"
cli_begin signals

cli_prep "$work/lambda.h5"
cli_tiny_ini "$work/tiny.ini" "$work/lambda.h5" <<INI
[train]
seq_len = 128
steps = 20
log_every = 5
eval_windows = 2
INI
steps_once() { [ "$(sed -E 's/^\{"step":([0-9]+),.*/\1/' "$1" | tr '\n' ' ')" = "$(seq -s ' ' 1 "$2") " ]; }
# wait_for CONDITION...: poll (at most 30 s) until the command succeeds
wait_for() {
    for _ in $(seq 1 600); do
        "$@" && return 0
        sleep 0.05
    done
    return 1
}
has_lines() { [ -s "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ]; }
# start NAME [env...]: strand train at 2 ranks in the background on run dir $work/NAME; sets job
start() {
    local name=$1
    shift
    env "$@" timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --config "$work/tiny.ini" \
        --set "run.dir=$work/$name" --quiet >"$work/$name.out" 2>"$work/$name.err" &
    job=$!
    cli_pids+=("$job")
}
mpirun_of() { pgrep -P "$1" | head -n 1; }
ranks_of() { pgrep -P "$(mpirun_of "$1")" | tr '\n' ' '; }

# ---- twice: a second signal after the preemption checkpoint ----
for second in usr1 term; do
    name=twice_$second
    start "$name" STRAND_FAULT_STEP_SLEEP=0.15 STRAND_FAULT_EXIT_SLEEP=3
    wait_for has_lines "$work/$name/metrics.jsonl" 3 || fail "$name: training did not start"
    kill -USR1 "$(mpirun_of "$job")" || true
    # The preemption message is printed after the checkpoint, just before the exit sleep.
    wait_for grep -q "^preempted after step" "$work/$name.out" || fail "$name: no preemption message"
    if [ "$second" = usr1 ]; then
        kill -USR1 "$(mpirun_of "$job")" || true
    else
        # shellcheck disable=SC2046 # several pids
        kill -TERM $(ranks_of "$job") || true
    fi
    rc=0
    wait "$job" || rc=$?
    stopped=$(sed -nE 's/^preempted after step ([0-9]+) of 20.*/\1/p' "$work/$name.out")
    if [ "$rc" -ne 75 ]; then
        fail "$name: exit $rc after a second signal, expected 75"; cat "$work/$name.err"
    elif [ -z "$stopped" ] || [ ! -s "$work/$name/checkpoints/ckpt-$stopped.h5" ] || [ -e "$work/$name/summary.json" ]; then
        fail "$name: expected a checkpoint at step '$stopped' and no summary.json"
    else
        ok "$name: SIGUSR1, then SIG${second^^} after the checkpoint of step $stopped: exit 75"
    fi
done

# ---- validation: a signal during the final validation ----
for how in usr1 term; do
    name=eval_$how
    start "$name" STRAND_FAULT_EVAL_SLEEP=4
    # The checkpoint of the last step is written before the validation starts.
    wait_for test -s "$work/$name/checkpoints/ckpt-20.h5" || fail "$name: no checkpoint at step 20"
    sleep 0.5
    if [ "$how" = usr1 ]; then
        kill -USR1 "$(mpirun_of "$job")" || true
    else
        # shellcheck disable=SC2046 # several pids
        kill -TERM $(ranks_of "$job") || true
    fi
    rc=0
    wait "$job" || rc=$?
    if [ "$rc" -ne 75 ] || [ -e "$work/$name/summary.json" ]; then
        fail "$name: exit $rc, summary.json $([ -e "$work/$name/summary.json" ] && echo written || echo absent); expected 75 and none"
        cat "$work/$name.out" "$work/$name.err"
        continue
    fi
    if ! grep -q "^preempted during the final validation after step 20 of 20" "$work/$name.out"; then
        fail "$name: no preemption message:"; cat "$work/$name.out"
    fi
    cp "$work/$name/metrics.jsonl" "$work/$name.metrics"
    rc=0
    timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --config "$work/tiny.ini" \
        --set "run.dir=$work/$name" >"$work/$name.resume.out" 2>"$work/$name.resume.err" || rc=$?
    if [ "$rc" -ne 0 ] || ! grep -q "resuming from $work/$name/checkpoints/ckpt-20.h5: step 20 of 20" "$work/$name.resume.out"; then
        fail "$name: resume exit $rc"; cat "$work/$name.resume.out" "$work/$name.resume.err"
    elif grep -q "^step " "$work/$name.resume.out" || ! cmp -s "$work/$name.metrics" "$work/$name/metrics.jsonl" ||
        ! steps_once "$work/$name/metrics.jsonl" 20; then
        fail "$name: the resumed run trained steps (or changed metrics.jsonl)"
    elif ! grep -qE '"steps":20,.*"val_bpb":[0-9.]+,"val_windows":2,' "$work/$name/summary.json"; then
        fail "$name: summary.json after the resume: $(cat "$work/$name/summary.json")"
    else
        ok "$name: SIG${how^^} during validation: exit 75, no summary; resumed: no step trained, validated, summary.json"
    fi
done

# ---- sbatch: the batch script forwards one USR1 and requeues on 75 ----
mkdir -p "$work/bin"
# srun stand-in: the ranks under mpirun; exec keeps the pid the script signals.
cat >"$work/bin/srun" <<'SH'
#!/usr/bin/env bash
while [[ "$1" == --* ]]; do shift; done
exec "$STRAND_MPIEXEC" --oversubscribe -n 2 "$@"
SH
cat >"$work/bin/scontrol" <<'SH'
#!/usr/bin/env bash
echo "$*" >>"$SCONTROL_LOG"
SH
chmod +x "$work/bin/srun" "$work/bin/scontrol"
rc=0
(
    cd "$work"
    PATH="$work/bin:$PATH" SCONTROL_LOG="$work/scontrol.log" SLURM_JOB_ID=4242 SLURM_NTASKS=2 \
        SLURM_SUBMIT_DIR="$work" STRAND_BIN="$STRAND" STRAND_CONFIG="$work/tiny.ini" STRAND_RUN_DIR="$work/sb" \
        STRAND_FAULT_STEP_SLEEP=0.15 STRAND_FAULT_EXIT_SLEEP=2 STRAND_SET="train.steps=20" \
        exec bash "$STRAND_SOURCE_DIR/jobs/train.sbatch"
) >"$work/sbatch.out" 2>"$work/sbatch.err" &
job=$!
cli_pids+=("$job")
wait_for has_lines "$work/sb/metrics.jsonl" 3 || fail "sbatch: training did not start"
kill -USR1 "$job" || true
wait_for grep -q "^preempted after step" "$work/sbatch.out" || fail "sbatch: no preemption message"
kill -USR1 "$job" || true
wait "$job" || rc=$?
if [ "$rc" -ne 0 ] || ! grep -qx "requeue 4242" "$work/scontrol.log" 2>/dev/null ||
    ! grep -q "strand was preempted (exit 75) and checkpointed; requeueing job 4242" "$work/sbatch.out"; then
    fail "sbatch: exit $rc, scontrol: $(cat "$work/scontrol.log" 2>/dev/null)"; cat "$work/sbatch.out" "$work/sbatch.err"
elif [ "$(grep -c 'asking strand to checkpoint' "$work/sbatch.out")" -ne 1 ]; then
    fail "sbatch: expected one forwarded signal:"; cat "$work/sbatch.out"
else
    ok "sbatch: two USR1s, one forwarded; strand exited 75 and the job was requeued"
fi

cli_end "all signal cases behaved"
