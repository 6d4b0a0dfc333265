"""The one error type of the storage layer: every worded refusal or fault storage raises is a `StorageError`
(subclasses say which kind), so the CLI and the pages catch one type and show its message, never a traceback."""


class StorageError(Exception):
    """A worded storage problem (bad input file or row, a damaged file on disk, a queue rule); the message names
    the file or row and what is wrong."""
