"""Human-readable output of an answer (rich), kept apart from the CLI wiring."""

from __future__ import annotations

from rich.console import Console
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
        elif agent == "decomposer":
            console.print(f"[bold]decomposer[/bold] {step['prompt_tokens']}+{step['completion_tokens']} tokens · "
                          f"{step['seconds']:.1f}s")
            if step.get("reasoning"):
                console.print(f"  [italic]{step['reasoning']}[/italic]")
            for i, sq in enumerate(step.get("sub_questions", []), 1):
                console.print(f"  {i}. {sq['question']}\n     [cyan]{sq['sql']}[/cyan]")
        elif agent == "refiner":
            console.print(f"[bold]refiner[/bold] round {step['round']}: {step.get('problem', '')} · "
                          f"{step['seconds']:.1f}s")
            if step.get("reasoning"):
                console.print(f"  [italic]{step['reasoning']}[/italic]")
        elif agent == "execute":
            status = f"error: {step['error']}" if step.get("error") else f"{step['rows']} row(s)"
            console.print(f"[bold]execute[/bold] round {step['round']}: {status} · {step['seconds']:.3f}s")
