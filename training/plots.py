"""PNG figures of a run: training curves, learned-delay histograms, delay kernels (paper Fig. 3), confusion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def training_curves(history: list[dict[str, Any]], path: Path) -> None:
    epochs = [r["epoch"] for r in history]
    figure, (ax_loss, ax_acc, ax_sigma) = plt.subplots(1, 3, figsize=(14, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="validation (rounded delays)")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [r["train_accuracy"] for r in history], label="train (continuous, augmented)")
    ax_acc.plot(epochs, [r["val_accuracy_continuous"] for r in history], label="validation, continuous delays")
    ax_acc.plot(epochs, [r["val_accuracy"] for r in history], label="validation, rounded delays")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1))
    ax_acc.legend()
    ax_sigma.plot(epochs, [r["sigma"] for r in history])
    ax_sigma.set(xlabel="epoch", ylabel="DCLS SIG", title="Gaussian width schedule", yscale="log")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def delay_histograms(model: Any, path: Path) -> None:
    layers = model.delay_layers()
    figure, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.5), squeeze=False)
    for index, (ax, layer) in enumerate(zip(axes[0], layers)):
        mask = layer.mask.bool().unsqueeze(-1).expand_as(layer.integer_delays())
        delays = layer.integer_delays()[mask].numpy()
        ax.hist(delays, bins=np.arange(layer.max_delay + 1) - 0.5, color="tab:blue")
        name = "readout" if index == len(layers) - 1 else f"hidden {index + 1}"
        ax.set(title=f"{name}: mean {delays.mean():.1f} steps", xlabel="delay (steps)", ylabel="synapses")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def kernel_evolution(snapshots: dict[str, np.ndarray], path: Path, inputs_shown: int = 6) -> None:
    """Delay kernels of a few synapses per neuron at start, middle and end (cf. the paper's Fig. 3)."""
    names = sorted(snapshots, key=lambda n: int(n.split("_")[1]))
    neurons = snapshots[names[0]].shape[0]
    figure, axes = plt.subplots(neurons, len(names), figsize=(4 * len(names), 2.2 * neurons), squeeze=False)
    for column, name in enumerate(names):
        for row in range(neurons):
            ax = axes[row][column]
            for synapse in snapshots[name][row][:inputs_shown]:
                ax.plot(np.arange(len(synapse)), synapse, marker=".", linewidth=1)
            ax.axhline(0, color="grey", linewidth=0.5)
            if row == 0:
                ax.set_title(name.replace("_", " "))
            if row == neurons - 1:
                ax.set_xlabel("delay (steps)")
            if column == 0:
                ax.set_ylabel(f"neuron {row}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def confusion_matrix(matrix: np.ndarray, labels: list[str] | tuple[str, ...], path: Path) -> None:
    normalised = matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True))
    size = max(5, 0.5 * len(labels))
    figure, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    if len(labels) <= 12:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                            color="white" if normalised[i, j] > 0.5 else "black", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title="Validation confusion (rounded delays)")
    figure.colorbar(image, ax=ax, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_all(out_dir: Path, history, labels, validation, model) -> None:
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    if history:
        training_curves(history, plots / "training_curves.png")
    if model.config.delay_mode != "none":
        delay_histograms(model, plots / "delay_histograms.png")
    snapshots_file = out_dir / "kernel_snapshots.npz"
    if snapshots_file.exists():
        kernel_evolution(dict(np.load(snapshots_file)), plots / "delay_kernels.png")
    if validation is not None:
        confusion_matrix(validation.confusion(len(labels)), labels, plots / "confusion_validation.png")
