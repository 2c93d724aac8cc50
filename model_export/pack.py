"""The board weight pack: one versioned, checksummed, 64-byte aligned binary file.

Layout (all integers little-endian)::

    0   magic            8 bytes  b"TLVPACK\\0"
    8   version          uint32   PACK_VERSION
    12  manifest_bytes   uint32   length of the JSON manifest
    16  manifest_sha256  32 bytes SHA-256 of the manifest bytes
    48  manifest         UTF-8 JSON (see below)
        zero padding up to the next multiple of 64  -> payload_start
        payload          tensors at their manifest offsets (relative to payload_start, 64-byte aligned),
                         zero padding between them; the file ends exactly at payload_start + payload_bytes

The manifest holds ``format``, ``version``, ``model`` (the ViTConfig fields), ``payload_bytes``,
``payload_sha256`` and ``tensors``: a list of ``{name, kind, dtype, shape, frac, offset, nbytes}``.
``kind`` is ``fixed`` (int16 with its power-of-two ``frac``, what the kernels read: real = q * 2**-frac),
``master`` (float32 master copy for training on the board) or ``raw`` (a non-float buffer, stored as is).
Tensors keep PyTorch's row-major layout, so a Linear weight is ``[out, in]``.

Every byte is covered by a check (magic, version, the two checksums, zero padding, exact length), so
a corrupt, truncated or foreign file is refused with a `PackError` naming the problem, never misread.
Writes go to a temporary file in the target folder and are moved into place with `os.replace`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trilevel.fileio import atomic_write

MAGIC = b"TLVPACK\0"
PACK_VERSION = 1
FORMAT_NAME = "trilevel-pack"
ALIGN = 64
HEADER = struct.Struct("<8sII32s")
# A sanity bound for the manifest (a DeiT-B manifest is ~30 kB).
MAX_MANIFEST_BYTES = 16 * 2**20
FRAC_RANGE = (-16, 40)  # docs/numerics.md §1.1
KINDS = ("fixed", "master", "raw")
DTYPES: dict[str, np.dtype] = {
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "float32": np.dtype("<f4"),
}
KIND_DTYPES = {"fixed": {"int16"}, "master": {"float32"}, "raw": set(DTYPES)}


class ExportError(Exception):
    """Base of the errors model_export raises for bad input (the CLI prints them as one line)."""


class PackError(ExportError):
    """A weight pack that cannot be written or read: the message names the file and the problem."""


@dataclass(frozen=True)
class PackedTensor:
    name: str
    kind: str  # one of KINDS
    data: np.ndarray
    frac: int | None = None  # only for kind "fixed"

    def dequantize(self) -> np.ndarray:
        """float32 values: exact for `fixed` (q * 2**-frac), the stored array otherwise."""
        if self.kind == "fixed":
            return (self.data.astype(np.float32) * np.float32(2.0**-self.frac)).astype(np.float32)
        return self.data


@dataclass
class Pack:
    model: dict[str, Any]  # ViTConfig fields (JSON types)
    tensors: list[PackedTensor]

    def get(self, name: str, kind: str) -> PackedTensor | None:
        return next((t for t in self.tensors if t.name == name and t.kind == kind), None)

    @property
    def names(self) -> list[str]:
        """Distinct tensor names in pack order."""
        return list(dict.fromkeys(t.name for t in self.tensors))


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# ----------------------------------------------------------------------------------------------- writing


def encode_pack(pack: Pack) -> bytes:
    """Serialize `pack`; raises PackError on tensors the format cannot hold."""
    entries, chunks, offset, seen = [], [], 0, set()
    for t in pack.tensors:
        _check_tensor(t)
        if (t.name, t.kind) in seen:
            raise PackError(f"duplicate tensor {t.name!r} of kind {t.kind!r}")
        seen.add((t.name, t.kind))
        dtype_name = next(k for k, v in DTYPES.items() if v == t.data.dtype.newbyteorder("<"))
        raw = np.ascontiguousarray(t.data, dtype=DTYPES[dtype_name]).tobytes()
        offset = _align(offset)
        entries.append(
            {
                "name": t.name,
                "kind": t.kind,
                "dtype": dtype_name,
                "shape": list(t.data.shape),
                "frac": t.frac,
                "offset": offset,
                "nbytes": len(raw),
            }
        )
        chunks.append((offset, raw))
        offset += len(raw)
    payload = bytearray(offset)
    for start, raw in chunks:
        payload[start : start + len(raw)] = raw
    manifest = {
        "format": FORMAT_NAME,
        "version": PACK_VERSION,
        "model": pack.model,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "tensors": entries,
    }
    manifest_bytes = json.dumps(manifest, indent=1, sort_keys=True).encode()
    header = HEADER.pack(MAGIC, PACK_VERSION, len(manifest_bytes), hashlib.sha256(manifest_bytes).digest())
    head = header + manifest_bytes
    return head + bytes(_align(len(head)) - len(head)) + bytes(payload)


def _check_tensor(t: PackedTensor) -> None:
    if not isinstance(t.name, str) or not t.name:
        raise PackError(f"tensor name must be a non-empty string, got {t.name!r}")
    if t.kind not in KINDS:
        raise PackError(f"tensor {t.name!r}: kind {t.kind!r} is not one of {KINDS}")
    dtype_name = next((k for k, v in DTYPES.items() if v == t.data.dtype.newbyteorder("<")), None)
    if dtype_name not in KIND_DTYPES[t.kind]:
        raise PackError(f"tensor {t.name!r}: dtype {t.data.dtype} is not allowed for kind {t.kind!r}")
    if (t.kind == "fixed") != (t.frac is not None):
        raise PackError(f"tensor {t.name!r}: frac is required for kind 'fixed' and only for it")
    if t.frac is not None and not FRAC_RANGE[0] <= t.frac <= FRAC_RANGE[1]:
        raise PackError(f"tensor {t.name!r}: frac {t.frac} outside {FRAC_RANGE}")


def write_pack(path: str | os.PathLike, pack: Pack) -> str:
    """Write `pack` atomically to `path`; returns the SHA-256 of the whole file."""
    data = encode_pack(pack)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------- reading


def read_pack(path: str | os.PathLike) -> Pack:
    """Read and fully verify a pack file (see the module docstring)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise PackError(f"{path}: cannot read pack: {e.strerror or e}") from None
    return decode_pack(data, source=str(path))


