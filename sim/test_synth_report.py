"""hls/rtl/synth_report.py on the smallest unit (one PE): its multiply-add is one DSP48E2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "hls" / "rtl" / "synth_report.py"


def test_synth_report_on_mac_pe(tmp_path: Path) -> None:
    assert shutil.which("yosys"), "yosys is required: scripts/install-system-tools.sh installs it"
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--units", "mac_pe", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())["units"]["mac_pe"]
    res = report["resources"]
    assert res["DSP48E2"] == 1, res                      # the 16x16 multiply and the accumulator's adder
    assert res["LUT"] <= 4 and res["CARRY"] == 0, res    # the TL_DSP48E2 form: no fabric adder left
    assert res["FF"] >= 2 * 48 + 2 * 16 + 2, res          # acc + res + both operands + flags (v, last)
    assert res["RAMB36"] == res["RAMB18"] == 0, res
    assert "mac_pe" in proc.stdout and "DSP48E2" in proc.stdout


def test_synth_report_rejects_bad_param() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--units", "mac_pe", "--param", "nounit.X=1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "UNIT.NAME=VALUE" in proc.stderr


def _module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("synth_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["synth_report"] = mod            # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_memory_model_counts_one_copy_of_regions() -> None:
    from trilevel.accel import isa

    mem = _module().memory_model(isa.PRODUCTION)
    spm, acc, idx = mem["SPM"], mem["ACC"], mem["IDX"]
    # 6 regions of 4096 rows (spm_region_rows): 2 RAMB36 as 4K x 9 each
    assert (spm["banks"], spm["regions"], spm["region_elements"], spm["ramb36"]) == (32, 6, 131072, 384)
    assert (acc["banks"], acc["regions"], acc["ramb36"]) == (32, 2, 128)      # 48 bit: 2 RAMB36 per region
    assert (idx["banks"], idx["regions"], idx["ramb36"]) == (8, 1, 8)
    assert all(m["copies"] == 1 and m["ports_per_bram"] == 2 for m in (spm, acc, idx))
    assert mem["total"] == 520 <= 912


def test_memory_parts_have_engine_tops_ports() -> None:
    """The engine_mem parts are synthesized with the ports engine_top gives each memory (NR, NW and the
    narrow-port lanes): the part would otherwise price ports the engine does not have."""
    import re

    from trilevel.accel import isa

    parts = _module().engine_parts(isa.PRODUCTION)
    top = (SCRIPT.parent / "engine" / "engine_top.sv").read_text()
    for name, inst in (("mem_spm", "u_spm"), ("mem_acc", "u_acc"), ("mem_idx", "u_idx")):
        params = re.search(r"engine_mem #\((.*?)\) " + inst + r" \(", top, re.S).group(1)
        got = {k: int(v.replace("_", "").replace("64'h", "0x").replace("64'd", ""), 0)
               for k, v in re.findall(r"\.(NR|NW|RD_LANES|WR_LANES)\(([^)]*)\)", params)}
        want = {k: parts[name].params.get(k, 0) for k in ("NR", "NW", "RD_LANES", "WR_LANES")}
        assert got == want, (name, got, want)


def test_engine_totals_multiply_blackbox_instances() -> None:
    sr = _module()
    from trilevel.accel import isa

    parts = sr.engine_parts(isa.PRODUCTION)
    one = dict.fromkeys(sr.COLUMNS, 0)
    results = {n: {"resources": dict(one, LUT=1), "blackboxes": {}} for n in parts}
    results["top"]["blackboxes"] = {m: (3 if m == "engine_mem" else 1) for m in parts["top"].children}
    results["gemm"]["blackboxes"] = {"mac_pe": 1024, "trilevel_requant": 16, "engine_lutram": 64}
    results["softmax"]["blackboxes"] = {"trilevel_requant": 16, "engine_lutram": 32}
    results["mac_pe"]["resources"] = dict(one, DSP48E2=1)
    results["lutram33x16"]["resources"] = dict(one, LUTRAM=3)
    tot = sr.engine_totals(results, parts)
    assert tot["instances"]["mac_pe"] == 1024 and tot["instances"]["mem_spm"] == 1
    assert tot["resources"]["DSP48E2"] == 1024
    # engine_lutram banks: gemm's 64 of one kind, softmax's 16 + 16 of two kinds (one target per instance)
    assert tot["instances"]["lutram16x64"] == 64 and tot["instances"]["lutram17x16"] == 16
    assert tot["resources"]["LUTRAM"] == 16 * 3
    # vec's 32 requantizers: A and C per lane
    results["vec"]["blackboxes"] = {"trilevel_requant": 32, "engine_lutram": 32}
    tot = sr.engine_totals(results, parts)
    assert tot["instances"]["requant"] == 16 + 16 + 32
    results["vec"] = {"error": "timeout"}
    part_tot = sr.engine_totals(results, parts)
    assert part_tot["resources"] is None and part_tot["missing"] == ["vec"]
    # a missing part's own cells are not counted, the submodules its RTL declares are (2 x 16 requantizers,
    # 16 + 16 LUT RAM banks)
    assert part_tot["instances"]["requant"] == 16 + 16 + 32 and "vec" not in part_tot["instances"]
    assert part_tot["instances"]["lutram16x64r2"] == 16 and part_tot["instances"]["lutram16x64"] == 64 + 16
    assert part_tot["finished_parts_sum"]["DSP48E2"] == 1024


def test_engine_mem_regions_are_blackboxed_and_brams_map_to_block_ram(tmp_path: Path) -> None:
    """engine_mem as the report synthesizes it, small: 8 lanes x 2 regions of 2048 x 16 bit -> its own
    netlist keeps every (bank, region) engine_bram (16; none lost to Yosys' array-to-$mem conversion) and
    no RAM of its own; one engine_bram of 2048 x 16 bit maps to one true dual-port RAMB36, one of
    1024 x 48 bit to three RAMB18 (the counts the report multiplies), no LUT RAM."""
    assert shutil.which("yosys"), "yosys is required: scripts/install-system-tools.sh installs it"
    sr = _module()
    part = sr.Part("engine_mem", ("engine/engine_mem.sv",),
                   {"EW": 16, "LANES": 8, "DEPTH": 32768, "NR": 3, "NW": 2, "AW": 24},
                   children={"engine_bram": ("bram16",)}, boxes=("engine_bram",),
                   mem2reg=("engine/engine_mem.sv",), expect={"engine_bram": 16})
    r = sr.synth_part("mem_small", part, tmp_path, timeout=900)
    assert "error" not in r, r
    assert r["blackboxes"] == {"engine_bram": 16}, r["blackboxes"]
    res = r["resources"]
    assert res["RAMB36"] == res["RAMB18"] == res["LUTRAM"] == 0 and res["LUT"] > 100, res
    # a netlist with fewer instances than the RTL declares is refused, not reported (Yosys 0.23 drops
    # instances whose outputs feed an array read by a variable index unless the file is read -mem2reg)
    (stat,) = tmp_path.glob("mem_small-*.stat.json")
    short = sr.part_result("mem_short", sr.dataclasses.replace(part, expect={"engine_bram": 17}),
                           stat.read_text(), 0.0)
    assert "error" in short and "engine_bram" in short["error"], short
    assert sr.part_result("mem_small", part, stat.read_text(), 0.0)["blackboxes"] == {"engine_bram": 16}
    for w, n, ram36, ram18 in ((16, 2048, 1, 0), (48, 1024, 0, 3)):
        b = sr.synth_part(f"bram{w}", sr.Part("engine_bram", ("engine/engine_mem.sv",), {"W": w, "N": n}),
                          tmp_path, timeout=300)
        assert (b["resources"]["RAMB36"], b["resources"]["RAMB18"], b["resources"]["LUTRAM"]) == \
            (ram36, ram18, 0), b["resources"]


def test_engine_lutram_maps_to_lut_ram(tmp_path: Path) -> None:
    """engine_lutram (the row / chunk buffer banks) synthesized on its own, small (16 x 16 bit, two read
    ports): Yosys maps it to LUT RAM only, no flip-flops, no LUTs of logic, no block RAM."""
    assert shutil.which("yosys"), "yosys is required: scripts/install-system-tools.sh installs it"
    sr = _module()
    r = sr.synth_part("lutram_small", sr.Part("engine_lutram", ("engine/engine_lutram.sv",),
                                              {"W": 16, "N": 16, "NRD": 2}), tmp_path, timeout=300)
    assert "error" not in r, r
    res = r["resources"]
    assert res["LUTRAM"] >= 1 and res["FF"] == res["LUT"] == res["RAMB36"] == res["RAMB18"] == 0, r["cells"]


def test_requantizer_parameter_sets_are_counted_per_instance(tmp_path: Path) -> None:
    """A part with two trilevel_requant blackboxes of different parameter sets (SR = 1 and the RNE-only
    SR = 0) keeps both instances under the module's name (one target per instance); the RNE-only lane on its
    own maps no DSP48E2 (no hash multiplies) and fewer LUTs than the engine's SR lane."""
    assert shutil.which("yosys"), "yosys is required: scripts/install-system-tools.sh installs it"
    sr = _module()
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SCRIPT.parent / "trilevel_requant.sv", src / "trilevel_requant.sv")
    (src / "two_rq.sv").write_text("""
module two_rq #(parameter int W = 64) (input logic clk, input logic signed [W-1:0] a,
               input logic signed [7:0] s, input logic m, input logic [31:0] k,
               output logic signed [15:0] q0, output logic signed [15:0] q1);
    trilevel_requant #(.ACC_W(64)) u0 (.clk(clk), .en(1'b1), .acc(a), .shift(s), .mode(m), .seed(k),
                                       .index_k(k), .q(q0));
    trilevel_requant #(.ACC_W(64), .SR(1'b0)) u1 (.clk(clk), .en(1'b1), .acc(a), .shift(s), .mode(1'b0),
                                                  .seed(32'd0), .index_k(32'd0), .q(q1));
endmodule
""")
    part = sr.Part("two_rq", ("two_rq.sv",), {"W": 64}, ("trilevel_requant.sv",),
                   {"trilevel_requant": ("requant", "requant_rne")}, expect={"trilevel_requant": 2})
    r = sr.synth_part("two_rq", part, tmp_path, timeout=300, src=src)
    assert "error" not in r, r
    assert r["blackboxes"] == {"trilevel_requant": 2}, r
    assert r["resources"]["DSP48E2"] == r["resources"]["LUT"] == 0, r["cells"]
    from trilevel.accel import isa

    parts = sr.engine_parts(isa.PRODUCTION)
    rne_only = sr.Part("trilevel_requant", ("trilevel_requant.sv",), {"ACC_W": 64, "SR": 0, "EXT_DECODE": 1})
    rne = sr.synth_part("requant_rne", rne_only, tmp_path, timeout=600)
    full = sr.synth_part("requant", parts["requant"], tmp_path, timeout=600)
    assert rne["resources"]["DSP48E2"] == 0 < full["resources"]["DSP48E2"], (rne, full)
    assert rne["resources"]["LUT"] < full["resources"]["LUT"], (rne, full)


