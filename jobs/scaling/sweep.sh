#!/usr/bin/env bash
#SBATCH --job-name=strand-scaling
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=scaling-%j.out
#SBATCH --signal=B:USR1@120
#
# Strong or weak scaling of one mixer (`strand bench mixer`) or one training configuration
# (`strand train`) over a list of rank counts, each point measured and predicted by
# `strand plan` from a calibrated machine file. Writes into $OUT:
#   runs.jsonl     one JSON line per point: measured time and split, bytes, memory, prediction
#   scaling.csv    the same as CSV with parallel efficiency (jobs/scaling/collect.sh)
#   *.png          strong_time, strong_efficiency, weak_time, split (jobs/scaling/plot.sh)
#   machine.json   the calibration (when MACHINE is not given); runs/, logs/: each point's output
#
#   sbatch --ntasks=8 jobs/scaling/sweep.sh                                # on a cluster
#   KIND=strong WHAT=mixer:hyena LENGTH=65536 CHANNELS=128 RANKS="1 2" jobs/scaling/sweep.sh
#   KIND=weak WHAT=train:jobs/quickstart.ini LENGTH=1024 RANKS="1 2" jobs/scaling/sweep.sh
#
# One allocation running one srun step per point, not a job array: one queue wait, and every
# point runs on the same nodes against the same calibration, so the points are comparable.
# A point already in runs.jsonl (same series and ranks) is not repeated, so a preempted job
# resubmitted with the same OUT carries on; an interrupted point is measured again from the start.
#
# Environment (relative paths are from the current directory, the submit directory under SLURM):
#   STRAND          the binary (default: build/strand of this repository)
#   KIND            strong (LENGTH is the window) or weak (LENGTH tokens per rank: L = LENGTH x ranks)
#   WHAT            mixer:NAME (bench mixer --layer NAME) or train:CONFIG.ini (default mixer:hyena)
#   OUT             output directory (default scaling-$KIND)
#   LENGTH          tokens (default 65536 strong, 16384 weak); CHANNELS: model.d_model (mixer:
#                   default 128; train: the config's unless given)
#   RANKS           rank counts, e.g. "1 2 4" (default: powers of two up to SLURM_NTASKS, or 1 2)
#   RANKS_PER_NODE  default: SLURM_NTASKS_PER_NODE (or SLURM_TASKS_PER_NODE) under SLURM, else
#                   all ranks on one node; a point is oversubscribed when its ranks on one node
#                   exceed the cores (SLURM_CPUS_ON_NODE under SLURM, else nproc; CORES overrides)
#   STEPS           training steps per point (default 6; the first is warm-up); REPEAT: bench
#                   repetitions (default 3)
#   SET             extra overrides "key=value key=value" (bench and train: --set, plan too)
#   DATA            the dataset of train points (default: the config's data.path)
#   MACHINE         a calibration file; unset: `strand calibrate $CALIBRATE` on the largest rank
#                   count writes $OUT/machine.json first (kept for a resubmission)
#   LAUNCH          the launcher instead of srun or mpirun, the rank count appended (with "-n"
#                   unless LAUNCH ends with -n, -np or --ntasks): "mpirun", "mpiexec -np"
#   PLAN_CMD        the predictor (default "$STRAND plan")
# Bad settings are refused with one line and exit 2; a failed point stops the sweep (exit 1).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# sbatch runs a copy of this script from its spool: find the original for collect.sh and plot.sh.
if [[ ! -x $here/collect.sh && -n "${SLURM_JOB_ID:-}" ]]; then
  cmd=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -n 1)
  [[ -n "$cmd" ]] && here=$(cd "$(dirname "$cmd")" 2>/dev/null && pwd || echo "$here")
fi
[[ -n "${SLURM_SUBMIT_DIR:-}" ]] && cd "$SLURM_SUBMIT_DIR"
die() { echo "scaling: error: $*" >&2; exit 2; } # a bad setting
fail() { echo "scaling: error: $*" >&2; exit 1; } # a failed step

