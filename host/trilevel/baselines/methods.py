"""Trainer modes: baselines that change more than which tokens, connections or examples survive.

A `TrainingMethod` may build its own model (a learned token selector has parameters), add a loss, act
around the optimizer step (prune-and-grow of sparse weights), count its own MACs, report metrics and
keep state in the checkpoint. The torch trainer calls these hooks; the default is plain training.
``--method NAME`` or ``--method NAME:key=value,...`` picks one by registered name (docs/baselines.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from trilevel.config import ViTConfig, get_config
from trilevel.macs import MacCounter
from trilevel.model import VisionTransformer, build_model


class TrainingMethod:
    """Plain training (every hook a no-op); baselines override what they need."""

    name: ClassVar[str] = ""

    def build_model(self, name: str, **kwargs: Any) -> VisionTransformer:
        """The model to train; kwargs as for `trilevel.model.build_model`."""
        return build_model(name, **kwargs)

    def attach(self, model: VisionTransformer, optimizer: torch.optim.Optimizer, total_iters: int) -> None:
        """Called once the optimizer exists (before any resume)."""

    def extra_loss(self, model: VisionTransformer) -> Tensor | None:
        """Added to the cross-entropy of the forward pass just run (None: nothing)."""
        return None

    def before_step(self, model: VisionTransformer, iteration: int) -> None:
        """After the backward pass, before the optimizer step (gradients are present)."""

    def after_step(self, model: VisionTransformer, iteration: int) -> None:
        """After the optimizer step."""

    def count_macs(self, counter: MacCounter, keep_token: float, keep_attn: float, train: bool) -> int:
        """Algorithmic MACs per image at these ratios (default: the TA-selector plan's)."""
        return counter.count(keep_token, keep_attn, train=train)

    def metrics(self) -> dict[str, Any]:
        """Extra keys for this epoch's metrics.jsonl record."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict` (after `attach`)."""


METHODS: dict[str, type[TrainingMethod]] = {}
M = TypeVar("M", bound=type[TrainingMethod])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: make a TrainingMethod constructible by `make_method(name)`."""

    def register(cls: M) -> M:
        if name in METHODS:
            raise ValueError(f"method name {name!r} is already registered to {METHODS[name].__name__}")
        cls.name = name
        METHODS[name] = cls
        return cls

    return register


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:key=value,key=value`` -> (name, keyword arguments)."""
    name, _, options = spec.partition(":")
    kwargs: dict[str, Any] = {}
    for item in filter(None, options.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"method option {item!r} is not key=value (in {spec!r})")
        kwargs[key.strip()] = _value(value.strip())
    return name, kwargs


def make_method(spec: str | None) -> TrainingMethod:
    """The method named by ``spec`` (None: plain training); unknown names and options raise ValueError."""
    if spec is None:
        return TrainingMethod()
    name, kwargs = parse_method(spec)
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    try:
        return METHODS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"method {name!r}: {err}") from None


def own_selector_config(method: str, name: str, kwargs: dict[str, Any]) -> tuple[ViTConfig, dict[str, Any]]:
    """For methods that select tokens themselves: the model config (name plus field overrides such
    as num_classes) and the model arguments they honour (attn_impl, drop_path). TA-selector policies
    are refused rather than ignored."""
    chosen = [key for key in ("token_policy", "attn_policy") if kwargs.get(key) is not None]
    if chosen:
        raise ValueError(f"method {method!r} chooses tokens itself; drop {', '.join(chosen)}")
    model_args = {key: kwargs[key] for key in ("attn_impl", "drop_path") if kwargs.get(key) is not None}
    fields = {
        k: v for k, v in kwargs.items() if k not in ("token_policy", "attn_policy", "attn_impl", "drop_path")
    }
    return get_config(name, **fields), model_args


def linear_weights(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers of the transformer blocks (qkv, proj, fc1, fc2), by parameter-name prefix."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.startswith("blocks.")
    }
