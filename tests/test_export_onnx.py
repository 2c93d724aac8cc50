"""PyTorch -> ONNX: valid graphs, TopK/Gather in pruned exports, onnxruntime equal to PyTorch.

Tolerance: logits within 1e-4 absolute (float32; observed ~1e-7), and every token and connection
selection identical. The model's attention weights are scaled up so the attention maps are peaked:
with DeiT's near-uniform init, score gaps fall below float32 rounding and the two runtimes could
legitimately break near-ties differently.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from model_export.onnx_export import ExportError, export_onnx
from trilevel.cli import main as cli_main
from trilevel.model import build_model

TOL = 1e-4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("demo", depth=3, prune_blocks=(0, 1), embed_dim=32, num_heads=2).eval()
    with torch.no_grad():
        for block in m.blocks:
            block.attn.qkv.weight.mul_(8)
    return m


@pytest.mark.parametrize("keep", [(1.0, 1.0), (0.7, 0.5)], ids=["dense", "pruned"])
def test_onnx_matches_pytorch(model, keep, tmp_path):
    keep_token, keep_attn = keep
    path = export_onnx(model, tmp_path / "m.onnx", keep_token, keep_attn, selections=True)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ops = {n.op_type for n in proto.graph.node}
    if keep_token < 1:
        assert "TopK" in ops and ops & {"Gather", "GatherElements", "GatherND"}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))  # batch differs from export's
    outputs = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        logits, info = model(x, keep_token, keep_attn, return_info=True)
    np.testing.assert_allclose(outputs[0], logits.numpy(), rtol=0, atol=TOL)
    selections = list(info.kept_patches) + [c for c in info.connections if c is not None]
    assert len(outputs) == 1 + len(selections)
    for got, want in zip(outputs[1:], selections, strict=True):
        np.testing.assert_array_equal(got, want.numpy())
    if keep_token < 1:  # the graph really shrinks: 16 patches -> 12 -> 9 kept
        assert [o.shape[1] for o in outputs[1:3]] == [12, 9]


def test_bad_arguments_are_refused(model, tmp_path):
    with pytest.raises(ExportError, match="opset 16 is too old"):
        export_onnx(model, tmp_path / "m.onnx", opset=16)
    with pytest.raises(ExportError, match="keep ratio"):
        export_onnx(model, tmp_path / "m.onnx", keep_token=0.0)
    assert not list(tmp_path.iterdir())


def test_cli_exports_a_checkpoint(model, tmp_path, capsys):
    ckpt = tmp_path / "c.pt"
    cfg = model.cfg
    torch.save(
        {"model": model.state_dict(), "config": {**cfg.__dict__, "prune_blocks": list(cfg.prune_blocks)}},
        ckpt,
    )
    out = tmp_path / "m.onnx"
    assert (
        cli_main(["export", "onnx", "--checkpoint", str(ckpt), "--out", str(out), "--keep-token", "0.7"]) == 0
    )
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        want = model(x, 0.7, 1.0).numpy()
    np.testing.assert_allclose(session.run(None, {"images": x.numpy()})[0], want, rtol=0, atol=TOL)
    assert (
        cli_main(["export", "onnx", "--checkpoint", str(ckpt), "--model", "deit_tiny", "--out", str(out)])
        == 2
    )
    assert "differs from --model" in capsys.readouterr().err
