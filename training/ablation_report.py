"""What ``kws-ablation`` reports about a set of runs: accuracy per variant (mean ± std over seeds), the paired
comparison of learned and fixed random delays seed by seed, and whether the learned positions moved.

A run folder is ``<mode>-seed<seed>/`` with the ``summary.json`` that ``fit()`` writes at the end; its
``metrics.json`` (per-epoch gradient norms and moves of the positions) and ``best.pt`` (the delays as
shipped) give the diagnostics of learned-delay runs.

The paired comparison: for every seed that has both a fixed-random-delay run and a learned-delay run (same
seed: same data order, augmentation draws and sparse mask), ``learned − random`` in test accuracy
(percentage points). Learned delays *beat* fixed random ones when the mean of these differences is more than
two standard deviations of them above zero (over at least three seeds); the table says so per regime.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from training.ablation_diagnostics import Diagnostics, load_diagnostics

MODES = ("none", "random", "learned")
MODE_NAMES = {"none": "no delays", "random": "fixed random delays", "learned": "learned delays (DCLS)"}
MIN_SEEDS = 3  # fewer paired seeds than this: no verdict


def run_folder(mode: str, seed: int) -> str:
    return f"{mode}-seed{seed}"


@dataclass
class RunResult:
    mode: str
    seed: int
    summary: dict
    run_dir: Path
    diagnostics: Diagnostics | None = None

    def accuracy(self, split: str) -> float | None:
        return self.summary[split]["accuracy"] if split in self.summary else None


def load_run(run_dir: Path, mode: str, seed: int, diagnostics: bool = True) -> RunResult | None:
    summary_file = run_dir / "summary.json"
    if not summary_file.exists():
        return None
    result = RunResult(mode, seed, json.loads(summary_file.read_text()), run_dir)
    if diagnostics and mode == "learned" and (run_dir / "best.pt").exists():
        result.diagnostics = load_diagnostics(run_dir / "best.pt")
    return result


def collect(out: Path, modes: list[str], seeds: list[int], diagnostics: bool = True) -> list[RunResult]:
    """The finished runs of one regime folder (unfinished or missing runs are left out)."""
    results = []
    for seed in seeds:
        for mode in modes:
            result = load_run(out / run_folder(mode, seed), mode, seed, diagnostics)
            if result is not None:
                results.append(result)
    return results


# -- statistics ---------------------------------------------------------------------------------


def mean_std(values: list[float], scale: float = 100.0) -> tuple[float, float]:
    mean = scale * statistics.fmean(values)
    std = scale * statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def format_mean_std(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values, scale)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


@dataclass
class Paired:
    """``learned − random`` test accuracy per seed, in percentage points."""

    seeds: list[int] = field(default_factory=list)
    random: list[float] = field(default_factory=list)
    learned: list[float] = field(default_factory=list)

    @property
    def differences(self) -> list[float]:
        return [100 * (learned - random) for learned, random in zip(self.learned, self.random)]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.differences)

    @property
    def std(self) -> float:
        return statistics.stdev(self.differences) if len(self.differences) > 1 else 0.0

    @property
    def learned_wins(self) -> int:
        return sum(d > 0 for d in self.differences)

    def verdict(self) -> str:
        """``learned better`` / ``random better`` beyond 2 std, else ``within 2 std`` (or too few seeds)."""
        if len(self.seeds) < MIN_SEEDS:
            return f"{len(self.seeds)} seed(s): no verdict"
        if self.mean > 2 * self.std:
            return "**learned better** (> 2 std)"
        if -self.mean > 2 * self.std:
            return "**random better** (> 2 std)"
        return "within 2 std"


def paired(learned: list[RunResult], random: list[RunResult], split: str = "test") -> Paired:
    by_seed = {r.seed: r for r in random if r.accuracy(split) is not None}
    result = Paired()
    for run in sorted(learned, key=lambda r: r.seed):
        if run.accuracy(split) is None or run.seed not in by_seed:
            continue
        result.seeds.append(run.seed)
        result.learned.append(run.accuracy(split))
        result.random.append(by_seed[run.seed].accuracy(split))
    return result


# -- tables -------------------------------------------------------------------------------------


def accuracy_table(results: list[RunResult], title: str) -> str:
    """Accuracy per variant (the table the single-regime command has always written)."""
    lines = [
        f"**{title}** — accuracy (%) of the network as shipped (delays rounded to integers), mean ± std over seeds",
        "",
        "| synapses | seeds | parameters | validation | test | best epoch |",
        "|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        runs = [r for r in results if r.mode == mode]
        if not runs:
            continue
        validation = [r.accuracy("validation") for r in runs if r.accuracy("validation") is not None]
        test = [r.accuracy("test") for r in runs if r.accuracy("test") is not None]
        epochs = ", ".join(str(r.summary["best_epoch"]) for r in runs)
        lines.append(f"| {MODE_NAMES[mode]} | {len(runs)} | {runs[0].summary['parameters']['total']:,} | "
                     f"{format_mean_std(validation)} | {format_mean_std(test)} | {epochs} |")
    return "\n".join(lines) + "\n"


def paired_table(pairs: Paired, reference: str | None = None) -> str:
    source = f" (fixed random delays: regime {reference})" if reference else ""
    lines = [
        f"Paired by seed, test accuracy (%){source}:",
        "",
        "| seed | fixed random | learned | learned − random (points) |",
        "|---|---|---|---|",
    ]
    for seed, random, learned, diff in zip(pairs.seeds, pairs.random, pairs.learned, pairs.differences):
        lines.append(f"| {seed} | {100 * random:.2f} | {100 * learned:.2f} | {diff:+.2f} |")
    lines.append(f"| mean ± std | {format_mean_std(pairs.random)} | {format_mean_std(pairs.learned)} | "
                 f"**{pairs.mean:+.2f} ± {pairs.std:.2f}** |")
    lines += ["", f"Learned better on {pairs.learned_wins} of {len(pairs.seeds)} seeds; verdict: {pairs.verdict()}."]
    return "\n".join(lines) + "\n"


def diagnostics_table(learned: list[RunResult]) -> str:
    """Per layer, over the learned runs' shipped delays: how far they moved from where they started."""
    runs = [r for r in learned if r.diagnostics is not None]
    if not runs:
        return ""
    lines = [
        f"Did the positions move? Shipped (best-epoch) delays against the initial ones, mean ± std over {len(runs)} "
        "seeds; |Δd| in time steps; the last gradient norm is that of the final epoch (mean over its batches):",
        "",
        "| layer | synapses | mean \\|Δd\\| | median \\|Δd\\| | 90th pct \\|Δd\\| | \\|Δd\\| ≥ 1 step | "
        "rounded delay changed | on the kernel's edges (start → end) | position grad norm, epoch 1 → last |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for index, name in enumerate(runs[0].diagnostics.layer_names):
        layers = [r.diagnostics.layers[index] for r in runs]
        grads = [r.diagnostics.history for r in runs if r.diagnostics.history
                 and r.diagnostics.history[0].get("position_grad_norm")]
        first = [h[0]["position_grad_norm"][index] for h in grads]
        last = [h[-1]["position_grad_norm"][index] for h in grads]
        grad_text = (f"{format_mean_std(first, 1, 3)} → {format_mean_std(last, 1, 3)}" if grads else "not recorded")
        lines.append(
            f"| {name} | {layers[0].synapses:,} | {format_mean_std([x.mean_abs_shift for x in layers], 1)} | "
            f"{format_mean_std([x.median_abs_shift for x in layers], 1)} | "
            f"{format_mean_std([x.p90_abs_shift for x in layers], 1)} | "
            f"{format_mean_std([x.moved_one_step for x in layers], 100, 1)} % | "
            f"{format_mean_std([x.rounded_changed for x in layers], 100, 1)} % | "
            f"{format_mean_std([x.initial_at_edges for x in layers], 100, 1)} → "
            f"{format_mean_std([x.at_edges for x in layers], 100, 1)} % | {grad_text} |")
    resets = [(r.accuracy("test"), r.diagnostics.test_with_initial_delays, r.diagnostics.test_with_shuffled_moves)
              for r in runs if r.diagnostics.test_with_initial_delays is not None and r.accuracy("test") is not None]
    if resets:
        shipped, initial, shuffled = zip(*resets)
        lines += ["", f"The learned networks, test accuracy with their learned delays {format_mean_std(list(shipped))} %; "
                      f"with the delays put back to the initial ones (weights kept) **{format_mean_std(list(initial))} %**; "
                      f"with the learned delays moved again by the same amounts in random places (control) "
                      f"**{format_mean_std(list(shuffled))} %**."]
    return "\n".join(lines) + "\n"


def regime_report(results: list[RunResult], title: str, reference: list[RunResult] | None = None,
                  reference_name: str | None = None, figure: str | None = None) -> str:
    """The Markdown of one regime: accuracy table, paired comparison, diagnostics, its figure."""
    parts = [accuracy_table(results, title)]
    learned = [r for r in results if r.mode == "learned"]
    random = [r for r in results if r.mode == "random"] or (reference or [])
    pairs = paired(learned, [r for r in random if r.mode == "random"])
    if pairs.seeds:
        own = any(r.mode == "random" for r in results)
        parts.append(paired_table(pairs, None if own else reference_name))
    diagnostics = diagnostics_table(learned)
    if diagnostics:
        parts.append(diagnostics)
    if figure:
        parts.append(f"![delays of the learned runs: initial against shipped, moves, gradient norms]({figure})\n")
    return "\n".join(parts)
