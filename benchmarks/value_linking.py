"""Value linking on real data: does `ValueIndex.match` find the values the gold SQL filters on?

For every question whose database file is here, the gold SQL's string literals that are compared with a
column (`=`, `!=`, `IN`, `LIKE`, `GLOB`, `BETWEEN`) and are stored values of that column are the targets
(`WHERE T1.colour = 'Blue'` -> superhero.colour.colour = 'Blue'). Reported per data set and per text
linked (the question alone, which is what the pipeline links today, and the question with BIRD's evidence):

- recall: targets found on the right column with the stored spelling; "any column": the value found at all;
- matches per question (each match is a line of prompt): mean, p90, max;
- precision: the share of matches that are targets (a lower bound: a question names values its SQL reaches
  by other means, e.g. `gender_id = 1` for "male").

No model, no writes; the value index is built once per database (cached like the schema).

    nice -n 19 .venv/bin/python benchmarks/value_linking.py            # BIRD superhero+toxicology, Spider dev
    nice -n 19 .venv/bin/python benchmarks/value_linking.py --misses 30 --set bird

Before and after the variant rules of macsql/values.py (possessives, plurals, hyphens and other word breaks,
dates, codes matched whole, quoted literals, BIRD code meanings, one spelling slip), same script, same
targets (BIRD: the 274 questions of superhero and toxicology, 270 targets; 68 more gold literals are on
identifier columns such as `bond_id`, which the index leaves out by design. Spider dev: 480 questions, 139
targets):

    set     text linked          recall          all found    matches/q mean, p90, max   precision
    BIRD    question (pipeline)  39.3% -> 74.1%  80 -> 137/202  0.55, 2, 3 -> 0.86, 2, 3  70.9% -> 84.7%
    BIRD    question+evidence    54.1% -> 100%   112 -> 202/202 1.96, 6, 10 -> 1.70, 3, 12 65.9% -> 58.1%
    Spider  question (pipeline)  91.4% -> 97.1%  98 -> 104/108  0.41, 1, 6 -> 0.43, 2, 6  64.5% -> 65.2%

Still missed on the question alone: words that only mean a value ('carcinogenic' for label '+', 'fastest'
for 'Speed', 'French' for 'France', 'female' for 'F' with no value description), partial names ('DC' for
'DC Comics') and reordered ones ('control wind' for 'Wind Control'). BIRD's evidence spells most of them
out, which is why linking the evidence too finds them all.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from macsql.schema import introspect, skips_examples
from macsql.sql import double_quoted_strings, parse_query, sqlglot_schema
from macsql.values import value_index

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SETS = {
    "bird": (DATA / "bird" / "dev.json", DATA / "bird" / "dev_databases"),
    "spider": (DATA / "spider" / "dev.json", DATA / "spider" / "database"),
}


def gold_literals(sql: str, schema) -> list[tuple[str, str, str]]:
    """(table, column, literal) for each string literal the query compares with a column, tables and columns
    spelled as the schema spells them (aliases and unqualified columns resolved by sqlglot's qualifier)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.optimizer.qualify import qualify
    from sqlglot.optimizer.scope import traverse_scope

    tree = parse_query(sql)
    if tree is None:
        return []
    tree = double_quoted_strings(tree, sql, (c.name.lower() for t in schema.tables for c in t.columns))
    try:
        tree = qualify(tree, schema=sqlglot_schema(schema), dialect="sqlite", validate_qualify_columns=False)
        scopes = list(traverse_scope(tree))
    except sqlglot.errors.SqlglotError:
        return []
    compare = (exp.EQ, exp.NEQ, exp.In, exp.Like, exp.ILike, exp.Glob, exp.Between)
    out = []
    for scope in scopes:
        for col in scope.columns:
            node = col.parent
            while isinstance(node, (exp.Paren, exp.Lower, exp.Upper, exp.Trim)):
                node = node.parent
            if not isinstance(node, compare):
                continue
            source = scope.sources.get(col.table)
            table = schema.table(source.name) if isinstance(source, exp.Table) else None
            column = table.column(col.name) if table is not None else None
            if column is None:
                continue
            for lit in node.find_all(exp.Literal):
                if lit.is_string and lit.this:
                    out.append((table.name, column.name, lit.this))
    return list(dict.fromkeys(out))


def _stored(literal: str, values: list[str]) -> str | None:
    """The column's stored spelling of a gold literal: itself, or the one value that differs from it only by
    spaces at its ends (Spider's flight_2 stores 'Aberdeen ', and its gold SQL writes 'Aberdeen')."""
    if literal in values:
        return literal
    padded = [v for v in values if v.strip() == literal.strip()]
    return padded[0] if len(padded) == 1 else None


def load(name: str, limit_dbs: list[str] | None):
    data, root = SETS[name]
    if not data.is_file():
        raise SystemExit(f"{data} is missing: this benchmark needs ../shared/data")
    questions = []
    for q in json.loads(data.read_text()):
        db_file = root / q["db_id"] / f"{q['db_id']}.sqlite"
        if db_file.is_file() and (not limit_dbs or q["db_id"] in limit_dbs):
            questions.append((q, db_file))
    return questions


def measure(name: str, questions, modes: list[str], misses: int) -> None:
    per_mode = {m: Counter() for m in modes}
    counts = {m: [] for m in modes}
    shown = 0
    kinds = Counter()
    for q, db_file in questions:
        schema = introspect(db_file)
        index = value_index(db_file)
        sql = q.get("SQL") or q.get("query")
        literals = gold_literals(sql, schema)
        targets = [(t, c, stored) for t, c, v in literals
                   if (stored := _stored(v, index.values_of(t, c))) is not None]
        kinds["literals"] += len(literals)
        kinds["on identifier columns (not indexed)"] += sum(
            skips_examples(schema.table(t).column(c)) for t, c, _ in literals)
        for mode in modes:
            text = q["question"] if mode == "question" else f"{q['question']}\n{q.get('evidence', '')}"
            found = index.match(text)
            got = {(m.table.lower(), m.column.lower(), m.value) for m in found}
            got_values = {m.value for m in found}
            stat = per_mode[mode]
            counts[mode].append(len(found))
            stat["targets"] += len(targets)
            stat["hit"] += sum((t.lower(), c.lower(), v) in got for t, c, v in targets)
            stat["hit_any"] += sum(v in got_values for _, _, v in targets)
            wanted = {(t.lower(), c.lower(), v) for t, c, v in targets}
            stat["matches"] += len(found)
            stat["good"] += sum((m.table.lower(), m.column.lower(), m.value) in wanted for m in found)
            stat["questions_with_targets"] += bool(targets)
            stat["all_found"] += bool(targets) and all(w in got for w in wanted)
            if mode == modes[0] and shown < misses:
                for t, c, v in targets:
                    if (t.lower(), c.lower(), v) not in got:
                        shown += 1
                        print(f"  miss [{q['db_id']}] {t}.{c} = {v!r}  <- {q['question']!r}"
                              + (f"  evidence: {q.get('evidence', '')[:100]!r}" if mode != "question" else ""))
    print(f"{name}: {kinds['literals']} gold literals compared with a column; "
          f"{kinds['on identifier columns (not indexed)']} on identifier columns (not indexed); "
          f"targets: the {per_mode[modes[0]]['targets']} stored in an indexed column")
    for mode in modes:
        s, ns = per_mode[mode], sorted(counts[mode])
        p90 = ns[int(0.9 * (len(ns) - 1))] if ns else 0
        print(f"{name:<7} {mode:<20} questions {len(ns):>4}  targets {s['targets']:>4}  "
              f"recall {s['hit'] / max(1, s['targets']):6.1%}  any column {s['hit_any'] / max(1, s['targets']):6.1%}  "
              f"all found {s['all_found']}/{s['questions_with_targets']}  "
              f"matches/q mean {s['matches'] / max(1, len(ns)):.2f} p90 {p90} max {ns[-1] if ns else 0}  "
              f"precision {s['good'] / max(1, s['matches']):6.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", choices=[*SETS, "all"], default="all")
    ap.add_argument("--db", action="append", help="only these databases (repeatable)")
    ap.add_argument("--misses", type=int, default=0, help="print the first N targets not found")
    args = ap.parse_args()
    for name in (SETS if args.set == "all" else [args.set]):
        modes = ["question", "question+evidence"] if name == "bird" else ["question"]
        measure(name, load(name, args.db), modes, args.misses)


if __name__ == "__main__":
    main()
