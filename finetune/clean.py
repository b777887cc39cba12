"""`macsql data clean`: find benchmark examples whose gold SQL cannot be trusted, drop them, say why.

Each example's gold SQL is checked, in this order:

- `unparsable`: sqlglot cannot parse it (every later tool — the Selector targets, the metrics, the rewards —
  reads SQL with sqlglot, so such an example teaches or measures nothing reliable);
- `execution_error` / `timeout`: it fails on its database through THE executor (`sqlexec.execute`);
- `unknown_names`: it names a table or column the schema lacks (`sql.unknown_names`, the analyser the
  hallucination metric uses; against `schema.introspect` of the database, or the tables.json schema when the
  database file is absent, as for BIRD here);
- `schema_mismatch`: the schema context shipped with the data (Spider `tables.json`, BIRD `dev_tables.json`)
  disagrees with the database on a name the gold SQL uses, or has no entry for the database: a prompt built
  from that context would hide a table or column the answer needs.

A check that cannot run is skipped and counted, never a reason to drop: without the database file there is
no execution check (and no mismatch check), only parse and names against tables.json. Dropping is per
question: a GeoQuery entry keeps its other sentences and goes only when none is left. The output is the
input file minus the dropped questions, in the same format and order, so every loader reads it unchanged.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from macsql.errors import InputError
from macsql.sqlexec import DEFAULT_TIMEOUT_S

REASONS = {
    "unparsable": "sqlglot cannot parse the gold SQL",
    "execution_error": "the gold SQL fails on its database",
    "timeout": "the gold SQL exceeds the deadline",
    "unknown_names": "the gold SQL names a table or column the schema lacks",
    "schema_mismatch": "the data's schema context (tables.json) and the database disagree on a name the gold "
                       "SQL uses",
}
EXAMPLES_PER_REASON = 5


@dataclass
class Finding:
    reason: str
    detail: str


@dataclass
class Checked:
    """One question's verdict: what is wrong with it (if anything), and what could not be checked."""

    question_id: str
    db_id: str
    question: str
    gold_sql: str
    findings: list[Finding] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # checks that could not run, e.g. "execute"
    empty_result: bool = False

    def reasons(self) -> list[str]:
        return list(dict.fromkeys(f.reason for f in self.findings))


# ----------------------------------------------------------------------------------------------- checks
def _names_detail(found) -> str:
    """The finding's text for what `sql.unknown_names` found: the tables first, then each column."""
    parts = [f"unknown table {', '.join(found.tables)}"] if found.tables else []
    parts += [f"Column {c!r} could not be resolved" for c in found.columns]
    return "; ".join(parts)


def names_missing_from(context, used: dict[str, list[str]]) -> list[str]:
    """The `table` / `table.column` names in `used` (from the database) that the context schema lacks."""
    out = []
    for table, columns in used.items():
        ctx = context.table(table)
        if ctx is None:
            out.append(table)
            continue
        out.extend(f"{table}.{c}" for c in columns if ctx.column(c) is None)
    return out


def schema_diff(context, database) -> dict:
    """Tables and columns each side lacks; empty lists when the two schemas name the same things."""
    def names(schema):
        return {t.name.lower(): (t.name, {c.name.lower(): c.name for c in t.columns}) for t in schema.tables}

    ctx, db = names(context), names(database)
    out = {"missing_in_database": {"tables": [], "columns": []}, "missing_in_context": {"tables": [], "columns": []}}
    for side, have, other in (("missing_in_database", ctx, db), ("missing_in_context", db, ctx)):
        for low, (name, cols) in have.items():
            if low not in other:
                out[side]["tables"].append(name)
                continue
            out[side]["columns"].extend(f"{name}.{c}" for lc, c in cols.items() if lc not in other[low][1])
    return out


def _diff_is_empty(diff: dict) -> bool:
    return not any(v for side in diff.values() for v in side.values())


