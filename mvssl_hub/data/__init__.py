"""The data wing: images from a dataset to the rows of each training step.

- :mod:`.splits`: load a split (Hub id, parquet, imagefolder, ``save_to_disk``) as one uint8 tensor;
- :mod:`.decode`: decode and resize on worker threads; :mod:`.cache`: the memory-mapped resized split;
- :mod:`.stream`: parquet windows for splits larger than RAM;
- :mod:`.pinned`: where a decoded split lives (device or pinned host memory) and the batch gather;
- :mod:`.sampling`: the batch plan, "the rows of step s": seeds, epoch batches, a process's slice.
"""


def __getattr__(name: str) -> object:  # the former module mvssl_hub.data's names, until they go (mvssl_hub.version)
    from ..version import moved_name

    return moved_name(__name__, name)
