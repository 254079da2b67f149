"""Exceptions that carry a message meant for the user (the CLI prints them without a traceback).

Every error about user input names the file, the record (annotation id, image id, row) or the
config key, so the user can fix it without a debugger.
"""

from __future__ import annotations

__all__ = ["PerceptaError", "DataError", "ConfigError", "CheckpointError", "NotAvailableError"]


class PerceptaError(Exception):
    """Base class: a problem the user can fix; the message says what and where."""


class DataError(PerceptaError, ValueError):
    """Malformed or inconsistent input data (dataset files, result files, score files)."""


class ConfigError(PerceptaError, ValueError):
    """A configuration problem; the message names the key and the source (file or command line)."""


class CheckpointError(PerceptaError):
    """A checkpoint that cannot be used here (missing, corrupt, another task or version)."""


class NotAvailableError(PerceptaError):
    """A capability that this version of percepta does not provide yet."""
