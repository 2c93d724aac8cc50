"""Write the Vitis HLS RTL-blackbox descriptions hls/rtl/{topk_unit,gemm_tile,softmax_unit}.json (UG1399).

    python hls/rtl/gen_blackbox_json.py [--synth build/synth/report.json]

Port bindings follow hls/include/trilevel_units.h (checked by sim/test_blackbox_json.py); latency / II
come from trilevel.rtl_cycles at the header's static maxima; resource usage from a synth_report.py
JSON when given (gemm_tile at 32 x 32 is too large for Yosys here: its DSP / BRAM counts are by
construction: one DSP48E2 per PE plus the requantizer lanes, one RAMB36 per operand bank).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trilevel import rtl_cycles

RTL_DIR = Path(__file__).resolve().parent
ROW_MAX, TILE_M, TILE_N, K_MAX = 256, 32, 32, 1536  # TL_ROW_MAX, TL_TILE_M/N, TL_K_MAX
REQUANT_DSP = 9  # Yosys maps one trilevel_requant lane (two 32x32 hash multiplies) to 9 DSP48E2
COMMON = {"module_clock": "clk", "module_reset": "rst", "module_clock_enable": "",
          "ap_ctrl_chain_protocol_idle": "", "ap_ctrl_chain_protocol_start": "",
          "ap_ctrl_chain_protocol_ready": "", "ap_ctrl_chain_protocol_done": "",
          "ap_ctrl_chain_protocol_continue": ""}


def fifo_in(name: str, prefix: str) -> dict:
    """hls::stream read by the unit: ap_fifo empty_n = tvalid, read = tready."""
    return {"c_name": name, "c_port_direction": "in", "rtl_ports": {
        "FIFO_empty_flag": f"{prefix}_tvalid", "FIFO_data_read_in": f"{prefix}_tdata",
        "FIFO_read_enable": f"{prefix}_tready"}}


def fifo_out(name: str, prefix: str) -> dict:
    """hls::stream written by the unit: ap_fifo full_n = tready, write = tvalid."""
    return {"c_name": name, "c_port_direction": "out", "rtl_ports": {
        "FIFO_full_flag": f"{prefix}_tready", "FIFO_data_write_out": f"{prefix}_tdata",
        "FIFO_write_enable": f"{prefix}_tvalid"}}


def wire(name: str, port: str) -> dict:
    return {"c_name": name, "c_port_direction": "in", "rtl_ports": {"data_read_in": port}}


def usage(report: dict, unit: str) -> dict[str, str]:
    r = report.get(unit, {}).get("resources")
    if not r:
        return {"FF": "0", "LUT": "0", "DSP": "0", "BRAM": "0", "URAM": "0"}
    return {"FF": str(r["FF"]), "LUT": str(r["LUT"] + r["LUTRAM"] + r["SRL"]), "DSP": str(r["DSP48E2"]),
            "BRAM": str(2 * r["RAMB36"] + r["RAMB18"]), "URAM": "0"}  # BRAM in 18K units


def unit(name: str, modules: list[str], params: list[dict], latency: int, ii: int, res: dict) -> dict:
    return {"c_function_name": name, "rtl_top_module_name": name,
            "c_files": [{"c_file": "hls/src/trilevel_units.cpp", "cflag": "-Ihls/include"}],
            "rtl_files": [f"hls/rtl/{m}.sv" for m in modules], "c_parameters": params,
            "rtl_common_signal": COMMON, "rtl_performance": {"latency": str(latency), "II": str(ii)},
            "rtl_resource_usage": res}


def build(report: dict) -> dict[str, dict]:
    gemm_latency = rtl_cycles.gemm_tile_cycles(TILE_M, TILE_N, K_MAX, TILE_M, TILE_N)
    gemm_res = {"FF": "0", "LUT": "0", "DSP": str(TILE_M * TILE_N + TILE_N * REQUANT_DSP + 2),
                "BRAM": str(2 * (TILE_M + TILE_N)), "URAM": "0"}
    return {
        "topk_unit": unit("topk_unit", ["topk_unit"], [
            fifo_in("scores_in", "s_axis"), fifo_out("idx_out", "m_axis"), wire("n", "cfg_n"),
            wire("k", "cfg_k")],
            rtl_cycles.topk_cycles(ROW_MAX, ROW_MAX), rtl_cycles.topk_interval(ROW_MAX),
            usage(report, "topk_unit")),
        "gemm_tile": unit("gemm_tile", ["gemm_tile", "mac_array", "mac_pe", "trilevel_requant"], [
            fifo_in("a_in", "s_axis_a"), fifo_in("b_in", "s_axis_b"), fifo_in("addend_in", "s_axis_e"),
            fifo_out("c_out", "m_axis_c"), fifo_out("peak_out", "m_axis_peak"), wire("m", "cfg_m"),
            wire("n", "cfg_n"), wire("kd", "cfg_kd"), wire("shift", "cfg_shift"), wire("mode", "cfg_mode"),
            wire("seed", "cfg_seed"), wire("index_base", "cfg_index_base"),
            wire("index_stride", "cfg_index_stride")],
            gemm_latency, gemm_latency, gemm_res),
        "softmax_unit": unit("softmax_unit", ["softmax_unit", "trilevel_requant"], [
            fifo_in("a_in", "s_axis_a"), fifo_in("b_in", "s_axis_b"), fifo_in("key_in", "s_axis_key"),
            fifo_out("out", "m_axis"), fifo_out("peak_out", "m_axis_peak"), wire("n", "cfg_n"),
            wire("backward", "cfg_backward"), wire("frac_in", "cfg_frac_in"),
            wire("frac_out", "cfg_frac_out"), wire("seed", "cfg_seed"), wire("index_base", "cfg_index_base")],
            rtl_cycles.softmax_cycles(ROW_MAX), rtl_cycles.softmax_interval(ROW_MAX),
            usage(report, "softmax_unit")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synth", type=Path, help="build/synth/report.json from synth_report.py")
    args = parser.parse_args(argv)
    report = json.loads(args.synth.read_text())["units"] if args.synth else {}
    for name, spec in build(report).items():
        path = RTL_DIR / f"{name}.json"
        path.write_text(json.dumps(spec, indent=2) + "\n")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
