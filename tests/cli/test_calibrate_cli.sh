#!/usr/bin/env bash
# strand calibrate --quick on 2 ranks: the machine file has every rate > 0 (inter-node both 0 on
# one node), tables of the right lengths, no HDF5 test file left behind; bad flags and a missing
# --dir are refused with one error line.
set -euo pipefail
source "$STRAND_SOURCE_DIR/tests/cli/cli_common.sh"
cli_begin calibrate
cd "$work"
mpi() { "$STRAND_MPIEXEC" --oversubscribe -n "$@"; }
mkdir io

# 1. a quick calibration
if mpi 2 "$STRAND" calibrate --quick --out m.json --dir io >out.txt 2>err.txt; then
    ok "calibrate --quick on 2 ranks"
else
    fail "calibrate --quick: exit $?: $(cat err.txt)"
fi
cat out.txt
jq -e '.strand_machine == 1 and .ranks == 2 and .alltoall_ranks == 2 and .memory_node_ranks == 2 and .compute_node_factor > 0 and .compute_node_factor <= 1 and .nodes >= 1 and .cores_per_node >= 1' \
    m.json >/dev/null && ok "format marker and ranks" || fail "header fields: $(head -c 400 m.json)"
jq -e --arg p "${STRAND_REAL:-float}" '.precision == $p and .io_dir == "io"' m.json >/dev/null &&
    ok "precision and io_dir" || fail "precision/io_dir: $(jq -c '[.precision, .io_dir]' m.json)"
rates='memory_per_node_bytes sgemm_gflops sgemv_gflops memory_bytes_per_s memory_node_bytes_per_s transcendentals_per_s p2p_latency_s
    p2p_bytes_per_s alltoall_bytes_per_s hdf5_write_bytes_per_s hdf5_read_bytes_per_s'
bad=0
for k in $rates; do
    jq -e --arg k "$k" '.[$k] | type == "number" and . > 0' m.json >/dev/null || {
        fail "$k not > 0: $(jq ".$k" m.json)"
        bad=1
    }
done
[ "$bad" -eq 0 ] && ok "every rate > 0"
jq -e '(.p2p_inter_latency_s == 0 and .p2p_inter_bytes_per_s == 0) or
    (.p2p_inter_latency_s > 0 and .p2p_inter_bytes_per_s > 0)' m.json >/dev/null &&
    ok "inter-node p2p: both 0 (one node) or both > 0" || fail "inter-node p2p: $(jq -c '[.p2p_inter_latency_s, .p2p_inter_bytes_per_s]' m.json)"
for t in gemm_width:7 gemm_gflops:7 fft_size:5 fft_real_s_per_point:5 fft_complex_s_per_point:5 attn_head_dim:3 \
    attn_gflops:3; do
    k=${t%:*} n=${t#*:}
    jq -e --arg k "$k" --argjson n "$n" '.[$k] | length == $n and all(type == "number" and . > 0)' m.json \
        >/dev/null || fail "$k: not $n positive numbers: $(jq -c ".$k" m.json)"
done
jq -e '.gemm_width == [16,32,64,128,256,512,1024] and .fft_size == [1024,8192,65536,524288,4194304] and
    .attn_head_dim == [32,64,128]' m.json >/dev/null && ok "tables: lengths and sizes" || fail "table sizes"
[ -z "$(ls io)" ] && ok "HDF5 test file removed" || fail "left in io/: $(ls io)"
[ ! -e m.json.tmp ] && ok "no temporary file" || fail "m.json.tmp left"
[ "$(grep -c 'GFLOP/s\|GB/s\|ns$\|per s$' out.txt)" -ge 10 ] && ok "summary with units" || fail "summary: $(cat out.txt)"

# 2. refusals: one error line each, nothing written
refused() { # RANKS CODE NEEDLE ARGS... (usage errors on one rank: mpirun's start-up costs a second)
    local ranks=$1 code=$2 needle=$3 rc=0
    shift 3
    if [ "$ranks" -gt 1 ]; then
        mpi "$ranks" "$STRAND" calibrate "$@" >/dev/null 2>err.txt || rc=$?
    else
        "$STRAND" calibrate "$@" >/dev/null 2>err.txt || rc=$?
    fi
    if [ "$rc" -eq "$code" ] && [ "$(grep -c '^strand' err.txt)" -eq 1 ] &&
        grep -q -- "^strand calibrate: error: .*$needle" err.txt; then
        ok "refused ($code, $ranks rank(s)): $needle"
    else
        fail "expected exit $code with '$needle', got $rc: $(cat err.txt)"
    fi
}
refused 1 2 "unknown option '--nope'" --nope
refused 1 2 "--io-bytes needs a byte count" --io-bytes 0 --out bad.json
refused 2 1 "cannot create the HDF5 test file nowhere/sub/strand-calibrate-.*No such file or directory" --quick --dir nowhere/sub --out bad.json
[ ! -e bad.json ] && ok "no machine file after a refusal" || fail "bad.json written"
"$STRAND" calibrate --help | grep -q -- "--io-bytes N" && ok "--help" || fail "--help"
cli_end "calibrate CLI tests passed"
