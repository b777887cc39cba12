"""`macsql`: ask questions of a SQLite database, inspect schemas, evaluate and fine-tune the agents.

A thin click layer over the library, one module per command group (ask.py, serve.py, eval.py, judge.py,
clean.py, sweep.py, finetune.py (`finetune`, `data build`); options.py holds the options they share,
groups.py the command class that writes `--help` in sections and keeps renamed options' old names),
every command registered in COMMANDS below and nowhere else. Heavy imports happen inside commands so
`macsql --help` is instant. Every error is one line `Error: ...` with its exit code: 1 for a `MacSQLError`,
2 for a usage error (click's, or ours: `errors.UsageError`), 3 when `ask` found no working SQL; a closed
pipe (`macsql ask ... --csv | head -1`) ends quietly with 0. `MACSQL_*` variables and a TOML config file
give every option a default of the user's own (defaults.py).
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from macsql.cli.defaults import CONFIG_ENV, ENV_PREFIX
from macsql.errors import EXIT_ERROR, EXIT_USAGE, MacSQLError

# The one place every command is registered: its name -> "module:attribute" (and a group's own extra
# subcommands). A command's module is imported when the command runs or a help page lists it, so command
# modules may import each other (finetune.py uses sweep.py) with no import cycle through this
# file, and `macsql ask` loads no evaluation or training code.
COMMANDS = {
    "ask": "macsql.cli.ask:ask",
    "schema": "macsql.cli.ask:schema",
    "serve": "macsql.cli.serve:serve",
    "mcp": "macsql.cli.mcp:mcp",
    "eval": "macsql.cli.eval:eval_cmd",
    "score": "macsql.cli.eval:score_cmd",
    "compare": "macsql.cli.eval:compare_cmd",
    "judge": "macsql.cli.judge:judge_cmd",
    "runs": "macsql.cli.runs:runs_group",
    "teach": "macsql.cli.teach:teach",
    "data": "macsql.cli.finetune:data_group",
    "finetune": "macsql.cli.finetune:finetune",
}
SUBCOMMANDS = {"data": {"clean": "macsql.cli.clean:clean_cmd"}}


def _load(spec: str) -> click.Command:
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class MacSQLGroup(click.Group):
    """A click group that turns every `MacSQLError` into one line `Error: ...` and exit 1, and loads the
    commands named in `lazy` when they are first asked for."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx, name):
        if name not in self.commands and name in self.lazy:
            command = _load(self.lazy[name])
            for sub, spec in SUBCOMMANDS.get(name, {}).items():
                command.add_command(_load(spec), sub)
            self.add_command(command, name)
        return super().get_command(ctx, name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MacSQLError as exc:
            _fail(str(exc), exc.exit_code)
        except click.exceptions.NoArgsIsHelpError:
            raise  # `macsql data` alone shows its help
        except click.UsageError as exc:
            _usage_error(exc)
        except ModuleNotFoundError as exc:
            # an optional extra that is not installed: one line naming the install command
            from macsql import extras

            err = extras.error_for(exc, ctx.invoked_subcommand)
            if err is None:
                raise
            _fail(str(err), EXIT_ERROR)
        except BrokenPipeError:
            # whoever read the output has all it wanted (`| head -1`): nothing to report
            _quiet_stdout()
            sys.exit(0)
        except OSError as exc:
            # a path the user gave cannot be written or read (--out under a file, a read-only folder)
            target = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
            _fail(f"cannot use{target}: {exc.strerror or exc}; pass a path you can read and write", EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)

    def parse_args(self, ctx, args):
        # the group's own options (--config) fail before `invoke`: the same one line and exit 2
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            _usage_error(exc)

    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            from macsql.errors import did_you_mean

            if args and "No such command" in str(exc):
                known = self.list_commands(ctx)
                raise click.UsageError(f"no command {args[0]!r}{did_you_mean(args[0], known)}; "
                                       "see `macsql --help`", ctx) from None
            raise


def _fail(message: str, code: int) -> NoReturn:
    from macsql.display import terminal_safe

    # a message can quote the data or the model's SQL: no escape sequence reaches the terminal, one line
    click.echo(f"Error: {terminal_safe(message, keep='')}", err=True)
    sys.exit(code)


def _usage_error(exc: click.UsageError) -> NoReturn:
    """click's usage errors as ours: one line pointing at --help (click's would print the usage first), exit 2."""
    where = exc.ctx.command_path if exc.ctx is not None else "macsql"
    message = " ".join(exc.format_message().split())
    _fail(f"{message} (see `{where} --help`)", EXIT_USAGE)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (click's test runner)
        pass


@click.group(cls=MacSQLGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": ENV_PREFIX})
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), envvar=CONFIG_ENV,
              metavar="FILE", help="TOML file of option defaults, a section per command ([ask] db = \"demo\"); "
                                   "default ~/.config/macsql/config.toml when it exists, or $MACSQL_CONFIG.")
@click.version_option(package_name="macsql", allow_from_autoenv=False)
@click.pass_context
def main(ctx, config_file):
    """MAC-SQL: multi-agent text-to-SQL on SQLite, DuckDB and PostgreSQL.

    \b
    Quick start (the bundled demo database, the default model):
      macsql ask "How many customers live in Spain?" --db demo
      macsql schema --db demo

    \b
    Every option can have a default of your own: MACSQL_<COMMAND>_<OPTION>
    (MACSQL_ASK_DB=shop.sqlite), MACSQL_DB / MACSQL_MODEL / MACSQL_BACKEND, or
    a section of the config file. Exit status: 0 done, 1 error, 2 usage error,
    3 `ask` found no working SQL.
    """
    from macsql.cli.defaults import command_defaults

    ctx.default_map = command_defaults(ctx, config_file)
