"""`trilevel demo`: Tri-Level E-ViT on digits through the C-sim accelerator, a dense C-sim baseline and
the float PyTorch golden model with the same recipe, side by side.

Writes DIR/<run>/metrics.jsonl per run, DIR/summary.json and DIR/accuracy_vs_time.png. The three runs
are independent processes (one per core, `--jobs`); per-epoch lines are printed as they land, and each
run's own log (errors included) is DIR/<run>/train.log. Ctrl-C stops all three; a demo starts over.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trilevel import userinput as ui

# The recipe shared by all three runs (tuned so the fixed-point Tri-Level run passes 90% on digits).
RECIPE: dict[str, Any] = {
    "model": "demo", "data": "digits", "epochs": 16, "batch_size": 32, "lr": 2e-3, "weight_decay": 0.05,
    "seed": 0,
}
TRI_LEVEL = {"keep_token": 0.5, "keep_attn": 0.5, "keep_example": 0.8}
DENSE = {"keep_token": 1.0, "keep_attn": 1.0, "keep_example": 1.0}
ACCURACY_GOAL, FLOAT_GAP = 0.90, 0.02
_SINGLE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class RunSpec:
    name: str  # folder and legend name
    backend: str  # csim | reference | torch
    ratios: dict[str, float]


def _runs(backend: str) -> list[RunSpec]:
    return [RunSpec("tri_level", backend, TRI_LEVEL), RunSpec("dense", backend, DENSE),
            RunSpec("float_tri_level", "torch", TRI_LEVEL)]


def _train_one(spec: RunSpec, out: str, recipe: dict[str, Any], take_ctrl_c: bool) -> None:
    """Child process: one training run, progress only through its metrics.jsonl, its output in
    train.log. Starts with Ctrl-C ignored (see _run_all) and takes it up once the imports are done,
    unless the demo itself ignores it (started in the background, nohup)."""
    import gc

    Path(out).mkdir(parents=True, exist_ok=True)
    sys.stderr = sys.stdout = open(Path(out) / LOG_FILE, "w", buffering=1, encoding="utf-8")
    import torch
    import torch._dynamo  # noqa: F401  (imported by the MAC counter's FlopCounterMode anyway)

    torch.set_num_threads(1)
    from trilevel.accel import trainer
    from trilevel.train_torch import TrainConfig, train

    # The imports made ~10^6 long-lived objects (torch, dynamo, sympy): exempt them from every later
    # collection, which would otherwise walk them all each time the training loop triggers one.
    gc.freeze()
    settings = {**recipe, **spec.ratios, "out": out, "progress": False}
    if take_ctrl_c:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if spec.backend == "torch":
            train(TrainConfig(**settings, attn_impl="gather"))  # the accelerator's attention semantics
        else:
            trainer.train(trainer.AccelTrainConfig(backend=spec.backend, **settings))
    except (ui.Interrupted, KeyboardInterrupt):
        raise SystemExit(ui.EXIT_INTERRUPTED) from None


def _line(name: str, r: dict[str, Any], dense_macs: float) -> str:
    saved = 1.0 - r["train_macs"] / dense_macs if dense_macs else 0.0
    zcu = f"  ZCU102 {r['zcu102_train_s']:6.2f}s/epoch" if "zcu102_train_s" in r else ""
    return (f"{name:16s} epoch {r['epoch']:2d}  host {r['wall_s']:6.1f}s  {r['images']:5d} img "
            f"({r['active_examples']} active)  R_T {r['keep_token']:.2f} R_A {r['keep_attn']:.2f} "
            f"R_e {r['keep_example']:.2f}  test {r['test_top1']:6.2%}  MACs saved {saved:6.1%}{zcu}")


LOG_FILE = "train.log"
# What a demo run leaves in its folder (a killed run also a stale lock and a temporary checkpoint).
DEMO_FILES = ("metrics.jsonl", "checkpoint.pt", LOG_FILE, "run.lock")


def _demo_file(name: str) -> bool:
    return name in DEMO_FILES or (name.startswith(".checkpoint.pt.") and name.endswith(".tmp"))


def _check_previous(run_dir: Path) -> None:
    foreign = [p.name for p in run_dir.iterdir() if not _demo_file(p.name)] if run_dir.exists() else []
    if foreign:
        raise ui.UserError(f"{run_dir} holds files a demo run did not write ({', '.join(foreign)}); "
                           "pick another --out")


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def run_demo(out: Path, backend: str = "csim", epochs: int | None = None, jobs: int | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Validate, lock `out`, replace a previous demo's runs there, run the three, summarize."""
    from trilevel import runlog

    for name, value in (("epochs", epochs), ("jobs", jobs)):  # API callers bypass argparse's types
        if value is not None:
            ui.check_range(name, value, 1)
    recipe = {**RECIPE, **({"epochs": epochs} if epochs is not None else {})}
    specs = _runs(backend)
    run_dirs = [out / spec.name for spec in specs]
    for run_dir in run_dirs:  # a re-run replaces the previous demo's runs, and nothing else
        _check_previous(run_dir)
    if backend == "csim":  # fail fast, before anything is written, if the library is missing
        from trilevel.accel import get_backend
        from trilevel.accel.interface import BackendError

        try:
            get_backend("csim")
        except (BackendError, OSError) as err:  # OSError: a library that does not load
            raise ui.UserError(f"--backend csim: {err}") from None
    out.mkdir(parents=True, exist_ok=True)
    with runlog.RunLock(out):
        for run_dir in run_dirs:
            _check_previous(run_dir)  # again, now that no other demo writes here
            for path in list(run_dir.iterdir()) if run_dir.exists() else []:
                path.unlink()
        return _run_all(out, backend, specs, recipe, jobs, progress)


