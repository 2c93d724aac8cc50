"""Print the cycle counts measured by the RTL testbenches (sim_build/cycles/<unit>.json, written by
`pytest sim`): latency and steady-state interval per unit and shape, and the MAC array's utilization
(MACs / (PEs x cycles)), next to the closed forms of trilevel.rtl_cycles.

    python sim/report.py [--cycles-dir sim_build/cycles] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "sim_build" / "cycles"


def rows_for(unit: str, entries: dict[str, dict]) -> list[tuple[str, str, int, object, str]]:
    """(unit, shape, latency, interval, note) per measurement."""
    out = []
    for e in sorted(entries.values(), key=lambda e: (str(e.get("direction", "")), e.get("latency", 0))):
        if unit == "topk_unit":
            out.append((unit, f"n={e['n']} k={e['k']}", e["latency"], e["interval"], ""))
        elif unit == "softmax_unit":
            direction = "bwd" if e["direction"] == "backward" else "fwd"
            out.append((unit, f"{direction} n={e['n']}", e["latency"], e["interval"], ""))
        elif unit == "mac_array":
            note = (f"util steady {e['utilization_steady']:.3f}, "
                    f"{e['tiles']} tiles incl. fill {e['utilization_with_fill']:.3f}")
            out.append((unit, f"{e['rows']}x{e['cols']} k={e['k']}", e["latency"], e["interval"], note))
        elif unit == "gemm_tile":
            util = e["m"] * e["n"] * e["kd"] / (e["rows"] * e["cols"] * e["latency"])
            out.append((unit, f"{e['rows']}x{e['cols']} m={e['m']} n={e['n']} kd={e['kd']}",
                        e["latency"], "-", f"util {util:.3f} (element-serial ports)"))
        else:
            out.append((unit, json.dumps(e), e.get("latency", 0), e.get("interval", "-"), ""))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--json", action="store_true", help="print the merged measurements as JSON")
    args = parser.parse_args(argv)
    files = sorted(args.cycles_dir.glob("*.json"))
    if not files:
        print(f"no cycle measurements in {args.cycles_dir}: run `pytest sim` (make cosim) first",
              file=sys.stderr)
        return 1
    data = {f.stem: json.loads(f.read_text()) for f in files}
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    rows = [r for unit, entries in data.items() for r in rows_for(unit, entries)]
    header = ("unit", "shape", "latency", "interval", "")
    widths = [max(len(str(r[i])) for r in [*rows, header]) for i in range(4)]
    line = "  ".join(f"{h:<{w}}" for h, w in zip(header, widths, strict=False))
    print(line + "  notes")
    print("-" * (len(line) + 40))
    for r in rows:
        print("  ".join(f"{str(v):<{w}}" for v, w in zip(r, widths, strict=False)) + "  " + r[4])
    print("cycles without backpressure; every value equals trilevel.rtl_cycles (asserted by the testbenches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
