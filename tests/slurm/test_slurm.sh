#!/usr/bin/env bash
# End-to-end test of jobs/train.sbatch on a real, throw-away single-node SLURM.
#
# Starts slurmctld and slurmd by hand in a temporary directory (auth/none, private ports),
# preps the bundled lambda phage genome with $STRAND, submits jobs/train.sbatch with
# `sbatch --wait` on 2 tasks and checks the run directory. The daemons are always shut down.
#
# Environment (set by ctest through strand_add_script_test): STRAND (the binary),
# STRAND_SOURCE_DIR, STRAND_SANITIZE. Exit 77 = skipped (SLURM missing, not root, sanitizer build).
# STRAND_SLURM_SMOKE_ONLY=1 runs only the SLURM/MPI smoke jobs (no strand needed).
# STRAND_KEEP_TMP=1 keeps the temporary directory.
set -euo pipefail

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
log() { echo "[slurm-test $(date +%T)] $*"; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=${STRAND_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
smoke_only=${STRAND_SLURM_SMOKE_ONLY:-0}
tiny_ini=$here/tiny.ini
# The expected step count comes from tiny.ini's [train] steps, so the two cannot drift apart.
steps=$(awk -F= '/^[[:space:]]*\[/ { sec = $0; gsub(/[[:space:]]/, "", sec) }
  sec == "[train]" && $1 ~ /^[[:space:]]*steps[[:space:]]*$/ { gsub(/[[:space:]]/, "", $2); print $2 }' "$tiny_ini")
# Internal time limits add up to well under ctest's 600 s, so cleanup always gets to run.
job_timeout=${STRAND_SLURM_JOB_TIMEOUT:-360}

case "${STRAND_SANITIZE:-OFF}" in
  ON | on | 1 | TRUE | true | YES | yes)
    skip "sanitizer build: ASan under slurmstepd/PMIx adds nothing here and is slow" ;;
esac
[[ $(id -u) -eq 0 ]] || skip "needs root to run slurmctld/slurmd as SlurmUser=root (uid $(id -u))"
for tool in slurmctld slurmd sbatch srun sinfo scontrol squeue scancel; do
  command -v "$tool" >/dev/null 2>&1 || skip "'$tool' not installed (jobs/setup.sh --slurm installs SLURM)"
done
if [[ "$smoke_only" != 1 ]]; then
  [[ -n "${STRAND:-}" && -x "${STRAND}" ]] || fail "STRAND='${STRAND:-}' is not an executable strand binary"
fi
genome=$src/data/lambda_phage_NC_001416.fa.gz
[[ "$smoke_only" == 1 || -r "$genome" ]] || fail "bundled genome $genome is missing"
[[ "$steps" =~ ^[0-9]+$ ]] || fail "cannot read [train] steps from $tiny_ini"

# Our own SLURM only: drop anything inherited from an enclosing allocation or user defaults.
for name in $(compgen -e); do
  case "$name" in SLURM_* | SBATCH_* | SRUN_* | SALLOC_* | SQUEUE_* | SINFO_*) unset "$name" ;; esac
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/strand-slurm.XXXXXX")
chmod 755 "$tmp" # slurmd/slurmstepd and the job must be able to enter it
mkdir -p "$tmp/state" "$tmp/spool"
export SLURM_CONF=$tmp/slurm.conf
ctld_pid="" slurmd_pid="" job_id=""

dump_logs() {
  local f
  for f in "$tmp"/job-*.out "$tmp/slurmctld.log" "$tmp/slurmd.log" "$tmp/slurmctld.stderr" "$tmp/slurmd.stderr"; do
    [[ -s "$f" ]] || continue
    # A daemon's stderr repeats its log file; show it only when the log is empty.
    [[ "$f" == *.stderr && -s "${f%.stderr}.log" ]] && continue
    echo "----- ${f#"$tmp"/} (last 60 lines) -----"
    tail -n 60 "$f"
  done
}

# Every process of this private cluster (daemons, slurmstepd, the job and its srun) carries
# SLURM_CONF=$tmp/slurm.conf in its environment: a precise way to find leftovers.
sweep() {
  local e pid
  for e in /proc/[0-9]*/environ; do
    pid=${e#/proc/}; pid=${pid%/environ}
    [[ "$pid" != "$$" && "$pid" != "$BASHPID" ]] || continue
    if tr '\0' '\n' 2>/dev/null <"$e" | grep -qxF "SLURM_CONF=$SLURM_CONF"; then
      kill -KILL "$pid" 2>/dev/null
    fi
  done
}

# Every exit path comes through here: stop the daemons, wait for them, then clean up.
cleanup() {
  local rc=$? pids=() p i
  trap - EXIT INT TERM HUP
  set +e
  ((rc == 0 || rc == 77)) || dump_logs
  if [[ -n "$ctld_pid$slurmd_pid" ]]; then
    [[ -z "$job_id" && -r "$tmp/sbatch.out" ]] && job_id=$(awk '/Submitted batch job/ {print $4}' "$tmp/sbatch.out")
    [[ -n "$job_id" ]] && scancel "$job_id" >/dev/null 2>&1 && sleep 1
    scontrol shutdown >/dev/null 2>&1
    for p in "$ctld_pid" "$slurmd_pid" "$(cat "$tmp/slurmctld.pid" 2>/dev/null)" "$(cat "$tmp/slurmd.pid" 2>/dev/null)"; do
      [[ "$p" =~ ^[0-9]+$ ]] && pids+=("$p")
    done
    # scontrol shutdown takes a second or two; then TERM, then KILL.
    for ((i = 0; i < 100; i++)); do
      alive=0
      for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      ((alive)) || break
      ((i == 50)) && for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
      sleep 0.1
    done
    for p in "${pids[@]}"; do
      if kill -0 "$p" 2>/dev/null; then
        echo "slurm-test: daemon $p ignored shutdown and TERM; killing it" >&2
        kill -KILL "$p" 2>/dev/null
      fi
    done
    wait 2>/dev/null
    sweep # job steps orphaned by a cancelled or timed-out job
  fi
  rm -f "$tmp/.running"
  if [[ "${STRAND_KEEP_TMP:-0}" == 1 ]]; then
    echo "slurm-test: kept $tmp"
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Watchdog for a hard kill (ctest's timeout sends SIGKILL, so cleanup never runs): a detached
# process that, once this shell is gone without having cleaned up, kills this cluster's
# processes. Detached (double fork, setsid) so that killing our process tree spares it;
# without SLURM_CONF so that it does not match itself.
touch "$tmp/.running"
(
  main=$$
  # shellcheck disable=SC2016 # expanded by the inner bash, from its arguments
  env -u SLURM_CONF setsid bash -c '
    while kill -0 "$1" 2>/dev/null; do sleep 1; done
    [[ -e "$2/.running" ]] || exit 0
    for e in /proc/[0-9]*/environ; do
      pid=${e#/proc/}; pid=${pid%/environ}
      tr "\0" "\n" 2>/dev/null <"$e" | grep -qxF "SLURM_CONF=$2/slurm.conf" && kill -KILL "$pid" 2>/dev/null
    done
    rm -rf "$2"' slurm-test-watchdog "$main" "$tmp" </dev/null >/dev/null 2>&1 &
)

# Private ports so that a concurrent run (or a system SLURM) cannot collide with this one.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
ctld_port="" slurmd_port=""
for ((try = 0; try < 50; try++)); do
  p=$((20000 + (RANDOM % 20000)))
  if port_free "$p" && port_free $((p + 1)); then ctld_port=$p slurmd_port=$((p + 1)); break; fi
done
[[ -n "$ctld_port" ]] || fail "no free TCP port pair found"

# TmpFS=$tmp: the PMIx plugin makes spmix_appdir_<uid>_<job>.<step> under TmpFS; job ids
# restart at 1 in every fresh cluster, so in /tmp a leftover or concurrent run breaks srun.
host=$(hostname -s)
cat >"$SLURM_CONF" <<EOF
ClusterName=strandci
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=pmix
ReturnToService=2
MinJobAge=4
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
TmpFS=$tmp
SlurmdParameters=config_overrides
NodeName=$host CPUs=4 RealMemory=20000 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

# Foreground mode (-D) in the background of this shell: the daemons stay our children, so
# even a hard kill of the test's process tree (ctest timeout) takes them down.
log "starting slurmctld and slurmd in $tmp (ports $ctld_port/$slurmd_port)"
t0=$SECONDS
slurmctld -D -f "$SLURM_CONF" >"$tmp/slurmctld.stderr" 2>&1 &
ctld_pid=$!
slurmd -D -f "$SLURM_CONF" >"$tmp/slurmd.stderr" 2>&1 &
slurmd_pid=$!

state=""
for ((i = 0; i < 300; i++)); do # up to 30 s
  kill -0 "$ctld_pid" 2>/dev/null || fail "slurmctld exited during start-up"
  kill -0 "$slurmd_pid" 2>/dev/null || fail "slurmd exited during start-up"
  state=$(sinfo -h -o %T 2>/dev/null || true)
  [[ "$state" == idle ]] && break
  sleep 0.1
done
[[ "$state" == idle ]] || fail "node did not become idle within 30 s (state: '${state:-no answer}')"
log "SLURM up in $((SECONDS - t0)) s: node $host idle"

# Smoke test of the machinery itself, so a broken SLURM is not mistaken for a strand failure.
cd "$tmp"
smoke=$(timeout 30 srun --mpi=pmix -n 2 --time=1 hostname 2>&1) ||
  fail "srun --mpi=pmix -n 2 hostname failed: $smoke"
[[ $(grep -c . <<<"$smoke") -eq 2 ]] || fail "expected 2 lines from srun hostname, got: $smoke"
log "srun --mpi=pmix -n 2 hostname: ok"

if [[ "$smoke_only" == 1 ]]; then
  # A batch job running srun hostname and an MPI hello (Open MPI over PMIx).
  command -v mpicc >/dev/null 2>&1 || fail "mpicc not found (libopenmpi-dev)"
  cat >"$tmp/hello.c" <<'EOF'
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
  int rank, size, sum = 0;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  printf("hello from rank %d of %d (sum %d)\n", rank, size, sum);
  MPI_Finalize();
  return 0;
}
EOF
  mpicc -o "$tmp/hello" "$tmp/hello.c" || fail "cannot compile the MPI hello"
  cat >"$tmp/smoke.sbatch" <<EOF
#!/bin/bash
#SBATCH --ntasks=2
#SBATCH --time=1
set -euo pipefail
srun --mpi=pmix hostname
srun --mpi=pmix $tmp/hello
EOF
  timeout 120 sbatch --wait -o "$tmp/job-%j.out" "$tmp/smoke.sbatch" >"$tmp/sbatch.out" ||
    fail "smoke batch job failed"
  cat "$tmp"/job-*.out
  if ! grep -q 'rank 0 of 2 (sum 1)' "$tmp"/job-*.out || ! grep -q 'rank 1 of 2 (sum 1)' "$tmp"/job-*.out; then
    fail "MPI hello did not report 2 ranks"
  fi
  log "smoke-only mode: SLURM and MPI over PMIx work (strand job not run)"
  exit 0
fi

# A tiny dataset: the whole bundled genome is only 48.5 kb.
log "prep: $genome -> $tmp/lambda.h5"
timeout 60 "$STRAND" prep --in "$genome" --out "$tmp/lambda.h5" --val-fraction 0.05 >"$tmp/prep.log" 2>&1 ||
  { cat "$tmp/prep.log"; fail "strand prep failed"; }

# Submit the real job script the way a user would, configured through its environment.
run_dir=$tmp/run
export STRAND_BIN=$STRAND
export STRAND_CONFIG=$tiny_ini
export STRAND_RUN_DIR=$run_dir
export STRAND_SET="data.path=$tmp/lambda.h5 train.log_every=5"
export STRAND_SP=2
unset STRAND_DP
log "sbatch --wait --ntasks=2 $src/jobs/train.sbatch"
t1=$SECONDS
rc=0
timeout "$job_timeout" sbatch --wait --ntasks=2 --time=5 --job-name=strand-ci --output="$tmp/job-%j.out" \
  "$src/jobs/train.sbatch" >"$tmp/sbatch.out" 2>&1 || rc=$?
cat "$tmp/sbatch.out"
job_id=$(awk '/Submitted batch job/ {print $4}' "$tmp/sbatch.out")
if ((rc == 124)); then
  [[ -n "$job_id" ]] && scancel "$job_id" 2>/dev/null
  fail "job ${job_id:-?} did not finish within $job_timeout s"
fi
((rc == 0)) || fail "sbatch --wait exited with $rc (job ${job_id:-?} failed)"
log "job $job_id finished in $((SECONDS - t1)) s; output:"
cat "$tmp/job-$job_id.out"

# The run directory: resolved config, one metrics line per step with finite losses, summary.
config=$run_dir/config.ini
[[ -s "$config" ]] || fail "$config missing"
# The overrides made it through sbatch, the script and srun (STRAND_SET, STRAND_SP).
grep -Eq "^path[[:space:]]*=[[:space:]]*$tmp/lambda.h5[[:space:]]*\$" "$config" ||
  fail "config.ini does not have data.path from STRAND_SET: $(grep -E '^path' "$config")"
grep -Eq '^sp[[:space:]]*=[[:space:]]*2[[:space:]]*$' "$config" || fail "config.ini does not have parallel.sp = 2"
metrics=$run_dir/metrics.jsonl
[[ -s "$metrics" ]] || fail "$metrics missing or empty"
# Per-step lines are the ones with a "loss"; count distinct steps and vet every loss value.
check=$(awk -v want="$steps" '
  /"loss"[[:space:]]*:/ {
    line = $0
    if (!match(line, /"step"[[:space:]]*:[[:space:]]*[0-9]+/)) { bad = bad "no step: " line "\n"; next }
    s = substr(line, RSTART, RLENGTH); sub(/.*:[[:space:]]*/, "", s)
    match(line, /"loss"[[:space:]]*:[[:space:]]*[^,}[:space:]]+/)
    v = substr(line, RSTART, RLENGTH); sub(/.*:[[:space:]]*/, "", v)
    if (v !~ /^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$/) bad = bad "non-finite loss " v " at step " s "\n"
    if (!(s in seen)) { seen[s] = 1; n++ }
  }
  END {
    if (bad != "") { printf "%s", bad; exit 1 }
    if (n != want) { printf "expected %d distinct steps with a loss, found %d\n", want, n; exit 1 }
  }' "$metrics") || { tail -n 5 "$metrics"; fail "metrics.jsonl: $check"; }
log "metrics.jsonl: $steps steps, all losses finite"

summary=$run_dir/summary.json
[[ -s "$summary" ]] || fail "$summary missing"
grep -Eq '"steps"[[:space:]]*:[[:space:]]*'"$steps"'([^0-9]|$)' "$summary" ||
  fail "summary.json does not report steps=$steps: $(cat "$summary")"
grep -q '"final_bpb"' "$summary" || fail "summary.json has no final_bpb: $(cat "$summary")"
if grep -q '"world_size"' "$summary"; then
  grep -Eq '"world_size"[[:space:]]*:[[:space:]]*2([^0-9]|$)' "$summary" || fail "job did not run on 2 ranks"
fi
log "summary.json: $(cat "$summary")"

# ---- Preemption: a job signalled before its time limit checkpoints, requeues itself and ----
# finishes from its checkpoint. STRAND_FAULT_STEP_SLEEP (a strand test hook) slows every step so
# that the signal lands mid-run; checkpoint.every adds periodic checkpoints besides the preemption.
requeue_steps=60
run_dir=$tmp/run-requeue
export STRAND_RUN_DIR=$run_dir
export STRAND_SET="data.path=$tmp/lambda.h5 train.log_every=5 train.steps=$requeue_steps checkpoint.every=20"
export STRAND_FAULT_STEP_SLEEP=0.1
log "requeue: sbatch --ntasks=2 $src/jobs/train.sbatch ($requeue_steps steps), then scancel --signal=USR1 --batch"
t1=$SECONDS
job_id=$(sbatch --parsable --ntasks=2 --time=5 --job-name=strand-requeue --output="$tmp/job-%j.out" \
  "$src/jobs/train.sbatch" 2>"$tmp/sbatch.err") || { cat "$tmp/sbatch.err"; fail "sbatch of the requeue job failed"; }
metrics=$run_dir/metrics.jsonl
for ((i = 0; i < 1200; i++)); do # up to 120 s for the job to start and log a few steps
  [[ -s "$metrics" ]] && (($(wc -l <"$metrics") >= 8)) && break
  sleep 0.1
done
(($(wc -l <"$metrics" 2>/dev/null || echo 0) >= 8)) || fail "requeue job $job_id did not start training within 120 s"
scancel --signal=USR1 --batch "$job_id" || fail "scancel --signal=USR1 --batch $job_id failed"
log "signalled job $job_id after $(wc -l <"$metrics") steps"
# Wait for the job to end for good: requeued (Restarts=1), run again, completed.
state="" restarts=0 hurried=""
for ((i = 0; i < 2400; i++)); do # up to 240 s
  info=$(scontrol -o show job "$job_id" 2>/dev/null || true)
  [[ -n "$info" ]] || break # purged (MinJobAge) after it ended
  state=$(sed -nE 's/.*JobState=([A-Z_]+).*/\1/p' <<<"$info")
  r=$(sed -nE 's/.*Restarts=([0-9]+).*/\1/p' <<<"$info")
  [[ -n "$r" ]] && restarts=$r
  # SLURM holds a requeued batch job back for a couple of minutes (BeginTime); the test moves
  # the begin time to now, but only once the first run's job step has fully gone: the requeued
  # job reuses the job id, and PMIx cannot bind step <id>.0's socket while the old one exists.
  if [[ "$state" == PENDING && "$restarts" -ge 1 && -z "$hurried" &&
    ! -e "$tmp/spool/stepd.slurm.pmix.$job_id.0" && -z "$(compgen -G "$tmp/spmix_appdir_*_$job_id.0")" ]]; then
    scontrol update JobId="$job_id" StartTime=now >/dev/null 2>&1 && hurried=1
  fi
  [[ "$state" == COMPLETED || "$state" == FAILED || "$state" == CANCELLED || "$state" == TIMEOUT ]] && break
  sleep 0.1
done
log "job $job_id: last state ${state:-purged}, restarts $restarts, $((SECONDS - t1)) s; output:"
cat "$tmp/job-$job_id.out"
[[ "$state" == COMPLETED || -z "$state" ]] || fail "requeue job $job_id ended $state"
((restarts >= 1)) || fail "requeue job $job_id was never requeued (Restarts=$restarts)"
grep -q "requeueing job $job_id" "$tmp/job-$job_id.out" || fail "train.sbatch did not requeue after exit 75"
grep -q "resuming from $run_dir/checkpoints/ckpt-" "$tmp/job-$job_id.out" || fail "the requeued run did not resume"
# Every step logged exactly once, in order, across both runs; the run finished with a summary.
seen=$(sed -E 's/^\{"step":([0-9]+),.*/\1/' "$metrics" | tr '\n' ' ')
[[ "$seen" == "$(seq -s ' ' 1 "$requeue_steps") " ]] || fail "metrics.jsonl steps are not 1..$requeue_steps once each: $seen"
[[ -s "$run_dir/summary.json" ]] || fail "requeued job left no summary.json"
grep -Eq '"steps"[[:space:]]*:[[:space:]]*'"$requeue_steps"'([^0-9]|$)' "$run_dir/summary.json" ||
  fail "summary.json of the requeued job: $(cat "$run_dir/summary.json")"
job_id=""
log "requeue: preempted, checkpointed, requeued, resumed; $requeue_steps steps once each, summary written"

# jobs/experiments/long_range.sh is an sbatch script too: a one-run slice through srun.
log "sbatch --wait --ntasks=2 $src/jobs/experiments/long_range.sh (a slice)"
t1=$SECONDS
rc=0
STRAND=$STRAND OUT=$tmp/long_range MIXERS=conv TASKS=copy DISTANCES=16 TOKENS=64 MIN_STEPS=2 MAX_STEPS=2 \
  timeout "$job_timeout" sbatch --wait --ntasks=2 --time=5 --job-name=strand-long-range --output="$tmp/job-%j.out" \
  "$src/jobs/experiments/long_range.sh" >"$tmp/sbatch.out" 2>&1 || rc=$?
job_id=$(awk '/Submitted batch job/ {print $4}' "$tmp/sbatch.out")
[[ -n "$job_id" ]] && cat "$tmp/job-$job_id.out"
((rc == 0)) || fail "long_range.sh under sbatch exited with $rc (job ${job_id:-?})"
[[ $(wc -l <"$tmp/long_range/long_range.csv") -eq 2 ]] || fail "long_range.csv: $(cat "$tmp/long_range/long_range.csv")"
awk -F, 'NR == 2 { exit !($4 == "conv" && $13 == 2) }' "$tmp/long_range/long_range.csv" ||
  fail "long_range.csv row: $(sed -n 2p "$tmp/long_range/long_range.csv")"
[[ -s "$tmp/long_range/long_range.png" ]] || fail "long_range.png missing"
job_id=""
log "long_range.sh: one run on 2 SLURM tasks in $((SECONDS - t1)) s, CSV and PNG written"

# jobs/scaling/sweep.sh is an sbatch script too: a 2-point strong sweep of a tiny mixer bench
# (calibrating first, --quick), one srun step per point inside the one allocation.
log "sbatch --wait --ntasks=2 $src/jobs/scaling/sweep.sh (conv bench on 1 and 2 ranks)"
t1=$SECONDS
rc=0
STRAND=$STRAND OUT=$tmp/scaling KIND=strong WHAT=mixer:conv LENGTH=2048 CHANNELS=16 REPEAT=1 RANKS="1 2" CALIBRATE=--quick \
  timeout "$job_timeout" sbatch --wait --ntasks=2 --time=5 --job-name=strand-scaling --output="$tmp/job-%j.out" \
  "$src/jobs/scaling/sweep.sh" >"$tmp/sbatch.out" 2>&1 || rc=$?
job_id=$(awk '/Submitted batch job/ {print $4}' "$tmp/sbatch.out")
[[ -n "$job_id" ]] && cat "$tmp/job-$job_id.out"
((rc == 0)) || fail "sweep.sh under sbatch exited with $rc (job ${job_id:-?})"
csv=$tmp/scaling/scaling.csv
[[ -s "$csv" && $(wc -l <"$csv") -eq 3 ]] || fail "scaling.csv: $(cat "$csv" 2>/dev/null)"
awk -F, 'NR == 2 { one = ($9 == 1) } NR == 3 { two = ($9 == 2 && $22 != "") } END { exit !(one && two) }' "$csv" ||
  fail "scaling.csv rows: $(tail -n 2 "$csv")"
[[ -s "$tmp/scaling/strong_time.png" ]] || fail "strong_time.png missing"
job_id=""
log "sweep.sh: 2 points on SLURM in $((SECONDS - t1)) s, CSV and strong_time.png written"

log "PASS in $((SECONDS - t0)) s"
