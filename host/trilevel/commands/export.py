"""`trilevel export onnx|pack|import|inspect`: move weights between PyTorch, ONNX and the board pack."""

from __future__ import annotations

import argparse
import json

from trilevel import userinput as ui
from trilevel.config import CONFIGS


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        type=ui.existing_file,
        help="PyTorch checkpoint: a `trilevel train` run's checkpoint.pt (any backend), a state dict, "
        "or a dict with 'model'/'state_dict'",
    )
    p.add_argument(
        "--model",
        choices=sorted(CONFIGS),
        help="model config name (default: the config recorded in the checkpoint)",
    )
    p.add_argument("--seed", type=ui.SEED, default=0, help="init seed when no --checkpoint is given")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export to ONNX / the board weight pack, import packs")
    sub = parser.add_subparsers(dest="export_command", required=True)

    p = sub.add_parser("onnx", help="PyTorch -> ONNX (TA-selector TopK/Gather in the graph)")
    _add_source(p)
    p.add_argument("--out", type=ui.output_file, required=True, help="output .onnx path")
    p.add_argument("--keep-token", type=ui.KEEP_RATIO, default=1.0, help="token keep ratio R_T (1 = dense)")
    p.add_argument(
        "--keep-attn", type=ui.KEEP_RATIO, default=1.0, help="attention keep ratio R_A (1 = dense)"
    )
    p.add_argument("--opset", type=ui.int_in(17), default=18, help="ONNX opset (LayerNormalization: >= 17)")
    p.add_argument(
        "--selections", action="store_true", help="also output kept patch ids and connection lists"
    )
    p.set_defaults(func=_onnx)

    p = sub.add_parser("pack", help="PyTorch -> fixed-point weight pack for the board")
    _add_source(p)
    p.add_argument("--out", type=ui.output_file, required=True, help="output pack path (.tlpack)")
    p.add_argument("--master", action="store_true", help="also store fp32 master weights (training on board)")
    p.set_defaults(func=_pack)

    p = sub.add_parser("import", help="weight pack -> PyTorch checkpoint")
    p.add_argument("pack", type=ui.existing_file, help="input pack")
    p.add_argument("--out", type=ui.output_file, required=True, help="output checkpoint (.pt)")
    p.set_defaults(func=_import)

    p = sub.add_parser("inspect", help="verify a pack and print its manifest summary")
    p.add_argument("pack", type=ui.existing_file)
    p.add_argument("--json", action="store_true", help="print the tensor table as JSON")
    p.set_defaults(func=_inspect)


def _guarded(run):
    """Run a subcommand body; model_export's errors (bad checkpoints, packs, ratios) are user errors."""

    def wrapper(args: argparse.Namespace) -> int:
        from model_export.pack import ExportError

        try:
            return run(args)
        except ExportError as e:
            raise ui.UserError(str(e)) from None

    return wrapper


def _load_model(args: argparse.Namespace):
    import torch

    from model_export.checkpoint import load_checkpoint, resolve_config
    from model_export.pack import load_state_checked
    from trilevel.model import build_model

    if args.checkpoint is None:
        if args.model is None:
            raise ui.UserError(
                "give --checkpoint or --model (the latter exports a freshly initialized model)"
            )
        torch.manual_seed(args.seed)
        print(f"note: no --checkpoint, using {args.model!r} initialized with seed {args.seed}")
        return build_model(args.model)
    state, ckpt_cfg = load_checkpoint(args.checkpoint)
    cfg = resolve_config(ckpt_cfg, args.model, args.checkpoint)
    model = build_model(cfg)
    load_state_checked(model, state, args.checkpoint)
    return model


@_guarded
def _onnx(args: argparse.Namespace) -> int:
    from model_export.onnx_export import export_onnx

    model = _load_model(args)
    path = export_onnx(model, args.out, args.keep_token, args.keep_attn, args.opset, args.selections)
    print(f"wrote {path} (opset {args.opset}, keep_token {args.keep_token}, keep_attn {args.keep_attn})")
    return 0


@_guarded
def _pack(args: argparse.Namespace) -> int:
    from model_export.pack import pack_state_dict, write_pack

    model = _load_model(args)
    pack = pack_state_dict(model.state_dict(), model.cfg, master=args.master)
    digest = write_pack(args.out, pack)
    n_bytes = sum(t.data.nbytes for t in pack.tensors)
    print(f"wrote {args.out}: {len(pack.tensors)} tensors, {n_bytes} payload bytes, sha256 {digest}")
    return 0


@_guarded
def _import(args: argparse.Namespace) -> int:
    from model_export.checkpoint import save_checkpoint
    from model_export.pack import config_from_json, load_into, read_pack
    from trilevel.model import build_model

    pack = read_pack(args.pack)
    cfg = config_from_json(pack.model, args.pack)
    model = build_model(cfg)
    load_into(model, pack, args.pack)
    save_checkpoint(args.out, model.state_dict(), cfg)
    print(f"wrote {args.out} ({cfg.name}, {len(pack.names)} tensors)")
    return 0


@_guarded
def _inspect(args: argparse.Namespace) -> int:
    from model_export.pack import read_pack

    pack = read_pack(args.pack)
    rows = [
        {
            "name": t.name,
            "kind": t.kind,
            "dtype": str(t.data.dtype),
            "shape": list(t.data.shape),
            "frac": t.frac,
        }
        for t in pack.tensors
    ]
    if args.json:
        print(json.dumps({"model": pack.model, "tensors": rows}, indent=1))
        return 0
    print(f"{args.pack}: valid pack, model {pack.model.get('name')!r}, {len(rows)} tensors")
    for r in rows:
        frac = "" if r["frac"] is None else f" frac {r['frac']}"
        print(f"  {r['name']:<40} {r['kind']:<7} {r['dtype']:<8} {str(r['shape']):<18}{frac}")
    return 0
