"""Predictions without a model: each question's gold SQL with one deliberate perturbation, to check that
`macsql score` agrees with the official Spider and BIRD evaluators question by question.

Each perturbation hits one rule of the two execution accuracies: DISTINCT dropped or added (Spider's
evaluator removes DISTINCT, BIRD compares sets), select columns swapped (Spider lets columns move, BIRD
does not), ORDER BY dropped or reversed (Spider compares order under ORDER BY), duplicated rows (Spider
counts rows, BIRD does not), a changed literal (both should say wrong), `> =` spacing (Spider's evaluator
repairs it) and the gold itself. Question i gets kind (i + offset) mod 10, or the next kind that changes
its query.

Writes, into OUT: predictions.jsonl (`macsql score --pred`), spider_pred.txt + spider_gold.txt (the
official test-suite `evaluation.py --pred/--gold` format: one query a line, gold as `SQL<TAB>db_id`),
bird_pred.json + bird_gold.sql (BIRD's `evaluation_ex.py` format) and kinds.json (the kind per question).

    python benchmarks/perturbed_predictions.py --data ../shared/data/spider/dev.json --out /tmp/agree
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from macsql.sql import parse_query


def drop_distinct(sql: str) -> str | None:
    return re.sub(r"\bDISTINCT\s+", "", sql, count=1, flags=re.IGNORECASE) if re.search(
        r"\bSELECT\s+DISTINCT\b", sql, re.IGNORECASE) else None


def add_distinct(sql: str) -> str | None:
    if re.search(r"\bDISTINCT\b", sql, re.IGNORECASE):
        return None
    return re.sub(r"\bSELECT\s+", "SELECT DISTINCT ", sql, count=1, flags=re.IGNORECASE)


def count_distinct_off(sql: str) -> str | None:
    return re.sub(r"(count\s*\(\s*)DISTINCT\s+", r"\1", sql, count=1, flags=re.IGNORECASE) if re.search(
        r"count\s*\(\s*DISTINCT\b", sql, re.IGNORECASE) else None


def swap_columns(sql: str) -> str | None:
    from sqlglot import exp

    tree = parse_query(sql)
    if not isinstance(tree, exp.Select) or len(tree.expressions) < 2:
        return None
    cols = list(tree.expressions)
    if cols[0] == cols[1]:
        return None
    cols[0], cols[1] = cols[1], cols[0]
    tree.set("expressions", cols)
    return tree.sql(dialect="sqlite")


def drop_order_by(sql: str) -> str | None:
    from sqlglot import exp

    tree = parse_query(sql)
    if not isinstance(tree, exp.Query) or tree.args.get("order") is None:
        return None
    tree.set("order", None)
    return tree.sql(dialect="sqlite")


def reverse_order(sql: str) -> str | None:
    if re.search(r"\bDESC\b", sql, re.IGNORECASE):
        return re.sub(r"\bDESC\b", "ASC", sql, count=1, flags=re.IGNORECASE)
    if re.search(r"\bORDER\s+BY\b", sql, re.IGNORECASE) and not re.search(r"\bASC\b", sql, re.IGNORECASE):
        from sqlglot import exp

        tree = parse_query(sql)
        order = tree.args.get("order") if isinstance(tree, exp.Query) else None
        if order is None:
            return None
        for item in order.expressions:
            item.set("desc", True)
        return tree.sql(dialect="sqlite")
    return None


def duplicate_rows(sql: str) -> str | None:
    if re.search(r"\b(ORDER\s+BY|LIMIT|UNION|INTERSECT|EXCEPT)\b", sql, re.IGNORECASE):
        return None
    body = sql.strip().rstrip(";")
    return f"SELECT * FROM ({body}) UNION ALL SELECT * FROM ({body})"


def change_literal(sql: str) -> str | None:
    m = re.search(r"'([^']*)'|\"([^\"]*)\"", sql)
    if m:
        quote = m.group(0)[0]
        return sql[:m.start()] + quote + (m.group(1) or m.group(2) or "") + "_x" + quote + sql[m.end():]
    m = re.search(r"(?<![\w.])(\d+)(?![\w.])", sql)
    if m:
        return sql[:m.start()] + str(int(m.group(1)) + 1) + sql[m.end():]
    return None


def spaced_operator(sql: str) -> str | None:
    for op in (">=", "<=", "!="):
        if op in sql:
            return sql.replace(op, op[0] + " " + op[1], 1)
    return None


def gold(sql: str) -> str:
    return sql


KINDS: dict[str, Callable[[str], str | None]] = {
    "gold": gold, "drop-distinct": drop_distinct, "swap-columns": swap_columns,
    "drop-order-by": drop_order_by, "reverse-order": reverse_order, "change-literal": change_literal,
    "add-distinct": add_distinct, "count-distinct-off": count_distinct_off, "duplicate-rows": duplicate_rows,
    "spaced-operator": spaced_operator,
}


def perturb(sql: str, start: int) -> tuple[str, str]:
    """(kind, SQL): kind number `start` of KINDS, or the next one that changes this query."""
    names = list(KINDS)
    for step in range(len(names)):
        name = names[(start + step) % len(names)]
        out = KINDS[name](sql)
        if out is not None and (name == "gold" or out != sql):
            return name, out
    return "gold", sql


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="Spider-format dev.json")
    ap.add_argument("--out", required=True, help="folder for the prediction files")
    ap.add_argument("--offset", type=int, default=0, help="shift which kind each question gets")
    args = ap.parse_args()
    rows = json.loads(Path(args.data).read_text(encoding="utf-8"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the official formats hold one query a line; spaces inside a query are kept (they may be in a literal)
    one_line = lambda s: re.sub(r"[\t\r\n]+", " ", s).strip()  # noqa: E731
    preds, kinds = [], {}
    for i, r in enumerate(rows):
        kind, sql = perturb(one_line(r["query"]), i + args.offset)
        preds.append({"question_id": str(i), "db_id": r["db_id"], "pred_sql": one_line(sql), "kind": kind})
        kinds[str(i)] = kind
    (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    (out / "spider_pred.txt").write_text("".join(p["pred_sql"] + "\n" for p in preds))
    (out / "spider_gold.txt").write_text("".join(f"{one_line(r['query'])}\t{r['db_id']}\n" for r in rows))
    (out / "bird_pred.json").write_text(json.dumps(
        {str(i): f"{p['pred_sql']}\t----- bird -----\t{p['db_id']}" for i, p in enumerate(preds)}, indent=1))
    (out / "bird_gold.sql").write_text("".join(f"{one_line(r['query'])}\t{r['db_id']}\n" for r in rows))
    (out / "kinds.json").write_text(json.dumps(kinds, indent=1))
    print(f"{len(preds)} predictions in {out}: " + ", ".join(f"{k} {n}" for k, n in Counter(kinds.values()).items()))


if __name__ == "__main__":
    main()
