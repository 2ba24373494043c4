import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint
from tests.spike_files import write_shd_file
from training.cli import main as train_main
from training.evaluate import main as evaluate_main
from training.config import ExperimentConfig, load_config, parse_override
from training.trainer import parameter_groups
from model.network import DelaySNN, ModelConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def shd_root(tmp_path):
    write_shd_file(tmp_path / "shd_train.h5", samples=48, classes=3)
    write_shd_file(tmp_path / "shd_test.h5", samples=12, classes=3, seed=1)
    return tmp_path


def tiny_overrides(root) -> list[str]:
    return [f"data.root={str(root)!r}", "data.task='shd'", "data.spike_duration_s=0.6", "model.hidden_sizes=[16, 16]",
            "model.max_delay=5", "train.batch_size=16", "train.threads=1", "train.bf16=false",
            "train.eval_batch_size=32", "train.kernel_snapshot_neurons=2"]


def test_overrides_are_typed_and_unknown_keys_are_rejected(tmp_path):
    assert parse_override("train.epochs=5") == (["train", "epochs"], 5)
    assert parse_override("model.delay_mode=none") == (["model", "delay_mode"], "none")
    assert parse_override("model.fan_in=null") == (["model", "fan_in"], None)
    config = load_config(REPO / "configs" / "kws10.toml", ["train.epochs=2", "model.hidden_sizes=[8,8]"])
    assert config.train.epochs == 2 and config.model.hidden_sizes == (8, 8)
    with pytest.raises(ValueError, match="unknown keys in \\[train\\]"):
        load_config(None, ["train.epochz=2"])
    assert ExperimentConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("name", ["kws10", "fsdd", "gsc35", "shd", "ssc"])
def test_shipped_configs_parse(name):
    load_config(REPO / "configs" / f"{name}.toml")


def test_optimiser_groups_are_chosen_by_rule():
    groups = parameter_groups(DelaySNN(ModelConfig(input_size=4, hidden_sizes=(5, 5), num_classes=2, max_delay=5)))
    assert len(groups["positions"]) == 3  # one DCLS position tensor per delay layer
    assert all(p.ndim == 4 for p in groups["positions"])
    assert len(groups["decay"]) == 3 and all(p.ndim == 3 for p in groups["decay"])
    assert len(groups["no_decay"]) == 4  # batch-norm weight and bias of two hidden layers


@pytest.mark.slow
def test_training_learns_and_resumes_on_a_generated_shd_file(shd_root, tmp_path):
    out = tmp_path / "run"
    args = ["--out", str(out), "--no-progress"]
    for value in tiny_overrides(shd_root) + ["train.epochs=6", "train.lr_weights=3e-3"]:
        args += ["--set", value]
    assert train_main(args + ["--stop-after", "2"]) == 0
    assert not (out / "summary.json").exists()  # interrupted: no final evaluation yet
    history = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[0]["sigma"] > history[1]["sigma"]
    # Resume: continues at epoch 3 with the optimiser state and keeps the history.
    assert train_main(args + ["--resume"]) == 0
    history = json.loads((out / "metrics.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]
    for name in ("best.pt", "last.pt", "metrics.csv", "metrics.json", "summary.json"):
        assert (out / name).exists(), name
    for plot in ("training_curves", "delay_histograms", "delay_kernels", "confusion_validation"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 1000
    best = load_checkpoint(out / "best.pt")
    summary = json.loads((out / "summary.json").read_text())
    assert best.metrics["best_epoch"] == summary["best_epoch"]
    assert best.metrics["validation"]["accuracy"] == max(r["val_accuracy"] for r in history)
    assert summary["test"]["accuracy"] > 0.6  # the generated classes are separable in time and channel
    assert best.training["config"]["data"]["task"] == "shd"
    # kws-evaluate reproduces the stored test figure from the checkpoint alone.
    report = tmp_path / "evaluation.json"
    assert evaluate_main([str(out / "best.pt"), "--split", "test", "--json", str(report)]) == 0
    evaluation = json.loads(report.read_text())
    assert evaluation["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert set(evaluation["per_class_accuracy"]) == {"0", "1", "2"}


@pytest.mark.slow
@pytest.mark.data
def test_one_epoch_on_a_tiny_subset_of_real_speech(data_dir, tmp_path):
    out = tmp_path / "kws"
    sets = [f"data.root={str(data_dir / 'gsc')!r}", "data.limit_per_class=12", "train.epochs=1",
            "model.hidden_sizes=[16,16]", "train.batch_size=32", "train.threads=1"]
    args = ["--config", str(REPO / "configs" / "kws10.toml"), "--out", str(out), "--no-progress"]
    for value in sets:
        args += ["--set", value]
    assert train_main(args) == 0
    loaded = load_checkpoint(out / "best.pt")
    assert loaded.labels[-2:] == ["_unknown_", "_silence_"]
    assert loaded.feature_config.n_mels == 40 and loaded.model_config.input_size == 40
    assert 0.0 <= loaded.metrics["validation"]["accuracy"] <= 1.0


@pytest.mark.slow
def test_two_process_ddp_training_with_torchrun(shd_root, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "training.cli", "--out", str(out), "--no-progress"]
    for value in tiny_overrides(shd_root) + ["train.epochs=1"]:
        command += ["--set", value]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "processes 2" in result.stdout
    checkpoint = load_checkpoint(out / "best.pt")
    assert checkpoint.training["processes"] == 2
    assert torch.isfinite(next(iter(checkpoint.model.parameters()))).all()


def test_cli_help_teaches():
    result = subprocess.run([sys.executable, "-m", "training.cli", "--help"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0
    assert "--set" in result.stdout and "torchrun" in result.stdout and "--resume" in result.stdout


def test_bad_config_exits_with_a_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", "training.cli", "--set", "model.delay_mode='sideways'"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "bad configuration" in result.stderr


@pytest.mark.slow
def test_init_from_starts_at_the_given_weights(shd_root, tmp_path):
    base = ["--no-progress"]
    for value in tiny_overrides(shd_root) + ["train.epochs=1"]:
        base += ["--set", value]
    assert train_main(base + ["--out", str(tmp_path / "first")]) == 0
    frozen = base + ["--set", "train.lr_weights=0.0", "--set", "model.sigma_init=0.23"]
    assert train_main(frozen + ["--out", str(tmp_path / "second"), "--init-from", str(tmp_path / "first" / "best.pt")]) == 0
    first, second = load_checkpoint(tmp_path / "first" / "best.pt"), load_checkpoint(tmp_path / "second" / "best.pt")
    for a, b in zip(first.model.delay_layers(), second.model.delay_layers()):
        assert torch.equal(a.synaptic_weight, b.synaptic_weight) and torch.equal(a.integer_delays(), b.integer_delays())
    assert second.training["init_from"].endswith("best.pt")
