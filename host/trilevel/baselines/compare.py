"""`trilevel compare`: the paper's Table-3 comparison on your data, one recipe and seed for every method.

Each method is a set of `TrainConfig` overrides (`PRESETS`); `run_comparison` trains them one after the
other into ``OUT/<method>/`` (a finished method is skipped, an interrupted one resumes from its last
checkpoint), then `summarize` writes ``OUT/compare.md``, ``OUT/compare.json`` and
``OUT/accuracy_vs_time.png``. Time reduction and MACs saving are relative to ``dense``, which every
comparison includes.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trilevel import runlog
from trilevel.fileio import atomic_write


@dataclass(frozen=True)
class Preset:
    level: str  # example | token | attention | weights | all | none
    keep: str  # the keep ratio as the table shows it
    overrides: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # who proposed it


# The paper's Table 3 rows (DeiT-S keep ratios), plus Table 1's token and weight-sparsity baselines.
PRESETS: dict[str, Preset] = {
    "dense": Preset("none", "1.0", {}, "baseline"),
    "tri_level": Preset(
        "all", "0.8/0.7/0.3", {"keep_example": 0.8, "keep_token": 0.7, "keep_attn": 0.3}, "Kong et al. 2023"
    ),
    "example_forgetting": Preset("example", "0.8", {"keep_example": 0.8}, "Kong et al. 2023 (ours)"),
    "example_random": Preset(
        "example", "0.8", {"keep_example": 0.8, "example_policy": "random"}, "Table 3 Random"
    ),
    "active_bias": Preset(
        "example", "0.8", {"keep_example": 0.8, "example_policy": "active_bias"}, "Chang et al. 2017"
    ),
    "two_phase": Preset(
        "example", "0.8", {"keep_example": 0.8, "example_policy": "two_phase"}, "Toneva et al. 2018"
    ),
    "token_cls_attention": Preset("token", "0.7", {"keep_token": 0.7}, "Kong et al. 2023 (ours)"),
    "token_static": Preset("token", "0.7", {"keep_token": 0.7, "token_policy": "static"}, "Table 3 Static"),
    "evit": Preset("token", "0.7", {"keep_token": 0.7, "token_policy": "evit"}, "Liang et al. 2022"),
    "dynamicvit": Preset("token", "0.7", {"keep_token": 0.7, "method": "dynamicvit"}, "Rao et al. 2021"),
    "attn_topk": Preset("attention", "0.3", {"keep_attn": 0.3}, "Kong et al. 2023 (ours)"),
    "magnitude": Preset("attention", "0.5", {"keep_attn": 0.5, "attn_policy": "magnitude"}, "Table 3"),
    "longformer": Preset(
        "attention", "0.2", {"keep_attn": 0.2, "attn_policy": "longformer"}, "1-D window (old approximation)"
    ),
    "longformer2d": Preset(
        "attention", "0.2", {"keep_attn": 0.2, "attn_policy": "longformer2d"}, "Beltagy et al. 2020"
    ),
    "svite": Preset("weights", "density 0.5", {"method": "svite:density=0.5"}, "Chen et al. 2021"),
    "s2vite": Preset("weights", "heads 0.5", {"method": "s2vite:density=0.5"}, "Chen et al. 2021"),
}
DEFAULT_METHODS = (
    "dense",
    "tri_level",
    "example_forgetting",
    "example_random",
    "active_bias",
    "two_phase",
    "token_cls_attention",
    "token_static",
    "evit",
    "dynamicvit",
    "attn_topk",
    "magnitude",
    "longformer2d",
    "s2vite",
)


# What a preset may change for the patched timm models (Swin/PiT: token and example levels only).
_TIMM_OVERRIDES = {"keep_example", "keep_token", "example_policy"}


def timm_presets() -> list[str]:
    """The presets the Swin/PiT models can run (no attention level, token policy or trainer mode)."""
    return [name for name, preset in PRESETS.items() if set(preset.overrides) <= _TIMM_OVERRIDES]


def parse_methods(text: str | None, model: str = "demo") -> list[str]:
    """Comma-separated preset names (or "all"; None: the defaults), with "dense" added first when
    missing. For a timm model (Swin/PiT) "all" and the defaults mean the presets it can run."""
    from trilevel.config import TIMM_CONFIGS

    timm = model in TIMM_CONFIGS
    if text is None:
        names = [n for n in DEFAULT_METHODS if not timm or n in timm_presets()]
    elif text.strip() == "all":
        names = timm_presets() if timm else list(PRESETS)
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)} or all")
    if not names:
        raise ValueError("no methods given")
    refused = [n for n in names if timm and n not in timm_presets()]
    if refused:
        raise ValueError(
            f"--model {model} has the token and example levels only: {', '.join(refused)} need a ViT "
            f"model; choose from {', '.join(timm_presets())}"
        )
    ordered = ["dense"] + [n for n in dict.fromkeys(names) if n != "dense"]
    return ordered


def method_config(base: Any, name: str, out: Path) -> Any:
    """The TrainConfig of one method: the shared recipe plus the preset's overrides, in OUT/<name>."""
    return replace(base, out=out / name, resume=True, **PRESETS[name].overrides)


