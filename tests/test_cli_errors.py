"""Bad input never gets a traceback: every command refuses it with one line on stderr and exit code 2,
before writing anything (trilevel.userinput). Runs the CLI in-process (one torch import for all)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from trilevel import cli

FIXTURE = "{fx}"  # replaced by the fixture folder in each argv


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Damaged inputs: checkpoints, a junk library/pack, image folders with an undecodable file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("fixtures")
    real = root / "real.pt"
    torch.save({"model": {"w": torch.zeros(64, 64)}}, real)
    data = real.read_bytes()
    (root / "junk.bin").write_bytes(b"not a checkpoint, a library or a pack\n" * 8)
    (root / "random.pt").write_bytes(os.urandom(4096))
    for name, content in {"zero": b"", "truncated": data[: len(data) // 2], "random": os.urandom(4096),
                          "junk": b"PK\x03\x04 not really a zip"}.items():
        run = root / f"run_{name}"
        run.mkdir()
        (run / "checkpoint.pt").write_bytes(content)
    run = root / "run_foreign"  # a readable checkpoint of something else
    run.mkdir()
    torch.save({"epoch": 3}, run / "checkpoint.pt")
    done = root / "run_done"
    done.mkdir()
    (done / "metrics.jsonl").write_text('{"epoch": 1}\n')
    for bad_split in ("train", "val"):
        folder = root / f"images_bad_{bad_split}"
        for split in ("train", "val"):
            for label in ("a", "b"):
                (folder / split / label).mkdir(parents=True)
                Image.new("RGB", (12, 12), (40, 90, 200)).save(folder / split / label / "ok.png")
        (folder / bad_split / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    return root


_TRAIN = ["train", "--out", "out", "--data", "synthetic", "--epochs", "1", "--batch-size", "100"]
_REF = [*_TRAIN, "--backend", "reference"]
# (argv, what the one line must name). The fixture folder is FIXTURE; "out" must never appear.
BAD_INVOCATIONS: list[tuple[list[str], str]] = [
    # train: numeric options (zero, negative, non-finite, not a number)
    ([*_TRAIN, "--epochs", "0"], "--epochs"),
    ([*_TRAIN, "--epochs", "-3"], "--epochs"),
    ([*_TRAIN, "--epochs", "ten"], "--epochs"),
    ([*_TRAIN, "--batch-size", "0"], "--batch-size"),
    ([*_TRAIN, "--keep-token", "0"], "--keep-token"),
    ([*_TRAIN, "--keep-attn", "nan"], "--keep-attn"),
    ([*_TRAIN, "--keep-example", "1.5"], "--keep-example"),
    ([*_TRAIN, "--lr", "inf"], "--lr"),
    ([*_TRAIN, "--lr", "0"], "--lr"),
    ([*_TRAIN, "--lr=-1e-3"], "--lr"),
    ([*_TRAIN, "--min-lr", "nan"], "--min-lr"),
    ([*_TRAIN, "--warmup-epochs=-1"], "--warmup-epochs"),
    ([*_TRAIN, "--weight-decay=-inf"], "--weight-decay"),
    ([*_TRAIN, "--keep-decay-epochs", "inf"], "--keep-decay-epochs"),
    ([*_TRAIN, "--example-period", "0"], "--example-period"),
    ([*_TRAIN, "--example-remove-frac", "1"], "--example-remove-frac"),
    ([*_TRAIN, "--drop-path", "1.0"], "--drop-path"),
    ([*_TRAIN, "--label-smoothing=-0.1"], "--label-smoothing"),
    ([*_TRAIN, "--img-size", "0"], "--img-size"),
    ([*_TRAIN, "--seed=-1"], "--seed"),
    ([*_TRAIN, "--stop-after", "0"], "--stop-after"),
    ([*_TRAIN, "--num-workers=-1"], "--num-workers"),
    ([*_TRAIN, "--device", "tpu"], "--device"),
    ([*_TRAIN, "--frobnicate"], "--frobnicate"),
    # train: paths, data, checkpoints, libraries
    (["train", "--out", f"{FIXTURE}/junk.bin/run"], "junk.bin"),
    ([*_TRAIN, "--data", "no/such/folder"], "no/such/folder"),
    ([*_TRAIN, "--data", f"imagefolder:{FIXTURE}/images_bad_train"], "broken.png"),
    ([*_TRAIN, "--data", f"imagefolder:{FIXTURE}/images_bad_val"], "broken.png"),
    (["train", "--out", f"{FIXTURE}/run_zero", "--resume"], "run_zero/checkpoint.pt"),
    (["train", "--out", f"{FIXTURE}/run_truncated", "--resume"], "run_truncated/checkpoint.pt"),
    (["train", "--out", f"{FIXTURE}/run_random", "--resume"], "run_random/checkpoint.pt"),
    (["train", "--out", f"{FIXTURE}/run_junk", "--resume"], "run_junk/checkpoint.pt"),
    (["train", "--out", f"{FIXTURE}/run_foreign", "--resume"], "run_foreign/checkpoint.pt"),
    (["train", "--out", f"{FIXTURE}/run_done"], "--resume"),
    (["train", "--backend", "reference", "--out", f"{FIXTURE}/run_zero", "--resume"], "run_zero/"),
    (["train", "--backend", "csim", "--out", f"{FIXTURE}/run_random", "--resume"], "run_random/"),
    ([*_REF, "--data", f"imagefolder:{FIXTURE}/images_bad_val"], "broken.png"),
    ([*_TRAIN, "--backend", "csim", "--csim-lib", f"{FIXTURE}/junk.bin"], "junk.bin"),
    ([*_TRAIN, "--backend", "csim", "--csim-lib", "no/such/lib.so"], "no/such/lib.so"),
    ([*_REF, "--micro-batch", "0"], "--micro-batch"),
    ([*_REF, "--momentum", "nan"], "--momentum"),
    ([*_REF, "--attn-impl", "mask"], "mask"),
    ([*_TRAIN, "--micro-batch", "4"], "--micro-batch"),
    # demo
    (["demo", "--out", "out", "--epochs", "0"], "--epochs"),
    (["demo", "--out", "out", "--epochs", "nan"], "--epochs"),
    (["demo", "--out", "out", "--jobs", "0"], "--jobs"),
    (["demo", "--out", f"{FIXTURE}/junk.bin"], "junk.bin"),
    # macs
    (["macs", "--keep-token", "0"], "--keep-token"),
    (["macs", "--keep-attn", "2"], "--keep-attn"),
    (["macs", "--epochs", "0"], "--epochs"),
    (["macs", "--num-examples", "100"], "--num-examples"),
    (["macs", "--epochs", "10", "--batch-size", "0"], "--batch-size"),
    (["macs", "--epochs", "10", "--keep-decay-epochs", "nan"], "--keep-decay-epochs"),
    # latency
    (["latency", "--clock-mhz", "0"], "--clock-mhz"),
    (["latency", "--pe-rows", "0"], "--pe-rows"),
    (["latency", "--ddr-gbps", "nan"], "--ddr-gbps"),
    (["latency", "--dataset-size", "0"], "--dataset-size"),
    (["latency", "--launch-cycles=-1"], "--launch-cycles"),
    (["latency", "--micro-batch", "0"], "--micro-batch"),
    # bench
    (["bench", "--out", "out", "--threads", "0"], "--threads"),
    (["bench", "--out", "out", "--sections", "no_such_module:fn"], "no_such_module:fn"),
    (["bench", "--out", "out", "--models", "resnet"], "--models"),
    # export
    (["export", "onnx", "--checkpoint", f"{FIXTURE}/junk.bin", "--out", "out/m.onnx"], "junk.bin"),
    (["export", "onnx", "--checkpoint", f"{FIXTURE}/run_zero/checkpoint.pt", "--out", "out/m.onnx"],
     "checkpoint.pt"),
    (["export", "onnx", "--model", "demo", "--keep-token", "0", "--out", "out/m.onnx"], "--keep-token"),
    (["export", "onnx", "--model", "demo", "--opset", "12", "--out", "out/m.onnx"], "--opset"),
    (["export", "pack", "--checkpoint", "no/such.pt", "--out", "out/w.tlpack"], "no/such.pt"),
    (["export", "pack", "--out", "out/w.tlpack"], "--checkpoint"),
    (["export", "pack", "--checkpoint", f"{FIXTURE}/random.pt", "--out", "out/w.tlpack"], "random.pt"),
    (["export", "pack", "--checkpoint", f"{FIXTURE}/real.pt", "--out", "out/w.tlpack"], "--model"),
    (["export", "pack", "--model", "demo", "--seed", "nan", "--out", "out/w.tlpack"], "--seed"),
    (["export", "import", f"{FIXTURE}/junk.bin", "--out", "out/back.pt"], "junk.bin"),
    (["export", "inspect", "no/such.tlpack"], "no/such.tlpack"),
    # compare, program (their own semantic checks live with them; these are the shared rule's)
    (["compare", "--out", "out", "--epochs", "0"], "--epochs"),
    (["compare", "--out", "out", "--lr", "nan"], "--lr"),
    (["compare", "--out", "out", "--methods", "no_such_method"], "no_such_method"),
    (["program", "--tokens", "0"], "--tokens"),
    (["program", "--batch", "-2"], "--batch"),
    # the command itself
    ([], "command"),
    (["frobnicate"], "frobnicate"),
]


def _files(*roots: Path) -> set[Path]:
    return {p for root in roots for p in root.rglob("*")}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as done:  # main returns exit codes; a SystemExit escaping it is a bug too
        pytest.fail(f"SystemExit({done.code}) escaped cli.main")
    return code, capsys.readouterr().err.splitlines()


def test_the_table_is_large_and_covers_every_command() -> None:
    assert len(BAD_INVOCATIONS) >= 40
    commands = {argv[0] for argv, _ in BAD_INVOCATIONS if argv}
    assert set(next(a for a in cli.build_parser()._actions if a.dest == "command").choices) <= commands


@pytest.mark.parametrize(
    ("argv", "names"), BAD_INVOCATIONS, ids=[" ".join(a) or "<none>" for a, _ in BAD_INVOCATIONS]
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    argv: list[str], names: str, fx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [a.replace(FIXTURE, str(fx)) for a in argv]
    before = _files(fx, tmp_path)
    code, err = _run(argv, capsys)
    assert code == 2, err
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and err[0].startswith("trilevel") and "error:" in err[0], err
    assert names.replace(FIXTURE, str(fx)) in err[0], err
    assert _files(fx, tmp_path) == before  # no --out folder, lock file or partial output


def test_every_command_refuses_an_unknown_option_in_one_line(capsys) -> None:
    """Also the commands added later: argparse's errors are one line for all (required options first)."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        nested = [a for a in sub._actions if getattr(a, "choices", None) and a.dest.endswith("_command")]
        for path in [[name, s] for s in nested[0].choices] if nested else [[name]]:
            code, err = _run([*path, "--no-such-option"], capsys)
            assert code == 2 and len(err) == 1 and err[0].startswith(f"trilevel {path[0]}"), (path, err)
            assert "Traceback" not in err[0] and "error:" in err[0], (path, err)


def test_help_still_exits_0(capsys) -> None:
    assert cli.main(["train", "--help"]) == 0
    assert "--bad-images" in capsys.readouterr().out


def _all_parsers(parser, path=("trilevel",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(getattr(action, "choices", None), dict):  # a subparsers action
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*path, name))


def test_no_option_parses_with_a_bare_int_or_float() -> None:
    """The rule lives in trilevel.userinput: a bare int/float type would accept 0, negatives or nan."""
    bare = [
        f"{' '.join(path)} {action.option_strings or action.dest}"
        for path, parser in _all_parsers(cli.build_parser())
        for action in parser._actions
        if action.type in (int, float)
    ]
    assert not bare, f"use a trilevel.userinput type for {bare}"
