"""Prompt pieces shared by the agents.

Every agent's prompt starts with the same system message and the schema, and puts the task after it, so a
backend that caches the KV of a prompt prefix (llama.cpp) computes the schema once per question.
"""

from __future__ import annotations

from macsql.llm import Generation, Messages

SYSTEM = "You are an expert in SQLite. You answer questions about a database with correct SQLite queries."


OUTPUT_FORMATS = ("sql", "reasoning")
# The GRPO experiment's format: a short explanation naming the tables and columns, then the query.
REASONING_FORMAT = """Answer in this format, with no other text:
<reasoning>which tables, columns, joins and filters answer the question, in one or two sentences</reasoning>
<sql>the SQLite query</sql>"""


def reasoning_target(reasoning: str, sql: str) -> str:
    return f"<reasoning>{reasoning.strip()}</reasoning>\n<sql>{sql.strip()}</sql>"


def messages(schema_text: str, task: str) -> Messages:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Database schema:\n{schema_text}\n\n{task.strip()}"},
    ]


def question_block(question: str, evidence: str = "") -> str:
    text = f"Question: {question.strip()}"
    if evidence and evidence.strip():
        text += f"\nEvidence: {evidence.strip()}"
    return text


def trace_entry(agent: str, prompt: Messages, gen: Generation, round_: int = 0, **extra) -> dict:
    """One trace record per model call, the same shape for every agent."""
    return {"agent": agent, "round": round_, "prompt": prompt, "reply": gen.text,
            "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
            "cached_tokens": gen.cached_tokens, "seconds": round(gen.seconds, 4),
            "prefill_seconds": round(gen.prefill_seconds, 4), **extra}
