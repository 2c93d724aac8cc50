"""Layer-wise fixed-point trainer on the reference backend: a step reduces the loss; resume is exact."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from trilevel import runlog
from trilevel.accel import get_backend
from trilevel.accel.trainer import AccelTrainConfig, LayerwiseViT, Weights, patchify, train
from trilevel.data import TensorImageDataset, load_digits_split
from trilevel.model import build_model


@pytest.fixture(scope="module")
def digits() -> tuple[TensorImageDataset, TensorImageDataset]:
    return load_digits_split(seed=0)


def _subset(ds: TensorImageDataset, n: int) -> TensorImageDataset:
    mean, std = tuple(ds._mean.flatten().tolist()), tuple(ds._std.flatten().tolist())
    return TensorImageDataset(ds.images[:n], ds.labels[:n], ds.num_classes, mean, std)


def _batch(ds: TensorImageDataset, n: int) -> tuple[np.ndarray, np.ndarray]:
    items = [ds[i] for i in range(n)]
    return np.stack([x.numpy() for x, _, _ in items]), np.array([y for _, y, _ in items])


def _net(backend: str = "reference") -> LayerwiseViT:
    torch.manual_seed(0)
    golden = build_model("demo", num_classes=10, in_chans=1, img_size=8)
    return LayerwiseViT(golden.cfg, get_backend(backend), Weights.from_model(golden))


def test_patchify_matches_conv_patch_embedding() -> None:
    torch.manual_seed(1)
    golden = build_model("demo", num_classes=10, in_chans=1, img_size=8)
    images = torch.randn(3, 1, 8, 8)
    want = golden.patch_embed(images).detach().numpy()
    w = golden.patch_embed.proj.weight.detach().numpy().reshape(golden.cfg.embed_dim, -1)
    bias = golden.patch_embed.proj.bias.detach().numpy()
    got = patchify(images.numpy(), golden.cfg.patch_size) @ w.T + bias
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_initial_weights_are_the_golden_init() -> None:
    torch.manual_seed(0)
    golden = build_model("demo", num_classes=10, in_chans=1, img_size=8)
    weights = Weights.from_model(golden)
    for name, tensor in weights.torch_state_dict(golden.cfg).items():
        assert torch.equal(tensor, golden.state_dict()[name]), name


def test_fixed_point_forward_tracks_float_golden(digits) -> None:
    """After calibration the integer forward's logits follow the float model's (same weights)."""
    x, y = _batch(digits[0], 16)
    net = _net()
    net.calibrate(x, y, 1.0, 1.0, seed=0)
    logits, _, _ = net.forward(x, 1.0, 1.0, observe=False)
    torch.manual_seed(0)
    golden = build_model("demo", num_classes=10, in_chans=1, img_size=8).eval()
    with torch.no_grad():
        want = golden(torch.from_numpy(x)).numpy()
    assert np.abs(logits - want).max() < 0.05 * np.abs(want).max() + 0.02


def test_reference_training_steps_reduce_loss(digits) -> None:
    x, y = _batch(digits[0], 32)
    net = _net()
    run = dataclasses.replace(AccelTrainConfig(out="unused", weight_decay=0.05), micro_batch=16)
    net.calibrate(x[:16], y[:16], 1.0, 1.0, seed=0)

    def loss() -> float:
        logits, _, _ = net.forward(x, 0.5, 0.5, observe=False)
        return net._loss(logits, y)[0] / len(y)

    before = loss()
    for step in range(6):
        net.train_step(x, y, 0.5, 0.5, run, lr=2e-3, seed=step)
    after = loss()
    assert after < before - 0.1, (before, after)
    # Every parameter received a gradient and moved; the int16 copies follow the fp32 masters.
    torch.manual_seed(0)
    init = build_model("demo", num_classes=10, in_chans=1, img_size=8).state_dict()
    for name, tensor in net.w.torch_state_dict(net.cfg).items():
        assert not torch.equal(tensor, init[name]), f"{name} did not move"
        q = net.w.q[name]
        assert np.abs(q.to_float() - net.w.master[name]).max() <= 2.0 ** -q.frac, name


def _run_config(out, **overrides) -> AccelTrainConfig:
    settings = dict(backend="reference", epochs=2, batch_size=16, micro_batch=8, lr=2e-3, keep_example=0.75,
                    example_period=1, example_remove_frac=0.25, keep_token=0.5, keep_attn=0.5,
                    keep_warmup_epochs=0.5, keep_decay_epochs=1.0, progress=False, project_latency=False)
    return AccelTrainConfig(out=str(out), **{**settings, **overrides})


def test_checkpoint_resume_is_exact(tmp_path, digits) -> None:
    data = (_subset(digits[0], 32), _subset(digits[1], 8))
    full = train(_run_config(tmp_path / "full"), datasets=data)
    train(_run_config(tmp_path / "split", stop_after=1), datasets=data)
    assert len(runlog.read_metrics(tmp_path / "split")) == 1
    resumed = train(_run_config(tmp_path / "split", resume=True), datasets=data)
    drop = ("wall_s", "cumulative_wall_s")
    strip = [{k: v for k, v in r.items() if k not in drop} for r in resumed]
    assert strip == [{k: v for k, v in r.items() if k not in drop} for r in full]
    assert full[-1]["keep_token"] == 0.5 and full[0]["filter_round"]
    a = runlog.load_checkpoint(tmp_path / "full" / runlog.CHECKPOINT_FILE)["net"]["weights"]
    b = runlog.load_checkpoint(tmp_path / "split" / runlog.CHECKPOINT_FILE)["net"]["weights"]
    for name in a["master"]:
        assert torch.equal(a["master"][name], b["master"][name]), name
        assert torch.equal(a["q"][name], b["q"][name]), name
    lines = (tmp_path / "split" / runlog.METRICS_FILE).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert set(runlog.METRIC_KEYS) <= set(json.loads(lines[0]))


def test_refuses_existing_run_and_changed_settings(tmp_path, digits) -> None:
    data = (_subset(digits[0], 16), _subset(digits[1], 8))
    train(_run_config(tmp_path, stop_after=1, keep_example=1.0), datasets=data)
    with pytest.raises(FileExistsError, match="--resume"):
        train(_run_config(tmp_path, keep_example=1.0), datasets=data)
    with pytest.raises(ValueError, match="differ from the checkpoint"):
        train(_run_config(tmp_path, resume=True, keep_example=1.0, lr=1e-3), datasets=data)


def test_cli_rejects_unsupported_options(tmp_path, capsys) -> None:
    from trilevel.cli import main

    code = main(["train", "--backend", "reference", "--attn-impl", "mask", "--out", str(tmp_path)])
    assert code == 2
    assert "--attn-impl mask" in capsys.readouterr().err
