"""The `csim` backend: the HLS C++ kernels (hls/src) compiled for C simulation, called through ctypes."""

from __future__ import annotations

import os

from trilevel.accel.interface import BackendError, DelegatingBackend


class CSimBackend(DelegatingBackend):
    """Runs every kernel in the C-sim library (`make csim`); results equal the reference bit for bit."""

    name = "csim"

    def __init__(self, lib: str | os.PathLike | None = None) -> None:
        from trilevel import csim

        try:
            impl = csim.CSim(lib) if lib is not None else csim.library()
        except csim.CSimError as err:
            raise BackendError(f"csim backend: {err}") from None
        super().__init__(impl, f"the C-sim library {getattr(impl, 'path', '')}")
