"""`--sweep` and `--sweep-eval` of `macsql finetune`: the options, and running the grid they ask for
(finetune/sweep.py trains and tabulates)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from macsql.errors import InputError
from macsql.finetune.sweep import parse_sweep, run_sweep, table_markdown


def sweep_options(f):
    """`--sweep` and `--sweep-eval` for the finetune command. The command also needs
    `context_settings={"allow_extra_args": True}`, so that `--sweep lr=1e-4,2e-4 batch=4,8` reads the parts
    after the first as extra arguments (click options take one value each)."""
    f = click.option("--sweep-eval", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
                     help="With --sweep: execution accuracy of each setting on N validation questions.")(f)
    return click.option("--sweep", multiple=True, metavar="NAME=V1,V2 ...",
                        help="Train a grid of settings into OUT/<setting>/ and print one table, e.g. "
                             "--sweep lr=3e-5,5e-5,1e-4 batch=4,8")(f)


def sweep_from_cli(agent: str, opts, sweep: Sequence[str], extra_args: Sequence[str], sweep_eval: int) -> bool:
    """Run the sweep the command line asks for and print its table; False when no sweep was asked for."""
    if extra_args and not sweep:
        raise InputError(f"unexpected argument {extra_args[0]!r}; options start with -- (a grid goes after "
                         "--sweep, e.g. --sweep lr=3e-5,1e-4 batch=4,8)")
    if not sweep:
        if sweep_eval:
            raise InputError("--sweep-eval needs --sweep")
        return False
    rows = run_sweep(agent, opts, parse_sweep([*sweep, *extra_args]), eval_questions=sweep_eval, echo=click.echo)
    click.echo("\n" + table_markdown(rows))
    click.echo(f"\nsweep table: {Path(opts.out) / 'sweep.md'} (and sweep.csv, sweep.json, sweep-loss.png)")
    return True
