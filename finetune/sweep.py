"""Hyperparameter sweeps: `macsql finetune AGENT ... --sweep lr=3e-5,5e-5,1e-4 batch=4,8`.

The spec names `Options` fields (or short aliases: lr, batch, r, alpha, ...), each with a comma list of values;
the grid is their product. Every setting trains through the ordinary entry point (`training.run`, the one
`macsql finetune` calls) into OUT/<setting>/, so each run keeps its adapters, its log and its loss plot. Then
one table: steps, last training loss, best and last validation loss (the mean over tasks, `eval_loss`), and,
with `--sweep-eval N`, execution accuracy of the pipeline on N validation questions (THE comparator). The
table goes to the terminal and to OUT/sweep.md, OUT/sweep.csv and OUT/sweep.json; OUT/sweep-loss.png overlays
the validation curves. A rerun skips settings whose summary is already in their folder.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from macsql.errors import InputError

# Short names people write in a sweep, mapped to `Options` fields.
ALIASES = {
    "learning_rate": "lr", "batch": "batch_size", "bs": "batch_size", "steps": "max_steps", "epoch": "epochs",
    "r": "lora_r", "rank": "lora_r", "alpha": "lora_alpha", "dropout": "lora_dropout", "preset": "lora_preset",
    "accum": "grad_accum", "generations": "num_generations", "kl": "beta",
}
NOT_SWEPT = {"data", "out", "resume", "extra", "init_adapters", "save"}  # one per sweep, or not a setting


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str  # folder name, e.g. lr3e-5_batch4
    overrides: dict[str, Any]  # Options field -> value
    labels: dict[str, str]  # the user's key -> the value as typed


def _fields() -> dict[str, str]:
    from macsql.finetune.config import Options

    return {f.name: str(f.type) for f in dataclasses.fields(Options)}


def _convert(field: str, kind: str, text: str):
    """A typed value for an Options field from its text (`3e-5`, `8`, `none`, `true`)."""
    if text.lower() in ("none", "null") and "None" in kind:
        return None
    try:
        if kind.startswith("bool"):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if kind.startswith("int"):
            value = float(text)
            if value != int(value):
                raise ValueError(text)
            return int(value)
        if kind.startswith("float"):
            return float(text)
    except ValueError as exc:
        raise InputError(f"--sweep: {field} needs {kind.split(' ')[0]} values, got {text!r}") from exc
    return text


def parse_sweep(spec: str | Sequence[str]) -> dict[str, list[tuple[str, Any]]]:
    """{field: [(text, value), ...]} from `lr=3e-5,5e-5 batch=4,8` (one string, or one part per item)."""
    from macsql.errors import did_you_mean

    parts = spec.split() if isinstance(spec, str) else [p for item in spec for p in str(item).split()]
    if not parts:
        raise InputError("--sweep is empty; write NAME=V1,V2 ..., e.g. --sweep lr=3e-5,1e-4 batch=4,8")
    fields = _fields()
    out: dict[str, list[tuple[str, Any]]] = {}
    keys: dict[str, str] = {}
    for part in parts:
        key, sep, values = part.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key or not values.strip(","):
            raise InputError(f"--sweep: cannot read {part!r}; write NAME=V1,V2, e.g. lr=3e-5,1e-4")
        field = ALIASES.get(key.lower(), key.lower())
        if field not in fields or field in NOT_SWEPT:
            choices = sorted((set(fields) - NOT_SWEPT) | set(ALIASES))
            raise InputError(f"--sweep: {key!r} is not a setting that can be swept{did_you_mean(key, choices)}")
        if field in out:
            raise InputError(f"--sweep: {key!r} appears twice (as {keys[field]!r} too); list its values once")
        texts = [v.strip() for v in values.split(",") if v.strip()]
        if len(set(texts)) != len(texts):
            raise InputError(f"--sweep: {key!r} lists a value twice")
        out[field] = [(t, _convert(field, fields[field], t)) for t in texts]
        keys[field] = key
    return {keys[f]: v for f, v in out.items()}


def expand(sweep: dict[str, list[tuple[str, Any]]]) -> list[Setting]:
    """Every combination, first key slowest, in the order written."""
    settings = []
    for combo in itertools.product(*sweep.values()):
        labels = {k: text for k, (text, _) in zip(sweep, combo, strict=True)}
        overrides = {ALIASES.get(k.lower(), k.lower()): value for k, (_, value) in zip(sweep, combo, strict=True)}
        name = "_".join(re.sub(r"[^A-Za-z0-9.+-]", "-", f"{k}{t}") for k, t in labels.items())
        settings.append(Setting(name, overrides, labels))
    return settings


# -------------------------------------------------------------------------------------------- the runs
def losses(history: list[dict]) -> dict:
    """Steps, last training loss, best and last validation loss (mean over tasks) from a trainer log."""
    train = [(e.get("step"), e["loss"]) for e in history if "loss" in e]
    evals = [(e.get("step"), e["eval_loss"]) for e in history if "eval_loss" in e]
    best = min(evals, key=lambda se: se[1]) if evals else (None, None)
    steps = max((e.get("step") or 0 for e in history), default=0)
    return {"steps": steps, "train_loss": round(train[-1][1], 4) if train else None,
            "best_eval_loss": round(best[1], 4) if evals else None, "best_eval_step": best[0],
            "last_eval_loss": round(evals[-1][1], 4) if evals else None}


def _log_of(out: Path, agent: str, method: str) -> list[dict]:
    path = out / f"{agent}-{method}-log.json"
    return json.loads(path.read_text()) if path.is_file() else []


def run_sweep(agent: str, base, sweep: dict[str, list[tuple[str, Any]]], *, eval_questions: int = 0,
              pipeline_options: dict | None = None, train: Callable[[str, Any], dict] | None = None,
              echo: Callable[[str], None] = print) -> list[dict]:
    """Train every setting of the grid into OUT/<setting>/ and return one row of figures per setting.

    `pipeline_options` go to the Pipeline that measures execution accuracy (default: one refine round)."""
    if train is None:
        from macsql.finetune.training import run as train
    settings = expand(sweep)
    root = Path(base.out)
    root.mkdir(parents=True, exist_ok=True)
    questions = validation_questions(base.data, eval_questions) if eval_questions else []
    rows = []
    for i, s in enumerate(settings, 1):
        opts = dataclasses.replace(base, **s.overrides, out=str(root / s.name))
        out = Path(opts.out)
        summary_file = out / f"{agent}-{opts.method}-summary.json"
        if summary_file.is_file():
            echo(f"[{i}/{len(settings)}] {s.name}: already trained, reusing {out} (delete it to train again)")
            summary = json.loads(summary_file.read_text())
        else:
            echo(f"[{i}/{len(settings)}] {s.name}: training into {out}")
            summary = train(agent, opts)
        row = {"setting": s.name, **s.labels, **losses(_log_of(out, agent, opts.method)),
               "seconds": summary.get("seconds"), "out": str(out)}
        if questions:
            row["ex"], row["eval_n"] = execution_accuracy(opts, out, questions, **(pipeline_options or {}))
        rows.append(row)
        write_table(root, rows, agent, base)  # after each run: a killed sweep still leaves its table
    plot_sweep(root, rows, agent, base.method)
    return rows


def validation_questions(data: str | Path, n: int) -> list[dict]:
    """The first `n` distinct questions of the data's validation rows (gold SQL and database known)."""
    from macsql.finetune.data import load_split

    _, val = load_split(data)
    seen, out = set(), []
    for r in val:
        key = (r.get("question"), r.get("db_path"))
        if not r.get("question") or not r.get("gold_sql") or not r.get("db_path") or key in seen:
            continue
        seen.add(key)
        out.append(r)
        if len(out) == n:
            break
    if not out:
        raise InputError(f"--sweep-eval: no validation rows with question, gold_sql and db_path in {str(data)!r}; "
                         "build the data with `macsql data build --data BENCHMARK`")
    return out


