"""pytest driver: engine_mem's simulation form (what the rtlsim harness builds) equals its synthesized form
cycle by cycle under random colliding traffic (sim/tb_engine_mem_forms.py), with full-window ports and
with narrow ones (RD_LANES / WR_LANES, as engine_top's STORE, LOAD and TOPK ports)."""

from __future__ import annotations

import pytest
from rtlsim import RTL_DIR, SIM_DIR, Unit

# read port 0: 1 lane, 1: all, 2: 3 lanes; write port 0: 2 lanes, 1: all
NARROW = {"RD_LANES": 0x03_00_01, "WR_LANES": 0x02}
# write port 0: 3 lanes (its data selected per bank residue mod 4, a lane past its 3), 1: 1 lane; read 2 lanes
NARROW3 = {"RD_LANES": 0x02_00_02, "WR_LANES": 0x01_03}


@pytest.mark.parametrize("lanes", [{}, NARROW, NARROW3], ids=["full", "narrow", "narrow3"])
def test_engine_mem_forms_random_traffic(lanes: dict[str, int]) -> None:
    sources = [RTL_DIR / "engine" / "engine_mem.sv", SIM_DIR / "rtl" / "engine_mem_forms.sv"]
    suffix = "_narrow3" if lanes == NARROW3 else "_narrow" if lanes else ""
    unit = Unit("engine_mem_forms", "engine_mem_forms", sources, "tb_engine_mem_forms", parameters=lanes,
                build_name="engine_mem_forms" + suffix).build()
    unit.check("random_traffic")
