"""DMRN (Bi et al.) against its baselines: one config, per-model overrides, the same folds, one report.

:data:`VARIANTS` maps each model of the paper's Tables 2–4 to ``--set`` overrides of a base config (the DMRN run,
``configs/papers/dmrn_adrenal.yaml``). :func:`run_dmrn_study` runs the chosen variants into ``out_dir/<model>/``
through ``cadx.runs.run_cv`` (``hc_svm`` through :func:`cadx.runs.handcrafted.run_hc_svm`), after writing one
``splits.json`` that every run copies (so all models see the same patients in the same folds), adds the t-SNE maps
of the DMRN and ResNet-18 test embeddings (Fig. 5) to those runs, and writes a comparison report + ``summary.csv``.

CPU choices (stated in notes.md): networks at width 16 (VGG-19 at width 8 with a 256-unit head) instead of
the papers' 64, small stems for the 32 px slices; ResNet-101/152 are the same architecture at that width.
``cnn3d`` gets the lesion's 3D box resized to 16×32×32 (``input.kind: volume3d``). SDL trains on in-batch random
pairs (first half vs second half of a shuffled batch, as in SDL), λ = 3.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cadx.config import ExperimentConfig, load_config
from cadx.errors import CadxConfigError
from cadx.runs.handcrafted import HC_NAME
from cadx.utils import atomic_write_json, atomic_write_text, read_json

_HEAD = ["objective={ce: 1.0}", "pairs=none", "eval.classifier=head"]


def _resnet(depth: int) -> list[str]:
    return [f"model.name=resnet{depth}", "model.kwargs={width: 16, stem: small}", *_HEAD]


#: model key → ``--set`` overrides of the DMRN base config (paper table in the comment).
VARIANTS: dict[str, list[str]] = {
    "dmrn": [],                                                                          # Tables 2-4
    "dmrn_noms": ["model.kwargs.multiscale=false"],                                      # Table 4: w.o. MS
    HC_NAME: [f"model.name={HC_NAME}", "model.kwargs={kernel: linear, C: 1.0}", *_HEAD],  # Table 2: HC
    "vgg19": ["model.name=vgg19", "model.kwargs={width: 8, pool_size: 1, fc_dim: 256}", *_HEAD],
    "resnet18": _resnet(18),                                                             # Fig. 5 ResNet
    "resnet50": _resnet(50),
    "resnet101": _resnet(101),
    "resnet152": _resnet(152),
    "cnn3d": ["model.name=cnn3d", "model.kwargs={width: 8, fc_dims: [128, 64]}", "input.kind=volume3d",
              "input.size=[16, 32, 32]", "input.augment.rot90=true", *_HEAD],
    "cnn3d_small": ["model.name=cnn3d_small", "model.kwargs={}", "input.kind=volume3d", "input.size=[16, 32, 32]",
                    "input.augment.rot90=true", *_HEAD],
    "arl": ["model.name=arl", "model.kwargs={depth: 50, width: 16, stem: small}", *_HEAD],
    "sdl": ["model.name=sdl", "model.kwargs={depth: 50, width: 16, stem: small}", "objective={sdl: 1.0}",
            "pairs=none", "eval.classifier=head"],
}
DEFAULT_MODELS = ["dmrn", "dmrn_noms", "resnet18", "resnet50", HC_NAME]
TSNE_MODELS = ("dmrn", "resnet18")


def variant_config(base: str | Path, model: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The config of ``model``: ``base`` YAML → :data:`VARIANTS` ``[model]`` → ``overrides``; ``name`` = model.

    ``hc_svm`` ignores ``model.*`` overrides (they address the networks, e.g. ``model.kwargs.width``). On a base
    whose input is already ``volume3d`` (AdrenalMNIST3D) the 3D variants keep the base's ``input`` section."""
    if model not in VARIANTS:
        raise CadxConfigError(f"dmrn study: unknown model {model!r} (known: {', '.join(VARIANTS)})")
    if model == HC_NAME:
        overrides = [o for o in overrides if not o.strip().startswith("model.")]
    own = VARIANTS[model]
    if load_config(base).input.kind == "volume3d":
        own = [o for o in own if not o.startswith("input.")]
    return load_config(base, [*own, f"name={model}", *overrides])


def _shared_root(cfg: ExperimentConfig, out: Path) -> list[str]:
    """A generated synthetic cohort lives once under ``out/data`` (not once per run)."""
    if cfg.data.root is None and cfg.data.dataset.split(":")[0] == "synthetic":
        return [f"data.root={(out / 'data').resolve()}"]
    return []


