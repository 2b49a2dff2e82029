"""Offline model hubs: nothing is ever downloaded at run time."""

from __future__ import annotations

import os


def offline() -> None:
    """Forbid every model hub from reaching the network, and its progress bars from printing (library code
    never prints); set before their libraries are imported."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
