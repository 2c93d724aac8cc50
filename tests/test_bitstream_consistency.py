"""Host driver vs hardware sources: the engine's register map, the block-design Tcl, the IP packaging.

* Register map: trilevel.accel.isa.REGISTERS is the map Vitis HLS generates for the HLS engine's top
  function (the layout rule of bitstreams/hls_interface.py), so one driver runs the HLS and the RTL IP.
* Block design: bitstreams/zcu102_bd.tcl runs in a real Tcl interpreter (tkinter.Tcl) whose Vivado
  commands are recording stubs; the recorded design must instantiate the one engine IP the driver binds
  (VLNV and instance name of isa), at its AXI-Lite base, with control, data, clock, reset and interrupt
  wiring complete, for either implementation.
* The IP packaging and build scripts: run against stubs; without Vivado they fail with one clear line;
  the artifact manifest verifies.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tkinter
from pathlib import Path

import pytest

from trilevel.accel import isa

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
ENGINE_PORTS = ("ap_clk", "ap_rst_n", "interrupt", "s_axi_control", "m_axi_gmem")


# ------------------------------------------------------------------------------------------ register map


def test_register_map_follows_the_vitis_layout_of_the_engine_signature():
    """isa.REGISTERS equals the Vitis HLS layout of `uint32_t trilevel_engine(gmem, cmd_addr, cmd_count,
    err_pc, counters[N])`: the map the HLS IP gets and the RTL engine implements."""
    src = f"""
    uint32_t {isa.HLS_TOP}(ap_uint<128>* gmem, uint32_t cmd_addr, uint32_t cmd_count, uint32_t* err_pc,
                           uint64_t counters[{isa.N_COUNTERS}]) {{
    #pragma HLS INTERFACE m_axi port=gmem offset=slave bundle=gmem
    #pragma HLS INTERFACE s_axilite port=cmd_addr bundle=control
    #pragma HLS INTERFACE s_axilite port=cmd_count bundle=control
    #pragma HLS INTERFACE s_axilite port=err_pc bundle=control
    #pragma HLS INTERFACE s_axilite port=counters bundle=control
    #pragma HLS INTERFACE s_axilite port=return bundle=control
    }}"""
    regs = hls_interface.register_map(src, isa.HLS_TOP, hls_interface.type_bits(HLS))
    offsets = {isa.HLS_ARGS[r.name]: r.offset for r in regs}
    assert offsets == {name: isa.REGISTERS[name][0] for name in isa.HLS_ARGS.values()}
    counters = next(r for r in regs if r.name == "counters")
    assert (counters.count, counters.bits) == (isa.N_COUNTERS, 64)
    assert isa.REGISTERS["DDR_BASE_HI"][0] == isa.REGISTERS["DDR_BASE_LO"][0] + 4
    assert isa.REGISTERS["ERR_PC_CTRL"][0] == isa.REGISTERS["ERR_PC"][0] + 4
    assert [isa.REGISTERS[n][0] for n in ("CTRL", "GIE", "IER", "ISR")] == [0x00, 0x04, 0x08, 0x0C]
    assert isa.REGISTERS["COUNTERS"][0] + 8 * isa.N_COUNTERS <= isa.REGISTER_SPAN <= isa.CTRL_RANGE


def test_register_map_equals_the_hls_engine_top():
    """The map derived from hls/engine's Vitis top is isa.REGISTERS, and the IP export names it as the
    block design expects."""
    (regs,) = hls_interface.hls_register_maps(HLS, [isa.HLS_TOP]).values()
    expected = {name: isa.REGISTERS[name][0] for name in isa.HLS_ARGS.values()}
    assert {isa.HLS_ARGS[r.name]: r.offset for r in regs} == expected
    assert hls_interface.hls_vlnv(HLS) == (isa.IP_VENDOR, isa.IP_LIBRARY, isa.IP_VERSION)
    assert isa.IP_NAMES["hls"] == isa.HLS_TOP


def test_layout_rule_on_a_known_signature():
    """The Vitis HLS rule on a signature whose generated x<top>_hw.h offsets are well known."""
    src = """
    int k(const int16_t* in, int16_t* out, uint16_t n, uint32_t seed, const int8_t f[6], int64_t st[3]) {
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
    """Records what zcu102_bd.tcl asks Vivado to build; refuses engine pins the IPs do not have."""

    def __init__(self, tcl: tkinter.Tcl) -> None:
        self.tcl = tcl
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
        if cell == isa.INSTANCE and pin and pin.split("/")[0] not in ENGINE_PORTS:
            raise tkinter.TclError(f"{kind} {p}: the engine IP has no port {pin!r}")
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

    def get_bd_intf_pins(self, p):
        return self._path(p, "interface pin")

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


def _design(impl: str) -> VivadoStub:
    tcl = tkinter.Tcl()
    stub = VivadoStub(tcl)
    tcl.eval(f"source {{{ROOT / 'bitstreams' / 'zcu102_bd.tcl'}}}")
    tcl.eval(f"trilevel::create_bd trilevel 150 {impl}")
    return stub


@pytest.fixture(scope="module", params=sorted(isa.IP_NAMES))
def design(request) -> tuple[str, VivadoStub]:
    return request.param, _design(request.param)


def test_block_design_instantiates_the_one_engine(design):
    impl, bd = design
    vlnv = f"{isa.IP_VENDOR}:{isa.IP_LIBRARY}:{isa.IP_NAMES[impl]}:{isa.IP_VERSION}"
    engines = {name: v for name, v in bd.cells.items() if v.startswith(isa.IP_VENDOR)}
    assert engines == {isa.INSTANCE: vlnv}
    assert bd.cells["zynq_ultra_ps_e_0"].startswith("xilinx.com:ip:zynq_ultra_ps_e")
    assert bd.calls[-2:] == ["validate_bd_design", "save_bd_design"]


def test_block_design_rejects_an_unknown_implementation():
    with pytest.raises(tkinter.TclError, match="must be one of"):
        _design("vhdl")


def test_address_map_matches_the_driver(design):
    _, bd = design
    windows = {a["segments"]: a for a in bd.addresses if "offset" in a}
    entry = windows[f"/{isa.INSTANCE}/s_axi_control/Reg"]
    assert int(entry["offset"], 16) == isa.CTRL_BASE
    assert entry["range"] == "64K" and isa.CTRL_RANGE == 64 * 1024
    assert entry["target_address_space"] == "/zynq_ultra_ps_e_0/Data"
    assert {"segments": ""} in bd.addresses  # the m_axi space gets DDR from the auto-assignment


def test_control_data_clock_reset_and_interrupt_wiring(design):
    _, bd = design
    links = {frozenset(n) for n in bd.intf_nets}
    engine = f"/{isa.INSTANCE}"
    assert frozenset({"/zynq_ultra_ps_e_0/M_AXI_HPM0_FPD", "/axi_ctrl/S00_AXI"}) in links
    assert frozenset({"/axi_ctrl/M00_AXI", f"{engine}/s_axi_control"}) in links
    assert frozenset({f"{engine}/m_axi_gmem", "/axi_hp0/S00_AXI"}) in links
    assert frozenset({"/axi_hp0/M00_AXI", "/zynq_ultra_ps_e_0/S_AXI_HP0_FPD"}) in links
    assert (f"{engine}/interrupt", "/zynq_ultra_ps_e_0/pl_ps_irq0") in bd.nets
    clocked = {p for n in bd.nets if n[0] == "/zynq_ultra_ps_e_0/pl_clk0" for p in n[1:]}
    resets = {p for n in bd.nets if n[0] == "/rst_pl0/peripheral_aresetn" for p in n[1:]}
    assert f"{engine}/ap_clk" in clocked and f"{engine}/ap_rst_n" in resets
    assert "/zynq_ultra_ps_e_0/saxihp0_fpd_aclk" in clocked
    ps = bd.props["zynq_ultra_ps_e_0"]
    assert ps["CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"] == "150"
    # HP0 is S_AXI_GP2, at the engine's AXI width.
    assert ps["CONFIG.PSU__USE__S_AXI_GP2"] == "1"
    assert ps["CONFIG.PSU__SAXIGP2__DATA_WIDTH"] == str(8 * isa.PRODUCTION.axi_bytes)
    assert float(ps["CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"]) == isa.PRODUCTION.clock_mhz


def test_rtl_ip_packaging_script(tmp_path):
    """bitstreams/package_engine.tcl against stubs: sources from files.f in order, the top, the VLNV the
    block design instantiates, bus interfaces on ap_clk, an active-low reset, and the `Reg` window."""
    repo = tmp_path / "repo"
    (repo / "hls" / "rtl" / "engine").mkdir(parents=True)
    files = "# order\nhls/rtl/a.sv\n\nhls/rtl/engine/top.sv\n"
    (repo / "hls" / "rtl" / "engine" / "files.f").write_text(files)
    tcl = tkinter.Tcl()
    seen: dict[str, list[tuple]] = {}
    props: dict[str, str] = {}

    def record(name, result=""):
        def command(*args):
            seen.setdefault(name, []).append(args)
            return result(*args) if callable(result) else result

        tcl.createcommand(name, command)

    def set_property(*args):
        seen.setdefault("set_property", []).append(args)
        props[args[0]] = args[1]

    tcl.createcommand("set_property", set_property)
    for name, result in [
        ("create_project", ""), ("read_verilog", ""), ("current_fileset", "src"),
        ("update_compile_order", ""),
        ("ipx::package_project", ""), ("ipx::current_core", "core"), ("ipx::infer_bus_interfaces", ""),
        ("ipx::get_bus_interfaces", lambda *a: a[0] if a[0] in ENGINE_PORTS else ""),
        ("ipx::associate_bus_interfaces", ""), ("ipx::get_bus_parameters", "polarity"),
        ("ipx::get_memory_maps", ""), ("ipx::add_memory_map", "mm"), ("ipx::get_address_blocks", ""),
        ("ipx::add_address_block", "block"), ("ipx::create_xgui_files", ""), ("ipx::update_checksums", ""),
        ("ipx::check_integrity", ""), ("ipx::save_core", ""),
    ]:  # fmt: skip
        record(name, result)
    tcl.eval(f"set argv [list {{{repo}}} {{{tmp_path / 'ip'}}}]")
    tcl.eval(f"source {{{ROOT / 'bitstreams' / 'package_engine.tcl'}}}")
    (sources,) = seen["read_verilog"][0][1:]
    assert tcl.splitlist(sources) == (f"{repo}/hls/rtl/a.sv", f"{repo}/hls/rtl/engine/top.sv")
    assert props["top"] == isa.IP_NAMES["rtl"] and props["name"] == isa.IP_NAMES["rtl"]
    assert props["version"] == isa.IP_VERSION
    pkg = seen["ipx::package_project"][0]
    assert pkg[pkg.index("-vendor") + 1] == isa.IP_VENDOR and pkg[pkg.index("-library") + 1] == isa.IP_LIBRARY
    assert {a[1] for a in seen["ipx::associate_bus_interfaces"] if a[0] == "-busif"} == {"s_axi_control",
                                                                                          "m_axi_gmem"}
    assert props["value"] == "ACTIVE_LOW" and props["range"] == str(isa.CTRL_RANGE)
    assert seen["ipx::add_address_block"][0][0] == "Reg"
    assert "ipx::save_core" in seen


def test_vivado_flow_script_builds_and_copies_the_artifacts(tmp_path):
    """bitstreams/build.tcl end to end against stubs: project, IP repo, block design, implementation,
    and the .bit/.hwh copied under one base name (what pynq.Overlay needs)."""
    run_dir, gen = tmp_path / "impl_1", tmp_path / "gen"
    run_dir.mkdir()
    gen.mkdir()
    (run_dir / "trilevel_wrapper.bit").write_bytes(b"bit")
    (gen / "trilevel.hwh").write_text("<hwh/>")
    tcl = tkinter.Tcl()
    stub = VivadoStub(tcl)
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
    tcl.eval(f"set argv [list {{/ip/engine}} {{{out}}} 175 3 hls]")
    tcl.eval(f"source {{{ROOT / 'bitstreams' / 'build.tcl'}}}")
    assert (out / "trilevel.bit").read_bytes() == b"bit" and (out / "trilevel.hwh").read_text() == "<hwh/>"
    assert seen["create_project"][-2:] == ("-part", "xczu9eg-ffvb1156-2-e")
    props = {a[0]: a[1] for a in seen["set_property"] if not a[0].startswith(("-", "CONFIG."))}
    assert props["board_part"] == "xilinx.com:zcu102:part0:3.4" and props["ip_repo_paths"] == "/ip/engine"
    assert props["top"] == "trilevel_wrapper"
    assert seen["launch_runs"] == ("impl_1", "-to_step", "write_bitstream", "-jobs", "3")
    assert stub.props["zynq_ultra_ps_e_0"]["CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"] == "175"
    assert stub.cells[isa.INSTANCE].split(":")[2] == isa.IP_NAMES["hls"]


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


def _build_with_fake_vivado(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "vivado").write_text("#!/bin/sh\nexit 0\n")
    (fake / "vivado").chmod(0o755)
    env = {"PATH": f"{fake}:/usr/bin:/bin", "HOME": str(tmp_path), **env}
    script = str(ROOT / "bitstreams" / "build.sh")
    return subprocess.run(["bash", script], env=env, capture_output=True, text=True)


def test_build_names_the_missing_hls_engine_ip(tmp_path):
    r = _build_with_fake_vivado(tmp_path, TRILEVEL_ENGINE="hls", TRILEVEL_HLS_CLOCK_MHZ="123")
    assert r.returncode == 1
    (line,) = r.stderr.strip().splitlines()
    assert "HLS engine IP missing at 123 MHz" in line and "make hls" in line


def test_build_refuses_an_unknown_engine(tmp_path):
    r = _build_with_fake_vivado(tmp_path, TRILEVEL_ENGINE="vhdl")
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "TRILEVEL_ENGINE must be rtl or hls" in line


def test_manifest_records_and_verifies_checksums(tmp_path):
    (tmp_path / "trilevel.bit").write_bytes(os.urandom(1000))
    (tmp_path / "trilevel.hwh").write_text("<xml/>")
    ip = tmp_path / "ip" / "component.xml"
    ip.parent.mkdir()
    ip.write_text("<component/>")
    path = manifest.write_manifest(tmp_path, 150.0, [ip], engine="hls")
    data = json.loads(path.read_text())
    assert data["artifacts"]["trilevel.hwh"]["sha256"] == manifest.sha256(tmp_path / "trilevel.hwh")
    assert data["clock_mhz"] == 150.0 and str(ip.parent) in data["ips"]
    assert data["engine"] == "hls" and data["engine_config"] in isa.CONFIGS
    assert manifest.verify_manifest(path) == []
    (tmp_path / "trilevel.bit").write_bytes(b"tampered")
    assert ["trilevel.bit: SHA-256 differs" in p for p in manifest.verify_manifest(path)] == [True]
    assert manifest.main(["--verify", str(path)]) == 1
    (tmp_path / "trilevel.hwh").unlink()
    with pytest.raises(FileNotFoundError, match="trilevel.hwh"):
        manifest.write_manifest(tmp_path, 150.0, [])
