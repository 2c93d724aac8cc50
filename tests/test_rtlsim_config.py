"""The rtlsim backend's engine build: isa.CI_RTLSIM by default, $TRILEVEL_RTLSIM_CONFIG to pick another
isa.CONFIGS entry, a one-line refusal for an unknown name; CI_RTLSIM is a real engine configuration (its RTL
parameters obey the engine's lane rules). No Verilator build here."""

from __future__ import annotations

import dataclasses

import pytest

from trilevel.accel import isa, rtlsim
from trilevel.accel.interface import BackendError


def test_default_is_ci_rtlsim(monkeypatch):
    monkeypatch.delenv(rtlsim.CONFIG_ENV, raising=False)
    assert rtlsim.default_config() is isa.CI_RTLSIM
    monkeypatch.setenv(rtlsim.CONFIG_ENV, "")
    assert rtlsim.default_config() is isa.CI_RTLSIM


@pytest.mark.parametrize("name", sorted(isa.CONFIGS))
def test_env_selects_a_named_config(monkeypatch, name):
    monkeypatch.setenv(rtlsim.CONFIG_ENV, name)
    assert rtlsim.default_config() is isa.CONFIGS[name]


def test_env_unknown_name_is_a_backend_error(monkeypatch):
    monkeypatch.setenv(rtlsim.CONFIG_ENV, "ci7")
    with pytest.raises(BackendError, match="ci7"):
        rtlsim.default_config()


def test_ci_rtlsim_is_ci_small_with_an_8x8_array():
    c = isa.CI_RTLSIM
    assert isa.CONFIGS[c.name] is c
    assert (c.array_rows, c.array_cols, c.vec_lanes) == (8, 8, 8)
    assert dataclasses.replace(c, name="ci", array_rows=4, array_cols=4, vec_lanes=4) == isa.CI_SMALL
    p = rtlsim.engine_parameters(c)
    # engine_vec / engine_softmax: V <= the SPM window lanes and <= the ACC lanes (max(2, COLS))
    assert p["VEC_LANES"] <= p["SPM_LANES"] and p["VEC_LANES"] <= max(2, p["COLS"])
    assert p["SPM_LANES"] == 8 and p["SPM_ELEMS"] % p["SPM_LANES"] == 0


def test_profile_guided_build_takes_named_configs_only():
    """The profiling run rebuilds the configuration by name in a subprocess, so overrides or an unnamed
    configuration would profile a different engine: refused before anything is built."""
    with pytest.raises(ValueError, match="named"):
        rtlsim.build(isa.CI_SMALL, overrides={"MUTATION": 7}, profile_guided=True)
    with pytest.raises(ValueError, match="named"):
        rtlsim.build(dataclasses.replace(isa.CI_SMALL, array_rows=2), profile_guided=True)
