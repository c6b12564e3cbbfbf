"""Figures for the CLI; matplotlib is imported only when a figure is asked for.

matplotlib is the optional extra ``plots`` (``pip install 'tf-bertopt[plots]'``).
Figures are drawn on ``matplotlib.figure.Figure`` directly, never through
``pyplot``, so the CLI neither needs a display nor changes the backend of a
notebook that calls these functions.
"""

from __future__ import annotations

from typing import Sequence

INSTALL_HINT = "pip install 'tf-bertopt[plots]'"


class MissingPlotDependency(ImportError):
    """matplotlib is not installed; the message says how to get it."""


def require_matplotlib():
    """Imports and returns ``matplotlib.figure``, or raises ``MissingPlotDependency``."""
    try:
        import matplotlib.figure
    except ImportError as error:
        raise MissingPlotDependency(
            f"plots need matplotlib, which is not installed ({error}); "
            f"install it with: {INSTALL_HINT}  (or pass --no-plot)"
        ) from None
    return matplotlib.figure


def learning_rate_figure(curves: dict[str, tuple[Sequence[int], Sequence[float]]], warmup_steps: int, title: str):
    """One line per schedule: ``curves[label] = (steps, learning_rates)``."""
    figure_module = require_matplotlib()
    figure = figure_module.Figure(figsize=(7.5, 4.2), layout="constrained")
    axes = figure.add_subplot()
    styles = ("-", "--", "-.", ":")
    for index, (label, (steps, rates)) in enumerate(curves.items()):
        axes.plot(steps, rates, styles[index % len(styles)], linewidth=2 if index == 0 else 1.6, label=label)
    if warmup_steps:
        axes.axvline(warmup_steps, color="0.6", linewidth=0.8, linestyle=":")
        axes.annotate("end of warmup", (warmup_steps, 0), xytext=(4, 4), textcoords="offset points", color="0.4")
    axes.set_xlabel("optimizer step t")
    axes.set_ylabel("learning rate")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def training_figure(runs: dict[str, dict[str, Sequence[float]]], title: str):
    """Learning rate and loss against step for each run.

    ``runs[label]`` holds equal-length ``"learning_rate"`` and ``"loss"`` lists.
    The raw per-step loss is drawn faintly, its running mean over a window
    of about a twentieth of the run on top. When two runs' peak rates differ
    more than threefold (LAMB's are usually ~10x AdamW's), the second rate
    gets its own axis on the right.
    """
    figure_module = require_matplotlib()
    figure = figure_module.Figure(figsize=(11, 4.2), layout="constrained")
    lr_axes, loss_axes = figure.subplots(1, 2)
    peaks = [max(run["learning_rate"], default=0.0) for run in runs.values()]
    twin = len(runs) == 2 and min(peaks) > 0 and max(peaks) / min(peaks) > 3
    rate_axes = [lr_axes, lr_axes.twinx()] if twin else [lr_axes] * len(runs)
    for index, (label, run) in enumerate(runs.items()):
        color = f"C{index}"
        steps = list(range(len(run["loss"])))
        rate_axes[index].plot(steps, run["learning_rate"], ("-", "--")[index % 2], color=color, label=label)
        loss_axes.plot(steps, run["loss"], color=color, alpha=0.25, linewidth=0.8)
        loss_axes.plot(steps, smoothed(run["loss"]), color=color, label=label)
        if twin:
            rate_axes[index].tick_params(axis="y", colors=color)
            rate_axes[index].set_ylim(bottom=0)
    lr_axes.set_title("learning rate" + (" (left axis: blue, right: orange)" if twin else ""))
    loss_axes.set_title("masked-token loss (cross-entropy, nats)")
    for axes in (lr_axes, loss_axes):
        axes.set_xlabel("optimizer step")
        axes.grid(alpha=0.3)
    loss_axes.legend(fontsize="small")
    if not twin:
        lr_axes.legend(fontsize="small")
    figure.suptitle(title)
    return figure


def smoothed(values: Sequence[float], window: int | None = None) -> list[float]:
    """Trailing running mean (the first points average what exists so far)."""
    window = window or max(1, len(values) // 20)
    out, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        out.append(total / min(index + 1, window))
    return out


def save(figure, path: str) -> None:
    figure.savefig(path, dpi=110)
