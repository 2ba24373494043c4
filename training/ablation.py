"""``kws-ablation``: no delays / fixed random delays / learned delays over several seeds; tables, the paired
comparison of learned and random delays, diagnostics of the learned positions, figures.

Two forms:

* one regime: ``kws-ablation --config CONFIG --out DIR [--set ...] [--doc PAGE]`` trains every (mode, seed)
  in ``DIR/<mode>-seed<seed>/`` and writes ``DIR/table.md`` (and the table between the page's
  ``<!-- ablation:NAME -->`` markers);
* a study: ``kws-ablation --study configs/ablation/fsdd.toml`` runs every regime the file lists (each in
  ``<out>-<regime>/``), and writes each regime's section, a summary over regimes and the figures into the
  pages and folder the file names (docs/ablation.md). ``--only`` picks regimes.

A run that already has a ``summary.json`` is reused, so an interrupted ablation resumes where it stopped;
``--collect-only`` trains nothing and reports what is finished. The statistics: ``training/ablation_report.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from training.ablation_report import (
    MODES, Paired, RunResult, collect, diagnostics_table, format_mean_std, mean_std, paired, regime_report, run_folder,
)
from training.config import load_config

INCIDENTAL = ("train.threads=",)  # overrides that do not change what is compared: left out of titles


def run_ablation(config_path: Path, out: Path, modes: list[str], seeds: list[int], overrides: list[str]) -> None:
    """Trains every (mode, seed) that has no ``summary.json`` yet; seed-major, so an interrupted ablation
    still has every variant of the first seeds."""
    from training.trainer import fit

    for seed in seeds:
        for mode in modes:
            run_dir = out / run_folder(mode, seed)
            if (run_dir / "summary.json").exists():
                continue
            config = load_config(config_path, [*overrides, f"model.delay_mode={mode!r}", f"train.seed={seed}",
                                               f"model.structure_seed={seed}"])
            print(f"== {mode} seed {seed} → {run_dir}", flush=True)
            fit(config, run_dir, progress=False)


def title_of(name: str, overrides: list[str]) -> str:
    shown = [o for o in overrides if not o.startswith(INCIDENTAL)]
    return f"{name}: " + ", ".join(shown) if shown else name


def write_into_doc(doc: Path, name: str, text: str) -> None:
    """Replaces what stands between the page's ``<!-- ablation:NAME -->`` markers with ``text``."""
    if not write_if_marked(doc, name, text):
        raise SystemExit(f"{doc} has no <!-- ablation:{name} --> ... <!-- /ablation:{name} --> markers")


def write_if_marked(doc: Path, name: str, text: str) -> bool:
    content = doc.read_text()
    pattern = re.compile(rf"(<!-- ablation:{re.escape(name)} -->\n).*?(<!-- /ablation:{re.escape(name)} -->)", re.S)
    if not pattern.search(content):
        return False
    doc.write_text(pattern.sub(lambda m: m.group(1) + text + m.group(2), content))
    return True


# -- studies ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Regime:
    name: str
    about: str
    modes: tuple[str, ...] = MODES
    seeds: tuple[int, ...] = (0, 1, 2)
    overrides: tuple[str, ...] = ()
    paired_with: str | None = None  # a regime whose fixed random delays pair with this one's learned ones


@dataclass(frozen=True)
class Study:
    name: str
    config: Path
    out: str
    docs: tuple[Path, ...]
    figures: Path
    overrides: tuple[str, ...] = ()
    regimes: tuple[Regime, ...] = field(default_factory=tuple)
    source: Path = Path("study.toml")  # the study file itself

    def regime_dir(self, regime: Regime) -> Path:
        return Path(f"{self.out}-{regime.name}")

    def regime(self, name: str) -> Regime:
        for regime in self.regimes:
            if regime.name == name:
                return regime
        raise SystemExit(f"study {self.name} has no regime {name!r}")


def load_study(path: Path) -> Study:
    values = tomllib.loads(path.read_text())
    regimes = []
    for entry in values.get("regime", []):
        unknown = set(entry) - {"name", "about", "modes", "seeds", "set", "paired_with"}
        if unknown:
            raise SystemExit(f"{path}: unknown keys in [[regime]] {entry.get('name')}: {sorted(unknown)}")
        modes = tuple(entry.get("modes", MODES))
        if not set(modes) <= set(MODES):
            raise SystemExit(f"{path}: regime {entry['name']}: modes must be among {MODES}")
        regimes.append(Regime(entry["name"], entry.get("about", ""), modes, tuple(entry.get("seeds", (0, 1, 2))),
                              tuple(entry.get("set", ())), entry.get("paired_with")))
    study = Study(values["name"], Path(values["config"]), values["out"], tuple(Path(d) for d in values["docs"]),
                  Path(values["figures"]), tuple(values.get("set", ())), tuple(regimes), path)
    for regime in study.regimes:
        if regime.paired_with is not None:
            study.regime(regime.paired_with)
    return study


