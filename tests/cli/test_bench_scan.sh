#!/usr/bin/env bash
# strand bench rnn and bench scan: one JSON line each with the fields their help promises; the
# bytes the scan's exchange sends per rank are the same at every window length (2 ranks, each
# layer, and in zigzag), zero at one rank; bad flags are refused with exit 2.
set -euo pipefail
: "${STRAND:?}" "${STRAND_SOURCE_DIR:?}" "${STRAND_MPIEXEC:?}"
source "$STRAND_SOURCE_DIR/tests/cli/cli_common.sh"
cli_begin bench_scan
cd "$work"
field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<<"$2"; }

out=$("$STRAND" bench rnn --cell gru --length 64 --channels 8 --repeat 1)
for key in forward_s backward_s fwd_bwd_s gflops sgemv_gflops; do
    [ -n "$(field "$key" "$out")" ] || fail "bench rnn: no $key in $out"
done

for layer in mingru minlstm mamba s4d; do
    for layout in contiguous zigzag; do
        bytes=()
        for L in 256 4096; do
            out=$("$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" bench scan --layer "$layer" --length "$L" \
                --channels 8 --repeat 1 --set parallel.layout=$layout)
            b=$(field scan_bytes_sent "$out")
            [ -n "$b" ] && [ -n "$(field read_floor_s "$out")" ] && [ -n "$(field scan_kernel_forward_s "$out")" ] ||
                fail "bench scan $layer: fields missing in $out"
            bytes+=("$b")
        done
        if [ "${bytes[0]}" = "${bytes[1]}" ] && [ "${bytes[0]}" != "0" ]; then
            ok "$layer $layout: ${bytes[0]} bytes sent per rank at L = 256 and 4096"
        else
            fail "$layer $layout: bytes sent ${bytes[*]} (must be equal and non-zero)"
        fi
    done
done
out=$("$STRAND" bench scan --layer mamba --length 256 --channels 8 --state 4 --repeat 1)
[ "$(field scan_bytes_sent "$out")" = "0" ] || fail "one rank sent $(field scan_bytes_sent "$out") bytes"
[ "$(field state_width "$out")" = "64" ] || fail "mamba --state 4 at C = 8: width $(field state_width "$out"), not 2*8*4"

for bad in "--layer lstm --length 64 --channels 8" "--layer mingru --length 64 --channels 8 --state 4" \
    "--layer mamba --length 64 --channels 8 --state 0" "--layer mamba --length 64"; do
    rc=0
    # shellcheck disable=SC2086
    "$STRAND" bench scan $bad >/dev/null 2>err.txt || rc=$?
    if [ "$rc" -ne 0 ] && [ "$(grep -c "strand bench scan: error:" err.txt)" -eq 1 ]; then
        ok "refused: $bad (exit $rc)"
    else
        fail "bench scan $bad: exit $rc, $(cat err.txt)"
    fi
done
cli_end "bench scan ok"
