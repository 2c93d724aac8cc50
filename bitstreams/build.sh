#!/usr/bin/env bash
# `make bitstream`: the ZCU102 bitstream + hardware handoff for PYNQ around the one trilevel engine.
#   bash bitstreams/build.sh            (needs vivado on PATH)
# Environment:
#   TRILEVEL_ENGINE        rtl (default: the SystemVerilog engine, packaged here) | hls (the IP of `make hls`)
#   TRILEVEL_HLS_CLOCK_MHZ PL clock, default 150 (for hls: must match the `make hls` run)
#   JOBS                   Vivado jobs, default nproc
#   TRILEVEL_BITSTREAM_OUT default build/bitstream. Output: trilevel.bit, trilevel.hwh, manifest.json.
set -euo pipefail
cd "$(dirname "$0")/.."

engine=${TRILEVEL_ENGINE:-rtl}
clock=${TRILEVEL_HLS_CLOCK_MHZ:-150}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
out=${TRILEVEL_BITSTREAM_OUT:-build/bitstream}
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

case "$engine" in
    rtl|hls) ;;
    *) echo "build.sh: TRILEVEL_ENGINE must be rtl or hls, got '$engine'" >&2; exit 2 ;;
esac
if ! command -v vivado >/dev/null 2>&1; then
    echo "build.sh: vivado not found on PATH (install Vivado 2023.2 with ZCU102 board files and source its settings64.sh)" >&2
    exit 1
fi

if [ "$engine" = rtl ]; then
    if [ ! -f hls/rtl/engine/files.f ]; then
        echo "build.sh: hls/rtl/engine/files.f not found (the RTL engine's source list)" >&2
        exit 1
    fi
    ip_dir="$PWD/build/ip/trilevel_engine_rtl"
    mkdir -p "$ip_dir"
    echo "build.sh: packaging the RTL engine -> $ip_dir"
    vivado -mode batch -nojournal -log "$ip_dir/package.log" -source bitstreams/package_engine.tcl \
        -tclargs "$PWD" "$ip_dir"
else
    ip_dir="$PWD/build/hls/trilevel_engine/solution_${clock}mhz/impl/ip"
    if [ ! -f "$ip_dir/component.xml" ]; then
        echo "build.sh: HLS engine IP missing at ${clock} MHz (run: make hls, with the same TRILEVEL_HLS_CLOCK_MHZ)" >&2
        exit 1
    fi
fi

mkdir -p "$out"
echo "build.sh: Vivado implementation of the $engine engine at ${clock} MHz with $jobs jobs -> $out (about an hour)"
vivado -mode batch -nojournal -log "$out/vivado.log" -source bitstreams/build.tcl \
    -tclargs "$ip_dir" "$out" "$clock" "$jobs" "$engine"
python3 bitstreams/manifest.py --clock-mhz "$clock" --engine "$engine" "$out" "$ip_dir/component.xml"
