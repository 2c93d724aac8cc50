"""`trilevel train --backend rtlsim` end to end: the real CLI trains the demo model on digits with every
kernel lowered to commands and run on the RTL engine (Verilator; the CI_SMALL build that every other sim
test uses, picked through $TRILEVEL_RTLSIM_CONFIG instead of the CLI's ci8 default) through the board's
driver (pynq MMIO and allocate on the simulated device), on a small subset (--max-examples) for a few
optimizer steps with token and connection pruning active from the first step. The checkpoint it writes
(fp32 masters, AdamW moments, int16 weights and their fracs, every call site's fracs) and its metrics
line (loss, accuracies) must equal those of the same command on the reference backend bit for bit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trilevel.accel import isa, rtlsim
from trilevel.cli import main

EXAMPLES, BATCH = 4, 2          # 2 optimizer steps after calibration; ~1 min on the CI build
ARGS = ["train", "--model", "demo", "--data", "digits", "--epochs", "1", "--batch-size", str(BATCH),
        "--max-examples", str(EXAMPLES), "--keep-token", "0.5", "--keep-attn", "0.5",
        "--keep-warmup-epochs", "0", "--keep-decay-epochs", "0", "--no-progress", "--no-project-latency"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(rtlsim.CONFIG_ENV, isa.CI_SMALL.name)    # one Verilator build for all of sim/
        for backend in ("reference", "rtlsim"):
            folder = tmp_path_factory.mktemp(backend)
            assert main([*ARGS, "--backend", backend, "--out", str(folder / "run")]) == 0
            out[backend] = folder / "run"
    return out


def _assert_same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, np.ndarray | torch.Tensor):
        assert np.array_equal(np.asarray(a), np.asarray(b)), where
    else:
        assert a == b, where


def test_rtlsim_training_steps_equal_reference(runs):
    ref, rtl = (torch.load(runs[b] / "checkpoint.pt", weights_only=True) for b in ("reference", "rtlsim"))
    assert ref["iteration"] == rtl["iteration"] == EXAMPLES // BATCH
    assert ref["config"]["backend"] == "reference" and rtl["config"]["backend"] == "rtlsim"
    assert rtl["net"]["weights"]["step"] == EXAMPLES // BATCH
    _assert_same(ref["net"], rtl["net"], "net")
    # the steps moved the weights away from their (shared) initialization
    assert any(np.any(np.asarray(m) != 0) for m in rtl["net"]["weights"]["exp_avg"].values())
    lines = [json.loads((runs[b] / "metrics.jsonl").read_text()) for b in ("reference", "rtlsim")]
    assert lines[1]["backend"] == "rtlsim" and lines[1]["images"] == EXAMPLES
    assert {k: v for k, v in lines[0].items() if k not in ("wall_s", "cumulative_wall_s", "backend")} == \
        {k: v for k, v in lines[1].items() if k not in ("wall_s", "cumulative_wall_s", "backend")}


@pytest.mark.parametrize("extra", [["--max-examples", "0"], ["--max-examples", "x"],
                                   ["--backend", "torch", "--max-examples", "4"]])
def test_max_examples_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra):
    assert main(["train", "--out", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--max-examples" in err, err
    assert not (tmp_path / "run").exists()
