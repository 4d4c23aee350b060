"""Helpers shared by the study scripts (run them from the repository root)."""
from __future__ import annotations

import numpy as np


def boundary_records_data(records: dict, keys, scalars, n_seeds) -> dict:
    """Dataset variables of saved boundary searches, one ``point`` per key:
    every name in ``scalars`` (point,), the evaluated ||mu|| ``curve_mu``
    (point, eval) and per-seed ``curve_test_error`` (point, seed, eval)
    (NaN-padded), and the solver's ``notes``; ``n_seeds(key)`` is the number
    of seeds of that point."""
    P = len(keys)
    S = max([n_seeds(k) for k in keys] + [1])
    M = max([records[k]["curve_mu"].size for k in keys] + [1])
    cmu, ctest = np.full((P, M), np.nan), np.full((P, S, M), np.nan)
    for i, k in enumerate(keys):
        r = records[k]
        cmu[i, :r["curve_mu"].size] = r["curve_mu"]
        ctest[i, :n_seeds(k), :r["curve_mu"].size] = r["curve_test"]
    data = {name: (("point",), [float(records[k][name]) for k in keys]) for name in scalars}
    data["curve_mu"] = (("point", "eval"), cmu)
    data["curve_test_error"] = (("point", "seed", "eval"), ctest)
    data["notes"] = (("point",), [" | ".join(records[k]["notes"]) for k in keys])
    return data


def log_log_panel(ax, xlabel, title=None, ylabel=None, **legend):
    """Finish one panel of a study figure: log x and y axes, labels, grid on
    both tick levels, legend (``legend``: keyword arguments of ax.legend)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(**legend)
