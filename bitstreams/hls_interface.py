"""Derive the AXI-Lite register map of each HLS top function from its C++ source.

Used by the consistency tests (tests/test_bitstream_consistency.py) to check the host drivers'
register map (trilevel.accel.isa.REGISTERS) against the engine's HLS top, and runnable as a script
to print the maps: ``python bitstreams/hls_interface.py [hls_dir]``.

The layout rule implemented here is the one Vitis HLS 2023.x prints in the generated ``x<top>_hw.h``
for an ``s_axilite`` bundle with ``ap_ctrl_hs``:

1. 0x00 control (bit 0 ap_start, 1 ap_done (clear on read), 2 ap_idle, 3 ap_ready, 7 auto_restart),
   0x04 global interrupt enable, 0x08 interrupt enable, 0x0c interrupt status (toggle on write).
2. From 0x10 on, registers: first ``ap_return`` of a non-void top (read only), then every scalar
   argument and every ``m_axi`` pointer with ``offset=slave`` (its 64-bit DDR address) in C signature
   order. A register of ``w`` bits takes ``ceil(w / 32)`` data words followed by one reserved word:
   8 bytes for a scalar of <= 32 bits, 12 bytes for an address or a 64-bit scalar. A non-const
   pointer to a scalar on ``s_axilite`` is an output (it must be write-only in the kernel): its data
   word(s) (read only) are followed by a control word (bit 0 ap_vld) in place of the reserved one.
3. After the last register, every array argument bound to ``s_axilite`` (a small memory inside the
   AXI-Lite space), in C signature order: elements of <= 8 / 16 / 32 bits are packed 4 / 2 / 1 per
   32-bit word (element i in bits ``(i % per_word) * width`` up), 64-bit elements take two words (low
   word first); the memory spans the next power of two of its bytes and starts at a multiple of it.

Every argument must carry an INTERFACE pragma, all AXI-Lite items must be in the one bundle the driver
talks to (``control``), and no argument may be a stream. The drivers re-check rule 2 on the board
against the register offsets pynq reads from the ``.hwh`` (`HlsKernel.__init__`).
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

CONTROL_BUNDLE = "control"
SOURCE_DIRS = ("engine",)  # hls/ subfolders holding the top function and its typedefs
FIRST_ARG_OFFSET = 0x10
ADDRESS_BITS = 64  # m_axi offset registers on Zynq UltraScale+ (64-bit addressing, the default)

BUILTIN_BITS = {
    "bool": (1, False), "char": (8, True), "int8_t": (8, True), "uint8_t": (8, False),
    "short": (16, True), "int16_t": (16, True), "uint16_t": (16, False),
    "int": (32, True), "unsigned": (32, False), "unsigned int": (32, False), "int32_t": (32, True),
    "uint32_t": (32, False), "float": (32, True), "long long": (64, True), "int64_t": (64, True),
    "uint64_t": (64, False), "double": (64, True),
}  # fmt: skip


class InterfaceError(ValueError):
    """The HLS source breaks an assumption of the register-map rule (names the function and argument)."""


@dataclass(frozen=True)
class Argument:
    name: str
    ctype: str
    bits: int
    signed: bool
    pointer: bool  # `T* p`
    count: int | None  # `T a[N]`: N
    is_float: bool = False
    const: bool = False


@dataclass(frozen=True)
class RegisterSpec:
    """One AXI-Lite item, in the same fields as trilevel.accel.pynq_backend.Reg (plus the m_axi bundle)."""

    name: str
    offset: int
    bits: int  # data bits: 64 for an address, the element width for an array
    signed: bool
    kind: str  # "return" | "scalar" | "output" | "pointer" | "array"
    count: int = 1  # array elements
    is_float: bool = False  # IEEE float / double data
    bundle: str | None = None  # the m_axi bundle of a pointer

    def as_reg(self) -> tuple:
        return (self.name, self.offset, self.bits, self.signed, self.kind, self.count, self.is_float)


def _strip_comments(src: str) -> str:
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", "", src)


def type_bits(hls_dir: Path) -> dict[str, tuple[int, bool]]:
    """Typedef name -> (bits, signed) for the synthesis (ap_int) branch of the HLS headers."""
    table = dict(BUILTIN_BITS)
    for header in sorted(p for d in SOURCE_DIRS for p in (hls_dir / d).glob("*.h")):
        text = _strip_comments(header.read_text())
        # Keep the #else branch of `#ifdef TRILEVEL_FAST_CSIM` (what Vitis HLS synthesizes).
        text = re.sub(r"#ifdef\s+TRILEVEL_FAST_CSIM.*?#else(.*?)#endif", r"\1", text, flags=re.S)
        for kind, width, name in re.findall(r"typedef\s+ap_(u?int)\s*<\s*(\d+)\s*>\s+(\w+)\s*;", text):
            table[name] = (int(width), kind == "int")
        for base, name in re.findall(r"typedef\s+([\w ]+?)\s+(\w+)\s*;", text):
            if base.strip() in table:
                table[name] = table[base.strip()]
    return table


def _split_params(params: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in params:
        depth += ch in "<(["
        depth -= ch in ">)]"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in out + [cur] if p.strip()]


def _parse_argument(param: str, types: dict[str, tuple[int, bool]], func: str) -> Argument:
    m = re.fullmatch(r"(?P<type>.+?)\s*(?P<ptr>[*&]?)\s*(?P<name>\w+)\s*(?P<arr>(\[[^\]]*\])*)", param, re.S)
    if not m:
        raise InterfaceError(f"{func}: cannot parse parameter {param!r}")
    const = bool(re.search(r"\bconst\b", m["type"]))
    ctype = re.sub(r"\b(const|volatile)\b", "", m["type"]).strip()
    ctype = re.sub(r"\s+", " ", ctype)
    dims = [d for d in re.findall(r"\[([^\]]*)\]", m["arr"] or "")]
    if len(dims) > 1 or (dims and not dims[0].strip().isdigit()):
        raise InterfaceError(
            f"{func}: array argument {m['name']!r} needs one literal dimension, got {m['arr']}"
        )
    count = int(dims[0]) if dims else None
    pointer = m["ptr"] == "*"
    if "stream" in ctype:
        raise InterfaceError(
            f"{func}: argument {m['name']!r} is a stream; top functions take m_axi/s_axilite only"
        )
    if ctype.startswith("ap_"):
        am = re.fullmatch(r"ap_(u?int)\s*<\s*(\d+)\s*>", ctype)
        if not am:
            raise InterfaceError(f"{func}: unsupported type {ctype!r} of {m['name']!r}")
        bits, signed = int(am[2]), am[1] == "int"
    elif ctype in types:
        bits, signed = types[ctype]
    else:
        raise InterfaceError(f"{func}: unknown type {ctype!r} of argument {m['name']!r}")
    return Argument(m["name"], ctype, bits, signed, pointer, count, ctype in ("float", "double"), const)


def _find_function(src: str, name: str) -> tuple[str, str, str] | None:
    """(return type, parameter text, body) of the definition of `name`, or None."""
    for m in re.finditer(rf"(^|[;}}\s])(?P<ret>[\w:<>]+)\s+{name}\s*\(", src):
        i, depth = m.end(), 1
        while depth:
            depth += {"(": 1, ")": -1}.get(src[i], 0)
            i += 1
        params = src[m.end() : i - 1]
        rest = src[i:].lstrip()
        if not rest.startswith("{"):
            continue  # a declaration or a call
        start = src.index("{", i)
        j, depth = start + 1, 1
        while depth:
            depth += {"{": 1, "}": -1}.get(src[j], 0)
            j += 1
        return m["ret"], params, src[start:j]
    return None


def _pragmas(body: str) -> dict[str, list[dict[str, str]]]:
    """port -> list of INTERFACE pragma option dicts (mode first)."""
    found: dict[str, list[dict[str, str]]] = {}
    for line in re.findall(r"#pragma\s+HLS\s+INTERFACE\b([^\n]*)", body, flags=re.I):
        words = re.sub(r"\s*=\s*", "=", line).split()
        opts = dict(w.split("=", 1) for w in words if "=" in w)
        bare = [w for w in words if "=" not in w]
        mode = opts.pop("mode", bare[0] if bare else "")
        opts["mode"] = mode.lower()
        if "port" not in opts:
            raise InterfaceError(f"INTERFACE pragma without port=: {line.strip()!r}")
        found.setdefault(opts["port"], []).append(opts)
    return found


def _words_per_element(bits: int) -> tuple[int, int]:
    """(elements per 32-bit word, words per element) of an AXI-Lite array of `bits`-bit elements."""
    if bits > 64:
        raise InterfaceError(f"AXI-Lite arrays of {bits}-bit elements are not supported")
    if bits > 32:
        return 1, 2
    return 32 // (8 if bits <= 8 else 16 if bits <= 16 else 32), 1


def array_bytes(bits: int, count: int) -> int:
    """Bytes of the AXI-Lite memory holding `count` elements of `bits` bits (a power of two)."""
    per_word, words_each = _words_per_element(bits)
    words = -(-count // per_word) * words_each
    return 1 << max(2, (4 * words - 1).bit_length())


def register_map(src: str, func: str, types: dict[str, tuple[int, bool]]) -> list[RegisterSpec]:
    """The control-bundle items of top function `func` defined in `src` (rules in the module docstring)."""
    src = _strip_comments(src)
    found = _find_function(src, func)
    if found is None:
        raise InterfaceError(f"no definition of top function {func!r}")
    ret, params, body = found
    pragmas = _pragmas(body)
    if not any(p["mode"] == "s_axilite" for p in pragmas.get("return", [])):
        raise InterfaceError(f"{func}: needs '#pragma HLS INTERFACE s_axilite port=return'")
    args = [_parse_argument(p, types, func) for p in _split_params(params) if p != "void"]
    unknown = set(pragmas) - {a.name for a in args} - {"return"}
    if unknown:
        raise InterfaceError(
            f"{func}: INTERFACE pragmas name ports that are not arguments: {sorted(unknown)}"
        )
    lite = [p for ps in pragmas.values() for p in ps if p["mode"] == "s_axilite"]
    bundles = {p.get("bundle", CONTROL_BUNDLE) for p in lite}
    if bundles - {CONTROL_BUNDLE}:
        raise InterfaceError(
            f"{func}: s_axilite bundles {sorted(bundles)}, the driver expects {CONTROL_BUNDLE!r}"
        )

    regs, arrays, offset = [], [], FIRST_ARG_OFFSET
    if ret != "void":
        bits, signed = _parse_argument(f"{ret} ap_return", types, func).bits, types.get(ret, (32, True))[1]
        regs.append(RegisterSpec("ap_return", offset, bits, signed, "return"))
        offset += 4 * (math.ceil(bits / 32) + 1)
    for a in args:
        modes = {p["mode"]: p for p in pragmas.get(a.name, [])}
        if "m_axi" in modes:
            if a.count is None and not a.pointer:
                raise InterfaceError(f"{func}: m_axi port {a.name!r} is not a pointer or array")
            if modes["m_axi"].get("offset", "slave") != "slave":
                raise InterfaceError(
                    f"{func}: m_axi port {a.name!r} must use offset=slave (address over AXI-Lite)"
                )
            bundle = modes["m_axi"].get("bundle", "gmem")
            spec = RegisterSpec(a.name, offset, ADDRESS_BITS, False, "pointer", bundle=bundle)
        elif "s_axilite" in modes:
            if a.count is not None:
                arrays.append(a)
                continue
            if a.pointer and a.const:
                raise InterfaceError(f"{func}: const pointer {a.name!r} on s_axilite: pass the value instead")
            # `T* p` on s_axilite is an output scalar: a data word (read only) and its ap_vld word.
            spec = RegisterSpec(
                a.name, offset, a.bits, a.signed, "output" if a.pointer else "scalar", is_float=a.is_float
            )
        else:
            raise InterfaceError(f"{func}: argument {a.name!r} has no m_axi or s_axilite INTERFACE pragma")
        regs.append(spec)
        offset += 4 * (math.ceil(spec.bits / 32) + 1)
    for a in arrays:
        size = array_bytes(a.bits, a.count)
        offset = -(-offset // size) * size
        regs.append(RegisterSpec(a.name, offset, a.bits, a.signed, "array", a.count, a.is_float))
        offset += size
    return regs


def hls_vlnv(hls_dir: Path) -> tuple[str, str, str]:
    """(vendor, library, version) of the IP export in hls/tcl/common.tcl (the ipname is the top)."""
    text = (hls_dir / "tcl" / "common.tcl").read_text()
    m = re.search(r"^\s*export_design\b[^\n]*", text, re.M)
    if not m:
        raise InterfaceError("hls/tcl/common.tcl has no export_design command")
    opts = dict(re.findall(r"-(vendor|library|version)\s+(\S+)", m[0]))
    missing = {"vendor", "library", "version"} - set(opts)
    if missing:
        raise InterfaceError(f"export_design in hls/tcl/common.tcl lacks {sorted(missing)}")
    return opts["vendor"], opts["library"], opts["version"]


def hls_register_maps(hls_dir: Path, functions: list[str]) -> dict[str, list[RegisterSpec]]:
    """Register maps of `functions`, each looked up in the HLS sources (exactly one definition)."""
    types = type_bits(hls_dir)
    sources = {p: p.read_text() for d in SOURCE_DIRS for p in sorted((hls_dir / d).glob("*.cpp"))}
    maps = {}
    for func in functions:
        hits = [p for p, s in sources.items() if _find_function(_strip_comments(s), func)]
        if len(hits) != 1:
            raise InterfaceError(
                f"top function {func!r} is defined in {len(hits)} files under {hls_dir}"
            )
        maps[func] = register_map(sources[hits[0]], func, types)
    return maps


def main(argv: list[str]) -> int:
    hls_dir = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "hls"
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "host"))
    from trilevel.accel.pynq_backend import KERNEL_ORDER

    maps = hls_register_maps(hls_dir, list(KERNEL_ORDER))
    print(json.dumps({k: [r.as_reg() for r in v] for k, v in maps.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
