"""PNG plots of simulated runs over time (matplotlib is optional: without it nothing is drawn)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

from modm.services.monitor.simulator import Result


def can_plot() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def plot_runs(runs: Mapping[str, Result], path: Path, title: str) -> bool:
    """Large GPUs, queued requests and p99 latency per window, one line per run; False when
    matplotlib is not installed."""
    if not can_plot():
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("large GPUs", lambda t: t.large),
        ("queued (large + small)", lambda t: t.queued_large + t.queued_small),
        ("p99 latency of the window (s)", lambda t: t.p99_latency_s),
    )
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 8), sharex=True)
    for axis, (label, value) in zip(axes, panels, strict=True):
        for name, result in runs.items():
            axis.step([t.at / 60 for t in result.ticks], [value(t) for t in result.ticks], where="post", label=name)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("minutes")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True