def run_study(study: Study, only: list[str] | None, collect_only: bool) -> None:
    chosen = [study.regime(name) for name in only] if only else list(study.regimes)
    if not collect_only:
        for regime in chosen:
            print(f"==== {study.name}-{regime.name}: {regime.about}", flush=True)
            run_ablation(study.config, study.regime_dir(regime), list(regime.modes), list(regime.seeds),
                         [*study.overrides, *regime.overrides])
    report_study(study)


def regime_results(study: Study, regime: Regime) -> list[RunResult]:
    return collect(study.regime_dir(regime), list(regime.modes), list(regime.seeds))


def regime_pairs(study: Study, regime: Regime, results: list[RunResult]) -> tuple[Paired, list[RunResult]]:
    random = [r for r in results if r.mode == "random"]
    if not random and regime.paired_with:
        reference = study.regime(regime.paired_with)
        random = collect(study.regime_dir(reference), ["random"], list(reference.seeds), diagnostics=False)
    return paired([r for r in results if r.mode == "learned"], random), random


def report_study(study: Study) -> None:
    """Every regime's section and figure, and the summary, from the finished runs."""
    from training import ablation_plots

    finished = []  # (regime, results, pairs)
    for regime in study.regimes:
        results = regime_results(study, regime)
        if not results:
            print(f"{study.name}-{regime.name}: no finished runs yet", flush=True)
            for doc in study.docs:
                write_if_marked(doc, f"{study.name}-{regime.name}", not_run(study, regime))
            continue
        pairs, random = regime_pairs(study, regime, results)
        figure = study.figures / f"{study.name}-{regime.name}.png"
        drawn = ablation_plots.regime_figure(results, figure, f"{study.name}-{regime.name}: {regime.about}")
        for doc in study.docs:
            link = os.path.relpath(figure, doc.parent) if drawn else None
            text = regime_report(results, title_of(f"{study.name}-{regime.name}", list(regime.overrides)),
                                 random, regime.paired_with, link)
            text = f"{regime.about}\n\n{text}" if regime.about else text
            write_if_marked(doc, f"{study.name}-{regime.name}", text)
        (study.regime_dir(regime) / "table.md").write_text(text)
        finished.append((regime, results, pairs))
    if not finished:
        return
    summary_figure = study.figures / f"{study.name}-summary.png"
    ablation_plots.summary_figure([summary_row(*entry) for entry in finished], summary_figure,
                                  f"{study.name}: learned against fixed random delays, test split")
    sections = study.docs[0]  # the page with the regimes' sections: the summary links there
    written = False
    for doc in study.docs:
        lines = [summary_line(*entry, os.path.relpath(sections, doc.parent)) for entry in finished]
        text = summary_table(lines) + f"\n![summary]({os.path.relpath(summary_figure, doc.parent)})\n"
        written |= write_if_marked(doc, f"{study.name}-summary", text)
    if not written:
        raise SystemExit(f"none of {[str(d) for d in study.docs]} has <!-- ablation:{study.name}-summary --> markers")
    print(text)


def not_run(study: Study, regime: Regime) -> str:
    return (f"{regime.about}\n\n**Not run**: no finished run in `{study.regime_dir(regime)}/` yet. "
            f"`kws-ablation --study {study.source} --only {regime.name}` trains it "
            f"({len(regime.modes)} variant(s) × {len(regime.seeds)} seeds).\n")


def summary_row(regime: Regime, results: list[RunResult], pairs: Paired) -> dict:
    accuracy = {}
    for mode in MODES:
        test = [r.accuracy("test") for r in results if r.mode == mode and r.accuracy("test") is not None]
        if test:
            accuracy[mode] = mean_std(test)
    return {"name": regime.name, "accuracy": accuracy, "paired": (pairs.mean, pairs.std) if pairs.seeds else None}


