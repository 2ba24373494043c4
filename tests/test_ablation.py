"""kws-ablation's protocol: the paired comparison and its verdict, the diagnostics of learned positions, the
study file of docs/ablation.md, and the delay-initialisation and learned-sigma options the study ablates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from model.checkpoint import save_checkpoint
from model.delays import DelayedSynapses
from model.features import FeatureConfig
from model.network import DelaySNN, ModelConfig
from training.ablation import load_study, main
from training.ablation_report import Paired, collect
from training.delay_diagnostics import delay_shift, initial_delays, movement
from training.optimisation import parameter_groups

REPO = Path(__file__).resolve().parents[1]
SMALL = ModelConfig(input_size=6, hidden_sizes=(5, 4), num_classes=3, max_delay=9, structure_seed=7)


# -- the paired comparison ----------------------------------------------------------------------


def test_verdict_needs_the_mean_difference_beyond_two_standard_deviations_of_it():
    clear = Paired(seeds=[0, 1, 2], random=[0.90, 0.91, 0.92], learned=[0.93, 0.935, 0.955])  # +3, +2.5, +3.5
    assert clear.differences == pytest.approx([3.0, 2.5, 3.5])
    assert clear.mean == pytest.approx(3.0) and clear.std == pytest.approx(0.5)
    assert clear.verdict().startswith("**learned better**") and clear.learned_wins == 3
    noisy = Paired(seeds=[0, 1, 2], random=[0.90, 0.91, 0.92], learned=[0.93, 0.90, 0.93])  # +3, -1, +1: 1 ± 2
    assert noisy.verdict() == "within 2 std"
    worse = Paired(seeds=[0, 1, 2], random=[0.93, 0.935, 0.955], learned=[0.90, 0.91, 0.92])
    assert worse.verdict().startswith("**random better**")
    assert "no verdict" in Paired(seeds=[0, 1], random=[0.9, 0.9], learned=[1.0, 1.0]).verdict()


def fake_run(folder: Path, mode: str, seed: int, test: float, validation: float = 0.9) -> None:
    folder.mkdir(parents=True)
    summary = {"delay_mode": mode, "seed": seed, "parameters": {"total": 100}, "best_epoch": 5,
               "validation": {"accuracy": validation}, "test": {"accuracy": test}}
    (folder / "summary.json").write_text(json.dumps(summary))


def learned_run(folder: Path, seed: int, test: float, shift: float) -> DelaySNN:
    """A learned-delay run whose every position moved by ``shift`` steps from the start (towards delay 0)."""
    fake_run(folder, "learned", seed, test)
    model = DelaySNN(ModelConfig(**{**SMALL.to_dict(), "structure_seed": seed}))
    with torch.no_grad():
        for layer in model.delay_layers():
            layer.dcls.P.add_(shift)
    save_checkpoint(folder / "best.pt", model, name="fake", labels=["a", "b", "c"], feature_config=FeatureConfig(),
                    training={}, metrics={})
    rows = [{"epoch": e, "position_grad_norm": [0.1 / e, 0.2 / e, 0.3 / e], "delay_shift": [shift * e / 4] * 3}
            for e in range(1, 5)]
    (folder / "metrics.json").write_text(json.dumps(rows))
    return model


def test_a_study_pairs_seeds_writes_its_sections_summary_and_figures(tmp_path):
    runs = tmp_path / "runs" / "abl"
    for seed, (random, learned) in enumerate([(0.90, 0.93), (0.91, 0.935), (0.92, 0.955)]):
        fake_run(Path(f"{runs}-base") / f"random-seed{seed}", "random", seed, random)
        fake_run(Path(f"{runs}-base") / f"none-seed{seed}", "none", seed, 0.5)
        learned_run(Path(f"{runs}-base") / f"learned-seed{seed}", seed, learned, shift=0.5)
        learned_run(Path(f"{runs}-slow") / f"learned-seed{seed}", seed, random, shift=0.0)  # = random: a tie
    page = tmp_path / "docs" / "ablation.md"
    page.parent.mkdir()
    markers = "".join(f"<!-- ablation:t-{n} -->\nold\n<!-- /ablation:t-{n} -->\n\n" for n in ("summary", "base", "slow", "later"))
    page.write_text("# Ablation\n\n" + markers + "tail stays\n")
    study = tmp_path / "study.toml"
    study.write_text(f"""