def execution_accuracy(opts, out: Path, questions: list[dict], **pipeline_options) -> tuple[float, int]:
    """EX (%) of the whole pipeline on the trained weights: base model + OUT adapters, or the OUT model,
    through the one evaluation loop (runner.evaluate; BIRD's verdict, as the pipeline's own parts use)."""
    from macsql.evaluate.datasets import Example
    from macsql.evaluate.runner import evaluate
    from macsql.pipeline import Pipeline

    full = opts.method == "sft"
    # The weights run in the dtype they were trained in.
    pipe = Pipeline.from_pretrained(str(out) if full else opts.model, backend="hf",
                                    adapters=None if full else out, backend_options={"dtype": opts.dtype},
                                    **{"max_rounds": 1, **pipeline_options})
    examples = [Example(question_id=str(i), db_id=q.get("db_id") or "", question=q["question"],
                        gold_sql=q["gold_sql"], db_path=Path(q["db_path"]), evidence=q.get("evidence") or "")
                for i, q in enumerate(questions)]
    _, summary, _ = evaluate(pipe, examples, variant=f"EX {out.name}")
    return summary["ex_bird"], len(questions)


# ------------------------------------------------------------------------------------------- the table
COLUMNS = ("steps", "train_loss", "best_eval_loss", "best_eval_step", "last_eval_loss", "ex", "seconds")


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def table_markdown(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k not in ("setting", "out", "eval_n", *COLUMNS)] if rows else []
    cols = [c for c in COLUMNS if any(c in r for r in rows)]
    head = ["setting", *keys, *[("EX %" if c == "ex" else c.replace("_", " ")) for c in cols]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = min((r["best_eval_loss"] for r in rows if r.get("best_eval_loss") is not None), default=None)
    for r in rows:
        cells = [r["setting"] + (" *" if best is not None and r.get("best_eval_loss") == best else ""),
                 *(str(r.get(k, "")) for k in keys), *(_cell(r.get(c)) for c in cols)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_table(root: Path, rows: list[dict], agent: str, base) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with (root / "sweep.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    n = rows[0].get("eval_n") if rows else None
    note = f"EX: the pipeline on {n} validation questions. " if n else ""
    (root / "sweep.md").write_text(
        f"# Sweep: {agent} {base.method} on {base.model}\n\n{table_markdown(rows)}\n\n"
        f"{note}`*`: lowest validation loss (mean over tasks).\n", encoding="utf-8")
    (root / "sweep.json").write_text(json.dumps({"agent": agent, "method": base.method, "model": base.model,
                                                 "data": str(base.data), "rows": rows}, indent=2, default=str))


def plot_sweep(root: Path, rows: list[dict], agent: str, method: str) -> Path | None:
    """Validation (solid) and training (dotted) loss of every setting on one plot."""
    from macsql.finetune.plots import loss_series

    curves = {r["setting"]: loss_series(_log_of(Path(r["out"]), agent, method)) for r in rows}
    if not any(curves.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (name, series) in enumerate(curves.items()):
        color = f"C{i % 10}"
        if "train" in series:
            ax.plot(*series["train"], ":", color=color, alpha=0.6)
        val = series.get("validation (mean)")
        if val:
            ax.plot(*val, "-o", color=color, markersize=3, label=name)
        elif "train" in series:
            ax.plot([], [], ":", color=color, label=f"{name} (train)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"sweep: {agent} {method} (solid: validation, dotted: training)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = root / "sweep-loss.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["Setting", "expand", "parse_sweep", "run_sweep", "table_markdown"]
