"""The pynq backend against the REAL pynq package, off-board, through a mock pynq Device.

`MockZynq` is a `pynq.Device` subclass (registered by pynq's own `_probe_` hook) with the
REGISTER_RW capability, so pynq's MMIO, DefaultIP, `pynq.allocate` and PynqBuffer all run unmodified.
It models what the drivers rely on: AXI-Lite registers with Vitis HLS ap_ctrl semantics (ap_done
clear-on-read, ap_idle), and a non-coherent DDR: a buffer's device copy changes only on
`sync_to_device` (flush) and the host copy only on `sync_from_device` (invalidate), so a missing sync
gives wrong results. Kernel IPs are register-level models that decode their arguments from the
registers and compute with `trilevel.intref` on the device copy of DDR.
"""

from __future__ import annotations

import ctypes
import warnings

import numpy as np
import pytest
from pynq.buffer import PynqBuffer
from pynq.pl_server.device import Device

from trilevel.accel import pynq_backend as pb
from trilevel.accel.kernel_args import compact_probs, dense_probs
from trilevel.accel.reference_backend import ReferenceBackend
from trilevel.intref import blocks, layers, optim, topk
from trilevel.intref.fixed import QTensor


class _Memory:
    def __init__(self, device: MockZynq) -> None:
        self.device = device

    def allocate(self, shape, dtype, **kwargs) -> PynqBuffer:
        dev = self.device
        buf = PynqBuffer(
            shape, dtype, device=dev, device_address=dev.next_address, bo=dev.next_address, coherent=False
        )
        dev.ddr[dev.next_address] = bytearray(buf.nbytes)
        dev.log.append(("allocate", dev.next_address, buf.nbytes))
        dev.next_address += -(-max(buf.nbytes, 1) // 4096) * 4096
        return buf


class MockZynq(Device):
    """A ZCU102 as pynq sees it, minus the silicon."""

    _probe_priority_ = 977
    enabled = False

    @classmethod
    def _probe_(cls):
        return [cls("mock-zcu102")] if cls.enabled else []

    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False}
        self.default_memory = _Memory(self)
        self.regs: dict[int, int] = {}
        self.log: list[tuple] = []
        self.ddr: dict[int, bytearray] = {}  # device copy of every buffer, by device address
        self.next_address = 0x8_0000_1000  # above 4 GiB: exercises the high address words
        self.models: dict[int, tuple[pb.KernelSpec, object]] = {}

    # --- pynq Device hooks
    def flush(self, bo, offset, ptr, size) -> None:
        self.ddr[bo][offset : offset + size] = ctypes.string_at(ptr, size)
        self.log.append(("flush", bo + offset, size))

    def invalidate(self, bo, offset, ptr, size) -> None:
        ctypes.memmove(ptr, bytes(self.ddr[bo][offset : offset + size]), size)
        self.log.append(("invalidate", bo + offset, size))

    def read_registers(self, address: int, length: int) -> bytes:
        value = self.regs.get(address, 0)
        for base in self.models:
            if address == base + pb.AP_CTRL:
                self.regs[address] = value & ~pb.AP_DONE  # ap_done is clear-on-read
        self.log.append(("read", address))
        return int(value).to_bytes(4, "little")[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        value = int.from_bytes(data, "little")
        self.log.append(("write", address, value))
        if address in self.models and value & pb.AP_START:
            self.regs[address] = pb.AP_START  # running: not idle
            spec, model = self.models[address]
            if model is not None:
                self.regs[address + 0x10] = model(self, spec, address) & 0xFFFF_FFFF  # ap_return
                self.regs[address] = pb.AP_DONE | pb.AP_IDLE | pb.AP_READY
        else:
            self.regs[address] = value

    # --- test helpers
    def add_ip(self, name: str, model) -> dict:
        spec = pb.KERNELS[name]
        self.models[spec.base_address] = (spec, model)
        self.regs[spec.base_address + pb.AP_CTRL] = pb.AP_IDLE
        return {
            "type": spec.vlnv,
            "phys_addr": spec.base_address,
            "addr_range": pb.CTRL_RANGE,
            "fullpath": spec.instance,
        }

    def arg(self, spec: pb.KernelSpec, base: int, name: str) -> int | list[int]:
        reg = spec.reg(name)
        word = lambda i: self.regs.get(base + reg.offset + 4 * i, 0)  # noqa: E731
        if reg.kind == "pointer":
            return word(0) | word(1) << 32
        if reg.kind == "array":
            n_words = (
                (reg.count * 2)
                if reg.bits > 32
                else -(-reg.count // (32 // max(8, 1 << (reg.bits - 1).bit_length())))
            )
            return pb._from_words(reg, [word(i) for i in range(n_words)]).tolist()
        v = word(0) & ((1 << reg.bits) - 1)
        return v - (1 << reg.bits) if reg.signed and v >> (reg.bits - 1) else v

    def view(self, address: int, shape: tuple[int, ...], dtype) -> np.ndarray:
        """The device copy of DDR at `address` (must lie inside one buffer)."""
        for start, mem in self.ddr.items():
            if start <= address < start + len(mem):
                return np.frombuffer(
                    mem, dtype=dtype, count=int(np.prod(shape)), offset=address - start
                ).reshape(shape)
        raise AssertionError(f"kernel dereferenced {address:#x}, which is no allocated buffer")

    def write_array(self, spec: pb.KernelSpec, base: int, name: str, values) -> None:
        reg = spec.reg(name)
        for i, w in enumerate(pb._as_words(reg, values)):
            self.regs[base + reg.offset + 4 * i] = w


# --------------------------------------------------------------------------------- IP models (intref)


def kernel_args(dev: MockZynq, spec, base, skip: tuple[str, ...] = ("return",)) -> dict:
    """The kernel's argument registers as the IP sees them at ap_start."""
    return {r.name: dev.arg(spec, base, r.name) for r in spec.registers if r.kind not in skip}


# Parameter buffers of the block IPs by register name, in ATTN_PARAMS / MLP_PARAMS order (the IP's
# own view of its ports, independent of the driver's layouts).
def attn_param_regs(d: int) -> dict[str, tuple[int, ...]]:
    return {
        "ln_w": (d,), "ln_b": (d,), "qkv_w": (3 * d, d), "qkv_b": (3 * d,), "proj_w": (d, d), "proj_b": (d,)
    }


def mlp_param_regs(d: int, hd: int) -> dict[str, tuple[int, ...]]:
    return {"ln_w": (d,), "ln_b": (d,), "fc1_w": (hd, d), "fc1_b": (hd,), "fc2_w": (d, hd), "fc2_b": (d,)}


def read_params(dev: MockZynq, a: dict, names: tuple[str, ...], regs: dict) -> dict[str, QTensor]:
    """Block parameters from their buffers; ports a kernel does not have (biases in backward) read 0."""
    return {
        name: QTensor(dev.view(a[key], shape, np.int16).copy() if key in a else np.zeros(shape, np.int16), f)
        for name, (key, shape), f in zip(names, regs.items(), a["pfrac"], strict=True)
    }


def grad_views(dev: MockZynq, a: dict, names: tuple[str, ...], regs: dict) -> dict[str, np.ndarray]:
    """The int64 gradient accumulators the backward IPs add to, in place in device memory."""
    return {
        name: dev.view(a["g_" + key], shape, np.int64)
        for name, (key, shape) in zip(names, regs.items(), strict=True)
    }


def read_saved_ln(dev: MockZynq, a: dict, nb: int, nt: int, d: int) -> dict[str, object]:
    return {
        "xhat": dev.view(a["xhat"], (nb, nt, d), np.int16).copy(),
        "rsqrt": dev.view(a["rsqrt"], (nb, nt, 1), np.int32).astype(np.int64),
        "k": dev.view(a["kk"], (nb, nt, 1), np.int32).astype(np.int64),
        "frac_x": a["frac_x"],
    }


def write_fwd_outputs(dev: MockZynq, a: dict, out: QTensor, saved: dict, keys: tuple[str, ...]) -> None:
    """out, z, the LayerNorm's xhat/rsqrt/kk and the block's other saved int16 tensors (`keys`)."""
    for key, value in (("out", out.data), ("z", saved["z"].data), ("xhat", saved["ln"]["xhat"]),
                       *((key, saved[key].data) for key in keys)):
        dev.view(a[key], value.shape, np.int16)[...] = value
    nb, nt = out.data.shape[:2]
    dev.view(a["rsqrt"], (nb, nt, 1), np.int32)[...] = np.asarray(saved["ln"]["rsqrt"]).reshape(nb, nt, 1)
    dev.view(a["kk"], (nb, nt, 1), np.int32)[...] = np.asarray(saved["ln"]["k"]).reshape(nb, nt, 1)


def linear_fwd_model(dev: MockZynq, spec, base) -> int:
    a = kernel_args(dev, spec, base)
    nb, nt, din, dout = a["batch"], a["tokens"], a["din"], a["dout"]
    x = QTensor(dev.view(a["x"], (nb, nt, din), np.int16).copy(), a["frac_x"])
    params = {"weight": QTensor(dev.view(a["w"], (dout, din), np.int16).copy(), a["frac_w"])}
    if a["has_bias"]:
        params["bias"] = QTensor(dev.view(a["bias"], (dout,), np.int16).copy(), a["frac_b"])
    res = (
        QTensor(dev.view(a["residual"], (nb, nt, dout), np.int16).copy(), a["frac_res"])
        if a["has_residual"]
        else None
    )
    y, stats, _ = layers.linear_fwd(x, params, {"y": a["frac_y"]}, res)
    dev.view(a["y"], y.data.shape, np.int16)[...] = y.data
    dev.view(a["stats"], (1,), np.int64)[0] = stats["y"]
    return pb.TL_OK


def linear_bwd_model(dev: MockZynq, spec, base) -> int:
    a = kernel_args(dev, spec, base)
    nb, nt, din, dout = a["batch"], a["tokens"], a["din"], a["dout"]
    x = QTensor(dev.view(a["x"], (nb, nt, din), np.int16).copy(), 0)
    dy = QTensor(dev.view(a["dy"], (nb, nt, dout), np.int16).copy(), a["frac_dy"])
    params = {
        "weight": QTensor(dev.view(a["w"], (dout, din), np.int16).copy(), a["frac_w"]),
        "bias": QTensor(np.zeros(dout, np.int16), 0) if a["has_bias"] else None,
    }
    grads = {"weight": dev.view(a["grad_w"], (dout, din), np.int64)}
    if a["has_bias"]:
        grads["bias"] = dev.view(a["grad_b"], (dout,), np.int64)
    dx, stats, _ = layers.linear_bwd(
        dy, {"x": x}, params, grads, {"dx": a["frac_dx"]}, a["seed"], bool(a["need_dx"])
    )
    if dx is not None:
        dev.view(a["dx"], dx.data.shape, np.int16)[...] = dx.data
        dev.view(a["stats"], (1,), np.int64)[0] = stats["dx"]
    return pb.TL_OK


def mlp_fwd_model(dev: MockZynq, spec, base) -> int:
    a = kernel_args(dev, spec, base)
    nb, nt, d, hd = a["batch"], a["tokens"], a["dim"], a["hidden"]
    params = read_params(dev, a, pb.MLP_PARAMS, mlp_param_regs(d, hd))
    x = QTensor(dev.view(a["x"], (nb, nt, d), np.int16).copy(), a["frac_x"])
    out, stats, saved = blocks.mlp_block_fwd(
        x, params, dict(zip(blocks.MLP_FWD_FRACS, a["fracs"], strict=True))
    )
    write_fwd_outputs(dev, a, out, saved, ("h", "a"))
    dev.write_array(spec, base, "stats", [stats[k] for k in blocks.MLP_FWD_FRACS])
    return pb.TL_OK


def mlp_bwd_model(dev: MockZynq, spec, base) -> int:
    a = kernel_args(dev, spec, base)
    nb, nt, d, hd = a["batch"], a["tokens"], a["dim"], a["hidden"]
    regs = mlp_param_regs(d, hd)
    params = read_params(dev, a, pb.MLP_PARAMS, regs)
    grads = grad_views(dev, a, pb.MLP_PARAMS, regs)
    h = QTensor(dev.view(a["h"], (nb, nt, hd), np.int16).copy(), a["frac_h"])
    saved = {
        "ln": read_saved_ln(dev, a, nb, nt, d),
        "z": QTensor(dev.view(a["z"], (nb, nt, d), np.int16).copy(), 0),
        "h": h,
        "a": QTensor(dev.view(a["a"], (nb, nt, hd), np.int16).copy(), 0),
        "gelu": {"x": h},
    }
    dout = QTensor(dev.view(a["dout"], (nb, nt, d), np.int16).copy(), a["frac_dout"])
    fr = dict(zip(blocks.MLP_BWD_FRACS, a["fracs"], strict=True))
    dx, stats, _ = blocks.mlp_block_bwd(dout, saved, params, grads, fr, a["seed"])
    dev.view(a["dx"], dx.data.shape, np.int16)[...] = dx.data
    dev.write_array(spec, base, "stats", [stats[k] for k in blocks.MLP_BWD_FRACS])
    return pb.TL_OK


def attn_bwd_model(dev: MockZynq, spec, base) -> int:
    a = kernel_args(dev, spec, base)
    nb, nt, d, nh, keep, r = a["batch"], a["tokens"], a["dim"], a["heads"], a["keep"], a["dense_rows"]
    regs = attn_param_regs(d)
    params = read_params(dev, a, pb.ATTN_PARAMS, regs)
    grads = grad_views(dev, a, pb.ATTN_PARAMS, regs)
    conn = dev.view(a["conn"], (nb, nt - r, keep), np.int32).copy() if a["has_conn"] else None
    compact = dev.view(a["probs"], (nb, nh, nt, nt), np.int16).copy()
    saved = {
        "ln": read_saved_ln(dev, a, nb, nt, d),
        "z": QTensor(dev.view(a["z"], (nb, nt, d), np.int16).copy(), 0),
        "qkv": QTensor(dev.view(a["qkv"], (nb, nt, 3 * d), np.int16).copy(), a["frac_qkv"]),
        "ctx": QTensor(dev.view(a["ctx"], (nb, nt, d), np.int16).copy(), 0),
        "probs": dense_probs(compact, conn, r),
        "num_heads": nh,
        "conn": conn,
        "dense_rows": r,
    }
    dout = QTensor(dev.view(a["dout"], (nb, nt, d), np.int16).copy(), a["frac_dout"])
    fr = dict(zip(blocks.ATTN_BWD_FRACS, a["fracs"], strict=True))
    dx, stats, _ = blocks.attn_block_bwd(dout, saved, params, grads, fr, a["seed"])
    dev.view(a["dx"], dx.data.shape, np.int16)[...] = dx.data
    dev.write_array(spec, base, "stats", [stats[k] for k in blocks.ATTN_BWD_FRACS])
    return pb.TL_OK


def topk_model(dev: MockZynq, spec, base) -> int:
    a = kernel_args(dev, spec, base)
    nb, n, k = a["batch"], a["n"], a["k"]
    if a["connections"]:
        out = topk.topk_connections(dev.view(a["scores"], (nb, n, n), np.int32), k, bool(a["has_cls"]))
    else:
        out = topk.topk_tokens(dev.view(a["scores"], (nb, n), np.int32), k)
    dev.view(a["out"], out.shape, np.int32)[...] = out
    return pb.TL_OK


def optimizer_model(dev: MockZynq, spec, base) -> int:
    a = kernel_args(dev, spec, base, skip=("return", "output"))
    n = a["n"]
    master, m = dev.view(a["master"], (n,), np.float32), dev.view(a["m"], (n,), np.float32)
    grad = dev.view(a["grad_acc"], (n,), np.int64)
    scal = np.array(a["scal"], np.float32)
    if a["mode"] == 0:
        s = optim.AdamWScalars(*scal)
        w = optim.adamw_step(
            master, m, dev.view(a["v"], (n,), np.float32), grad, a["grad_frac"], a["batch"], s
        )
    else:
        w = optim.sgdm_step(
            master, m, grad, a["grad_frac"], a["batch"], optim.SgdmScalars(*scal[:3]), a["first"]
        )
    dev.view(a["w"], (n,), np.int16)[...] = w.data
    reg = spec.reg("frac_out")
    dev.regs[base + reg.offset] = w.frac & 0xFF  # the output scalar register
    return pb.TL_OK


def attn_fwd_model(dev: MockZynq, spec, base) -> int:
    a = kernel_args(dev, spec, base)
    nb, nt, d, nh, keep, r = a["batch"], a["tokens"], a["dim"], a["heads"], a["keep"], a["dense_rows"]
    params = read_params(dev, a, pb.ATTN_PARAMS, attn_param_regs(d))
    x = QTensor(dev.view(a["x"], (nb, nt, d), np.int16).copy(), a["frac_x"])
    conn = dev.view(a["conn"], (nb, nt - r, keep), np.int32).astype(np.int64) if a["has_conn"] else None
    fr = dict(zip(blocks.ATTN_FWD_FRACS, a["fracs"], strict=True))
    out, stats, saved = blocks.attn_block_fwd(x, params, fr, nh, conn, r)
    write_fwd_outputs(dev, a, out, saved, ("qkv", "ctx"))
    compact = compact_probs(np.asarray(saved["probs"]), None if conn is None else conn.astype(np.int32), r)
    dev.view(a["probs"], compact.shape, np.int16)[...] = compact
    dev.view(a["attn_sum"], (nb, nt, nt), np.int32)[...] = saved["attn_sum"]
    dev.write_array(spec, base, "stats", [stats[k] for k in blocks.ATTN_FWD_FRACS])
    return pb.TL_OK


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def device():
    """The mock becomes pynq's active device for one test; pynq's probe caches are restored after."""
    saved = {k: Device.__dict__[k] for k in ("_devices", "_active_device") if k in Device.__dict__}
    for k in saved:
        delattr(Device, k)
    MockZynq.enabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dev = Device.active_device
        assert isinstance(dev, MockZynq)
        yield dev
    finally:
        MockZynq.enabled = False
        for k in ("_devices", "_active_device"):
            if k in Device.__dict__:
                delattr(Device, k)
        for k, v in saved.items():
            setattr(Device, k, v)


def backend_with(device: MockZynq, models: dict, timeout_s: float = 2.0) -> pb.PynqBackend:
    ip_dict = {pb.KERNELS[name].instance: device.add_ip(name, model) for name, model in models.items()}
    kernels = pb.bind_kernels(ip_dict, None, tuple(models))  # device None: pynq's active device
    return pb.PynqBackend(kernels=kernels, device=device, timeout_s=timeout_s)


def q(rng, shape, frac) -> QTensor:
    return QTensor(rng.integers(-3000, 3000, size=shape, dtype=np.int16), frac)


# ---------------------------------------------------------------------------------------------- tests


def test_drivers_register_with_pynq_by_vlnv():
    from pynq.overlay import _ip_drivers

    for spec in pb.KERNELS.values():
        assert _ip_drivers[spec.vlnv] is pb.HlsKernel
        assert spec.vlnv == f"trilevel.org:trilevel:{spec.name}:1.0"


def test_linear_matches_reference_bit_for_bit(device):
    rng = np.random.default_rng(0)
    acc = backend_with(device, {"linear_fwd": linear_fwd_model, "linear_bwd": linear_bwd_model})
    ref = ReferenceBackend()
    x, params = q(rng, (2, 5, 24), 10), {"weight": q(rng, (16, 24), 14), "bias": q(rng, (16,), 12)}
    residual = q(rng, (2, 5, 16), 9)
    for res in (None, residual):
        y, stats, saved = acc.linear_fwd(x, params, {"y": 8}, res)
        y_ref, stats_ref, _ = ref.linear_fwd(x, params, {"y": 8}, res)
        np.testing.assert_array_equal(y.data, y_ref.data)
        assert y.frac == y_ref.frac and stats == stats_ref
    dy = q(rng, (2, 5, 16), 11)
    grads = {"weight": rng.integers(-9, 9, (16, 24)).astype(np.int64), "bias": np.ones(16, np.int64)}
    grads_ref = {k: v.copy() for k, v in grads.items()}
    for _ in range(2):  # accumulators ADD across calls, through the DDR copies
        dx, stats, gf = acc.linear_bwd(dy, saved, params, grads, {"dx": 9}, seed=0xDEADBEEF)
        dx_ref, stats_ref, gf_ref = ref.linear_bwd(dy, saved, params, grads_ref, {"dx": 9}, 0xDEADBEEF)
        np.testing.assert_array_equal(dx.data, dx_ref.data)
        assert stats == stats_ref and gf == gf_ref
    for k in grads:
        np.testing.assert_array_equal(grads[k], grads_ref[k])
    dx, stats, _ = acc.linear_bwd(dy, saved, params, grads, {"dx": 9}, seed=1, need_dx=False)
    assert dx is None and stats == {}


def test_mlp_matches_reference_including_axilite_arrays(device):
    rng = np.random.default_rng(1)
    acc = backend_with(device, {"mlp_fwd": mlp_fwd_model, "mlp_bwd": mlp_bwd_model})
    d, hd = 16, 32
    params = {
        "norm2.weight": q(rng, (d,), 12),
        "norm2.bias": q(rng, (d,), 12),
        "mlp.fc1.weight": q(rng, (hd, d), 14),
        "mlp.fc1.bias": q(rng, (hd,), 12),
        "mlp.fc2.weight": q(rng, (d, hd), 14),
        "mlp.fc2.bias": q(rng, (d,), 12),
    }
    x = q(rng, (2, 3, d), 10)
    fracs = {"ln": 11, "h": 10, "a": 10, "out": 9}
    out, stats, saved = acc.mlp_block_fwd(x, params, fracs)
    out_ref, stats_ref, saved_ref = ReferenceBackend().mlp_block_fwd(x, params, fracs)
    np.testing.assert_array_equal(out.data, out_ref.data)
    assert stats == stats_ref
    np.testing.assert_array_equal(saved["h"].data, saved_ref["h"].data)
    np.testing.assert_array_equal(
        saved["ln"]["rsqrt"].reshape(-1), np.asarray(saved_ref["ln"]["rsqrt"]).reshape(-1)
    )


def test_register_programming_and_sync_sequence(device):
    rng = np.random.default_rng(2)
    acc = backend_with(device, {"linear_fwd": linear_fwd_model})
    spec = pb.KERNELS["linear_fwd"]
    base = spec.base_address
    x, w = q(rng, (1, 4, 8), -3), q(rng, (8, 8), 14)
    device.log.clear()
    acc.linear_fwd(x, {"weight": w}, {"y": 7})
    log = device.log
    writes = [(e[1] - base, e[2]) for e in log if e[0] == "write"]
    start = writes.index((pb.AP_CTRL, pb.AP_START))
    assert start == len(writes) - 1, "ap_start must be the last register write"
    regs = dict(writes[:start])
    addresses = {e[1]: e[2] for e in log if e[0] == "allocate"}
    x_addr = regs[spec.reg("x").offset] | regs[spec.reg("x").offset + 4] << 32
    assert x_addr in addresses and x_addr >> 32 == 8  # the high word reaches the register
    assert regs[spec.reg("bias").offset] == 0 and regs[spec.reg("has_bias").offset] == 0
    assert regs[spec.reg("frac_x").offset] == 0xFD  # -3 as an 8-bit two's complement register
    assert (regs[spec.reg("batch").offset], regs[spec.reg("din").offset], regs[spec.reg("dout").offset]) == (
        1,
        8,
        8,
    )
    i_start = log.index(("write", base, pb.AP_START))
    flushed = {e[1] for e in log[:i_start] if e[0] == "flush"}
    assert x_addr in flushed and len(flushed) == 2  # x and w, before the start
    invalidated = [e[1] for e in log[i_start:] if e[0] == "invalidate"]
    assert len(invalidated) == 2  # y and stats, after ap_done
    assert ("read", base + pb.AP_CTRL) in log[i_start:]
    assert ("read", base + 0x10) in log[i_start:]  # ap_return (kernel status)


def test_buffers_are_reused_while_shapes_stay(device):
    rng = np.random.default_rng(3)
    acc = backend_with(device, {"linear_fwd": linear_fwd_model})
    x, w = q(rng, (1, 4, 8), 8), q(rng, (8, 8), 14)
    acc.linear_fwd(x, {"weight": w}, {"y": 7})
    n_alloc = sum(e[0] == "allocate" for e in device.log)
    acc.linear_fwd(x, {"weight": w}, {"y": 7})
    assert sum(e[0] == "allocate" for e in device.log) == n_alloc


def test_timeout_names_the_kernel_and_its_status_registers(device):
    acc = backend_with(device, {"linear_fwd": None}, timeout_s=0.05)  # an IP that never finishes
    rng = np.random.default_rng(4)
    with pytest.raises(
        pb.KernelTimeoutError,
        match=r"kernel linear_fwd \(linear_fwd_0 at 0xa0000000\).*"
        r"ctrl=0x1 \(start\) gie=0x0 ier=0x0 isr=0x0",
    ):
        acc.linear_fwd(q(rng, (1, 2, 4), 8), {"weight": q(rng, (4, 4), 8)}, {"y": 8})
    with pytest.raises(pb.PynqBackendError, match="linear_fwd: not idle before start"):
        acc.linear_fwd(q(rng, (1, 2, 4), 8), {"weight": q(rng, (4, 4), 8)}, {"y": 8})


def test_kernel_status_codes_become_errors(device):
    acc = backend_with(
        device, {"linear_fwd": lambda *a: pb.TL_BAD_DIMS, "linear_bwd": lambda *a: pb.TL_ACC_RANGE}
    )
    rng = np.random.default_rng(5)
    x, w = q(rng, (1, 2, 4), 8), q(rng, (4, 4), 8)
    with pytest.raises(pb.PynqBackendError, match="linear_fwd: dimensions exceed"):
        acc.linear_fwd(x, {"weight": w}, {"y": 8})
    with pytest.raises(OverflowError, match="48 bits"):
        acc.linear_bwd(x, {"x": x}, {"weight": w}, {"weight": np.zeros((4, 4), np.int64)}, {"dx": 8}, 0)


def test_missing_ip_and_wrong_address_are_named(device):
    ip_dict = {"linear_fwd_0": device.add_ip("linear_fwd", linear_fwd_model)}
    with pytest.raises(
        pb.MissingIPError,
        match=r"no IP linear_bwd_0 \(trilevel.org:trilevel:linear_bwd:1.0\).*present: linear_fwd_0",
    ):
        pb.bind_kernels(ip_dict, device)
    acc = pb.PynqBackend(kernels=pb.bind_kernels(ip_dict, device, ("linear_fwd",)), device=device)
    with pytest.raises(pb.MissingIPError, match="mlp_fwd"):
        acc.mlp_block_fwd(
            QTensor(np.zeros((1, 1, 4), np.int16), 8),
            {"mlp.fc1.weight": QTensor(np.zeros((8, 4), np.int16), 8)},
            {"ln": 1, "h": 1, "a": 1, "out": 1},
        )
    moved = {"linear_fwd_0": {**ip_dict["linear_fwd_0"], "phys_addr": 0xB000_0000}}
    with pytest.raises(pb.PynqBackendError, match="0xb0000000, the driver expects 0xa0000000"):
        pb.bind_kernels(moved, device, ("linear_fwd",))


def test_hwh_register_map_mismatch_is_refused(device):
    description = device.add_ip("linear_fwd", linear_fwd_model)
    spec = pb.KERNELS["linear_fwd"]
    # As pynq parses a Vitis HLS .hwh: 64-bit registers as <name>_1 / <name>_2 words.
    hwh = {}
    for r in spec.registers:
        if r.bits > 32:
            hwh.update(
                {f"{r.name}_1": {"address_offset": r.offset}, f"{r.name}_2": {"address_offset": r.offset + 4}}
            )
        else:
            hwh[r.name] = {"address_offset": r.offset}
    pb.HlsKernel({**description, "registers": hwh})  # agrees: binds
    hwh["frac_y"] = {"address_offset": 0x200}
    hwh["w_1"] = {"address_offset": 0x28}
    with pytest.raises(
        pb.PynqBackendError, match="w at 0x28, driver expects 0x24; frac_y at 0x200, driver expects 0xa0"
    ):
        pb.HlsKernel({**description, "registers": hwh, "fullpath": "linear_fwd_0"})


def test_out_of_range_register_values_are_refused(device):
    acc = backend_with(device, {"linear_fwd": linear_fwd_model})
    x = QTensor(np.zeros((1, 70000, 1), np.int16), 8)  # 70000 tokens do not fit the 16-bit register
    with pytest.raises(
        ValueError, match="linear_fwd: tokens=70000 does not fit the 16-bit unsigned register"
    ):
        acc.linear_fwd(x, {"weight": QTensor(np.zeros((4, 1), np.int16), 8)}, {"y": 8})
    with pytest.raises(ValueError, match="linear_fwd: frac_x=-200 does not fit the 8-bit signed register"):
        acc.kernels["linear_fwd"].program(
            {**{r.name: 0 for r in pb.KERNELS["linear_fwd"].registers if r.kind != "return"}, "frac_x": -200}
        )


def test_missing_bitstream_is_a_clear_error(tmp_path):
    with pytest.raises(pb.PynqBackendError, match="bitstream .*nope.bit not found"):
        pb.PynqBackend(bitfile=tmp_path / "nope.bit")


def test_topk_matches_reference(device):
    rng = np.random.default_rng(6)
    acc, ref = backend_with(device, {"topk_prune": topk_model}), ReferenceBackend()
    scores = rng.integers(0, 50, size=(3, 16)).astype(np.int64)  # many ties: the tie rule matters
    np.testing.assert_array_equal(acc.topk_tokens(scores, 7), ref.topk_tokens(scores, 7))
    attn = rng.integers(0, 50, size=(2, 9, 9)).astype(np.int64)
    for has_cls in (True, False):
        np.testing.assert_array_equal(
            acc.topk_connections(attn, 4, has_cls), ref.topk_connections(attn, 4, has_cls)
        )


def test_optimizer_matches_reference_through_float_registers(device):
    """AdamW constants travel as float32 bit patterns in an AXI-Lite array; the new weights' frac
    comes back through an output scalar register; master/m/v are updated in place."""
    rng = np.random.default_rng(7)
    acc, ref = backend_with(device, {"optimizer_step": optimizer_model}), ReferenceBackend()
    shape = (6, 5)
    state = [rng.normal(size=shape).astype(np.float32) * 0.1 for _ in range(3)]
    state[2] = np.abs(state[2]) * np.float32(0.01)  # second moments are non-negative
    grad = rng.integers(-(2**20), 2**20, size=shape).astype(np.int64)
    s = optim.AdamWScalars.at(3, lr=1e-3)
    ours, theirs = [a.copy() for a in state], [a.copy() for a in state]
    w = acc.adamw_step(*ours, grad, 18, 4, s)
    w_ref = ref.adamw_step(*theirs, grad, 18, 4, s)
    np.testing.assert_array_equal(w.data, w_ref.data)
    assert w.frac == w_ref.frac
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)
    sg = optim.SgdmScalars.at(0.01, 0.9, 1e-4)
    w = acc.sgdm_step(ours[0], ours[1], grad, 18, 4, sg, first=True)
    w_ref = ref.sgdm_step(theirs[0], theirs[1], grad, 18, 4, sg, first=True)
    np.testing.assert_array_equal(w.data, w_ref.data)
    np.testing.assert_array_equal(ours[1], theirs[1])


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "connections"])
def test_attention_matches_reference(device, sparse):
    rng = np.random.default_rng(8)
    acc, ref = (
        backend_with(device, {"attn_fwd": attn_fwd_model, "attn_bwd": attn_bwd_model}),
        ReferenceBackend(),
    )
    d, nh, nb, nt = 32, 2, 2, 6  # head_dim 16: a power of 4, as the HLS kernel requires
    params = {
        "norm1.weight": q(rng, (d,), 12),
        "norm1.bias": q(rng, (d,), 12),
        "attn.qkv.weight": q(rng, (3 * d, d), 15),
        "attn.qkv.bias": q(rng, (3 * d,), 12),
        "attn.proj.weight": q(rng, (d, d), 15),
        "attn.proj.bias": q(rng, (d,), 12),
    }
    x = q(rng, (nb, nt, d), 10)
    fracs = {"ln": 11, "qkv": 10, "s": 8, "ctx": 10, "out": 9}
    conn = np.stack([np.sort(rng.choice(nt, 3, replace=False)) for _ in range(nb * (nt - 1))]).reshape(
        nb, nt - 1, 3
    )
    conn = conn if sparse else None
    out, stats, saved = acc.attn_block_fwd(x, params, fracs, nh, conn)
    out_ref, stats_ref, saved_ref = ref.attn_block_fwd(x, params, fracs, nh, conn)
    np.testing.assert_array_equal(out.data, out_ref.data)
    assert stats == stats_ref
    np.testing.assert_array_equal(saved["attn_sum"], saved_ref["attn_sum"])
    np.testing.assert_array_equal(saved["probs"], np.asarray(saved_ref["probs"]))
    dout = q(rng, (nb, nt, d), 11)
    grads = {name: rng.integers(-5, 5, p.data.shape).astype(np.int64) for name, p in params.items()}
    grads_ref = {k: v.copy() for k, v in grads.items()}
    bfracs = dict.fromkeys(blocks.ATTN_BWD_FRACS, 10)
    dx, stats, gf = acc.attn_block_bwd(dout, saved, params, grads, bfracs, 99)
    dx_ref, stats_ref, gf_ref = ref.attn_block_bwd(dout, saved_ref, params, grads_ref, bfracs, 99)
    np.testing.assert_array_equal(dx.data, dx_ref.data)
    assert stats == stats_ref and gf == gf_ref
    for name in grads:
        np.testing.assert_array_equal(grads[name], grads_ref[name])
