"""How the segmentation study derives its runs: U-Net (thesis A.3) and SCNet on LGG and BUSI, reduced for a CPU.

:data:`RUNS` maps a run name to its paper config and the section updates (:func:`cadx.config.derive`) that make it
take minutes on 2 CPU cores (smaller input, narrower nets, 3 folds, few epochs); the summary records them:

- ``unet_lgg``: ``configs/papers/unet_lgg.yaml``;
- ``scnet_lgg`` and ``scnet_lgg_no2step``: ``configs/papers/scnet_lgg.yaml`` with and without the 2-step SegNet
  (``model.kwargs.two_step: false`` and no binary objective term) — the same splits (same seed and cohort);
- ``scnet_busi_grouped`` and ``scnet_busi_naive``: ``configs/papers/scnet_busi.yaml`` with CV grouped by
  near-duplicate groups and by image (``data.options.group: image``).

:data:`GROUPS` names the model families (``unet``, ``scnet``) for the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cadx.config import ExperimentConfig, derive, load_config
from cadx.errors import CadxConfigError

__all__ = ["GROUPS", "RUNS", "resolve_names", "run_config"]

_TRAIN: dict[str, Any] = {"cv": {"folds": 3}, "train": {"epochs": 12, "batch_size": 16, "progress": False},
                          "eval": {"bootstrap": 1000}}
_SCNET_KW = {"depth": 18, "width": 8, "two_step": True}
_SCNET_LGG: dict[str, Any] = {"input": {"size": 64}, "model": {"kwargs": {"num_seg_classes": 3, **_SCNET_KW}},
                              **_TRAIN}
_SCNET_BUSI: dict[str, Any] = {"input": {"size": 64}, "model": {"kwargs": {"num_seg_classes": 2, **_SCNET_KW}},
                               **_TRAIN}
_NO_BINARY = {"ternary": {"loss": "scnet", "part": "ternary", "weight": 1.0},
              "cls": {"loss": "scnet", "part": "cls", "weight": 1.0}}

#: run name → (paper config relative to the project folder, section updates)
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "unet_lgg": ("configs/papers/unet_lgg.yaml",
                 {"input": {"size": 80}, "model": {"kwargs": {"num_seg_classes": 1, "base_filters": 12, "levels": 4}},
                  **_TRAIN, "train": {**_TRAIN["train"], "epochs": 15}, "optim": {"lr": 0.001}}),
    "scnet_lgg": ("configs/papers/scnet_lgg.yaml", _SCNET_LGG),
    "scnet_lgg_no2step": ("configs/papers/scnet_lgg.yaml",
                          {**_SCNET_LGG, "model": {"kwargs": {"num_seg_classes": 3, **_SCNET_KW, "two_step": False}},
                           "objective": _NO_BINARY, "name": "scnet_lgg_no2step"}),
    "scnet_busi_grouped": ("configs/papers/scnet_busi.yaml", {**_SCNET_BUSI, "name": "scnet_busi_grouped"}),
    "scnet_busi_naive": ("configs/papers/scnet_busi.yaml",
                         {**_SCNET_BUSI, "data": {"options": {"group": "image"}}, "name": "scnet_busi_naive"}),
}
GROUPS: dict[str, list[str]] = {"unet": [n for n in RUNS if n.startswith("unet")],
                                "scnet": [n for n in RUNS if n.startswith("scnet")]}


def resolve_names(names: list[str] | None) -> list[str]:
    """Run names in :data:`RUNS` order from run or group names (None or empty = every run); CadxConfigError for an
    unknown name."""
    if not names:
        return list(RUNS)
    want: set[str] = set()
    for n in names:
        if n in GROUPS:
            want.update(GROUPS[n])
        elif n in RUNS:
            want.add(n)
        else:
            raise CadxConfigError(f"segmentation study: unknown run {n!r} (runs: {', '.join(RUNS)}; "
                                  f"groups: {', '.join(GROUPS)})")
    return [n for n in RUNS if n in want]


def run_config(name: str, project: Path) -> ExperimentConfig:
    """The config of run ``name``: its paper config under ``project``, updated by :data:`RUNS`, with a relative
    ``data.root`` resolved against ``project``."""
    path, updates = RUNS[name]
    cfg = derive(load_config(project / path), source=f"{path} [{name}]", **updates)
    if cfg.data.root is not None and not Path(cfg.data.root).is_absolute():
        cfg = derive(cfg, data={"root": str((project / cfg.data.root).resolve())})
    return cfg