def finished(run_dir: Path, epochs: int) -> bool:
    records = runlog.read_metrics(run_dir)
    return bool(records) and records[-1]["epoch"] >= epochs


def run_comparison(base: Any, methods: list[str], out: Path, progress: bool = True) -> list[dict[str, Any]]:
    """Train every method (skipping finished ones) and write the summary; returns the table rows."""
    from trilevel.train_torch import train  # torch and the data stack load only when training

    epochs = base.resolved().epochs
    for i, name in enumerate(methods, 1):
        config = method_config(base, name, out)
        state = "done" if finished(config.out, epochs) else "running"
        if progress:
            print(
                f"[{i}/{len(methods)}] {name} ({PRESETS[name].level}, keep {PRESETS[name].keep}): {state}",
                file=sys.stderr,
            )
        if state == "running":
            started = time.process_time()
            try:
                train(config)
            finally:  # an interrupted run's CPU time counts too (the resumed run repeats its partial epoch)
                if Path(config.out).is_dir():  # a refused run created nothing, and gets nothing
                    add_cpu_time(config.out, time.process_time() - started)
    rows = summarize(out, methods, epochs, machine(base.device))
    if progress:
        print(format_table(rows), file=sys.stderr)
    return rows


CPU_TIME_FILE = "cpu_time.json"


def add_cpu_time(run_dir: Path, seconds: float) -> None:
    """Accumulate the CPU time (all threads of this process) that training a method took."""
    path = run_dir / CPU_TIME_FILE
    total = seconds + (json.loads(path.read_text())["cpu_s"] if path.exists() else 0.0)
    text = json.dumps({"cpu_s": round(total, 3)})
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def cpu_time(run_dir: Path) -> float | None:
    path = run_dir / CPU_TIME_FILE
    return json.loads(path.read_text())["cpu_s"] if path.exists() else None


def machine(device: str) -> dict[str, Any]:
    """Where the comparison ran (its wall times are only comparable on one machine)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if device != "cpu" and torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def summarize(
    out: Path, methods: list[str], epochs: int, host: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The Table-3-like rows from each method's metrics.jsonl; writes compare.md/.json and the plot."""
    curves = {name: runlog.read_metrics(out / name)[:epochs] for name in methods}
    dense = curves["dense"][-1]
    dense_cpu = cpu_time(out / "dense")
    rows = []
    for name in methods:
        last = curves[name][-1]
        preset = PRESETS[name]
        cpu = cpu_time(out / name)
        rows.append(
            {
                "method": name,
                "level": preset.level,
                "source": preset.source,
                "keep_ratio": preset.keep,
                "epochs": last["epoch"],
                "train_wall_s": last["cumulative_wall_s"],
                "time_reduction": 1.0 - last["cumulative_wall_s"] / dense["cumulative_wall_s"],
                "train_cpu_s": cpu,
                "cpu_time_reduction": None if cpu is None or not dense_cpu else 1.0 - cpu / dense_cpu,
                "train_macs": last["cumulative_train_macs"],
                "macs_saving": 1.0 - last["cumulative_train_macs"] / dense["cumulative_train_macs"],
                "top1": last["test_top1"],
                "best_top1": max(r["test_top1"] for r in curves[name]),
                **{k: v for k, v in last.items() if k.startswith("svite_sparsity")},
            }
        )
    text = format_table(rows) + "\n"
    if host:
        where = host["gpu"] or f"{host['cpu']}, {host['cores']} cores, {host['torch_threads']} torch threads"
        text += f"\nMachine: {where}; torch {host['torch']}; finished {host['finished']}.\n"
    atomic_write(out / "compare.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    payload = json.dumps({"machine": host, "rows": rows, "curves": curves}, indent=1)
    atomic_write(out / "compare.json", lambda tmp: tmp.write_text(payload, encoding="utf-8"))
    plot(curves, out / "accuracy_vs_time.png")
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | level | keep ratio | training time reduced (wall / CPU) | MACs saving | top-1 (%) "
        "| wall (s) | CPU (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def share(value: float | None, dense: bool) -> str:
        return "-" if dense else "n/a" if value is None else f"{value:.1%}"

    for r in rows:
        dense = r["method"] == "dense"
        cpu = "n/a" if r["train_cpu_s"] is None else f"{r['train_cpu_s']:.1f}"
        lines.append(
            f"| {r['method']} | {r['level']} | {r['keep_ratio']} | "
            f"{share(r['time_reduction'], dense)} / {share(r['cpu_time_reduction'], dense)} | "
            f"{share(r['macs_saving'], dense)} | {100 * r['top1']:.2f} | {r['train_wall_s']:.1f} | {cpu} |"
        )
    return "\n".join(lines)


def plot(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    palette = plt.get_cmap("tab20")
    for i, (name, records) in enumerate(curves.items()):
        ax.plot(
            [r["cumulative_wall_s"] for r in records],
            [100 * r["test_top1"] for r in records],
            marker="os^vD"[i % 5],
            markersize=3,
            color={"dense": "black", "tri_level": "crimson"}.get(name, palette(i % 20)),
            label=name,
            linewidth=2.0 if name in ("dense", "tri_level") else 1.0,
        )
    ax.set_xlabel("cumulative training time (s, train + eval)")
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
