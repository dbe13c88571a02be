#!/usr/bin/env bash
# Which long-convolution strategy wins where: runs `strand bench fftconv` (bare convolution, forward +
# backward) for both strategies over lengths and channel counts at each rank count, and writes
#   $OUT/conv_sweep.csv   one row per run (the JSON fields that matter)
#   $OUT/conv_sweep.md    per (ranks, L, d): both times, the winner and its speedup
# Shapes whose estimated memory (about 88 bytes per token-channel in float, over all ranks) would
# exceed MEM_LIMIT_MB are skipped and listed as such.
#
# usage: tests/bench/conv_sweep.sh [STRAND_BINARY]
#   env: RANKS ("1 2"), LENGTHS (2^14 .. 2^22), CHANNELS ("8 64 256"), REPEAT (3),
#        OUT (/tmp/strand_conv_sweep), MEM_LIMIT_MB (60% of MemAvailable), MEASURE (0; 1 = --measure),
#        MPIRUN (mpirun)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
strand=${1:-${STRAND:-$root/build/strand}}
[ -x "$strand" ] || { echo "conv_sweep: no strand binary at $strand" >&2; exit 1; }
ranks_list=${RANKS:-"1 2"}
lengths=${LENGTHS:-"16384 32768 65536 131072 262144 524288 1048576 2097152 4194304"}
channels_list=${CHANNELS:-"8 64 256"}
repeat=${REPEAT:-3}
out=${OUT:-/tmp/strand_conv_sweep}
mpirun=${MPIRUN:-mpirun}
avail_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo)
mem_limit_mb=${MEM_LIMIT_MB:-$((avail_kb * 6 / 10 / 1024))}
measure_flag=""
[ "${MEASURE:-0}" = 1 ] && measure_flag="--measure"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

mkdir -p "$out"
csv=$out/conv_sweep.csv
echo "ranks,length,channels,strategy,forward_s,backward_s,fwd_bwd_s,bytes_sent_per_rank,fft_s,fftw_ref_s,max_rel_error" >"$csv"
for ranks in $ranks_list; do
    for L in $lengths; do
        for d in $channels_list; do
            need_mb=$((88 * L * d / 1048576))
            for strategy in alltoall fftw-mpi; do
                if [ "$need_mb" -gt "$mem_limit_mb" ]; then
                    echo "$ranks,$L,$d,$strategy,skipped-memory,,,,,," >>"$csv"
                    continue
                fi
                json=$("$mpirun" -n "$ranks" "$strand" bench fftconv --length "$L" --channels "$d" \
                    --strategy "$strategy" --repeat "$repeat" $measure_flag) || {
                    echo "$ranks,$L,$d,$strategy,failed,,,,,," >>"$csv"
                    continue
                }
                echo "$json" >>"$out/conv_sweep.jsonl"
                echo "$json" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
keys = ["ranks", "length", "channels", "strategy", "forward_s", "backward_s", "fwd_bwd_s",
        "bytes_sent_per_rank", "fft_s", "fftw_ref_s", "max_rel_error"]
print(",".join("" if r[k] is None else str(r[k]) for k in keys))' >>"$csv"
                echo "ranks=$ranks L=$L d=$d $strategy: $(tail -1 "$csv" | cut -d, -f7) s" >&2
            done
        done
    done
done

python3 - "$csv" >"$out/conv_sweep.md" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
cell = {}
for r in rows:
    cell[(int(r["ranks"]), int(r["length"]), int(r["channels"]), r["strategy"])] = r["fwd_bwd_s"]
shapes = sorted({k[:3] for k in cell})
print("| ranks | L | d | alltoall fwd+bwd s | fftw-mpi fwd+bwd s | winner | speedup |")
print("|---:|---:|---:|---:|---:|:---|---:|")
for s in shapes:
    a, f = cell.get(s + ("alltoall",), ""), cell.get(s + ("fftw-mpi",), "")
    try:
        ta, tf = float(a), float(f)
        win, speed = ("alltoall", tf / ta) if ta <= tf else ("fftw-mpi", ta / tf)
        print(f"| {s[0]} | 2^{s[1].bit_length() - 1} | {s[2]} | {ta:.4g} | {tf:.4g} | {win} | {speed:.2f}x |")
    except ValueError:
        print(f"| {s[0]} | 2^{s[1].bit_length() - 1} | {s[2]} | {a} | {f} | - | - |")
EOF
cat "$out/conv_sweep.md"
echo "wrote $csv and $out/conv_sweep.md" >&2
