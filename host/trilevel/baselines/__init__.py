"""The paper's comparison methods (Tables 1 and 3), registered under their names on import.

Policies plug into the existing registries (`trilevel.selectors`, `trilevel.example_filter`);
trainer modes (`TrainingMethod`) into `trilevel.baselines.methods.METHODS`. docs/baselines.md lists them.
"""

from trilevel.baselines import dynamicvit, example_policies, selection_policies, svite
from trilevel.baselines.methods import METHODS, TrainingMethod, make_method, register_method

__all__ = [
    "METHODS",
    "TrainingMethod",
    "dynamicvit",
    "example_policies",
    "make_method",
    "register_method",
    "selection_policies",
    "svite",
]
