"""MTMR-Net (Liu et al., IEEE TMI 2019) study on LIDC-IDRI: Tables II–IV, Fig. 4 cards and Fig. 5 t-SNE.

``run_mtmr_tables(config, out_dir)`` cross-validates three variants of one experiment config through the engine
(:func:`cadx.runs.cv.run_cv`), all on the **same** patient-level splits (the first variant's ``splits.json`` is
copied to the others):

* ``mtmr`` — the config as given (CE + attribute MSE + margin ranking on random Siamese pairs);
* ``no_rank`` — without L_rank: ``margin_ranking`` removed from the objective and ``pairs: none``;
* ``no_reg`` — without L_reg: ``attribute_mse`` removed **and** the attribute branch dropped
  (``model.kwargs.attribute_branch: false``, the classifier sees the image features only). The paper's "without
  L_reg" leaves it open whether the branch stays; an untrained branch feeding the classifier would only add noise,
  so the branch goes.

Then (:mod:`cadx.studies.mtmr.tables`) Table III (ABE per attribute on the original rating scale: MTMR-Net, LASSO
and elastic net on handcrafted and on CNN-embedding features fitted per fold, the inter-reader row IB), Table IV
(RFE relatedness on the predicted attributes), Fig. 5 and Fig. 4-style cards go into ``out_dir/metrics.json``
(``extra.tables``/``extra.figures``), ``notes.md`` and one report (``report.html``/``report.md``).

Paper → engine choices (also written to notes.md): the paper resizes each diameter-adaptive ROI to 256 and takes a
random 224 crop; here the ROI is resized to ``input.size`` and shifted at random by up to ``translate × size``
pixels (border replicated), and inference uses the whole ROI — a random crop without the size change. The
minority class gets heavier augmentation by oversampling (``sampler: oversample``): every duplicate is augmented
independently (flips, quarter turns, shift). One prediction per nodule from one branch of the Siamese net; each
crop is the nodule's largest slice (the shared export holds one slice per nodule), whereas the paper averages over
all of a nodule's slices.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cadx.config import ExperimentConfig, config_from_dict, load_config
from cadx.errors import CadxConfigError
from cadx.utils import read_json

__all__ = ["VARIANTS", "main", "run_mtmr_tables", "variant_config"]

#: variant → display name (Table II rows).
VARIANTS: dict[str, str] = {
    "mtmr": "MTMR-Net",
    "no_rank": "MTMR-Net w/o L_rank",
    "no_reg": "MTMR-Net w/o L_reg (no attribute branch)",
}


def _name(entry: Any) -> str:
    """The loss of an objective entry (``{name: w}`` or ``{part: {"loss": name, ...}}``)."""
    return str(entry.get("loss")) if isinstance(entry, dict) and "loss" in entry else ""


def variant_config(cfg: ExperimentConfig, variant: str) -> ExperimentConfig:
    """``cfg`` for one of :data:`VARIANTS` (``mtmr`` returns an equal copy)."""
    if variant not in VARIANTS:
        raise CadxConfigError(f"unknown MTMR variant {variant!r}; choose from {sorted(VARIANTS)}")
    d = cfg.to_dict()
    drop = {"no_rank": "margin_ranking", "no_reg": "attribute_mse"}.get(variant)
    if drop is not None:
        obj = {k: v for k, v in d["objective"].items() if k != drop and _name(v) != drop}
        if len(obj) == len(d["objective"]):
            raise CadxConfigError(f"variant {variant}: the objective has no {drop!r} term to remove")
        d["objective"] = obj
        d["name"] = f"{cfg.name}_{variant}"
    if variant == "no_rank":
        d["pairs"] = "none"
    if variant == "no_reg":
        d["model"]["kwargs"] = {**d["model"]["kwargs"], "attribute_branch": False}
    return config_from_dict(d, source=f"<{variant}>", defaults=False)


def _run_variant(cfg: ExperimentConfig, out_dir: Path, splits_from: Path | None) -> dict[str, Any]:
    from cadx.runs.cv import run_cv
    from cadx.runs.folder import finished_run

    out_dir.mkdir(parents=True, exist_ok=True)
    if finished_run(cfg, out_dir):
        return read_json(out_dir / "metrics.json")
    if splits_from is not None and not (out_dir / "splits.json").is_file():
        shutil.copyfile(splits_from, out_dir / "splits.json")
    return run_cv(cfg, out_dir, resume=True)


def run_mtmr_tables(config: str | Path | ExperimentConfig, out_dir: str | Path, overrides: Sequence[str] = (),
                    variants: Sequence[str] = tuple(VARIANTS), regressors: bool = True) -> dict[str, Any]:
    """Run the study into ``out_dir`` (resumable: finished variants are reused) and return its metrics dict.

    ``config``: an MTMR experiment config (path or object; ``overrides`` = ``--set`` items apply to a path).
    ``variants``: which of :data:`VARIANTS` to run (``mtmr`` is required for Tables III/IV and the figures).
    ``regressors``: fit the LASSO/elastic-net baselines of Table III (the slow part after training).
    """
    from cadx.studies.mtmr.tables import build_study_outputs

    t0 = time.perf_counter()
    cfg = config if isinstance(config, ExperimentConfig) else load_config(config, list(overrides))
    if "mtmr" not in variants:
        raise CadxConfigError("variants must include 'mtmr'")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    splits_from: Path | None = None
    for v in ["mtmr", *[v for v in variants if v != "mtmr"]]:
        tv = time.perf_counter()
        results[v] = _run_variant(variant_config(cfg, v), out / v, splits_from)
        seconds[v] = float(results[v].get("run", {}).get("seconds", round(time.perf_counter() - tv, 2)))
        splits_from = out / "mtmr" / "splits.json"
    return build_study_outputs(cfg, out, results, seconds, regressors=regressors, t0=t0)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m cadx.studies.mtmr.study CONFIG OUT [--set k=v ...] [--variants mtmr,no_rank] [--no-regressors]
    [--threads N]``."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="cadx study mtmr", description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("out")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--no-regressors", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default); 1 is much faster "
                   "on a busy 2-core machine")
    a = p.parse_args(argv)
    if a.threads > 0:
        import torch

        torch.set_num_threads(a.threads)
    m = run_mtmr_tables(a.config, a.out, a.overrides, [v for v in a.variants.split(",") if v],
                        regressors=not a.no_regressors)
    print(json.dumps(m["study"]["table2"], indent=1))


if __name__ == "__main__":
    main()
