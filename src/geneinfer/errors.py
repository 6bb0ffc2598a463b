"""User-facing errors.

Anything a user can cause (a malformed file, an unknown gene, a bad option) raises a
:class:`GeneinferError`. The CLI prints its message on one line and exits with code 2;
it never shows a traceback for these.
"""

from __future__ import annotations

from os import PathLike


class GeneinferError(Exception):
    """Base class for errors caused by user input or configuration."""


class InputFormatError(GeneinferError):
    """A file does not have the expected format.

    Parameters
    ----------
    path
        The file that was read.
    problem
        What is wrong, e.g. ``"row has 12 fields"``.
    where
        The line number (1-based int) or a location such as an HDF5 dataset name.
    expected
        What was expected instead, e.g. ``"15 fields (3 metadata + 12 samples)"``.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        problem: str,
        *,
        where: int | str | None = None,
        expected: str | None = None,
    ) -> None:
        self.path = str(path)
        self.problem = problem
        self.where = where
        self.expected = expected
        loc = self.path
        if isinstance(where, int):
            loc += f", line {where}"
        elif where:
            loc += f", {where}"
        msg = f"{loc}: {problem}"
        if expected:
            msg += f" (expected {expected})"
        super().__init__(msg)


class MissingGenesError(GeneinferError):
    """Genes required by a panel or model are absent from the input."""

    def __init__(self, missing: list[str], *, what: str, source: str | None = None,
                 names: list[str] | None = None, hint: str | None = None) -> None:
        self.missing = list(missing)
        shown = ", ".join((names or self.missing)[:20])
        more = f" and {len(self.missing) - 20} more" if len(self.missing) > 20 else ""
        src = f" in {source}" if source else ""
        tail = f"; {hint}" if hint else ""
        super().__init__(f"{len(self.missing)} {what} missing{src}: {shown}{more}{tail}")


class DataUnavailableError(GeneinferError):
    """A public data file is not cached and cannot be downloaded (e.g. offline)."""


class ModelFileError(GeneinferError):
    """A saved model is missing, truncated, tampered with, or of an unknown version."""


class ConfigError(GeneinferError):
    """A study configuration or command-line option is invalid."""
