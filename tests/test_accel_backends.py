"""The accelerator interface: backend factory, errors, and the engine backend on the C-sim engine equals
the reference bit for bit over full training steps with AdamW and SGD-M (the functional simulator is
compared kernel by kernel in tests/test_engine_kernels.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from trilevel.accel import KERNELS, Accelerator, BackendError, DelegatingBackend, get_backend
from trilevel.accel.engine import build_csim
from trilevel.accel.trainer import AccelTrainConfig, LayerwiseViT, Weights
from trilevel.data import load_digits_split
from trilevel.model import build_model


@pytest.fixture(scope="module")
def csim_lib():
    return build_csim()  # a no-op when `make csim` already built it


def test_factory_names_and_errors(tmp_path) -> None:
    ref = get_backend("reference")
    assert isinstance(ref, Accelerator) and ref.name == "reference"
    assert get_backend("fsim").name == "fsim"
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        get_backend("gpu")
    with pytest.raises(BackendError, match="not found"):
        get_backend("csim", lib=tmp_path / "missing.so")
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not a library")
    with pytest.raises(BackendError, match="junk.so cannot be loaded"):
        get_backend("csim", lib=junk)
    with pytest.raises(BackendError, match="bitstream .*not found"):
        get_backend("pynq", bitfile=tmp_path / "missing.bit")


def test_backend_lacking_a_kernel_is_refused() -> None:
    class Partial:
        def linear_fwd(self, *args):
            raise AssertionError

    class Named(DelegatingBackend):
        name = "partial"

    with pytest.raises(BackendError, match="lacks the kernels linear_bwd, layernorm_fwd"):
        Named(Partial(), "a test stub")
    assert set(KERNELS) >= {"attn_block_fwd", "topk_connections", "adamw_step"}


@pytest.mark.parametrize("optimizer", ["adamw", "sgdm"])
def test_engine_backends_equal_reference_over_training_steps(csim_lib, optimizer: str) -> None:
    """Calibration, a dense step and a pruned step (token + connection top-k, gather/scatter) in two
    micro-batches on each backend: every fp32 master, moment, int16 weight, frac and loss is identical."""
    train_set, _ = load_digits_split(seed=0)
    items = [train_set[i] for i in range(24)]
    x = np.stack([im.numpy() for im, _, _ in items])
    y = np.array([label for _, label, _ in items])
    config = AccelTrainConfig(out="unused", optimizer=optimizer)
    run = dataclasses.replace(config, micro_batch=12, weight_decay=0.05)
    nets, losses = [], []
    for name, opts in (("reference", {}), ("csim", {"lib": csim_lib})):
        torch.manual_seed(0)
        golden = build_model("demo", num_classes=10, in_chans=1, img_size=8)
        net = LayerwiseViT(golden.cfg, get_backend(name, **opts), Weights.from_model(golden))
        net.calibrate(x[:12], y[:12], 1.0, 1.0, seed=3)
        dense = net.train_step(x, y, 1.0, 1.0, run, lr=1e-3, seed=11)
        pruned = net.train_step(x, y, 0.5, 0.4, run, lr=1e-3, seed=12)
        nets.append(net)
        losses.append((dense.loss_sum, pruned.loss_sum, pruned.correct.tolist(),
                       pruned.cls_attn_var.tolist()))
    ref = nets[0]
    for sim, loss in zip(nets[1:], losses[1:], strict=True):
        assert loss == losses[0], sim.be.name
        assert ref.book.fracs == sim.book.fracs
        for name in ref.w.master:
            assert np.array_equal(ref.w.master[name], sim.w.master[name]), name
            assert np.array_equal(ref.w.exp_avg[name], sim.w.exp_avg[name]), name
            assert np.array_equal(ref.w.exp_avg_sq[name], sim.w.exp_avg_sq[name]), name
            assert np.array_equal(ref.w.q[name].data, sim.w.q[name].data), name
            assert ref.w.q[name].frac == sim.w.q[name].frac, name
    # The step really trained (weights left their initial values), and it ran on the engine.
    sim = nets[-1]
    torch.manual_seed(0)
    init = build_model("demo", num_classes=10, in_chans=1, img_size=8).state_dict()
    assert not torch.equal(sim.w.torch_state_dict(sim.cfg)["head.weight"], init["head.weight"])
    assert sim.be.counters["attn_block_bwd"]["MACS"] > 0 and sim.be.runs["topk"] > 0


def test_small_engine_build_trains_like_the_reference() -> None:
    """The RTL's CI build (isa.CI_SMALL: 4x4 array, 64 Ki SPM elements) on the functional simulator: a
    pruned training step with connection lists gives the reference's weights bit for bit."""
    from trilevel.accel import isa

    train_set, _ = load_digits_split(seed=0)
    items = [train_set[i] for i in range(8)]
    x = np.stack([im.numpy() for im, _, _ in items])
    y = np.array([label for _, label, _ in items])
    run = dataclasses.replace(AccelTrainConfig(out="unused"), micro_batch=4, weight_decay=0.05)
    nets = []
    for backend in (get_backend("reference"), get_backend("fsim", config=isa.CI_SMALL)):
        torch.manual_seed(0)
        golden = build_model("demo", num_classes=10, in_chans=1, img_size=8)
        net = LayerwiseViT(golden.cfg, backend, Weights.from_model(golden))
        net.train_step(x, y, 0.5, 0.4, run, lr=1e-3, seed=5)
        nets.append(net)
    ref, small = nets
    assert ref.book.fracs == small.book.fracs
    for name in ref.w.master:
        assert np.array_equal(ref.w.master[name], small.w.master[name]), name
    assert small.be.config == isa.CI_SMALL and small.be.runs["attn_block_bwd"] == 2 * 6
