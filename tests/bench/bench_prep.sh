#!/usr/bin/env bash
# Throughput of `strand prep` on one core: about 200 MB of FASTA text (copies of the E. coli K-12
# genome, 80-column lines), as plain text and gzip-compressed. Prints MB/s of FASTA text
# (decompressed bytes) per wall-clock second, of the best and of the median of RUNS runs.
#
# usage: tests/bench/bench_prep.sh [STRAND_BINARY]
#   env: STRAND_BENCH_COPIES (default 43), STRAND_BENCH_DIR (default /tmp/strand_bench_prep, reused),
#        STRAND_BENCH_GENOME (default data/ecoli_k12_mg1655.fa.gz, else the
#        lambda phage genome in data/ with 95x more copies), RUNS (default 3)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
strand=${1:-${STRAND:-$root/build/strand}}
work=${STRAND_BENCH_DIR:-/tmp/strand_bench_prep}
genome=${STRAND_BENCH_GENOME:-$root/data/ecoli_k12_mg1655.fa.gz}
copies=${STRAND_BENCH_COPIES:-43}
runs=${RUNS:-3}
if [ ! -f "$genome" ]; then
    genome=$root/data/lambda_phage_NC_001416.fa.gz
    copies=$((copies * 95))
fi
[ -x "$strand" ] || { echo "bench_prep: no strand binary at $strand" >&2; exit 1; }
mkdir -p "$work"
fasta=$work/bench.fa
if [ ! -f "$fasta.gz" ]; then
    echo "generating $copies copies of $(basename "$genome") in $work ..."
    zcat -f "$genome" | grep -v '^>' | tr -d '\r\n' | fold -w 80 >"$work/seq80.txt"
    echo >>"$work/seq80.txt"
    : >"$fasta"
    for i in $(seq 1 "$copies"); do
        echo ">copy_$i $(basename "$genome") repeated for benchmarking" >>"$fasta"
        cat "$work/seq80.txt" >>"$fasta"
    done
    gzip -6 -c "$fasta" >"$fasta.gz.part" && mv "$fasta.gz.part" "$fasta.gz"
fi
text_bytes=$(stat -c %s "$fasta")
echo "input: $fasta ($text_bytes bytes of FASTA text), $fasta.gz ($(stat -c %s "$fasta.gz") bytes)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"

# bench LABEL INPUT [PREFIX...]: wall times of RUNS runs of `strand prep` on INPUT, run under
# PREFIX: MB/s of the best and of the median run, and the spread (slowest / fastest).
bench() {
    local label=$1 input=$2 times=""
    shift 2
    for _ in $(seq 1 "$runs"); do
        local t0 t1
        t0=$(date +%s.%N)
        "$@" "$strand" prep --in "$input" --out "$work/bench.h5" --quiet
        t1=$(date +%s.%N)
        times="$times $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    done
    echo "$times" | tr ' ' '\n' | grep . | sort -n | awk -v n="$text_bytes" -v name="$(basename "$input")" \
        -v label="$label" '{ t[NR] = $1 } END {
            median = NR % 2 ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
            printf "%-12s %-22s best %7.3f s %7.1f MB/s, median %7.3f s %7.1f MB/s, spread %.2fx\n", name,
                label, t[1], n / 1e6 / t[1], median, n / 1e6 / median, t[NR] / t[1] }'
}
# prep compresses /tokens chunks on worker threads (up to 4, one per online CPU); taskset pins
# the whole process, workers included, to one core.
echo "$runs runs each:"
bench "all $(nproc) cores" "$fasta"
bench "all $(nproc) cores" "$fasta.gz"
if command -v taskset >/dev/null; then
    bench "one core (taskset -c 0)" "$fasta" taskset -c 0
    bench "one core (taskset -c 0)" "$fasta.gz" taskset -c 0
fi
echo "output: $(stat -c %s "$work/bench.h5") bytes of HDF5 ($("$strand" info "$work/bench.h5" | grep '^records'))"
rm -f "$work/bench.h5"
