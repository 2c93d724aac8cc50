#!/usr/bin/env bash
# Vitis HLS flow for the engine (`make hls`): csim_design (hls/tb/tb_engine.cpp on golden vectors),
# csynth_design and an IP-catalog export of the top trilevel_engine into build/hls/trilevel_engine/.
# Needs vitis_hls on PATH (Vitis 2022.2 or newer).
#   bash hls/run_hls.sh [--clock MHZ] [--config zcu102|ci] [SCRIPT ...]   (default: every hls/tcl/<script>.tcl)
# Environment: TRILEVEL_HLS_CLOCK_MHZ, TRILEVEL_HLS_PART, TRILEVEL_HLS_STEPS (see hls/tcl/common.tcl).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v vitis_hls >/dev/null 2>&1; then
    echo "run_hls: vitis_hls not found on PATH (install Vitis HLS and source its settings64.sh); C-sim runs without it: make csim" >&2
    exit 1
fi

config=zcu102
scripts=()
while [ $# -gt 0 ]; do
    case "$1" in
        --clock) export TRILEVEL_HLS_CLOCK_MHZ="$2"; shift 2 ;;
        --clock=*) export TRILEVEL_HLS_CLOCK_MHZ="${1#--clock=}"; shift ;;
        --config) config="$2"; shift 2 ;;
        --config=*) config="${1#--config=}"; shift ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) scripts+=("$1"); shift ;;
    esac
done
if [ ${#scripts[@]} -eq 0 ]; then
    for f in hls/tcl/*.tcl; do
        name=$(basename "$f" .tcl)
        [ "$name" = common ] || scripts+=("$name")
    done
fi

PY=${PYTHON:-.venv/bin/python}
# The generated headers (LUTs and the command set at the chosen build sizes) and the csim vectors.
"$PY" -m trilevel.intref.luts --header build/hls/include/trilevel_luts.h >/dev/null
mkdir -p build/hls/include
"$PY" -m trilevel.accel.isa --header c --config "$config" > build/hls/include/tl_isa.h
"$PY" hls/gen_vectors.py --out build/hls/vectors >/dev/null

for script in "${scripts[@]}"; do
    [ -f "hls/tcl/$script.tcl" ] || { echo "run_hls: no hls/tcl/$script.tcl" >&2; exit 1; }
    echo "run_hls: $script at ${TRILEVEL_HLS_CLOCK_MHZ:-150} MHz ($config build) -> build/hls/"
    vitis_hls -f "hls/tcl/$script.tcl" -l "build/hls/$script.log"
done
