"""Report files of a scored run (report.json, report.csv, summary.md, PNG plots), the ablation table, and
`compare` of two reports."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from macsql import extras
from macsql.errors import InputError
from macsql.evaluate.run import REPORT, REPORT_ROWS, RunFolder
from macsql.evaluate.scoring import QuestionScore

# `ex` repeats ex_bird under its old name, so that readers of earlier runs' files (judge, compare) still work
CSV_FIELDS = ("question_id", "db_id", "difficulty", "ex_spider", "ex_bird", "ex", "exact", "rouge_l", "executes",
              "hallucinated", "unknown", "refine_rounds", "llm_calls", "prompt_tokens", "completion_tokens",
              "seconds", "ves_ratio", "ves", "rves", "pred_error", "gold_error", "question", "gold_sql", "pred_sql")
HEADLINE = (("ex_spider", "EX (Spider)"), ("ex_bird", "EX (BIRD)"), ("exact_match", "exact match"),
            ("rouge_l", "ROUGE-L"), ("hallucination_rate", "hallucination %"),
            ("execution_failure_rate", "fails to execute %"))


def write_report(out_dir: str | Path, summary: dict, scores: Sequence[QuestionScore], config: dict, *,
                 plots: bool = True) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / REPORT, "csv": out / REPORT_ROWS, "summary": out / "summary.md"}
    paths["json"].write_text(json.dumps({"config": config, "metrics": summary}, indent=2, default=str))
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for s in scores:
            row = s.to_dict()
            row["unknown"] = ";".join(row["unknown"])
            writer.writerow(row)
    paths["summary"].write_text(summary_markdown(summary, config))
    if plots and scores and _can_plot():
        paths.update(write_plots(out, summary, scores))
    return paths


def _can_plot() -> bool:
    """True when matplotlib is installed; else one line on stderr: the reports are the work, the plots a
    view of them, so a missing plotting package skips the plots instead of failing the run at its end."""
    if extras.available("matplotlib"):
        return True
    print(f"plots skipped: {extras.missing_message('matplotlib', purpose='plotting')}", file=sys.stderr,
          flush=True)
    return False


def _fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def summary_markdown(summary: dict, config: dict) -> str:
    lines = [f"# MAC-SQL evaluation: {config.get('variant', 'predictions')} on {Path(str(config.get('data', '?'))).name}",
             "",
             f"- model: `{config.get('model', '–')}` (backend {config.get('backend', '–')})",
             f"- questions: {summary['n']} (format {config.get('format', '–')}, seed {config.get('seed')}, "
             f"limit {config.get('limit')})",
             f"- data sha256: `{str(config.get('data_sha256', '–'))[:16]}…`",
             *_taught_lines(summary, config), "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {label} | {_fmt(summary.get(key))} |" for key, label in HEADLINE]
    if "ves" in summary:
        noisy = " (noisy machine)" if summary.get("ves_noisy") else ""
        lines += [f"| VES{noisy} | {_fmt(summary['ves'])} |", f"| R-VES{noisy} | {_fmt(summary['rves'])} |"]
    if summary.get("gold_errors"):
        lines += ["", f"{len(summary['gold_errors'])} gold queries failed to execute (see report.json)."]
    for title, key in (("By difficulty", "by_difficulty"), ("By refine rounds", "by_refine_rounds"),
                       ("By database", "by_database")):
        groups = summary.get(key) or {}
        if groups:
            lines += ["", f"## {title}", "", "| group | n | EX (Spider) | EX (BIRD) |", "|---|---|---|---|"]
            lines += [f"| {k} | {g['n']} | {_fmt(g.get('ex_spider'))} | {_fmt(g.get('ex_bird'))} |"
                      for k, g in groups.items()]
    cost = summary.get("cost_per_question") or {}
    if any(v.get("median") is not None for v in cost.values()):
        lines += ["", "## Cost per question", "", "| | median | p90 | mean |", "|---|---|---|---|"]
        lines += [f"| {k} | {_fmt(v['median'])} | {_fmt(v['p90'])} | {_fmt(v['mean'])} |" for k, v in cost.items()]
    return "\n".join(lines) + "\n"


def _taught_lines(summary: dict, config: dict) -> list[str]:
    """What the run was taught besides stored knowledge (evaluate/teaching.py): its examples and
    descriptions, and where they came from."""
    lines = []
    ex = config.get("examples_source")
    if ex:
        where = {"file": "the file", "split": f"split `{ex.get('split')}` of the data file, in",
                 "half": f"the {ex.get('examples_half')} half of each database's questions (seed {ex.get('seed')}; "
                         f"this run answers the {ex.get('half')} half), in"}.get(ex.get("kind"), ex.get("kind"))
        count = f"{ex['pairs']} pairs from " if isinstance(ex.get("pairs"), int) else ""
        lines.append(f"- examples: {count}{where} `{ex.get('path')}` (sha256 `{str(ex.get('sha256'))[:16]}…`)")
        if summary.get("examples_same_sql") is not None:
            lines.append(f"- questions shown an example with their own gold SQL (another wording): "
                         f"{summary['examples_same_sql']}")
            rest = summary.get("ex_without_own_sql")
            if summary["examples_same_sql"] and rest:
                lines.append(f"- EX on the other {rest['n']} questions: {rest['ex_spider']:.1f} (Spider), "
                             f"{rest['ex_bird']:.1f} (BIRD)")
    desc = config.get("descriptions_source")
    if desc and desc.get("kind") == "none":
        lines.append("- descriptions: none (--no-descriptions: BIRD's database_description texts left out)")
    elif desc:
        lines.append(f"- descriptions: `{desc.get('path')}` (sha256 `{str(desc.get('sha256'))[:16]}…`)")
    return lines


def write_plots(out: Path, summary: dict, scores: Sequence[QuestionScore]) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    made = {}
    for key, title, fname in (("by_difficulty", "EX by difficulty", "ex_by_difficulty.png"),
                              ("by_database", "EX by database", "ex_by_database.png")):
        groups = summary.get(key) or {}
        if not groups:
            continue
        names = list(groups)
        fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 2), 3.5))
        _ex_bars(ax, names, [groups[n] for n in names])
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=45 if len(names) > 4 else 0)
        for i, n in enumerate(names):
            top = max(groups[n].get("ex_spider") or 0, groups[n].get("ex_bird") or 0)
            ax.annotate(f"n={groups[n]['n']}", (i, top + 1), ha="center", fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)
        made[key] = out / fname
    secs = [s.seconds for s in scores if s.seconds]
    if secs:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.hist(secs, bins=min(30, max(5, len(secs) // 3)), color="#55a868")
        ax.set_xlabel("seconds per question")
        ax.set_ylabel("questions")
        ax.set_title("Latency distribution")
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
        made["latency"] = out / "latency.png"
    return made


def _ex_bars(ax, names: list[str], figures: list[dict]) -> None:
    """Both execution accuracies side by side for each name (a bar pair per group or variant)."""
    xs = range(len(names))
    for offset, (key, label), color in ((-0.2, ABLATION_COLUMNS[0], "#4c72b0"),
                                         (0.2, ABLATION_COLUMNS[1], "#dd8452")):
        ax.bar([x + offset for x in xs], [f.get(key) or 0 for f in figures], width=0.4, label=label, color=color)
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("EX %")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7, loc="lower right")


# ----------------------------------------------------------------------------------------- ablations
ABLATION_COLUMNS = (("ex_spider", "EX (Spider)"), ("ex_bird", "EX (BIRD)"), ("exact_match", "exact"),
                    ("hallucination_rate", "halluc. %"), ("execution_failure_rate", "fails %"))


def ablation_table(results: dict[str, dict]) -> str:
    """Markdown table, one row per variant, from {variant: summary}."""
    head = ["variant", "n", *(label for _, label in ABLATION_COLUMNS), "calls (med)", "prompt tok (med)",
            "compl. tok (med)", "s/q (med)", "s/q (p90)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, m in results.items():
        cost = m.get("cost_per_question", {})
        cells = [variant, str(m["n"]), *(_fmt(m.get(k)) for k, _ in ABLATION_COLUMNS),
                 _fmt(cost.get("llm_calls", {}).get("median")), _fmt(cost.get("prompt_tokens", {}).get("median")),
                 _fmt(cost.get("completion_tokens", {}).get("median")), _fmt(cost.get("seconds", {}).get("median")),
                 _fmt(cost.get("seconds", {}).get("p90"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_ablations(out_dir: Path, results: dict[str, dict], config: dict) -> Path:
    (out_dir / "ablations.json").write_text(json.dumps({"config": config, "variants": results}, indent=2,
                                                       default=str))
    path = out_dir / "ablations.md"
    path.write_text(f"# Ablations on {results and next(iter(results.values()))['n']} questions\n\n"
                    + ablation_table(results))
    if _can_plot():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(results) + 2), 3.5))
        names = list(results)
        _ex_bars(ax, names, [results[n] for n in names])
        ax.set_title("Ablations: execution accuracy")
        fig.tight_layout()
        fig.savefig(out_dir / "ablations.png", dpi=110)
        plt.close(fig)
    return path


# -------------------------------------------------------------------------------------------- compare
def _report_folder(path: str | Path) -> RunFolder:
    p = Path(path)
    folder = RunFolder(p.parent if p.name in (REPORT, REPORT_ROWS) else p)
    if folder.report() is None:
        raise InputError(f"no report.json in {str(folder.path)!r}; pass a folder written by `macsql eval` or "
                         "`macsql score --out`")
    return folder


def load_report(path: str | Path) -> tuple[dict, dict[str, dict]]:
    """(report.json, report.csv rows by question_id) of a run folder, or of the folder of a report file."""
    folder = _report_folder(path)
    return folder.report(), folder.report_rows()


def _figure(metrics: dict, key: str):
    """A headline figure; reports written before ex_bird existed hold the same figure as `ex`."""
    value = metrics.get(key)
    return metrics.get("ex") if value is None and key == "ex_bird" else value


def _bird(row: dict) -> str | None:
    return row.get("ex_bird") or row.get("ex")


def compare_reports(a: str | Path, b: str | Path) -> str:
    """Text: headline deltas (b - a) and the questions whose EX flipped between the two runs."""
    rep_a, rows_a = load_report(a)
    rep_b, rows_b = load_report(b)
    ma, mb = rep_a["metrics"], rep_b["metrics"]
    lines = [f"A: {a}  ({ma['n']} questions)", f"B: {b}  ({mb['n']} questions)", "",
             f"{'metric':<22}{'A':>9}{'B':>9}{'B-A':>9}"]
    for key, label in HEADLINE + (("ves", "VES"), ("rves", "R-VES")):
        va, vb = _figure(ma, key), _figure(mb, key)
        if va is None and vb is None:
            continue
        delta = f"{vb - va:+.2f}" if va is not None and vb is not None else "–"
        lines.append(f"{label:<22}{_fmt(va):>9}{_fmt(vb):>9}{delta:>9}")
    for name in ("seconds", "llm_calls", "prompt_tokens"):
        va = ma.get("cost_per_question", {}).get(name, {}).get("median")
        vb = mb.get("cost_per_question", {}).get(name, {}).get("median")
        if va is not None or vb is not None:
            delta = f"{vb - va:+.2f}" if va is not None and vb is not None else "–"
            lines.append(f"{name + ' (median)':<22}{_fmt(va):>9}{_fmt(vb):>9}{delta:>9}")
    common = [q for q in rows_a if q in rows_b]
    # "flipped" by BIRD's verdict: the one every report has had (earlier ones call it `ex`)
    gained = [q for q in common if _bird(rows_a[q]) == "False" and _bird(rows_b[q]) == "True"]
    lost = [q for q in common if _bird(rows_a[q]) == "True" and _bird(rows_b[q]) == "False"]
    lines += ["", f"{len(common)} questions in both; {len(gained)} fixed by B, {len(lost)} broken by B"]
    for title, ids in (("fixed (wrong in A, right in B)", gained), ("broken (right in A, wrong in B)", lost)):
        if ids:
            lines.append(f"\n{title}:")
            for q in ids:
                lines.append(f"  {q} [{rows_b[q]['db_id']}] {rows_b[q]['question'][:90]}")
    return "\n".join(lines)
