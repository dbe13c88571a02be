#!/usr/bin/env bash
# parallel.threads against ranks on the same cores: 1 rank x N threads next to N ranks x 1 thread,
# alternating in one run, on the hyena layer (`strand bench fftconv --layer hyena`, forward +
# backward) and on whole training steps (`strand bench train`, tests/bench/models/hyena.ini).
# Prints one line per measurement and, per case, the medians and their ratio threads / ranks
# (below 1: the threaded rank is faster).
#
# usage: tests/bench/bench_threads.sh [STRAND_BINARY]
#   env: N (2), LENGTH (262144, the layer's window), CHANNELS (64), CONFIG (tests/bench/models/
#        hyena.ini), STEP_LEN (32768, its train.seq_len here), RUNS (3), MEASURE (1: FFTW_MEASURE
#        with the wisdom cache), MPIRUN (mpirun)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
strand=${1:-${STRAND:-$root/build/strand}}
[ -x "$strand" ] || { echo "bench_threads: no strand binary at $strand" >&2; exit 1; }
n=${N:-2}
length=${LENGTH:-262144}
channels=${CHANNELS:-64}
config=${CONFIG:-$root/tests/bench/models/hyena.ini}
step_len=${STEP_LEN:-32768}
runs=${RUNS:-3}
mpirun=${MPIRUN:-mpirun}
measure=()
[ "${MEASURE:-1}" = 1 ] && measure=(--measure)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

layer() { # ranks threads -> fwd_bwd_s
    "$mpirun" -n "$1" --bind-to none "$strand" bench fftconv --layer hyena --length "$length" \
        --channels "$channels" --repeat 3 --threads "$2" "${measure[@]}" | jq -r .fwd_bwd_s
}
step() { # ranks threads -> step_s
    "$mpirun" -n "$1" --bind-to none "$strand" bench train --config "$config" --steps 5 --warmup 2 \
        --set "train.seq_len=$step_len" --set "parallel.threads=$2" | jq -r .step_s
}
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

for case in layer step; do
    : >"/tmp/bench_threads_$case.t" && : >"/tmp/bench_threads_$case.r"
    for r in $(seq 1 "$runs"); do
        t=$($case 1 "$n")
        k=$($case "$n" 1)
        echo "$case run $r: 1 rank x $n threads $t s, $n ranks x 1 thread $k s"
        echo "$t" >>"/tmp/bench_threads_$case.t"
        echo "$k" >>"/tmp/bench_threads_$case.r"
    done
    mt=$(median <"/tmp/bench_threads_$case.t")
    mr=$(median <"/tmp/bench_threads_$case.r")
    echo "$case: median 1x$n threads $mt s, ${n}x1 ranks $mr s, ratio $(awk -v a="$mt" -v b="$mr" 'BEGIN {printf "%.3f", a / b}')"
done
