"""Robust reading of model replies: code fences, chatter around the answer, missing tags."""

from __future__ import annotations

import json
import re

from macsql.errors import NoSQLError
from macsql.sql import sql_spans

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|$)", re.S)
# A statement starts at SELECT, or at WITH [RECURSIVE] name [(columns)] AS [[NOT] MATERIALIZED] ( where the
# name may be quoted as SQLite allows ("my t", `t`, [t]).
_CTE_NAME = r"(?:[A-Za-z_][\w$]*|\"(?:[^\"]|\"\")+\"|`[^`]+`|\[[^\]]+\])"
_SQL_START = re.compile(
    rf"(?is)\b(WITH\s+(?:RECURSIVE\s+)?{_CTE_NAME}\s*(?:\([^()]*\)\s*)?AS\s+(?:NOT\s+)?(?:MATERIALIZED\s+)?\(|SELECT\b)")
_SQL_TAG = re.compile(r"(?is)<sql>(.*?)(?:</sql>|$)")
_REASONING_TAG = re.compile(r"(?is)<reasoning>(.*?)(?:</reasoning>|<sql>|$)")
_SQL_LABEL = re.compile(r"(?im)^\s*(?:final\s+)?sql\s*:\s*")


def _looks_like_sql(text: str) -> bool:
    return bool(_SQL_START.search(text))


def _trim_statement(text: str) -> str:
    """Cut trailing prose after the statement: keep up to the first ';' or blank line in the code, outside
    quotes, brackets and comments (a ';' inside a comment does not end the statement)."""
    cut = re.compile(r";|\n[ \t]*\n")
    for kind, start, end in sql_spans(text):
        match = cut.search(text, start, end) if kind == "code" else None
        if match:
            return text[:match.start()].strip()
    return text.strip()


def extract_sql(reply: str) -> str:
    """The final SQL statement in a model reply; raise NoSQLError when there is none."""
    # a lone surrogate (a broken byte sequence decoded leniently) cannot be encoded for SQLite or JSON
    text = (reply or "").encode("utf-8", "replace").decode("utf-8")
    candidates = [m.group(1) for m in _SQL_TAG.finditer(text)]
    if not candidates:
        fences = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
        candidates = [body for lang, body in fences if lang in ("sql", "sqlite") and _looks_like_sql(body)]
        candidates = candidates or [body for _, body in fences if _looks_like_sql(body)]
    if not candidates:
        labelled = _SQL_LABEL.split(text)
        if len(labelled) > 1 and _looks_like_sql(labelled[-1]):
            candidates = [labelled[-1]]
    if not candidates:
        starts = list(_SQL_START.finditer(text))
        if starts:
            # the last paragraph that starts a statement: models restate drafts before the answer
            para_start = text.rfind("\n\n", 0, starts[-1].start()) + 1
            first = _SQL_START.search(text, para_start)
            candidates = [text[first.start():]]
    for body in reversed(candidates):
        match = _SQL_START.search(body)
        if match:
            sql = _trim_statement(body[match.start():])
            if sql:
                return sql
    raise NoSQLError("the model reply contains no SQL query")


def extract_reasoning(reply: str) -> str:
    """The text inside <reasoning>…</reasoning> (the GRPO experiment's format), or ''."""
    match = _REASONING_TAG.search(reply or "")
    return " ".join(match.group(1).split()) if match else ""


def extract_json_object(reply: str) -> dict | None:
    """The first JSON object in a reply (fenced or not), or None."""
    text = reply or ""
    for _, body in _FENCE.findall(text):
        obj = _loads_object(body)
        if obj is not None:
            return obj
    start = text.find("{")
    while start != -1:
        depth = 0
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    obj = _loads_object(text[start:i + 1])
                    if obj is not None:
                        return obj
                    break
        start = text.find("{", start + 1)
    return None


def _loads_object(text: str) -> dict | None:
    text = text.strip()
    for candidate in (text, text.replace("'", '"')):
        try:
            obj = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None
