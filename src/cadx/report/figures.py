"""Report figures as PNG bytes (matplotlib ``Figure`` + Agg canvas; pyplot's global state is not touched)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cadx.evaluation.metrics import roc_auc, roc_curve_points
from cadx.evaluation.summary import class_key
from cadx.report.runs import RunData

__all__ = ["confusion_png", "has_validation", "reliability_png", "roc_binary_png", "roc_ovr_png", "training_figure",
           "training_png"]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def confusion_png(cm: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> bytes:
    """Heat map of a ``(K, K)`` confusion matrix (rows true, columns predicted) with counts and row %."""
    a = np.asarray(cm, dtype=float)
    k = a.shape[0]
    rows = a.sum(1, keepdims=True)
    frac = np.divide(a, rows, out=np.zeros_like(a), where=rows > 0)
    size = 2.2 + 0.7 * k
    fig = Figure(figsize=(size, size * 0.9))
    ax = fig.add_subplot()
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(a[i, j])}\n{100 * frac[i, j]:.0f}%", ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(k), [str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(k), [str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def _arrays(run: RunData) -> tuple[np.ndarray, np.ndarray] | None:
    df = run.predictions
    classes = run.classes
    if df is None or not classes or "y_true" not in df.columns:
        return None
    cols = [f"p_{c}" for c in classes]
    if any(c not in df.columns for c in cols):
        return None
    lookup = {c: i for i, c in enumerate(classes)}
    keys = df["y_true"].map(class_key)
    ok = (keys.isin(lookup) & df["y_true"].notna()).to_numpy()
    if not ok.any():
        return None
    y = keys[ok].map(lookup).to_numpy(dtype=np.int64)
    return y, df.loc[ok, cols].to_numpy(dtype=float)


def _diag(ax: object) -> None:
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")  # type: ignore[attr-defined]
    ax.set_xlabel("1 − specificity")  # type: ignore[attr-defined]
    ax.set_ylabel("sensitivity")  # type: ignore[attr-defined]
    ax.set_xlim(0, 1)  # type: ignore[attr-defined]
    ax.set_ylim(0, 1.01)  # type: ignore[attr-defined]


def _positive(run: RunData) -> int:
    """Index of a binary run's positive class (``metrics.json`` ``positive``, ``eval.positive``; default 1)."""
    name = run.metrics.get("positive") or (run.metrics.get("pooled") or {}).get("positive")
    return run.classes.index(str(name)) if name is not None and str(name) in run.classes else 1


