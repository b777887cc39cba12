"""Prompt pieces shared by the agents.

Every agent's prompt starts with the same system message and the schema, and puts the task after it, so a
backend that caches the KV of a prompt prefix (llama.cpp) computes the schema once per question.
"""

from __future__ import annotations

from macsql.backends.base import Generation, Messages

SYSTEM = "You are an expert in SQLite. You answer questions about a database with correct SQLite queries."
# The engine each sqlglot dialect names in the prompts when `prompt_engine` is native (by default they say
# SQLite on every engine: state.Settings). The templates say "SQLite": the models were trained on those exact
# prompts, so SQLite's stay byte for byte what they were.
ENGINE_NAMES = {"sqlite": "SQLite", "duckdb": "DuckDB", "postgres": "PostgreSQL"}


OUTPUT_FORMATS = ("sql", "reasoning")
# The GRPO experiment's format: a short explanation naming the tables and columns, then the query.
REASONING_FORMAT = """Answer in this format, with no other text:
<reasoning>which tables, columns, joins and filters answer the question, in one or two sentences</reasoning>
<sql>the SQLite query</sql>"""


def for_dialect(text: str, dialect: str = "sqlite") -> str:
    """A template's text for the database's engine: "SQLite" becomes the engine's name (before any question
    or schema is put into it, so that their own words stay as they are)."""
    return text if dialect == "sqlite" else text.replace("SQLite", ENGINE_NAMES.get(dialect, dialect))


def engine_name(dialect: str = "sqlite") -> str:
    return ENGINE_NAMES.get(dialect, dialect)


def sql_block(sql: str) -> str:
    """A query as the agents' prompts ask for it: in a ```sql block (the fence `extract_sql` reads first)."""
    return f"```sql\n{sql.strip()}\n```"


def reasoning_target(reasoning: str, sql: str) -> str:
    return f"<reasoning>{reasoning.strip()}</reasoning>\n<sql>{sql.strip()}</sql>"


def messages(schema_text: str, task: str, dialect: str = "sqlite") -> Messages:
    return [
        {"role": "system", "content": for_dialect(SYSTEM, dialect)},
        {"role": "user", "content": f"Database schema:\n{schema_text}\n\n{task.strip()}"},
    ]


# A follow-up's context: the last few turns of its conversation, each cut short, so that a long chat cannot
# crowd the schema out of a small model's context window.
HISTORY_TURNS = 3
HISTORY_QUESTION_CHARS = 300
HISTORY_SQL_CHARS = 800


def _clip(text: str, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def history_block(history: list[dict] | None) -> str:
    """The earlier turns ({"question", "sql"}) a follow-up builds on; "" when there are none."""
    turns = [t for t in (history or []) if (t.get("question") or "").strip()][-HISTORY_TURNS:]
    if not turns:
        return ""
    lines = ["Earlier questions in this conversation (the question below may refer to them):"]
    for t in turns:
        lines.append(f"- Question: {_clip(t['question'], HISTORY_QUESTION_CHARS)}")
        if (t.get("sql") or "").strip():
            lines.append(f"  SQL: {_clip(t['sql'], HISTORY_SQL_CHARS)}")
    return "\n".join(lines) + "\n"


# What a person taught about the database (macsql.knowledge), bounded so that it cannot crowd out the
# schema: an example whose SQL is longer than this is left out rather than cut (half a query teaches harm).
KNOWLEDGE_SQL_CHARS = 800
KNOWLEDGE_TEXT_CHARS = 300  # a question, a term's meaning, a table's description
KNOWLEDGE_TERMS = 8
KNOWLEDGE_TABLES = 12


def knowledge_block(knowledge: dict | None, tables=None) -> str:
    """The database's knowledge for this question ({"tables", "terms", "examples"}: table descriptions,
    the glossary terms the question uses, approved examples most like it, the most similar first), ending
    in a blank line; "" when there is none. `tables`: the tables kept for the question (their
    descriptions only). It goes after the schema text, never inside it, so the schema is the same text for
    every question on a database and a backend reuses the KV cache of that prefix (schema.render_schema)."""
    knowledge = knowledge or {}
    parts = []
    described = [(name, text) for name, text in (knowledge.get("tables") or {}).items()
                 if tables is None or name in tables][:KNOWLEDGE_TABLES]
    if described:
        parts.append("Tables:\n" + "\n".join(f"- {name}: {_clip(text, KNOWLEDGE_TEXT_CHARS)}"
                                             for name, text in described))
    terms = (knowledge.get("terms") or [])[:KNOWLEDGE_TERMS]
    if terms:
        parts.append("Terms used in questions on this database:\n" + "\n".join(
            f"- {_clip(t['term'], KNOWLEDGE_TEXT_CHARS)}: {_clip(t['meaning'], KNOWLEDGE_TEXT_CHARS)}" for t in terms))
    shown = [e for e in knowledge.get("examples") or [] if len(" ".join(e["sql"].split())) <= KNOWLEDGE_SQL_CHARS]
    if shown:
        lines = ["Approved examples on this database:"]
        for e in shown:
            lines.append(f"Question: {_clip(e['question'], KNOWLEDGE_TEXT_CHARS)}")
            if (e.get("evidence") or "").strip():
                lines.append(f"Evidence: {_clip(e['evidence'], KNOWLEDGE_TEXT_CHARS)}")
            lines.append(sql_block(" ".join(e["sql"].split())))
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n\n" if parts else ""


def question_block(question: str, evidence: str = "", history: list[dict] | None = None) -> str:
    text = f"{history_block(history)}Question: {question.strip()}"
    if evidence and evidence.strip():
        text += f"\nEvidence: {evidence.strip()}"
    return text


def trace_entry(agent: str, prompt: Messages, gen: Generation, round_: int = 0, **extra) -> dict:
    """One trace record per model call, the same shape for every agent."""
    return {"agent": agent, "round": round_, "prompt": prompt, "reply": gen.text,
            "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
            "cached_tokens": gen.cached_tokens, "seconds": round(gen.seconds, 4),
            "prefill_seconds": round(gen.prefill_seconds, 4), **extra}