def decode_pack(data: bytes, source: str = "<bytes>") -> Pack:
    """Parse and verify pack bytes; every defect raises PackError naming `source` and the problem."""

    def fail(problem: str) -> PackError:
        return PackError(f"{source}: {problem}")

    if len(data) < HEADER.size:
        raise fail(f"truncated: {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    magic, version, manifest_len, manifest_sha = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise fail(f"not a trilevel weight pack (magic {magic!r}, expected {MAGIC!r})")
    if version != PACK_VERSION:
        raise fail(f"unsupported pack version {version} (this reader supports version {PACK_VERSION})")
    if manifest_len > MAX_MANIFEST_BYTES:
        raise fail(f"manifest length {manifest_len} exceeds the {MAX_MANIFEST_BYTES}-byte limit")
    head_end = HEADER.size + manifest_len
    if len(data) < head_end:
        raise fail(f"truncated: the manifest needs {head_end} bytes, the file has {len(data)}")
    manifest_bytes = data[HEADER.size : head_end]
    if hashlib.sha256(manifest_bytes).digest() != manifest_sha:
        raise fail("manifest checksum mismatch (the manifest is corrupt)")
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise fail(f"manifest is not valid UTF-8 JSON: {e}") from None
    entries = _check_manifest(manifest, fail)

    payload_start = _align(head_end)
    payload_len = manifest["payload_bytes"]
    if len(data) < payload_start + payload_len:
        raise fail(
            f"truncated: the payload needs {payload_start + payload_len} bytes, the file has {len(data)}"
        )
    if len(data) > payload_start + payload_len:
        raise fail(f"{len(data) - payload_start - payload_len} unexpected trailing bytes after the payload")
    if any(data[head_end:payload_start]):
        raise fail("non-zero padding between manifest and payload")
    payload = memoryview(data)[payload_start:]
    if hashlib.sha256(payload).hexdigest() != manifest["payload_sha256"]:
        raise fail("payload checksum mismatch (tensor data is corrupt)")

    tensors = []
    for e in entries:
        dtype = DTYPES[e["dtype"]]
        arr = np.frombuffer(payload, dtype=dtype, count=math.prod(e["shape"]), offset=e["offset"])
        data_copy = arr.reshape(e["shape"]).astype(dtype.newbyteorder("="), copy=True)
        tensors.append(PackedTensor(e["name"], e["kind"], data_copy, e["frac"]))
    return Pack(model=manifest["model"], tensors=tensors)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_manifest(manifest: Any, fail: Callable[[str], PackError]) -> list[dict[str, Any]]:
    """Validate the manifest's structure; returns its tensor entries."""
    if not isinstance(manifest, dict):
        raise fail("manifest is not a JSON object")
    if manifest.get("format") != FORMAT_NAME:
        raise fail(f"manifest format {manifest.get('format')!r} is not {FORMAT_NAME!r}")
    if manifest.get("version") != PACK_VERSION:
        raise fail(f"manifest version {manifest.get('version')!r} disagrees with the header ({PACK_VERSION})")
    if not isinstance(manifest.get("model"), dict):
        raise fail("manifest 'model' must be an object of model config fields")
    payload_len = manifest.get("payload_bytes")
    if not _is_int(payload_len) or payload_len < 0:
        raise fail(f"manifest 'payload_bytes' must be a non-negative integer, got {payload_len!r}")
    sha = manifest.get("payload_sha256")
    if not isinstance(sha, str) or len(sha) != 64:
        raise fail("manifest 'payload_sha256' must be a 64-digit hex string")
    entries = manifest.get("tensors")
    if not isinstance(entries, list):
        raise fail("manifest 'tensors' must be a list")
    seen, end = set(), 0
    for i, e in enumerate(entries):
        where = f"tensor #{i}"
        if not isinstance(e, dict):
            raise fail(f"{where} is not an object")
        name, kind, dtype, shape = e.get("name"), e.get("kind"), e.get("dtype"), e.get("shape")
        if not isinstance(name, str) or not name:
            raise fail(f"{where}: 'name' must be a non-empty string")
        where = f"tensor {name!r}"
        if not isinstance(kind, str) or kind not in KINDS:
            raise fail(f"{where}: kind {kind!r} is not one of {KINDS}")
        if (name, kind) in seen:
            raise fail(f"{where}: duplicate entry of kind {kind!r}")
        seen.add((name, kind))
        if not isinstance(dtype, str) or dtype not in KIND_DTYPES[kind]:
            raise fail(f"{where}: dtype {dtype!r} is not allowed for kind {kind!r}")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise fail(f"{where}: shape {shape!r} must be a list of non-negative integers")
        frac = e.get("frac")
        if kind == "fixed":
            if not _is_int(frac) or not FRAC_RANGE[0] <= frac <= FRAC_RANGE[1]:
                raise fail(f"{where}: frac {frac!r} must be an integer in {FRAC_RANGE}")
        elif frac is not None:
            raise fail(f"{where}: frac must be null for kind {kind!r}")
        offset, nbytes = e.get("offset"), e.get("nbytes")
        if not _is_int(offset) or not _is_int(nbytes) or offset < end or offset % ALIGN:
            raise fail(
                f"{where}: offset {offset!r} must be a {ALIGN}-byte aligned integer after the previous tensor"
            )
        if nbytes != math.prod(shape) * DTYPES[dtype].itemsize:
            raise fail(f"{where}: nbytes {nbytes} does not match shape {shape} of {dtype}")
        end = offset + nbytes
        if end > payload_len:
            raise fail(f"{where}: bytes {offset}..{end} lie outside the {payload_len}-byte payload")
    return entries


# ------------------------------------------------------------------------------------ torch conversion


def config_to_json(cfg: Any) -> dict[str, Any]:
    """ViTConfig -> JSON-friendly dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def config_from_json(model: Mapping[str, Any], source: str = "pack"):
    """The ViTConfig described by a manifest's ``model`` object; PackError if it is not one."""
    import dataclasses

    from trilevel.config import ViTConfig

    fields = {f.name for f in dataclasses.fields(ViTConfig)}
    if set(model) != fields:
        missing, extra = sorted(fields - set(model)), sorted(set(model) - fields)
        raise PackError(
            f"{source}: model config fields differ from ViTConfig (missing {missing}, unknown {extra})"
        )
    values = dict(model)
    if isinstance(values["prune_blocks"], list):
        values["prune_blocks"] = tuple(values["prune_blocks"])
    try:
        return ViTConfig(**values)
    except (TypeError, ValueError) as e:
        raise PackError(f"{source}: invalid model config: {e}") from None


def pack_state_dict(state_dict: Mapping[str, Any], cfg: Any, master: bool = False) -> Pack:
    """Quantize a float state dict for the board.

    Every floating tensor becomes int16 with a per-tensor frac from `trilevel.intref.fixed.choose_frac`
    (its max-abs) and `quantize` (round half to even, saturate): kind ``fixed``. With `master`, the
    float32 values are stored as well (kind ``master``) so training can continue on the board without
    the quantization loss. Non-floating tensors are stored as ``raw``.
    """
    import torch

    from trilevel.intref import fixed

    tensors: list[PackedTensor] = []
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise PackError(f"state dict entry {name!r} is a {type(value).__name__}, not a tensor")
        array = value.detach().cpu().contiguous()
        if array.is_floating_point():
            x = array.to(torch.float32).numpy()
            if not np.isfinite(x).all():
                raise PackError(f"tensor {name!r} holds NaN or infinity; refusing to quantize it")
            frac = int(fixed.choose_frac(float(np.abs(x).max(initial=0.0))))
            tensors.append(PackedTensor(name, "fixed", np.asarray(fixed.quantize(x, frac), np.int16), frac))
            if master:
                tensors.append(PackedTensor(name, "master", x.astype(np.float32)))
        else:
            raw = array.numpy()
            if raw.dtype.newbyteorder("<") not in DTYPES.values():
                raw = raw.astype(np.int64)
            tensors.append(PackedTensor(name, "raw", raw))
    return Pack(model=config_to_json(cfg), tensors=tensors)


def unpack_state_dict(pack: Pack) -> dict[str, Any]:
    """Pack -> float state dict: master copies where present, else the exactly dequantized int16."""
    import torch

    state = {}
    for name in pack.names:
        t = pack.get(name, "master") or pack.get(name, "fixed") or pack.get(name, "raw")
        state[name] = torch.from_numpy(np.array(t.dequantize()))
    return state


def load_state_checked(model: Any, state: Mapping[str, Any], source: str) -> None:
    """`model.load_state_dict(state)`, refusing missing, unexpected or wrong-shape tensors by name."""
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise PackError(
            f"{source}: tensors do not match the model (missing {missing}, unexpected {unexpected})"
        )
    converted = {}
    for name, ref in expected.items():
        if tuple(state[name].shape) != tuple(ref.shape):
            got, want = list(state[name].shape), list(ref.shape)
            raise PackError(f"{source}: tensor {name!r} has shape {got}, the model expects {want}")
        converted[name] = state[name].to(ref.dtype)
    model.load_state_dict(converted)


def load_into(model: Any, pack: Pack, source: str = "pack") -> None:
    """Load `pack` into a torch module (master copies where present, else the dequantized int16)."""
    load_state_checked(model, unpack_state_dict(pack), source)
