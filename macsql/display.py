"""Human-readable output of an answer (rich), kept apart from the CLI wiring."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape  # model text is data: a "[bold]" in it must print as written
from rich.syntax import Syntax
from rich.table import Table

from macsql.pipeline import Answer


def print_answer(answer: Answer, *, verbose: bool = False, show: int = 20, console: Console | None = None) -> None:
    console = console or Console()
    if verbose:
        print_trace(answer, console)
    if answer.sql:
        console.print(Syntax(answer.sql, "sql", theme="ansi_dark", word_wrap=True))
    if answer.columns:
        table = Table(*answer.columns, show_lines=False)
        for row in answer.rows[:show]:
            table.add_row(*("NULL" if v is None else str(v) for v in row))
        console.print(table)
    more = len(answer.rows) - show
    if more > 0 or answer.truncated:
        console.print(f"[dim]... {len(answer.rows) - min(show, len(answer.rows))} more rows not shown"
                      f"{' (result capped)' if answer.truncated else ''}[/dim]")
    console.print(f"[dim]{len(answer.rows)} row(s) · {answer.llm_calls} LLM call(s) · "
                  f"{answer.prompt_tokens}+{answer.completion_tokens} tokens · {answer.rounds} refine round(s) · "
                  f"{answer.seconds:.1f}s ({answer.model_seconds:.1f}s in the model)[/dim]")


def print_trace(answer: Answer, console: Console) -> None:
    for step in answer.trace:
        agent = step["agent"]
        if agent == "schema":
            console.print(f"[bold]schema[/bold] introspected in {step['seconds']:.3f}s")
        elif agent == "selector":
            kept = ", ".join(f"{t}({n})" for t, n in step.get("kept", {}).items())
            console.print(f"[bold]selector[/bold] kept {kept} · {step['seconds']:.1f}s")
        elif agent == "values":
            found = ", ".join(f"{m['table']}.{m['column']}={m['value']!r}" for m in step.get("matches", []))
            console.print(f"[bold]values[/bold] {found or 'no database value in the question'}",
                          markup=False, highlight=False)
        elif agent == "decomposer":
            source = f" ({step['source']})" if step.get("source") else ""
            console.print(f"[bold]decomposer[/bold]{source} {step['prompt_tokens']}+{step['completion_tokens']} "
                          f"tokens · {step['seconds']:.1f}s")
            if step.get("reasoning"):
                console.print(f"  [italic]{escape(step['reasoning'])}[/italic]")
            for i, sq in enumerate(step.get("sub_questions", []), 1):
                console.print(f"  {i}. {escape(sq['question'])}" + (f"\n     [cyan]{escape(sq['sql'])}[/cyan]"
                                                                     if sq.get("sql") else ""))
        elif agent == "refiner":
            console.print(f"[bold]refiner[/bold] round {step['round']}: {escape(step.get('problem', ''))} · "
                          f"{step['seconds']:.1f}s")
            if step.get("reasoning"):
                console.print(f"  [italic]{escape(step['reasoning'])}[/italic]")
        elif agent == "execute":
            status = f"error: {step['error']}" if step.get("error") else f"{step['rows']} row(s)"
            who = f" #{step['candidate']} {step.get('source', '')}" if "candidate" in step else ""
            console.print(f"[bold]execute[/bold]{who} round {step['round']}: {status} · {step['seconds']:.3f}s")
        elif agent == "vote":
            groups = "; ".join(f"{g['votes']} vote(s) for {g['rows']} row(s) (#{', #'.join(map(str, g['members']))})"
                               for g in step.get("groups", []))
            console.print(f"[bold]vote[/bold] {groups or 'no candidate ran'} → #{step['winner']}")
