"""Mutation checks: the testbenches must FAIL on deliberately broken RTL.

1. topk_unit built with TIE_BREAK_BUG=1 (equal scores: the later index wins) fails the tie cases.
2. A copy of trilevel_requant with round-half-to-even turned into round-half-up (the carry-in
   `bit s of acc` -> 1), linked into mac_array, fails the RNE tie cases.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rtlsim import BUILD_ROOT, Unit, rtl_sources, simulator


def test_topk_tie_break_mutant_is_caught() -> None:
    mutant = Unit("topk_unit", "topk_unit", rtl_sources("topk_unit"), "tb_topk_unit",
                  {"NMAX": 256, "SCORE_W": 32, "TIE_BREAK_BUG": 1}, build_name="topk_unit_mutant").build()
    total, failed = mutant.run("edge_cases")
    assert total == 1 and failed == 1, "the top-k testbench did not notice a flipped tie-break"


def test_requant_rounding_mutant_is_caught() -> None:
    original = rtl_sources("trilevel_requant")[0].read_text()
    needle = " && acc2[sh2];"
    assert original.count(needle) == 1, "mutation site moved: update this test"
    mutant_dir = BUILD_ROOT / f"requant_mutant_src_{simulator()}"
    mutant_dir.mkdir(parents=True, exist_ok=True)
    mutant_src = mutant_dir / "trilevel_requant.sv"
    mutant_src.write_text(original.replace(needle, ";"))
    sources = [*rtl_sources("mac_array", "mac_pe", "trilevel_requant_decode"), mutant_src]
    mutant = Unit("mac_array", "mac_array", sources, "tb_mac_array", {"ROWS": 2, "COLS": 3},
                  build_name="mac_array_mutant").build()
    total, failed = mutant.run("edge_cases")
    assert total == 1 and failed == 1, "the MAC testbench did not notice round-half-up"


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parent.glob("tb_*.py")))
def test_every_testbench_has_a_driver(path: Path) -> None:
    driver = path.with_name("test_" + path.name[3:])
    assert driver.exists(), f"{path.name} has no pytest driver {driver.name}"
