#!/usr/bin/env bash
# One job per run.dir: rank 0 holds an exclusive flock on <run.dir>/.lock from before the resume
# until training ends.
#   busy:      while a job trains (slowed by STRAND_FAULT_STEP_SLEEP), a second job on the same
#              run.dir is refused within seconds naming the holder's host and pid, and the first
#              job completes intact (every step in metrics.jsonl once, summary.json, config.ini)
#   kill -9:   a job killed outright leaves .lock behind; the next job on the dir proceeds (the
#              kernel dropped the lock) and resumes from the killed job's checkpoint
#   no flock:  a file system without flock (STRAND_FAULT_LOCK_ERRNO=38 stands in for Lustre
#              without -o flock: ENOSYS) trains with one warning line
set -euo pipefail
: "${STRAND:?}" "${STRAND_SOURCE_DIR:?}" "${STRAND_MPIEXEC:?}"
source "$(dirname "${BASH_SOURCE[0]}")/cli_common.sh"
cli_begin lock

cli_prep "$work/lambda.h5"
cli_tiny_ini "$work/tiny.ini" "$work/lambda.h5" <<INI
[train]
seq_len = 128
steps = 30
log_every = 5
eval_windows = 2
[checkpoint]
every = 5
INI
steps_once() { [ "$(sed -E 's/^\{"step":([0-9]+),.*/\1/' "$1" | tr '\n' ' ')" = "$(seq -s ' ' 1 "$2") " ]; }
# wait_lines FILE N: until FILE has N lines (at most 20 s)
wait_lines() {
    for _ in $(seq 1 400); do
        [ -s "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
        sleep 0.05
    done
    return 1
}

# ---- busy: a second job while the first trains ----
run=$work/busy
STRAND_FAULT_STEP_SLEEP=0.3 timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train \
    --config "$work/tiny.ini" --set "run.dir=$run" --quiet >"$work/first.out" 2>"$work/first.err" &
first=$!
cli_pids+=("$first")
wait_lines "$run/metrics.jsonl" 3 || fail "busy: the first job did not start training"
lines_before=$(wc -l <"$run/metrics.jsonl")
# The ranks of the first job (children of its mpirun); the named pid must be one of them.
ranks_first=" $(pgrep -P "$(pgrep -P "$first" | head -n 1)" | tr '\n' ' ' || true)"
rc=0
start=$(date +%s)
timeout 60 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --config "$work/tiny.ini" --set "run.dir=$run" \
    --quiet >"$work/second.out" 2>"$work/second.err" || rc=$?
took=$(($(date +%s) - start))
line=$(grep 'strand train: error:' "$work/second.err" || true)
holder=$(sed -nE 's/.*, pid ([0-9]+) \(lock .*/\1/p' <<<"$line")
want="run.dir $run is in use by strand train on host $(hostname), pid "
if [ "$rc" -ne 1 ] || [ "$(grep -c 'strand train: error:' "$work/second.err")" -ne 1 ]; then
    fail "busy: the second job exited $rc, expected 1 with one error line"; cat "$work/second.err"
elif ! grep -qF "$want" <<<"$line" || ! grep -qF "(lock $run/.lock); wait for it or use another run.dir" <<<"$line"; then
    fail "busy: message lacks '$want...':"; echo "$line"
elif [ -z "$holder" ] || [[ "$ranks_first" != *" $holder "* ]]; then
    fail "busy: the named pid '$holder' is not a rank of the first job (ranks:$ranks_first)"
elif [ "$took" -gt 15 ]; then
    fail "busy: the refusal took $took s"
else
    ok "busy: refused in $took s: $line"
fi
rc=0
wait "$first" || rc=$?
if [ "$rc" -ne 0 ]; then
    fail "busy: the first job exited $rc"; cat "$work/first.err"
elif ! steps_once "$run/metrics.jsonl" 30 || [ ! -s "$run/summary.json" ] || [ ! -s "$run/config.ini" ]; then
    fail "busy: the first job's run dir is not intact: $(wc -l <"$run/metrics.jsonl") metric lines (had $lines_before), $(ls "$run")"
elif compgen -G "$run/checkpoints/*.tmp" >/dev/null || [ ! -s "$run/checkpoints/ckpt-30.h5" ]; then
    fail "busy: checkpoints: $(ls "$run/checkpoints")"
else
    ok "busy: the first job completed intact (30 steps once, summary.json, ckpt-30.h5)"
fi

# ---- kill -9: a stale .lock does not block ----
run=$work/killed
STRAND_FAULT_STEP_SLEEP=0.2 timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train \
    --config "$work/tiny.ini" --set "run.dir=$run" --quiet >"$work/killed.out" 2>"$work/killed.err" &
job=$!
cli_pids+=("$job")
wait_lines "$run/metrics.jsonl" 7 || fail "kill -9: the job did not reach step 7"
mpirun_pid=$(pgrep -P "$job" | head -n 1 || true)
ranks=$(pgrep -P "${mpirun_pid:-$job}" | tr '\n' ' ' || true)
# shellcheck disable=SC2086 # several pids
kill -9 $ranks ${mpirun_pid:-} "$job" 2>/dev/null || true
wait "$job" 2>/dev/null || true
[ -e "$run/.lock" ] || fail "kill -9: no .lock file was left to test with"
rc=0
timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train --config "$work/tiny.ini" --set "run.dir=$run" \
    >"$work/after.out" 2>"$work/after.err" || rc=$?
if [ "$rc" -ne 0 ] || ! grep -q "resuming from $run/checkpoints/ckpt-5.h5" "$work/after.out"; then
    fail "kill -9: the next job exited $rc (expected 0, resumed from ckpt-5)"; cat "$work/after.err"
elif ! steps_once "$run/metrics.jsonl" 30 || [ ! -s "$run/summary.json" ]; then
    fail "kill -9: the resumed run's metrics are not steps 1-30 once"
else
    ok "kill -9: the next job on the dir proceeded and resumed from checkpoint 5"
fi

# ---- a file system without flock: a warning, and training goes on ----
run=$work/nolock
rc=0
STRAND_FAULT_LOCK_ERRNO=38 timeout 120 "$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" train \
    --config "$work/tiny.ini" --set "run.dir=$run" --set train.steps=5 --quiet >"$work/nolock.out" \
    2>"$work/nolock.err" || rc=$?
if [ "$rc" -ne 0 ] || [ ! -s "$run/summary.json" ]; then
    fail "no flock: exit $rc, expected 0"; cat "$work/nolock.err"
elif [ "$(grep -c 'strand train: warning: cannot lock' "$work/nolock.err")" -ne 1 ] ||
    ! grep -qF "$run/.lock: flock is not supported here (Function not implemented)" "$work/nolock.err"; then
    fail "no flock: expected one warning line naming the lock file and the reason:"; cat "$work/nolock.err"
else
    ok "no flock: $(grep warning "$work/nolock.err")"
fi

cli_end "all run-lock cases behaved"
