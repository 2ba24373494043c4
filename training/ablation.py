"""``kws-ablation``: no delays / fixed random delays / learned delays, several seeds, mean ± std table.

Each (mode, seed) trains in its own run folder; a run that already has a
``summary.json`` is reused, so an interrupted ablation resumes where it stopped.
The table (Markdown) goes to ``<out>/table.md`` and, with ``--doc docs/results.md``,
between the ``<!-- ablation:NAME -->`` markers of that page (``--readme`` is the old name of the flag).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from training.config import load_config

MODES = ("none", "random", "learned")
MODE_NAMES = {"none": "no delays", "random": "fixed random delays", "learned": "learned delays (DCLS)"}


def run_ablation(
    config_path: Path, out: Path, modes: list[str], seeds: list[int], overrides: list[str], collect_only: bool = False
) -> list[dict]:
    from training.trainer import fit

    summaries = []
    for seed in seeds:  # seed-major: an interrupted ablation still has every variant for the first seeds
        for mode in modes:
            run_dir = out / f"{mode}-seed{seed}"
            summary_file = run_dir / "summary.json"
            if collect_only:
                if summary_file.exists():
                    summaries.append(json.loads(summary_file.read_text()))
                continue
            if not summary_file.exists():
                config = load_config(config_path, [*overrides, f"model.delay_mode={mode!r}", f"train.seed={seed}",
                                                   f"model.structure_seed={seed}"])
                print(f"== {mode} seed {seed} → {run_dir}", flush=True)
                fit(config, run_dir, progress=False)
            summaries.append(json.loads(summary_file.read_text()))
    return summaries


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}"


def table(summaries: list[dict], title: str) -> str:
    lines = [
        f"**{title}** — accuracy (%) of the network as shipped (delays rounded to integers), mean ± std over seeds",
        "",
        "| synapses | seeds | parameters | validation | test | best epoch |",
        "|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        runs = [s for s in summaries if s["delay_mode"] == mode]
        if not runs:
            continue
        validation = [s["validation"]["accuracy"] for s in runs if "validation" in s]
        test = [s["test"]["accuracy"] for s in runs if "test" in s]
        epochs = ", ".join(str(s["best_epoch"]) for s in runs)
        lines.append(f"| {MODE_NAMES[mode]} | {len(runs)} | {runs[0]['parameters']['total']:,} | "
                     f"{mean_std(validation)} | {mean_std(test)} | {epochs} |")
    return "\n".join(lines) + "\n"


def write_into_doc(doc: Path, name: str, text: str) -> None:
    """Replaces what stands between the page's ``<!-- ablation:NAME -->`` markers with ``text``."""
    content = doc.read_text()
    pattern = re.compile(rf"(<!-- ablation:{re.escape(name)} -->\n).*?(<!-- /ablation:{re.escape(name)} -->)", re.S)
    if not pattern.search(content):
        raise SystemExit(f"{doc} has no <!-- ablation:{name} --> ... <!-- /ablation:{name} --> markers")
    doc.write_text(pattern.sub(lambda m: m.group(1) + text + m.group(2), content))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kws-ablation",
        description="Train no-delay, random-delay and learned-delay variants over several seeds and tabulate them.",
        epilog="example: kws-ablation --config configs/fsdd.toml --out runs/ablation-fsdd --doc docs/results.md",
    )
    parser.add_argument("--config", type=Path, required=True, help="base experiment (TOML)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs and table.md")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override applied to every run (e.g. train.epochs=10)")
    parser.add_argument("--name", help="table name / marker in --doc (default: the config's name)")
    parser.add_argument("--doc", "--readme", dest="doc", type=Path, metavar="MARKDOWN",
                        help="also write the table between this page's <!-- ablation:NAME --> markers (docs/results.md)")
    parser.add_argument("--collect-only", action="store_true", help="tabulate the finished runs, train nothing")
    args = parser.parse_args(argv)
    name = args.name or load_config(args.config, args.overrides).name
    summaries = run_ablation(args.config, args.out, args.modes, args.seeds, args.overrides, args.collect_only)
    title = f"{name}: " + ", ".join(args.overrides) if args.overrides else name
    text = table(summaries, title)
    (args.out / "table.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps(summaries, indent=1))
    print(text)
    if args.doc:
        write_into_doc(args.doc, name, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
