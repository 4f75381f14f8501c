"""The package version, and where the public names that moved now live.

Both sit in a module of their own so that any layer can use them without importing the package root. A name that
moved keeps its old import path until :data:`MOVED_UNTIL`, with a ``DeprecationWarning`` that gives the new one:
the flat modules the four wings took over (``mvssl_hub.checkpoint``, ``mvssl_hub.training``, ...) are answered by
:class:`MovedModules` (installed by ``mvssl_hub/__init__.py``), and a name that left a module that still exists
(``from mvssl_hub.data import load_split``, now in ``mvssl_hub.data.splits``) by that module's ``__getattr__``,
which calls :func:`moved_name`. The new modules are imported by name, only when an old path is used. A class renamed
in its own module keeps its old name the same way: that module sets ``__getattr__ = renamed_names(__name__,
{"Old": "New"})``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__version__ = "0.1.0"
MOVED_UNTIL = "0.2.0"  # the first release without the old paths

# old module -> the modules its public names went to, searched in order
MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "mvssl_hub.data": ("mvssl_hub.data.splits", "mvssl_hub.data.decode"),  # the wing took the module's name
    "mvssl_hub.hub": ("mvssl_hub.hub.transport", "mvssl_hub.hub.remote", "mvssl_hub.hub.loading"),  # likewise (a
    # checkpoint's fetch and upload_checkpoint: now in remote; push_to_hub: now in loading)
    "mvssl_hub.device": ("mvssl_hub.train.backends",),  # its run set-up half (precision, channels_last, accelerator)
    "mvssl_hub.checkpoint": ("mvssl_hub.hub.format", "mvssl_hub.hub.schema"),
    "mvssl_hub.checkpoint_config": ("mvssl_hub.hub.schema",),
    "mvssl_hub.model_card": ("mvssl_hub.hub.card",),
    "mvssl_hub.records": ("mvssl_hub.hub.records",),
    "mvssl_hub.loading": ("mvssl_hub.hub.loading",),
    "mvssl_hub.weights": ("mvssl_hub.hub.weights",),
    "mvssl_hub.data_decode": ("mvssl_hub.data.decode",),
    "mvssl_hub.data_cache": ("mvssl_hub.data.cache",),
    "mvssl_hub.data_stream": ("mvssl_hub.data.stream",),
    "mvssl_hub.pinned": ("mvssl_hub.data.pinned",),
    "mvssl_hub.training": ("mvssl_hub.data.sampling", "mvssl_hub.train.schedule"),
    "mvssl_hub.config": ("mvssl_hub.train.config", "mvssl_hub.errors"),
    "mvssl_hub.step_guard": ("mvssl_hub.train.step_guard",),
    "mvssl_hub.run_checkpoints": ("mvssl_hub.train.run_state",),
    "mvssl_hub.trackers": ("mvssl_hub.train.trackers",),
    "mvssl_hub.plots": ("mvssl_hub.train.plots",),
    "mvssl_hub.device_settings": ("mvssl_hub.train.backends",),
    "mvssl_hub.probes": ("mvssl_hub.eval.probes", "mvssl_hub.device"),
    "mvssl_hub.monitor": ("mvssl_hub.eval.monitor",),
    "mvssl_hub.train.launch": ("mvssl_hub.train.startup",),  # it launches nothing: it starts a run
}
RENAMED = {  # (old module, old name) -> new
    ("mvssl_hub.run_checkpoints", "CheckpointManager"): "RunStateManager",
    ("mvssl_hub.training", "StepBatches"): "BatchPlan",  # the data wing's batch classes, named for what they are
    ("mvssl_hub.pinned", "BatchGather"): "RowGather",
    ("mvssl_hub.data_stream", "StreamBatches"): "StreamDecoder",
}


def _public(module: types.ModuleType, name: str) -> bool:
    """Whether ``name`` is one of ``module``'s own public names (its ``__all__``, else what it defines)."""
    if name.startswith("_") or not hasattr(module, name):
        return False
    if hasattr(module, "__all__"):
        return name in module.__all__
    value = getattr(module, name)
    return not isinstance(value, types.ModuleType) and getattr(value, "__module__", module.__name__) == module.__name__


def moved_name(old_module: str, name: str, stacklevel: int = 3) -> Any:
    """``old_module.name`` from where it lives now, with a DeprecationWarning naming the new path; AttributeError
    when ``name`` was not one of the names that moved (as any missing attribute)."""
    new_name = RENAMED.get((old_module, name), name)
    for target in MOVED_MODULES.get(old_module, ()) if not name.startswith("_") else ():  # no import for a probe
        module = importlib.import_module(target)
        if _public(module, new_name):
            warnings.warn(f"{old_module}.{name} moved to {target}.{new_name}; the old path goes in mvssl-hub "
                          f"{MOVED_UNTIL}", DeprecationWarning, stacklevel=stacklevel)
            return getattr(module, new_name)
    raise AttributeError(f"module {old_module!r} has no attribute {name!r}")


def renamed_names(module: str, renames: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``module`` that answers each old name of ``renames`` (old -> new) with the
    new name's object and a DeprecationWarning naming it (``from module import Old`` included); any other missing
    name stays an AttributeError."""

    def __getattr__(name: str) -> Any:
        new = renames.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module}.{name} is now {module}.{new}; the old name goes in mvssl-hub {MOVED_UNTIL}",
                      DeprecationWarning, stacklevel=2)
        return getattr(sys.modules[module], new)

    return __getattr__


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an import of a module that moved away (a key of :data:`MOVED_MODULES` with no file of its own) with a
    module whose attributes are looked up by :func:`moved_name`. Appended to ``sys.meta_path``: real modules win."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED_MODULES else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name, f"Moved: see {', '.join(MOVED_MODULES[spec.name])}.")
        module.__getattr__ = lambda name: moved_name(spec.name, name)  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass
