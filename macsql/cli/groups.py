"""Options in sections on `--help`, and old option names kept working with a warning.

`GroupedCommand` is a click command whose `--help` writes one section per group of options instead of one
long "Options" list. An option's section is, first found: the command's own `sections` mapping (a section
title -> the options in it, as typed, `--db`, or by parameter name); the `group` an option declared with
`option(..., group=...)` carries (the shared model options of options.py, and the options generated from
`Settings`, which go to "Agents and ablations"); else "Other options", which also holds `--help`.
Sections appear in the mapping's order, then the carried groups in the order their first option comes.

`renamed` maps an old option name to its new one (`{"--db": "--db-id"}`): the old name stays a hidden
option of the same type, so command lines, `MACSQL_<COMMAND>_<OLD>` variables and config keys that use it
keep working; once parsed its value moves to the new option's parameter and one line on stderr says
"Warning: --old is deprecated; use --new". When both names are given, the one typed on the command line
wins over one from a variable or a config file, else the new name does; both typed is a usage error.
"""

from __future__ import annotations

import click
from click.core import ParameterSource

EVERYDAY = "Everyday"
OUTPUT = "Output"
MODEL = "Model"
AGENTS_AND_ABLATIONS = "Agents and ablations"
SERVER = "Server"
OTHER = "Other options"


class GroupedOption(click.Option):
    """A click option that names the `--help` section it belongs in."""

    def __init__(self, *args, group: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.group = group


def option(*param_decls: str, group: str, **attrs):
    """`click.option` for an option that belongs in the `--help` section `group`."""
    return click.option(*param_decls, cls=GroupedOption, group=group, **attrs)


class DeprecatedAlias(click.Option):
    """The old name of a renamed option: hidden, parsed as the new one is, its value handed over to it."""

    def __init__(self, old: str, name: str, target: click.Option):
        kwargs = {"is_flag": True, "flag_value": target.flag_value} if target.is_flag else {"type": target.type}
        super().__init__([old], name, multiple=target.multiple, default=None, hidden=True,
                         help=f"Deprecated name of {target.opts[0]}.", **kwargs)
        self.old = old
        self.target = target

    @property
    def new(self) -> str:
        return self.target.opts[0]


class GroupedCommand(click.Command):
    """A click command with its options in sections on `--help` and old option names as deprecated aliases."""

    def __init__(self, *args, sections: dict[str, tuple[str, ...]] | None = None,
                 renamed: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.sections = dict(sections or {})
        for old, new in (renamed or {}).items():
            self.params.append(_alias(self, old, new))

    # -- deprecated names ---------------------------------------------------------------------------------
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        for alias in self.params:
            if isinstance(alias, DeprecatedAlias):
                _hand_over(ctx, alias)
        return rest

    # -- sections ---------------------------------------------------------------------------------------
    def section_of(self, param: click.Parameter) -> str:
        """The `--help` section `param` is written in."""
        for title, members in self.sections.items():
            if param.name in members or any(opt in members for opt in param.opts):
                return title
        return getattr(param, "group", None) or OTHER

    def option_sections(self, ctx: click.Context) -> list[tuple[str, list[tuple[str, str]]]]:
        """[(section title, [(option, help)])] in the order `--help` writes them; empty sections left out."""
        rows: dict[str, list[tuple[str, str]]] = {title: [] for title in self.sections}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and not isinstance(param, click.Argument):
                rows.setdefault(self.section_of(param), []).append(record)
        other = rows.pop(OTHER, [])
        out = [(title, records) for title, records in rows.items() if records]
        if other:
            out.append((OTHER if out else "Options", other))
        return out

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections = self.option_sections(ctx)
        # one width for the option column of every section, so that the help texts line up across them
        width = min(max((len(term) for _, rows in sections for term, _ in rows), default=0), 30)
        for title, rows in sections:
            with formatter.section(title):
                formatter.write_dl([(term.ljust(width) if text else term, text) for term, text in rows])


def _alias(command: click.Command, old: str, new: str) -> DeprecatedAlias:
    target = next((p for p in command.params if isinstance(p, click.Option) and new in p.opts), None)
    if target is None:
        raise TypeError(f"{command.name}: renamed {old} -> {new}, but the command has no option {new}")
    if target.required:  # click would stop at the missing new name before the old one's value reached it
        raise TypeError(f"{command.name}: {new} is required, so an old name cannot stand in for it")
    if any(old in p.opts or old in p.secondary_opts for p in command.params):
        raise TypeError(f"{command.name}: {old} is still an option of its own, so it cannot name {new}")
    taken = {p.name for p in command.params}
    name = old.lstrip("-").replace("-", "_")
    return DeprecatedAlias(old, name if name not in taken else f"{name}_deprecated", target)


def _hand_over(ctx: click.Context, alias: DeprecatedAlias) -> None:
    """Move the alias's value (if it was given) to its target's parameter, with one warning line."""
    value = ctx.params.pop(alias.name, None)
    source = ctx.get_parameter_source(alias.name)
    if source is None or source == ParameterSource.DEFAULT or value is None or value == () or ctx.resilient_parsing:
        return
    click.echo(f"Warning: {alias.old} is deprecated; use {alias.new}", err=True)
    target = alias.target.name
    target_source = ctx.get_parameter_source(target) or ParameterSource.DEFAULT
    if source == ParameterSource.COMMANDLINE == target_source:
        raise click.UsageError(f"{alias.old} and {alias.new} are one option; pass {alias.new} alone", ctx)
    if target_source == ParameterSource.DEFAULT or source == ParameterSource.COMMANDLINE:
        if alias.target.callback is not None:
            value = alias.target.callback(ctx, alias.target, value)
        ctx.params[target] = value
        ctx.set_parameter_source(target, source)
