"""The few exception types users catch.

Each subclasses a builtin so that ``except ValueError`` keeps working.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file or folder is malformed, corrupted or does not match what was asked."""


class IntegrityError(CheckpointError):
    """A weights file's sha256 differs from the one it was published or saved with."""


class ConfigError(ValueError):
    """A config file or argument is unknown, wrongly typed or out of range; the message says which."""


class UnknownModelError(KeyError):
    """A model or architecture name is not registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint at the given path / repo, or (offline) nothing cached for it; the message says how to fetch it."""


class DatasetUnreachableError(ConnectionError):
    """A Hub dataset is not cached and the Hub cannot be asked (offline mode, or no connection)."""


class HubUnreachableError(CheckpointNotFoundError):
    """A Hub file is not cached and the Hub cannot be asked (offline mode, or no connection)."""


class HubRepoNotFoundError(CheckpointNotFoundError):
    """The Hub answered: no such repo (or it is private and no token reached it), or no such revision in it."""
