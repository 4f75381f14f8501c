"""The one registry, torchvision style: name -> (builder, its weights enum). ``register_model``, ``list_models``,
``get_model``, ``get_model_builder``, ``get_model_weights``."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch.nn as nn

from .errors import UnknownModelError

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_WEIGHTS: dict[str, Any] = {}  # name -> the builder's weights enum (a WeightsEnum subclass), when it has one


def register_model(name: str | None = None, weights: Any = None) -> Callable[[Builder], Builder]:
    """Decorator that registers a builder under ``name`` (default: the function's name) with its weights enum.

    Raises ValueError if the name is taken: a silent overwrite would change what users load.
    """

    def wrap(fn: Builder) -> Builder:
        key = name or fn.__name__
        if key in _BUILDERS:
            raise ValueError(
                f"model name {key!r} is already registered by {_BUILDERS[key].__module__}."
                f"{_BUILDERS[key].__qualname__}"
            )
        _BUILDERS[key] = fn
        if weights is not None:
            _WEIGHTS[key] = weights
        return fn

    return wrap


def get_model_weights(name: str | Callable[..., nn.Module]) -> Any:
    """The weights enum of a registered builder (by name or the builder itself); may be empty."""
    key = name if isinstance(name, str) else getattr(name, "__name__", repr(name))
    get_model_builder(key)
    if key not in _WEIGHTS:
        raise unknown_name_error("builder with weights", key, _WEIGHTS)
    return _WEIGHTS[key]


def set_model_weights(name: str, weights: Any) -> Any:
    """Replace the weights enum of a registered builder (tests, a freshly published entry); returns the previous one."""
    get_model_builder(name)
    previous = _WEIGHTS.get(name)
    _WEIGHTS[name] = weights
    return previous


def registered_weights() -> dict[str, Any]:
    """name -> weights enum, for every builder that has one (schema checks iterate over this)."""
    return dict(_WEIGHTS)


def _as_patterns(patterns: str | Iterable[str] | None) -> list[str]:
    if patterns is None:
        return []
    return [patterns] if isinstance(patterns, str) else list(patterns)


def list_models(
    include: str | Iterable[str] | None = None, exclude: str | Iterable[str] | None = None
) -> list[str]:
    """Sorted registered names, filtered by shell-style patterns (``"*resnet18"``)."""
    names = sorted(_BUILDERS)
    inc, exc = _as_patterns(include), _as_patterns(exclude)
    if inc:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in inc)]
    if exc:
        names = [n for n in names if not any(fnmatch.fnmatchcase(n, p) for p in exc)]
    return names


def unknown_name_error(kind: str, name: str, known: Iterable[str]) -> UnknownModelError:
    """An error for an unknown ``name`` among ``known`` that suggests the closest matches."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return UnknownModelError(f"unknown {kind} {name!r}; {hint}known: {', '.join(known)}")


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; UnknownModelError with close matches otherwise."""
    try:
        return _BUILDERS[name]
    except KeyError:
        raise unknown_name_error("model", name, _BUILDERS) from None


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; kwargs go to its builder (e.g. ``weights="DEFAULT"``)."""
    return get_model_builder(name)(**kwargs)
