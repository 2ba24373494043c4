import json
import os
import shutil
import signal
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
from training.delay_diagnostics import delay_shift, initial_delays
from training.optimisation import parameter_groups
from model.network import DelaySNN, ModelConfig

REPO = Path(__file__).resolve().parents[1]
DDP_DEADLINE_S = 240  # two processes, two epochs of 33 clips: about 20 s here; a hang waits for ever


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
    assert load_config(None, ["augment.vtlp_probability=0.5"]).augment.vtlp_probability == 0.5
    with pytest.raises(ValueError, match="vtlp_min and vtlp_max"):
        load_config(None, ["augment.vtlp_min=1.2", "augment.vtlp_max=1.1"])
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
    # Every epoch records whether the positions learned, per delay layer (2 hidden + readout); after the resume
    # the moves are still measured from the run's initial delays, not from where the resume started.
    assert all(len(r["position_grad_norm"]) == 3 and min(r["position_grad_norm"]) > 0 for r in history)
    last = load_checkpoint(out / "last.pt").model
    shifts, _ = delay_shift(last, initial_delays(DelaySNN(last.config)))
    assert history[-1]["delay_shift"] == pytest.approx(shifts, rel=1e-5)
    assert min(history[-1]["delay_shift"]) > max(history[0]["delay_shift"]) / 2 > 0
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
    """The shipped config end to end, its synthetic corpus made here (small) with whatever synthesizer exists."""
    from training.synth import corpus
    from training.synth.voices import available_engines
    from training.synth.words import Text

    out = tmp_path / "kws"
    synth = tmp_path / "synth"
    engines = [e for e in available_engines() if e in ("espeak", "flite")]
    if engines:
        items = corpus.plan([Text("yes", "keyword", "yes"), Text("table", "common"), Text("seven", "speech_commands")],
                            engines, seed=0, renditions={"keyword": 4, "common": 4, "speech_commands": 4})
        corpus.build(items, synth, 16000, progress=False)
    sets = [f"data.root={str(data_dir / 'gsc')!r}", "data.limit_per_class=12", "train.epochs=1",
            "model.hidden_sizes=[16,16]", "train.batch_size=32", "train.threads=1",
            f"data.synth_root={str(synth) if engines else ''!r}"]
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


@pytest.mark.slow
def test_resume_reads_checkpoints_whose_history_is_json_text(shd_root, tmp_path):
    """last.pt files written before the typed resume records held the history and best epoch as JSON strings."""
    out = tmp_path / "run"
    args = ["--out", str(out), "--no-progress"]
    for value in tiny_overrides(shd_root) + ["train.epochs=2"]:
        args += ["--set", value]
    assert train_main(args + ["--stop-after", "1"]) == 0
    raw = torch.load(out / "last.pt", weights_only=True)
    assert raw["resume"]["history"][0]["epoch"] == 1 and raw["resume"]["best"]["epoch"] == 1  # plain lists and dicts
    raw["resume"]["history"] = json.dumps(raw["resume"]["history"])
    raw["resume"]["best"] = json.dumps(raw["resume"]["best"])
    torch.save(raw, out / "last.pt")
    assert train_main(args + ["--resume"]) == 0
    assert [r["epoch"] for r in json.loads((out / "metrics.json").read_text())] == [1, 2]
    resume = load_checkpoint(out / "last.pt").resume
    assert [r["epoch"] for r in resume["history"]] == [1, 2] and resume["next_epoch"] == 2


@pytest.mark.slow
def test_a_moving_average_is_what_the_run_chooses_saves_and_resumes(shd_root, tmp_path):
    """train.ema_decay: best.pt holds the average (not the training weights), updated every step, and a resumed
    run continues the same average instead of starting a new one from the restored weights."""
    out = tmp_path / "run"
    args = ["--out", str(out), "--no-progress"]
    for value in tiny_overrides(shd_root) + ["train.epochs=2", "train.ema_decay=0.9", "train.lr_weights=3e-3"]:
        args += ["--set", value]
    assert train_main(args + ["--stop-after", "1"]) == 0
    first = load_checkpoint(out / "last.pt")
    average = first.resume["average"]
    steps = int(average["n_averaged"]) - 1  # the first update copies the starting network
    assert steps > 0
    averaged = {k.removeprefix("module."): v for k, v in average.items() if k.startswith("module.")}
    best = load_checkpoint(out / "best.pt").raw["state_dict"]  # epoch 1 is the best so far: the average then
    assert set(best) == set(averaged)
    assert all(torch.equal(best[k], averaged[k]) for k in best)
    training = first.raw["state_dict"]
    assert any(not torch.equal(training[k], averaged[k]) for k in training if training[k].is_floating_point())
    history = json.loads((out / "metrics.json").read_text())
    assert 0 <= history[0]["val_accuracy_training_weights"] <= 1

    assert train_main(args + ["--resume"]) == 0
    assert int(load_checkpoint(out / "last.pt").resume["average"]["n_averaged"]) == 1 + 2 * steps


@pytest.mark.slow
def test_init_from_refuses_a_network_of_other_labels(shd_root, tmp_path, capsys):
    out = tmp_path / "three"
    args = ["--out", str(out), "--no-progress"]
    for value in tiny_overrides(shd_root) + ["train.epochs=1"]:
        args += ["--set", value]
    assert train_main(args) == 0
    four = tmp_path / "four"
    four.mkdir()
    write_shd_file(four / "shd_train.h5", samples=48, classes=4)
    write_shd_file(four / "shd_test.h5", samples=12, classes=4, seed=1)
    args = ["--out", str(tmp_path / "other"), "--no-progress", "--init-from", str(out / "best.pt")]
    for value in tiny_overrides(four) + ["train.epochs=1"]:
        args += ["--set", value]
    assert train_main(args) == 2
    assert "its labels ['0', '1', '2'] are not this run's" in capsys.readouterr().err


