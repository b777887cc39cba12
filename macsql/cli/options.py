"""The options every command that runs the agents shares, and `build_pipeline`, which turns them into a Pipeline.

Choices come from the registries they choose from (backend names, reply formats, decomposer styles), so a new
entry there is a new choice here. Only click and those light registries are imported: `macsql --help` loads
this module.
"""

from __future__ import annotations

import click

from macsql.agents.decomposer import STYLES as DECOMPOSER_STYLES
from macsql.agents.prompting import OUTPUT_FORMATS
from macsql.backends import BACKEND_CHOICES
from macsql.backends.loading import DTYPE_CHOICES
from macsql.cli.groups import AGENTS_AND_ABLATIONS, MODEL, option
from macsql.sqlexec import DEFAULT_TIMEOUT_S
from macsql.state import Context, Settings


def check_timeout_option(ctx, param, value):
    """A click callback: seconds must be positive and finite (nan or inf would switch the deadline off)."""
    from macsql.errors import InputError
    from macsql.sqlexec import check_timeout

    if value is None:  # not given: the backend's own default
        return None
    try:
        return check_timeout(value)
    except InputError as exc:  # a usage error (exit 2), like click's own for a value that is not a number
        raise click.BadParameter(str(exc), ctx, param) from None


# Option names that are not the field's name with dashes
_OPTION_NAMES = {"budget_s": "--budget", "timeout_s": "--timeout"}

# Old names of the model options, still accepted with a warning (`GroupedCommand(renamed=...)`): `--format`
# read as the output format of `ask` and as the benchmark's format of `data build`/`clean`.
RENAMED = {"--format": "--reply-format"}


def settings_options(*names: str) -> list:
    """click options generated from `Settings` fields: the field's default, help and range, one name each, in
    the "Agents and ablations" section of `--help`."""
    from dataclasses import fields

    meta = {f.name: f for f in fields(Settings)}
    out = []
    for name in names:
        f = meta[name]
        if f.metadata.get("choices"):
            kind = click.Choice(f.metadata["choices"])
        else:
            low, high, open_low = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("min_open", False)
            kind = (click.IntRange(low, high) if f.type == "int" else click.FloatRange(low, high, min_open=open_low))
        out.append(option(_OPTION_NAMES.get(name, "--" + name.replace("_", "-")), name, type=kind,
                          default=f.default, show_default=True, help=f.metadata["help"], group=AGENTS_AND_ABLATIONS))
    return out


