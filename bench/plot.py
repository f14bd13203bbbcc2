"""`--plot PATH`: speed relative to nn.LSTM per configuration and backend."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402


def write(path: str, meta: dict, records: list) -> None:
    configs = list(dict.fromkeys(r["config"]["name"] for r in records))
    names = list(dict.fromkeys(r["backend"] for r in records))
    modes = list(dict.fromkeys(r["mode"] for r in records))
    fig, axes = plt.subplots(
        len(modes), 1, squeeze=False, figsize=(max(6.0, 0.2 * (len(names) + 1) * len(configs) + 2), 3.5 * len(modes))
    )
    width = 0.8 / max(1, len(names))
    for ax, mode in zip(axes[:, 0], modes):
        speed = {(r["config"]["name"], r["backend"]): r["speedup_vs_nn_lstm"] for r in records if r["mode"] == mode}
        for k, name in enumerate(names):
            vals = [speed.get((c, name)) for c in configs]
            xs = np.arange(len(configs)) + (k - (len(names) - 1) / 2) * width
            ax.bar(xs, [v if v else np.nan for v in vals], width, label=name)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xticks(np.arange(len(configs)), configs, rotation=20, ha="right")
        ax.set_ylabel("speed vs nn.LSTM")
        ax.set_title(f"{mode} (higher is faster; 1x = nn.LSTM)", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(names)), fontsize=8, frameon=False)
    where = meta.get("gpu") or meta["cpu"]
    fig.suptitle(
        f"rnnkernels benchmark: {meta['device']} ({where}), {meta['threads']} threads, torch {meta['torch']}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.2 / len(modes), 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
