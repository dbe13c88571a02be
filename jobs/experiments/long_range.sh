#!/usr/bin/env bash
#SBATCH --job-name=strand-long-range
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=long_range-%j.out
#SBATCH --signal=B:USR1@120
#
# The long-range experiment (README "Long-range experiments"): every mixer trained on copy,
# adding and parity at distances D = 16 ... 4096 with one fixed small budget, each run sharded
# over the job's ranks, then the gradient probe on each mixer. Writes into $OUT:
#   long_range.csv      one row per (task, distance, mixer): accuracy on the answers and more
#   long_range.png      accuracy against distance, one panel per task, one line per mixer
#   long_range.md       the same as a Markdown table (README's)
#   gradient.csv        per mixer: the probe's fits on its copy model at the largest distance
#   gradient.png        g(k) = ||d loss_T / d x_(T-k)|| against k for every mixer
#   data/, runs/, gradient/, plot/: the datasets, run directories, the probe's curves and the
#                       plotted series
#
#   sbatch jobs/experiments/long_range.sh               # on a cluster (srun launches each run)
#   jobs/experiments/long_range.sh                      # here: mpirun -n ${RANKS:-2}
#   MIXERS="lstm attn" DISTANCES="16 64" jobs/experiments/long_range.sh    # a part of it
#
# A run whose summary.json exists is not repeated, so a killed or preempted job resubmitted
# with the same OUT carries on where it stopped. Environment: STRAND (the binary, default
# build/strand), OUT (default runs/long_range), MIXERS, TASKS, DISTANCES, TOKENS (the budget:
# training tokens per run, default 2^19), ACCUM (windows per step, 2), MIN_STEPS and MAX_STEPS
# (bounds on the steps that budget buys, 30 and 1000), LR (3e-3), RANKS (2, outside SLURM),
# LAUNCH (the launcher command instead of srun or mpirun, e.g. "mpiexec -n 4").
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-$(dirname "${BASH_SOURCE[0]}")/../..}"
STRAND=${STRAND:-build/strand}
OUT=${OUT:-runs/long_range}
MIXERS=${MIXERS:-rnn lstm gru ornn dilated conv attn s4d hyena mamba mingru}
TASKS=${TASKS:-copy adding parity}
DISTANCES=${DISTANCES:-16 64 256 1024 4096}
TOKENS=${TOKENS:-524288}
ACCUM=${ACCUM:-2}
MIN_STEPS=${MIN_STEPS:-30}
MAX_STEPS=${MAX_STEPS:-1000}
RANKS=${RANKS:-2}
die() { echo "long_range: error: $*" >&2; exit 1; }
[[ -x "$STRAND" ]] || die "$STRAND is not an executable strand (build it: jobs/quickstart.sh, or set STRAND)"
command -v gnuplot >/dev/null || die "gnuplot is missing (Debian: apt-get install gnuplot-nox; jobs/setup.sh)"
for v in TOKENS ACCUM MIN_STEPS MAX_STEPS RANKS; do [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: must be a whole number >= 1"; done
for task in $TASKS; do [[ $task =~ ^(copy|adding|parity)$ ]] || die "TASKS: unknown task '$task' (copy, adding or parity)"; done
for d in $DISTANCES; do [[ $d =~ ^[1-9][0-9]*$ ]] || die "DISTANCES: '$d' is not a whole number >= 1"; done

if [[ -n "${LAUNCH:-}" ]]; then
    read -r -a launch <<<"$LAUNCH"
elif [[ -n "${SLURM_JOB_ID:-}" ]]; then
    launch=(srun --mpi=pmix --kill-on-bad-exit=1) # the only PMI that works with Debian's Open MPI
else
    launch=(mpirun -n "$RANKS" --oversubscribe)
    [[ $(id -u) -eq 0 ]] && launch+=(--allow-run-as-root)
fi
export OMPI_MCA_mpi_yield_when_idle=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 STRAND_PROGRESS=plain
# Preemption: forward the signal to the running step (strand checkpoints and exits), then stop.
child=0
trap 'echo "long_range: signalled, stopping after the current run checkpoints"; [[ $child -gt 0 ]] && kill -USR1 $child; wait; exit 143' USR1 TERM
run() { "$@" & child=$!; wait $child; local rc=$?; child=0; return $rc; }

mkdir -p "$OUT/data" "$OUT/runs" "$OUT/gradient" "$OUT/plot"
t0=$SECONDS

# The window of each task at distance D (tokens): the smallest that holds the task with room
# for its answers (README "Task datasets").
window() {
    case $1 in
        copy) echo $(($2 + 16)) ;;       # block of 8, D later the cue, then the 8 again
        adding) echo $(($2 + 20)) ;;     # the first mark anywhere in 17 places, query, 2 digits
        parity) echo $((2 * $2 + 256)) ;; # bits and outputs interleaved: 128 answers after 2D tokens
    esac
}
# Accuracy of the best answer that ignores the marked digits: copy 1/8; adding: the tens digit
# is 0 with p = 0.55, and the units digit given the tens is 9 with p = 10/55 (tens 0) or 0 with
# p = 9/45 (tens 1), so (0.55 + 0.19) / 2; parity 1/2.
chance() { case $1 in copy) echo 0.125 ;; adding) echo 0.37 ;; parity) echo 0.5 ;; esac; }
# The model: two blocks of the mixer, except dilated, which is WaveNet's stack of 8 blocks with
# dilations 1, 2, ..., 128 (kernel 2: it reaches 256 tokens).
layers() {
    if [[ $1 == dilated ]]; then echo dilated,dilated,dilated,dilated,dilated,dilated,dilated,dilated
    else echo "$1,$1"; fi
}
# The budget: every run trains on TOKENS tokens (ACCUM windows a step), within the step bounds.
steps_for() {
    local s=$((TOKENS / (ACCUM * $1)))
    ((s < MIN_STEPS)) && s=$MIN_STEPS
    ((s > MAX_STEPS)) && s=$MAX_STEPS
    echo $s
}
json_num() { sed -n 's/.*"'"$2"'"[[:space:]]*:[[:space:]]*\([-+0-9.eE]*\|null\).*/\1/p' "$1" | head -n 1; }

