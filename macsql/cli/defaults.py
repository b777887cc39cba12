"""Defaults of the user's own: `MACSQL_*` environment variables and a TOML config file, for every command.

The first that is set wins:

    the command line                          macsql ask "..." --db shop.sqlite
    a variable MACSQL_<COMMAND>_<OPTION>      MACSQL_ASK_DB=shop.sqlite (MACSQL_DATA_BUILD_OUT for a subcommand)
    the short forms, where they fit           MACSQL_DB (ask, schema, serve, mcp), MACSQL_MODEL, MACSQL_BACKEND
                                              (ask, serve, mcp, eval), MACSQL_STORE (serve)
    the config file's section                 [ask] db = "shop.sqlite" ([data.build] for a subcommand)
    the built-in default

The config file is `--config FILE` (or $MACSQL_CONFIG), else `~/.config/macsql/config.toml` when it exists
($XDG_CONFIG_HOME moves it). Its keys are the options as typed, without the dashes (`base-url`, or
`base_url`). click reads MACSQL_<COMMAND>_<PARAMETER> itself (`auto_envvar_prefix`); the rest becomes its
`default_map` for the command about to run: the config section, the short forms over it, and the variables
spelled after an option where its parameter is named otherwise (MACSQL_ASK_TIMEOUT for `--timeout`, whose
parameter is `timeout_s`) over both.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from macsql.errors import InputError, UsageError, did_you_mean

ENV_PREFIX = "MACSQL"
CONFIG_ENV = "MACSQL_CONFIG"
# Short variables -> (the option's name, the commands where it means that). eval's deprecated --db (now
# --db-id) picks database ids out of a benchmark, not a database, so MACSQL_DB=demo must not reach it.
SHORT_ENV = {
    "MACSQL_DB": ("db", ("ask", "schema", "serve", "mcp")),
    "MACSQL_MODEL": ("model", ("ask", "serve", "mcp", "eval")),
    "MACSQL_BACKEND": ("backend", ("ask", "serve", "mcp", "eval")),
    "MACSQL_STORE": ("store", ("serve",)),
}


def config_path(explicit: str | None) -> Path | None:
    """The config file to read: the one named, else the per-user file when there is one."""
    if explicit:
        return Path(explicit)
    path = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "macsql" / "config.toml"
    return path if path.is_file() else None


def read_config(path: Path) -> dict:
    """The config file as a dict; UsageError (one line) when it is not TOML."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise InputError(f"reading the config file {path} needs Python 3.11+ or `pip install tomli`") from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"config file {path}: cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None


def _spellings(command: click.Command) -> dict[str, str]:
    """Every way a config key may name one of `command`'s parameters -> the parameter's name."""
    names = {}
    for param in command.params:
        if param.name is None or getattr(param, "is_eager", False):  # --help, --version
            continue
        names[param.name] = param.name
        for opt in param.opts:
            if opt.startswith("--"):
                names[opt[2:]] = names[opt[2:].replace("-", "_")] = param.name
    return names


def _section(ctx: click.Context, command: click.Command, values: dict, path: Path, where: str) -> dict:
    """A config section for `command` as click's default_map: keys turned into parameter names, subsections
    for a group's subcommands; an unknown key is a usage error that names the closest option."""
    names = _spellings(command)
    subcommands = command.list_commands(ctx) if isinstance(command, click.Group) else []
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and key in subcommands:
            out[key] = _section(ctx, command.get_command(ctx, key), value, path, f"{where}.{key}")
        elif key in names and not isinstance(value, dict):
            out[names[key]] = value
        else:
            # the options as typed (old names, hidden, are not suggested)
            known = sorted({opt[2:] for p in command.params if not getattr(p, "hidden", False) and not p.is_eager
                            for opt in p.opts if opt.startswith("--")} | set(subcommands))
            raise UsageError(f"config file {path}: [{where}] has no option {key!r}{did_you_mean(key, known)}; "
                             f"see `macsql {where.replace('.', ' ')} --help`")
    return out


def command_defaults(ctx: click.Context, config_file: str | None) -> dict:
    """click's default_map for the command `ctx` is about to run (`ctx.invoked_subcommand`): its config
    section, then the short environment variables over it."""
    group, name = ctx.command, ctx.invoked_subcommand
    path = config_path(config_file)
    config = read_config(path) if path else {}
    commands = group.list_commands(ctx)
    for key, value in config.items():
        if not isinstance(value, dict):
            raise UsageError(f"config file {path}: {key} = ... belongs in a section, e.g. [ask] db = \"demo\"")
        if key not in commands:
            raise UsageError(f"config file {path}: [{key}] is not a command{did_you_mean(key, commands)}; "
                             "sections are named after commands: [ask], [serve], [data.build]")
    command = group.get_command(ctx, name)
    if command is None:
        return {}
    defaults = _section(ctx, command, config.get(name, {}), path, name)
    for env, (option, commands_with_it) in SHORT_ENV.items():
        value = os.environ.get(env)
        param = next((p for p in command.params if f"--{option}" in p.opts), None)
        if value and name in commands_with_it and param is not None:
            defaults[param.name] = _env_value(param, value)
    _merge(defaults, _spelled_env(ctx, command, f"{ENV_PREFIX}_{name.upper()}"))
    return {name: defaults} if defaults else {}


def _env_value(param: click.Parameter, value: str):
    return param.type.split_envvar_value(value) if param.multiple else value


def _spelled_env(ctx: click.Context, command: click.Command, prefix: str) -> dict:
    """Variables named after an option as typed where click's own name differs, being the parameter's
    (MACSQL_ASK_TIMEOUT for `--timeout`, whose parameter is `timeout_s`; MACSQL_SERVE_DB for `serve --db`)."""
    out = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.is_eager or not param.allow_from_autoenv:
            continue
        for opt in param.opts:
            env = f"{prefix}_{opt[2:].replace('-', '_').upper()}"
            if opt.startswith("--") and env != f"{prefix}_{param.name.upper()}" and os.environ.get(env):
                out[param.name] = _env_value(param, os.environ[env])
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            nested = _spelled_env(ctx, command.get_command(ctx, sub), f"{prefix}_{sub.upper().replace('-', '_')}")
            if nested:
                out[sub] = nested
    return out


def _merge(into: dict, over: dict) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
