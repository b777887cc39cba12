"""One error hierarchy. The CLI prints `Error: <message>` and exits with the error's `exit_code`: 1 for
most, 2 for usage (click's convention), 3 when the pipeline ran but found no working SQL."""

from __future__ import annotations

EXIT_ERROR = 1  # bad input, a missing database or model, an unreachable server
EXIT_USAGE = 2  # an option or argument given wrongly: click's own code for its usage errors
EXIT_NO_SQL = 3  # the question was asked and answered without working SQL: a script can tell it apart


class MacSQLError(Exception):
    """Base class: a problem the user can fix (bad input, missing model, unreachable server)."""

    exit_code = EXIT_ERROR


class DatabaseError(MacSQLError):
    """The database path is missing, unreadable or not SQLite."""


class InputError(MacSQLError):
    """A question, option or data file is malformed."""


class UsageError(InputError):
    """Options that contradict each other or a value an option does not take: exit 2, like click's own."""

    exit_code = EXIT_USAGE


class ModelError(MacSQLError):
    """A model name cannot be resolved or loaded, or a server cannot be reached."""


class NoSQLError(MacSQLError):
    """A model reply that contains no SQL. Inside the pipeline this is data for the Refiner."""


class NoWorkingSQLError(MacSQLError):
    """The pipeline ran to its end and no candidate query worked (no SQL, or only failing SQL)."""

    exit_code = EXIT_NO_SQL


def did_you_mean(name: str, choices) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