def shared_splits(cfg: ExperimentConfig, out: Path) -> Path:
    """``out/splits.json`` (made once with the engine's rules from ``cfg``; reused when present)."""
    from cadx.runs.folder import get_splits, load_cohort

    cohort = load_cohort(cfg, out)
    get_splits(cfg, cohort, out)
    return out / "splits.json"


def run_variant(cfg: ExperimentConfig, run_dir: Path, splits: Path) -> dict[str, Any]:
    """Run one model into ``run_dir`` with the study's ``splits.json`` (resumes a started run)."""
    from cadx.runs.cv import run_cv

    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "splits.json").is_file():
        shutil.copyfile(splits, run_dir / "splits.json")
    resume = any(run_dir.glob("fold_*/DONE")) or any(run_dir.glob("fold_*/checkpoint_last.ckpt"))
    return run_cv(cfg, run_dir, resume=resume)  # run_cv hands hc_svm to cadx.runs.handcrafted.run_hc_svm


def test_embeddings(run_dir: Path, cfg: ExperimentConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Study-level test embeddings of a finished run (each fold's best model on its own test patients; a study =
    the mean of its slices' ``forward_features``): ``(S, D)``, labels ``(S,)``, classes."""
    from cadx.pipeline.items import build_store
    from cadx.runs.folder import done_folds, load_cohort
    from cadx.runs.inference import infer
    from cadx.training.trainer import load_module

    cohort = load_cohort(cfg, run_dir)
    store = build_store(cohort, cfg, progress=False)
    feats, labels = [], []
    for fdir in done_folds(run_dir):
        model, _ = load_module(fdir / "checkpoint_best.ckpt")
        studies = pd.read_csv(fdir / "predictions.csv")["study_id"].astype(str).tolist()
        idx = np.array([cohort.study_ids.index(s) for s in studies], dtype=np.int64)
        items = store.items_of_studies(idx)
        f = infer(model, store.images[items], cfg.train.eval_batch_size, features="features")["features"]
        st = store.study[items]
        for s in np.unique(st):
            feats.append(f[st == s].mean(0))
            labels.append(int(store.labels[s]))
    return np.stack(feats), np.asarray(labels), list(store.classes)


def add_tsne(run_dir: Path, cfg: ExperimentConfig, seed: int = 0) -> Path:
    """Fig. 5: t-SNE of the run's study-level test embeddings → ``figures/tsne.png``, listed in metrics.json."""
    from cadx.explain import tsne_figure

    x, y, classes = test_embeddings(run_dir, cfg)
    path = run_dir / "figures" / "tsne.png"
    tsne_figure(x, y, classes, path, seed=seed, title=f"{cfg.name}: t-SNE of test embeddings (Fig. 5)")
    add_extra(run_dir, "figures", {"title": f"{cfg.name}: t-SNE of the test-study embeddings (Fig. 5)",
                                   "path": "figures/tsne.png"})
    return path


def add_extra(run_dir: Path, kind: str, item: dict[str, Any]) -> None:
    """Append ``item`` to ``metrics.json`` ``extra[kind]`` (replacing one with the same title)."""
    m = read_json(run_dir / "metrics.json")
    extra = m.setdefault("extra", {})
    items = [e for e in extra.get(kind, []) if e.get("title") != item.get("title")]
    extra[kind] = [*items, item]
    atomic_write_json(run_dir / "metrics.json", m)


def summary_row(model: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """One Table-2 row: accuracy, macro AUC, F1 and their 95 % CIs, wall seconds."""
    p = metrics.get("pooled", {})
    ci = p.get("ci", {}) or {}
    row: dict[str, Any] = {"model": model}
    for k in ("accuracy", "auc", "f1", "sensitivity", "specificity"):
        row[k] = p.get(k)
        lo_hi = ci.get(k)
        row[f"{k}_ci"] = None if lo_hi is None else [round(float(v), 4) for v in lo_hi]
    row["seconds"] = metrics.get("run", {}).get("seconds")
    return row


def table2(df: pd.DataFrame) -> dict[str, Any]:
    """The comparison as a metrics.json ``extra`` table."""
    def cell(v: Any, ci: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "–"
        return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, list) and len(ci) == 2 else "")
    rows = [[r.model, cell(r.accuracy, r.accuracy_ci), cell(r.auc, r.auc_ci), cell(r.f1, r.f1_ci), r.seconds]
            for r in df.itertuples()]
    return {"title": "DMRN Table 2/4 format: models in the same folds (study level, 95% CI)",
            "columns": ["model", "accuracy", "AUC (macro OvR)", "F1", "seconds"], "rows": rows}


def run_dmrn_study(config: str | Path, out_dir: str | Path, models: Sequence[str] | None = None,
                   overrides: Sequence[str] = (), tsne: bool = True) -> pd.DataFrame:
    """Run ``models`` (default :data:`DEFAULT_MODELS`; ``"all"`` entries expand to every variant) of the DMRN study.

    ``config``: the base YAML (the DMRN run), ``overrides`` apply to every model (e.g. ``train.epochs=3``). Each
    model → ``out_dir/<model>/`` (a standard run folder; an interrupted study resumes). Writes
    ``out_dir/summary.csv``, ``out_dir/summary.json``, ``out_dir/notes.md`` and ``out_dir/report/report.{html,md}``.
    Returns the summary table (one row per model).
    """
    from cadx.report import write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(models or DEFAULT_MODELS)
    if "all" in names:
        names = list(VARIANTS)
    base = load_config(config, list(overrides))
    extra = _shared_root(base, out)
    splits = shared_splits(load_config(config, [*overrides, *extra]), out)
    rows, dirs = [], []
    for m in names:
        cfg = variant_config(config, m, [*overrides, *extra])
        t0 = time.perf_counter()
        metrics = run_variant(cfg, out / m, splits)
        if tsne and m in TSNE_MODELS:
            add_tsne(out / m, cfg, seed=cfg.seed)
        row = summary_row(m, metrics)
        row["wall_seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        dirs.append(out / m)
    df = pd.DataFrame(rows)
    atomic_write_text(out / "summary.csv", df.to_csv(index=False))
    atomic_write_json(out / "summary.json", {"config": str(config), "overrides": list(overrides),
                                             "models": rows, "findings": findings(df)})
    if "dmrn" in names:
        add_extra(out / "dmrn", "tables", table2(df))
    atomic_write_text(out / "notes.md", study_notes(df, config, overrides))
    write_report(dirs, out / "report", title="DMRN (Bi et al.) against its baselines")
    return df


def findings(df: pd.DataFrame) -> dict[str, Any]:
    """Directions the paper reports, checked on this study: DMRN > ResNet-18, DMRN > DMRN w.o. MS (accuracy, AUC)."""
    rows = {str(r["model"]): r for r in df.to_dict("records")}
    out: dict[str, Any] = {}
    for other, key in (("resnet18", "dmrn_beats_resnet18"), ("dmrn_noms", "multiscale_helps")):
        if "dmrn" in rows and other in rows:
            a, b = rows["dmrn"], rows[other]
            out[key] = {k: bool(float(a[k]) > float(b[k])) for k in ("accuracy", "auc")
                        if a.get(k) is not None and b.get(k) is not None
                        and np.isfinite(float(a[k])) and np.isfinite(float(b[k]))}
    return out


def study_notes(df: pd.DataFrame, config: str | Path, overrides: Sequence[str]) -> str:
    """``notes.md`` of the study: what ran, the choices, the findings."""
    lines = ["# DMRN study (Bi et al.)", "", f"- Base config `{config}`; overrides for every model: "
             f"{list(overrides) or 'none'}; per-model overrides: `cadx.studies.dmrn.study.VARIANTS`.",
             "- All models use the same `splits.json` (patient-level folds) and the same input slices; study "
             "probability = mean of its slice probabilities (cnn3d: one 3D box per study).",
             "- Choices (the paper is silent or the CPU budget forces them): width 16 instead of 64 for every "
             "network (VGG-19 width 8, 256-unit FC head), small stems for 32 px inputs; DMRN backbone ResNet-18 "
             "(paper: ImageNet ResNet-101, no pre-training here); DMRN classifier = linear SVM (C = 1) on the "
             "last-stage RPU embedding; HC = LBP+HOG → linear SVM; SDL λ = 3 on in-batch random pairs.",
             "- t-SNE (Fig. 5): study-level test embeddings (`forward_features`, mean over a study's slices) of "
             "each fold's model on its own test patients, pooled over folds.", "", "## Results", "",
             "| model | accuracy | AUC | F1 | wall s |", "|---|---|---|---|---|"]
    for r in df.itertuples():
        lines.append(f"| {r.model} | {r.accuracy:.3f} | {r.auc:.3f} | {r.f1:.3f} | {r.wall_seconds} |")
    lines += ["", f"Findings: {findings(df)}", ""]
    return "\n".join(lines)


__all__ = ["DEFAULT_MODELS", "VARIANTS", "add_tsne", "findings", "run_dmrn_study", "shared_splits",
           "summary_row", "test_embeddings", "variant_config"]
