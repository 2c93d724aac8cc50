"""The `reference` backend: the numpy integer reference `trilevel.intref` itself (the source of truth)."""

from __future__ import annotations

from types import SimpleNamespace

from trilevel.accel.interface import KERNELS, DelegatingBackend


def intref_kernels() -> SimpleNamespace:
    """Every kernel of the Accelerator interface, from the trilevel.intref modules that define them."""
    from trilevel.intref import blocks, layers, optim, topk

    modules = (layers, blocks, topk, optim)
    kernels = {name: getattr(m, name) for m in modules for name in KERNELS if hasattr(m, name)}
    return SimpleNamespace(**kernels)


class ReferenceBackend(DelegatingBackend):
    """Runs every kernel in numpy through trilevel.intref (bit-exact definition; slow for big models)."""

    name = "reference"

    def __init__(self) -> None:
        super().__init__(intref_kernels(), "trilevel.intref")
