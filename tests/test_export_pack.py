"""The board weight pack: exact round trips, and every defect refused with PackError."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random

import numpy as np
import pytest
import torch

from model_export import pack as pk
from model_export.checkpoint import load_checkpoint
from trilevel.cli import main as cli_main
from trilevel.config import get_config
from trilevel.intref import fixed
from trilevel.model import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("demo")


@pytest.fixture(scope="module")
def pack_bytes(model) -> bytes:
    return pk.encode_pack(pk.pack_state_dict(model.state_dict(), model.cfg))


def split(data: bytes) -> tuple[dict, bytes]:
    """(manifest, payload) of valid pack bytes."""
    _, _, n, _ = pk.HEADER.unpack_from(data)
    manifest = json.loads(data[pk.HEADER.size : pk.HEADER.size + n])
    start = -(-(pk.HEADER.size + n) // pk.ALIGN) * pk.ALIGN
    return manifest, data[start:]


def resign(
    manifest: object, payload: bytes, version: int = pk.PACK_VERSION, raw: bytes | None = None
) -> bytes:
    """Pack bytes with a (possibly bad) manifest but correct checksums, to reach the semantic checks."""
    body = raw if raw is not None else json.dumps(manifest).encode()
    head = pk.HEADER.pack(pk.MAGIC, version, len(body), hashlib.sha256(body).digest()) + body
    return head + bytes(-len(head) % pk.ALIGN) + payload


def test_quantized_weights_round_trip_exactly(model, pack_bytes):
    pack = pk.decode_pack(pack_bytes)
    state = model.state_dict()
    assert pack.names == list(state)
    imported = pk.unpack_state_dict(pack)
    for name, value in state.items():
        t = pack.get(name, "fixed")
        assert t.data.dtype == np.int16 and t.data.shape == tuple(value.shape)
        # The pack holds exactly intref's quantization, and import gives back exactly those values.
        assert t.frac == fixed.choose_frac(float(value.abs().max()))
        np.testing.assert_array_equal(t.data, fixed.quantize(value.numpy(), t.frac))
        np.testing.assert_array_equal(fixed.quantize(imported[name].numpy(), t.frac), t.data)
        assert float((imported[name] - value).abs().max()) <= 2.0 ** -(t.frac + 1)


def test_master_copies_round_trip_bit_exactly(model):
    pack = pk.decode_pack(pk.encode_pack(pk.pack_state_dict(model.state_dict(), model.cfg, master=True)))
    imported = pk.unpack_state_dict(pack)
    for name, value in model.state_dict().items():
        assert torch.equal(imported[name], value)
    fresh = build_model("demo")
    pk.load_into(fresh, pack)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(fresh(x, 0.7, 0.5), model(x, 0.7, 0.5))


def test_file_round_trip_is_deterministic_and_checksummed(model, tmp_path):
    pack = pk.pack_state_dict(model.state_dict(), model.cfg)
    digest = pk.write_pack(tmp_path / "a.tlpack", pack)
    assert digest == hashlib.sha256((tmp_path / "a.tlpack").read_bytes()).hexdigest()
    back = pk.read_pack(tmp_path / "a.tlpack")
    assert pk.write_pack(tmp_path / "b.tlpack", back) == digest
    assert pk.config_from_json(back.model) == model.cfg
    manifest, payload = split((tmp_path / "a.tlpack").read_bytes())
    assert all(e["offset"] % pk.ALIGN == 0 for e in manifest["tensors"])
    assert manifest["payload_sha256"] == hashlib.sha256(payload).hexdigest()


def test_raw_tensors_and_zero_sized_tensors_survive():
    state = {"w": torch.zeros(0, 3), "steps": torch.tensor([3, -1], dtype=torch.int64), "b": torch.ones(2)}
    pack = pk.decode_pack(pk.encode_pack(pk.pack_state_dict(state, get_config("demo"))))
    back = pk.unpack_state_dict(pack)
    assert back["w"].shape == (0, 3) and back["steps"].tolist() == [3, -1] and back["b"].tolist() == [1, 1]


@pytest.mark.parametrize("seed", range(40))
def test_random_byte_flips_are_refused(pack_bytes, seed):
    rng = random.Random(seed)
    data = bytearray(pack_bytes)
    for _ in range(rng.randint(1, 3)):
        # Half the flips hit the header + manifest, half anywhere: every byte is covered by a check.
        i = rng.randrange(4096) if seed % 2 else rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    with pytest.raises(pk.PackError):
        pk.decode_pack(bytes(data))


@pytest.mark.parametrize("seed", range(20))
def test_truncations_and_trailing_bytes_are_refused(pack_bytes, seed):
    rng = random.Random(seed)
    cut = rng.choice([rng.randrange(64), rng.randrange(len(pack_bytes))])
    with pytest.raises(pk.PackError, match="truncated"):
        pk.decode_pack(pack_bytes[:cut])
    with pytest.raises(pk.PackError, match="trailing"):
        pk.decode_pack(pack_bytes + bytes(rng.randint(1, 100)))


def test_wrong_magic_and_version_are_named(pack_bytes):
    with pytest.raises(pk.PackError, match="not a trilevel weight pack"):
        pk.decode_pack(b"PK\x03\x04" + pack_bytes[4:])
    manifest, payload = split(pack_bytes)
    with pytest.raises(pk.PackError, match="unsupported pack version 2"):
        pk.decode_pack(resign(manifest, payload, version=2))


def _bad_manifests(manifest: dict) -> list[tuple[str, object]]:
    first = 0
    cases: list[tuple[str, object]] = [
        ("not a JSON object", [1, 2]),
        ("format", {**manifest, "format": "npz"}),
    ]
    cases.append(("version", {**manifest, "version": 3}))
    cases.append(("payload_bytes", {**manifest, "payload_bytes": -1}))
    cases.append(("payload_sha256", {**manifest, "payload_sha256": 7}))
    cases.append(("'tensors' must be a list", {**manifest, "tensors": {}}))
    edits = [
        ("shape", {"shape": "abc"}),
        ("shape", {"shape": [True, 2]}),
        ("nbytes", {"shape": [3, 3]}),
        ("kind", {"kind": "bogus"}),
        ("dtype", {"dtype": "float64"}),
        ("frac", {"frac": 99}),
        ("frac", {"frac": None}),
        ("offset", {"offset": 3}),
        ("name", {"name": ""}),
    ]
    for problem, edit in edits:
        m = copy.deepcopy(manifest)
        m["tensors"][first].update(edit)
        cases.append((problem, m))
    m = copy.deepcopy(manifest)
    m["tensors"][1]["offset"] = m["tensors"][0]["offset"]  # overlap
    cases.append(("offset", m))
    m = copy.deepcopy(manifest)
    m["tensors"].append(copy.deepcopy(m["tensors"][0]))
    cases.append(("duplicate", m))
    m = copy.deepcopy(manifest)
    m["tensors"][-1]["shape"] = [10**6]
    m["tensors"][-1]["nbytes"] = 2 * 10**6
    cases.append(("outside", m))
    return cases


def test_bad_manifests_are_refused_with_the_problem_named(pack_bytes):
    manifest, payload = split(pack_bytes)
    for problem, bad in _bad_manifests(manifest):
        with pytest.raises(pk.PackError, match=problem):
            pk.decode_pack(resign(bad, payload))
    with pytest.raises(pk.PackError, match="JSON"):
        pk.decode_pack(resign(None, payload, raw=b"{not json"))
    with pytest.raises(pk.PackError, match="UTF-8"):
        pk.decode_pack(resign(None, payload, raw=b"\xff\xfe"))


def _mutate(value: object, rng: random.Random) -> object:
    """Replace one random node of a JSON tree by a random JSON value."""
    junk = [None, True, -1, 0, 2**40, 1.5, "", "x", [], {}, [1, -2], {"a": 1}]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        return {**value, key: _mutate(value[key], rng)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return value[:i] + [_mutate(value[i], rng)] + value[i + 1 :]
    return rng.choice(junk)


def test_fuzzed_manifests_raise_only_pack_error(pack_bytes):
    manifest, payload = split(pack_bytes)
    rng = random.Random(1234)
    refused = 0
    for _ in range(300):
        try:
            pk.decode_pack(resign(_mutate(manifest, rng), payload))
        except pk.PackError:
            refused += 1
    assert refused > 200  # most mutations break something; benign ones (model fields) may load


def test_wrong_shape_pack_is_refused_on_import(pack_bytes):
    pack = pk.decode_pack(pack_bytes)
    with pytest.raises(
        pk.PackError, match=r"'cls_token' has shape \[1, 1, 64\], the model expects \[1, 1, 32\]"
    ):
        pk.load_into(build_model("demo", embed_dim=32, num_heads=2), pack)
    with pytest.raises(pk.PackError, match="missing"):
        pk.load_into(build_model("demo", depth=7, prune_blocks=(1,)), pack)
    bad = {**pack.model, "embed_dim": 30}
    with pytest.raises(pk.PackError, match="invalid model config"):
        pk.config_from_json(bad)


def test_unpackable_inputs_are_refused():
    with pytest.raises(pk.PackError, match="NaN"):
        pk.pack_state_dict({"w": torch.tensor([1.0, float("nan")])}, get_config("demo"))
    with pytest.raises(pk.PackError, match="frac"):
        pk.encode_pack(pk.Pack({}, [pk.PackedTensor("w", "fixed", np.zeros(2, np.int16), 41)]))
    with pytest.raises(pk.PackError, match="dtype"):
        pk.encode_pack(pk.Pack({}, [pk.PackedTensor("w", "master", np.zeros(2, np.float64))]))


def test_failed_write_leaves_the_old_file_and_no_temporaries(model, tmp_path, monkeypatch):
    target = tmp_path / "w.tlpack"
    target.write_bytes(b"old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        pk.write_pack(target, pk.pack_state_dict(model.state_dict(), model.cfg))
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.tlpack"]


def test_cli_pack_import_inspect(model, tmp_path, capsys):
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, ckpt)
    out = tmp_path / "w.tlpack"
    assert cli_main(["export", "pack", "--checkpoint", str(ckpt), "--model", "demo", "--out", str(out)]) == 0
    assert cli_main(["export", "import", str(out), "--out", str(tmp_path / "back.pt")]) == 0
    state, cfg = load_checkpoint(tmp_path / "back.pt")
    assert cfg == model.cfg
    pack = pk.read_pack(out)
    for name in state:
        np.testing.assert_array_equal(
            fixed.quantize(state[name].numpy(), pack.get(name, "fixed").frac), pack.get(name, "fixed").data
        )
    capsys.readouterr()
    assert cli_main(["export", "inspect", str(out), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["model"]["name"] == "demo" and len(listed["tensors"]) == len(state)
    out.write_bytes(out.read_bytes()[:-1])
    assert cli_main(["export", "inspect", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated" in err[0]
    # A checkpoint without a recorded config needs --model; a wrong one is named.
    assert cli_main(["export", "pack", "--checkpoint", str(ckpt), "--out", str(out)]) == 2
    assert "--model" in capsys.readouterr().err
