"""The accelerator interface: the kernels of `trilevel.intref`, one method each, uniform across backends.

Every backend (`reference` = the numpy integer reference; `csim`, `fsim` and `pynq` = the kernels lowered
to command programs of the one engine, run on its C-sim, its functional simulator or the ZCU102)
implements these methods with the signatures and the results, bit for
bit, of the `trilevel.intref` functions of the same names (the single source of truth). The convention
(trilevel/intref/layers.py):

    y, stats, saved = <kernel>_fwd(x, params, fracs, ...)
    dx, stats, grad_fracs = <kernel>_bwd(dy, saved, params, grads, fracs, seed, ...)

* tensors are `QTensor`s (int16 data + frac) with a leading batch dimension [B, T, D];
* `params` maps the golden model's state_dict names (relative to the layer) to int16 QTensors;
* `fracs` maps each requantization point (the `*_FRACS` keys below) to the frac the host chose, and
  `stats` maps the same keys to the max-abs before saturation, in units of that frac;
* `grads` maps parameter names to caller-owned int64 accumulators the backward ADDS to, `grad_fracs`
  gives their fracs; `saved` is whatever the backward needs (opaque to the host, except
  `attn_block_fwd`'s saved["attn_sum"], the head-sum attention probabilities the top-k kernels read).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from trilevel.intref import blocks, layers
from trilevel.intref.fixed import QTensor
from trilevel.intref.optim import AdamWScalars, SgdmScalars

Stats = dict[str, int]
Saved = dict[str, Any]

# Every kernel an Accelerator provides (methods of the same names).
KERNELS: tuple[str, ...] = (
    "linear_fwd", "linear_bwd", "layernorm_fwd", "layernorm_bwd",
    "attn_block_fwd", "attn_block_bwd", "mlp_block_fwd", "mlp_block_bwd",
    "topk_tokens", "topk_connections", "adamw_step", "sgdm_step",
)


class BackendError(RuntimeError):
    """A backend cannot be created or lacks a kernel."""


class Accelerator(ABC):
    """One accelerator backend. Subclasses set `name` and implement every kernel."""

    name: ClassVar[str] = ""
    # Requantization points of each kernel (the keys of its `fracs` and `stats`), from the contract.
    LINEAR_FWD_FRACS: ClassVar[tuple[str, ...]] = layers.LINEAR_FWD_FRACS
    LINEAR_BWD_FRACS: ClassVar[tuple[str, ...]] = layers.LINEAR_BWD_FRACS
    LAYERNORM_FWD_FRACS: ClassVar[tuple[str, ...]] = layers.LAYERNORM_FWD_FRACS
    LAYERNORM_BWD_FRACS: ClassVar[tuple[str, ...]] = layers.LAYERNORM_BWD_FRACS
    ATTN_FWD_FRACS: ClassVar[tuple[str, ...]] = blocks.ATTN_FWD_FRACS
    ATTN_BWD_FRACS: ClassVar[tuple[str, ...]] = blocks.ATTN_BWD_FRACS
    MLP_FWD_FRACS: ClassVar[tuple[str, ...]] = blocks.MLP_FWD_FRACS
    MLP_BWD_FRACS: ClassVar[tuple[str, ...]] = blocks.MLP_BWD_FRACS

    # ---- linear (patch embedding, head)
    @abstractmethod
    def linear_fwd(self, x: QTensor, params: Mapping[str, QTensor], fracs: Mapping[str, int],
                   residual: QTensor | None = None) -> tuple[QTensor, Stats, Saved]:
        """y = x W^T + b (+ residual), RNE; params "weight" [Dout, Din], optional "bias"."""

    @abstractmethod
    def linear_bwd(self, dy: QTensor, saved: Saved, params: Mapping[str, QTensor],
                   grads: Mapping[str, np.ndarray], fracs: Mapping[str, int], seed: int,
                   need_dx: bool = True) -> tuple[QTensor | None, Stats, Stats]:
        """dX = dY W (SR); ADDS dY^T X and sum dY to grads["weight"], grads["bias"]."""

    # ---- LayerNorm (the final norm before the head; blocks fuse theirs)
    @abstractmethod
    def layernorm_fwd(self, x: QTensor, params: Mapping[str, QTensor], fracs: Mapping[str, int]
                      ) -> tuple[QTensor, Stats, Saved]:
        """Integer LayerNorm over the last axis; params "weight", "bias"."""

    @abstractmethod
    def layernorm_bwd(self, dy: QTensor, saved: Saved, params: Mapping[str, QTensor],
                      grads: Mapping[str, np.ndarray], fracs: Mapping[str, int], seed: int,
                      residual: QTensor | None = None) -> tuple[QTensor, Stats, Stats]:
        """LayerNorm backward (SR); ADDS to grads["weight"], grads["bias"]."""

    # ---- transformer blocks
    @abstractmethod
    def attn_block_fwd(self, x: QTensor, params: Mapping[str, QTensor], fracs: Mapping[str, int],
                       num_heads: int, conn: np.ndarray | None = None, dense_rows: int = 1
                       ) -> tuple[QTensor, Stats, Saved]:
        """x + proj(attention(LN1(x))) over the connection lists conn[B, T - dense_rows, C] (None: dense);
        saved["attn_sum"] is the head-sum attention [B, T, T] (frac 15) for the top-k kernels."""

    @abstractmethod
    def attn_block_bwd(self, dout: QTensor, saved: Saved, params: Mapping[str, QTensor],
                       grads: Mapping[str, np.ndarray], fracs: Mapping[str, int], seed: int
                       ) -> tuple[QTensor, Stats, Stats]:
        """Backward of attn_block_fwd."""

    @abstractmethod
    def mlp_block_fwd(self, x: QTensor, params: Mapping[str, QTensor], fracs: Mapping[str, int]
                      ) -> tuple[QTensor, Stats, Saved]:
        """x + fc2(GELU(fc1(LN2(x))))."""

    @abstractmethod
    def mlp_block_bwd(self, dout: QTensor, saved: Saved, params: Mapping[str, QTensor],
                      grads: Mapping[str, np.ndarray], fracs: Mapping[str, int], seed: int
                      ) -> tuple[QTensor, Stats, Stats]:
        """Backward of mlp_block_fwd."""

    # ---- TA-selector (top-k unit)
    @abstractmethod
    def topk_tokens(self, cls_scores: np.ndarray, k: int) -> np.ndarray:
        """[B, N] integer scores -> [B, k] kept positions, ascending (docs/numerics.md §1.4)."""

    @abstractmethod
    def topk_connections(self, scores: np.ndarray, k: int, has_cls: bool = True) -> np.ndarray:
        """Head-sum attention of the kept tokens [B, T, T] ([CLS] first) -> conn[B, T - r, k + r] (r = 1 with
        [CLS]): per patch query the [CLS] key and its k strongest patch keys, ascending token positions."""

    # ---- optimizer
    @abstractmethod
    def adamw_step(self, master: np.ndarray, m: np.ndarray, v: np.ndarray, grad_acc: np.ndarray,
                   grad_frac: int, batch: int, s: AdamWScalars) -> QTensor:
        """AdamW in place on fp32 master/m/v from grad = grad_acc * 2**-grad_frac / batch; returns the
        re-derived int16 weights."""

    @abstractmethod
    def sgdm_step(self, master: np.ndarray, buf: np.ndarray, grad_acc: np.ndarray, grad_frac: int,
                  batch: int, s: SgdmScalars, first: bool = False) -> QTensor:
        """SGD with momentum in place; returns the re-derived int16 weights."""


class DelegatingBackend(Accelerator):
    """A backend whose kernels are the same-named callables of an implementation object (a module or a
    library wrapper with intref's signatures). Fails at construction if any kernel is missing."""

    def __init__(self, impl: Any, source: str) -> None:
        missing = [k for k in KERNELS if not callable(getattr(impl, k, None))]
        if missing:
            raise BackendError(f"{self.name} backend: {source} lacks the kernels {', '.join(missing)}")
        self._impl = impl

    def linear_fwd(self, x, params, fracs, residual=None):
        return self._impl.linear_fwd(x, params, fracs, residual)

    def linear_bwd(self, dy, saved, params, grads, fracs, seed, need_dx=True):
        return self._impl.linear_bwd(dy, saved, params, grads, fracs, seed, need_dx)

    def layernorm_fwd(self, x, params, fracs):
        return self._impl.layernorm_fwd(x, params, fracs)

    def layernorm_bwd(self, dy, saved, params, grads, fracs, seed, residual=None):
        return self._impl.layernorm_bwd(dy, saved, params, grads, fracs, seed, residual)

    def attn_block_fwd(self, x, params, fracs, num_heads, conn=None, dense_rows=1):
        return self._impl.attn_block_fwd(x, params, fracs, num_heads, conn, dense_rows)

    def attn_block_bwd(self, dout, saved, params, grads, fracs, seed):
        return self._impl.attn_block_bwd(dout, saved, params, grads, fracs, seed)

    def mlp_block_fwd(self, x, params, fracs):
        return self._impl.mlp_block_fwd(x, params, fracs)

    def mlp_block_bwd(self, dout, saved, params, grads, fracs, seed):
        return self._impl.mlp_block_bwd(dout, saved, params, grads, fracs, seed)

    def topk_tokens(self, cls_scores, k):
        return self._impl.topk_tokens(cls_scores, k)

    def topk_connections(self, scores, k, has_cls=True):
        return self._impl.topk_connections(scores, k, has_cls)

    def adamw_step(self, master, m, v, grad_acc, grad_frac, batch, s):
        return self._impl.adamw_step(master, m, v, grad_acc, grad_frac, batch, s)

    def sgdm_step(self, master, buf, grad_acc, grad_frac, batch, s, first=False):
        return self._impl.sgdm_step(master, buf, grad_acc, grad_frac, batch, s, first)


BACKENDS: tuple[str, ...] = ("reference", "csim", "fsim", "rtlsim", "pynq")


def get_backend(name: str, **opts: Any) -> Accelerator:
    """The backend called `name`; `opts` go to its constructor.

    * "reference": the numpy integer reference itself;
    * "csim": lowered programs on the HLS C++ engine's C simulation (lib=PATH, default
      build/csim/libtrilevel_csim.so from `make csim`), through the board's driver on a simulated device;
    * "fsim": the same on the command-level functional simulator (config=an isa.EngineConfig);
    * "rtlsim": the same on the Verilated RTL engine, its AXI-Lite and AXI4 DDR through a simulated pynq
      device (trilevel.accel.rtlsim.rtlsim_backend options, e.g. config);
    * "pynq": the engine IP of the ZCU102 overlay (bitfile=PATH or overlay=a pynq.Overlay).
    """
    if name == "reference":
        from trilevel.accel.reference_backend import ReferenceBackend

        return ReferenceBackend(**opts)
    if name == "rtlsim":
        from trilevel.accel.rtlsim import rtlsim_backend

        return rtlsim_backend(**opts)
    if name in ("csim", "fsim", "pynq"):
        from trilevel.accel.engine import EngineBackend

        factories = {"csim": EngineBackend.csim, "fsim": EngineBackend.fsim, "pynq": EngineBackend.on_board}
        return factories[name](**opts)
    raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
