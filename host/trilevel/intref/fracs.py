"""Host-side frac selection: the running max-abs -> frac rule of docs/numerics.md §2.1."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from trilevel.intref.fixed import FRAC_MAX, FRAC_MIN, HEADROOM_BITS, choose_frac_int

# Per-key frac limits beyond [FRAC_MIN, FRAC_MAX] (matched on the key's last component).
KEY_LIMITS: dict[str, tuple[int, int]] = {"s": (0, 15)}


def clamp_frac(key: str, frac: int) -> int:
    lo, hi = KEY_LIMITS.get(key.rsplit(".", 1)[-1], (FRAC_MIN, FRAC_MAX))
    return max(lo, min(hi, frac))


@dataclass
class FracController:
    """Holds the frac of every requantization point and moves it with the observed max-abs.

    `update(stats)` sets frac = choose_frac_int(max_abs, frac) per key: the next call scales the
    value seen now into [2**(14 - headroom), 2**(15 - headroom)). With `decay_steps` > 0 the frac
    may only grow (finer) after that many calls in a row asked for it (shrinking is immediate), so one
    small batch does not make the next one saturate.
    """

    fracs: dict[str, int]
    headroom: int = HEADROOM_BITS
    decay_steps: int = 0
    _pending: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, key: str) -> int:
        return self.fracs[key]

    def view(self, prefix: str, keys: Iterable[str]) -> dict[str, int]:
        """The fracs of one kernel call: {key: fracs[prefix + key]}."""
        return {k: self.fracs[prefix + k] for k in keys}

    def update(self, stats: Mapping[str, int], prefix: str = "") -> None:
        for key, max_abs in stats.items():
            name = prefix + key
            new = clamp_frac(name, choose_frac_int(max_abs, self.fracs[name], self.headroom))
            old = self.fracs[name]
            if new > old and self.decay_steps:
                self._pending[name] = self._pending.get(name, 0) + 1
                if self._pending[name] < self.decay_steps:
                    continue
            self._pending.pop(name, None)
            self.fracs[name] = new


def calibrate(run: Callable[[dict[str, int]], Mapping[str, int]], keys: Iterable[str], start: int = 8,
              rounds: int = 6) -> dict[str, int]:
    """Fracs for a kernel from its own stats: call `run(fracs) -> stats` until the fracs settle."""
    ctrl = FracController({k: clamp_frac(k, start) for k in keys})
    for _ in range(rounds):
        before = dict(ctrl.fracs)
        ctrl.update(run(dict(ctrl.fracs)))
        if ctrl.fracs == before:
            break
    return dict(ctrl.fracs)
