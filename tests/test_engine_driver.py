"""The engine driver on the PYNQ API against a simulated board: pynq's own device discovery (`_probe_`),
MMIO and allocate; a non-coherent DDR (a missing flush or invalidate gives wrong data); the register
protocol (ap_start, clear-on-read ap_done, ERROR, ERR_PC, interrupt, counters) and a hung engine."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pynq.pl_server.device import Device

from trilevel.accel import BackendError, isa, lower
from trilevel.accel.engine import (
    ENGINE_BASE,
    REG,
    EngineBackend,
    EngineDriver,
    EngineError,
    EngineTimeoutError,
    pynq_driver,
    simulated_zynq,
)
from trilevel.accel.fsim import FunctionalEngine, RunResult
from trilevel.accel.isa import Err
from trilevel.intref.fixed import QTensor
from trilevel.intref.layers import linear_fwd


@pytest.fixture()
def discovered_board():
    """pynq's Device discovery finds the simulated ZCU102 (its _probe_ hook), as it finds the real one."""
    sim_class = type(simulated_zynq(FunctionalEngine(isa.CI_SMALL)))
    saved = {k: getattr(Device, k) for k in ("_devices", "_active_device") if hasattr(Device, k)}
    for key in ("_devices", "_active_device"):
        if hasattr(Device, key):
            delattr(Device, key)
    sim_class.enabled = True
    try:
        yield Device.active_device
    finally:
        sim_class.enabled = False
        for key in ("_devices", "_active_device"):
            if hasattr(Device, key):
                delattr(Device, key)
        for key, value in saved.items():
            setattr(Device, key, value)


def test_pynq_discovery_mmio_and_allocate_drive_the_engine(discovered_board) -> None:
    import pynq

    assert type(discovered_board).__name__ == "SimulatedZynq"
    rng = np.random.default_rng(0)
    x = QTensor(rng.integers(-900, 900, (2, 5, 16)).astype(np.int16), 11)
    w = QTensor(rng.integers(-900, 900, (8, 16)).astype(np.int16), 13)
    config = discovered_board.engine.config
    mmio = pynq.MMIO(ENGINE_BASE, isa.REGISTER_SPAN)  # no device given: pynq's active device
    driver = EngineDriver(mmio, lambda n: pynq.allocate((n,), np.uint8), config)  # pynq's defaults
    backend = EngineBackend(driver, "pynq-sim")
    got = backend.linear_fwd(x, {"weight": w}, {"y": 10})
    want = linear_fwd(x, {"weight": w}, {"y": 10})
    assert np.array_equal(got[0].data, want[0].data) and got[1] == want[1]
    assert discovered_board.runs == 1 and backend.counters["linear_fwd"]["MACS"] == 2 * 5 * 8 * 16


def test_ddr_is_not_coherent() -> None:
    import pynq

    device = simulated_zynq(FunctionalEngine(isa.CI_SMALL))
    buf = pynq.allocate((64,), np.uint8, target=device)
    buf[:] = 7
    assert not device.ddr[buf.device_address:buf.device_address + 64].any()  # not flushed yet
    buf[:8].sync_to_device()
    assert device.ddr[buf.device_address:buf.device_address + 64].tolist() == [7] * 8 + [0] * 56
    device.ddr[buf.device_address + 8] = 3
    assert buf[8] == 7  # not invalidated yet
    buf.sync_from_device()
    assert buf[8] == 3


def test_registers_errors_and_interrupt() -> None:
    device = simulated_zynq(FunctionalEngine(isa.CI_SMALL))
    driver = pynq_driver(device, isa.CI_SMALL)
    program = lower.linear_fwd(isa.CI_SMALL, 4, 8, 8, 12, 12, None, None, 10)
    inputs = {"x": np.ones((4, 8), np.int16), "weight": np.ones((8, 8), np.int16)}
    driver.mmio.write(REG["GIE"], 1)
    driver.mmio.write(REG["IER"], 1)
    out = driver.run(program, inputs)
    assert out.outputs["y"].shape == (4, 8) and out.counters["RETIRED"] == program.count == out.retired
    assert driver.mmio.read(REG["ISR"]) == 1 and driver.mmio.read(REG["CTRL"]) & isa.CTRL_IDLE
    assert not driver.mmio.read(REG["CTRL"]) & isa.CTRL_DONE  # cleared by the driver's read
    broken = dataclasses.replace(program, words=program.words.copy())
    gemm = next(i for i in range(broken.count) if broken.words[i * isa.WORDS] & 0xF == isa.Op.GEMM)
    broken.words[gemm * isa.WORDS + isa.FIELDS["shift"][0]] |= 63 << isa.FIELDS["shift"][1]  # shift 63
    with pytest.raises(EngineError, match=rf"BAD_SHIFT in linear_fwd at command {gemm}: GEMM .*shift=63"):
        driver.run(broken, inputs)
    assert driver.mmio.read(REG["ERROR"]) == Err.BAD_SHIFT and driver.mmio.read(REG["ERR_PC_CTRL"]) == 1


def test_a_hung_engine_times_out_with_its_state() -> None:
    class Hung:
        config = isa.CI_SMALL

        def run(self, ddr, cmd_addr, cmd_count) -> RunResult:  # never raises ap_done
            return RunResult(0, Err.NONE, 0, 3, dict.fromkeys(isa.COUNTERS, 0))

    driver = pynq_driver(simulated_zynq(Hung()), isa.CI_SMALL, timeout_s=0.05)
    program = lower.linear_fwd(isa.CI_SMALL, 4, 8, 8, 12, 12, None, None, 10)
    with pytest.raises(EngineTimeoutError, match="linear_fwd not done after 0.05 s"):
        driver.run(program, {"x": np.ones((4, 8), np.int16), "weight": np.ones((8, 8), np.int16)})


def test_on_board_binds_the_engine_ip_by_instance_or_vlnv(tmp_path) -> None:
    """get_backend("pynq")'s binding, with an overlay whose device is the simulated board: the IP is found
    by its block-design instance name or by the HLS/RTL engine VLNV, the build from manifest.json."""
    import json
    from types import SimpleNamespace

    from trilevel.accel.engine import ENGINE_VLNVS

    device = simulated_zynq(FunctionalEngine(isa.CI_SMALL))
    (tmp_path / "manifest.json").write_text(json.dumps({"engine_config": "ci"}))
    for ip_dict in ({isa.INSTANCE: {"phys_addr": ENGINE_BASE, "type": "x"}},
                    {"engine_rtl": {"phys_addr": ENGINE_BASE, "type": ENGINE_VLNVS[0]}}):
        overlay = SimpleNamespace(ip_dict=ip_dict, device=device)
        backend = EngineBackend.on_board(bitfile=tmp_path / "trilevel.bit", overlay=overlay)
        assert backend.name == "pynq" and backend.config == isa.CI_SMALL
        x = QTensor(np.full((1, 3, 8), 3, np.int16), 10)
        got = backend.linear_fwd(x, {"weight": QTensor(np.full((4, 8), 5, np.int16), 10)}, {"y": 19})
        assert got[0].data.tolist() == [[[3 * 5 * 8 // 2] * 4] * 3]  # 8 products at frac 20, shown at 19
    dma_only = SimpleNamespace(ip_dict={"dma": {"type": "xilinx.com:ip:axi_dma:7.1"}})
    with pytest.raises(BackendError, match="no engine IP"):
        EngineBackend.on_board(overlay=dma_only)
