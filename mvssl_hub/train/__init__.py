"""The training wing: the kit the recipes build a run from.

- :mod:`.config`: the recipes' config dialect (dataclass + YAML + ``--key value``);
- :mod:`.schedule`: learning rate per step, the stopping step, the training clock;
- :mod:`.step_guard`: one finiteness decision per step; :mod:`.backends`: precision, memory format,
  backend flags, the optimizer kernel and the accelerator;
- :mod:`.launch`: how a recipe starts a run (log, accelerator, trackers; then its run state);
- :mod:`.run_state`: the run state (``step-*/`` folders): atomic save, exact resume, its model read back;
- :mod:`.trackers` (metrics log) and :mod:`.plots` (the training-curves figure).
"""
