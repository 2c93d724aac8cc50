"""The rtlsim backend's engine build: isa.CI_RTLSIM by default, $TRILEVEL_RTLSIM_CONFIG to pick another
isa.CONFIGS entry, a one-line refusal for an unknown name; CI_RTLSIM is a real engine configuration (its RTL
parameters obey the engine's lane rules); profile-guided unless $TRILEVEL_RTLSIM_PGO=0, and the profile-guided
build's steps up to the compiler (the sim/ tests use the plain build). No Verilator build here."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

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
    ci = dataclasses.replace(c, name="ci", array_rows=4, array_cols=4, vec_lanes=4, epilogue_lanes=2)
    assert ci == isa.CI_SMALL
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


def test_profile_guided_by_default_pgo_env_switches_it_off(monkeypatch):
    monkeypatch.delenv(rtlsim.PGO_ENV, raising=False)
    assert rtlsim.default_profile_guided() is True
    monkeypatch.setenv(rtlsim.PGO_ENV, "0")
    assert rtlsim.default_profile_guided() is False
    monkeypatch.setenv(rtlsim.PGO_ENV, "yes")
    with pytest.raises(BackendError, match=rtlsim.PGO_ENV):
        rtlsim.default_profile_guided()


def test_profile_guided_build_steps(monkeypatch, tmp_path):
    """Instrumented compile, the profiling run on that library, stale objects removed, the compile with
    the profile: in that order, into one cached folder named -pgo (the compiler itself is not run)."""
    steps: list[tuple[str, str]] = []

    def fake_verilate(params, work, jobs, env, cxx_flags, ld_flags=""):
        steps.append(("compile", cxx_flags))
        (work / "obj").mkdir(exist_ok=True)
        (work / "obj" / "model.o").write_text("")
        (work / "libengine.so").write_text(cxx_flags)

    def fake_run(cmd, **kwargs):
        assert Path(cmd[cmd.index("--profile") + 1]).read_text() == steps[-1][1]   # the instrumented library
        steps.append(("profile", cmd[-1]))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(rtlsim, "BUILD_ROOT", tmp_path)
    monkeypatch.setattr(rtlsim, "_verilate", fake_verilate)
    monkeypatch.setattr(rtlsim.subprocess, "run", fake_run)
    monkeypatch.setattr(rtlsim.shutil, "which", lambda *a, **k: "/bin/verilator")
    lib = rtlsim.build(isa.CI_RTLSIM, profile_guided=True)
    assert [s[0] for s in steps] == ["compile", "profile", "compile"]
    assert rtlsim.PROFILE_GENERATE[0] in steps[0][1] and steps[1][1] == isa.CI_RTLSIM.name
    assert rtlsim.PROFILE_USE in steps[2][1] and rtlsim.PROFILE_GENERATE[0] not in steps[2][1]
    assert lib.parent.name.startswith(f"{isa.CI_RTLSIM.name}-pgo-") and lib.read_text() == steps[2][1]
    assert not (lib.parent / "obj").exists()
    assert rtlsim.build(isa.CI_RTLSIM, profile_guided=True) == lib and len(steps) == 3   # cached
