"""The maintainers' tools: the zoo's release, long training campaigns, quiet runs and the remote-GPU procedure.

Not part of the library, and not the user recipes (``recipes/``): these are the scripts the project's maintainers run
to train, publish and bundle the zoo's entries (``make zoo``, ``make campaign``; see tools/README.md).
"""