def _run_all(out: Path, backend: str, specs: list[RunSpec], recipe: dict[str, Any], jobs: int | None,
             progress: bool) -> dict[str, Any]:
    from tqdm import tqdm

    from trilevel.config import get_config
    from trilevel.data import load_digits_split
    from trilevel.macs import MacCounter

    train_images = len(load_digits_split(seed=recipe["seed"])[0])
    dense_macs = train_images * MacCounter(get_config(recipe["model"])).count(1.0, 1.0, train=True)

    for var in _SINGLE_THREAD_ENV:  # each run is one process on one core: no spinning BLAS/OpenMP pools
        os.environ.setdefault(var, "1")
    t0 = time.perf_counter()
    # The OS shares the cores; the slowest (dense) run sets the pace either way.
    jobs = len(specs) if jobs is None else jobs
    ctx = mp.get_context("spawn")
    pending = list(specs)
    running: dict[str, Any] = {}
    seen = {spec.name: 0 for spec in specs}
    bars = {spec.name: tqdm(total=recipe["epochs"], desc=f"{spec.name} [{spec.backend}]", position=i,
                            leave=True, disable=ui.bars_disabled(progress), file=sys.stderr)
            for i, spec in enumerate(specs)}
    failed: list[str] = []
    try:
        while pending or running:
            while pending and len(running) < jobs:
                spec = pending.pop(0)
                take_ctrl_c = signal.getsignal(signal.SIGINT) != signal.SIG_IGN
                run_args = (spec, str(out / spec.name), recipe, take_ctrl_c)
                proc = ctx.Process(target=_train_one, args=run_args, name=spec.name)
                # Children start with Ctrl-C ignored (inherited): none dies mid-import with a traceback.
                handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
                try:
                    proc.start()
                finally:
                    signal.signal(signal.SIGINT, handler)
                running[spec.name] = proc
            time.sleep(0.5)
            for spec in specs:
                records = _read(out / spec.name / "metrics.jsonl")
                for r in records[seen[spec.name]:]:
                    bars[spec.name].update(1)
                    tqdm.write(_line(spec.name, r, dense_macs), file=sys.stdout)
                    sys.stdout.flush()
                seen[spec.name] = len(records)
            for name, proc in list(running.items()):
                if not proc.is_alive():
                    proc.join()
                    if proc.exitcode != 0:
                        failed.append(f"{name} (exit code {proc.exitcode}, see {out / name / LOG_FILE})")
                    del running[name]
    except KeyboardInterrupt:
        _stop(list(running.values()))
        raise ui.Interrupted(None, message=f"interrupted; the demo runs in {out} are incomplete and a demo "
                             "does not resume: rerun the command to start over") from None
    finally:
        for bar in bars.values():
            bar.close()
    if failed:
        raise DemoRunFailed(f"demo runs failed: {', '.join(failed)}")
    total_s = time.perf_counter() - t0

    runs = {spec.name: _read(out / spec.name / "metrics.jsonl") for spec in specs}
    summary = _summarize(specs, runs, recipe, dense_macs, total_s, backend)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(specs, runs, out / "accuracy_vs_time.png")
    return summary


class DemoRunFailed(RuntimeError):
    """A training run of the demo ended with an error (its traceback is in its train.log)."""


