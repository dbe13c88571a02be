#!/usr/bin/env bash
# Plots of a scaling CSV (jobs/scaling/collect.sh) with gnuplot, into OUTDIR (default: the CSV's
# directory). One colour per series: measured points, the prediction (predicted_s) a line of the
# same colour; oversubscribed points (more ranks on a node than cores) as open symbols, with
# "(oversubscribed)" in the key.
#   strong_time.png        time per step (or per forward + backward) against ranks, log-log
#   strong_efficiency.png  parallel efficiency t1 r1 / (t r) against ranks, measured and predicted
#   weak_time.png          time against ranks at fixed tokens per rank
#   split.png              measured compute / communication / I/O seconds of every run, stacked
# A plot is made only when the CSV has rows of its kind; plot/ keeps the data and .gp files.
#
#   jobs/scaling/plot.sh scaling-strong/scaling.csv [OUTDIR]
set -euo pipefail

die() { echo "plot: error: $*" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || die "usage: plot.sh SCALING.csv [OUTDIR]"
csv=$1
out=${2:-$(dirname "$csv")}
[[ -r $csv ]] || die "$csv: no such file"
head -n 1 "$csv" | grep -q '^series,kind,' || die "$csv: not a scaling CSV (collect.sh writes one)"
command -v gnuplot >/dev/null || die "gnuplot is missing (Debian: apt-get install gnuplot-nox; jobs/setup.sh)"
mkdir -p "$out/plot"
rm -f "$out/plot"/series-*.dat "$out/plot/index.tsv" "$out/plot/split.dat" "$out/plot/any_oversubscribed"
# pngcairo where gnuplot has it, else the plain png terminal.
term="pngcairo size 960,600 font ',10'"
gnuplot -e "set terminal pngcairo" 2>/dev/null || term="png size 960,600"

# Per series: a data file (ranks time predicted efficiency predicted-efficiency oversubscribed,
# '?' where unknown) and a line "kind<TAB>file<TAB>series<TAB>any oversubscribed" in the index.
awk -F, -v dir="$out/plot" '
  NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
  function v(name) { return $c[name] == "" ? "?" : $c[name] }
  {
    s = $c["series"]
    if (!(s in file)) {
      n++; file[s] = dir "/series-" n ".dat"; kind[s] = $c["kind"]; order[n] = s
      t1[s] = $c["time_s"]; p1[s] = $c["predicted_s"]; r1[s] = $c["ranks"]
    }
    p = $c["predicted_s"]; r = $c["ranks"]
    pe = "?"
    if (p != "" && p1[s] != "" && p > 0) pe = kind[s] == "weak" ? p1[s] / p : p1[s] * r1[s] / (p * r)
    o = $c["oversubscribed"] == "true"
    if (o) over[s] = 1
    print r, v("time_s"), v("predicted_s"), v("efficiency"), pe, o > file[s]
    label = s " r=" r (o ? " *" : "")
    # unsplit: the time of a run whose split was not measured
    split_line = sprintf("%s\t%s\t%s\t%s\t%s", label, v("compute_s"), v("comm_s"), v("io_s"),
      $c["compute_s"] == "" && $c["comm_s"] == "" && $c["io_s"] == "" ? v("time_s") : "?")
    print split_line > (dir "/split.dat")
    any_over = any_over || o
  }
  END {
    for (i = 1; i <= n; i++) { s = order[i]; printf "%s\t%s\t%s\t%d\n", kind[s], file[s], s, over[s] + 0 > (dir "/index.tsv") }
    if (any_over) print "1" > (dir "/any_oversubscribed")
  }' "$csv"
[[ -s $out/plot/index.tsv ]] || { echo "plot: $csv has no rows: nothing to plot"; exit 0; }

colors=(1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf 000000 aa5500)
# The y label: what was timed (a mixer's forward + backward, or a training step).
ylabel() {
  local what
  what=$(awk -F, -v k="$1" 'NR > 1 && $2 == k { split($3, w, ":"); print w[1] }' "$csv" | sort -u | tr '\n' ' ')
  case $what in
    "mixer ") echo "seconds per forward + backward (median)" ;;
    "train ") echo "seconds per training step (median after the first)" ;;
    *) echo "seconds per step or per forward + backward" ;;
  esac
}
# plot_kind KIND PNG COLUMN PREDICTED_COLUMN TITLE SETTINGS: points of COLUMN, line of PREDICTED.
plot_kind() {
  local kind=$1 png=$2 col=$3 pcol=$4 title=$5 settings=$6 plot="plot " i=0 file series over
  grep -q "^$kind	" "$out/plot/index.tsv" || return 0
  while IFS=$'\t' read -r k file series over; do
    [[ $k == "$kind" ]] || continue
    local rgb="#${colors[$((i % ${#colors[@]}))]}"
    plot+="'$file' using 1:(\$6 == 0 ? \$$col : 1/0) with points pt 7 ps 1.4 lc rgb '$rgb' title '$series', "
    ((over)) && plot+="'$file' using 1:(\$6 == 1 ? \$$col : 1/0) with points pt 6 ps 1.4 lc rgb '$rgb' title '$series (oversubscribed)', "
    plot+="'$file' using 1:$pcol with lines lw 2 lc rgb '$rgb' title 'predicted', "
    i=$((i + 1))
  done <"$out/plot/index.tsv"
  {
    echo "set terminal $term"
    echo "set output '$out/$png'"
    echo "set termoption noenhanced"
    echo "set datafile missing '?'"
    echo "set title '$title'"
    echo "set xlabel 'MPI ranks'; set key outside right font ',8'; set grid; set offsets graph 0.05, graph 0.05, 0, 0"
    echo "$settings"
    echo "${plot%, }"
  } >"$out/plot/${png%.png}.gp"
  gnuplot "$out/plot/${png%.png}.gp" || die "gnuplot failed on $out/plot/${png%.png}.gp"
  echo "plot: $out/$png"
}
plot_kind strong strong_time.png 2 3 "strong scaling: fixed window, points measured, lines predicted" \
  "set logscale x 2; set logscale y 10; set ylabel '$(ylabel strong) (s)'; set format y '%.1e'"
