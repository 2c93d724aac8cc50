"""Accelerator backends behind one interface, and the layer-wise trainer that drives them.

    from trilevel.accel import get_backend
    acc = get_backend("reference")        # or "csim" (make csim), "fsim", "pynq" (on a ZCU102)
    y, stats, saved = acc.linear_fwd(x, params, fracs)

`reference`, `csim` and `fsim` give bit-identical results (tests/test_accel_backends.py,
tests/test_engine_kernels.py).
"""

from trilevel.accel.interface import (
    BACKENDS,
    KERNELS,
    Accelerator,
    BackendError,
    DelegatingBackend,
    get_backend,
)

__all__ = ["BACKENDS", "KERNELS", "Accelerator", "BackendError", "DelegatingBackend", "get_backend"]