def _stop(procs: list[Any], grace_s: float = 10.0) -> None:
    """After Ctrl-C: the children got it too (or get it now) and leave at their next step; a child
    still starting (Ctrl-C ignored) or stuck is terminated after `grace_s`."""
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.terminate()
            proc.join()


def _summarize(specs: list[RunSpec], runs: dict[str, list[dict]], recipe: dict[str, Any], dense_macs: float,
               total_s: float, backend: str) -> dict[str, Any]:
    per_run = {}
    for spec in specs:
        records = runs[spec.name]
        last = records[-1]
        per_run[spec.name] = {
            "backend": spec.backend, **spec.ratios,
            "final_test_top1": last["test_top1"], "best_test_top1": max(r["test_top1"] for r in records),
            "host_train_s": last["cumulative_wall_s"], "images": last["cumulative_images"],
            "train_macs": last["cumulative_train_macs"],
            "macs_saved": 1.0 - last["cumulative_train_macs"] / (dense_macs * len(records)),
            "projected_zcu102_s": last.get("cumulative_zcu102_s"),
        }
    tri, dense, flt = per_run["tri_level"], per_run["dense"], per_run["float_tri_level"]
    return {
        "recipe": recipe, "backend": backend, "demo_wall_s": round(total_s, 1), "runs": per_run,
        "tri_level_vs_dense": {
            "host_speedup": dense["host_train_s"] / tri["host_train_s"],
            "projected_zcu102_speedup": (dense["projected_zcu102_s"] / tri["projected_zcu102_s"]
                                         if tri["projected_zcu102_s"] else None),
            "accuracy_delta": tri["final_test_top1"] - dense["final_test_top1"],
        },
        "checks": {
            f"tri_level_reaches_{ACCURACY_GOAL:.0%}": tri["final_test_top1"] >= ACCURACY_GOAL,
            # Fixed-point fidelity: the 16-bit run may not fall more than FLOAT_GAP below the float golden.
            # Above it is no loss (single-seed digits runs vary by a few points either way).
            f"tri_level_at_most_{FLOAT_GAP * 100:.0f}_points_below_float": (
                tri["final_test_top1"] >= flt["final_test_top1"] - FLOAT_GAP),
        },
    }


def _plot(specs: list[RunSpec], runs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for spec in specs:
        records = runs[spec.name]
        acc = [r["test_top1"] for r in records]
        label = f"{spec.name} ({spec.backend})"
        axes[0].plot([r["cumulative_wall_s"] for r in records], acc, marker="o", ms=3, label=label)
        if "cumulative_zcu102_s" in records[0]:
            axes[1].plot([r["cumulative_zcu102_s"] for r in records], acc, marker="o", ms=3, label=label)
    axes[0].set_xlabel("host wall time (s)")
    axes[1].set_xlabel("projected ZCU102 training time (s, trilevel.latency)")
    for ax in axes:
        ax.set_ylabel("test top-1 (digits)")
        ax.axhline(ACCURACY_GOAL, color="gray", lw=0.8, ls="--")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("Tri-Level E-ViT vs dense: accuracy vs cumulative training time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _run(args: argparse.Namespace) -> int:
    try:
        summary = run_demo(Path(args.out), args.backend, args.epochs, args.jobs, args.progress)
    except DemoRunFailed as err:
        print(f"trilevel demo: {err}", file=sys.stderr)
        return 1
    runs = summary["runs"]
    print(f"\ndemo finished in {summary['demo_wall_s']:.0f} s; results in {args.out}")
    for name, r in runs.items():
        zcu = f", projected ZCU102 {r['projected_zcu102_s']:.1f} s" if r["projected_zcu102_s"] else ""
        print(f"  {name:16s} test {r['final_test_top1']:.2%}  host {r['host_train_s']:.0f} s{zcu}, "
              f"MACs saved {r['macs_saved']:.1%}")
    for check, ok in summary["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {check}")
    return 0 if all(summary["checks"].values()) else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="Tri-Level vs dense on digits through the C-sim accelerator",
                              description=__doc__)
    p.add_argument("--out", type=ui.output_dir, required=True, help="output folder (one subfolder per run)")
    p.add_argument("--backend", choices=("csim", "reference"), default="csim",
                   help="fixed-point backend of the two accelerator runs")
    p.add_argument("--epochs", type=ui.POSITIVE_INT, default=None, help=f"default {RECIPE['epochs']}")
    p.add_argument("--jobs", type=ui.POSITIVE_INT, default=None, help="runs at a time (default: all three)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=_run)
