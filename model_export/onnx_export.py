"""PyTorch golden model -> ONNX, with the TA-selector's top-k and gathers in the graph.

The keep ratios are fixed at export time (they set the static token counts), the batch dimension is
dynamic. `torch.onnx.export(dynamo=True)` lowers the contract's top-k to ONNX ``TopK`` (then an
ascending sort of the winners), whose tie rule (lower index first) is the contract's
(docs/numerics.md 1.4), and the token/connection gathers to ``Gather*``: a pruned model really runs
on fewer tokens in onnxruntime, exactly as in PyTorch.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from model_export.pack import ExportError
from trilevel.fileio import atomic_write

DEFAULT_OPSET = 18


class _Exportable(nn.Module):
    """Binds the keep ratios; optionally also returns the kept patch ids and connection lists."""

    def __init__(self, model: nn.Module, keep_token: float, keep_attn: float, selections: bool) -> None:
        super().__init__()
        self.model, self.keep_token, self.keep_attn, self.selections = (
            model,
            keep_token,
            keep_attn,
            selections,
        )

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        if not self.selections:
            return self.model(x, self.keep_token, self.keep_attn)
        logits, info = self.model(x, self.keep_token, self.keep_attn, return_info=True)
        return (logits, *info.kept_patches, *(c for c in info.connections if c is not None))


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    keep_token: float = 1.0,
    keep_attn: float = 1.0,
    opset: int = DEFAULT_OPSET,
    selections: bool = False,
) -> Path:
    """Export `model` (a trilevel VisionTransformer) at the given keep ratios to `path`, atomically.

    Input ``images`` [batch, C, H, W] float32 (batch dynamic); output ``logits`` and, with `selections`,
    ``kept_<i>`` (the kept patch ids after each TA-selector) and ``conn_<i>`` (the connection lists).
    The written model passes ``onnx.checker.check_model(full_check=True)``.
    """
    import onnx

    from trilevel.config import keep_count

    if opset < 17:
        raise ExportError(f"opset {opset} is too old: LayerNormalization needs opset >= 17")
    try:
        keep_count(keep_token, 1)
        keep_count(keep_attn, 1)
    except ValueError as e:
        raise ExportError(str(e)) from None
    cfg = model.cfg
    model = model.eval()
    wrapper = _Exportable(model, keep_token, keep_attn, selections).eval()
    example = torch.zeros(2, cfg.in_chans, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        n_out = len(wrapper(example)) if selections else 1
    names = ["logits"]
    if selections:
        n_kept = len(cfg.prune_blocks)
        names += [f"kept_{i}" for i in range(n_kept)] + [f"conn_{i}" for i in range(n_out - 1 - n_kept)]
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=["images"],
                output_names=names,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
    except Exception as e:  # the exporter raises many error types
        raise ExportError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    proto = program.model_proto
    proto.producer_name = "trilevel.model_export"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"exported ONNX model fails onnx.checker: {e}") from None
    atomic_write(path, lambda tmp: onnx.save_model(proto, tmp))
    return Path(path)
