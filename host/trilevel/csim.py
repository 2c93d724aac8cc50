"""ctypes wrapper of the HLS C-simulation library (build/csim/libtrilevel_csim.so, `make csim`).

Every function has the same Python signature and returns the same values, bit for bit, as its
counterpart in `trilevel.intref` (the integer reference), so an accelerator backend can swap one for
the other. The heavy lifting runs in the C++ kernels of hls/src/ through their `extern "C"` wrappers.

    from trilevel import csim
    y, stats, saved = csim.linear_fwd(x, {"weight": w, "bias": b}, {"y": 11})

`CSim(path)` loads a specific build (e.g. the ap_int flavor); the module-level functions use the
default library, found at $TRILEVEL_CSIM_LIB or build/csim/libtrilevel_csim.so.
"""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from trilevel.accel.kernel_args import (
    ATTN_PARAMS,
    MLP_PARAMS,
    Layout,
    adamw_scalars,
    attn_fwd_outputs,
    attn_fwd_saved,
    attn_param_shapes,
    check_heads,
    check_optimizer_args,
    conn_lists,
    mlp_fwd_outputs,
    mlp_fwd_saved,
    mlp_param_shapes,
    named_stats,
    saved_attn_layout,
    saved_ln_inputs,
    scal_array,
    sgdm_scalars,
    topk_args,
)
from trilevel.intref import blocks, fixed, layers
from trilevel.intref.fixed import QTensor
from trilevel.intref.optim import AdamWScalars, SgdmScalars

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIB = ROOT / "build" / "csim" / "libtrilevel_csim.so"
ABI_VERSION = 1

_i16p = np.ctypeslib.ndpointer(np.int16, flags="C_CONTIGUOUS")
_i32p = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
_i64p = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
_u32p = np.ctypeslib.ndpointer(np.uint32, flags="C_CONTIGUOUS")
_f32p = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
_int, _i64, _u32, _vp = ctypes.c_int, ctypes.c_int64, ctypes.c_uint32, ctypes.c_void_p
_RNE_SR = {"rne": 0, "sr": 1}

# name -> (restype, argtypes) of every exported function.
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "tl_abi_version": (_int, []),
    "tl_fast_csim": (_int, []),
    "tl_hash32_array": (None, [_u32, _u32p, _u32p, _i64]),
    "tl_requantize_array": (None, [_i64p, _i64, _int, _int, _u32, _u32p, _i16p]),
    "tl_topk_rows": (None, [_i32p, _int, _int, _int, _i32p]),
    "tl_softmax_fwd_rows": (None, [_i16p, _int, _int, _int, _i16p]),
    "tl_softmax_bwd_rows": (_i64, [_i16p, _i16p, _int, _int, _int, _int, _u32, _u32, _i16p]),
    "tl_gemm_nt": (_i64, [_i16p, _i16p, _vp, _int, _int, _int, _int, _int, _u32, _i16p]),
    "tl_linear_fwd": (_int, [_i16p, _i16p, _vp, _vp, _i16p, _i64p, *[_int] * 9]),
    "tl_linear_bwd": (_int, [_i16p, _i16p, _i16p, _vp, _i64p, _vp, _i64p, *[_int] * 7, _u32]),
    "tl_mlp_fwd": (_int, [_vp, _vp, _vp, _i64p, _i32p, _i32p]),
    "tl_mlp_bwd": (_int, [_vp, _vp, _vp, _i16p, _i64p, _i32p, _i32p, _u32]),
    "tl_attn_fwd": (_int, [_vp, _vp, _vp, _vp, _i32p, _i64p, _i32p, _i32p]),
    "tl_attn_bwd": (_int, [_vp, _vp, _vp, _vp, _i16p, _i64p, _i32p, _i32p, _u32]),
    "tl_layernorm_fwd": (_int, [_i16p, _i16p, _i16p, _i16p, _i16p, _i32p, _i32p, _i64p, _int, _int, _i32p]),
    "tl_layernorm_bwd": (
        _int,
        [_i16p, _i16p, _i32p, _i32p, _i16p, _vp, _i64p, _i64p, _i16p, _i64p, _int, _int, _i32p, _u32],
    ),
    "tl_topk_prune": (_int, [_i32p, _i32p, _int, _int, _int, _int, _int]),
    "tl_optimizer_step": (
        _int,
        [_f32p, _f32p, _vp, _i64p, _i16p, ctypes.POINTER(_int), _i64, _int, _int, _int, _f32p, _int],
    ),
}
# Kernel status codes (hls/include/trilevel_kernels.h).
_STATUS = {
    1: "dimensions exceed the kernel's static maxima",
    2: "accumulator exceeds 48 bits; lower the gradient fracs",
    3: "a master weight became NaN or inf",
}


class CSimError(RuntimeError):
    pass