def roc_binary_png(runs: Sequence[RunData]) -> bytes | None:
    """All binary runs on one ROC plot (each run's positive class, ``metrics.json`` ``positive``, default index 1);
    None when no run has predictions."""
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.add_subplot()
    drawn = 0
    for r in runs:
        arr = _arrays(r)
        if arr is None or arr[1].shape[1] != 2 or len(np.unique(arr[0])) < 2:
            continue
        y, p = arr
        k = _positive(r)
        fpr, tpr, _ = roc_curve_points(y, p[:, k], pos_label=k)
        ax.plot(fpr, tpr, lw=1.4, label=f"{r.name} (AUC {roc_auc(y, p, positive=k):.3f})")
        drawn += 1
    if not drawn:
        return None
    _diag(ax)
    names = sorted({r.classes[_positive(r)] for r in runs if len(r.classes) == 2})
    ax.set_title(f"ROC, positive class = {', '.join(names) or 1}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def roc_ovr_png(run: RunData) -> bytes | None:
    """One-vs-rest ROC curve per class of one multi-class run; None without usable predictions."""
    arr = _arrays(run)
    if arr is None:
        return None
    y, p = arr
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.add_subplot()
    drawn = 0
    for k, c in enumerate(run.classes):
        pos = y == k
        if pos.all() or not pos.any():
            continue
        fpr, tpr, _ = roc_curve_points(y, p[:, k], pos_label=k)
        auc = float(np.trapezoid(tpr, fpr))
        ax.plot(fpr, tpr, lw=1.2, label=f"{c} vs rest (AUC {auc:.3f})")
        drawn += 1
    if not drawn:
        return None
    _diag(ax)
    ax.set_title(f"{run.name}: one-vs-rest ROC", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


_VAL_SCORES = (("val_auc", "-"), ("val_accuracy", ":"))


def has_validation(histories: dict[str, pd.DataFrame]) -> bool:
    """True when any fold's history has a validation AUC or accuracy value."""
    return any(c in h.columns and h[c].notna().any() for h in histories.values() for c, _ in _VAL_SCORES)


def training_png(histories: dict[str, pd.DataFrame], title: str) -> bytes | None:
    """:func:`training_figure` as PNG bytes (None when there is nothing to draw)."""
    fig = training_figure(histories, title)
    return None if fig is None else _png(fig)


def training_figure(histories: dict[str, pd.DataFrame], title: str) -> Figure | None:
    """Loss per epoch (train solid, val dashed) and, when any fold has one, validation AUC/accuracy per epoch
    (second panel), one colour per fold (``histories``: fold → history.csv frame). Runs without a validation
    set get the loss panel only. None when no history has a train/val loss or validation score to draw."""
    hist = sorted(((f, h) for f, h in histories.items() if len(h)), key=lambda kv: int(kv[0]))
    losses = [c for c in ("train_loss", "val_loss") if any(c in h.columns and h[c].notna().any() for _, h in hist)]
    with_val = has_validation(dict(hist))
    if not losses and not with_val:
        return None
    fig = Figure(figsize=(9, 3.4) if losses and with_val else (4.8, 3.4))
    axes = [fig.add_subplot(1, int(bool(losses)) + int(with_val), i + 1)
            for i in range(int(bool(losses)) + int(with_val))]
    ax_loss = axes[0] if losses else None
    ax_val = axes[-1] if with_val else None
    for i, (fold, h) in enumerate(hist):
        col = f"C{i % 10}"
        x = h["epoch"] if "epoch" in h.columns else np.arange(len(h))
        for name, ls in (("train_loss", "-"), ("val_loss", "--")):
            if ax_loss is not None and name in h.columns and h[name].notna().any():
                ax_loss.plot(x, h[name], ls=ls, color=col, lw=1.1, marker="." if len(h) < 3 else None,
                             label=f"fold {fold} {name.split('_')[0]}")
        for name, ls in _VAL_SCORES:
            if ax_val is not None and name in h.columns and h[name].notna().any():
                ax_val.plot(x, h[name], ls=ls, color=col, lw=1.1, marker="." if len(h) < 3 else None,
                            label=f"fold {fold} {name[4:]}")
    if ax_loss is not None:
        ax_loss.set_xlabel("epoch")
        ax_loss.set_ylabel("loss" if with_val or "val_loss" in losses else "training loss")
    if ax_val is not None:
        ax_val.set_xlabel("epoch")
        ax_val.set_ylabel("validation AUC / accuracy")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, ncol=2)
    fig.suptitle(title, fontsize=9)
    return fig


def reliability_png(curves: Mapping[str, Mapping[str, Any]], title: str) -> bytes | None:
    """Reliability diagram: per entry (label → a ``calibration`` block of ``metrics.json``: ``curve`` with
    ``prob_pred``, ``prob_true``, ``count``; ``ece``, ``brier``) the observed frequency against the mean predicted
    probability of each non-empty bin (markers sized by the bin's studies) over the diagonal of perfect calibration,
    and the studies per bin below. None when no entry has a curve."""
    usable = {k: v for k, v in curves.items() if (v.get("curve") or {}).get("prob_pred")}
    if not usable:
        return None
    fig = Figure(figsize=(4.8, 5.2))
    ax = fig.add_axes((0.14, 0.36, 0.8, 0.56))
    hist = fig.add_axes((0.14, 0.1, 0.8, 0.17), sharex=ax)
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="perfectly calibrated")
    n_tot = max(sum(v["curve"]["count"]) for v in usable.values())
    width = 0.8 / int(next(iter(usable.values())).get("n_bins") or 10) / len(usable)
    for i, (label, v) in enumerate(usable.items()):
        c = v["curve"]
        x, yv, n = (np.asarray(c[k], float) for k in ("prob_pred", "prob_true", "count"))
        col = f"C{i % 10}"
        ax.plot(x, yv, color=col, lw=1.2, label=f"{label} (ECE {v.get('ece', float('nan')):.3f}, "
                                                f"Brier {v.get('brier', float('nan')):.3f})")
        ax.scatter(x, yv, s=12 + 120 * n / max(n_tot, 1), color=col, alpha=0.7, zorder=3)
        hist.bar(x + (i - (len(usable) - 1) / 2) * width, n, width=width, color=col, alpha=0.7)
    first = next(iter(usable.values()))
    kind = first.get("kind", "positive-class")
    ax.set_ylabel("observed frequency of the positive class" if kind == "positive-class" else "accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=6.5, loc="upper left")
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelbottom=False)
    hist.set_xlabel("mean predicted probability" + (" (positive class)" if kind == "positive-class"
                                                     else " (top-label confidence)"))
    hist.set_ylabel("studies", fontsize=8)
    return _png(fig)
