#!/usr/bin/env bash
# Debian packages the checks need: Yosys (synthesis report) and Icarus (optional simulator).
set -euo pipefail
missing=()
command -v yosys >/dev/null || missing+=(yosys)
command -v iverilog >/dev/null || missing+=(iverilog)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]} with apt-get"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "note: ${missing[*]} not installed (needs root + apt-get); synth-report / Icarus runs will be unavailable" >&2
fi
