"""How cadx words a prediction for a reader, in the worklist and viewer (``cadx serve``) and in the DICOM SR
(``cadx export-dicom``): never a bare class name, always the model probability and what the run's
cross-validation says about its operating point (a pure function of numbers, tested by hand).

Choices where the issue leaves room (stated here and in docs/serve.md):

* Binary runs: the *risk* shown and sorted on is the probability of the run's positive class (``eval.positive``;
  default the second class — cadx's pooled ``sensitivity`` is that class's). A study predicted positive is worded
  with the run's CV sensitivity and its patient-bootstrap 95 % CI; one predicted negative with the CV specificity
  (the negative class's sensitivity) and its CI: the figure that says how often the run is right about such studies.
* More than two classes: the probability is that of the predicted class and the figure is that class's CV
  sensitivity (recall) from ``per_class``, which has no CI in metrics.json (the text says "no CI").
* A run without CV figures (no ``pooled`` metrics): the text says so instead of inventing one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CvFigures", "cv_figures", "risk_probability", "wording"]


@dataclass(frozen=True)
class CvFigures:
    """A run's pooled out-of-fold figures: ``sensitivity``/``specificity`` of the positive class with their CIs
    (``(lo, hi)`` or None), per-class recall, the number of studies and the decision rule."""

    classes: tuple[str, ...]
    positive: str | None = None
    sensitivity: float | None = None
    sensitivity_ci: tuple[float, float] | None = None
    specificity: float | None = None
    specificity_ci: tuple[float, float] | None = None
    recall: Mapping[str, float] = field(default_factory=dict)
    n_studies: int | None = None
    rule: str = ""


def _ci(v: Any) -> tuple[float, float] | None:
    if isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int | float) for x in v):
        return float(v[0]), float(v[1])
    return None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and v == v else None


def cv_figures(metrics: Mapping[str, Any], classes: Sequence[str], positive: str | None = None) -> CvFigures:
    """:class:`CvFigures` from a run's ``metrics.json`` (``pooled``: sensitivity, specificity, ``ci``,
    ``per_class``, n_studies; ``decision.rule``). ``positive``: the binary positive class (default the second).
    Missing parts stay None/empty."""
    pooled = metrics.get("pooled") or {}
    ci = pooled.get("ci") or {}
    per = pooled.get("per_class") or {}
    recall = {str(c): float(v["sensitivity"]) for c, v in per.items()
              if isinstance(v, dict) and _num(v.get("sensitivity")) is not None}
    n = pooled.get("n_studies", metrics.get("n_studies"))
    names = tuple(str(c) for c in classes)
    pos = positive if positive is not None else (names[1] if len(names) == 2 else None)
    return CvFigures(names, pos, _num(pooled.get("sensitivity")), _ci(ci.get("sensitivity")),
                     _num(pooled.get("specificity")), _ci(ci.get("specificity")), recall,
                     int(n) if isinstance(n, int | float) else None,
                     str((metrics.get("decision") or {}).get("rule") or ""))


def risk_probability(probabilities: Mapping[str, float], classes: Sequence[str], predicted: str,
                     positive: str | None = None) -> float:
    """The probability the worklist shows and sorts by: binary → P(``positive``, default the second class);
    otherwise P(``predicted``). Raises KeyError when that class has no probability."""
    if len(classes) == 2:
        return float(probabilities[positive if positive is not None else classes[1]])
    return float(probabilities[predicted])


def _fmt_ci(v: float, ci: tuple[float, float] | None) -> str:
    return f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci is not None else f"{v:.2f} (no CI)"


def wording(predicted: str, probabilities: Mapping[str, float], cv: CvFigures) -> str:
    """One line for a reader, e.g. ``"malignant — model probability 0.82 (CV sensitivity 0.71 [0.60, 0.80] at
    this run's operating point, 120 studies)"``; a negative binary call:
    ``"benign — model probability of malignant 0.18 (CV specificity 0.77 [0.67, 0.86] at this run's operating
    point, 120 studies)"``. ``predicted`` must be one of ``cv.classes`` (ValueError otherwise); probabilities
    outside [0, 1] are refused (ValueError)."""
    classes = list(cv.classes)
    if predicted not in classes:
        raise ValueError(f"predicted class {predicted!r} is not one of the run's classes {classes}")
    p = risk_probability(probabilities, classes, predicted, cv.positive)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability {p} outside [0, 1]")
    n = f", {cv.n_studies} studies" if cv.n_studies else ""
    where = f"at this run's operating point{n}"
    if len(classes) == 2:
        pos_class = cv.positive or classes[1]
        positive = predicted == pos_class
        head = (f"{predicted} — model probability {p:.2f}" if positive
                else f"{predicted} — model probability of {pos_class} {p:.2f}")
        figure, ci, name = ((cv.sensitivity, cv.sensitivity_ci, "sensitivity") if positive
                            else (cv.specificity, cv.specificity_ci, "specificity"))
        if figure is None:
            return f"{head} (no cross-validation figures in this run)"
        return f"{head} (CV {name} {_fmt_ci(figure, ci)} {where})"
    head = f"{predicted} — model probability {p:.2f}"
    r = cv.recall.get(predicted)
    if r is None:
        return f"{head} (no cross-validation figures in this run)"
    return f"{head} (CV sensitivity for {predicted} {_fmt_ci(r, None)} {where})"
