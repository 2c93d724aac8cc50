#!/usr/bin/env bash
# `make flash`: program the ZCU102 PL over JTAG through hw_server (Vivado Lab/Vivado on PATH).
#   bash bitstreams/flash.sh [BIT]      (default build/bitstream/trilevel.bit)
# Environment: TRILEVEL_HW_SERVER (default localhost:3121). On a board running PYNQ, load the
# overlay instead (docs/hardware.md): the PYNQ Overlay also programs the PL and reads the .hwh.
set -euo pipefail
cd "$(dirname "$0")/.."

bit=${1:-build/bitstream/trilevel.bit}
server=${TRILEVEL_HW_SERVER:-localhost:3121}

if ! command -v vivado >/dev/null 2>&1; then
    echo "flash.sh: vivado not found on PATH (install Vivado or Vivado Lab and source its settings64.sh)" >&2
    exit 1
fi
if [ ! -f "$bit" ]; then
    echo "flash.sh: bitstream $bit not found (run: make bitstream)" >&2
    exit 1
fi
manifest="$(dirname "$bit")/manifest.json"
if [ -f "$manifest" ]; then
    python3 bitstreams/manifest.py --verify "$manifest" || exit 1
fi
if [[ "$server" != localhost:* && "$server" != 127.0.0.1:* ]] || pgrep -x hw_server >/dev/null 2>&1; then
    :
elif command -v hw_server >/dev/null 2>&1; then
    hw_server -d >/dev/null   # background daemon for the local JTAG cable
else
    echo "flash.sh: hw_server not found on PATH and none running (it ships with Vivado / Vivado Lab)" >&2
    exit 1
fi

tcl=$(mktemp --suffix=.tcl)
trap 'rm -f "$tcl"' EXIT
cat >"$tcl" <<TCL
open_hw_manager
connect_hw_server -url $server
open_hw_target
set dev [lindex [get_hw_devices xczu9*] 0]
if {\$dev eq ""} { error "flash.sh: no xczu9eg on the JTAG chain (is the ZCU102 on and in JTAG boot mode?)" }
current_hw_device \$dev
set_property PROGRAM.FILE {$PWD/$bit} \$dev
program_hw_devices \$dev
puts "flash.sh: programmed \$dev with $bit"
TCL
vivado -mode batch -nojournal -nolog -source "$tcl"
