"""`macsql`: ask questions of a SQLite database, inspect schemas, evaluate and fine-tune the agents.

A thin click layer over the library, one module per command group (ask.py, serve.py, eval.py, judge.py,
clean.py, sweep.py; options.py holds the options they share; finetune/commands.py the training groups),
every command registered in COMMANDS below and nowhere else. Heavy imports happen inside commands so
`macsql --help` is instant, and every `MacSQLError` becomes one line `Error: ...` with exit code 1.
"""

from __future__ import annotations

import sys

import click

from macsql.errors import MacSQLError

# The one place every command is registered: its name -> "module:attribute" (and a group's own extra
# subcommands). A command's module is imported when the command runs or a help page lists it, so command
# modules may import each other (finetune/commands.py uses cli/sweep.py) with no import cycle through this
# file, and `macsql ask` loads no evaluation or training code.
COMMANDS = {
    "ask": "macsql.cli.ask:ask",
    "schema": "macsql.cli.ask:schema",
    "serve": "macsql.cli.serve:serve",
    "eval": "macsql.cli.eval:eval_cmd",
    "score": "macsql.cli.eval:score_cmd",
    "compare": "macsql.cli.eval:compare_cmd",
    "judge": "macsql.cli.judge:judge_cmd",
    "runs": "macsql.cli.runs:runs_group",
    "data": "macsql.finetune.commands:data_group",
    "finetune": "macsql.finetune.commands:finetune",
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
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except click.exceptions.NoArgsIsHelpError:
            raise  # `macsql data` alone shows its help
        except click.UsageError as exc:
            # A bad option value is the same class of mistake as a bad file, whichever layer notices it:
            # one line and exit 1 everywhere (click's own usage errors would print usage and exit 2).
            where = exc.ctx.command_path if exc.ctx is not None else "macsql"
            message = " ".join(exc.format_message().split())
            click.echo(f"Error: {message} (see `{where} --help`)", err=True)
            sys.exit(1)
        except OSError as exc:
            # a path the user gave cannot be written or read (--out under a file, a read-only folder)
            target = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
            click.echo(f"Error: cannot use{target}: {exc.strerror or exc}; pass a path you can read and write",
                       err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)

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


@click.group(cls=MacSQLGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="macsql")
def main():
    """MAC-SQL: multi-agent text-to-SQL on SQLite.

    \b
    Quick start (the bundled demo database, the default model):
      macsql ask "How many customers live in Spain?" --db demo
      macsql schema --db demo
    """
