"""The Hub wing: a published checkpoint, from the folder on disk to the zoo's pinned entries.

The load path is a staircase; each step imports only the steps below it (``[tool.importlinter]``):

- :mod:`.loading`: the two verbs, ``from_pretrained`` (any folder or repo; a zoo entry's repo id falls back to
  its bundled snapshot) and ``push_to_hub`` (a model or a folder)
- :mod:`.weights`: published entries, pinned and verified
- :mod:`.remote`: a checkpoint in a Hub repo: config checked, then its files fetched; a folder checked, then pushed
- :mod:`.transport` (download, upload, cache, sha256; it only moves files) and :mod:`.format` (folder <-> validated
  config and state dicts), independent of each other
- :mod:`.schema` (``config.json``), :mod:`.card` (the generated README), :mod:`.records` (what config.json records)
- then the core: :mod:`mvssl_hub.safe_io`, the model classes.
"""


def __getattr__(name: str) -> object:  # the former module mvssl_hub.hub's names, until they go (mvssl_hub.version)
    from ..version import moved_name

    return moved_name(__name__, name)
