"""Closed-form cycle counts of the RTL units in hls/rtl/ (validated against Verilator by sim/).

Every count is in clock cycles without output backpressure. "Latency" runs from the cycle the first
input beat is accepted to the cycle the last output beat is accepted; "interval" is the steady-state
distance between the first beats of back-to-back frames (or tiles). The latency model
(`trilevel.latency`) builds kernel-level estimates from these.
"""

from __future__ import annotations

import math


def _check(**dims: int) -> None:
    for name, v in dims.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


# ---------------- topk_unit ----------------
def topk_cycles(n: int, k: int) -> int:
    """Latency of one frame of n scores (worst case: index n-1 selected; k does not matter)."""
    _check(n=n, k=k)
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    return 2 * n + 2


def topk_interval(n: int) -> int:
    """Back-to-back frames of n scores: one every n + 1 cycles (input bound; the scan overlaps)."""
    _check(n=n)
    return n + 1


def topk_stream_cycles(frames: int, n: int, k: int) -> int:
    """`frames` back-to-back frames (e.g. the rows of a connection top-k): first input to last output."""
    _check(frames=frames)
    return (frames - 1) * topk_interval(n) + topk_cycles(n, k)


# ---------------- softmax_unit ----------------
# Compute-stage pipeline: issue -> bank read -> element -> 4 requantize stages -> output register.
SOFTMAX_PIPE = 7


def softmax_cycles(n: int) -> int:
    """Forward latency of one row of n scores: load n, then pass 1 (sum of e_j) and pass 2 (emit)."""
    _check(n=n)
    return 3 * n + 2 + SOFTMAX_PIPE


def softmax_interval(n: int) -> int:
    """Forward rows back to back: the two compute passes plus 3 control cycles (the load overlaps)."""
    _check(n=n)
    return 2 * n + 3


def softmax_bwd_cycles(n: int) -> int:
    """Backward latency of one row: load n (P, dP and the dot product), then one emitting pass."""
    _check(n=n)
    return 2 * n + SOFTMAX_PIPE


def softmax_bwd_interval(n: int) -> int:
    _check(n=n)
    return n + 1


def softmax_stream_cycles(rows: int, n: int, backward: bool = False) -> int:
    """`rows` rows of n back to back through one unit: first input to last output."""
    _check(rows=rows)
    if backward:
        return (rows - 1) * softmax_bwd_interval(n) + softmax_bwd_cycles(n)
    return (rows - 1) * softmax_interval(n) + softmax_cycles(n)


# ---------------- mac_array (systolic GEMM engine) ----------------
# After a tile's last reduction beat: the wavefront crosses the array (rows + cols - 1 PE hops),
# one cycle to select the finished row, 4 requantize stages, the output register.
MAC_EPILOGUE = 5


def mac_array_interval(k: int, rows: int, cols: int) -> int:
    """Cycles between back-to-back tiles of reduction length k: max(k, rows, cols)."""
    _check(k=k, rows=rows, cols=cols)
    return max(k, rows, cols)


def mac_array_cycles(tiles: int, k: int, rows: int, cols: int) -> int:
    """`tiles` back-to-back rows x cols output tiles of reduction k: first input beat to last output row."""
    _check(tiles=tiles)
    return (tiles - 1) * mac_array_interval(k, rows, cols) + k + rows + cols - 1 + MAC_EPILOGUE


def gemm_cycles(m: int, n: int, k: int, rows: int, cols: int) -> int:
    """C[m, n] = A[m, k] . B[k, n] on a rows x cols array: ceil(m/rows) * ceil(n/cols) tiles streamed."""
    _check(m=m, n=n, k=k, rows=rows, cols=cols)
    return mac_array_cycles(math.ceil(m / rows) * math.ceil(n / cols), k, rows, cols)


def mac_utilization(m: int, n: int, k: int, rows: int, cols: int) -> float:
    """MACs / (PEs x cycles) of one GEMM including fill and drain (-> k / max(k, rows, cols) when long)."""
    return m * n * k / (rows * cols * gemm_cycles(m, n, k, rows, cols))


# ---------------- gemm_tile (element-stream blackbox adapter around mac_array) ----------------
def gemm_tile_cycles(m: int, n: int, kd: int, rows: int, cols: int) -> int:
    """One gemm_tile() call, first A element to last C element: load the max(m, n) * kd elements of the
    longer operand stream, feed kd steps through the array, then serialize m rows of n (+1 cycle each).

    The element-serial C interface bounds this adapter's utilization by m * n / (rows * cols * max(m, n));
    the HLS kernels get the full array rate by feeding mac_array's vector ports (see docs/rtl.md).
    """
    _check(m=m, n=n, kd=kd, rows=rows, cols=cols)
    if m > rows or n > cols:
        raise ValueError(f"a {m} x {n} tile does not fit a {rows} x {cols} array")
    return max(m, n) * kd + kd + rows + cols + 3 + m * (n + 1)
