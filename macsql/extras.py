"""Optional packages and the extra that installs each: a missing one is one line naming the install command.

The core (the CLI, the executor, the graph, the OpenAI-compatible backend, scoring) needs none of these;
each is imported where it is used, through `require`, so that its absence says what to install instead of
ending in a traceback after the work is done.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from macsql.errors import InputError, ModelError


class MissingExtraError(InputError, ModelError):
    """An optional package is not installed. A ModelError too, because a backend's missing package is one of
    the reasons a model cannot be loaded, and callers catch it as such."""


# import name -> (the distribution pip installs, the extra of macsql that brings it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "torch": ("torch", "local"),
    "transformers": ("transformers", "local"),
    "peft": ("peft", "local"),
    "accelerate": ("accelerate", "local"),
    "gguf": ("gguf", "local"),
    "safetensors": ("safetensors", "local"),
    "huggingface_hub": ("huggingface-hub", "local"),
    "numpy": ("numpy", "local"),
    "llama_cpp": ("llama-cpp-python", "fast"),
    "trl": ("trl", "train"),
    "datasets": ("datasets", "train"),
    "yaml": ("pyyaml", "train"),
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "pydantic": ("pydantic", "serve"),
    "matplotlib": ("matplotlib", "eval"),
    "mcp": ("mcp", "mcp"),
    "duckdb": ("duckdb", "duckdb"),
}


def install_command(extra: str) -> str:
    """The command that installs an extra, for an installed package and for a checkout."""
    return f'pip install "macsql[{extra}]" (in a checkout: pip install -e ".[{extra}]")'


def available(module: str) -> bool:
    """True when `module` can be imported (a module hidden as `sys.modules[name] = None` counts as absent)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without a spec
        return False


def missing_message(module: str, *, purpose: str, extra: str | None = None) -> str:
    """'PURPOSE needs PACKAGE: pip install ...': the one line for a missing optional package."""
    top = module.partition(".")[0]
    dist, default_extra = OPTIONAL.get(top, (top, None))
    extra = extra or default_extra
    if extra is None:
        return f"{purpose} needs {dist}: pip install {dist}"
    return f"{purpose} needs {dist}: {install_command(extra)}"


def check(module: str, *, purpose: str, extra: str | None = None) -> None:
    """MissingExtraError naming the extra, when `module` is not installed; imports nothing (a backend checks
    its packages before a model is read, and torch takes seconds to import)."""
    if not available(module):
        raise MissingExtraError(missing_message(module, purpose=purpose, extra=extra))


def require(module: str, *, purpose: str, extra: str | None = None) -> ModuleType:
    """Import an optional module, or raise MissingExtraError naming the extra that installs it.

    `purpose` reads as the subject of "needs": "plots", "the hf backend", "`macsql serve`".
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # Only the package itself being absent is ours to explain; a missing dependency of an installed
        # package is a broken install, and its own message says which.
        if exc.name is not None and module.partition(".")[0] != exc.name.partition(".")[0]:
            raise
        raise MissingExtraError(missing_message(module, purpose=purpose, extra=extra)) from exc


# The extra each command needs beyond the core, for `error_for`: `finetune` and `data build` train and
# tokenise with [train]'s stack (which holds [local]'s); `serve` needs [serve].
COMMAND_EXTRAS = {"finetune": "train", "data": "train", "serve": "serve", "mcp": "mcp"}


def error_for(exc: ImportError, command: str | None = None) -> MissingExtraError | None:
    """The one-line error for an ImportError of a known optional package that escaped a `require` (for the
    CLI's error boundary: `macsql COMMAND` names the extra that command needs); None for anything else,
    which stays a traceback because it is a bug."""
    name = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not name:
        return None
    top = name.partition(".")[0]
    if top not in OPTIONAL:
        return None
    purpose = f"`macsql {command}`" if command else "this command"
    return MissingExtraError(missing_message(top, purpose=purpose, extra=COMMAND_EXTRAS.get(command or "")))
