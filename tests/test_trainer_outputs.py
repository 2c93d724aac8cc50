"""What the error paths guard, used as intended: `export` reads both trainers' own checkpoints (their
model_config, the layer-wise master weights), and `--bad-images skip` trains without the bad files."""

from __future__ import annotations

import torch
from PIL import Image

from model_export.checkpoint import load_checkpoint
from model_export.pack import read_pack, unpack_state_dict
from trilevel import runlog
from trilevel.accel import trainer
from trilevel.cli import main
from trilevel.data import TensorImageDataset, load_digits_split


def test_export_reads_the_torch_trainers_checkpoint_with_its_model_config(tmp_path) -> None:
    run = tmp_path / "run"
    # --img-size 16 makes the model differ from the named "demo" config: only model_config describes it.
    assert main(["train", "--data", "synthetic", "--img-size", "16", "--epochs", "1", "--batch-size", "100",
                 "--keep-example", "0.1", "--no-progress", "--out", str(run)]) == 0
    ckpt = run / runlog.CHECKPOINT_FILE
    state, cfg = load_checkpoint(ckpt)
    assert cfg is not None and cfg.img_size == 16 and cfg.name == "demo"
    pack_path = tmp_path / "w.tlpack"
    assert main(["export", "pack", "--checkpoint", str(ckpt), "--master", "--out", str(pack_path)]) == 0
    pack = read_pack(pack_path)
    assert pack.model["img_size"] == 16
    restored = unpack_state_dict(pack)
    for name, tensor in state.items():
        assert torch.equal(restored[name].to(tensor.dtype), tensor), name
    # The named config is not this model's: refused rather than exported with the wrong shapes.
    refused = ["export", "pack", "--checkpoint", str(ckpt), "--model", "demo", "--out", str(pack_path)]
    assert main(refused) == 2


def test_export_reads_the_layerwise_trainers_master_weights(tmp_path) -> None:
    train_set, test_set = load_digits_split(seed=0)

    def head(ds: TensorImageDataset, n: int) -> TensorImageDataset:
        mean, std = tuple(ds._mean.flatten().tolist()), tuple(ds._std.flatten().tolist())
        return TensorImageDataset(ds.images[:n], ds.labels[:n], ds.num_classes, mean, std)

    config = trainer.AccelTrainConfig(out=str(tmp_path / "run"), backend="reference", epochs=1, batch_size=16,
                                      micro_batch=8, lr=2e-3, progress=False, project_latency=False)
    trainer.train(config, datasets=(head(train_set, 16), head(test_set, 8)))
    ckpt = tmp_path / "run" / runlog.CHECKPOINT_FILE
    masters = runlog.load_checkpoint(ckpt)["net"]["weights"]["master"]
    state, cfg = load_checkpoint(ckpt)
    assert cfg is not None and cfg.name == "demo"
    conv_shape = (cfg.embed_dim, cfg.in_chans, cfg.patch_size, cfg.patch_size)
    assert state["patch_embed.proj.weight"].shape == conv_shape
    for name, tensor in masters.items():
        assert torch.equal(state[name].flatten(), torch.as_tensor(tensor).flatten()), name
    assert main(["export", "pack", "--checkpoint", str(ckpt), "--out", str(tmp_path / "w.tlpack")]) == 0


def test_bad_images_skip_trains_without_them_and_says_how_many(tmp_path, capsys) -> None:
    root = tmp_path / "images"
    for split in ("train", "val"):
        for label, color in (("a", (250, 20, 20)), ("b", (20, 20, 250))):
            (root / split / label).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (10, 10), color).save(root / split / label / f"{i}.png")
    (root / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    argv = ["train", "--data", f"imagefolder:{root}", "--epochs", "1", "--batch-size", "4", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "refused")]) == 2
    assert "broken.jpg" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    assert main([*argv, "--bad-images", "skip", "--out", str(tmp_path / "run")]) == 0
    assert "left out 1 undecodable image" in capsys.readouterr().err
    assert runlog.read_metrics(tmp_path / "run")[0]["images"] == 4