csv=$OUT/long_range.csv
echo "task,distance,window,mixer,layers,parameters,steps,windows_per_step,answer_accuracy,answer_bits,chance_accuracy,train_seconds,ranks" >"$csv"
set -- $MIXERS
n_mixers=$#
total=$(($(wc -w <<<"$TASKS") * $(wc -w <<<"$DISTANCES") * n_mixers)) done_runs=0
for D in $DISTANCES; do
    for task in $TASKS; do
        W=$(window "$task" "$D")
        [[ -n "$W" ]] || die "unknown task '$task' (copy, adding or parity)"
        STEPS=$(steps_for "$W")
        data=$OUT/data/$task-D$D.h5
        if ! "$STRAND" info "$data" >/dev/null 2>&1; then
            rm -f "$data"
            "$STRAND" prep --task "$task" --length "$W" --distance "$D" --count $((STEPS * ACCUM + 40)) \
                --seed 1 --val-fraction 0.1 --out "$data" >"$OUT/data/$task-D$D.log" 2>&1 ||
                { cat "$OUT/data/$task-D$D.log" >&2; die "strand prep --task $task failed"; }
        fi
        for mixer in $MIXERS; do
            dir=$OUT/runs/$task-D$D-$mixer
            done_runs=$((done_runs + 1))
            if [[ ! -s $dir/summary.json ]]; then
                mkdir -p "$dir"
                cat >"$dir/experiment.ini" <<INI
[model]
d_model = 32
mlp_hidden = 64
layers = $(layers "$mixer")
[train]
seq_len = $W
steps = $STEPS
accum_steps = $ACCUM
lr = ${LR:-3e-3}
warmup_steps = 10
weight_decay = 0.01
log_every = $STEPS
eval_windows = 32
seed = 1
[data]
path = $data
[run]
dir = $dir
[fft]
planner = estimate
INI
                run "${launch[@]}" "$STRAND" train --config "$dir/experiment.ini" >"$dir/train.log" 2>&1 ||
                    { tail -5 "$dir/train.log" >&2; die "training $mixer on $task at D = $D failed (log: $dir/train.log)"; }
            fi
            s=$dir/summary.json
            acc=$(json_num "$s" val_answer_accuracy) bits=$(json_num "$s" val_bpb)
            secs=$(json_num "$s" seconds) params=$(json_num "$s" parameters) ranks=$(json_num "$s" world_size)
            echo "$task,$D,$W,$mixer,$(layers "$mixer" | tr , ' '),$params,$STEPS,$ACCUM,$acc,$bits,$(chance "$task"),$secs,$ranks" >>"$csv"
            printf '[%d/%d %dm%02ds] %-6s D = %-4d %-7s accuracy %.3f (chance %s), %.2f bits, %.1f s\n' \
                "$done_runs" "$total" $(((SECONDS - t0) / 60)) $(((SECONDS - t0) % 60)) "$task" "$D" "$mixer" \
                "$acc" "$(chance "$task")" "$bits" "$secs"
        done
    done
done

# The gradient probe on each mixer's copy model at the largest distance: the loss at the last
# answer (T = W - 2), whose source (token 7 of the block) is D + 7 positions back.
D_max=$(tr ' ' '\n' <<<"$DISTANCES" | sort -n | tail -1)
fits=$OUT/gradient.csv
echo "mixer,task,distance,window,position,g0,g1,r_per_step,slope_per_decade,g_at_source" >"$fits"
if [[ " $TASKS " == *" copy "* ]]; then
    W=$(window copy "$D_max") T=$(($(window copy "$D_max") - 2))
    for mixer in $MIXERS; do
        log=$OUT/gradient/$mixer.log
        run "${launch[@]}" "$STRAND" probe gradient --checkpoint "$OUT/runs/copy-D$D_max-$mixer" --windows 4 \
            --position "$T" --csv "$OUT/gradient/$mixer.csv" >"$log" 2>&1 ||
            { cat "$log" >&2; die "strand probe gradient on $mixer failed"; }
        g0=$(sed -n 's/^g(0) \([^,]*\),.*/\1/p' "$log") g1=$(sed -n 's/.*g(1) \([^,]*\),.*/\1/p' "$log")
        r=$(sed -n 's/.*per step r = \([^ ]*\) .*/\1/p' "$log") slope=$(sed -n 's/.*slope s = \([^ ]*\) .*/\1/p' "$log")
        source=$(awk -F, -v k=$((D_max + 7)) '$1 == k { print $2 }' "$OUT/gradient/$mixer.csv")
        echo "$mixer,copy,$D_max,$W,$T,$g0,$g1,$r,$slope,$source" >>"$fits"
        echo "probe: $mixer: g(0) $g0, g(D + 7) $source, r per step $r, slope per decade $slope"
    done
