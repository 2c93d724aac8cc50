"""pytest driver: engine_mem's simulation form (what the rtlsim harness builds) equals its synthesized form
cycle by cycle under random colliding traffic (sim/tb_engine_mem_forms.py)."""

from __future__ import annotations

from rtlsim import RTL_DIR, SIM_DIR, Unit


def test_engine_mem_forms_random_traffic() -> None:
    sources = [RTL_DIR / "engine" / "engine_mem.sv", SIM_DIR / "rtl" / "engine_mem_forms.sv"]
    unit = Unit("engine_mem_forms", "engine_mem_forms", sources, "tb_engine_mem_forms").build()
    unit.check("random_traffic")