def test_committed_engine_resources_complete_and_within_zu9eg() -> None:
    """docs/engine-resources.json (make synth-report at isa.PRODUCTION): what it claims is consistent --
    totals recomputed from its parts and instance counts, the PE array's DSPs present, each figure within
    the ZU9EG when it says it fits."""
    sr = _module()
    from trilevel.accel import isa

    doc = json.loads((SCRIPT.parent.parent.parent / "docs" / "engine-resources.json").read_text())
    assert doc["config"]["array_rows"] == isa.PRODUCTION.array_rows
    budget = doc["device_budget"]
    assert budget == {"dsp": 2520, "bram36": 912, "lut": 274080, "ff": 548160}
    parts = sr.engine_parts(isa.PRODUCTION)
    results = {n: dict(p, part=n) for n, p in doc["parts"].items()}
    tot = sr.engine_totals(results, parts)
    mem = doc["memory_ramb36_declared_x_yosys_bram"]       # Yosys' RAMs per region x declared regions
    assert mem["total"] == mem["mem_spm"] + mem["mem_acc"] + mem["mem_idx"] <= budget["bram36"], mem
    if doc["missing_parts"]:          # incomplete: no totals, no fit claimed; the partial sum is consistent
        assert doc["lut"] is None and doc["dsp"] is None and "fits" not in doc
        # (parts added to engine_parts after the document was written are missing from it too)
        newer = set(parts) - set(doc["parts"])
        assert tot["resources"] is None and set(doc["missing_parts"]) | newer == set(tot["missing"])
        if newer:   # the newer parts' instances are uncounted in the recomputation: at most the document's
            assert all(tot["finished_parts_sum"][c] <= doc["finished_parts_sum"][c] for c in sr.COLUMNS)
        else:
            assert doc["finished_parts_sum"] == tot["finished_parts_sum"]
        assert tot["instances"]["mac_pe"] == 1024 and tot["finished_parts_sum"]["DSP48E2"] >= 1024
        low = doc["lower_bounds"]
        assert doc["exceeds_budget"] == [k for k in budget if low[k] > budget[k]]
        return
    r = tot["resources"]
    assert doc["lut"] == r["LUT"] + r["LUTRAM"] + r["SRL"] and doc["ff"] == r["FF"]
    assert doc["dsp"] == r["DSP48E2"] and doc["bram36"] == r["RAMB36"] + -(-r["RAMB18"] // 2)
    assert tot["instances"]["mac_pe"] == 1024 and doc["dsp"] >= 1024
    assert doc["fits"] == {k: doc[k] <= budget[k] for k in budget}


def test_pe_accumulator_packs_into_a_dsp_where_yosys_packs_post_adders(tmp_path: Path) -> None:
    """mac_pe's fabric form (no TL_DSP48E2) is a DSP post-adder pattern: Yosys 0.23 packs it into the
    DSP48E1 (xc7: no fabric adder left) but has no DSP48E2 post-adder packing (xcup: the adder stays in LUTs
    and carry cells). Hence the TL_DSP48E2 form the report synthesizes, which instantiates the DSP48E2's
    multiplier and post-adder: xcup then maps it like xc7 (docs/rtl.md "Resources")."""
    assert shutil.which("yosys"), "yosys is required: scripts/install-system-tools.sh installs it"

    def cells(family: str, defines: str = "") -> dict[str, int]:
        stat = tmp_path / f"{family}{defines}.json"
        script = (f"read_verilog -sv {defines} {SCRIPT.parent / 'mac_pe.sv'}; "
                  f"synth_xilinx -family {family} -noiopad -noclkbuf -top mac_pe; "
                  f"tee -q -o {stat} stat -json")
        subprocess.run(["yosys", "-q", "-p", script], capture_output=True, timeout=300, check=True)
        return json.loads(stat.read_text())["design"]["num_cells_by_type"]

    def luts(c: dict[str, int]) -> int:
        return sum(n for t, n in c.items() if t.startswith("LUT"))

    xc7, xcup, dsp = cells("xc7"), cells("xcup"), cells("xcup", "-DTL_DSP48E2")
    assert xc7.get("DSP48E1") == 1 and not any(c.startswith("CARRY") for c in xc7), xc7
    assert luts(xc7) <= 4, xc7
    assert xcup.get("DSP48E2") == 1 and luts(xcup) >= 48, xcup
    assert dsp.get("DSP48E2") == 1 and luts(dsp) <= 4 and not any(c.startswith("CARRY") for c in dsp), dsp
