#!/usr/bin/env bash
# The recurrent cells next to PyTorch: strand bench rnn --cell CELL and tests/bench/torch_rnn.py
# (torch.nn.RNN / LSTM / GRU plus the same output projection, one thread) at the same size,
# interleaved, REPEAT times each; a summary gives medians, ranges and the per-pair ratio. Run it
# with nothing else on the cores.
#
#   tests/bench/bench_rnn.sh [BUILD_DIR]                        (default: build)
#
# CELLS (lstm), LENGTHS (16384 65536), CHANNELS (256), REPEAT (3); TORCH_PYTHON
# (/usr/bin/python3, Debian's python3-torch). torch.nn.LSTM took about 149 s at L = 65536 here.
set -euo pipefail

build=${1:-build}
strand=$build/strand
[[ -x "$strand" ]] || { echo "bench_rnn: $strand not found (build first)" >&2; exit 1; }
source_dir=$(cd "$(dirname "$0")/../.." && pwd)
python=${TORCH_PYTHON:-/usr/bin/python3}
"$python" -c "import torch" 2>/dev/null || { echo "bench_rnn: $python cannot import torch" >&2; exit 1; }
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<<"$2"; }
stats() { sort -g | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
                                             printf "median %.4g (%.4g-%.4g, %d runs)", m, v[1], v[NR], NR }'; }
for cell in ${CELLS:-lstm}; do
    for L in ${LENGTHS:-16384 65536}; do
        s=() t=() r=()
        for i in $(seq "${REPEAT:-3}"); do
            out=$("$strand" bench rnn --cell "$cell" --length "$L" --channels "${CHANNELS:-256}" --repeat 1)
            echo "$out"
            s+=("$(field fwd_bwd_s "$out")")
            out=$("$python" "$source_dir/tests/bench/torch_rnn.py" --cell "$cell" --length "$L" \
                --channels "${CHANNELS:-256}" --threads 1 --repeat 1)
            echo "$out"
            t+=("$(field fwd_bwd_s "$out")")
            r+=("$(awk -v a="${t[-1]}" -v b="${s[-1]}" 'BEGIN { print a / b }')")
        done
        echo "summary $cell L=$L: strand $(printf '%s\n' "${s[@]}" | stats)"
        echo "summary $cell L=$L: torch $(printf '%s\n' "${t[@]}" | stats)"
        echo "summary $cell L=$L: torch / strand per pair $(printf '%s\n' "${r[@]}" | stats)"
    done
done
