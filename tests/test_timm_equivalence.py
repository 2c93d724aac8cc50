"""The golden model against timm's DeiT: same parameter names, same logits on the dense path, and
`--init` from a timm/DeiT checkpoint file. timm's models are built randomly initialised: nothing is
downloaded."""

from __future__ import annotations

import pytest
import timm
import torch

from trilevel.cli import main
from trilevel.model import build_model
from trilevel.pretrained import load_init


@pytest.mark.parametrize("attn_impl", ["mask", "gather"])
def test_deit_tiny_logits_equal_timms(attn_impl):
    torch.manual_seed(0)
    reference = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    ours = build_model("deit_tiny", attn_impl=attn_impl).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)  # identical names and shapes
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = reference(images)
        got = ours(images)
        _, info = ours(images, return_info=True)  # the explicit-softmax path of the last block
    assert got.shape == want.shape == (2, 1000)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), float((got - want).abs().max())
    assert info.tokens_per_block == [197] * 12


def test_init_loads_a_deit_checkpoint_for_another_size_and_class_count(tmp_path):
    torch.manual_seed(1)
    reference = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    path = tmp_path / "deit_tiny.pth"
    torch.save({"model": reference.state_dict(), "epoch": 299}, path)  # DeiT's main.py layout
    ours = build_model("deit_tiny", num_classes=10, img_size=112)
    head_before = ours.head.weight.clone()
    notes = load_init(ours, path)
    assert any("pos_embed resampled" in n for n in notes) and any("classifier" in n for n in notes)
    assert torch.equal(ours.blocks[5].attn.qkv.weight, reference.blocks[5].attn.qkv.weight)
    assert torch.equal(ours.head.weight, head_before)  # 10 classes: the head stays at its init
    assert ours.pos_embed.shape == (1, 50, 192)
    torch.save({"model": {**reference.state_dict(), "dist_token": torch.zeros(1, 1, 192)}}, path)
    with pytest.raises(ValueError, match="distilled"):
        load_init(ours, path)


def test_init_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "not_a_checkpoint.pth"
    bad.write_bytes(b"plain bytes")
    args = ["train", "--model", "demo", "--data", "digits", "--epochs", "1", "--no-progress"]
    assert main([*args, "--init", str(bad), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a readable torch checkpoint" in err[0]
    torch.save({"model": timm.create_model("deit_tiny_patch16_224").state_dict()}, bad)
    assert main([*args, "--init", str(bad), "--out", str(tmp_path / "b")]) == 2  # DeiT-T into the demo
    assert "does not fit the model" in capsys.readouterr().err
