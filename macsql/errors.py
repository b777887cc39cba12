"""One error hierarchy. The CLI prints `Error: <message>` and exits 1 for any of these."""

from __future__ import annotations


class MacSQLError(Exception):
    """Base class: a problem the user can fix (bad input, missing model, unreachable server)."""


class DatabaseError(MacSQLError):
    """The database path is missing, unreadable or not SQLite."""


class InputError(MacSQLError):
    """A question, option or data file is malformed."""


class ModelError(MacSQLError):
    """A model name cannot be resolved or loaded, or a server cannot be reached."""


class NoSQLError(MacSQLError):
    """A model reply that contains no SQL. Inside the pipeline this is data for the Refiner."""


def did_you_mean(name: str, choices) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