def test_the_moving_average_refuses_a_decay_outside_its_range():
    from training.averaging import moving_average

    model = DelaySNN(ModelConfig(input_size=4, hidden_sizes=(5,), num_classes=2, max_delay=5))
    assert moving_average(model, 0.0) is None
    with pytest.raises(ValueError, match="ema_decay"):
        moving_average(model, 1.0)


def test_a_widened_network_starts_as_the_trained_one_and_its_new_neurons_can_learn():
    from training.widening import load_widened

    torch.manual_seed(0)
    small = DelaySNN(ModelConfig(input_size=6, hidden_sizes=(8, 8), num_classes=3, max_delay=5))
    small.set_sigma(0.23)
    small.train()
    small(torch.randn(4, 6, 20))  # batch-norm statistics that are not the defaults
    small.eval()
    wide = DelaySNN(ModelConfig(input_size=6, hidden_sizes=(11, 13), num_classes=3, max_delay=5))
    widened = load_widened(wide, small.state_dict(), small.config)
    wide.set_sigma(0.23)
    wide.eval()
    assert "hidden.1.synapses.dcls.weight" in widened and "readout_synapses.dcls.weight" in widened
    x = torch.randn(5, 6, 20)
    for discrete in (True, False):
        assert torch.allclose(wide(x, discrete_delays=discrete).potentials, small(x, discrete_delays=discrete).potentials,
                              atol=1e-6)
    # The new neurons spike: their (zero) outgoing weights get a gradient.
    wide.train()
    wide(x).potentials.square().sum().backward()
    assert wide.readout_synapses.dcls.weight.grad[:, 8:].abs().sum() > 0
    with pytest.raises(ValueError, match="only widen"):
        load_widened(DelaySNN(ModelConfig(input_size=6, hidden_sizes=(4, 8), num_classes=3, max_delay=5)),
                     small.state_dict(), small.config)
    # Same shapes or wider ones, but another network: more classes, or positions that mean other delays.
    for other in (ModelConfig(input_size=6, hidden_sizes=(8, 8), num_classes=4, max_delay=5),
                  ModelConfig(input_size=6, hidden_sizes=(8, 8), num_classes=3, max_delay=9)):
        with pytest.raises(ValueError, match="more than its hidden widths"):
            load_widened(DelaySNN(other), small.state_dict(), small.config)


def test_resume_refuses_a_finished_network_and_points_at_init_from(tmp_path, capsys):
    """The shipped artifacts/kws10/model.pt is a trained network without optimiser state: not resumable."""
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(REPO / "artifacts" / "kws10" / "model.pt", out / "last.pt")
    assert load_checkpoint(out / "last.pt").model_config.hidden_sizes == (256, 256)  # it still loads
    assert train_main(["--config", str(REPO / "configs" / "kws10.toml"), "--out", str(out), "--resume"]) == 2
    error = capsys.readouterr().err
    assert "no resume state" in error and f"--init-from {out / 'last.pt'}" in error


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def run_with_deadline(command: list[str], deadline_s: float, **kwargs) -> subprocess.CompletedProcess:
    """Runs ``command``; past the deadline it and every process it started are killed and the test fails,
    so a hang is a failure, not a stuck CI job."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        for pid in [*descendants(process.pid), process.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stdout, stderr = process.communicate(timeout=30)
        pytest.fail(f"still running after {deadline_s:.0f} s (a hang):\n{stdout[-1500:]}\n{stderr[-1500:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_ddp_does_not_hang_when_the_last_shard_of_an_epoch_is_empty_on_a_rank(tmp_path):
    """33 training clips in global batches of 16 over 2 ranks: the third batch of every epoch has one clip, so
    rank 1 used to get none, skip its step and leave rank 0 waiting in the gradient all-reduce for ever (and
    its learning-rate schedule one step behind). Every rank must take the same steps and stay in agreement."""
    root = tmp_path / "shd"
    root.mkdir()
    write_shd_file(root / "shd_train.h5", samples=33, classes=3)
    write_shd_file(root / "shd_valid.h5", samples=6, classes=3, seed=2)
    write_shd_file(root / "shd_test.h5", samples=6, classes=3, seed=1)
    out = tmp_path / "ddp"
    epochs, steps_per_epoch = 2, 3
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "training.cli", "--out", str(out), "--no-progress"]
    for value in tiny_overrides(root) + [f"train.epochs={epochs}"]:
        command += ["--set", value]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = run_with_deadline(command, DDP_DEADLINE_S, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "33 train" in result.stdout and "processes 2" in result.stdout
    last = load_checkpoint(out / "last.pt")
    # The schedules took one step per batch: as many as the single-process run of the same data would.
    assert [s["last_epoch"] for s in last.resume["schedulers"]] == [epochs * steps_per_epoch] * 2
    assert [r["epoch"] for r in json.loads((out / "metrics.json").read_text())] == [1, 2]


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


def test_prefetched_batches_come_in_order_and_equal_the_direct_ones():
    import numpy as np

    from training.trainer import prefetched

    batches = [np.arange(i, i + 3) for i in range(0, 30, 3)]
    direct_rng, prefetch_rng = np.random.default_rng(5), np.random.default_rng(5)
    direct = [b * 10 + direct_rng.random() for b in batches]
    fetched = list(prefetched(batches, lambda b: b * 10 + prefetch_rng.random()))
    assert len(fetched) == len(batches) and all(np.array_equal(a, b) for a, b in zip(direct, fetched))
    assert list(prefetched([], lambda b: b)) == []