plot_kind strong strong_efficiency.png 4 5 "strong scaling: parallel efficiency t1 r1 / (t r) against the fewest ranks" \
  "set logscale x 2; set ylabel 'parallel efficiency (1 = ideal)'; set yrange [0:1.1]"
plot_kind weak weak_time.png 2 3 "weak scaling: fixed tokens per rank, points measured, lines predicted" \
  "set logscale x 2; set ylabel '$(ylabel weak) (s)'; set yrange [0:*]"

# Stacked bars of the measured split, one per run ("unsplit": only the total was measured).
{
  echo "set terminal ${term/960,600/$((640 + 40 * $(wc -l <"$out/plot/split.dat"))),640}"
  echo "set output '$out/split.png'"
  echo "set termoption noenhanced"
  echo "set datafile separator tab; set datafile missing '?'"
  echo "set title 'measured time per run: compute, communication, I/O (median per step)$([[ -e $out/plot/any_oversubscribed ]] && echo '; * oversubscribed')'"
  echo "set style data histograms; set style histogram rowstacked; set style fill solid 0.8 border -1; set boxwidth 0.7"
  echo "set ylabel 'seconds'; set yrange [0:*]; set xtics rotate by -35 font ',8' nomirror; set key outside right; set grid y"
  echo "set bmargin 12"
  f=$out/plot/split.dat
  # only the parts some run measured (gnuplot warns about an all-missing column)
  plot="plot " first=":xtic(1)" col=2
  for part in "1f77b4 compute" "ff7f0e communication" "2ca02c I/O" "7f7f7f unsplit (total only)"; do
    if awk -F'\t' -v k=$col '$k != "?" { found = 1 } END { exit !found }' "$f"; then
      plot+="'$f' using (\$$col == \$$col ? \$$col : 0)$first lc rgb '#${part%% *}' title '${part#* }', "
      first=""
    fi
    col=$((col + 1))
  done
  echo "${plot%, }"
} >"$out/plot/split.gp"
gnuplot "$out/plot/split.gp" || die "gnuplot failed on $out/plot/split.gp"
echo "plot: $out/split.png"
