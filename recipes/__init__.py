"""The recipes are scripts (``python recipes/pretrain.py ...``); tests and benchmarks load them with :func:`load_recipe`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

RECIPES = Path(__file__).resolve().parent


def load_recipe(script: str, module_name: str | None = None) -> ModuleType:
    """Import ``recipes/<script>.py`` as the module ``module_name`` (default ``recipes.<script>``).

    A new ``module_name`` gives a fresh copy (module-level state included), which tests use to isolate runs.
    """
    name = module_name or f"recipes.{script}"
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{script}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no recipe {script!r} in {RECIPES}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module