STRAND=${STRAND:-$here/../../build/strand}
KIND=${KIND:-strong}
WHAT=${WHAT:-mixer:hyena}
OUT=${OUT:-scaling-$KIND}
STEPS=${STEPS:-6}
REPEAT=${REPEAT:-3}
SET=${SET:-}
[[ $KIND =~ ^(strong|weak)$ ]] || die "KIND=$KIND: must be strong or weak"
case $WHAT in
  mixer:?*) mode=mixer name=${WHAT#mixer:} ;;
  train:?*) mode=train name=${WHAT#train:} ;;
  *) die "WHAT=$WHAT: must be mixer:NAME or train:CONFIG.ini" ;;
esac
[[ $mode == mixer ]] || [[ -f $name ]] || die "WHAT=$WHAT: no config file $name"
[[ $mode == mixer ]] && CHANNELS=${CHANNELS:-128}
if [[ $KIND == strong ]]; then LENGTH=${LENGTH:-65536}; else LENGTH=${LENGTH:-16384}; fi
if [[ -z "${RANKS+x}" ]]; then
  RANKS="1 2"
  if [[ -n "${SLURM_NTASKS:-}" ]]; then RANKS=""; for ((r = 1; r <= SLURM_NTASKS; r *= 2)); do RANKS+="$r "; done; fi