def model_options(f):
    """Options shared by every command that runs the agents: the model's in the "Model" section of `--help`,
    the agents' and the ablation switches in "Agents and ablations"."""
    def model(*decls, **attrs):
        return option(*decls, group=MODEL, **attrs)

    def agents(*decls, **attrs):
        return option(*decls, group=AGENTS_AND_ABLATIONS, **attrs)

    opts = [
        model("--model", "-m", default=None, metavar="NAME_OR_PATH",
              help="Hugging Face id, local folder, .gguf file or alias (default: Qwen/Qwen2.5-Coder-1.5B-Instruct)."),
        model("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True,
              help="auto: llama.cpp for GGUF weights when installed, else transformers."),
        model("--adapters", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder with a LoRA adapter per agent (from `macsql finetune`)."),
        model("--base-url", default=None, help="OpenAI-compatible server URL for --backend openai "
                                               "(default $OPENAI_BASE_URL or http://localhost:8000/v1)."),
        model("--device", default=None, help="torch device for --backend hf (default: cuda if present)."),
        model("--dtype", type=click.Choice(DTYPE_CHOICES), default=None,
              help="Weights dtype for --backend hf (default: auto)."),
        model("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for llama.cpp (default: every CPU this process may use). On a busy "
                   "machine 1 can be much faster: llama.cpp's threads wait for each other."),
        model("--request-timeout", "request_timeout_s", default=None, type=float, callback=check_timeout_option,
              help="--backend openai: seconds one reply of the model server may take (default 120)."),
        model("--max-new-tokens", default=Context.max_new_tokens, show_default=True, type=click.IntRange(16, 4096),
              help="Tokens one reply may have at most. A model that does not stop by itself (a small "
                   "untrained one) writes until this cap, so a lower cap (256) bounds its time."),
        agents("--max-rounds", default=3, show_default=True, type=click.IntRange(0, 10),
               help="Refiner rounds at most."),
        agents("--timeout", "timeout_s", default=DEFAULT_TIMEOUT_S, show_default=True, type=float,
               callback=check_timeout_option, help="Seconds a query may run before it is stopped."),
        agents("--reply-format", "output_format", type=click.Choice(OUTPUT_FORMATS), default="sql",
               show_default=True, help="Agents' reply format; `reasoning` asks for "
                                       "<reasoning>…</reasoning><sql>…</sql> (shown with --verbose)."),
        agents("--decompose", type=click.Choice(DECOMPOSER_STYLES), default="steps", show_default=True,
               help="Decomposer reply style: short sub-question lines then the SQL, or MAC-SQL's "
                    "original layout with SQL for every sub-question (about 1.7x the tokens)."),
        agents("--candidates", "candidates", default=Context.candidates, show_default=True,
               type=click.IntRange(1, 32), metavar="K",
               help="SQL candidates for the execution vote: the direct query, the decomposed one and "
                    "sampled ones; 1 = a single greedy query, no vote."),
        agents("--temperature", default=Context.temperature, show_default=True,
               type=click.FloatRange(0.0, 2.0, min_open=True), help="Sampling temperature of the extra candidates."),
        agents("--all-samples", is_flag=True,
               help="Draw every sampled candidate, even when the direct and the decomposed query already "
                    "agree (by default the samples are drawn only when they do not)."),
        *settings_options("confident_prob", "budget_s", "budget_x", "prune_above_tokens", "prompt_engine"),
        agents("--no-fix-first", is_flag=True,
               help="Ablation: a failing direct query gets the other candidates, not a repair first."),
        agents("--no-values", is_flag=True, help="Ablation: do not link question words to database values."),
        agents("--no-hints", is_flag=True, help="Ablation: no repair hints for the Refiner."),
        agents("--no-selector", is_flag=True, help="Ablation: keep the whole schema."),
        agents("--no-decomposer", is_flag=True, help="Ablation: ask for SQL directly."),
        agents("--no-refiner", is_flag=True, help="Ablation: do not repair failing SQL."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def adapters_note(adapters, enabled: dict[str, bool]) -> str:
    """One line on what `--adapters` gives each agent that will run: the adapter and when it was saved (an
    adapter left in the folder by an earlier run shows its older date), or the base weights, which at 135M cost
    rounds of generation and fix nothing (as measured on SmolLM2-135M), with the flag that leaves such an agent out."""
    from datetime import datetime
    from pathlib import Path

    from macsql.pipeline import adapters_in

    trained = adapters_in(adapters)
    running = [agent for agent, on in enabled.items() if on]

    def saved(agent: str) -> str:
        stamp = (Path(trained[agent]) / "adapter_config.json").stat().st_mtime
        return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")

    parts = [f"{a} (saved {saved(a)})" for a in running if a in trained]
    line = f"adapters from {adapters}: " + (", ".join(parts) if parts else "none for the agents that run")
    missing = [a for a in running if a not in trained]
    if missing:
        line += f"; base weights: {', '.join(missing)}"
        skip = " ".join(f"--no-{a}" for a in missing if a != "decomposer")  # the decomposer writes the SQL
        if skip:
            line += f" (pass {skip} to leave {'it' if ' ' not in skip else 'them'} out)"
    return line


def build_pipeline(model, backend, adapters, base_url, device, dtype, max_rounds, timeout_s, no_selector,
                   no_decomposer, no_refiner, output_format="sql", decompose="steps", candidates=Context.candidates,
                   temperature=Context.temperature, no_values=False, no_hints=False, all_samples=False, threads=None,
                   request_timeout_s=None, max_new_tokens=Context.max_new_tokens, no_fix_first=False, **extra):
    """The Pipeline the model options describe (commands call it as `options.build_pipeline`, so that tests
    can stand a scripted pipeline in for it)."""
    from macsql.pipeline import Pipeline

    if adapters:
        click.echo(adapters_note(adapters, {"selector": not no_selector, "decomposer": not no_decomposer,
                                            "refiner": not no_refiner}), err=True)
    # Every backend option as given (None: not given); make_llm refuses one the backend does not take,
    # naming the backends that do, before any model loads.
    backend_options = {"device": device, "dtype": dtype, "n_threads": threads, "base_url": base_url,
                       "timeout_s": request_timeout_s}
    return Pipeline.from_pretrained(
        model or None, backend=backend, adapters=adapters, backend_options=backend_options,
        max_rounds=max_rounds, timeout_s=timeout_s, use_selector=not no_selector,
        use_decomposer=not no_decomposer, use_refiner=not no_refiner, output_format=output_format,
        decompose=decompose, candidates=candidates, temperature=temperature, use_values=not no_values,
        use_hints=not no_hints, early_stop=not all_samples, max_new_tokens=max_new_tokens,
        fix_first=not no_fix_first, **extra)
