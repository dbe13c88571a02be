#!/usr/bin/env bash
# strand bench train: on 2 ranks, one JSON line with the fields its help promises (checked with jq),
# the same per-step losses as on 1 rank (the windows and the start do not depend on the grid),
# --dump's files with the sizes the manifest gives, and with STRAND_TEST_TORCH=1 (and Debian's
# python3-torch) tests/bench/torch_model.py's losses on the dump within 1e-4 of strand's. A missing
# --config file and a missing --config exit non-zero with one error line.
set -euo pipefail
: "${STRAND:?}" "${STRAND_SOURCE_DIR:?}" "${STRAND_MPIEXEC:?}"
source "$STRAND_SOURCE_DIR/tests/cli/cli_common.sh"
cli_begin bench_train
cd "$work"
ini="$STRAND_SOURCE_DIR/tests/bench/models/tiny.ini"

out=$("$STRAND_MPIEXEC" --oversubscribe -n 2 "$STRAND" bench train --config "$ini" --steps 3 --dump dump)
[ "$(wc -l <<<"$out")" -eq 1 ] || fail "expected one line on stdout, got: $out"
if jq -e '.bench == "train" and .ranks == 2 and .sp == 2 and .dp == 1 and .steps == 3 and .warmup == 2
    and .seq_len == 64 and .d_model == 16 and .layers == "conv,hyena,attn" and .parameters > 0
    and .tokens_per_step == 64 and .step_s > 0 and .step_min_s <= .step_s and .step_s <= .step_max_s
    and .step_spread >= 0 and .tokens_per_s > 0 and .comm_s >= 0 and .peak_rss_bytes > 0
    and (.losses | length) == 5 and (.grad_norms | length) == 5
    and all(.losses[]; . > 0 and . < 10) and .final_loss == .losses[-1]' <<<"$out" >/dev/null; then
    ok "2 ranks: $(jq -c '{step_s, tokens_per_s, final_loss}' <<<"$out")"
else
    fail "bench train fields: $out"
fi

one=$("$STRAND" bench train --config "$ini" --steps 3)
if jq -e -n --argjson a "$out" --argjson b "$one" \
    '[range(5) | ($a.losses[.] - $b.losses[.]) / $b.losses[.] | fabs] | max < 1e-4' >/dev/null; then
    ok "1 and 2 ranks: the same losses"
else
    fail "losses differ: $(jq -c .losses <<<"$out") vs $(jq -c .losses <<<"$one")"
fi

size() { stat -c %s "$1"; }
real_bytes=$([ "$(jq -r .dtype dump/manifest.json)" = float64 ] && echo 8 || echo 4)
if [ "$(size dump/params.bin)" -eq $(($(jq .total dump/manifest.json) * real_bytes)) ] &&
    [ "$(size dump/tokens.bin)" -eq $((5 * 1 * 65 * 4)) ] && [ -s dump/config.ini ] &&
    jq -e '.losses | length == 5' dump/strand.json >/dev/null &&
    jq -e '[.params[] | .offset + .size] | max <= input.total' dump/manifest.json dump/manifest.json >/dev/null; then
    ok "--dump: params.bin, tokens.bin, config.ini, manifest.json, strand.json"
else
    fail "--dump files: $(ls -l dump)"
fi

# Opt-in (importing torch takes 2-4 s of this test's 5): STRAND_TEST_TORCH=1.
if [ "${STRAND_TEST_TORCH:-0}" = 1 ] && /usr/bin/python3 -c 'import torch, numpy' 2>/dev/null; then
    ref=$(OMP_NUM_THREADS=1 /usr/bin/python3 "$STRAND_SOURCE_DIR/tests/bench/torch_model.py" --dump dump)
    if jq -e '.max_loss_rel_diff < 1e-4' <<<"$ref" >/dev/null; then
        ok "torch_model.py: losses within $(jq .max_loss_rel_diff <<<"$ref") of strand's"
    else
        fail "torch_model.py: $ref"
    fi
else
    echo "note: torch_model.py not checked (STRAND_TEST_TORCH=1 and python3-torch check it)"
fi

for args in "--config $work/missing.ini --steps 3" "--steps 3"; do
    rc=0
    # 2 ranks for the file (agreed over the ranks), none for the usage error (the same on every
    # rank; an aborted mpirun takes a second or two)
    launch=("$STRAND_MPIEXEC" --oversubscribe -n 2)
    [ "$args" = "--steps 3" ] && launch=()
    # shellcheck disable=SC2086
    "${launch[@]}" "$STRAND" bench train $args >stdout.txt 2>err.txt || rc=$?
    # mpirun adds its own lines about the exit status: strand's are the ones naming it
    if [ "$rc" -ne 0 ] && [ "$(grep -c "strand" err.txt)" -eq 1 ] &&
        [ "$(grep -c "^strand bench train: error: " err.txt)" -eq 1 ] && [ ! -s stdout.txt ]; then
        ok "refused ($args): exit $rc, $(grep "^strand" err.txt)"
    else
        fail "bench train $args: exit $rc, stderr: $(cat err.txt)"
    fi
done
# A wrong flag is named as unknown, not taken for an option short of its value.
rc=0
"$STRAND" bench train --config "$ini" --verbose >stdout.txt 2>err.txt || rc=$?
if [ "$rc" -eq 2 ] && grep -qx "strand bench train: error: unknown option '--verbose' (see --help)" err.txt; then
    ok "unknown flag: exit 2, $(cat err.txt)"
else
    fail "unknown flag: exit $rc, $(cat err.txt)"
fi
rc=0
"$STRAND" bench train --config "$work/missing.ini" >stdout.txt 2>err.txt || rc=$?
if [ "$rc" -eq 1 ] && [ "$(wc -l <err.txt)" -eq 1 ] && grep -q "^strand bench train: error: .*missing.ini" err.txt; then
    ok "1 rank: exit 1, one line naming the file"
else
    fail "1 rank, missing config: exit $rc, $(cat err.txt)"
fi
cli_end "bench train ok"