def _int16(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.int16:
        raise TypeError(f"{name} must be int16, got {a.dtype}")
    return np.ascontiguousarray(a)


def _u32_index(index: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if index is None:
        return fixed.flat_index(shape).astype(np.uint32)
    idx = np.asarray(index)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"index must be an integer array, got dtype {idx.dtype}")
    if idx.dtype.kind == "i" and idx.size and idx.min() < 0:
        raise ValueError("index must be non-negative")
    return np.ascontiguousarray(np.broadcast_to(idx, shape).astype(np.uint64) & 0xFFFFFFFF, dtype=np.uint32)


class _Buf:
    """An optional array argument of a c_void_p parameter; keeps the array for `CSim.record`."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self._as_parameter_ = ctypes.c_void_p(array.ctypes.data)


def _ptr(a: np.ndarray | None) -> _Buf | None:
    """An optional array argument (None -> NULL)."""
    return None if a is None else _Buf(a)


def _qdata(name: str, t: QTensor | None, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
    if t is None:
        return None
    if not isinstance(t, QTensor):
        raise TypeError(f"{name}: expected a QTensor, got {type(t).__name__}")
    if shape is not None and t.data.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {t.data.shape}")
    return np.ascontiguousarray(t.data)


def _x3(name: str, t: QTensor, dim: int) -> np.ndarray:
    if not isinstance(t, QTensor):
        raise TypeError(f"{name}: expected a QTensor, got {type(t).__name__}")
    if t.data.ndim != 3 or t.data.shape[-1] != dim:
        raise ValueError(f"{name}: expected [B, T, {dim}], got {t.data.shape}")
    return np.ascontiguousarray(t.data)


def _grad(grads: dict, name: str, shape: tuple[int, ...]) -> np.ndarray:
    acc = grads[name]
    if not isinstance(acc, np.ndarray) or acc.dtype != np.int64 or acc.shape != shape:
        raise ValueError(
            f"grads[{name!r}]: need int64 {shape}, got {getattr(acc, 'dtype', type(acc))} "
            f"{getattr(acc, 'shape', '')}"
        )
    if not acc.flags.c_contiguous or not acc.flags.writeable:
        raise ValueError(f"grads[{name!r}]: must be a writeable C-contiguous array (updated in place)")
    return acc


def _ptr_array(arrays: list[np.ndarray | None]) -> ctypes.Array:
    """A C array of pointers (NULL for None); keeps the arrays alive (and visible to `CSim.record`)."""
    table = (ctypes.c_void_p * len(arrays))(*[None if a is None else a.ctypes.data for a in arrays])
    table.arrays = arrays
    return table


class _Recorder:
    """Stands in for the CDLL while `CSim.record` runs: every call is appended to `calls` as
    (name, [(kind, value before, value after)]) with kinds "int", "uint", "long", "array", "null",
    "table" (a pointer array: list of arrays/None) and "intref" (a by-reference int)."""

    _SCALARS = {_int: "int", _u32: "uint", _i64: "long"}

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self.calls: list[tuple[str, list[tuple[str, object, object]]]] = []

    def __getattr__(self, name: str):
        fn = getattr(self._lib, name)
        argtypes = _SIGNATURES[name][1] if name in _SIGNATURES else []

        def call(*args: object) -> object:
            def snapshot(a: object, argtype: object) -> tuple[str, object]:
                if isinstance(a, np.ndarray):
                    return "array", a.copy()
                if isinstance(a, _Buf):
                    return "array", a.array.copy()
                if a is None:
                    return "null", None
                if isinstance(a, ctypes.Array) and hasattr(a, "arrays"):
                    return "table", [None if t is None else t.copy() for t in a.arrays]
                if hasattr(a, "_obj"):  # ctypes.byref
                    return "intref", int(a._obj.value)
                return self._SCALARS.get(argtype, "int"), int(a)

            before = [snapshot(a, t) for a, t in zip(args, argtypes, strict=False)]
            result = fn(*args)
            after = [snapshot(a, t)[1] for a, t in zip(args, argtypes, strict=False)]
            self.calls.append((name, [(kind, b, a) for (kind, b), a in zip(before, after, strict=True)]))
            return result

        return call


def _ints(values: list[int]) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=np.int32)


def _alloc(layout: Layout) -> dict[str, np.ndarray]:
    """Zeroed output arrays of a kernel_args layout."""
    return {name: np.zeros(shape, dtype) for name, (shape, dtype) in layout.items()}


def _params(
    kernel: str, params: dict[str, QTensor], names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...]
) -> list[QTensor]:
    out = []
    for name, shape in zip(names, shapes, strict=False):
        if params.get(name) is None:
            raise KeyError(f"{kernel}: missing parameter {name!r}")
        _qdata(f"{kernel}: {name}", params[name], shape)
        out.append(params[name])
    return out


def _grads(
    kernel: str, grads: dict[str, np.ndarray], names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...]
) -> list[np.ndarray]:
    return [_grad(grads, name, shape) for name, shape in zip(names, shapes, strict=False)]


def _missing(path: Path, name: str):
    def fail(*_args: object) -> None:
        raise CSimError(f"{path} lacks {name}: rebuild it with `make csim`")

    return fail


def _check(kernel: str, status: int) -> None:
    if status == 2:
        raise OverflowError(f"{kernel}: {_STATUS[2]}")
    if status == 3:
        raise ValueError(f"{kernel}: {_STATUS[3]}")
    if status:
        raise CSimError(f"{kernel}: {_STATUS.get(status, f'status {status}')}")


class CSim:
    """One loaded C-sim library; methods mirror trilevel.intref."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        path = Path(path or os.environ.get("TRILEVEL_CSIM_LIB") or DEFAULT_LIB)
        if not path.is_file():
            raise CSimError(f"C-sim library {path} not found: run `make csim` (python hls/build_csim.py)")
        self.path = path
        self._lib = ctypes.CDLL(str(path))
        self.missing: list[str] = []  # kernels left out of a partial build (build_csim.py --sources)
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                fn = getattr(self._lib, name)
            except AttributeError:
                self.missing.append(name)
                setattr(self._lib, name, _missing(path, name))
                continue
            fn.restype, fn.argtypes = restype, argtypes
        if self._lib.tl_abi_version() != ABI_VERSION:
            raise CSimError(
                f"{path} has ABI {self._lib.tl_abi_version()}, expected {ABI_VERSION}: run `make csim`"
            )

    @contextlib.contextmanager
    def record(self):
        """Record every library call made inside the block (arguments before and after): the golden
        vectors of the Vitis csim testbench (hls/gen_vectors.py). Yields the list of calls."""
        lib, recorder = self._lib, _Recorder(self._lib)
        self._lib = recorder
        try:
            yield recorder.calls
        finally:
            self._lib = lib

    @property
    def fast(self) -> bool:
        """True for the native-integer build (-DTRILEVEL_FAST_CSIM), False for the ap_int build."""
        return bool(self._lib.tl_fast_csim())

    # -- contract primitives (docs/numerics.md section 1) ------------------------------------------
    def hash32(self, seed: int, index: np.ndarray | int) -> np.ndarray:
        if not 0 <= int(seed) <= 0xFFFFFFFF:
            raise ValueError(f"seed must be a uint32, got {seed}")
        idx = _u32_index(np.asarray(index), np.shape(index))
        out = np.empty(idx.shape, np.uint32)
        self._lib.tl_hash32_array(int(seed), idx.reshape(-1), out.reshape(-1), idx.size)
        return out

    def requantize(
        self, acc: np.ndarray, shift: int, mode: str, seed: int = 0, index: np.ndarray | None = None
    ) -> np.ndarray:
        acc = np.asarray(acc)
        if acc.dtype.kind not in "iu":
            raise TypeError(f"acc must be an integer array, got dtype {acc.dtype}")
        if mode not in _RNE_SR:
            raise ValueError(f"mode must be 'rne' or 'sr', got {mode!r}")
        if int(shift) > fixed.MAX_SHIFT:
            raise ValueError(f"shift {shift} > {fixed.MAX_SHIFT}: fracs out of range")
        acc64 = np.ascontiguousarray(acc, dtype=np.int64)
        idx = _u32_index(index, acc.shape)
        out = np.empty(acc.shape, np.int16)
        self._lib.tl_requantize_array(
            acc64.reshape(-1),
            acc64.size,
            int(shift),
            _RNE_SR[mode],
            int(seed),
            idx.reshape(-1),
            out.reshape(-1),
        )
        return out

    def topk_select(self, scores: np.ndarray, k: int) -> np.ndarray:
        """Top-k over the last axis of integer scores through topk_unit (ascending indices, int64)."""
        s = np.asarray(scores)
        if s.ndim < 1 or s.dtype.kind not in "iu":
            raise TypeError(f"topk_select: need integer scores with >= 1 dimension, got {s.dtype} {s.shape}")
        n = s.shape[-1]
        if not 1 <= k <= n:
            raise ValueError(f"topk_select: k must be in [1, {n}], got {k}")
        if n > 256:
            raise ValueError(f"topk_select: n = {n} exceeds the unit's maximum 256")
        if s.size and (s.min() < -(2**31) or s.max() >= 2**31):
            raise ValueError("topk_select: scores must fit int32")
        flat = np.ascontiguousarray(s.reshape(-1, n), dtype=np.int32)
        out = np.empty((flat.shape[0], k), np.int32)
        self._lib.tl_topk_rows(flat, flat.shape[0], n, int(k), out)
        return out.reshape(*s.shape[:-1], k).astype(np.int64)

    def softmax_fwd(self, s: np.ndarray, frac_s: int) -> np.ndarray:
        s = _int16("softmax_fwd: scores", s)
        if isinstance(frac_s, bool) or not 0 <= int(frac_s) <= 15:
            raise ValueError(f"softmax_fwd: frac_s must be in [0, 15], got {frac_s}")
        if s.ndim < 1 or not 1 <= s.shape[-1] <= 256:
            raise ValueError(f"softmax_fwd: last axis must hold 1..256 scores, got shape {s.shape}")
        n = s.shape[-1]
        flat = s.reshape(-1, n)
        out = np.empty_like(flat)
        self._lib.tl_softmax_fwd_rows(flat, flat.shape[0], n, int(frac_s), out)
        return out.reshape(s.shape)

    def softmax_bwd(
        self, P: np.ndarray, dP: np.ndarray, frac_dp: int, frac_ds: int, seed: int, index_base: int = 0
    ) -> np.ndarray:
        """§1.6 over the last axis; SR index = index_base + flat row-major position (intref's default)."""
        P, dP = _int16("softmax_bwd: P", P), _int16("softmax_bwd: dP", dP)
        if P.shape != dP.shape:
            raise ValueError(f"softmax_bwd: shapes differ {P.shape} vs {dP.shape}")
        if P.ndim < 1 or not 1 <= P.shape[-1] <= 256:
            raise ValueError(f"softmax_bwd: last axis must hold 1..256 entries, got shape {P.shape}")
        fixed.check_frac(frac_dp), fixed.check_frac(frac_ds)
        n = P.shape[-1]
        out = np.empty(P.shape, np.int16)
        self._lib.tl_softmax_bwd_rows(
            P.reshape(-1, n),
            dP.reshape(-1, n),
            P.size // n,
            n,
            int(frac_dp),
            int(frac_ds),
            int(seed),
            int(index_base),
            out.reshape(-1, n),
        )
        return out

    def gemm_nt(
        self, a: np.ndarray, w: np.ndarray, bias: np.ndarray | None, shift: int, mode: str, seed: int = 0
    ) -> tuple[np.ndarray, int]:
        """requantize(a @ w.T + bias) through gemm_tile; returns (Y int16 [m, n], max |acc + bias|)."""
        a, w = _int16("gemm_nt: a", a), _int16("gemm_nt: w", w)
        if a.ndim != 2 or w.ndim != 2 or a.shape[1] != w.shape[1]:
            raise ValueError(f"gemm_nt: need a [m, k] and w [n, k], got {a.shape} and {w.shape}")
        if not 1 <= a.shape[1] <= 1536:
            raise ValueError(f"gemm_nt: reduction length {a.shape[1]} outside 1..1536")
        m, n = a.shape[0], w.shape[0]
        b = None if bias is None else np.ascontiguousarray(bias, dtype=np.int64)
        if b is not None and b.shape != (n,):
            raise ValueError(f"gemm_nt: bias must have shape ({n},), got {b.shape}")
        y = np.empty((m, n), np.int16)
        peak = self._lib.tl_gemm_nt(
            a,
            w,
            None if b is None else b.ctypes.data,
            m,
            n,
            a.shape[1],
            int(shift),
            _RNE_SR[mode],
            int(seed),
            y,
        )
        return y, int(peak)

    # -- layer kernels (trilevel.intref.layers) ----------------------------------------------------
    def linear_fwd(
        self, x: QTensor, params: dict[str, QTensor], fracs: dict[str, int], residual: QTensor | None = None
    ) -> tuple[QTensor, dict[str, int], dict[str, object]]:
        """As trilevel.intref.layers.linear_fwd: y = x W^T + b (+ residual), RNE to fracs["y"]."""
        f = layers.need_fracs(fracs, layers.LINEAR_FWD_FRACS, "linear_fwd")
        w = params["weight"]
        dout, din = _qdata("linear_fwd: weight", w).shape
        xd = _x3("linear_fwd: x", x, din)
        nb, nt = xd.shape[:2]
        bias = params.get("bias")
        bd = _qdata("linear_fwd: bias", bias, (dout,))
        rd = _qdata("linear_fwd: residual", residual, (nb, nt, dout))
        y = np.empty((nb, nt, dout), np.int16)
        stats = np.zeros(1, np.int64)
        _check(
            "linear_fwd",
            self._lib.tl_linear_fwd(
                xd,
                w.data,
                _ptr(bd),
                _ptr(rd),
                y,
                stats,
                nb,
                nt,
                din,
                dout,
                x.frac,
                w.frac,
                bias.frac if bias is not None else 0,
                residual.frac if residual is not None else 0,
                f["y"],
            ),
        )
        return QTensor(y, f["y"]), {"y": int(stats[0])}, {"x": x}

    def linear_bwd(
        self,
        dy: QTensor,
        saved: dict[str, object],
        params: dict[str, QTensor],
        grads: dict[str, np.ndarray],
        fracs: dict[str, int],
        seed: int,
        need_dx: bool = True,
    ) -> tuple[QTensor | None, dict[str, int], dict[str, int]]:
        """As trilevel.intref.layers.linear_bwd: dX = dY W (SR), ADDS dY^T X / sum dY to grads."""
        x: QTensor = saved["x"]  # type: ignore[assignment]
        w = params["weight"]
        dout, din = _qdata("linear_bwd: weight", w).shape
        dyd = _x3("linear_bwd: dy", dy, dout)
        xd = _x3("linear_bwd: x", x, din)
        if xd.shape[:2] != dyd.shape[:2]:
            raise ValueError(f"linear_bwd: x {xd.shape} and dy {dyd.shape} differ in [B, T]")
        has_bias = params.get("bias") is not None
        gw = _grad(grads, "weight", (dout, din))
        gb = _grad(grads, "bias", (dout,)) if has_bias else None
        frac_dx = layers.need_fracs(fracs, layers.LINEAR_BWD_FRACS, "linear_bwd")["dx"] if need_dx else 0
        dx = np.empty(xd.shape, np.int16) if need_dx else None
        stats = np.zeros(1, np.int64)
        _check(
            "linear_bwd",
            self._lib.tl_linear_bwd(
                dyd,
                xd,
                w.data,
                _ptr(dx),
                gw,
                _ptr(gb),
                stats,
                xd.shape[0],
                xd.shape[1],
                din,
                dout,
                dy.frac,
                w.frac,
                frac_dx,
                int(seed),
            ),
        )
        grad_fracs = {"weight": dy.frac + x.frac}
        if has_bias:
            grad_fracs["bias"] = dy.frac
        if not need_dx:
            return None, {}, grad_fracs
        return QTensor(dx, frac_dx), {"dx": int(stats[0])}, grad_fracs

    def layernorm_fwd(
        self, x: QTensor, params: dict[str, QTensor], fracs: dict[str, int]
    ) -> tuple[QTensor, dict[str, int], dict[str, object]]:
        """As trilevel.intref.layers.layernorm_fwd (params "weight", "bias"; RNE to fracs["y"])."""
        f = layers.need_fracs(fracs, layers.LAYERNORM_FWD_FRACS, "layernorm_fwd")
        dim = _qdata("layernorm_fwd: weight", params["weight"]).shape[0]
        gamma, beta = _params("layernorm_fwd", params, ("weight", "bias"), ((dim,), (dim,)))
        xd = _x3("layernorm_fwd: x", x, dim)
        nb, nt = xd.shape[:2]
        y, xhat = np.empty_like(xd), np.empty_like(xd)
        rsqrt, k = np.empty((nb, nt, 1), np.int32), np.empty((nb, nt, 1), np.int32)
        stats = np.zeros(1, np.int64)
        _check(
            "layernorm_fwd",
            self._lib.tl_layernorm_fwd(
                xd,
                np.ascontiguousarray(gamma.data),
                np.ascontiguousarray(beta.data),
                y,
                xhat,
                rsqrt,
                k,
                stats,
                nb * nt,
                dim,
                _ints([x.frac, gamma.frac, beta.frac, f["y"]]),
            ),
        )
        saved = {"xhat": xhat, "rsqrt": rsqrt.astype(np.int64), "k": k.astype(np.int64), "frac_x": x.frac}
        return QTensor(y, f["y"]), {"y": int(stats[0])}, saved

    def layernorm_bwd(
        self,
        dy: QTensor,
        saved: dict[str, object],
        params: dict[str, QTensor],
        grads: dict[str, np.ndarray],
        fracs: dict[str, int],
        seed: int,
        residual: QTensor | None = None,
    ) -> tuple[QTensor, dict[str, int], dict[str, int]]:
        """As trilevel.intref.layers.layernorm_bwd; ADDS to grads["weight"], grads["bias"]."""
        f = layers.need_fracs(fracs, layers.LAYERNORM_BWD_FRACS, "layernorm_bwd")
        dim = _qdata("layernorm_bwd: weight", params["weight"]).shape[0]
        gamma = params["weight"]
        dyd = _x3("layernorm_bwd: dy", dy, dim)
        nb, nt = dyd.shape[:2]
        gg, gb = _grads("layernorm_bwd", grads, ("weight", "bias"), ((dim,), (dim,)))
        rd = _qdata("layernorm_bwd: residual", residual, dyd.shape)
        rs = [np.ascontiguousarray(saved[key], dtype=np.int32).reshape(nb * nt) for key in ("rsqrt", "k")]
        dx = np.empty_like(dyd)
        stats = np.zeros(3, np.int64)
        frs = [
            dy.frac,
            saved["frac_x"],
            gamma.frac,
            residual.frac if residual is not None else 0,
            *[f[n] for n in layers.LAYERNORM_BWD_FRACS],
        ]
        _check(
            "layernorm_bwd",
            self._lib.tl_layernorm_bwd(
                dyd,
                np.ascontiguousarray(saved["xhat"], dtype=np.int16),
                rs[0],
                rs[1],
                np.ascontiguousarray(gamma.data),
                _ptr(rd),
                gg,
                gb,
                dx,
                stats,
                nb * nt,
                dim,
                _ints(frs),
                int(seed),
            ),
        )
        grad_fracs = {"weight": dy.frac + layers.ln_xhat_frac(dim), "bias": dy.frac}
        return (
            QTensor(dx, f["dx"]),
            dict(zip(layers.LAYERNORM_BWD_FRACS, map(int, stats), strict=False)),
            grad_fracs,
        )

    # -- TA-selector (trilevel.intref.topk) --------------------------------------------------------
    def _topk_prune(self, scores: np.ndarray, k: int, connections: bool, has_cls: bool) -> np.ndarray:
        s, shape = topk_args(scores, k, connections, has_cls, max_n=256)
        out = np.empty(shape, np.int32)
        nb, n = s.shape[:2]
        _check(
            "topk_prune",
            self._lib.tl_topk_prune(s, out, nb, n, int(k), int(connections), int(has_cls)),
        )
        return out.astype(np.int64)

    def topk_tokens(self, scores: np.ndarray, k: int) -> np.ndarray:
        """As trilevel.intref.topk.topk_tokens: [B, N] integer scores -> [B, k] ascending positions."""
        return self._topk_prune(scores, k, False, False)

    def topk_connections(self, attn_sum: np.ndarray, k: int, has_cls: bool = True) -> np.ndarray:
        """As trilevel.intref.topk.topk_connections: [B, T, T] -> conn [B, T - r, k + r]."""
        return self._topk_prune(attn_sum, k, True, has_cls)

    # -- optimizer (trilevel.intref.optim) ---------------------------------------------------------
    def _optimizer(
        self,
        kernel: str,
        master: np.ndarray,
        m: np.ndarray,
        v: np.ndarray | None,
        grad_acc: np.ndarray,
        grad_frac: int,
        batch: int,
        mode: int,
        scalars: list[np.float32],
        first: bool,
    ) -> QTensor:
        check_optimizer_args(kernel, master, m, v, grad_acc, batch)
        w = np.empty(grad_acc.shape, np.int16)
        frac = ctypes.c_int(0)
        _check(
            kernel,
            self._lib.tl_optimizer_step(
                master,
                m,
                _ptr(v),
                np.ascontiguousarray(grad_acc),
                w,
                ctypes.byref(frac),
                grad_acc.size,
                int(grad_frac),
                int(batch),
                mode,
                scal_array(scalars),
                int(first),
            ),
        )
        return QTensor(w, frac.value)

    def adamw_step(
        self,
        master: np.ndarray,
        m: np.ndarray,
        v: np.ndarray,
        grad_acc: np.ndarray,
        grad_frac: int,
        batch: int,
        s: AdamWScalars,
    ) -> QTensor:
        """As trilevel.intref.optim.adamw_step: in place on float32 master/m/v; returns the int16 weights."""
        scal = adamw_scalars(s)
        return self._optimizer("adamw_step", master, m, v, grad_acc, grad_frac, batch, 0, scal, False)

    def sgdm_step(
        self,
        master: np.ndarray,
        buf: np.ndarray,
        grad_acc: np.ndarray,
        grad_frac: int,
        batch: int,
        s: SgdmScalars,
        first: bool = False,
    ) -> QTensor:
        """As trilevel.intref.optim.sgdm_step: in place on float32 master/buf; returns the int16 weights."""
        scal = sgdm_scalars(s)
        return self._optimizer("sgdm_step", master, buf, None, grad_acc, grad_frac, batch, 1, scal, first)

    # -- block kernels (trilevel.intref.blocks) ----------------------------------------------------
    def mlp_block_fwd(
        self, x: QTensor, params: dict[str, QTensor], fracs: dict[str, int]
    ) -> tuple[QTensor, dict[str, int], dict[str, object]]:
        """As trilevel.intref.blocks.mlp_block_fwd: out = x + fc2(GELU(fc1(LN2(x)))); same saved layout."""
        f = layers.need_fracs(fracs, blocks.MLP_FWD_FRACS, "mlp_block_fwd")
        hidden, dim = _qdata("mlp_block_fwd: mlp.fc1.weight", params["mlp.fc1.weight"]).shape
        xd = _x3("mlp_block_fwd: x", x, dim)
        nb, nt = xd.shape[:2]
        ps = _params("mlp_block_fwd", params, MLP_PARAMS, mlp_param_shapes(dim, hidden))
        o = _alloc(mlp_fwd_outputs(nb, nt, dim, hidden))
        stats = np.zeros(4, np.int64)
        ins = [xd, *[np.ascontiguousarray(p.data) for p in ps]]
        frs = [x.frac, *[p.frac for p in ps], *[f[n] for n in blocks.MLP_FWD_FRACS]]
        _check(
            "mlp_block_fwd",
            self._lib.tl_mlp_fwd(
                _ptr_array(ins),
                _ptr_array([o[n] for n in ("out", "z", "xhat", "h", "a")]),
                _ptr_array([o["rsqrt"], o["kk"]]),
                stats,
                _ints([nb, nt, dim, hidden]),
                _ints(frs),
            ),
        )
        saved = mlp_fwd_saved(o, x.frac, f)
        return QTensor(o["out"], f["out"]), named_stats(blocks.MLP_FWD_FRACS, stats), saved

    def mlp_block_bwd(
        self,
        dout: QTensor,
        saved: dict[str, object],
        params: dict[str, QTensor],
        grads: dict[str, np.ndarray],
        fracs: dict[str, int],
        seed: int,
    ) -> tuple[QTensor, dict[str, int], dict[str, int]]:
        """As trilevel.intref.blocks.mlp_block_bwd; ADDS every parameter gradient to `grads`."""
        f = layers.need_fracs(fracs, blocks.MLP_BWD_FRACS, "mlp_block_bwd")
        hidden, dim = _qdata("mlp_block_bwd: mlp.fc1.weight", params["mlp.fc1.weight"]).shape
        dd = _x3("mlp_block_bwd: dout", dout, dim)
        nb, nt = dd.shape[:2]
        shapes = mlp_param_shapes(dim, hidden)
        ps = _params("mlp_block_bwd", params, MLP_PARAMS, shapes)
        gs = _grads("mlp_block_bwd", grads, MLP_PARAMS, shapes)
        ln, z, h, a = saved["ln"], saved["z"], saved["h"], saved["a"]
        lnd = saved_ln_inputs(ln, nb, nt)
        ins = [
            dd,
            _x3("saved z", z, dim),
            lnd["xhat"],
            _x3("saved h", h, hidden),
            _x3("saved a", a, hidden),
            *[np.ascontiguousarray(ps[i].data) for i in (0, 2, 4)],
        ]
        dx = np.empty((nb, nt, dim), np.int16)
        stats = np.zeros(6, np.int64)
        frs = [dout.frac, ln["frac_x"], h.frac, *[p.frac for p in ps], *[f[n] for n in blocks.MLP_BWD_FRACS]]
        _check(
            "mlp_block_bwd",
            self._lib.tl_mlp_bwd(
                _ptr_array(ins),
                _ptr_array([lnd["rsqrt"], lnd["kk"]]),
                _ptr_array(gs),
                dx,
                stats,
                _ints([nb, nt, dim, hidden]),
                _ints(frs),
                int(seed),
            ),
        )
        return (
            QTensor(dx, f["dx"]),
            named_stats(blocks.MLP_BWD_FRACS, stats),
            blocks.mlp_grad_fracs(dim, f, dout.frac, a.frac, z.frac),
        )

    def attn_block_fwd(
        self,
        x: QTensor,
        params: dict[str, QTensor],
        fracs: dict[str, int],
        num_heads: int,
        conn: np.ndarray | None = None,
        dense_rows: int = 1,
    ) -> tuple[QTensor, dict[str, int], dict[str, object]]:
        """As trilevel.intref.blocks.attn_block_fwd, computing only the connections in `conn`.

        saved holds the reference's keys (dense "probs" [B, H, T, T] with 0 on dropped connections,
        "attn_sum" int64 [B, T, T]) plus "conn", "dense_rows" and the kernel's compact "probs_compact".
        With conn, stats["s"] is the max over the computed (kept) connections only.
        """
        f = layers.need_fracs(fracs, blocks.ATTN_FWD_FRACS, "attn_block_fwd")
        if not blocks.SCORE_FRAC_RANGE[0] <= f["s"] <= blocks.SCORE_FRAC_RANGE[1]:
            raise ValueError(f"attn_block_fwd: score frac must be in {blocks.SCORE_FRAC_RANGE}, got {f['s']}")
        dim = _qdata("attn_block_fwd: attn.proj.weight", params["attn.proj.weight"]).shape[0]
        xd = _x3("attn_block_fwd: x", x, dim)
        nb, nt = xd.shape[:2]
        check_heads(dim, num_heads)
        ps = _params("attn_block_fwd", params, ATTN_PARAMS, attn_param_shapes(dim))
        cd, keep = conn_lists(conn, nb, nt, dense_rows)
        o = _alloc(attn_fwd_outputs(nb, nt, dim, num_heads))
        stats = np.zeros(5, np.int64)
        ins = [xd, *[np.ascontiguousarray(p.data) for p in ps]]
        frs = [x.frac, *[p.frac for p in ps], *[f[n] for n in blocks.ATTN_FWD_FRACS]]
        _check(
            "attn_block_fwd",
            self._lib.tl_attn_fwd(
                _ptr_array(ins),
                _ptr(cd),
                _ptr_array([o[n] for n in ("out", "z", "xhat", "qkv", "ctx", "probs")]),
                _ptr_array([o["rsqrt"], o["kk"]]),
                o["attn_sum"],
                stats,
                _ints([nb, nt, dim, num_heads, keep, dense_rows]),
                _ints(frs),
            ),
        )
        saved = attn_fwd_saved(o, x.frac, f, num_heads, conn, cd, dense_rows)
        return QTensor(o["out"], f["out"]), named_stats(blocks.ATTN_FWD_FRACS, stats), saved

    def attn_block_bwd(
        self,
        dout: QTensor,
        saved: dict[str, object],
        params: dict[str, QTensor],
        grads: dict[str, np.ndarray],
        fracs: dict[str, int],
        seed: int,
    ) -> tuple[QTensor, dict[str, int], dict[str, int]]:
        """As trilevel.intref.blocks.attn_block_bwd over the connections of the forward (saved["conn"]);
        ADDS every parameter gradient to `grads`. With conn, stats["dp"] covers the kept connections."""
        f = layers.need_fracs(fracs, blocks.ATTN_BWD_FRACS, "attn_block_bwd")
        num_heads = int(saved["num_heads"])
        dim = _qdata("attn_block_bwd: attn.proj.weight", params["attn.proj.weight"]).shape[0]
        dd = _x3("attn_block_bwd: dout", dout, dim)
        nb, nt = dd.shape[:2]
        shapes = attn_param_shapes(dim)
        ps = _params("attn_block_bwd", params, ATTN_PARAMS, shapes)
        gs = _grads("attn_block_bwd", grads, ATTN_PARAMS, shapes)
        cd, keep, dense_rows, probs_c = saved_attn_layout(saved, nb, nt)
        ln, qkv, ctx = saved["ln"], saved["qkv"], saved["ctx"]
        lnd = saved_ln_inputs(ln, nb, nt)
        ins = [
            dd,
            _x3("saved z", saved["z"], dim),
            lnd["xhat"],
            _x3("saved qkv", qkv, 3 * dim),
            _x3("saved ctx", ctx, dim),
            probs_c,
            *[np.ascontiguousarray(ps[i].data) for i in (0, 2, 4)],
        ]
        if probs_c.shape != (nb, num_heads, nt, nt):
            raise ValueError(f"attn_block_bwd: saved probs must be [B, H, T, T], got {probs_c.shape}")
        dx = np.empty((nb, nt, dim), np.int16)
        stats = np.zeros(8, np.int64)
        frs = [
            dout.frac,
            ln["frac_x"],
            qkv.frac,
            *[p.frac for p in ps],
            *[f[n] for n in blocks.ATTN_BWD_FRACS],
        ]
        _check(
            "attn_block_bwd",
            self._lib.tl_attn_bwd(
                _ptr_array(ins),
                _ptr(cd),
                _ptr_array([lnd["rsqrt"], lnd["kk"]]),
                _ptr_array(gs),
                dx,
                stats,
                _ints([nb, nt, dim, num_heads, keep, dense_rows]),
                _ints(frs),
                int(seed),
            ),
        )
        return (
            QTensor(dx, f["dx"]),
            named_stats(blocks.ATTN_BWD_FRACS, stats),
            blocks.attn_grad_fracs(dim, f, dout.frac, ctx.frac, saved["z"].frac),
        )


def build(
    out: str | os.PathLike | None = None, flavor: str = "fast", sources: list[str] | None = None
) -> Path:
    """Run hls/build_csim.py (a no-op when nothing changed); returns the library path."""
    out = Path(out) if out else DEFAULT_LIB
    cmd = [sys.executable, str(ROOT / "hls" / "build_csim.py"), "--out", str(out), "--flavor", flavor]
    if sources:
        cmd += ["--sources", *sources]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise CSimError((result.stderr or result.stdout).strip() or f"{cmd} failed")
    return out


_default: CSim | None = None


def library() -> CSim:
    """The default library, loaded on first use."""
    global _default
    if _default is None:
        _default = CSim()
    return _default


def _on_default_library(name: str):
    """Module-level `name`: CSim.<name> (signature without self, docstring) on the default library."""
    method = getattr(CSim, name)

    def call(*args: object, **kwargs: object) -> object:
        return getattr(library(), name)(*args, **kwargs)

    signature = inspect.signature(method)
    call.__name__ = call.__qualname__ = name
    call.__doc__ = method.__doc__
    call.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return call


# The module-level API: every trilevel.intref counterpart, on library().
hash32 = _on_default_library("hash32")
requantize = _on_default_library("requantize")
topk_select = _on_default_library("topk_select")
softmax_fwd = _on_default_library("softmax_fwd")
softmax_bwd = _on_default_library("softmax_bwd")
linear_fwd = _on_default_library("linear_fwd")
linear_bwd = _on_default_library("linear_bwd")
layernorm_fwd = _on_default_library("layernorm_fwd")
layernorm_bwd = _on_default_library("layernorm_bwd")
topk_tokens = _on_default_library("topk_tokens")
topk_connections = _on_default_library("topk_connections")
adamw_step = _on_default_library("adamw_step")
sgdm_step = _on_default_library("sgdm_step")
attn_block_fwd = _on_default_library("attn_block_fwd")
attn_block_bwd = _on_default_library("attn_block_bwd")
mlp_block_fwd = _on_default_library("mlp_block_fwd")
mlp_block_bwd = _on_default_library("mlp_block_bwd")


# -- benchmark ------------------------------------------------------------------------------------
def _time(fn, min_seconds: float) -> float:
    """Seconds per call: the best of repeated rounds lasting at least `min_seconds` in all."""
    fn()  # warm-up (page faults, static buffers)
    best, spent = float("inf"), 0.0
    while spent < min_seconds:
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
    return best


def bench(quick: bool = False, model: str = "deit_tiny", lib: CSim | None = None) -> dict[str, object]:
    """C-sim throughput per kernel on this machine (one core): MMAC/s of the useful MACs of each call.

    Shapes: one image of `model` at 197 tokens (quick: 69), attention also with R_A = 0.3 connections.
    Returns {"model", "tokens", "flavor", "kernels": {name: {"shape", "macs", "seconds", "mmac_per_s"}}}.
    """
    from trilevel.config import get_config, keep_count

    lib = lib or library()
    cfg = get_config(model)
    rng = np.random.default_rng(0)
    tokens, dim, hidden, heads = (69 if quick else 197), cfg.embed_dim, cfg.mlp_hidden, cfg.num_heads
    min_seconds = 0.05 if quick else 0.3

    def q(shape: tuple[int, ...], frac: int, amp: int = 3000) -> QTensor:
        return QTensor(rng.integers(-amp, amp + 1, shape).astype(np.int16), frac)

    def block_params() -> dict[str, QTensor]:
        vec, mat = (dim,), (dim, dim)
        shapes = [
            vec,
            vec,
            (3 * dim, dim),
            (3 * dim,),
            mat,
            vec,
            vec,
            vec,
            (hidden, dim),
            (hidden,),
            (dim, hidden),
            vec,
        ]
        names = ATTN_PARAMS + MLP_PARAMS
        return {
            n: q(shape, 14 if n.startswith("norm") else 16) for n, shape in zip(names, shapes, strict=True)
        }

    params = block_params()
    grads = {name: np.zeros(p.data.shape, np.int64) for name, p in params.items()}
    x = q((1, tokens, dim), 10, 8000)
    keep = keep_count(0.3, tokens - 1)
    conn = np.concatenate(
        [
            np.zeros((1, tokens - 1, 1), np.int64),
            np.sort(np.argsort(rng.random((1, tokens - 1, tokens - 1)), axis=-1)[..., :keep] + 1),
        ],
        axis=-1,
    )
    attn_fwd = {"ln": 12, "qkv": 11, "s": 8, "ctx": 11, "out": 10}
    attn_bwd = {"dctx": 14, "dp": 14, "ds": 14, "dqkv": 14, "dln": 14, "ln_g": 14, "ln_t": 12, "dx": 14}
    mlp_fwd = {"ln": 12, "h": 11, "a": 11, "out": 10}
    mlp_bwd = {"da": 14, "dh": 14, "dln": 14, "ln_g": 14, "ln_t": 12, "dx": 14}
    dout = q((1, tokens, dim), 14)
    mlp_saved = lib.mlp_block_fwd(x, params, mlp_fwd)[2]
    linear_params = {"weight": params["mlp.fc1.weight"], "bias": params["mlp.fc1.bias"]}
    dy_hidden = q((1, tokens, hidden), 14)

    def attn_macs(c: int) -> int:  # QKV + scores + context + projection
        return tokens * dim * 3 * dim + 2 * (tokens * c) * dim + tokens * dim * dim

    cases: dict[str, tuple[str, int, object]] = {
        "linear_fwd": (
            f"[{tokens},{dim}]x[{hidden},{dim}]^T",
            tokens * dim * hidden,
            lambda: lib.linear_fwd(x, linear_params, {"y": 11}),
        ),
        "linear_bwd": (
            f"dX + dW, [{tokens},{hidden}]",
            2 * tokens * dim * hidden,
            lambda: lib.linear_bwd(dy_hidden, {"x": x}, linear_params, grads_fc1, {"dx": 12}, 1),
        ),
        "mlp_fwd": (
            f"T={tokens} D={dim} H={hidden}",
            2 * tokens * dim * hidden,
            lambda: lib.mlp_block_fwd(x, params, mlp_fwd),
        ),
        "mlp_bwd": (
            f"T={tokens} D={dim} H={hidden}",
            4 * tokens * dim * hidden,
            lambda: lib.mlp_block_bwd(dout, mlp_saved, params, grads, mlp_bwd, 1),
        ),
    }
    grads_fc1 = {"weight": grads["mlp.fc1.weight"], "bias": grads["mlp.fc1.bias"]}
    for label, c, cn in (("dense", tokens, None), ("R_A=0.3", keep + 1, conn)):
        saved = lib.attn_block_fwd(x, params, attn_fwd, heads, cn)[2]
        cases[f"attn_fwd {label}"] = (
            f"T={tokens} C={c} D={dim}",
            attn_macs(c),
            lambda cn=cn: lib.attn_block_fwd(x, params, attn_fwd, heads, cn),
        )
        cases[f"attn_bwd {label}"] = (
            f"T={tokens} C={c} D={dim}",
            2 * attn_macs(c),
            lambda s=saved: lib.attn_block_bwd(dout, s, params, grads, attn_bwd, 1),
        )
    results = {}
    for name, (shape, macs, fn) in cases.items():
        seconds = _time(fn, min_seconds)
        results[name] = {"shape": shape, "macs": macs, "seconds": seconds, "mmac_per_s": macs / seconds / 1e6}
    return {"model": model, "tokens": tokens, "flavor": "fast" if lib.fast else "ap_int", "kernels": results}


def bench_section(options: object) -> object:
    """`trilevel bench` section (add "trilevel.csim:bench_section" to trilevel.bench.SECTIONS)."""
    from trilevel.bench import Section

    result = bench(quick=bool(getattr(options, "quick", False)))
    section = Section(
        name="csim",
        title=f"C-sim kernels ({result['model']}, 1 core, {result['flavor']} types)",
        columns=["kernel", "shape", "MMAC", "ms", "MMAC/s"],
    )
    for name, row in result["kernels"].items():
        section.rows.append(
            {
                "kernel": name,
                "shape": row["shape"],
                "MMAC": round(row["macs"] / 1e6, 2),
                "ms": round(row["seconds"] * 1e3, 2),
                "MMAC/s": round(row["mmac_per_s"], 1),
            }
        )
    section.notes.append("C simulation of the HLS kernels (g++ -O3, native integer types); not FPGA speed.")
    return section
