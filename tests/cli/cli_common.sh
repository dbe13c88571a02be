# Set-up shared by the CLI tests (sourced after `set -euo pipefail`):
#   cli_tiny_ini ...  a small model configuration (below)
#   cli_begin TAG     a fresh $work directory (removed on exit, after cli_cleanup if the test
#                     defines it), the failure count and fail/ok
#   cli_prep OUT      the bundled lambda phage genome prepped to OUT (5% validation)
#   cli_end LABEL     exit 1 with the count when anything failed, else say LABEL passed
: "${STRAND:?}" "${STRAND_SOURCE_DIR:?}"
failures=0
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
ok() { echo "ok   $*"; }
cli_pids=() # background jobs a test started: killed on exit
cli_exit() {
    for p in "${cli_pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    if declare -F cli_cleanup >/dev/null; then cli_cleanup; fi
    rm -rf "$work"
}
cli_begin() {
    work=$(mktemp -d "/tmp/strand_$1.XXXXXX")
    trap cli_exit EXIT
}
cli_prep() {
    "$STRAND" prep --quiet --in "$STRAND_SOURCE_DIR/data/lambda_phage_NC_001416.fa.gz" --out "$1" \
        --val-fraction 0.05 >/dev/null
}
cli_end() {
    if [ "$failures" -gt 0 ]; then
        echo "$failures failure(s)"
        exit 1
    fi
    echo "$1"
}
# Tests that mount file systems: skip (ctest's code 77) unless root with mount namespaces.
cli_need_root() {
    if [ "$(id -u)" -ne 0 ] || ! unshare -m true 2>/dev/null; then
        echo "skip: needs root and unshare -m"
        exit 77
    fi
}
# cli_tiny_ini OUT DATASET < SECTIONS: the small conv model the CLI tests train on DATASET, with
# the [train] (and other) sections read from standard input.
cli_tiny_ini() {
    {
        printf '[model]\nd_model = 16\nlayers = conv,conv\nmlp_hidden = 32\n'
        cat
        printf '[data]\npath = %s\n' "$2"
    } >"$1"
}
