"""Typed experiment configuration: TOML files plus ``--set section.key=value`` overrides.

An :class:`ExperimentConfig` holds the model, feature, data, augmentation and
training sections; all of it is stored in every checkpoint, so a run can be
reproduced from its checkpoint alone.
"""

from __future__ import annotations

import ast
import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.config_io import from_dict_strict
from model.features import FeatureConfig
from model.network import ModelConfig

TASKS = ("kws10", "gsc35", "fsdd", "shd", "ssc")


@dataclass(frozen=True)
class DataConfig:
    task: str = "kws10"
    root: str = "../shared/data/gsc"  # dataset folder (GSC/FSDD) or folder holding the HDF5 files (SHD/SSC)
    limit_per_class: int | None = None  # cap on training clips per class, for smoke tests
    silence_fraction: float = 0.1  # kws10: silence clips per epoch, as a fraction of the speech clips
    noise_holdout: float = 0.2  # tail of each noise recording kept for validation silence
    spike_bin_ms: float = 10.0  # SHD/SSC: time bin
    spike_channel_bins: int = 5  # SHD/SSC: 700 channels → 700 / 5 = 140 inputs
    spike_duration_s: float = 1.0  # SHD/SSC: padded/cropped length
    test_fraction: float = 0.0  # GSC manifest without a test split: validation speakers moved to test
    # Words whose real clips never enter training (nor the synthetic corpus): the open-set evaluation.
    held_out_words: tuple[str, ...] = ()
    synth_root: str = ""  # kws-synth corpus folder; empty = no synthetic speech
    keyword_clips_per_epoch: int = 0  # kws10: draws per keyword per epoch (balanced classes); 0 = every clip once
    unknown_clips_per_epoch: int = 0  # kws10, with keyword_clips_per_epoch: draws of _unknown_ per epoch
    synthetic_unknown_fraction: float = 0.5  # ... of which this share comes from the synthetic corpus
    # Draws per epoch of the synthetic near-misses (rhymes, minimal pairs) in a pool of their own, on top of
    # the _unknown_ draws; 0 = they are ordinary synthetic unknowns. They are the hard negatives: most
    # false alarms fall on them, and in the general pool they are a fifth of the synthetic unknowns.
    near_miss_clips_per_epoch: int = 0
    # Share of each keyword's draws taken from its synthetic clips; 0 = one pool, real and synthetic alike.
    # Synthetic speech is most of the synthetic unknowns: without enough synthetic keywords beside them,
    # "synthetic" would predict "not a keyword".
    synthetic_keyword_fraction: float = 0.0
    # kws10: a kws-mine file (training/hard_negatives.py): stream windows of training material that a trained
    # network answered with a keyword, labelled _unknown_ or _silence_ by what they hold; drawn
    # hard_negative_clips_per_epoch times an epoch in a pool of their own (with keyword_clips_per_epoch).
    hard_negatives: str = ""
    hard_negative_clips_per_epoch: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "held_out_words", tuple(self.held_out_words))
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.hard_negative_clips_per_epoch < 0:
            raise ValueError("data.hard_negative_clips_per_epoch must be >= 0")
        if self.hard_negative_clips_per_epoch and not self.hard_negatives:
            raise ValueError("data.hard_negative_clips_per_epoch needs data.hard_negatives (a kws-mine file)")


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    time_shift_s: float = 0.1
    # Shifts move the word anywhere it stays whole inside the window (at most time_shift_s each way), so the
    # model answers at every offset a stream window can hold the word at, not only near the clip's centre.
    shift_keeps_word: bool = False
    # _unknown_ clips shifted so that 30-70 % of the word leaves the window: stream windows hold fragments
    # of words, and a fragment of a non-keyword is not a keyword either.
    cut_word_probability: float = 0.0
    noise_probability: float = 0.5
    snr_db_min: float = 5.0
    snr_db_max: float = 25.0
    gain_db: float = 6.0  # random gain in [-gain_db, +gain_db] unless gain_db_min/max are set
    gain_db_min: float | None = None
    gain_db_max: float | None = None
    speed_probability: float = 0.0  # speed perturbation (resampling) of speech clips
    speed_min: float = 0.9
    speed_max: float = 1.1
    # Vocal tract length perturbation of speech clips: the mel filters read the spectrum warped by a factor
    # drawn in [vtlp_min, vtlp_max] (model.features.vtlp_warp), formants moved without changing the tempo.
    vtlp_probability: float = 0.0
    vtlp_min: float = 0.9
    vtlp_max: float = 1.1
    reverb_probability: float = 0.0  # a room impulse response from the kws-synth bank (data.synth_root/rooms)
    eq_probability: float = 0.0  # a random seven-band EQ of +-eq_gain_db
    eq_gain_db: float = 6.0
    colored_noise_probability: float = 0.0  # coloured noise at 20-50 dB SNR: a noise floor under quiet speech
    lowpass_probability: float = 0.0  # a low-pass at 3-7.5 kHz (8-kHz sources, poor microphones)
    silence_level_db_min: float = -70.0  # non-speech clips: noise RMS in dBFS, drawn uniformly
    silence_level_db_max: float = -20.0
    digital_silence_probability: float = 0.05  # non-speech clips left at zero
    noise_mix_probability: float = 0.0  # a second noise mixed into a non-speech clip
    burst_probability: float = 0.0  # non-speech clips cut into bursts
    freq_masks: int = 1
    freq_mask_width: int = 5
    time_masks: int = 1
    time_mask_width: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.vtlp_min <= self.vtlp_max:
            raise ValueError(f"augment.vtlp_min and vtlp_max need 0 < min <= max, got {self.vtlp_min}, {self.vtlp_max}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    lr_weights: float = 1e-3
    lr_positions_scale: float = 100.0  # positions learn at this multiple of the weights' rate
    weight_decay: float = 1e-5
    one_cycle_max_lr_scale: float = 5.0  # weights: one-cycle schedule peaking at this multiple of lr_weights
    sigma_final: float = 0.23  # DCLS SIG at the end of the decay (Gaussian std = SIG + 0.27)
    sigma_decay_fraction: float = 0.25  # sigma reaches its floor after this fraction of the epochs
    seed: int = 0
    threads: int = 2
    bf16: bool = True  # bf16 autocast for the convolutions on CPUs that have it; evaluation stays fp32
    eval_batch_size: int = 256
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda"
    kernel_snapshot_neurons: int = 4  # neurons of the last hidden layer whose delay kernels are plotted
    # > 0: a moving average of the network (training/averaging.py) is evaluated, chosen and saved; 0: off
    ema_decay: float = 0.0


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "kws10"
    model: ModelConfig = field(default_factory=ModelConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model.to_dict(),
            "features": self.features.to_dict(),
            "data": dataclasses.asdict(self.data),
            "augment": dataclasses.asdict(self.augment),
            "train": dataclasses.asdict(self.train),
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExperimentConfig":
        sections = {"model": ModelConfig, "features": FeatureConfig, "data": DataConfig,
                    "augment": AugmentConfig, "train": TrainConfig}
        unknown = set(values) - set(sections) - {"name"}
        if unknown:
            raise ValueError(f"unknown config sections: {sorted(unknown)}")
        kwargs: dict[str, Any] = {"name": values.get("name", "experiment")}
        for section, kind in sections.items():
            kwargs[section] = from_dict_strict(kind, dict(values.get(section, {})), f"keys in [{section}]")
        return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=5"`` → (["train", "epochs"], 5); values are Python/TOML literals or bare strings."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        lowered = raw.strip().lower()
        value = {"true": True, "false": False, "null": None}.get(lowered, raw.strip())
    return path, value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> ExperimentConfig:
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    for text in overrides:
        keys, value = parse_override(text)
        target = values
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return ExperimentConfig.from_dict(values)
