"""Golden vectors for the Vitis HLS csim_design testbench of the engine (hls/tb/tb_engine.cpp).

Builds one small program that exercises every unit (LOAD/STORE with gather and zero fill, GEMM with
bias, statistic and ACC accumulation, SOFTMAX forward with the ACC head-sum and backward, LayerNorm,
GELU, COLSUM, MASK, TOPK) in a DDR image, runs it on the command-level golden model
(trilevel.accel.fsim, itself built from trilevel.intref) and writes:

    <out>/engine/ddr.bin        the DDR image before the run (program at offset 0)
    <out>/engine/expected.bin   the DDR image after the run
    <out>/engine/meta.txt       "<cmd_count> <error> <retired>"

    python hls/gen_vectors.py --out build/hls/vectors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DDR_BYTES = 1 << 16
DATA = 1 << 12  # program at [0, 4096), data after


def build_program(seed: int = 0) -> tuple[np.ndarray, int]:
    """The DDR image (uint8, program at 0) and its command count."""
    from trilevel.accel import isa
    from trilevel.accel.isa import Mem, Op, SoftmaxSub, Vec

    rng = np.random.default_rng(seed)
    ddr = np.zeros(DDR_BYTES, dtype=np.uint8)
    free = [DATA]
    cmds: list[np.ndarray] = []

    def put(arr: np.ndarray) -> int:
        addr = free[0]
        raw = np.ascontiguousarray(arr).view(np.uint8).ravel()
        ddr[addr : addr + raw.size] = raw
        free[0] = -(-(addr + raw.size) // 64) * 64
        return addr

    def out(nbytes: int) -> int:
        addr = free[0]
        free[0] = -(-(addr + nbytes) // 64) * 64
        return addr

    def load(mem: Mem, arr: np.ndarray, at: int, **f: int) -> None:
        arr = np.atleast_2d(arr)
        cmds.append(isa.encode(Op.LOAD, sub=mem, m=arr.shape[0], n=arr.shape[1], index_base=put(arr),
                               index_stride=arr.strides[0], a_addr=at, a_stride=arr.shape[1], **f))

    def store(mem: Mem, at: int, m: int, n: int, **f: int) -> None:
        size = isa.DDR_ELEM_BYTES[mem]
        cmds.append(isa.encode(Op.STORE, sub=mem, m=m, n=n, index_base=out(m * n * size),
                               index_stride=n * size, a_addr=at, a_stride=n, **f))

    t, d, o = 12, 40, 24
    x = rng.integers(-3000, 3000, (t, d)).astype(np.int16)
    w = rng.integers(-3000, 3000, (o, d)).astype(np.int16)
    load(Mem.SPM, x, 0)
    load(Mem.SPM, w, 1000)
    load(Mem.SPM, rng.integers(-3000, 3000, o).astype(np.int16), 2000)  # bias
    load(Mem.SPM, rng.integers(8000, 16000, d).astype(np.int16), 2100)  # gamma
    load(Mem.SPM, rng.integers(-3000, 3000, d).astype(np.int16), 2200)  # beta
    load(Mem.IDX, np.array([[3, 0, 7, 7, 11]], dtype=np.uint16), 0)
    load(Mem.IDX, np.sort(rng.choice(o, (t - 1, 6)), axis=1).astype(np.uint16), 100)
    cmds.append(isa.encode(Op.LOAD, sub=Mem.SPM, m=5, n=d, index_base=DATA, index_stride=2 * d,
                           a_addr=9000, a_stride=d, ta=1, b_addr=0))  # gather rows 3, 0, 7, 7, 11 of x
    cmds.append(isa.encode(Op.LOAD, sub=Mem.ACC, m=1, n=4096, a_addr=0, a_stride=4096, tb=1, push_next=1))
    cmds.append(isa.encode(Op.GEMM, m=t, n=o, k=d, a_addr=0, a_stride=d, b_addr=1000, b_stride=d, c_addr=3000,
                           c_stride=o, bias=1, d_addr=2000, shift2=-2, shift=14, imm=1, stat=1, slot=0,
                           pop_prev=1))
    cmds.append(isa.encode(Op.VEC, sub=Vec.MASK, m=t, n=o, k=6, imm=1, b_addr=100, b_stride=6, c_addr=3500,
                           c_stride=o))
    cmds.append(isa.encode(Op.SOFTMAX, sub=SoftmaxSub.FWD, m=t, n=o, a_addr=3000, a_stride=o, c_addr=4000,
                           c_stride=o, shift=9, mask=1, e_addr=3500, e_stride=o, acc=1, d_addr=0, d_stride=o))
    cmds.append(isa.encode(Op.SOFTMAX, sub=SoftmaxSub.BWD, m=t, n=o, a_addr=4000, a_stride=o, b_addr=3000,
                           b_stride=o, c_addr=4500, c_stride=o, shift=30, sr=1, seed=77, index_stride=o,
                           stat=1, slot=1))
    cmds.append(isa.encode(Op.TOPK, m=t, n=o - 1, k=5, a_addr=1, a_stride=o, c_addr=500, c_stride=6, imm=1))
    cmds.append(isa.encode(Op.VEC, sub=Vec.LN_FWD, m=t, n=d, a_addr=0, a_stride=d, b_addr=2100, d_addr=2200,
                           c_addr=5000, c_stride=d, e_addr=5500, e_stride=d, f_addr=1000, shift=16, shift2=-4,
                           shift4=10, stat=1, slot=2))
    cmds.append(isa.encode(Op.VEC, sub=Vec.LN_BWD, m=t, n=d, a_addr=1000, a_stride=d, b_addr=2100,
                           e_addr=5500, e_stride=d, f_addr=1000, c_addr=6000, c_stride=d, shift=14, shift2=14,
                           shift3=6, seed=5, index_stride=d, stat=1, slot=3))
    cmds.append(isa.encode(Op.VEC, sub=Vec.GELU_FWD, m=t, n=o, a_addr=3000, a_stride=o, c_addr=6500,
                           c_stride=o, imm=10, shift=16, stat=1, slot=6))
    cmds.append(isa.encode(Op.VEC, sub=Vec.COLSUM, m=t, n=o, a_addr=3000, a_stride=o, f_addr=2000))
    cmds.append(isa.encode(Op.GEMM, m=o, n=d, k=t, a_addr=3000, a_stride=o, ta=1, b_addr=0, b_stride=d, tb=1,
                           acc=1, f_addr=3000, c_stride=d, push_next=1))
    store(Mem.SPM, 3000, 1, 7000 - 3000, pop_prev=1)
    store(Mem.SPM, 9000, 5, d)
    store(Mem.ACC, 0, 1, 4000)
    store(Mem.IDX, 500, t, 6)
    store(Mem.STAT, 0, 1, 8)
    cmds.append(isa.encode(Op.FINISH))
    words = isa.program_words(cmds)
    assert words.nbytes <= DATA and free[0] <= DDR_BYTES
    ddr[: words.nbytes] = words.view(np.uint8)
    return ddr, len(cmds)


def write_vectors(out: Path, seed: int = 0) -> Path:
    from trilevel.accel import fsim, isa

    ddr, count = build_program(seed)
    after = ddr.copy()
    res = fsim.FunctionalEngine(isa.PRODUCTION).run(after, 0, count)
    if not res.ok:
        raise RuntimeError(f"golden program failed on fsim: {res.error.name} at {res.err_pc}: {res.detail}")
    folder = Path(out) / "engine"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ddr.bin").write_bytes(ddr.tobytes())
    (folder / "expected.bin").write_bytes(after.tobytes())
    (folder / "meta.txt").write_text(f"{count} {int(res.error)} {res.retired}\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "hls" / "vectors")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if str(ROOT / "host") not in sys.path:
        sys.path.insert(0, str(ROOT / "host"))
    print(write_vectors(args.out, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
