"""t-SNE scatter of embeddings coloured by class (DMRN Fig. 5, MTMR-Net Fig. 5), plus the shared atomic figure
writer of :mod:`cadx.explain`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

from cadx.errors import CadxDataError
from cadx.utils import save_figure

__all__ = ["default_perplexity", "save_figure", "tsne_embed", "tsne_figure"]



def default_perplexity(n: int) -> float:
    """``min(30, (n - 1) / 3)``, at least 1 — scikit-learn needs ``perplexity < n``; 30 is its default."""
    return float(max(1.0, min(30.0, (n - 1) / 3.0)))


def tsne_embed(embeddings: np.ndarray, seed: int = 0, perplexity: float | None = None,
               pca_dims: int = 50, exact_max: int = 1000) -> np.ndarray:
    """2-D t-SNE coordinates ``(N, 2)`` of ``embeddings (N, D)``.

    Features are z-scored (constant dimensions → 0); when ``D > pca_dims`` they are first reduced by PCA to
    ``min(pca_dims, N)`` dimensions (as the original t-SNE toolbox does). PCA initialisation, ``learning_rate
    ='auto'``, ``random_state=seed``: the result is deterministic for a seed. Needs ``N >= 3``. Up to
    ``exact_max`` points the exact O(N²) gradient is used (faster than Barnes-Hut there, and it does not spin
    OpenMP threads); above it, Barnes-Hut.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 3:
        raise CadxDataError(f"t-SNE needs embeddings (N >= 3, D), got shape {x.shape}", field="embeddings")
    if not np.all(np.isfinite(x)):
        raise CadxDataError("embeddings contain NaN or infinite values", field="embeddings")
    sd = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    if x.shape[1] > pca_dims:
        x = PCA(n_components=min(pca_dims, x.shape[0]), random_state=seed).fit_transform(x)
    if x.shape[1] < 2:
        x = np.pad(x, ((0, 0), (0, 2 - x.shape[1])))
    perp = default_perplexity(x.shape[0]) if perplexity is None else float(perplexity)
    if not 0 < perp < x.shape[0]:
        raise CadxDataError(f"perplexity must be in (0, N={x.shape[0]}), got {perp}", field="perplexity")
    method = "exact" if x.shape[0] <= exact_max else "barnes_hut"
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", learning_rate="auto", random_state=seed,
                method=method)
    return np.asarray(tsne.fit_transform(x), dtype=np.float64)


def tsne_figure(embeddings: np.ndarray, labels: Sequence[int] | np.ndarray, classes: Sequence[str],
                path: str | Path, seed: int = 0, title: str = "", perplexity: float | None = None) -> np.ndarray:
    """Scatter the t-SNE map of ``embeddings (N, D)`` coloured by ``labels (N,)`` and save it to ``path``.

    ``labels`` are class indices into ``classes`` (``-1`` = unlabelled, drawn grey) or class names. Returns the
    2-D coordinates ``(N, 2)``.
    """
    lab = np.asarray(labels)
    if lab.shape != (np.asarray(embeddings).shape[0],):
        raise CadxDataError(f"{lab.shape} labels for embeddings of shape {np.shape(embeddings)}", field="labels")
    names = list(classes)
    if lab.dtype.kind in "USO":
        unknown = sorted(set(lab.tolist()) - set(names))
        if unknown:
            raise CadxDataError(f"labels {unknown} not in classes {names}", field="labels")
        idx = np.array([names.index(v) for v in lab.tolist()], dtype=np.int64)
    else:
        idx = lab.astype(np.int64)
        if idx.size and idx.max() >= len(names):
            raise CadxDataError(f"label {int(idx.max())} out of range for {len(names)} classes", field="labels")
    xy = tsne_embed(embeddings, seed=seed, perplexity=perplexity)
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    if (idx < 0).any():
        m = idx < 0
        ax.scatter(xy[m, 0], xy[m, 1], s=10, c="0.7", label=f"unlabelled (n={int(m.sum())})", linewidths=0)
    for k, name in enumerate(names):
        m = idx == k
        if m.any():
            ax.scatter(xy[m, 0], xy[m, 1], s=12, color=cmap(k % cmap.N), label=f"{name} (n={int(m.sum())})",
                       linewidths=0, alpha=0.85)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("t-SNE 1")
    ax.set_ylabel("t-SNE 2")
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize=8, frameon=False, markerscale=1.5)
    save_figure(fig, path)
    return xy
