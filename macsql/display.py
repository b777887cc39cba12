"""An answer as `macsql ask` prints it: the rich view for a terminal, and the formats for programs (CSV, TSV,
JSON lines, JSON, tabulate tables, the SQL alone). `terminal_safe` is the one escaping of data on its way to a
terminal. rich and tabulate are imported inside functions: the CLI imports this module on every error line.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import re
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from macsql.pipeline import Answer

TABLE_FORMAT = "simple"  # tabulate's format for --table without --fmt, as in sqlite-utils

# C0 and C1 controls and DEL: ESC starts CSI and OSC sequences (clear the screen, set the window title, write
# the clipboard), and a terminal reads 0x9b (C1 CSI) as ESC [ too.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def terminal_safe(text, *, keep: str = "\n\t") -> str:
    """`text` with every control character but those in `keep` written as a visible escape (ESC -> `\\x1b`).

    A database value, a column name or a model's SQL can hold terminal escape sequences; printed as they are,
    they act on the user's terminal. Every terminal print of data goes through here: values, column names,
    SQL, the trace, error lines (which pass `keep=""` so that they stay one line)."""
    return _CONTROL.sub(lambda m: m.group() if m.group() in keep else f"\\x{ord(m.group()):02x}", str(text))


def dumps_json(obj, **kwargs) -> str:
    """JSON with non-ASCII text as written; JSON escapes C0 controls itself, and C1 controls and DEL (which it
    leaves raw) become \\u escapes too, so JSON output holds no control byte and still reads back exactly."""
    text = json.dumps(obj, ensure_ascii=False, default=str, **kwargs)
    return re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text)


# The fields of the answer that `--json` prints; `--json-trace` prints everything (`Answer.to_dict()`).
SUMMARY_FIELDS = ("question", "sql", "columns", "rows", "error", "truncated", "refine_rounds", "llm_calls",
                  "prompt_tokens", "completion_tokens", "model_seconds", "seconds")


def answer_json(answer: Answer, *, trace: bool = False, history: list[dict] | None = None) -> str:
    """The answer as one JSON object: the summary fields, or with `trace` the whole answer. `history` (the
    turns of a follow-up) is kept in both, so that either can be followed up in turn."""
    full = answer.to_dict()
    payload = full if trace else {key: full[key] for key in SUMMARY_FIELDS}
    if history:
        payload["history"] = history
    return dumps_json(payload)


# A spreadsheet runs a cell that starts with one of these as a formula (`=HYPERLINK(...)`, `@SUM(...)`, a DDE
# `-2+3+cmd|...`); some drop a leading tab or CR first and then run what follows (OWASP, "CSV Injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def spreadsheet_safe(value):
    """`value` as a CSV cell that a spreadsheet shows and never runs: text that would start a formula gets a
    leading `'` (OWASP's advice: Excel and LibreOffice show such a cell as text). Numbers, NULLs, other
    text and text that is a plain signed number ("-5", a number either way) are returned as they are.
    The one guard of CSV meant for spreadsheets: the page's download, and `macsql ask --spreadsheet-safe`."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def _cell(value, null: str) -> str:
    return null if value is None else terminal_safe(value)


def _numeric(rows: list, i: int) -> bool:
    """A column of numbers (NULLs aside): right-aligned in tables."""
    values = [r[i] for r in rows if r[i] is not None]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def format_rows(columns: list[str], rows: list, fmt: str, *, headers: bool = True,
                table_format: str = TABLE_FORMAT, spreadsheet: bool = False) -> Iterator[str]:
    """Result rows as lines of text (each with its newline) in `fmt`: "csv", "tsv", "nl" (a JSON object per row)
    or "table" (tabulate's `table_format`). Text formats escape control characters (`terminal_safe`); JSON
    lines keep values exact. CSV and TSV keep values as they are (they feed programs), unless `spreadsheet`
    guards them against formulas (`spreadsheet_safe`). Lines, not one string: a reader that stops early
    (`| head -1`) stops the writing."""
    if fmt == "nl":
        for row in rows:
            yield dumps_json(dict(zip(columns, row, strict=True))) + "\n"
    elif fmt in ("csv", "tsv"):
        guard = spreadsheet_safe if spreadsheet else (lambda value: value)
        out = io.StringIO()
        writer = csv.writer(out, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
        if headers:
            writer.writerow([terminal_safe(guard(c)) for c in columns])
        for row in rows:
            writer.writerow([_cell(guard(v), "") for v in row])
            yield out.getvalue()  # one row (a value with a newline in it stays inside its quotes)
            out.seek(0)
            out.truncate()
        yield out.getvalue()  # the header of an empty result
    elif fmt == "table":
        from tabulate import tabulate

        if not columns:
            return
        align = ["right" if _numeric(rows, i) else "left" for i in range(len(columns))]
        # numbers stay as the database typed them: a TEXT '007' is not parsed into 7
        text = tabulate([[_cell(v, "NULL") for v in row] for row in rows],
                        headers=[terminal_safe(c) for c in columns] if headers else (),
                        tablefmt=table_format, colalign=align, disable_numparse=True)
        yield from (line + "\n" for line in text.split("\n"))
    else:
        raise ValueError(f"unknown row format {fmt!r}")


def make_console(file=None) -> Console:
    """A rich console on `file` (stdout): a terminal's own width there; piped, as wide as the lines are, so
    that neither the SQL nor the table is wrapped for whatever reads them."""
    from rich.console import Console

    file = file or sys.stdout
    console = Console(file=file, width=None if file.isatty() else 1_000_000)
    console.on_broken_pipe = _closed_pipe  # rich's own handler exits 1; the CLI ends a closed pipe quietly
    return console


def _closed_pipe() -> None:
    raise BrokenPipeError(errno.EPIPE, "the reader closed the pipe")


def print_answer(answer: Answer, *, verbose: bool = False, show: int = 20, console: Console | None = None) -> None:
    """The default view: the trace (with `verbose`), the SQL, up to `show` rows and one summary line."""
    from rich.syntax import Syntax
    from rich.table import Table
    from rich.text import Text

    console = console or make_console()
    if verbose:
        print_trace(answer, console)
    if answer.sql:
        sql = terminal_safe(answer.sql)
        if console.is_terminal:
            console.print(Syntax(sql, "sql", theme="ansi_dark", word_wrap=True))
        else:
            console.print(Text(sql), soft_wrap=True)
    if answer.columns:
        table = Table(show_lines=False)
        for i, name in enumerate(answer.columns):
            table.add_column(Text(terminal_safe(name)), justify="right" if _numeric(answer.rows, i) else "left")
        for row in answer.rows[:show]:
            table.add_row(*(Text("NULL", style="dim") if v is None else Text(terminal_safe(v)) for v in row))
        console.print(table)
    more = len(answer.rows) - show
    if more > 0 or answer.truncated:
        console.print(Text(f"... {max(more, 0)} more rows not shown{' (result capped)' if answer.truncated else ''}",
                           style="dim"), soft_wrap=True)
    console.print(Text(f"{len(answer.rows)} row(s) · {answer.llm_calls} LLM call(s) · "
                       f"{answer.prompt_tokens}+{answer.completion_tokens} tokens · {answer.rounds} refine round(s) · "
                       f"{answer.seconds:.1f}s ({answer.model_seconds:.1f}s in the model)", style="dim"),
                  soft_wrap=True)


def _line(label: str, *parts) -> Text:
    """A trace line: the agent's name in bold, then plain text. Nothing in it is read as rich markup, so a
    "[bold]" in the model's text or the data prints as written."""
    from rich.text import Text

    return Text.assemble((label, "bold"), *(terminal_safe(p) if isinstance(p, str) else p for p in parts))


def print_trace(answer: Answer, console: Console) -> None:
    for step in answer.trace:
        agent = step["agent"]
        if agent == "schema":
            console.print(_line("schema", f" introspected in {step['seconds']:.3f}s"))
        elif agent == "selector":
            kept = ", ".join(f"{t}({n})" for t, n in step.get("kept", {}).items())
            console.print(_line("selector", f" kept {kept} · {step['seconds']:.1f}s"))
        elif agent == "values":
            found = ", ".join(f"{m['table']}.{m['column']}={m['value']!r}" for m in step.get("matches", []))
            console.print(_line("values", f" {found or 'no database value in the question'}"))
        elif agent == "decomposer":
            source = f" ({step['source']})" if step.get("source") else ""
            console.print(_line("decomposer", f"{source} {step['prompt_tokens']}+{step['completion_tokens']} "
                                              f"tokens · {step['seconds']:.1f}s"))
            if step.get("reasoning"):
                console.print(_line("", "  ", (terminal_safe(step["reasoning"]), "italic")))
            for i, sq in enumerate(step.get("sub_questions", []), 1):
                console.print(_line("", f"  {i}. {sq['question']}"))
                if sq.get("sql"):
                    console.print(_line("", "     ", (terminal_safe(sq["sql"]), "cyan")))
        elif agent == "refiner":
            console.print(_line("refiner", f" round {step['round']}: {step.get('problem', '')} · "
                                           f"{step['seconds']:.1f}s"))
            if step.get("reasoning"):
                console.print(_line("", "  ", (terminal_safe(step["reasoning"]), "italic")))
        elif agent == "execute":
            status = f"error: {step['error']}" if step.get("error") else f"{step['rows']} row(s)"
            who = f" #{step['candidate']} {step.get('source', '')}" if "candidate" in step else ""
            console.print(_line("execute", f"{who} round {step['round']}: {status} · {step['seconds']:.3f}s"))
        elif agent == "vote":
            groups = "; ".join(f"{g['votes']} vote(s) for {g['rows']} row(s) (#{', #'.join(map(str, g['members']))})"
                               for g in step.get("groups", []))
            console.print(_line("vote", f" {groups or 'no candidate ran'} → #{step['winner']}"))
