"""Category validation suites: small versioned JSON case files in `macsql/evaluate/suites/`, one per
category, each with a pass threshold. `macsql eval --suite [NAME]`.

Case kinds (a suite's `kind`, or a case's own):
  sql            run the pipeline; pass when its result equals the gold result (scored as a benchmark
                 question: runner.evaluate, compare.py, BIRD semantics)
  selector       run the Selector with pruning forced; pass when every `expect_tables` is kept and no
                 `must_drop` table is
  refine         execute `broken_sql`, give the Refiner its problem; pass when the fix returns the gold result
  hallucination  run the pipeline; pass when the SQL names no table or column the database lacks

A case's `db` is `demo` (built from databases/shop.sql), `spider:<db_id>` or `geoquery` (both under the
shared data folder); cases whose database is absent are skipped with a message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from macsql.errors import InputError, MacSQLError, did_you_mean

KINDS = ("sql", "selector", "refine", "hallucination")


@dataclass
class Suite:
    name: str
    version: int
    description: str
    threshold: float
    cases: list[dict]
    kind: str = "sql"


@dataclass
class CaseResult:
    id: str
    db: str
    passed: bool
    detail: str = ""
    sql: str = ""


@dataclass
class SuiteResult:
    suite: Suite
    results: list[CaseResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (case id, why)

    @property
    def pass_rate(self) -> float | None:
        return sum(r.passed for r in self.results) / len(self.results) if self.results else None

    @property
    def passed(self) -> bool | None:
        rate = self.pass_rate
        return None if rate is None else rate >= self.suite.threshold


def available_suites() -> dict[str, Suite]:
    folder = resources.files("macsql.evaluate") / "suites"
    suites = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            suite = parse_suite(json.loads(entry.read_text(encoding="utf-8")), entry.name)
            suites[suite.name] = suite
    return suites


def parse_suite(data: dict, source: str = "suite") -> Suite:
    try:
        suite = Suite(name=data["name"], version=int(data["version"]), description=data.get("description", ""),
                      threshold=float(data["threshold"]), cases=list(data["cases"]), kind=data.get("kind", "sql"))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{source}: a suite needs name, version, threshold and cases ({exc})") from exc
    for case in suite.cases:
        kind = case.get("kind", suite.kind)
        if kind not in KINDS:
            raise InputError(f"{source}: case {case.get('id')!r} has unknown kind {kind!r}; use one of {KINDS}")
    return suite


def default_data_root() -> Path:
    """The shared benchmark folder beside a checkout (../shared/data), or $MACSQL_SHARED_DATA."""
    env = os.environ.get("MACSQL_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


def resolve_case_db(name: str, data_root: Path) -> Path | None:
    """The database file of a case, or None when it is not on this machine."""
    if name == "demo":
        from macsql.demo import demo_db_path

        return demo_db_path()
    if name.startswith("spider:"):
        db_id = name.split(":", 1)[1]
        path = data_root / "spider" / "database" / db_id / f"{db_id}.sqlite"
    elif name == "geoquery":
        found = sorted((data_root / "geoquery").glob("*.sqlite")) if (data_root / "geoquery").is_dir() else []
        path = found[0] if found else data_root / "geoquery" / "geography.sqlite"
    else:
        path = Path(name)
    return path if path.is_file() else None


def _db_matches(case_db: str, only: list[str]) -> bool:
    return not only or case_db in only or case_db.split(":")[-1] in only


def run_case(case: dict, kind: str, db: Path, pipe) -> CaseResult:
    from macsql.evaluate.datasets import Example

    cid, question, evidence = case["id"], case.get("question", ""), case.get("evidence", "")
    if kind == "selector":
        from macsql.agents.selector import select_schema
        from macsql.schema import introspect

        out = select_schema(question, introspect(db), llm=pipe.llm, evidence=evidence, force=True)
        kept = {t.lower() for t in out.selection}
        missing = [t for t in case.get("expect_tables", []) if t.lower() not in kept]
        extra = [t for t in case.get("must_drop", []) if t.lower() in kept]
        ok = out.pruned and not missing and not extra
        detail = "kept " + ",".join(out.selection) + (f"; missing {missing}" if missing else "") + \
            (f"; should drop {extra}" if extra else "") + ("" if out.pruned else "; reply unusable")
        return CaseResult(cid, case["db"], ok, detail)
    # The other kinds are scored as a benchmark question is: sql and hallucination cases go through the one
    # evaluation loop (runner.evaluate), a refine case scores the Refiner's fix alone.
    example = Example(question_id=cid, db_id=case["db"], question=question, gold_sql=case.get("gold_sql", ""),
                      db_path=db, evidence=evidence)
    if kind == "refine":
        from macsql.agents.refiner import problem_with, refine
        from macsql.evaluate.scoring import score_and_summarize
        from macsql.schema import introspect, render_schema
        from macsql.sqlexec import execute

        problem = problem_with(execute(db, case["broken_sql"]))
        if problem is None:
            raise InputError(f"case {cid}: broken_sql runs fine, so there is nothing for the Refiner to fix")
        out = refine(question, render_schema(introspect(db)), case["broken_sql"], problem, llm=pipe.llm,
                     evidence=evidence)
        _, scores = score_and_summarize([example], {cid: {"question_id": cid, "pred_sql": out.sql}},
                                        progress=False)
    else:
        from macsql.evaluate.runner import evaluate

        records, _, scores = evaluate(pipe, [example], progress=False)
        if records[cid].get("error") and not scores[0].pred_sql:  # the pipeline gave no SQL at all
            return CaseResult(cid, case["db"], False, f"error: {records[cid]['error']}")
    score = scores[0]
    if kind == "hallucination":
        return CaseResult(cid, case["db"], not score.hallucinated,
                          "invented " + ", ".join(score.unknown) if score.hallucinated else "no invented names",
                          score.pred_sql)
    return CaseResult(cid, case["db"], score.ex_bird,
                      score.pred_error or ("ok" if score.ex_bird else "wrong result"), score.pred_sql)


def run_suites(name: str, make_pipeline: Callable, *, only_dbs: list[str] | None = None,
               data_root: str | Path | None = None, out: str | Path | None = None, quiet: bool = False,
               echo: Callable[[str], None] = print) -> list[SuiteResult]:
    """Run one suite (or `all`), print a table, write suites.json to `out`; raise when a suite is below its
    threshold (so CI fails)."""
    suites = available_suites()
    if name != "all" and name not in suites:
        raise InputError(f"no suite {name!r}{did_you_mean(name, suites)}; choose one of: all, {', '.join(suites)}")
    chosen = list(suites.values()) if name == "all" else [suites[name]]
    root = Path(data_root) if data_root else default_data_root()
    only = list(only_dbs or [])

    plan: list[tuple[SuiteResult, list[tuple[dict, Path]]]] = []
    for suite in chosen:
        res, todo = SuiteResult(suite), []
        for case in suite.cases:
            if not _db_matches(case["db"], only):
                continue
            db = resolve_case_db(case["db"], root)
            if db is None:
                res.skipped.append((case["id"], f"database {case['db']!r} not found under {root}"))
                continue
            todo.append((case, db))
        plan.append((res, todo))
    for res, _ in plan:
        for cid, why in res.skipped:
            echo(f"skip {res.suite.name}/{cid}: {why}")
    if not any(todo for _, todo in plan):
        raise InputError("no suite case can run here (databases absent or filtered out by --db-id); "
                         "try --db-id demo")

    pipe = make_pipeline()
    for res, todo in plan:
        for case, db in todo:
            try:
                res.results.append(run_case(case, case.get("kind", res.suite.kind), db, pipe))
            except InputError:
                raise
            except MacSQLError as exc:
                res.results.append(CaseResult(case["id"], case["db"], False, f"error: {exc}"))
            if not quiet:
                r = res.results[-1]
                echo(f"{'PASS' if r.passed else 'FAIL'} {res.suite.name}/{r.id}: {r.detail}")

    echo(f"\n{'suite':<20}{'version':>8}{'run':>5}{'passed':>8}{'skipped':>8}{'rate':>7}{'needed':>8}  verdict")
    for res, _ in plan:
        rate = res.pass_rate
        verdict = {True: "PASS", False: "FAIL", None: "-"}[res.passed]
        echo(f"{res.suite.name:<20}{res.suite.version:>8}{len(res.results):>5}"
             f"{sum(r.passed for r in res.results):>8}{len(res.skipped):>8}"
             f"{'-' if rate is None else f'{rate:.0%}':>7}{res.suite.threshold:>8.0%}  {verdict}")
    results = [res for res, _ in plan]
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "suites.json").write_text(json.dumps([{
            "suite": r.suite.name, "version": r.suite.version, "threshold": r.suite.threshold,
            "pass_rate": r.pass_rate, "passed": r.passed, "skipped": r.skipped,
            "cases": [vars(c) for c in r.results]} for r in results], indent=2))
    failed = [r.suite.name for r in results if r.passed is False]
    if failed:
        raise MacSQLError(f"suite(s) below their pass threshold: {', '.join(failed)} (see the table above)")
    return results
