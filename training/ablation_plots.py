"""The figures of ``kws-ablation``: per regime, whether the learned delays moved (initial against shipped
histograms, the distribution of |Δd|, gradient norm and mean |Δd| over the epochs); over regimes, accuracy
per variant and the paired learned − random difference."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training.ablation_report import MODE_NAMES, RunResult  # noqa: E402

COLOURS = {"none": "tab:grey", "random": "tab:orange", "learned": "tab:blue"}


def _per_epoch(runs: list[RunResult], key: str, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, mean and std over runs of ``history[epoch][key][layer]`` (runs that recorded it)."""
    series = [[row[key][layer] for row in r.diagnostics.history]
              for r in runs if r.diagnostics.history and r.diagnostics.history[0].get(key)]
    if not series:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    length = min(map(len, series))
    values = np.array([s[:length] for s in series])
    return np.arange(1, length + 1), values.mean(0), values.std(0)


def regime_figure(results: list[RunResult], path: Path, title: str) -> bool:
    """The learned runs' delays; False (nothing drawn) when the regime has no learned run with diagnostics."""
    runs = [r for r in results if r.mode == "learned" and r.diagnostics is not None]
    if not runs:
        return False
    names = runs[0].diagnostics.layer_names
    columns = max(3, len(names))
    figure, axes = plt.subplots(2, columns, figsize=(4.2 * columns, 7), squeeze=False)
    max_delay = int(max(np.max(np.concatenate([r.diagnostics.initial[i], r.diagnostics.final[i]]))
                        for r in runs for i in range(len(names)))) + 1
    bins = np.arange(max_delay + 1) - 0.5
    for index, name in enumerate(names):
        ax = axes[0][index]
        initial = np.concatenate([np.round(r.diagnostics.initial[index]) for r in runs])
        final = np.concatenate([np.round(r.diagnostics.final[index]) for r in runs])
        ax.hist(final, bins=bins, color="tab:blue", alpha=0.7, label="shipped (learned)")
        ax.hist(initial, bins=bins, histtype="step", color="black", linewidth=1.2, label="initial")
        ax.set(title=f"{name}: delays, {len(runs)} seeds", xlabel="delay (steps)", ylabel="synapses")
        if index == 0:
            ax.legend(fontsize=8)
    for index in range(len(names), columns):
        axes[0][index].axis("off")
    ax_shift, ax_grad, ax_move = axes[1][0], axes[1][1], axes[1][2]
    largest = max(float(np.max(np.abs(r.diagnostics.final[i] - r.diagnostics.initial[i])))
                  for r in runs for i in range(len(names)))
    shift_bins = np.linspace(0, max(1.0, largest), 40)
    for index, name in enumerate(names):
        shifts = np.concatenate([np.abs(r.diagnostics.final[index] - r.diagnostics.initial[index]) for r in runs])
        ax_shift.hist(shifts, bins=shift_bins, histtype="step", linewidth=1.4, label=name, density=True)
        for ax, key in ((ax_grad, "position_grad_norm"), (ax_move, "delay_shift")):
            epochs, mean, std = _per_epoch(runs, key, index)
            if len(epochs):
                ax.plot(epochs, mean, label=name)
                ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    ax_shift.set(title="|Δd| of the shipped delays", xlabel="|d − d₀| (steps)", ylabel="density", yscale="log")
    ax_shift.legend(fontsize=8)
    ax_grad.set(title="position gradient norm (batch mean)", xlabel="epoch", ylabel="‖∂L/∂p‖₂", yscale="log")
    ax_grad.legend(fontsize=8)
    ax_move.set(title="mean |d − d₀| during training", xlabel="epoch", ylabel="steps")
    ax_move.legend(fontsize=8)
    for index in range(3, columns):
        axes[1][index].axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return True


def summary_figure(rows: list[dict], path: Path, title: str) -> None:
    """``rows``: per regime ``name``, ``accuracy`` {mode: (mean, std)} and ``paired`` (mean, std) or None."""
    figure, (ax_acc, ax_diff) = plt.subplots(1, 2, figsize=(14, 0.45 * len(rows) + 2.5))
    y = np.arange(len(rows))[::-1]
    for offset, mode in zip((-0.25, 0.0, 0.25), ("none", "random", "learned")):
        points = [(y[i] + offset, *row["accuracy"][mode]) for i, row in enumerate(rows) if mode in row["accuracy"]]
        if points:
            ys, means, stds = zip(*points)
            ax_acc.errorbar(means, ys, xerr=stds, fmt="o", color=COLOURS[mode], label=MODE_NAMES[mode], capsize=3)
    ax_acc.set(yticks=y, yticklabels=[row["name"] for row in rows], xlabel="test accuracy (%), mean ± std",
               title="accuracy per variant")
    ax_acc.legend(fontsize=8, loc="lower left")
    ax_acc.grid(axis="x", alpha=0.3)
    for i, row in enumerate(rows):
        if row["paired"] is not None:
            mean, std = row["paired"]
            colour = "tab:green" if mean > 2 * std else ("tab:red" if -mean > 2 * std else "black")
            ax_diff.errorbar([mean], [y[i]], xerr=[[2 * std], [2 * std]], fmt="o", color=colour, capsize=3)
    ax_diff.axvline(0, color="grey", linewidth=1)
    ax_diff.set(yticks=y, yticklabels=[row["name"] for row in rows], xlabel="learned − random, test (points): mean ± 2 std",
                title="paired by seed")
    ax_diff.grid(axis="x", alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
