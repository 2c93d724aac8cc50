"""Checksum manifest of the built bitstream artifacts (written by build.sh, checked by flash.sh).

    python3 bitstreams/manifest.py OUT --clock-mhz 150 --engine rtl [COMPONENT_XML]  -> OUT/manifest.json
    python3 bitstreams/manifest.py --verify OUT/manifest.json                  -> exit 1 on a mismatch

Standard library only, so it runs on the build host and on the board's Python alike.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ARTIFACTS = ("trilevel.bit", "trilevel.hwh")
FORMAT = "trilevel-bitstream-manifest/2"
ENGINES = ("rtl", "hls")
# The engine build the bitstream carries (trilevel.accel.isa.CONFIGS); the host driver reads it from here.
ENGINE_CONFIG = "zcu102"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def write_manifest(out_dir: Path, clock_mhz: float, ip_files: list[Path], engine: str = "rtl") -> Path:
    """Record the SHA-256 of every artifact in out_dir and of the engine IP it was built from."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    missing = [name for name in ARTIFACTS if not (out_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{out_dir}: missing {', '.join(missing)}")
    manifest = {
        "format": FORMAT,
        "part": "xczu9eg-ffvb1156-2-e",
        "board": "ZCU102",
        "clock_mhz": clock_mhz,
        "engine": engine,
        "engine_config": ENGINE_CONFIG,
        "git_commit": git_commit(Path(__file__).resolve().parent.parent),
        "artifacts": {
            name: {"sha256": sha256(out_dir / name), "bytes": (out_dir / name).stat().st_size}
            for name in ARTIFACTS
        },
        "ips": {str(p.parent): sha256(p) for p in ip_files},
    }
    path = out_dir / "manifest.json"
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".manifest.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def verify_manifest(path: Path) -> list[str]:
    """Problems found (empty when every artifact next to the manifest matches its checksum)."""
    try:
        manifest = json.loads(path.read_text())
        artifacts = manifest["artifacts"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [f"{path}: unreadable manifest ({e})"]
    if manifest.get("format") != FORMAT:
        return [f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}"]
    problems = []
    for name, entry in artifacts.items():
        file = path.parent / name
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif sha256(file) != entry.get("sha256"):
            problems.append(
                f"{file}: SHA-256 differs from {path.name} (rebuilt or corrupt; rerun make bitstream)"
            )
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="output folder (write) or manifest.json (--verify)")
    parser.add_argument("ip_files", nargs="*", help="component.xml of the engine IP used")
    parser.add_argument("--clock-mhz", type=float, default=150.0)
    parser.add_argument("--engine", choices=ENGINES, default="rtl")
    parser.add_argument("--verify", action="store_true")
    args = parser.parse_args(argv)
    if args.verify:
        problems = verify_manifest(Path(args.target))
        for p in problems:
            print(f"manifest: {p}", file=sys.stderr)
        return 1 if problems else 0
    try:
        ips = [Path(p) for p in args.ip_files]
        path = write_manifest(Path(args.target), args.clock_mhz, ips, args.engine)
    except FileNotFoundError as e:
        print(f"manifest: {e}", file=sys.stderr)
        return 1
    print(f"manifest: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
