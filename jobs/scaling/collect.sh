#!/usr/bin/env bash
# The scaling sweeps' runs.jsonl files (jobs/scaling/sweep.sh) as one CSV: one row per run,
# sorted by series then ranks, with the parallel efficiency against the run of the same series
# on the fewest ranks (strong: t1 r1 / (t r); weak: t1 / t; empty when a time is missing).
#
#   jobs/scaling/collect.sh scaling-strong/runs.jsonl > scaling.csv
#   jobs/scaling/collect.sh -o all.csv scaling-strong/runs.jsonl scaling-weak/runs.jsonl
#
# Empty fields are unknowns (null in the JSON); commas inside text fields become ';'.
set -euo pipefail

die() { echo "collect: error: $*" >&2; exit 2; }
out=""
files=()
while (($#)); do
  case $1 in
    -o) [[ $# -ge 2 ]] || die "-o needs a file"; out=$2; shift 2 ;;
    -h | --help) sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) die "unknown option '$1' (usage: collect.sh [-o OUT.csv] RUNS.jsonl ...)" ;;
    *) [[ -r $1 ]] || die "$1: no such file"; files+=("$1"); shift ;;
  esac
done
((${#files[@]})) || die "no runs.jsonl given (usage: collect.sh [-o OUT.csv] RUNS.jsonl ...)"
command -v jq >/dev/null || die "jq is missing (Debian: apt-get install jq)"

columns=(series kind what length tokens_per_rank channels strategy layout ranks nodes ranks_per_node sp dp
  oversubscribed time_s compute_s comm_s io_s bytes_sent peak_rss_bytes efficiency predicted_s
  predicted_compute_s predicted_comm_s predicted_io_s predicted_memory_bytes)
# Write to a temporary file first so that a failure leaves no half CSV behind.
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
  (IFS=,; echo "${columns[*]}")
  cat "${files[@]}" | jq -sr --arg cols "${columns[*]}" '
    ($cols | split(" ")) as $c |
    map(select(type == "object" and .series != null)) | group_by(.series) | map(
      sort_by(.ranks) | .[0] as $b | map(. + {efficiency:
        (if .time_s == null or $b.time_s == null or .time_s <= 0 then null
         elif .kind == "weak" then $b.time_s / .time_s
         else ($b.time_s * $b.ranks) / (.time_s * .ranks) end)})) | add // [] | .[] |
    [.[$c[]]] | map(if . == null then "" elif type == "string" then gsub(","; ";") else tostring end) | join(",")'
} >"$tmp"
if [[ -n $out ]]; then cat "$tmp" >"$out"; else cat "$tmp"; fi