fi
[[ -n "${RANKS// /}" ]] || die "RANKS is empty: give rank counts like \"1 2 4\""
for r in $RANKS; do [[ $r =~ ^[1-9][0-9]*$ ]] || die "RANKS: '$r' is not a whole number >= 1"; done
r_max=$(tr ' ' '\n' <<<"$RANKS" | sort -n | tail -n 1)
if [[ -n "${SLURM_JOB_ID:-}" ]]; then
  RANKS_PER_NODE=${RANKS_PER_NODE:-${SLURM_NTASKS_PER_NODE:-${SLURM_TASKS_PER_NODE%%[(,]*}}}
  CORES=${CORES:-${SLURM_CPUS_ON_NODE:-$(nproc)}}
else
  RANKS_PER_NODE=${RANKS_PER_NODE:-$r_max}
  CORES=${CORES:-$(nproc)}
fi
for v in LENGTH STEPS REPEAT RANKS_PER_NODE CORES ${CHANNELS:+CHANNELS}; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: must be a whole number >= 1"
done
for kv in $SET; do [[ $kv == ?*=* ]] || die "SET: '$kv' is not key=value"; done
[[ -x "$STRAND" ]] || die "$STRAND is not an executable strand (build it: jobs/quickstart.sh, or set STRAND)"
[[ -z "${MACHINE:-}" || -r "$MACHINE" ]] || die "MACHINE=$MACHINE: no such file"
[[ -z "${DATA:-}" || -r "$DATA" ]] || die "DATA=$DATA: no such file"
command -v jq >/dev/null || die "jq is missing (Debian: apt-get install jq)"
read -r -a plan_cmd <<<"${PLAN_CMD:-$STRAND plan}"

# launch R: the launcher for R ranks, in the array `launch`.
launch_for() {
  local r=$1
  if [[ -n "${LAUNCH:-}" ]]; then
    read -r -a launch <<<"$LAUNCH"
    [[ ${launch[-1]} =~ ^(-n|-np|--np|--ntasks)$ ]] || launch+=(-n)
    launch+=("$r")
  elif [[ -n "${SLURM_JOB_ID:-}" ]]; then
    # the only PMI that works with Debian's Open MPI; the step spread as RANKS_PER_NODE says
    launch=(srun --mpi=pmix --kill-on-bad-exit=1 -n "$r" -N $(((r + RANKS_PER_NODE - 1) / RANKS_PER_NODE)))
  else
    launch=(mpirun -n "$r" --oversubscribe)
    [[ $(id -u) -eq 0 ]] && launch+=(--allow-run-as-root)
  fi
  return 0
}
export OMPI_MCA_mpi_yield_when_idle=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 STRAND_PROGRESS=plain
# Preemption: forward the signal to the running step (a training step checkpoints), then stop.
# fd 3: the job's output, since a running step's output goes to its log.
exec 3>&1
child=0
trap 'echo "scaling: signalled, stopping after the current step" >&3; [[ $child -gt 0 ]] && kill -USR1 $child; wait; exit 143' USR1 TERM
run() { "$@" & child=$!; wait $child; local rc=$?; child=0; return $rc; }

mkdir -p "$OUT/runs" "$OUT/logs"
jsonl=$OUT/runs.jsonl
touch "$jsonl"
sets=()
# Train points: the sequence sharded over all the point's ranks, unless SET says otherwise.
[[ $mode == train ]] && sets+=(--set parallel.sp=0 --set parallel.dp=1)
for kv in $SET; do sets+=(--set "$kv"); done
if [[ -z "${MACHINE:-}" ]]; then
  MACHINE=$OUT/machine.json
  if [[ ! -s $MACHINE ]]; then
    launch_for "$r_max"
    echo "scaling: calibrating on $r_max ranks: $MACHINE"
    # shellcheck disable=SC2086 # CALIBRATE is a list of options
    run "${launch[@]}" "$STRAND" calibrate ${CALIBRATE:-} --out "$MACHINE" --dir "$OUT" >"$OUT/logs/calibrate.log" 2>&1 ||
      { tail -5 "$OUT/logs/calibrate.log" >&2; fail "strand calibrate failed (log: $OUT/logs/calibrate.log)"; }
  fi
fi

# The series: everything that defines a curve but the rank count (no commas: it goes into CSV).
what_id=$WHAT
[[ $mode == train ]] && what_id=train:$(basename "$name" .ini)
if [[ $KIND == strong ]]; then size=L$LENGTH; else size=T$LENGTH; fi
series="$KIND-$what_id-$size${CHANNELS:+-C$CHANNELS}${SET:+-$(tr ' ' '+' <<<"$SET")}"
series=${series//,/;}
t0=$SECONDS
for r in $RANKS; do
  if jq -se --arg s "$series" --argjson r "$r" 'any(.[]; .series == $s and .ranks == $r)' "$jsonl" >/dev/null; then
    echo "scaling: $series on $r ranks: done before, skipped"
    continue
  fi
  if [[ $KIND == strong ]]; then L=$LENGTH; else L=$((LENGTH * r)); fi
  nodes=$(((r + RANKS_PER_NODE - 1) / RANKS_PER_NODE))
  rpn=$((r < RANKS_PER_NODE ? r : RANKS_PER_NODE)) # ranks on the fullest node
  oversub=false
  ((rpn > CORES)) && oversub=true
  id=$(printf %s "$series" | tr -c 'A-Za-z0-9_.=+-' _)-r$r
  # The prediction first: a machine file the planner cannot read should cost no measurement.
  if [[ $mode == mixer ]]; then
    what_args=(--mixer "$name" --length "$L" --channels "$CHANNELS")
  else
    what_args=(--config "$name" --set "train.seq_len=$L" ${DATA:+--set "data.path=$DATA"} ${CHANNELS:+--set "model.d_model=$CHANNELS"})
  fi
  plan_out=$("${plan_cmd[@]}" --json "${what_args[@]}" "${sets[@]}" --ranks "$r" --ranks-per-node "$RANKS_PER_NODE" \
    --machine "$MACHINE" 2>"$OUT/logs/$id.plan.err") || { cat "$OUT/logs/$id.plan.err" >&2; fail "${plan_cmd[*]} failed for $r ranks"; }
  plan=$(grep '^{' <<<"$plan_out" | jq -c --argjson r "$r" 'select(.ranks == $r)' | head -n 1)
  [[ -n "$plan" ]] || fail "${plan_cmd[*]} printed no JSON line for $r ranks: $plan_out"

  launch_for "$r"
  log=$OUT/logs/$id.log
  if [[ $mode == mixer ]]; then
    run "${launch[@]}" "$STRAND" bench mixer --layer "$name" --length "$L" --channels "$CHANNELS" --repeat "$REPEAT" \
      "${sets[@]}" >"$log" 2>&1 || { tail -5 "$log" >&2; fail "bench mixer $name on $r ranks failed (log: $log)"; }
    bench=$(grep '^{"bench"' "$log" | tail -n 1)
    [[ -n "$bench" ]] || fail "bench mixer printed no JSON line (log: $log)"
    # bench reads no data: io_s stays null (not measured) rather than 0
    measured=$(jq -c --argjson r "$r" '{time_s: .fwd_bwd_s, comm_s: (.comm_s // null),
      compute_s: (if .comm_s != null then .fwd_bwd_s - .comm_s else null end), io_s: null,
      bytes_sent: (.bytes_sent // null), peak_rss_bytes: (.peak_rss_bytes // null), channels: .channels,
      sp: $r, dp: 1, layout: (.layout // null), strategy: (.strategy // null)}' <<<"$bench")
  else
    dir=$OUT/runs/$id
    rm -rf "$dir" # timings must come from one uninterrupted run, not a resumed one
    run "${launch[@]}" "$STRAND" train --config "$name" --no-resume --set "train.steps=$STEPS" --set "train.seq_len=$L" \
      --set "run.dir=$dir" --set train.eval_windows=0 --set train.log_every=1 --set checkpoint.every=0 \
      --set checkpoint.keep=1 ${DATA:+--set "data.path=$DATA"} ${CHANNELS:+--set "model.d_model=$CHANNELS"} \
      "${sets[@]}" >"$log" 2>&1 || { tail -5 "$log" >&2; fail "training $name on $r ranks failed (log: $log)"; }
    [[ -s $dir/metrics.jsonl && -s $dir/summary.json ]] || fail "training left no metrics.jsonl or summary.json in $dir"
    ini() { awk -F= -v s="[$1]" -v k="$2" '/^[[:space:]]*\[/ { sec = $0; gsub(/[[:space:]]/, "", sec) }
      sec == s { key = $1; gsub(/[[:space:]]/, "", key); if (key == k) { v = $2; gsub(/^[[:space:]]+|[[:space:]]+$/, "", v); print v } }' \
      "$dir/config.ini" | tail -n 1; }
    # Medians over the steps after the first (warm-up), the largest resident set of any step.
    measured=$(jq -sc --slurpfile sum "$dir/summary.json" --arg layout "$(ini parallel layout)" \
      --arg strategy "$(ini fft strategy)" --argjson channels "$(ini model d_model)" '
      def med: map(select(. != null)) | sort | if length == 0 then null
        elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
      map(select(has("step_s"))) as $all | (if ($all | length) > 1 then $all[1:] else $all end) as $s |
      {time_s: ($s | map(.step_s) | med), compute_s: ($s | map(.compute_s) | med), comm_s: ($s | map(.comm_s) | med),
       io_s: ($s | map(.io_s) | med), bytes_sent: ($s | map(.bytes_sent) | med),
       peak_rss_bytes: ($all | map(.peak_rss_bytes // empty) | max), channels: $channels,
       sp: $sum[0].sp, dp: $sum[0].dp, layout: $layout, strategy: $strategy}' "$dir/metrics.jsonl")
  fi
  jq -nc --arg series "$series" --arg kind "$KIND" --arg what "$WHAT" --argjson length "$L" \
    --argjson r "$r" --argjson nodes "$nodes" --argjson rpn "$rpn" --argjson oversub "$oversub" \
    --argjson m "$measured" --argjson p "$plan" '
    {series: $series, kind: $kind, what: $what, length: $length, tokens_per_rank: ($length / ($m.sp // $r) | floor),
     channels: $m.channels, ranks: $r, nodes: $nodes, ranks_per_node: $rpn, oversubscribed: $oversub,
     sp: $m.sp, dp: $m.dp, layout: ($m.layout // $p.layout // null), strategy: ($m.strategy // $p.strategy // null),
     time_s: $m.time_s, compute_s: $m.compute_s, comm_s: $m.comm_s, io_s: $m.io_s,
     bytes_sent: $m.bytes_sent, peak_rss_bytes: $m.peak_rss_bytes,
     predicted_s: $p.step_s, predicted_compute_s: $p.compute_s, predicted_comm_s: $p.comm_s,
     predicted_io_s: $p.io_s, predicted_memory_bytes: $p.memory_bytes, plan_refused: $p.refused}' >>"$jsonl"
  printf 'scaling: %s on %d ranks (%d node(s)%s): %s s, predicted %s s [%dm%02ds]\n' "$series" "$r" "$nodes" \
    "$([[ $oversub == true ]] && echo ", oversubscribed")" "$(jq -r .time_s <<<"$measured")" \
    "$(jq -r .step_s <<<"$plan")" $(((SECONDS - t0) / 60)) $(((SECONDS - t0) % 60))
done

"$here/collect.sh" -o "$OUT/scaling.csv" "$jsonl" || fail "collect.sh failed"
"$here/plot.sh" "$OUT/scaling.csv" "$OUT" || fail "plot.sh failed"
echo "scaling: $(($(wc -l <"$OUT/scaling.csv") - 1)) point(s) in $OUT/scaling.csv, plots in $OUT"
