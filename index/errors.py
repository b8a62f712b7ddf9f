"""Errors that semsearch reports to a user as one clear line.

Anything raised as a ``SemsearchError`` is a user-facing problem (a missing
index, a bad input file, a model that does not match the index). The CLI prints
its message and exits non-zero; it never shows a traceback for these.
"""


class SemsearchError(Exception):
    """A problem the user can fix; ``str(error)`` is the message to show."""


class InputError(SemsearchError):
    """An input file or value cannot be read (names the file and line/offset)."""


class IndexNotFoundError(SemsearchError):
    """No index exists at the given path."""


class IndexExistsError(SemsearchError):
    """An index already exists where a new one was requested."""


class ConfigMismatchError(SemsearchError):
    """The model or configuration does not match what the index recorded."""


class ModelLoadError(SemsearchError):
    """The requested model cannot be loaded."""


class IndexCorruptError(SemsearchError):
    """An index file is damaged or foreign."""


class IndexLockedError(SemsearchError):
    """Another process is writing to the index."""


class IndexReplacedError(IndexLockedError):
    """The index folder was replaced (``build --force``) while a write waited for its lock."""
