#!/usr/bin/env bash
# Vitis HLS flow for the trilevel kernels (`make hls`): csim_design, csynth_design and an IP-catalog
# export per top function, into build/hls/<top>/. Needs vitis_hls on PATH (Vitis 2022.2 or newer).
#   bash hls/run_hls.sh [--clock MHZ] [TOP ...]      (default: every hls/tcl/<top>.tcl, 150 MHz)
# Environment: TRILEVEL_HLS_CLOCK_MHZ, TRILEVEL_HLS_PART, TRILEVEL_HLS_STEPS, TRILEVEL_HLS_RTL_UNITS
# (see hls/tcl/common.tcl).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v vitis_hls >/dev/null 2>&1; then
    echo "run_hls: vitis_hls not found on PATH (install Vitis HLS and source its settings64.sh); C-sim runs without it: make csim" >&2
    exit 1
fi

tops=()
while [ $# -gt 0 ]; do
    case "$1" in
        --clock) export TRILEVEL_HLS_CLOCK_MHZ="$2"; shift 2 ;;
        --clock=*) export TRILEVEL_HLS_CLOCK_MHZ="${1#--clock=}"; shift ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) tops+=("$1"); shift ;;
    esac
done
if [ ${#tops[@]} -eq 0 ]; then
    for f in hls/tcl/*.tcl; do
        name=$(basename "$f" .tcl)
        [ "$name" = common ] || tops+=("$name")
    done
fi

PY=${PYTHON:-.venv/bin/python}
# LUT header and the C-sim test vectors, both from the integer reference.
"$PY" -m trilevel.intref.luts --header build/hls/include/trilevel_luts.h >/dev/null
"$PY" hls/gen_vectors.py --out build/hls/vectors "${tops[@]}"

for top in "${tops[@]}"; do
    [ -f "hls/tcl/$top.tcl" ] || { echo "run_hls: no hls/tcl/$top.tcl" >&2; exit 1; }
    echo "run_hls: $top at ${TRILEVEL_HLS_CLOCK_MHZ:-150} MHz -> build/hls/$top"
    vitis_hls -f "hls/tcl/$top.tcl" -l "build/hls/$top.log"
done
