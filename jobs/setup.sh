#!/usr/bin/env bash
# Check (and, as root, install) the Debian 12 packages strand needs.
#
#   jobs/setup.sh            build and run dependencies
#   jobs/setup.sh --slurm    also a single-node SLURM (slurmctld slurmd slurm-client munge)
#   jobs/setup.sh --python   also the optional Python reference tools (torch, h5py, numpy)
#   jobs/setup.sh --check    only report what is missing (exit 1 if anything is)
#
# Idempotent: when everything is installed it prints one line and exits 0 in well under a second.
set -euo pipefail

base_pkgs=(openmpi-bin libopenmpi-dev libfftw3-dev libfftw3-mpi-dev libscalapack-openmpi-dev
  libhdf5-openmpi-dev hdf5-tools libopenblas-dev pkg-config cmake make gcc zlib1g-dev libinih-dev
  libcjson-dev gnuplot-nox jq)
slurm_pkgs=(slurmctld slurmd slurm-client munge)
python_pkgs=(python3-torch python3-h5py python3-numpy)

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

want_slurm=0 want_python=0 check_only=0 quiet=0
for arg in "$@"; do
  case "$arg" in
    --slurm) want_slurm=1 ;;
    --python) want_python=1 ;;
    --check) check_only=1 ;;
    -q | --quiet) quiet=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg'" >&2; usage >&2; exit 2 ;;
  esac
done

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "setup.sh: dpkg-query not found: this script supports Debian 12 (and derivatives) only." >&2
  echo "setup.sh: install the equivalents of: ${base_pkgs[*]}" >&2
  exit 1
fi

# Extras are installed without recommends (SLURM and torch pull in a lot otherwise).
extra_pkgs=()
((want_slurm)) && extra_pkgs+=("${slurm_pkgs[@]}")
((want_python)) && extra_pkgs+=("${python_pkgs[@]}")

# One dpkg-query call for all packages keeps the no-op path fast. Unknown names print nothing
# (and make dpkg-query exit 1), so anything not reported as "ii" (installed, ok) counts as missing.
declare -A installed=()
while read -r name status; do
  [[ "$status" == ii* ]] && installed["${name%%:*}"]=1
done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${base_pkgs[@]}" "${extra_pkgs[@]}" 2>/dev/null || true)

missing_base=() missing_extra=()
for p in "${base_pkgs[@]}"; do [[ -n "${installed[$p]:-}" ]] || missing_base+=("$p"); done
for p in "${extra_pkgs[@]}"; do [[ -n "${installed[$p]:-}" ]] || missing_extra+=("$p"); done

if ((${#missing_base[@]} == 0 && ${#missing_extra[@]} == 0)); then
  ((quiet)) || echo "setup.sh: all required packages are installed."
  exit 0
fi

cmds=()
((${#missing_base[@]})) && cmds+=("DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing_base[*]}")
((${#missing_extra[@]})) && cmds+=("DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing_extra[*]}")

all_missing=("${missing_base[@]}" "${missing_extra[@]}")
echo "setup.sh: missing packages: ${all_missing[*]}"
if ((check_only)) || [[ $(id -u) -ne 0 ]]; then
  ((check_only)) || echo "setup.sh: not running as root, so not installing anything." >&2
  echo "setup.sh: install them with:" >&2
  echo "  sudo apt-get update" >&2
  for c in "${cmds[@]}"; do echo "  sudo $c" >&2; done
  exit 1
fi

# apt-get update only when needed: no package index at all, or a missing package that the
# current index does not know (a stale or empty index).
need_update=0
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
  need_update=1
else
  for p in "${all_missing[@]}"; do
    cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [[ -z "$cand" || "$cand" == "(none)" ]]; then need_update=1; break; fi
  done
fi

export DEBIAN_FRONTEND=noninteractive
install_all() {
  if ((${#missing_base[@]})); then apt-get install -y "${missing_base[@]}" || return 1; fi
  if ((${#missing_extra[@]})); then apt-get install -y --no-install-recommends "${missing_extra[@]}" || return 1; fi
}

if ((need_update)); then
  echo "setup.sh: apt-get update"
  apt-get update
fi
echo "setup.sh: installing: ${all_missing[*]}"
if ! install_all; then
  if ((need_update)); then
    echo "setup.sh: apt-get install failed." >&2
    exit 1
  fi
  # A stale index makes downloads 404: refresh it once and retry.
  echo "setup.sh: install failed; refreshing the package index and retrying."
  apt-get update
  install_all || { echo "setup.sh: apt-get install failed." >&2; exit 1; }
fi
echo "setup.sh: done."
