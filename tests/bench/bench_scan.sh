#!/usr/bin/env bash
# The scan family's figures, each next to its same-run reference:
#   speed     strand bench scan --layer mamba at L = 2^16 and 2^18 (d_model 64, N 16, 1 rank) and
#             tests/bench/torch_mamba.py's chunked selective scan at the same size (one thread, in
#             blocks of chunks so its temporaries fit; up to TORCH_MAX_LENGTH), interleaved, REPEAT
#             times each;
#   scaling   the mamba layer at L = 2^20 on 1 and 2 ranks (strong scaling), REPEAT times each;
#   bytes     the bytes the scan's exchange sends per rank at SP = 2 for L = 2^16 ... 2^22.
# Every run prints its JSON line; a summary gives medians and ranges. Run it with nothing else on
# the cores (no build, no test).
#
#   tests/bench/bench_scan.sh [BUILD_DIR] [speed|scaling|bytes ...]      (default: build, all three)
#
# REPEAT (3) sets the repetitions, LENGTHS (65536 262144) the speed part's lengths,
# TORCH_MAX_LENGTH (262144) the longest the PyTorch reference runs at; TORCH_PYTHON
# (/usr/bin/python3, Debian's python3-torch) the interpreter for the PyTorch reference (skipped
# when it cannot import torch).
set -euo pipefail

build=${1:-build}
shift || true
parts=${*:-speed scaling bytes}
strand=$build/strand
[[ -x "$strand" ]] || { echo "bench_scan: $strand not found (build first)" >&2; exit 1; }
source_dir=$(cd "$(dirname "$0")/../.." && pwd)
repeat=${REPEAT:-3}
python=${TORCH_PYTHON:-/usr/bin/python3}
mpiexec=${STRAND_MPIEXEC:-mpirun}
[[ $(id -u) -eq 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<<"$2"; }
# median and range of the numbers on stdin
stats() { sort -g | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
                                             printf "median %.4g (%.4g-%.4g, %d runs)", m, v[1], v[NR], NR }'; }
have_torch=1
"$python" -c "import torch" 2>/dev/null || { have_torch=0; echo "bench_scan: no torch in $python: PyTorch skipped" >&2; }

for part in $parts; do
    case $part in
    speed)
        for L in ${LENGTHS:-65536 262144}; do
            # 256 chunks of 16 at a time, recomputed in backward: about 0.5 GB of temporaries per
            # block. The rest of the reference grows as L * D * N (6.9 GB peak at 2^16), so above
            # 2^16 it scans segments of 2^16 positions in turn, each recomputed in backward, and
            # skips its warm-up run (one run takes some 15 minutes there).
            torch_args=(--block 256)
            [[ $L -gt 65536 ]] && torch_args+=(--segment 65536 --warmup 0)
            torch_here=$have_torch
            if [[ $L -gt ${TORCH_MAX_LENGTH:-262144} ]]; then
                torch_here=0
                echo "bench_scan: PyTorch skipped at L=$L (above TORCH_MAX_LENGTH=${TORCH_MAX_LENGTH:-262144})" >&2
            fi
            s=() t=()
            for r in $(seq "$repeat"); do
                out=$("$strand" bench scan --layer mamba --length $L --channels 64 --state 16 --repeat 1)
                echo "$out"
                s+=("$(field fwd_bwd_s "$out")")
                if [[ $torch_here -eq 1 ]]; then
                    out=$("$python" "$source_dir/tests/bench/torch_mamba.py" --length $L --channels 64 --state 16 \
                        --scan chunked --chunk 16 "${torch_args[@]}" --threads 1 --repeat 1)
                    echo "$out"
                    t+=("$(field fwd_bwd_s "$out")")
                fi
            done
            echo "summary speed L=$L: strand mamba fwd+bwd $(printf '%s\n' "${s[@]}" | stats)"
            if [[ ${#t[@]} -gt 0 ]]; then
                echo "summary speed L=$L: torch chunked fwd+bwd $(printf '%s\n' "${t[@]}" | stats)"
                ratios=()
                for i in "${!s[@]}"; do ratios+=("$(awk -v a="${t[$i]}" -v b="${s[$i]}" 'BEGIN { print a / b }')"); done
                echo "summary speed L=$L: torch / strand, per pair $(printf '%s\n' "${ratios[@]}" | stats)"
            fi
        done
        ;;
    scaling)
        L=1048576
        one=() two=()
        for r in $(seq "$repeat"); do
            out=$("$strand" bench scan --layer mamba --length $L --channels 64 --repeat 1)
            echo "$out"
            one+=("$(field fwd_bwd_s "$out")")
            out=$("$mpiexec" -n 2 "$strand" bench scan --layer mamba --length $L --channels 64 --repeat 1)
            echo "$out"
            two+=("$(field fwd_bwd_s "$out")")
        done
        eff=()
        for i in "${!one[@]}"; do eff+=("$(awk -v a="${one[$i]}" -v b="${two[$i]}" 'BEGIN { print a / (2 * b) }')"); done
        echo "summary scaling L=$L: 1 rank $(printf '%s\n' "${one[@]}" | stats)"
        echo "summary scaling L=$L: 2 ranks $(printf '%s\n' "${two[@]}" | stats)"
        echo "summary scaling L=$L: efficiency t1 / (2 t2), per pair $(printf '%s\n' "${eff[@]}" | stats)"
        ;;
    bytes)
        for e in 16 17 18 19 20 21 22; do
            L=$((1 << e))
            out=$("$mpiexec" -n 2 "$strand" bench scan --layer mamba --length $L --channels 16 --repeat 1)
            echo "$out"
            echo "summary bytes L=2^$e: $(field scan_bytes_sent "$out") bytes sent per rank (fwd_bwd $(field fwd_bwd_s "$out") s)"
        done
        ;;
    *) echo "bench_scan: unknown part '$part' (speed, scaling, bytes)" >&2; exit 2 ;;
    esac
done
