"""Data-parallel training for real: two torchrun processes (gloo, CPU) train the demo model with all
three levels on, and the example filter's statistics are all-gathered so both ranks agree."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import torch

NUM_TRAIN, KEEP_EXAMPLE, EPOCHS = 120, 0.8, 2
ACTIVE = round(KEEP_EXAMPLE * NUM_TRAIN)  # 96: even, so the sampler pads no rank

# Runs on every rank: records what the trainer feeds the example filter (the all-gathered arrays) and
# each epoch's active subset, then saves the rank's final weights and filter state.
WORKER = textwrap.dedent(
    f"""
    import os, sys
    import torch
    from trilevel import train_torch
    from trilevel.baselines import methods
    from trilevel.data import make_synthetic
    from trilevel.example_filter import ExampleFilter

    torch.set_num_threads(1)
    seen = {{"filters": [], "models": [], "presented": [], "active": []}}

    def small_synthetic(spec, img_size=None, in_chans=1, num_classes=10, seed=0, augment=False):
        return make_synthetic(num_classes, 8, in_chans, num_train={NUM_TRAIN}, num_test=40, seed=seed)

    def recording_build_model(*args, **kwargs):
        model = build_model(*args, **kwargs)
        seen["models"].append(model)
        return model

    def recording_update(self, indices, correct, cls_attn_var, **kwargs):
        seen["presented"].append(list(map(int, indices)))
        return update(self, indices, correct, cls_attn_var, **kwargs)

    def recording_active_indices(self):
        if self not in seen["filters"]:
            seen["filters"].append(self)
        active = active_indices(self)
        seen["active"].append(active.tolist())
        return active

    build_model, update, active_indices = (
        methods.build_model, ExampleFilter.update, ExampleFilter.active_indices
    )
    train_torch.load_dataset = small_synthetic
    methods.build_model = recording_build_model  # what the trainer's (default) method builds with
    ExampleFilter.update = recording_update
    ExampleFilter.active_indices = recording_active_indices

    records = train_torch.train(
        train_torch.TrainConfig(
            out=sys.argv[1], data="synthetic", epochs={EPOCHS}, batch_size=16, lr=2e-3,
            keep_example={KEEP_EXAMPLE}, example_period=1, example_remove_frac=0.1,
            keep_token=0.7, keep_attn=0.5, keep_warmup_epochs=0, keep_decay_epochs=0,
            attn_impl="mask", device="cpu", progress=False,
            example_window="run",  # statistics over the whole run, so the last check sees every epoch
        )
    )
    (model,), (example_filter,) = seen["models"], seen["filters"]
    torch.save(
        {{
            "world": int(os.environ["WORLD_SIZE"]),
            "records": records,
            "weights": model.state_dict(),
            "filter": example_filter.state_dict(),
            "presented": seen["presented"],
            "active": seen["active"],
        }},
        os.path.join(sys.argv[1], "rank" + os.environ["RANK"] + ".pt"),
    )
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_gathers_example_statistics(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={_free_port()}",
        str(script),
        str(run_dir),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(run_dir / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]

    # Identical weights (DDP averages the gradients) and identical example-filter state on both ranks.
    for name, tensor in ranks[0]["weights"].items():
        assert torch.equal(tensor, ranks[1]["weights"][name]), name
    filters = [r["filter"] for r in ranks]
    for key, value in filters[0].items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, filters[1][key]), key
        else:
            assert value == filters[1][key], key
    assert filters[0]["rounds_done"] == EPOCHS  # a remove-and-restore round after every epoch

    # Every active example was presented exactly once per epoch across the two ranks: the gathered
    # arrays hold rank 0's shard, then rank 1's, disjoint and together the active subset.
    assert ranks[0]["presented"] == ranks[1]["presented"] and ranks[0]["active"] == ranks[1]["active"]
    assert len(ranks[0]["presented"]) == len(ranks[0]["active"]) == EPOCHS
    for presented, active in zip(ranks[0]["presented"], ranks[0]["active"], strict=True):
        assert len(active) == ACTIVE
        counts = np.bincount(presented, minlength=NUM_TRAIN)
        assert counts[active].tolist() == [1] * ACTIVE and counts.sum() == ACTIVE
        shard0, shard1 = presented[: ACTIVE // 2], presented[ACTIVE // 2 :]
        assert not set(shard0) & set(shard1)
    assert ranks[0]["active"][0] != ranks[0]["active"][1]  # the round changed the subset
    # Both ranks know the outcome of every presented example, including those the other rank trained.
    ever_presented = np.zeros(NUM_TRAIN, dtype=bool)
    ever_presented[sorted({i for epoch in ranks[0]["presented"] for i in epoch})] = True
    assert np.array_equal(np.asarray(filters[0]["last_correct"]) != -1, ever_presented)

    # The metrics count the global number of images, identically on both ranks.
    for rank in ranks:
        assert [r["images"] for r in rank["records"]] == [ACTIVE] * EPOCHS
        assert [r["active_examples"] for r in rank["records"]] == [ACTIVE] * EPOCHS
        assert rank["records"][-1]["cumulative_images"] == EPOCHS * ACTIVE
        assert all(r["filter_round"] for r in rank["records"])
    strip = [[{k: v for k, v in r.items() if "wall_s" not in k} for r in rank["records"]] for rank in ranks]
    assert strip[0] == strip[1]
