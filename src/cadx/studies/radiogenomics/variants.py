"""How the radiogenomics study (thesis A.3 shape features, A.4 transfer) is configured: the study YAML, the 10
pre-specified hypotheses mapped to ``data.csv`` columns, and the segmentation run that supplies automatic masks.

The 10 hypotheses of A.3 (§2.5, chosen from Mazurowski et al. 2017) and the column each is tested on:

======================  ======================  ================================================================
A.3 feature × subtype   ``data.csv`` column     mapping
======================  ======================  ================================================================
BEVR × RNASeq           ``RNASeqCluster``       same clusters (R1–R4 = codes 1–4)
BEVR × miRNA            ``miRNACluster``        same (mi1–mi4)
BEVR × CNC              ``CNCluster``           same (C1–C3)
BEVR × COC              ``COCCluster``          same (coc1–coc3)
MF × RNASeq             ``RNASeqCluster``       same
ASD × IDH/1p19q         ``OncosignCluster``     **proxy, our choice**: the public ``data.csv`` has no IDH/1p19q
                                                column; TCGA's OncoSign classes (OSC1–3) are defined by the same
                                                alterations (IDH mutation with/without 1p/19q co-deletion, IDH
                                                wild type). ``neoplasm_histologic_grade`` (the issue's
                                                suggestion) is WHO grade, a different variable; set ``column``
                                                to it in the YAML to test that instead.
ASD × RNASeq            ``RNASeqCluster``       same
ASD × Methylation       ``MethylationCluster``  same (M1–M5)
ASD × CNC               ``CNCluster``           same
ASD × COC               ``COCCluster``          same
======================  ======================  ================================================================

BEVR enters the tests as ``1/BEVR`` (the tables' variable; the quartile bins and hence the Fisher p-value are the
same for BEVR and 1/BEVR).

Automatic masks come from a segmentation run folder (``cadx cv configs/papers/unet_lgg*.yaml``): its
``fold_<k>/pred_masks.npz`` hold the out-of-fold final masks, keyed ``s<index>`` = the study's position in the
run's cohort (:func:`cadx.runs.folder.load_cohort` of the run's ``config.yaml``). ``segmentation.run`` names that
folder; when it holds no finished run and ``segmentation.config`` names a config, the study runs that CV itself
(:func:`cadx.runs.cv.run_cv`, resumable) into ``segmentation.run`` (default ``<out>/seg_run``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cadx.config import ExperimentConfig, apply_override, load_config, read_yaml
from cadx.errors import CadxConfigError

__all__ = ["DEFAULT_HYPOTHESES", "FEATURES", "Hypothesis", "RadiogenomicsConfig", "SegmentationSource",
           "load_radiogenomics_config", "seg_config"]

Feature = Literal["asd", "inv_bevr", "mf"]
#: feature key → the paper's name (the tables' row labels)
FEATURES: dict[str, str] = {"asd": "ASD", "inv_bevr": "1/BEVR", "mf": "MF"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hypothesis(_Strict):
    """One pre-specified test: ``feature`` (asd | inv_bevr | mf) × ``subtype`` (the paper's name), tested on the
    ``data.csv`` ``column``."""

    feature: Feature
    subtype: str
    column: str

    @property
    def name(self) -> str:
        return f"{FEATURES[self.feature]} × {self.subtype}"


DEFAULT_HYPOTHESES: list[Hypothesis] = [
    Hypothesis(feature="inv_bevr", subtype="RNASeq", column="RNASeqCluster"),
    Hypothesis(feature="inv_bevr", subtype="miRNA", column="miRNACluster"),
    Hypothesis(feature="inv_bevr", subtype="CNC", column="CNCluster"),
    Hypothesis(feature="inv_bevr", subtype="COC", column="COCCluster"),
    Hypothesis(feature="mf", subtype="RNASeq", column="RNASeqCluster"),
    Hypothesis(feature="asd", subtype="IDH/1p19q (OncoSign proxy)", column="OncosignCluster"),
    Hypothesis(feature="asd", subtype="RNASeq", column="RNASeqCluster"),
    Hypothesis(feature="asd", subtype="Methylation", column="MethylationCluster"),
    Hypothesis(feature="asd", subtype="CNC", column="CNCluster"),
    Hypothesis(feature="asd", subtype="COC", column="COCCluster"),
]


class SegmentationSource(_Strict):
    """Where automatic masks come from: ``run`` = a segmentation run folder (None = ``<out>/seg_run`` when
    ``config`` is set, else no automatic masks); ``config`` = a segmentation config to run when ``run`` holds no
    finished run (``overrides``: ``--set`` style ``key=value`` items for it)."""

    run: str | None = None
    config: str | None = None
    overrides: list[str] = Field(default_factory=list)


class RadiogenomicsConfig(_Strict):
    """The study. ``data_root``: the LGG folder (``kaggle_3m`` layout with ``data.csv``); ``hypotheses``
    (default the 10 of A.3) and ``alpha`` (Bonferroni level ``alpha / len(hypotheses)``); ``auc_column`` and
    ``auc_features``: Table 3 (one-vs-rest AUC per cluster of that column) with ``age_column`` and
    ``gender_column``; Fisher settings: exact up to ``fisher_max_nodes``, else ``fisher_samples`` Monte-Carlo
    tables (seeded by ``seed``); ``bootstrap`` patient resamples for the CIs; ``power_simulations`` data sets per
    effect size in the power analysis (0 = skip) with ``power_effects`` (shifts in SD units); ``transfer``: the
    A.4 config for :func:`cadx.studies.radiogenomics.transfer.run_transfer` (None = no A.4 section unless
    ``transfer_results`` names a folder with a finished run's ``metrics.json``, which is then read, not rerun)."""

    name: str = "radiogenomics_lgg"
    data_root: str = "../shared/data/lgg"
    segmentation: SegmentationSource = Field(default_factory=SegmentationSource)
    hypotheses: list[Hypothesis] = Field(default_factory=lambda: list(DEFAULT_HYPOTHESES))
    alpha: float = Field(0.05, gt=0, lt=1)
    auc_column: str = "RNASeqCluster"
    auc_features: list[Feature] = Field(default_factory=lambda: list(FEATURES))  # type: ignore[arg-type]
    age_column: str = "age_at_initial_pathologic"
    gender_column: str = "gender"
    fisher_max_nodes: int = Field(5_000_000, ge=1)
    fisher_samples: int = Field(100_000, ge=100)
    bootstrap: int = Field(2000, ge=0)
    seed: int = 0
    power_simulations: int = Field(200, ge=0)
    power_effects: list[float] = Field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0, 3.0])
    power_fisher_samples: int = Field(2000, ge=100)
    transfer: dict[str, Any] | None = None
    transfer_results: str | None = None


def load_radiogenomics_config(path: str | Path | None, overrides: list[str] | None = None) -> RadiogenomicsConfig:
    """Read the study YAML (None = defaults) with ``--set key=value`` overrides (``segmentation.run=DIR``,
    ``bootstrap=500``); relative paths stay relative to the working directory. Unknown keys or bad values raise
    one-line :class:`CadxConfigError` naming the file and the field."""
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    for item in overrides or []:
        apply_override(data, item)
    src = str(path) if path is not None else "<defaults>"
    try:
        return RadiogenomicsConfig.model_validate(data)
    except ValidationError as e:
        msg = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: "
                        f"{'unknown key' if err['type'] == 'extra_forbidden' else err['msg']}"
                        for err in e.errors()[:5])
        raise CadxConfigError(f"{src}: radiogenomics study: {msg}") from None


def seg_config(cfg: RadiogenomicsConfig) -> ExperimentConfig | None:
    """The segmentation config to run when no finished run folder exists (None when ``segmentation.config`` is
    unset)."""
    if cfg.segmentation.config is None:
        return None
    return load_config(cfg.segmentation.config, list(cfg.segmentation.overrides))
