"""`trilevel bench --backend rtlsim|pynq`: the engine-counters section measures kernels through the board
driver and reads the engine's hardware counters (trilevel.accel.rtlsim_bench, one code path for the RTL in
Verilator and the board). Here through rtlsim at CI_SMALL on the small rows: the counter-derived columns
must be consistent (cycles > 0, MACs = the kernel's MACs, utilization = MACs / (rows * cols * cycles)),
every result bit-exact vs the reference backend (and a wrong result must be flagged), the rows labelled
with where they were measured, the table written as JSON and Markdown; without a board the pynq path is
one line and exit code 2, before anything is written."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from trilevel.accel import isa, rtlsim, rtlsim_bench
from trilevel.accel.engine import EngineBackend
from trilevel.bench import BenchOptions
from trilevel.cli import main


def _kernel_macs(case: tuple) -> int:
    """MACs of one rtlsim_bench case from its shape alone (batch 1): t x din x dout for a linear."""
    return case[1] * case[2] * case[3] if case[0] == "linear" else 0


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory) -> tuple:
    rtlsim.build(isa.CI_SMALL)
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "--backend", "rtlsim", "--rows", "small", "--out", str(out)]) == 0
    return out


def test_rtlsim_bench_rows_are_consistent_and_exact(bench_run, capsys):
    table = json.loads((bench_run / "engine-counters.json").read_text())
    cfg = isa.CI_SMALL
    assert table["config"]["name"] == cfg.name and table["where"] == "rtlsim ci 4x4"
    assert table["measured_on"].startswith("RTL engine") and table["ddr_model"]["rd_latency"] > 0
    cases = rtlsim_bench.cases("small")
    assert len(table["rows"]) == len(cases) >= 2
    for case, row in zip(cases, table["rows"], strict=True):
        assert row["kernel"].startswith(case[0]) and row["where"] == table["where"]
        assert row["cycles"] > 0 and row["exact"] is True
        assert row["macs"] == _kernel_macs(case), row
        assert row["utilization"] == pytest.approx(
            row["macs"] / (cfg.array_rows * cfg.array_cols * row["cycles"]), abs=1e-4)
        assert 0 <= row["gemm_busy"] <= row["cycles"] and row["ddr_rd_bytes"] > 0 and row["ddr_wr_bytes"] > 0
        # the harness's AXI bookkeeping moves at least the bytes the engine counted (whole beats)
        assert row["bus_rd_bytes"] >= row["ddr_rd_bytes"] and row["bus_wr_bytes"] >= row["ddr_wr_bytes"]
    assert table["rows"][0]["macs"] > 0 and table["rows"][0]["utilization"] > 0
    (section,) = json.loads((bench_run / "bench.json").read_text())["sections"]
    assert section["name"] == "engine_counters" and section["error"] is None
    assert section["rows"] == table["rows"]
    md = (bench_run / "engine-counters.md").read_text()
    assert "Measured on: RTL engine" in md and "| kernel | shape | cycles |" in md
    assert all(f"| {r['kernel']} | {r['shape']} | {r['cycles']} |" in md for r in table["rows"])


def test_pynq_path_on_an_overlay_backed_by_the_rtl(bench_run, tmp_path, monkeypatch):
    """`--backend pynq` end to end with pynq.Overlay answering with the RTL engine behind the IP's window:
    the board's binding (bitstream, manifest, engine IP) and the same measurement as rtlsim, labelled with
    the bitstream; the same RTL gives the same counters."""
    import hashlib
    import types

    import pynq

    bit = tmp_path / "trilevel.bit"
    bit.write_bytes(b"not a real bitstream")
    sha = hashlib.sha256(bit.read_bytes()).hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"board": "ZCU102", "engine": "rtl", "engine_config": isa.CI_SMALL.name, "clock_mhz": 150.0,
         "artifacts": {"trilevel.bit": {"sha256": sha}}}))
    loaded = []

    def overlay(path: str) -> types.SimpleNamespace:
        loaded.append(path)
        return types.SimpleNamespace(
            ip_dict={"trilevel_engine_0": {"phys_addr": rtlsim.ENGINE_BASE, "type": "x"}},
            device=rtlsim.rtlsim_zynq(rtlsim.Harness(isa.CI_SMALL)))

    monkeypatch.setattr(pynq, "Overlay", overlay)
    out = tmp_path / "out"
    args = ["--backend", "pynq", "--bitfile", str(bit), "--rows", "small", "--out", str(out)]
    assert main(["bench", *args]) == 0
    assert loaded == [str(bit)]
    board = json.loads((out / "engine-counters.json").read_text())
    assert board["where"] == f"board ZCU102 ci 4x4 bit {sha[:8]}" and "ddr_model" not in board
    assert board["bitstream"]["sha256"] == sha and board["bitstream"]["engine"] == "rtl"
    assert board["measured_on"].startswith("engine IP on the board") and sha in board["measured_on"]
    assert "Bitstream: `" in (out / "engine-counters.md").read_text()
    sim = json.loads((bench_run / "engine-counters.json").read_text())
    for b, r in zip(board["rows"], sim["rows"], strict=True):
        assert b["exact"] and b["where"] == board["where"] and b["bus_rd_bytes"] is None
        assert {k: b[k] for k in COUNTED} == {k: r[k] for k in COUNTED}


COUNTED = ("kernel", "shape", "cycles", "gemm_busy", "macs", "utilization", "dma_stall_share", "ddr_rd_bytes",
           "ddr_wr_bytes")


class _WrongLinear(EngineBackend):
    """fsim, with one bit of every linear_fwd output flipped."""

    def linear_fwd(self, x, params, fracs, residual=None):
        y, stats, saved = super().linear_fwd(x, params, fracs, residual)
        y.data.flat[0] ^= np.int16(1)
        return y, stats, saved


def test_a_wrong_result_is_flagged(tmp_path):
    fsim = EngineBackend.fsim(isa.CI_SMALL)
    wrong = _WrongLinear(fsim.driver, "fsim-wrong")
    options = BenchOptions(out=tmp_path, engine=wrong, engine_where={"measured_on": "fsim", "where": "fsim"},
                           engine_rows="small")
    section = rtlsim_bench.bench_section(options)
    assert [r["exact"] for r in section.rows] == [False, True, True]
    assert section.error and "1 rows differ" in section.error
    assert "| False |" in (tmp_path / "engine-counters.md").read_text()


@pytest.mark.parametrize("extra", [[], ["--bitfile", "{tmp}/none.bit"], ["--engine-config", "ci"],
                                   ["no-pynq"]],
                         ids=["no-board", "missing-bitfile", "engine-config", "no-pynq-package"])
def test_pynq_bench_without_a_board_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, extra):
    monkeypatch.setenv("TRILEVEL_BITFILE", str(tmp_path / "missing.bit"))
    if extra == ["no-pynq"]:
        monkeypatch.setitem(sys.modules, "pynq", None)      # `import pynq` raises ImportError
        extra = []
    out = tmp_path / "out"
    args = [a.format(tmp=tmp_path) for a in extra]
    assert main(["bench", "--backend", "pynq", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("trilevel bench: error:"), err
    assert ("pynq package is missing" in err) == (sys.modules.get("pynq", 0) is None), err
    assert not out.exists()


def test_engine_options_need_a_backend(tmp_path, capsys):
    assert main(["bench", "--rows", "small", "--out", str(tmp_path / "out")]) == 2
    assert "--rows: for --backend rtlsim|pynq only" in capsys.readouterr().err
