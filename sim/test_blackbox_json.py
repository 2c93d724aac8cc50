"""The Vitis RTL-blackbox JSONs (hls/rtl/<unit>.json) agree with hls/include/trilevel_units.h and the RTL.

For every unit: the JSON lists the C function's parameters in order with the right direction; streams
map to ap_fifo ports (FIFO_* keys) and scalars to wires; every named RTL port exists on the top
module with the C type's bit width (the ap_int typedefs of trilevel_types.h); the files exist; the
stated latency / II equal trilevel.rtl_cycles at the header's static maxima.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from trilevel import rtl_cycles

REPO = Path(__file__).resolve().parent.parent
HEADER = REPO / "hls" / "include" / "trilevel_units.h"
TYPES = REPO / "hls" / "include" / "trilevel_types.h"
UNITS = ("topk_unit", "gemm_tile", "softmax_unit")
UG1399_KEYS = {"c_function_name", "rtl_top_module_name", "c_files", "rtl_files", "c_parameters",
               "rtl_common_signal", "rtl_performance", "rtl_resource_usage"}
FIFO_IN = {"FIFO_empty_flag", "FIFO_data_read_in", "FIFO_read_enable"}
FIFO_OUT = {"FIFO_full_flag", "FIFO_data_write_out", "FIFO_write_enable"}


def type_widths() -> dict[str, int]:
    """Bit widths of the synthesis typedefs (the #else branch: ap_int<W> / ap_uint<W>)."""
    text = TYPES.read_text().split("#else", 1)[1]
    return {name: int(w) for w, name in re.findall(r"typedef\s+ap_u?int<(\d+)>\s+(\w+);", text)}


def prototypes() -> dict[str, list[tuple[str, str, bool]]]:
    """function -> [(c type, name, is_stream)] from the header's declarations."""
    text = re.sub(r"//[^\n]*", "", HEADER.read_text())
    out = {}
    for fn, args in re.findall(r"void\s+(\w+)\s*\(([^)]*)\)\s*;", text):
        params = []
        for arg in args.split(","):
            arg = " ".join(arg.split())
            m = re.fullmatch(r"hls::stream<(\w+)>\s*&\s*(\w+)", arg)
            if m:
                params.append((m.group(1), m.group(2), True))
            else:
                m = re.fullmatch(r"(\w+)\s+(\w+)", arg)
                assert m, f"cannot parse parameter {arg!r} of {fn}"
                params.append((m.group(1), m.group(2), False))
        out[fn] = params
    return out


def rtl_ports(path: Path, module: str) -> dict[str, tuple[str, int]]:
    """port -> (direction, width) of `module`, evaluating widths with the parameters' defaults."""
    text = re.sub(r"//[^\n]*", "", path.read_text())
    header = re.search(rf"module\s+{module}\s*(#\s*\((.*?)\))?\s*\((.*?)\);", text, re.S)
    assert header, f"module {module} not found in {path}"
    env = {}
    pattern = r"parameter\s+(?:int\s+|bit\s+)?(\w+)\s*=\s*([^,\n]+)"
    for name, value in re.findall(pattern, header.group(2) or ""):
        try:
            env[name] = eval(value.strip().rstrip(","), {}, dict(env))  # noqa: S307 - our own RTL
        except (NameError, SyntaxError):
            pass
    ports = {}
    for direction, rng, name in re.findall(
            r"(input|output)\s+logic\s+(?:signed\s+)?(\[[^\]]+\])?\s*(\w+)", header.group(3)):
        width = 1
        if rng:
            hi, lo = rng[1:-1].split(":")
            width = eval(hi, {}, env) - eval(lo, {}, env) + 1  # noqa: S307
        ports[name] = (direction, width)
    return ports


@pytest.mark.parametrize("unit", UNITS)
def test_blackbox_json_matches_header_and_rtl(unit: str) -> None:
    spec = json.loads((REPO / "hls" / "rtl" / f"{unit}.json").read_text())
    assert UG1399_KEYS <= set(spec), f"missing keys {UG1399_KEYS - set(spec)}"
    assert spec["c_function_name"] == unit
    top = spec["rtl_top_module_name"]
    for f in spec["rtl_files"]:
        assert (REPO / f).is_file(), f
    for c in spec["c_files"]:
        assert (REPO / c["c_file"]).is_file(), c
    assert spec["rtl_common_signal"]["module_clock"] == "clk"
    assert spec["rtl_common_signal"]["module_reset"] == "rst"

    proto = prototypes()[unit]
    widths = type_widths()
    ports = rtl_ports(REPO / "hls" / "rtl" / f"{top}.sv", top)
    assert [p["c_name"] for p in spec["c_parameters"]] == [name for _, name, _ in proto]
    for (ctype, name, is_stream), entry in zip(proto, spec["c_parameters"], strict=False):
        rtl = entry["rtl_ports"]
        if is_stream:
            direction = "in" if name.endswith("_in") else "out"
            assert entry["c_port_direction"] == direction, name
            keys = FIFO_IN if direction == "in" else FIFO_OUT
            assert set(rtl) == keys, f"{name}: {set(rtl)}"
            data = rtl["FIFO_data_read_in" if direction == "in" else "FIFO_data_write_out"]
            assert ports[data] == ("input" if direction == "in" else "output", widths[ctype]), (name, data)
            for key, port in rtl.items():
                handshake_in = key in ("FIFO_empty_flag", "FIFO_full_flag")
                if key.startswith("FIFO_") and "data" not in key:
                    assert ports[port] == ("input" if handshake_in else "output", 1), (name, port)
        else:
            assert entry["c_port_direction"] == "in"
            assert set(rtl) == {"data_read_in"}
            assert ports[rtl["data_read_in"]] == ("input", widths[ctype]), (name, rtl)


def test_blackbox_performance_matches_cycle_formulas() -> None:
    header = HEADER.read_text()
    row_max = int(re.search(r"#define TL_ROW_MAX (\d+)", header).group(1))
    m = int(re.search(r"#define TL_TILE_M (\d+)", header).group(1))
    n = int(re.search(r"#define TL_TILE_N (\d+)", header).group(1))
    k_max = int(re.search(r"#define TL_K_MAX (\d+)", header).group(1))
    want = {
        "topk_unit": (rtl_cycles.topk_cycles(row_max, row_max), rtl_cycles.topk_interval(row_max)),
        "softmax_unit": (rtl_cycles.softmax_cycles(row_max), rtl_cycles.softmax_interval(row_max)),
        "gemm_tile": (rtl_cycles.gemm_tile_cycles(m, n, k_max, m, n),) * 2,
    }
    for unit, (latency, ii) in want.items():
        perf = json.loads((REPO / "hls" / "rtl" / f"{unit}.json").read_text())["rtl_performance"]
        assert (int(perf["latency"]), int(perf["II"])) == (latency, ii), unit


def test_json_files_are_generated() -> None:
    """The committed JSONs equal hls/rtl/gen_blackbox_json.py's output (resource numbers aside)."""
    import importlib.util

    path = REPO / "hls" / "rtl" / "gen_blackbox_json.py"
    spec = importlib.util.spec_from_file_location("gen_blackbox_json", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for unit, want in gen.build({}).items():
        got = json.loads((REPO / "hls" / "rtl" / f"{unit}.json").read_text())
        for key in UG1399_KEYS - {"rtl_resource_usage"}:
            assert got[key] == want[key], (unit, key)
