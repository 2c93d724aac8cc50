#!/usr/bin/env bash
# `make bitstream`: the ZCU102 bitstream + hardware handoff for PYNQ from the HLS kernel IPs.
#   bash bitstreams/build.sh            (needs vivado on PATH and the IPs of `make hls`)
# Environment: TRILEVEL_HLS_CLOCK_MHZ (default 150; must match the `make hls` run), JOBS (default nproc),
# TRILEVEL_BITSTREAM_OUT (default build/bitstream). Output: trilevel.bit, trilevel.hwh, manifest.json.
set -euo pipefail
cd "$(dirname "$0")/.."

clock=${TRILEVEL_HLS_CLOCK_MHZ:-150}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
out=${TRILEVEL_BITSTREAM_OUT:-build/bitstream}
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

if ! command -v vivado >/dev/null 2>&1; then
    echo "build.sh: vivado not found on PATH (install Vivado 2023.2 with ZCU102 board files and source its settings64.sh)" >&2
    exit 1
fi

# The kernel list is the block design's (bitstreams/zcu102_bd.tcl, variable kernels).
kernels=$(sed -n 's/^ *variable kernels {\(.*\)}.*/\1/p' bitstreams/zcu102_bd.tcl)
ip_dirs=()
missing=()
for k in $kernels; do
    dir="build/hls/$k/solution_${clock}mhz/impl/ip"
    if [ -f "$dir/component.xml" ]; then ip_dirs+=("$PWD/$dir"); else missing+=("$k"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "build.sh: HLS IP missing for ${missing[*]} at ${clock} MHz (run: make hls, with the same TRILEVEL_HLS_CLOCK_MHZ)" >&2
    exit 1
fi

mkdir -p "$out"
echo "build.sh: Vivado implementation at ${clock} MHz with $jobs jobs -> $out (about an hour)"
vivado -mode batch -nojournal -log "$out/vivado.log" -source bitstreams/build.tcl \
    -tclargs "${ip_dirs[*]}" "$out" "$clock" "$jobs"
python3 bitstreams/manifest.py --clock-mhz "$clock" "$out" "${ip_dirs[@]/%//component.xml}"
