"""Writers of small files in the published Heidelberg SHD/SSC HDF5 format, for loader and training tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def write_shd_file(path: Path, samples: int, classes: int, seed: int = 0, duration_s: float = 0.6) -> list[tuple]:
    """Each sample fires channel band ``label`` early and band ``label + classes`` late, so it is learnable.

    Returns the (times, units, label) written, for exact comparisons.
    """
    rng = np.random.default_rng(seed)
    written = []
    times_type = h5py.vlen_dtype(np.dtype("float32"))
    units_type = h5py.vlen_dtype(np.dtype("uint16"))
    with h5py.File(path, "w") as handle:
        spikes = handle.create_group("spikes")
        times_ds = spikes.create_dataset("times", (samples,), dtype=times_type)
        units_ds = spikes.create_dataset("units", (samples,), dtype=units_type)
        labels = np.arange(samples) % classes
        for i, label in enumerate(labels):
            count = 60
            band = 700 // (2 * classes)
            early = rng.uniform(0, duration_s / 2, count // 2)
            late = rng.uniform(duration_s / 2, duration_s, count // 2)
            units = np.concatenate([rng.integers(label * band, (label + 1) * band, count // 2),
                                    rng.integers((label + classes) * band, (label + classes + 1) * band, count // 2)])
            times = np.concatenate([early, late]).astype(np.float32)
            order = np.argsort(times)
            times_ds[i], units_ds[i] = times[order], units[order].astype(np.uint16)
            written.append((times[order], units[order], int(label)))
        handle.create_dataset("labels", data=labels.astype(np.uint16))
        extra = handle.create_group("extra")
        extra.create_dataset("speaker", data=np.zeros(samples, dtype=np.uint16))
    return written
