"""Judge-based error analysis: an LLM says WHY each wrong prediction is wrong.

Execution accuracy stays the metric; the judge only explains. For every prediction whose result differs from
the gold result (THE comparator), a judge model sees the question, the schema (THE renderer, pruned to the
tables either query touches), both queries and both results, and names one category from `CATEGORIES`. Any
`LLM` works: a big model behind an OpenAI-compatible server (`make_llm(model, "openai", base_url=...)`) is
the intended judge; a local transformers or llama.cpp model is the fallback.

Input: prediction records, the dicts `macsql eval` writes to predictions.jsonl (`question_id`, `question`,
`gold_sql`, `pred_sql`, `db_id`), plus `db_path` (or a `schema` text), optionally `evidence` and `correct`
(otherwise the prediction is executed and compared here). Output in OUT: `errors.json` (the category table and
every judgement), `errors.csv` (one row per judged question), `error_categories.csv` (the table), and
`judgements.jsonl`, which makes a rerun skip questions the same judge model already judged.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from macsql.errors import InputError
from macsql.sqlexec import DEFAULT_TIMEOUT_S

CATEGORIES: dict[str, str] = {
    "schema_linking": "wrong table or column chosen, or a needed one missing",
    "join": "missing, extra or wrong join, or wrong join condition",
    "aggregation": "wrong or missing aggregate (COUNT/SUM/AVG/MAX/MIN), GROUP BY or HAVING",
    "filter_value": "wrong WHERE condition, comparison or literal value (spelling, case, format)",
    "nesting": "wrong or missing subquery, set operation (UNION/INTERSECT/EXCEPT) or nesting",
    "ordering_limit": "wrong ORDER BY direction or key, or wrong/missing LIMIT",
    "gold_error": "the gold query itself is wrong or ambiguous; the prediction is a fair answer",
    "other": "anything else (selected columns or their order, DISTINCT, formatting, arithmetic)",
}
# Words a judge uses for a category instead of its key.
_ALIASES = {
    "schema": "schema_linking", "column": "schema_linking", "table": "schema_linking", "linking": "schema_linking",
    "joins": "join", "join_condition": "join",
    "aggregate": "aggregation", "group_by": "aggregation", "grouping": "aggregation", "having": "aggregation",
    "count": "aggregation",
    "filter": "filter_value", "value": "filter_value", "where": "filter_value", "condition": "filter_value",
    "literal": "filter_value",
    "subquery": "nesting", "nested": "nesting", "nested_query": "nesting", "set_operation": "nesting",
    "union": "nesting", "intersect": "nesting", "except": "nesting",
    "ordering": "ordering_limit", "order": "ordering_limit", "order_by": "ordering_limit", "limit": "ordering_limit",
    "sorting": "ordering_limit", "sort": "ordering_limit",
    "gold": "gold_error", "reference_error": "gold_error", "ambiguous": "gold_error", "wrong_gold": "gold_error",
    "misc": "other", "others": "other", "none": "other", "unknown": "other",
}
SYSTEM = ("You are an expert SQL reviewer. A text-to-SQL system answered a question with a SQLite query whose "
          "result differs from the reference (gold) query's result. You find the main cause.")
MAX_ROWS_SHOWN = 5
MAX_CELL_CHARS = 60


# --------------------------------------------------------------------------------------------- parsing
def _key(text: str) -> str:
    return "_".join(str(text).lower().replace("-", " ").replace("/", " ").split()).strip("_.:;\"'`")


def normalize_category(text: str) -> str | None:
    """The category a judge meant by `text` ("Schema linking", "ORDER BY", "aggregation error"), or None."""
    key = _key(text)
    if key in CATEGORIES:
        return key
    for suffix in ("_error", "_errors", "_issue", "_problem", "_mistake"):
        if key.endswith(suffix) and key[: -len(suffix)]:
            inner = normalize_category(key[: -len(suffix)])
            if inner:
                return inner
    if key in _ALIASES:
        return _ALIASES[key]
    for name in CATEGORIES:  # "wrong join condition" -> join
        if name in key:
            return name
    return next((cat for alias, cat in _ALIASES.items() if alias in key.split("_")), None)


def parse_judgement(reply: str) -> tuple[str, str, bool]:
    """(category, explanation, parsed) from a judge reply: a JSON object (fenced or not, single quotes
    tolerated), a `Category: X` line, or the first category named in the text; `other` when none is found."""
    import re

    from macsql.agents.parsing import extract_json_object

    text = (reply or "").strip()
    obj = extract_json_object(text)
    if obj:
        lowered = {str(k).lower(): v for k, v in obj.items()}
        raw = lowered.get("category") or lowered.get("error_category") or lowered.get("error_type") or ""
        if isinstance(raw, list):
            raw = raw[0] if raw else ""
        category = normalize_category(str(raw)) if raw else None
        explanation = str(lowered.get("explanation") or lowered.get("reason") or lowered.get("rationale") or "")
        if category:
            return category, " ".join(explanation.split()), True
    line = re.search(r"(?im)^\W*(?:error\s+)?category\W*[:=-]\s*(.+)$", text)
    if line:
        category = normalize_category(line.group(1).split(".")[0].split(",")[0])
        if category:
            rest = re.search(r"(?im)^\W*(?:explanation|reason)\W*[:=-]\s*(.+)$", text)
            return category, (rest.group(1).strip() if rest else ""), True
    # Last resort: the category key named earliest in the text (keys only: aliases are too common as words).
    found = [(m.start(), name) for name in CATEGORIES
             if (m := re.search(rf"(?i)\b{name.replace('_', '[ _-]')}\b", text))]
    if found:
        return min(found)[1], " ".join(text.split())[:300], True
    return "other", " ".join(text.split())[:300], False


# --------------------------------------------------------------------------------------------- prompts
def _result_text(res) -> str:
    if res is None:
        return "(not executed)"
    if not res.ok:
        return f"ERROR: {res.error}"
    if not res.rows:
        return "(no rows)"

    def cell(v):
        text = repr(v) if isinstance(v, str) else str(v)
        return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS] + "..."

    shown = [" | ".join(cell(v) for v in row) for row in res.rows[:MAX_ROWS_SHOWN]]
    more = len(res.rows) - MAX_ROWS_SHOWN
    head = " | ".join(res.columns) if res.columns else ""
    return "\n".join([f"{len(res.rows)}{'+' if res.truncated else ''} row(s); columns: {head}", *shown]
                     + ([f"... {more} more"] if more > 0 else []))


def schema_text_for(db_path, gold_sql: str, pred_sql: str) -> str:
    """The schema pruned to the tables either query names (whole when neither names one), via THE renderer:
    BIRD schemas run to thousands of tokens, and the judge only needs what the two queries touch."""
    from macsql.schema import introspect, render_schema
    from macsql.sql import names_used

    schema = introspect(db_path)
    tables = {t for sql in (gold_sql, pred_sql) for t in names_used(sql, schema, columns=False).tables}
    selection = {t.name: [c.name for c in t.columns] for t in schema.tables if t.name in tables}
    return render_schema(schema, selection or None)


def build_prompt(record: dict, schema_text: str, gold_res, pred_res) -> list[dict]:
    cats = "\n".join(f"- {k}: {v}" for k, v in CATEGORIES.items())
    evidence = f"\nEvidence: {record['evidence']}" if record.get("evidence") else ""
    user = (f"Database schema:\n{schema_text}\n\nQuestion: {record['question']}{evidence}\n\n"
            f"Gold SQL:\n{record['gold_sql']}\nGold result:\n{_result_text(gold_res)}\n\n"
            f"Predicted SQL:\n{record.get('pred_sql') or '(none)'}\nPredicted result:\n{_result_text(pred_res)}\n\n"
            f"Which category is the main cause of the difference?\n{cats}\n\n"
            'Answer with JSON only: {"category": "<one category name>", "explanation": "<one sentence>"}')
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


# ------------------------------------------------------------------------------------------------ judging
def _prepare(record: dict, timeout_s: float) -> tuple[bool | None, list[dict] | None, str | None]:
    """(correct, judge prompt or None, why it cannot be judged) for one record.

    A scored record (`correct` from report.csv) is not compared again: a right one is done, a wrong one runs
    only to show both results to the judge. An unscored one is compared here with THE comparator."""
    from macsql.compare import execution_match
    from macsql.errors import MacSQLError
    from macsql.sqlexec import ExecResult

    correct = record.get("correct")
    if correct:
        return True, None, None
    db_path = record.get("db_path")
    can_run = bool(db_path) and Path(db_path).is_file()
    gold_res = pred_res = None
    if can_run:
        try:
            match = execution_match(db_path, record.get("pred_sql") or "", record["gold_sql"], timeout_s=timeout_s)
            gold_res, pred_res = match.gold, match.pred
            correct = match.correct if correct is None else correct
        except MacSQLError:
            can_run = False
        except Exception as exc:  # noqa: BLE001 - a parser failure outside the executor's guard: bad SQL
            pred_res = ExecResult(error=f"{type(exc).__name__}: {exc}")
            correct = False if correct is None else correct
    if correct is None:
        return None, None, "no database to execute on and no `correct` field"
    if correct:
        return True, None, None
    schema_text = record.get("schema")
    if not schema_text:
        if not can_run:
            return False, None, "no database and no schema text"
        schema_text = schema_text_for(db_path, record["gold_sql"], record.get("pred_sql") or "")
    return False, build_prompt(record, schema_text, gold_res, pred_res), None


def judge_records(records: Sequence[dict], llm, *, out_dir: str | Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                  batch_size: int = 8, max_new_tokens: int = 160, progress: bool = True,
                  on_judgement: Callable[[dict], None] | None = None) -> dict:
    """Judge every wrong prediction; write the files when `out_dir` is given; return the errors report."""
    from tqdm import tqdm

    from macsql.evaluate.run import PredictionStore

    model = getattr(llm, "name", type(llm).__name__)
    store = PredictionStore(Path(out_dir) / "judgements.jsonl") if out_dir else None
    done = {qid: j for qid, j in (store.done if store else {}).items() if j.get("judge_model") == model}
    judgements: list[dict] = []
    todo: list[tuple[dict, list[dict]]] = []
    counts = Counter()
    skipped: list[dict] = []
    for rec in records:
        qid = str(rec["question_id"])
        if qid in done:
            judgements.append(done[qid])
            counts["wrong"] += 1
            continue
        correct, prompt, why = _prepare(rec, timeout_s)
        if correct is None or (prompt is None and not correct):
            skipped.append({"question_id": qid, "why": why})
            continue
        counts["correct" if correct else "wrong"] += 1
        if prompt is not None:
            todo.append((rec, prompt))
    bar = tqdm(total=len(todo), desc=f"judging ({model})", unit="q", disable=not progress, leave=False)
    try:
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            gens = llm.generate([p for _, p in chunk], agent="judge", max_new_tokens=max_new_tokens)
            for (rec, _), gen in zip(chunk, gens, strict=True):
                category, explanation, parsed = parse_judgement(gen.text)
                j = {"question_id": str(rec["question_id"]), "db_id": rec.get("db_id", ""),
                     "difficulty": rec.get("difficulty", ""), "category": category, "explanation": explanation,
                     "parsed": parsed, "question": rec.get("question", ""), "gold_sql": rec.get("gold_sql", ""),
                     "pred_sql": rec.get("pred_sql") or "", "judge_model": model, "reply": gen.text}
                if store:
                    store.append(j)
                judgements.append(j)
                if on_judgement:
                    on_judgement(j)
            bar.update(len(chunk))
    finally:
        bar.close()
        if store:
            store.close()
    order = {str(r["question_id"]): i for i, r in enumerate(records)}
    judgements.sort(key=lambda j: order.get(j["question_id"], len(order)))
    report = error_report(judgements, n_records=len(records), n_correct=counts["correct"], skipped=skipped,
                          judge_model=model)
    if out_dir:
        write_error_files(out_dir, report)
    return report


def error_report(judgements: list[dict], *, n_records: int, n_correct: int, skipped: list[dict],
                 judge_model: str) -> dict:
    counts = Counter(j["category"] for j in judgements)
    n = len(judgements)
    table = {cat: {"n": counts[cat], "pct": round(100.0 * counts[cat] / n, 2) if n else 0.0,
                   "description": desc} for cat, desc in CATEGORIES.items()}
    return {"judge_model": judge_model, "questions": n_records, "correct": n_correct, "judged": n,
            "unparsed_replies": sum(not j["parsed"] for j in judgements), "skipped": skipped,
            "categories": table,
            "judgements": judgements}


ERROR_CSV_FIELDS = ("question_id", "db_id", "difficulty", "category", "explanation", "parsed", "question",
                    "gold_sql", "pred_sql")


def write_error_files(out_dir: str | Path, report: dict) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "errors.json", "csv": out / "errors.csv", "table": out / "error_categories.csv"}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    with paths["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=ERROR_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(report["judgements"])
    with paths["table"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["category", "n", "pct", "description"])
        for cat, row in report["categories"].items():
            writer.writerow([cat, row["n"], row["pct"], row["description"]])
    return paths


def category_table(report: dict) -> str:
    lines = [f"{report['judged']} wrong predictions judged by {report['judge_model']} "
             f"({report['correct']} correct of {report['questions']}; {len(report['skipped'])} not judgeable; "
             f"{report['unparsed_replies']} unparsed replies counted as other)", "",
             "| category | n | % |", "|---|---|---|"]
    lines += [f"| {cat} | {row['n']} | {row['pct']:.1f} |" for cat, row in report["categories"].items()]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- run folders
def load_run(run_dir: str | Path, *, data: str | None = None, db_root: str | None = None,
             fmt: str = "auto") -> list[dict]:
    """Prediction records of a `macsql eval` folder (predictions.jsonl) or a `macsql score --out` folder
    (report.csv), with `db_path`/`evidence` from the benchmark named in run.json/report.json (or `data`),
    and `correct` from report.csv when the run was scored. Reads the folder, never writes it."""
    from macsql.evaluate.datasets import load_examples
    from macsql.evaluate.run import RunFolder

    folder = RunFolder(run_dir)
    if not folder.path.is_dir():
        raise InputError(f"run folder {str(folder.path)!r} does not exist; pass --run DIR written by `macsql eval`")
    config = folder.config() or (folder.report() or {}).get("config", {})
    scored = folder.report_rows()
    if folder.has_predictions():
        records = [dict(r) for r in folder.predictions().values()]
    elif scored:
        records = [dict(r) for r in scored.values()]
    else:
        raise InputError(f"no predictions.jsonl or report.csv in {str(folder.path)!r}; pass a folder written by "
                         "`macsql eval --out` or `macsql score --out`")
    data = data or config.get("data")
    if not data:
        raise InputError(f"{str(folder.path)!r} has no run.json naming its benchmark; pass --data PATH (and --db-root)")
    examples = {e.question_id: e for e in load_examples(data, db_root or config.get("db_root"),
                                                        fmt=fmt if fmt != "auto" else config.get("format", "auto"),
                                                        split=config.get("split"))}
    out = []
    for r in records:
        qid = str(r["question_id"])
        e = examples.get(qid)
        if e is None:
            continue
        r.setdefault("question", e.question)
        r.setdefault("gold_sql", e.gold_sql)
        r.update({"question_id": qid, "db_id": e.db_id, "db_path": str(e.db_path), "evidence": e.evidence})
        if qid in scored and scored[qid].get("ex") in ("True", "False"):
            r["correct"] = scored[qid]["ex"] == "True"
        out.append(r)
    if not out:
        raise InputError(f"no prediction in {str(folder.path)!r} matches a question of {data}; pass the --data it was run on")
    return out


def first_wrong(records: list[dict], limit: int, timeout_s: float) -> list[dict]:
    """The first records up to and including the `limit`-th wrong one (correct ones are cheap to pass)."""
    out, wrong = [], 0
    for r in records:
        if wrong >= limit:
            break
        correct, _, _ = _prepare(r, timeout_s) if r.get("correct") is None else (r["correct"], None, None)
        if correct is False:
            wrong += 1
        out.append(r)
    return out


__all__ = ["CATEGORIES", "first_wrong", "judge_records", "load_run", "normalize_category", "parse_judgement"]
