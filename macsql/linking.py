"""Schema linking without a model: the tables a question is about, by retrieval.

A cheap alternative to the Selector's model call on a big schema: every table is scored against the question
(and BIRD's evidence) by Okapi BM25 over its words (table and column names, split at underscores and case
changes, and the column descriptions), plus a bonus for each of its names the text writes as an identifier
(`power_name`, as BIRD evidence does) and for each of its columns that holds a value the question mentions
(macsql.values). The best `max_tables` tables are kept whole, with the tables that join two kept ones (a
link table such as `hero_power`), and every table of a matched value.

Not the default: benchmarks/selector_recall.py --cheap measures its recall and the tokens it keeps against
the gold SQL, on BIRD and Spider, beside the default (small schemas kept whole, recall 1 by construction).
"""

from __future__ import annotations

import math
import re
from collections import Counter

from macsql.schema import Schema, Selection

BM25_K1 = 1.2
BM25_B = 0.75
NAME_BONUS = 3.0  # per name of the table the text writes as an identifier ('power_name', 'T1.colour')
VALUE_BONUS = 5.0  # per column of the table holding a value the question mentions
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _terms(text: str) -> list[str]:
    from macsql.knowledge import words

    return words(_CAMEL.sub(" ", text.replace("_", " ")))


def table_documents(schema: Schema) -> dict[str, list[str]]:
    """Each table's words: its name (twice: a table's name says most about it), its columns' names and
    descriptions."""
    docs = {}
    for table in schema.tables:
        words = _terms(table.name) * 2
        for col in table.columns:
            words += _terms(col.name) + _terms(col.description)
        docs[table.name] = words
    return docs


def table_scores(question: str, schema: Schema, *, evidence: str = "",
                 matches: dict[tuple[str, str], list[str]] | None = None) -> dict[str, float]:
    """table -> how much the question (and evidence) is about it; see the module docstring."""
    text = f"{question}\n{evidence}"
    docs = table_documents(schema)
    query = set(_terms(text))
    n = len(docs) or 1
    avg = sum(len(d) for d in docs.values()) / n or 1.0
    df = Counter(w for d in docs.values() for w in set(d))
    written = {w.lower() for w in _IDENTIFIER.findall(text) if "_" in w or _CAMEL.search(w)}
    written |= {w.lower() for w in re.findall(r"\b\w+\.(\w+)", text)}  # T1.colour
    matched = Counter(t.lower() for t, _ in matches or {})
    scores = {}
    for table in schema.tables:
        doc = docs[table.name]
        tf = Counter(doc)
        score = 0.0
        for w in query & tf.keys():
            idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
            score += idf * tf[w] * (BM25_K1 + 1) / (tf[w] + BM25_K1 * (1 - BM25_B + BM25_B * len(doc) / avg))
        names = [table.name] + [c.name for c in table.columns]
        score += NAME_BONUS * sum(name.lower() in written for name in names)
        score += VALUE_BONUS * matched[table.name.lower()]
        scores[table.name] = score
    return scores


def retrieve_tables(question: str, schema: Schema, *, evidence: str = "", max_tables: int = 3,
                    matches: dict[tuple[str, str], list[str]] | None = None) -> Selection:
    """The `max_tables` best-scoring tables, whole, with the tables that join two of them and the tables of
    matched values; schema order."""
    scores = table_scores(question, schema, evidence=evidence, matches=matches)
    order = {t.name: i for i, t in enumerate(schema.tables)}
    ranked = sorted((t for t in scores if scores[t] > 0), key=lambda t: (-scores[t], order[t]))
    keep = {t.lower() for t in ranked[:max_tables]} | {t.lower() for t, _ in matches or {}}
    if not keep:
        return schema.full_selection()  # nothing to go on: prune nothing
    neighbours: dict[str, set[str]] = {t.name.lower(): set() for t in schema.tables}
    for table in schema.tables:
        for fk in table.foreign_keys:
            ref = fk.ref_table.lower()
            if ref in neighbours:
                neighbours[table.name.lower()].add(ref)
                neighbours[ref].add(table.name.lower())
    bridges = {t for t, near in neighbours.items() if t not in keep and len(near & keep) >= 2}
    keep |= bridges
    return {t.name: [c.name for c in t.columns] for t in schema.tables if t.name.lower() in keep}
