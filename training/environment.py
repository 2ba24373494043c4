"""What a run records about the machine it ran on, and what that machine can do (bf16)."""

from __future__ import annotations

import platform
import subprocess

import numpy as np
import torch


def environment_info() -> dict[str, str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"torch": str(torch.__version__), "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "git_commit": commit}


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        from torch.backends import mkldnn

        return bool(mkldnn.is_available()) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False
