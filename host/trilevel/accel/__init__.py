"""Accelerator backends behind one interface, and the layer-wise trainer that drives them.

    from trilevel.accel import get_backend
    acc = get_backend("reference")        # or "csim" (make csim), "pynq" (on a ZCU102)
    y, stats, saved = acc.linear_fwd(x, params, fracs)

`reference` and `csim` give bit-identical results (tests/test_accel_backends.py).
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
