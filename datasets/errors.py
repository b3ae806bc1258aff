"""The one exception type for bad input data."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """A file or folder that is missing, unreadable or not what was expected.

    ``str(err)`` reads ``"<path>: <what is wrong, what was expected>"``.
    """

    def __init__(self, path: str | Path, message: str):
        self.path = Path(path)
        self.message = message
        super().__init__(f"{self.path}: {message}")

    def __reduce__(self):  # keep picklable across process pools
        return (type(self), (self.path, self.message))
