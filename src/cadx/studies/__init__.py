"""The paper studies: one subpackage per paper system, each run as ``cadx study <name>``.

Every subpackage has the same shape: ``variants.py`` (how the study derives its configs from one experiment
config, through :func:`cadx.config.derive`), ``study.py`` (runs them through the engine's public functions),
``tables.py`` (its tables, figures and notes, written through :mod:`cadx.report.studies`), and an ``__init__``
exporting ``run``, its config type ``Config`` and ``DESCRIPTION`` (the line below).

:data:`STUDIES` lists them; it imports nothing, so the command line can list the studies without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STUDIES", "StudyInfo"]


@dataclass(frozen=True)
class StudyInfo:
    """A ``cadx study`` command: its ``name``, the subpackage that holds it, a one-line ``description`` and the
    subpackage's function that runs it (``entry``; ``run`` is the study's main one)."""

    name: str
    package: str
    description: str
    entry: str = "run"


STUDIES: dict[str, StudyInfo] = {s.name: s for s in (
    StudyInfo("anatomy", "cadx.studies.anatomy",
              "Khan & Yong 2017 Table II on MedNIST: the anatomy CNN vs LeNet, AlexNet, GoogLeNet on a grouped split."),
    StudyInfo("learning-curve", "cadx.studies.anatomy",
              "Khan & Yong 2017 Fig. 13: test accuracy against training-set size for the anatomy nets.",
              "run_learning_curve"),
    StudyInfo("dmrn", "cadx.studies.dmrn",
              "DMRN (Bi et al.) Tables 2-4: DMRN, its ablation and the baselines in the same folds, t-SNE."),
    StudyInfo("mtmr", "cadx.studies.mtmr",
              "MTMR-Net (Liu et al. 2019) on LIDC-IDRI: ablations, attribute ABE vs regressors and readers, RFE, "
              "t-SNE, cards."),
    StudyInfo("imbalance", "cadx.studies.imbalance",
              "Thesis A.2 class imbalance: grid (step/linear, rho, mu) x methods x seeds; AUC/accuracy plots, "
              "winners."),
    StudyInfo("segmentation", "cadx.studies.segmentation",
              "U-Net (thesis A.3) and SCNet on LGG and BUSI: Dice with CIs, the 2-step SegNet ablation, grouped vs "
              "naive CV."),
    StudyInfo("points-lidc", "cadx.studies.points",
              "Thesis A.7 point systems on LIDC: equal-point baseline vs GA-optimised points vs logistic "
              "regression, patient CV."),
    StudyInfo("anomaly", "cadx.studies.anomaly",
              "Thesis A.9 normal-only inpainting GAN on LGG and BUSI: MSE/critic/DMSE heatmaps, inside/outside box "
              "ratio, AUROC."),
    StudyInfo("calipers", "cadx.studies.calipers",
              "Thesis A.5 on BUSI: caliper detection, approximate masks from calipers, three U-Net modes, learning "
              "curve."),
    StudyInfo("multitask", "cadx.studies.multitask",
              "Thesis A.6 multi-task CNN with categorical feature heads on LIDC: single vs multi-task AUC, readers, "
              "risk levels."),
    StudyInfo("radiogenomics", "cadx.studies.radiogenomics",
              "Thesis A.3/A.4 on LGG: shape features vs genomic subtypes (10 Fisher tests, Table 3 AUCs), Dice, A.4 "
              "transfer."),
    StudyInfo("detection", "cadx.studies.detection",
              "Thesis A.8 lesion detector on LGG and BUSI: FROC sensitivity at 1/2/4/8 FP with CIs, the four "
              "objectness losses."),
)}