name = "t"
config = "{REPO / 'configs' / 'fsdd.toml'}"
out = "{runs}"
docs = ["{page}"]
figures = "{tmp_path / 'docs' / 'figures'}"
set = ["train.threads=1"]
[[regime]]
name = "base"
about = "as configured"
seeds = [0, 1, 2]
[[regime]]
name = "slow"
about = "learned only, paired with base"
modes = ["learned"]
seeds = [0, 1, 2]
paired_with = "base"
set = ["train.lr_positions_scale=1.0"]
[[regime]]
name = "later"
about = "not trained yet"
seeds = [0, 1, 2]
""")
    assert main(["--study", str(study), "--collect-only"]) == 0
    text = page.read_text()
    assert text.endswith("tail stays\n") and "old" not in text
    base = re.search(r"<!-- ablation:t-base -->\n(.*?)<!-- /ablation:t-base -->", text, re.S).group(1)
    assert "| mean ± std | 91.00 ± 1.00 | 94.00 ± 1.32 | **+3.00 ± 0.50** |" in base
    assert "Learned better on 3 of 3 seeds; verdict: **learned better** (> 2 std)." in base
    assert "| no delays | 3 | 100 | 90.00 ± 0.00 | 50.00 ± 0.00 | 5, 5, 5 |" in base
    # Diagnostics: every position moved by exactly 0.5 steps; none rounded to another delay... or half did.
    assert re.search(r"\| hidden 1 \| 30 \| 0\.50 ± 0\.00 \| 0\.50 ± 0\.00 \| 0\.50 ± 0\.00 \| 0\.0 ± 0\.0 % \|", base)
    assert "0.100 ± 0.000 → 0.025 ± 0.000" in base  # gradient norm, epoch 1 → 4, hidden 1
    assert "](figures/t-base.png)" in base and (tmp_path / "docs" / "figures" / "t-base.png").stat().st_size > 10_000
    slow = re.search(r"<!-- ablation:t-slow -->\n(.*?)<!-- /ablation:t-slow -->", text, re.S).group(1)
    assert "(fixed random delays: regime base)" in slow and "**+0.00 ± 0.00**" in slow
    assert "train.lr_positions_scale=1.0" in slow and "threads" not in slow
    summary = re.search(r"<!-- ablation:t-summary -->\n(.*?)<!-- /ablation:t-summary -->", text, re.S).group(1)
    assert "| [base](ablation.md#base) | as configured | 3 | 50.00 ± 0.00 | 91.00 ± 1.00 | 94.00 ± 1.32 | +3.00 ± 0.50 | " \
           "**learned better** (> 2 std) | 0.50 / 0.50 / 0.50 |" in summary
    assert "| [slow](ablation.md#slow) |" in summary and "| within 2 std | 0.00 / 0.00 / 0.00 |" in summary
    assert (tmp_path / "docs" / "figures" / "t-summary.png").stat().st_size > 10_000
    later = re.search(r"<!-- ablation:t-later -->\n(.*?)<!-- /ablation:t-later -->", text, re.S).group(1)
    assert "**Not run**" in later and f"--study {study} --only later" in later and "[later]" not in summary


def test_the_repository_study_parses_and_every_regime_has_its_section():
    study = load_study(REPO / "configs" / "ablation" / "fsdd.toml")
    assert len(study.regimes) >= 8 and all(len(r.seeds) >= 3 for r in study.regimes)
    pages = "".join((REPO / doc).read_text() for doc in study.docs)
    for name in ["summary", *(r.name for r in study.regimes)]:
        assert f"<!-- ablation:{study.name}-{name} -->" in pages, name
        assert f"<!-- /ablation:{study.name}-{name} -->" in pages, name
    for regime in study.regimes:
        assert set(regime.modes) & {"random"} or regime.paired_with, f"{regime.name} has nothing to pair with"


# -- diagnostics --------------------------------------------------------------------------------


def test_initial_delays_are_rebuilt_from_the_configuration_whatever_the_global_seed():
    torch.manual_seed(1)
    first = initial_delays(DelaySNN(SMALL))
    torch.manual_seed(2)
    second = initial_delays(DelaySNN(SMALL))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    other = initial_delays(DelaySNN(ModelConfig(**{**SMALL.to_dict(), "structure_seed": 8})))
    assert not torch.equal(first[0], other[0])


def test_moves_are_measured_in_steps_on_existing_synapses_only():
    config = ModelConfig(**{**SMALL.to_dict(), "fan_in": 2})
    start, model = DelaySNN(config), DelaySNN(config)
    with torch.no_grad():
        for layer in model.delay_layers():
            layer.dcls.P.sub_(1.25 * layer.mask.unsqueeze(0).unsqueeze(-1))  # existing synapses: 1.25 steps later
            layer.dcls.P.add_(3.0 * (1 - layer.mask).unsqueeze(0).unsqueeze(-1))  # pruned ones: ignored
    model.clamp_positions()
    layers, pairs = movement(model, start)
    assert [layer.synapses for layer in layers] == [5 * 2, 4 * 2, 3 * 2]
    for before, after in pairs:
        inside = after < 8 - 1e-6  # the rest were clamped at the kernel's last slot
        assert inside.mean() > 0.5 and abs(after - before)[inside] == pytest.approx(1.25, abs=1e-5)
    shifts, changed = delay_shift(model, initial_delays(start))
    assert shifts == pytest.approx([layer.mean_abs_shift for layer in layers])
    assert all(0 < c <= 1 for c in changed)


# -- the options the study ablates --------------------------------------------------------------


def test_init_spread_narrows_the_initial_and_random_delays_around_the_middle():
    def layer(mode, spread, seed=3):
        return DelayedSynapses(20, 10, max_delay=25, mode=mode, init_spread=spread,
                               generator=torch.Generator().manual_seed(seed))

    assert (layer("random", 0.0).integer_delays() == 12).all()
    assert (layer("learned", 0.0).integer_delays() == 12).all()
    half = layer("random", 0.5).integer_delays()
    assert half.min() == 12 - 6 and half.max() == 12 + 6
    learned = layer("learned", 0.5).continuous_delays()
    assert learned.min() >= 6 and learned.max() <= 18 and learned.max() - learned.min() > 10
    # The default spread draws exactly what the layer drew before the option existed.
    generator = torch.Generator().manual_seed(3)  # a fully connected layer's mask draws nothing from it
    expected = torch.randint(0, 25, (10, 20, 1), generator=generator)
    assert torch.equal(layer("random", 1.0).integer_delays(), expected)
    with pytest.raises(ValueError, match="init_spread"):
        layer("random", 1.5)


def test_learned_sigma_gets_gradients_joins_the_positions_and_ignores_the_schedule():
    config = ModelConfig(**{**SMALL.to_dict(), "sigma_learned": True, "sigma_init": 2.0})
    model = DelaySNN(config)
    model.set_sigma(0.23)  # the schedule: ignored
    assert model.mean_sigma() == pytest.approx(2.0)
    model(torch.randn(2, 6, 15)).potentials.pow(2).sum().backward()
    sig = model.hidden[0].synapses.dcls.SIG
    assert sig.grad is not None and sig.grad.abs().sum() > 0
    groups = parameter_groups(model)
    assert any(p is sig for p in groups["positions"]) and not any(p is sig for p in groups["decay"])
    scheduled = DelaySNN(SMALL)
    scheduled.set_sigma(0.5)
    assert scheduled.mean_sigma() == pytest.approx(0.5)
    assert not any(p is scheduled.hidden[0].synapses.dcls.SIG for g in parameter_groups(scheduled).values() for p in g)


def test_collect_skips_unfinished_runs(tmp_path):
    fake_run(tmp_path / "random-seed0", "random", 0, 0.9)
    (tmp_path / "learned-seed0").mkdir()  # started, not finished: no summary.json
    assert [(r.mode, r.seed) for r in collect(tmp_path, ["random", "learned"], [0, 1])] == [("random", 0)]


def test_the_shuffled_control_moves_the_learned_delays_by_the_learned_amounts_elsewhere():
    from training.ablation_diagnostics import shuffled_moves

    config = ModelConfig(**{**SMALL.to_dict(), "max_delay": 41, "delay_init_spread": 0.5, "fan_in": 3})
    start, trained = DelaySNN(config), DelaySNN(config)
    with torch.no_grad():
        for layer in trained.delay_layers():
            layer.dcls.P.add_(torch.linspace(-2.0, 2.0, layer.dcls.P.numel()).reshape(layer.dcls.P.shape))
    for layer, start_layer, moved in zip(trained.delay_layers(), start.delay_layers(), shuffled_moves(trained, start)):
        existing = layer.mask.bool().unsqueeze(-1)
        learned_moves = (layer.dcls.P[0] - start_layer.dcls.P[0])[existing].sort().values
        control_moves = (moved[0] - layer.dcls.P[0])[existing].sort().values
        torch.testing.assert_close(control_moves, learned_moves)  # the same moves (no clamping at D = 41)...
        assert not torch.equal((moved[0] - layer.dcls.P[0])[existing], (layer.dcls.P[0] - start_layer.dcls.P[0])[existing])
        assert torch.equal(moved[0][~existing.expand_as(moved[0])], layer.dcls.P[0][~existing.expand_as(moved[0])])


def test_diagnose_reports_one_checkpoint_and_writes_it_into_a_page(tmp_path, capsys):
    learned_run(tmp_path / "run", 0, 0.9, shift=1.0)
    page = tmp_path / "page.md"
    page.write_text("<!-- ablation:one -->\n<!-- /ablation:one -->\n")
    assert main(["--diagnose", str(tmp_path / "run" / "best.pt"), "--doc", str(page), "--name", "one"]) == 0
    text = page.read_text()
    assert "(no test split)" in text and "| hidden 1 | 30 | 1.00 ± 0.00 |" in text  # stored without a data config
    assert "0.100 ± 0.000 → 0.025 ± 0.000" in text  # the run's metrics.json beside the checkpoint
    with pytest.raises(ValueError, match="only data.KEY=VALUE"):
        main(["--diagnose", str(tmp_path / "run" / "best.pt"), "--set", "train.epochs=3"])
