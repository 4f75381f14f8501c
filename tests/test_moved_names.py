"""Public names that moved keep their old import path for one release, with a DeprecationWarning naming the new one
(mvssl_hub/version.py); a name that never existed is still an ImportError."""

from __future__ import annotations

import importlib

import pytest

from mvssl_hub.version import MOVED_MODULES, MOVED_UNTIL, RENAMED

# (old module, name) -> new module: at least one name of every old module, the ones its README and recipes used
OLD_PATHS = {
    ("mvssl_hub.data", "load_split"): "mvssl_hub.data.splits",
    ("mvssl_hub.data", "decode_into"): "mvssl_hub.data.decode",  # re-exported by the old data.py
    ("mvssl_hub.hub", "push_to_hub"): "mvssl_hub.hub.loading",
    ("mvssl_hub.hub", "upload_checkpoint"): "mvssl_hub.hub.remote",
    ("mvssl_hub.hub", "fetch_verified"): "mvssl_hub.hub.transport",
    ("mvssl_hub.device", "use_channels_last"): "mvssl_hub.train.backends",
    ("mvssl_hub.device", "make_accelerator"): "mvssl_hub.train.backends",
    ("mvssl_hub.checkpoint", "save_pretrained"): "mvssl_hub.hub.format",
    ("mvssl_hub.checkpoint", "load_config"): "mvssl_hub.hub.schema",
    ("mvssl_hub.checkpoint_config", "validate_config"): "mvssl_hub.hub.schema",
    ("mvssl_hub.model_card", "render_card"): "mvssl_hub.hub.card",
    ("mvssl_hub.records", "metric_record"): "mvssl_hub.hub.records",
    ("mvssl_hub.loading", "from_pretrained"): "mvssl_hub.hub.loading",
    ("mvssl_hub.weights", "WeightsEnum"): "mvssl_hub.hub.weights",
    ("mvssl_hub.data_decode", "decode_into"): "mvssl_hub.data.decode",
    ("mvssl_hub.data_cache", "open_cache"): "mvssl_hub.data.cache",
    ("mvssl_hub.data_stream", "StreamingSplit"): "mvssl_hub.data.stream",
    ("mvssl_hub.data_stream", "StreamBatches"): "mvssl_hub.data.stream",
    ("mvssl_hub.pinned", "BatchGather"): "mvssl_hub.data.pinned",
    ("mvssl_hub.training", "make_generator"): "mvssl_hub.data.sampling",
    ("mvssl_hub.training", "StepBatches"): "mvssl_hub.data.sampling",
    ("mvssl_hub.training", "lr_factor"): "mvssl_hub.train.schedule",
    ("mvssl_hub.config", "parse_config"): "mvssl_hub.train.config",
    ("mvssl_hub.config", "ConfigError"): "mvssl_hub.errors",
    ("mvssl_hub.step_guard", "StepGuard"): "mvssl_hub.train.step_guard",
    ("mvssl_hub.run_checkpoints", "CheckpointManager"): "mvssl_hub.train.run_state",
    ("mvssl_hub.trackers", "JSONLTracker"): "mvssl_hub.train.trackers",
    ("mvssl_hub.plots", "plot_training_curves"): "mvssl_hub.train.plots",
    ("mvssl_hub.device_settings", "configure_backends"): "mvssl_hub.train.backends",
    ("mvssl_hub.probes", "knn_evaluate"): "mvssl_hub.eval.probes",
    ("mvssl_hub.probes", "bf16_is_fast"): "mvssl_hub.device",
    ("mvssl_hub.monitor", "monitor_model"): "mvssl_hub.eval.monitor",
    ("mvssl_hub.train.launch", "start_run"): "mvssl_hub.train.startup",  # it launches nothing: it starts a run
    ("mvssl_hub.train.launch", "open_run_state"): "mvssl_hub.train.startup",
}


@pytest.mark.parametrize(("old", "name"), sorted(OLD_PATHS))
def test_an_old_path_still_imports_with_a_warning_naming_the_new_one(old: str, name: str) -> None:
    new = OLD_PATHS[old, name]
    new_name = RENAMED.get((old, name), name)
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new}\.{new_name}; .* {MOVED_UNTIL}"):
        found = getattr(importlib.import_module(old), name)
    assert found is getattr(importlib.import_module(new), new_name)


def test_the_from_import_of_the_issue_works_and_the_warning_points_at_the_caller() -> None:
    namespace: dict = {}
    with pytest.warns(DeprecationWarning, match="mvssl_hub.data.load_split moved to") as warned:
        exec(compile("from mvssl_hub.data import load_split", "users_script.py", "exec"), namespace)
    assert namespace["load_split"].__module__ == "mvssl_hub.data.splits"
    assert {w.filename for w in warned} == {"users_script.py"}  # the caller's line, not a line of mvssl_hub


def test_every_old_module_is_covered_and_names_that_never_were_stay_errors() -> None:
    assert {old for old, _ in OLD_PATHS} == set(MOVED_MODULES)
    with pytest.raises(ImportError, match="cannot import name 'no_such_name'"):
        from mvssl_hub.data import no_such_name  # noqa: F401
    with pytest.raises(ImportError, match="cannot import name 'torch' from 'mvssl_hub.data'"):
        from mvssl_hub.data import torch  # noqa: F401  (imported by data.splits, not one of its names)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("mvssl_hub.no_such_module")
