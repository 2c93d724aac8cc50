"""Host drivers vs hardware sources: the HLS C++ interfaces, the IP export, the block-design Tcl.

* Register maps: `trilevel.accel.pynq_backend.KERNELS` equals the map derived from hls/src/*.cpp by
  bitstreams/hls_interface.py (Vitis HLS 2023.x layout rule, documented there).
* Block design: bitstreams/zcu102_bd.tcl runs in a real Tcl interpreter (tkinter.Tcl) whose Vivado
  commands are recording stubs; the recorded design must instantiate every kernel the drivers bind
  (same VLNV and instance name), at the AXI-Lite base address they check, with control, data,
  clock, reset and interrupt wiring complete.
* The build/flash scripts fail with one clear line without Vivado; the artifact manifest verifies.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tkinter
from pathlib import Path

import pytest

from trilevel.accel import pynq_backend as pb

ROOT = Path(__file__).resolve().parents[1]
HLS = ROOT / "hls"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bitstreams" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


hls_interface = _load("hls_interface")
manifest = _load("manifest")


def _tops_in_sources() -> set[str]:
    text = "\n".join(p.read_text() for p in sorted((HLS / "src").glob("*.cpp")))
    return {k for k in pb.KERNEL_ORDER if re.search(rf"\b(int|void)\s+{k}\s*\(", text)}


@pytest.fixture(scope="module")
def derived() -> dict[str, list]:
    return hls_interface.hls_register_maps(HLS, sorted(_tops_in_sources()))


# ------------------------------------------------------------------------------------------ register maps


def test_driver_register_maps_equal_the_hls_sources(derived):
    assert set(derived) == set(pb.KERNELS), (
        f"HLS top functions with a driver map: {sorted(pb.KERNELS)}; in hls/src: {sorted(derived)}"
    )
    for name, regs in derived.items():
        ours = [r.as_tuple() for r in pb.KERNELS[name].registers]
        theirs = [r.as_reg() for r in regs]
        assert ours == theirs, f"{name}: driver register map differs from hls/src"
        assert max(r.offset for r in regs) < pb.CTRL_RANGE


def test_ip_identity_matches_the_hls_export():
    assert hls_interface.hls_vlnv(HLS) == (pb.IP_VENDOR, pb.IP_LIBRARY, pb.IP_VERSION)
    for spec in pb.KERNELS.values():
        assert (HLS / "tcl" / f"{spec.name}.tcl").is_file()


def test_layout_rule_on_a_known_signature():
    """The Vitis HLS rule on a signature whose generated x<top>_hw.h offsets are well known."""
    src = """
    int k(const data_t* in, data_t* out, dim_t n, u32_t seed, const shift_t f[6], grad_t st[3]) {
    #pragma HLS INTERFACE m_axi port=in offset=slave bundle=gmem0
    #pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem1
    #pragma HLS INTERFACE s_axilite port = n
    #pragma HLS INTERFACE s_axilite port=seed bundle=control
    #pragma HLS INTERFACE s_axilite port=f
    #pragma HLS INTERFACE s_axilite port=st
    #pragma HLS INTERFACE s_axilite port=return
    }"""
    types = hls_interface.type_bits(HLS)
    regs = [r.as_reg() for r in hls_interface.register_map(src, "k", types)]
    assert regs == [
        ("ap_return", 0x10, 32, True, "return", 1, False),
        ("in", 0x18, 64, False, "pointer", 1, False),  # address: two data words + one reserved
        ("out", 0x24, 64, False, "pointer", 1, False),
        ("n", 0x30, 16, False, "scalar", 1, False),  # scalar: one data word + one reserved
        ("seed", 0x38, 32, False, "scalar", 1, False),
        ("f", 0x40, 8, True, "array", 6, False),  # 6 x 8 bit: 2 words -> 8-byte memory, 8-aligned
        ("st", 0x60, 64, True, "array", 3, False),  # 3 x 64 bit: 6 words -> 32-byte memory, 32-aligned
    ]
    with pytest.raises(hls_interface.InterfaceError, match="no m_axi or s_axilite"):
        hls_interface.register_map(
            src.replace("#pragma HLS INTERFACE s_axilite port=seed bundle=control", ""), "k", types
        )
    with pytest.raises(hls_interface.InterfaceError, match="bundles"):
        hls_interface.register_map(src.replace("bundle=control", "bundle=ctrl2"), "k", types)


# ----------------------------------------------------------------------------------------- block design


class VivadoStub:
    """Records what zcu102_bd.tcl asks Vivado to build; refuses pins that the IPs do not have."""

    def __init__(self, tcl: tkinter.Tcl, masters: dict[str, list[str]]) -> None:
        self.tcl, self.masters = tcl, masters
        self.cells: dict[str, str] = {}
        self.props: dict[str, dict[str, str]] = {}
        self.nets: list[tuple[str, ...]] = []
        self.intf_nets: list[tuple[str, str]] = []
        self.addresses: list[dict[str, str]] = []
        self.calls: list[str] = []
        for name in (
            "create_bd_design",
            "create_bd_cell",
            "apply_bd_automation",
            "set_property",
            "get_bd_cells",
            "get_bd_pins",
            "get_bd_intf_pins",
            "get_bd_addr_spaces",
            "get_bd_addr_segs",
            "connect_bd_net",
            "connect_bd_intf_net",
            "assign_bd_address",
            "validate_bd_design",
            "save_bd_design",
        ):
            tcl.createcommand(name, self._recorded(name, getattr(self, name, None)))

    def _recorded(self, name, impl):
        def command(*args):
            self.calls.append(name)
            return impl(*args) if impl else ""

        return command

    def _opts(self, args) -> tuple[dict[str, str], list[str]]:
        opts, rest, it = {}, [], iter(args)
        for a in it:
            if a in ("-force", "-quiet"):
                opts[a[1:]] = "1"
            elif a.startswith("-"):
                opts[a[1:]] = next(it)
            else:
                rest.append(a)
        return opts, rest

    def _path(self, p: str, kind: str) -> str:
        cell, _, pin = p.strip("/").partition("/")
        if cell not in self.cells:
            raise tkinter.TclError(f"{kind} {p}: no cell {cell!r}")
        kernel = next((k for k in pb.KERNEL_ORDER if f"{k}_0" == cell), None)
        if (
            kernel
            and pin
            and pin.split("/")[0]
            not in (
                "ap_clk",
                "ap_rst_n",
                "interrupt",
                "s_axi_control",
                *[m.rsplit("/", 1)[1] for m in self.masters[kernel]],
            )
        ):
            raise tkinter.TclError(f"{kind} {p}: the HLS IP {cell} has no port {pin!r}")
        return "/" + p.strip("/")

    def create_bd_cell(self, *args):
        opts, (name,) = self._opts(args)
        self.cells[name] = opts["vlnv"]
        return "/" + name

    def set_property(self, *args):
        if args[0] == "-dict":
            values, obj = self.tcl.splitlist(args[1]), args[2]
            self.props.setdefault(obj.strip("/"), {}).update(zip(values[::2], values[1::2], strict=False))
        else:
            self.props.setdefault(args[2].strip("/"), {})[args[0]] = args[1]

    def get_bd_cells(self, name):
        return self._path(name, "cell")

    def get_bd_pins(self, p):
        return self._path(p, "pin")

    def get_bd_intf_pins(self, *args):
        opts, rest = self._opts(args)
        if "of_objects" in opts:
            assert opts.get("filter") == "MODE == Master"
            cell = opts["of_objects"].strip("/")
            kernel = next(k for k in pb.KERNEL_ORDER if f"{k}_0" == cell)
            return tuple(self.masters[kernel])
        return self._path(rest[0], "interface pin")

    def get_bd_addr_spaces(self, p):
        return self._path(p, "address space")

    def get_bd_addr_segs(self, p):
        return self._path(p, "address segment")

    def connect_bd_net(self, *pins):
        self.nets.append(pins)

    def connect_bd_intf_net(self, a, b):
        self.intf_nets.append((a, b))

    def assign_bd_address(self, *args):
        opts, rest = self._opts(args)
        self.addresses.append({**opts, "segments": " ".join(rest)})


@pytest.fixture(scope="module")
def design(derived) -> VivadoStub:
    masters = {k: [] for k in pb.KERNEL_ORDER}
    for k, regs in derived.items():
        bundles = sorted({r.bundle for r in regs if r.kind == "pointer"}, key=lambda b: int(b[4:]))
        masters[k] = [f"/{k}_0/m_axi_{b}" for b in bundles]
    tcl = tkinter.Tcl()
    stub = VivadoStub(tcl, masters)
    tcl.eval(f"source {{{ROOT / 'bitstreams' / 'zcu102_bd.tcl'}}}")
    tcl.eval("trilevel::create_bd trilevel 150")
    stub.kernels = list(tcl.splitlist(tcl.eval("set trilevel::kernels")))
    return stub


def test_block_design_instantiates_every_driver_kernel(design):
    assert design.kernels == list(pb.KERNEL_ORDER)
    for spec in (pb.KernelSpec(k, i, ()) for i, k in enumerate(pb.KERNEL_ORDER)):
        assert design.cells.get(spec.instance) == spec.vlnv
    assert design.cells["zynq_ultra_ps_e_0"].startswith("xilinx.com:ip:zynq_ultra_ps_e")
    assert design.calls[-2:] == ["validate_bd_design", "save_bd_design"]


def test_address_map_matches_the_drivers(design):
    windows = {a["segments"]: a for a in design.addresses if "offset" in a}
    for i, k in enumerate(pb.KERNEL_ORDER):
        spec = pb.KernelSpec(k, i, ())
        entry = windows[f"/{spec.instance}/s_axi_control/Reg"]
        assert int(entry["offset"], 16) == spec.base_address
        assert entry["range"] == "64K" and pb.CTRL_RANGE == 64 * 1024
        assert entry["target_address_space"] == "/zynq_ultra_ps_e_0/Data"
    assert {"segments": ""} in design.addresses  # the m_axi spaces get DDR from the auto-assignment


def test_control_data_clock_reset_and_interrupt_wiring(design):
    links = {frozenset(n) for n in design.intf_nets}
    assert frozenset({"/zynq_ultra_ps_e_0/M_AXI_HPM0_FPD", "/axi_ctrl/S00_AXI"}) in links
    for i, k in enumerate(pb.KERNEL_ORDER):
        assert frozenset({f"/axi_ctrl/M{i:02d}_AXI", f"/{k}_0/s_axi_control"}) in links
        for pin in design.masters[k]:
            hp = int(pin.rsplit("gmem", 1)[1]) % 4
            sc = next(b if a == pin else a for a, b in design.intf_nets if pin in (a, b))
            assert sc.startswith(f"/axi_hp{hp}/S")
            assert frozenset({f"/axi_hp{hp}/M00_AXI", f"/zynq_ultra_ps_e_0/S_AXI_HP{hp}_FPD"}) in links
        assert (f"/{k}_0/interrupt", f"/irq_concat/In{i}") in design.nets
    for sc in [c for c in design.cells if c.startswith("axi_hp")]:
        n_in = sum(1 for a, b in design.intf_nets if b.startswith(f"/{sc}/S"))
        assert design.props[sc]["CONFIG.NUM_SI"] == str(n_in)
    assert ("/irq_concat/dout", "/zynq_ultra_ps_e_0/pl_ps_irq0") in design.nets
    assert design.props["irq_concat"]["CONFIG.NUM_PORTS"] == str(len(pb.KERNEL_ORDER))
    assert design.props["axi_ctrl"]["CONFIG.NUM_MI"] == str(len(pb.KERNEL_ORDER))
    clocked = {p for n in design.nets if n[0] == "/zynq_ultra_ps_e_0/pl_clk0" for p in n[1:]}
    resets = {p for n in design.nets if n[0] == "/rst_pl0/peripheral_aresetn" for p in n[1:]}
    for k in pb.KERNEL_ORDER:
        assert f"/{k}_0/ap_clk" in clocked and f"/{k}_0/ap_rst_n" in resets
    ps = design.props["zynq_ultra_ps_e_0"]
    assert ps["CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"] == "150"
    assert all(ps[f"CONFIG.PSU__USE__S_AXI_GP{n}"] == "1" for n in (2, 3, 4, 5))


def test_vivado_flow_script_builds_and_copies_the_artifacts(derived, tmp_path):
    """bitstreams/build.tcl end to end against stubs: project, IP repos, block design, implementation,
    and the .bit/.hwh copied under one base name (what pynq.Overlay needs)."""
    run_dir, gen = tmp_path / "impl_1", tmp_path / "gen"
    run_dir.mkdir()
    gen.mkdir()
    (run_dir / "trilevel_wrapper.bit").write_bytes(b"bit")
    (gen / "trilevel.hwh").write_text("<hwh/>")
    tcl = tkinter.Tcl()
    stub = VivadoStub(tcl, {k: [] for k in pb.KERNEL_ORDER})
    seen: dict[str, tuple] = {}

    def record(name, result=""):
        def command(*args):
            seen[name] = args
            return result(*args) if callable(result) else result

        tcl.createcommand(name, command)

    def get_property(prop, obj):
        return {"PROGRESS": "100%", "DIRECTORY": str(run_dir)}[prop]

    def get_files(*args):
        return str(gen / "trilevel.hwh") if args[-1].endswith(".hwh") else "/proj/trilevel.bd"

    for name, result in [
        ("create_project", ""),
        ("get_board_parts", "xilinx.com:zcu102:part0:3.4"),
        ("current_project", "proj"),
        ("update_ip_catalog", ""),
        ("generate_target", ""),
        ("make_wrapper", "/proj/trilevel_wrapper.v"),
        ("add_files", ""),
        ("current_fileset", "src"),
        ("launch_runs", ""),
        ("wait_on_run", ""),
        ("get_runs", "impl_1"),
        ("get_fileset", "src"),
        ("get_property", get_property),
        ("get_files", get_files),
    ]:
        record(name, result)
    plain_set_property = stub.set_property

    def set_property(*args):
        seen.setdefault("set_property", []).append(args)
        return plain_set_property(*args) if args[0] == "-dict" or args[0].startswith("CONFIG.") else ""

    tcl.createcommand("set_property", set_property)
    out = tmp_path / "out"
    tcl.eval(f"set argv [list {{/ip/a /ip/b}} {{{out}}} 175 3]")
    tcl.eval(f"source {{{ROOT / 'bitstreams' / 'build.tcl'}}}")
    assert (out / "trilevel.bit").read_bytes() == b"bit" and (out / "trilevel.hwh").read_text() == "<hwh/>"
    assert seen["create_project"][-2:] == ("-part", "xczu9eg-ffvb1156-2-e")
    props = {a[0]: a[1] for a in seen["set_property"] if not a[0].startswith(("-", "CONFIG."))}
    assert props["board_part"] == "xilinx.com:zcu102:part0:3.4" and props["ip_repo_paths"] == "/ip/a /ip/b"
    assert props["top"] == "trilevel_wrapper"
    assert seen["launch_runs"] == ("impl_1", "-to_step", "write_bitstream", "-jobs", "3")
    assert stub.props["zynq_ultra_ps_e_0"]["CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"] == "175"


# ------------------------------------------------------------------------------------- scripts, manifest


@pytest.mark.parametrize("script", ["build.sh", "flash.sh"])
def test_scripts_fail_with_one_line_without_vivado(script, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    assert subprocess.run(["sh", "-c", "command -v vivado"], env=env, capture_output=True).returncode != 0
    r = subprocess.run(["bash", str(ROOT / "bitstreams" / script)], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "vivado not found on PATH" in lines[0], r.stderr
    assert r.stdout == ""


def test_build_names_the_missing_hls_ips(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "vivado").write_text("#!/bin/sh\nexit 0\n")
    (fake / "vivado").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path), "TRILEVEL_HLS_CLOCK_MHZ": "123"}
    r = subprocess.run(
        ["bash", str(ROOT / "bitstreams" / "build.sh")], env=env, capture_output=True, text=True
    )
    assert r.returncode == 1
    (line,) = r.stderr.strip().splitlines()
    assert f"HLS IP missing for {' '.join(pb.KERNEL_ORDER)} at 123 MHz" in line and "make hls" in line


def test_manifest_records_and_verifies_checksums(tmp_path):
    (tmp_path / "trilevel.bit").write_bytes(os.urandom(1000))
    (tmp_path / "trilevel.hwh").write_text("<xml/>")
    ip = tmp_path / "ip" / "component.xml"
    ip.parent.mkdir()
    ip.write_text("<component/>")
    path = manifest.write_manifest(tmp_path, 150.0, [ip])
    data = json.loads(path.read_text())
    assert data["artifacts"]["trilevel.hwh"]["sha256"] == manifest.sha256(tmp_path / "trilevel.hwh")
    assert data["clock_mhz"] == 150.0 and str(ip.parent) in data["hls_ips"]
    assert manifest.verify_manifest(path) == []
    (tmp_path / "trilevel.bit").write_bytes(b"tampered")
    assert ["trilevel.bit: SHA-256 differs" in p for p in manifest.verify_manifest(path)] == [True]
    assert manifest.main(["--verify", str(path)]) == 1
    (tmp_path / "trilevel.hwh").unlink()
    with pytest.raises(FileNotFoundError, match="trilevel.hwh"):
        manifest.write_manifest(tmp_path, 150.0, [])
