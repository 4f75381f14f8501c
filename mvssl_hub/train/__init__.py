"""The training wing: the kit the recipes build a run from.

- :mod:`.config`: the recipes' config dialect (dataclass + YAML + ``--key value``);
- :mod:`.schedule`: learning rate per step, the stopping step, the training clock;
- :mod:`.step_guard`: one finiteness decision per step; :mod:`.backends`: precision, memory format,
  backend flags, the optimizer kernel and the accelerator;
- :mod:`.startup`: how a recipe starts a run (log, accelerator, trackers; then its run states);
- :mod:`.loop`: the frame of the recipes' training loops (progress bar, clock, time budget, saves);
- :mod:`.run_state`: the run state (``<run>/run_states/step-*/`` folders): atomic save, exact resume, its model
  read back. A checkpoint is something else: the published folder (``<run>/export``, :mod:`mvssl_hub.hub`);
- :mod:`.trackers` (metrics log) and :mod:`.plots` (the training-curves figure).
"""
