"""Loss curves from a trainer's `log_history`: training loss and the validation loss of each task."""

from __future__ import annotations

import sys
from pathlib import Path

from macsql import extras


def loss_series(history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """{"train": (steps, losses), "<task>": (steps, validation losses), ...} from trainer log entries."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for entry in history:
        step = entry.get("step")
        for key, value in entry.items():
            if key == "loss":
                name = "train"
            elif key.startswith("eval_") and key.endswith("_loss") and key != "eval_loss":
                name = key[len("eval_"):-len("_loss")]  # eval_<task>_loss from a dict of eval datasets
            elif key == "eval_loss":
                name = "validation (mean)"
            else:
                continue
            steps, values = series.setdefault(name, ([], []))
            steps.append(step)
            values.append(float(value))
    return series


def plot_losses(history: list[dict], path: str | Path, title: str = "") -> Path | None:
    """Write a PNG of the loss curves; None when the log holds no loss (e.g. zero steps), or when matplotlib
    is missing: the trained weights are the work, so the plot is skipped with one line, not a traceback."""
    series = loss_series(history)
    if not series:
        return None
    if not extras.available("matplotlib"):
        print(f"loss plot skipped: {extras.missing_message('matplotlib', purpose='plotting', extra='train')}",
              file=sys.stderr, flush=True)
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on training machines
    import matplotlib.pyplot as plt

    tasks = [n for n in series if n != "train" and not n.startswith("validation")]
    if len(tasks) == 1:
        series.pop("validation (mean)", None)  # the mean of one task is that task's curve again
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, (steps, values) in series.items():
        if name == "train" or name.startswith("validation"):
            ax.plot(steps, values, "-" if name == "train" else "--", label=name)
        else:
            ax.plot(steps, values, "-o", label=f"validation: {name}", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