def summary_line(regime: Regime, results: list[RunResult], pairs: Paired, sections: str) -> str:
    def test(mode: str) -> str:
        return format_mean_std([r.accuracy("test") for r in results if r.mode == mode and r.accuracy("test") is not None])

    learned = [r.diagnostics for r in results if r.mode == "learned" and r.diagnostics is not None]
    moves = ("–" if not learned else " / ".join(
        f"{sum(d.layers[i].mean_abs_shift for d in learned) / len(learned):.2f}" for i in range(len(learned[0].layers))))
    diff = f"{pairs.mean:+.2f} ± {pairs.std:.2f}" if pairs.seeds else "–"
    verdict = pairs.verdict() if pairs.seeds else "–"
    seeds = len({r.seed for r in results})
    return (f"| [{regime.name}]({sections}#{regime.name}) | {regime.about} | {seeds} | {test('none')} | {test('random')} | "
            f"{test('learned')} | {diff} | {verdict} | {moves} |")


def summary_table(lines: list[str]) -> str:
    header = [
        "Test accuracy (%), mean ± std over seeds, of the networks as shipped (delays rounded); "
        "learned − random is paired by seed (percentage points); mean |Δd| is how far the learned delays moved "
        "from their initial values (steps; hidden layers, then the readout).",
        "",
        "| regime | what differs | seeds | no delays | fixed random | learned | learned − random | verdict | "
        "mean \\|Δd\\| |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(header + lines) + "\n"


def diagnose(checkpoint_path: Path, data_overrides: list[str] = ()) -> str:
    """``kws-ablation --diagnose``: the diagnostics table of one learned-delay checkpoint (e.g. the shipped model)."""
    import torch

    from model.checkpoint import load_checkpoint
    from training.ablation_diagnostics import diagnostics_of, test_clips
    from training.evaluation import evaluate

    checkpoint = load_checkpoint(checkpoint_path)
    test = test_clips(checkpoint, data_overrides)
    summary = ({"test": {"accuracy": evaluate(checkpoint.model, test, 256, True, torch.device("cpu")).accuracy}}
               if test is not None else {})
    result = RunResult("learned", checkpoint.model.config.structure_seed, summary, checkpoint_path.parent,
                       diagnostics_of(checkpoint, checkpoint_path.parent / "metrics.json", test))
    clips = f"{len(test)} test clips" if test is not None else "no test split"
    return f"**{checkpoint_path}** ({clips})\n\n" + diagnostics_table([result])


# -- the command --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kws-ablation",
        description="Train no-delay, random-delay and learned-delay variants over several seeds and compare them.",
        epilog="examples:\n  kws-ablation --study configs/ablation/fsdd.toml            # docs/ablation.md\n"
               "  kws-ablation --config configs/fsdd.toml --out runs/ablation-fsdd --set model.fan_in=8",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--study", type=Path, help="a study file (configs/ablation/*.toml): every regime it lists")
    parser.add_argument("--only", nargs="+", metavar="REGIME", help="with --study: these regimes only")
    parser.add_argument("--diagnose", type=Path, metavar="CHECKPOINT",
                        help="the diagnostics of one learned-delay checkpoint on its test split (--set data.KEY=VALUE "
                             "changes the stored data config; with --doc and --name, written there)")
    parser.add_argument("--config", type=Path, help="base experiment (TOML), one regime")
    parser.add_argument("--out", type=Path, help="folder for the runs and table.md")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override applied to every run (e.g. train.epochs=10)")
    parser.add_argument("--name", help="table name / marker in --doc (default: the config's name)")
    parser.add_argument("--doc", "--readme", dest="doc", type=Path, metavar="MARKDOWN",
                        help="also write the table between this page's <!-- ablation:NAME --> markers")
    parser.add_argument("--collect-only", action="store_true", help="report the finished runs, train nothing")
    args = parser.parse_args(argv)
    if args.study:
        run_study(load_study(args.study), args.only, args.collect_only)
        return 0
    if args.diagnose:
        text = diagnose(args.diagnose, args.overrides)
        print(text)
        if args.doc:
            write_into_doc(args.doc, args.name or args.diagnose.stem, text)
        return 0
    if not (args.config and args.out):
        parser.error("give --study FILE, or --config and --out")
    name = args.name or load_config(args.config, args.overrides).name
    if not args.collect_only:
        run_ablation(args.config, args.out, args.modes, args.seeds, args.overrides)
    results = collect(args.out, args.modes, args.seeds)
    text = regime_report(results, title_of(name, args.overrides))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps([r.summary for r in results], indent=1))
    print(text)
    if args.doc:
        write_into_doc(args.doc, name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