fi

# The table: accuracy per mixer (rows) and task x distance (columns).
table=$OUT/long_range.md
awk -F, -v tasks="$TASKS" -v distances="$DISTANCES" -v mixers="$MIXERS" '
    NR > 1 { acc[$1, $2, $4] = $9; chance[$1] = $11 }
    END {
        nt = split(tasks, T, " "); nd = split(distances, D, " "); nm = split(mixers, M, " ")
        printf "| mixer |"; for (t = 1; t <= nt; t++) for (d = 1; d <= nd; d++) printf " %s %s |", T[t], D[d]; print ""
        printf "|---|"; for (t = 1; t <= nt; t++) for (d = 1; d <= nd; d++) printf "---|"; print ""
        for (m = 1; m <= nm; m++) {
            printf "| %s |", M[m]
            for (t = 1; t <= nt; t++) for (d = 1; d <= nd; d++) {
                a = acc[T[t], D[d], M[m]]
                printf (a + 0 >= 0.95 ? " **%.2f** |" : " %.2f |"), a
            }
            print ""
        }
        printf "| (chance) |"; for (t = 1; t <= nt; t++) for (d = 1; d <= nd; d++) printf " %.2f |", chance[T[t]]; print ""
    }' "$csv" >"$table"

# Accuracy against distance, one panel per task; g(k) against k. One colour per mixer (gnuplot's
# default cycle repeats after 8).
colors=(1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf 000000 aa5500)
color() { echo "#${colors[$(($1 % ${#colors[@]}))]}"; }
{
    echo "set terminal pngcairo size $((520 * $(wc -w <<<"$TASKS"))),520 font ',10'"
    echo "set output '$OUT/long_range.png'"
    echo "set datafile separator ','"
    echo "set multiplot layout 1,$(wc -w <<<"$TASKS") title 'strand: accuracy on the answers after $TOKENS training tokens ($ACCUM windows a step, $MIN_STEPS to $MAX_STEPS steps), $(sed -n 2p "$csv" | cut -d, -f13) ranks'"
    echo "set logscale x 2; set xlabel 'distance D (positions)'; set ylabel 'answer accuracy'; set yrange [0:1.05]; set key outside right font ',8'; set grid"
    for task in $TASKS; do
        echo "set title '$task (dashed: chance $(chance "$task"))'"
        plot="plot " i=0
        for mixer in $MIXERS; do
            # one file per line: gnuplot joins only consecutive points
            awk -F, -v t="$task" -v m="$mixer" '$1 == t && $4 == m { print $2 "," $9 }' "$csv" >"$OUT/plot/$task-$mixer.csv"
            plot+="'$OUT/plot/$task-$mixer.csv' using 1:2 with linespoints lc rgb '$(color $i)' title '$mixer', "
            i=$((i + 1))
        done
        echo "$plot $(chance "$task") with lines dashtype 2 lc 'black' notitle"
    done
    echo "unset multiplot"
} >"$OUT/long_range.gp"
gnuplot "$OUT/long_range.gp" || die "gnuplot failed on $OUT/long_range.gp"
if [[ $(wc -l <"$fits") -gt 1 ]]; then
    {
        echo "set terminal pngcairo size 900,600 font ',10'"
        echo "set output '$OUT/gradient.png'"
        echo "set datafile separator ','"
        echo "set logscale xy; set xlabel 'k (positions back from T)'; set ylabel 'g(k) = ||d loss_T / d x_{T-k}||'"
        echo "set title 'gradient signal of each copy model at D = $D_max (mean of 4 windows)'; set key outside right; set grid"
        plot="plot " i=0
        for mixer in $MIXERS; do
            plot+="'$OUT/gradient/$mixer.csv' every ::2 using 1:(\$2 > 0 ? \$2 : 1/0) with lines lc rgb '$(color $i)' title '$mixer', "
            i=$((i + 1))
        done
        echo "${plot%, }"
    } >"$OUT/gradient.gp"
    gnuplot "$OUT/gradient.gp" || die "gnuplot failed on $OUT/gradient.gp"
fi
elapsed=$((SECONDS - t0))
echo "long_range: $total runs in $((elapsed / 60))m$((elapsed % 60))s: $csv, $OUT/long_range.png, $table, $fits"
