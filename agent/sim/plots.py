"""Paper-style figures of simulation results (matplotlib, Agg backend, small PNGs)."""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

_STYLE = {"dtoee": ("C3", "o"), "cf": ("C0", "s"), "bf": ("C2", "^"), "ngto": ("C1", "v"),
          "ga": ("C4", "D")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(name: str) -> str:
    if name.startswith("dtoee-c"):
        return "DTO w/o AT-" + name[len("dtoee-c"):]
    return {"dtoee": "DTO-EE", "ngto": "NGTO"}.get(name, name.upper())


def _log_if_spread(ax, delays: Sequence[float]) -> None:
    """Log scale when an overloaded policy's delays would flatten everyone else's."""
    if delays and min(delays) > 0 and max(delays) / min(delays) > 10:
        ax.set_yscale("log")


def plot_results(results: Dict, name: str, folder: str) -> List[str]:
    """Every figure ``simulate`` draws, from its ``results.json`` object; returns the paths."""

    paths = []
    if len({r["rate"] for r in results.get("rates", [])}) > 1:
        paths.append(plot_vs(results["rates"], "rate", "arrival rate per source (tasks/s)", name,
                             os.path.join(folder, "%s_vs_rate.png" % name)))
    if results.get("capacity"):
        paths.append(plot_vs(results["capacity"], "capacity_scale",
                             "average computing capacity (x)", name,
                             os.path.join(folder, "%s_vs_capacity.png" % name)))
    for key in ("dynamic", "thresholds"):
        if results.get(key):
            paths.append(plot_series(results[key], "%s, %s" % (name, key),
                                     os.path.join(folder, "%s_%s.png" % (name, key))))
    return paths


def plot_vs(rows: Sequence[Dict], x_key: str, x_label: str, title: str, path: str) -> str:
    """Mean delay (ms) and accuracy (%) of every policy against ``x_key``; writes ``path``."""
    plt = _pyplot()
    fig, (ax_d, ax_a) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=80)
    for name in dict.fromkeys(r["policy"] for r in rows):
        pts = [r for r in rows if r["policy"] == name and r["mean_delay_s"] is not None]
        color, marker = _STYLE.get(name, (None, "x"))
        xs = [r[x_key] for r in pts]
        ax_d.plot(xs, [r["mean_delay_s"] * 1e3 for r in pts], marker=marker, color=color,
                  label=_label(name))
        accs = [(r[x_key], r["accuracy"] * 100) for r in pts if r["accuracy"] is not None]
        if accs:
            ax_a.plot(*zip(*accs), marker=marker, color=color, label=_label(name))
    _log_if_spread(ax_d, [r["mean_delay_s"] for r in rows if r["mean_delay_s"] is not None])
    ax_d.set_xlabel(x_label)
    ax_d.set_ylabel("mean response delay (ms)")
    ax_a.set_xlabel(x_label)
    ax_a.set_ylabel("accuracy (%)")
    return _finish(plt, fig, ax_d, ax_a, title, path, legend_cols=1)


def plot_series(series: Dict[str, List[Dict]], title: str, path: str) -> str:
    """Per-slot mean delay and accuracy of every policy; writes ``path``."""
    plt = _pyplot()
    fig, (ax_d, ax_a) = plt.subplots(2, 1, figsize=(8, 4.4), dpi=80, sharex=True)
    for name, rows in series.items():
        pts = [r for r in rows if r["mean_delay_s"] is not None]
        color, _ = _STYLE.get(name, (None, "x"))
        ax_d.plot([r["slot"] for r in pts], [r["mean_delay_s"] * 1e3 for r in pts],
                  color=color, lw=1, label=_label(name))
        accs = [(r["slot"], r["accuracy"] * 100) for r in pts if r["accuracy"] is not None]
        if accs:
            ax_a.plot(*zip(*accs), color=color, lw=1, label=_label(name))
    _log_if_spread(ax_d, [r["mean_delay_s"] for rows in series.values() for r in rows
                          if r["mean_delay_s"] is not None])
    ax_d.set_ylabel("mean delay (ms)")
    ax_a.set_ylabel("accuracy (%)")
    ax_a.set_xlabel("time slot")
    return _finish(plt, fig, ax_d, ax_a, title, path, legend_cols=5)


def _finish(plt, fig, ax_d, ax_a, title: str, path: str, legend_cols: int) -> str:
    """Legend, grids and title of a delay/accuracy figure; writes ``path`` and frees the figure."""
    ax_d.legend(fontsize=7, ncol=legend_cols)
    ax_d.grid(alpha=0.3)
    ax_a.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