class Checker:
    """Runs the checks with per-database caches (schemas, executions: GeoQuery repeats many queries)."""

    def __init__(self, contexts: dict | None, *, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.contexts = contexts  # db_id -> Schema from tables.json, or None when the data has none
        self.timeout_s = timeout_s
        self._db_schemas: dict[str, object] = {}
        self._results: dict[tuple[str, str], object] = {}
        self.databases: dict[str, dict] = {}  # db_id -> schema diff (only for databases with both sides)

    def db_schema(self, db_id: str, db_path: Path):
        key = str(db_path)
        if key not in self._db_schemas:
            from macsql.errors import MacSQLError
            from macsql.schema import introspect

            try:
                self._db_schemas[key] = introspect(db_path) if Path(db_path).is_file() else None
            except MacSQLError:
                self._db_schemas[key] = None
            schema, context = self._db_schemas[key], self.context(db_id)
            if schema is not None and context is not None:
                self.databases[db_id] = schema_diff(context, schema)
        return self._db_schemas[key]

    def context(self, db_id: str):
        return None if self.contexts is None else self.contexts.get(db_id)

    def execute(self, db_path: Path, sql: str):
        from macsql.sqlexec import execute

        key = (str(db_path), sql)
        if key not in self._results:
            # only errors matter here: a small row cap stops huge results early
            self._results[key] = execute(db_path, sql, timeout_s=self.timeout_s, max_rows=1000)
        return self._results[key]

    def check(self, example) -> Checked:
        from macsql.errors import DatabaseError
        from macsql.sql import names_used, parse_error, parse_query, unknown_names

        out = Checked(example.question_id, example.db_id, example.question, example.gold_sql)
        sql = (example.gold_sql or "").strip().rstrip(";").strip()
        tree = parse_query(sql)
        if tree is None:
            out.findings.append(Finding("unparsable", (parse_error(sql) or "")[:200]))

        db_schema = self.db_schema(example.db_id, example.db_path)
        context = self.context(example.db_id)
        if db_schema is None:
            out.skipped.append("execute")
        elif sql:
            try:
                res = self.execute(example.db_path, sql)
            except DatabaseError as exc:  # unreadable file: cannot check, not the example's fault
                out.skipped.append(f"execute ({exc})")
            else:
                if res.timed_out:
                    out.findings.append(Finding("timeout", res.error or ""))
                elif not res.ok:
                    out.findings.append(Finding("execution_error", res.error or ""))
                else:
                    out.empty_result = not res.rows

        names_schema = db_schema if db_schema is not None else context
        if tree is not None and names_schema is not None:
            found = unknown_names(sql, names_schema)
            if found is not None and found.names:
                out.findings.append(Finding("unknown_names", _names_detail(found)))
        elif names_schema is None:
            out.skipped.append("names")

        if self.contexts is not None:
            if context is None:
                out.findings.append(Finding("schema_mismatch", f"no schema for {example.db_id!r} in the tables file"))
            elif db_schema is None:
                out.skipped.append("schema_mismatch")
            elif tree is not None and not _diff_is_empty(self.databases.get(example.db_id, {})):
                lacking = names_missing_from(context, names_used(sql, db_schema).columns)
                if lacking:
                    out.findings.append(Finding("schema_mismatch", "tables file lacks " + ", ".join(lacking)))
        return out


# ------------------------------------------------------------------------------------------- the file
def tables_file_for(data: Path, fmt: str) -> Path | None:
    """The schema context shipped beside the data: Spider's tables.json, BIRD's dev_tables.json."""
    names = [f"{data.stem}_tables.json", "tables.json"]
    if fmt == "bird":
        names.insert(0, "dev_tables.json")
    for name in names:
        if (data.parent / name).is_file():
            return data.parent / name
    return None


def load_contexts(path: Path) -> dict:
    from macsql.schema import schema_from_tables_json

    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        return {e["db_id"]: schema_from_tables_json(e) for e in entries}
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise InputError(f"{str(path)!r} is not a Spider/BIRD tables.json ({exc}); pass --tables FILE or "
                         "--no-tables") from exc


def clean_data(data: str | Path, db_root: str | Path | None = None, *, fmt: str = "auto",
               tables: str | Path | None = None, use_tables: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S,
               keep: tuple[str, ...] = (), progress: bool = True) -> tuple[list, dict]:
    """Check every question of a benchmark file; return (kept records in the input format, report)."""
    from tqdm import tqdm

    from macsql.evaluate.datasets import detect_format, load_examples, read_records

    path = Path(data)
    records = read_records(path)
    fmt = detect_format(records) if fmt == "auto" else fmt
    bad_keep = [k for k in keep if k not in REASONS]
    if bad_keep:
        from macsql.errors import did_you_mean

        raise InputError(f"unknown reason {bad_keep[0]!r}{did_you_mean(bad_keep[0], REASONS)}; "
                         f"choose from {', '.join(REASONS)}")
    tables_path = Path(tables) if tables else (tables_file_for(path, fmt) if use_tables else None)
    if tables and not tables_path.is_file():
        raise InputError(f"tables file {str(tables_path)!r} does not exist; pass --tables PATH to tables.json")
    contexts = load_contexts(tables_path) if tables_path else None

    examples = load_examples(path, db_root, fmt=fmt)
    checker = Checker(contexts, timeout_s=timeout_s)
    checked = [checker.check(e) for e in tqdm(examples, desc="checking gold SQL", unit="q",
                                              disable=not progress, leave=False)]
    dropped_ids = {c.question_id for c in checked if set(c.reasons()) - set(keep)}
    kept = _kept_records(records, examples, dropped_ids, fmt)
    report = _report(path, fmt, db_root, tables_path, examples, checked, dropped_ids, checker, keep, timeout_s,
                     n_records=len(records), n_kept_records=len(kept))
    return kept, report


def _kept_records(records: list, examples: list, dropped_ids: set[str], fmt: str) -> list:
    if fmt != "geoquery":
        # load_examples makes one Example per record, in file order
        return [r for r, e in zip(records, examples, strict=True) if e.question_id not in dropped_ids]
    kept = []
    for qi, r in enumerate(records):
        sentences = [s for si, s in enumerate(r["sentences"]) if f"{qi}-{si}" not in dropped_ids]
        if sentences:
            kept.append({**r, "sentences": sentences} if len(sentences) < len(r["sentences"]) else r)
    return kept


def _report(path, fmt, db_root, tables_path, examples, checked, dropped_ids, checker, keep, timeout_s, *,
            n_records, n_kept_records) -> dict:
    reasons = Counter(r for c in checked for r in c.reasons())
    dropped_by = Counter(r for c in checked if c.question_id in dropped_ids for r in c.reasons())
    skipped = Counter(s.split(" (")[0] for c in checked for s in c.skipped)
    no_db = sorted({c.db_id for c in checked if "execute" in c.skipped})
    by_reason: dict[str, list] = {}
    for c in checked:
        for f in c.findings:
            items = by_reason.setdefault(f.reason, [])
            if len(items) < EXAMPLES_PER_REASON:
                items.append({"question_id": c.question_id, "db_id": c.db_id, "question": c.question,
                              "gold_sql": c.gold_sql, "detail": f.detail})
    return {
        "data": str(path.resolve()), "format": fmt, "db_root": str(db_root) if db_root else None,
        "tables": str(tables_path) if tables_path else None, "timeout_s": timeout_s, "kept_reasons": list(keep),
        "questions": len(examples), "kept": len(examples) - len(dropped_ids), "dropped": len(dropped_ids),
        "records": n_records, "kept_records": n_kept_records,
        "reasons": {r: reasons[r] for r in REASONS if reasons[r]},
        "dropped_by_reason": {r: dropped_by[r] for r in REASONS if dropped_by[r]},
        "skipped_checks": {k: v for k, v in skipped.items()},
        "databases_missing": no_db,
        "empty_results": sum(c.empty_result for c in checked),
        "schema_differences": {db: d for db, d in sorted(checker.databases.items()) if not _diff_is_empty(d)},
        "databases_compared": sorted(checker.databases),
        "examples": by_reason,
        "flagged": [{"question_id": c.question_id, "db_id": c.db_id, "dropped": c.question_id in dropped_ids,
                     "reasons": [{"reason": f.reason, "detail": f.detail} for f in c.findings]}
                    for c in checked if c.findings],
    }


def summary_text(report: dict) -> str:
    """What was checked, dropped and why, for the terminal."""
    lines = [f"{report['questions']} questions in {Path(report['data']).name} ({report['format']}): "
             f"kept {report['kept']}, dropped {report['dropped']}"]
    if report["format"] == "geoquery":
        lines[0] += f" ({report['kept_records']} of {report['records']} entries left)"
    for reason, n in report["reasons"].items():
        kept = "" if reason in report["dropped_by_reason"] else "  (kept: --keep)"
        lines.append(f"  {reason:<16}{n:>6}  {REASONS[reason]}{kept}")
        for ex in report["examples"].get(reason, [])[:2]:
            lines.append(f"      e.g. {ex['question_id']} [{ex['db_id']}] {ex['detail'][:100]}")
    if not report["reasons"]:
        lines.append("  every gold query passed every check that could run")
    if report["databases_missing"]:
        n = report["skipped_checks"].get("execute", 0)
        lines.append(f"  execution not checked for {n} questions: no database file for "
                     f"{len(report['databases_missing'])} database(s) ({', '.join(report['databases_missing'][:4])}"
                     f"{', ...' if len(report['databases_missing']) > 4 else ''}); names checked against "
                     f"{'the tables file' if report['tables'] else 'nothing'}")
    if report["tables"]:
        diffs = report["schema_differences"]
        compared = len(report["databases_compared"])
        lines.append(f"  schema context {Path(report['tables']).name}: " + (
            f"{compared} database(s) compared, {len(diffs)} differ" if compared
            else "not compared (no database file to compare with)"))
        for db, d in list(diffs.items())[:5]:
            parts = [f"{side.replace('_', ' ')}: {', '.join((d[side]['tables'] + d[side]['columns'])[:4])}"
                     for side in d if d[side]["tables"] or d[side]["columns"]]
            lines.append(f"      {db}: {'; '.join(parts)}")
    if report["empty_results"]:
        lines.append(f"  note: {report['empty_results']} gold queries return no rows (kept)")
    return "\n".join(lines)


def write_outputs(kept: list, report: dict, out: str | Path, report_path: str | Path | None) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(kept, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if report_path:
        rp = Path(report_path)
        rp.parent.mkdir(parents=True, exist_ok=True)
        rp.write_text(json.dumps({**report, "out": str(out.resolve())}, indent=2, ensure_ascii=False) + "\n",
                      encoding="utf-8")


__all__ = ["REASONS", "clean_data", "schema_diff", "summary_text"]
