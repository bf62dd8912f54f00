"""Configuration of the point-system runners and the LIDC study's variants.

:class:`PointsConfig` is the YAML of ``cadx study points-lidc CONFIG`` (also the settings of ``cadx points fit``):
data root, folds, seeds, the GA base parameters and the hyper-parameter grid searched by inner CV, bootstrap
resamples, the logistic-regression C. :data:`VARIANTS` are the three scorers the LIDC study compares in the same
patient folds.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cadx.classical.points_ga import GAParams, grid_from_mapping
from cadx.errors import CadxConfigError

__all__ = ["VARIANTS", "PointsConfig", "lidc_system_path", "load_points_config"]

#: name → what it is (the LIDC study's rows, in table order).
VARIANTS: dict[str, str] = {
    "baseline": "equal points (the system file as written)",
    "ga": "GA-optimised points (inner CV for the GA hyper-parameters, refit on the training folds)",
    "logreg": "logistic regression on the same one-hot features (scikit-learn, L2, C from the config)",
}


_DEFAULT_GRID: dict[str, list[Any]] = {"population": [50, 100], "generations": [25, 50], "indpb": [0.05, 0.1]}


class GAConfig(BaseModel):
    """GA base parameters (:class:`cadx.classical.points_ga.GAParams`)."""

    model_config = ConfigDict(extra="forbid")
    population: int = Field(default=100, ge=2)
    generations: int = Field(default=50, ge=0)
    cxpb: float = Field(default=0.5, ge=0, le=1)
    mutpb: float = Field(default=0.2, ge=0, le=1)
    indpb: float = Field(default=0.05, ge=0, le=1)
    tournsize: int = Field(default=4, ge=1)
    init_indpb: float = Field(default=0.1, ge=0, le=1)


class PointsConfig(BaseModel):
    """``data_root``: LIDC folder (``nodules.csv`` + ``crops.npz``), relative to the working directory;
    ``system``: point-system YAML (None = the packaged ``lidc_system.yaml``); ``folds``/``seed``: outer patient
    folds (:func:`cadx.data.splits.make_splits`); ``inner_folds``: GA hyper-parameter CV on each training part;
    ``ga``: base GA parameters; ``grid``: parameter → values searched (empty = no search);
    ``n_resamples``: bootstrap resamples (patients); ``logreg_c``: inverse L2 strength."""

    model_config = ConfigDict(extra="forbid")
    data_root: str = "../shared/data/lidc"
    system: str | None = None
    folds: int = Field(default=5, ge=2)
    seed: int = 0
    inner_folds: int = Field(default=3, ge=2)
    ga: GAConfig = Field(default_factory=lambda: GAConfig())
    grid: dict[str, list[Any]] = Field(default_factory=lambda: dict(_DEFAULT_GRID))
    n_resamples: int = Field(default=2000, ge=10)
    logreg_c: float = Field(default=1.0, gt=0)

    def ga_grid(self) -> list[GAParams]:
        """The grid of GA parameters (``grid`` over ``ga``)."""
        return grid_from_mapping(self.grid, GAParams(**self.ga.model_dump()))


def lidc_system_path() -> Path:
    """The packaged LIDC point system (``cadx/studies/points/lidc_system.yaml``)."""
    return Path(str(resources.files("cadx.studies.points") / "lidc_system.yaml"))


def load_points_config(path: str | Path | None) -> PointsConfig:
    """Read a :class:`PointsConfig` YAML (None = defaults); errors name the file and the field."""
    if path is None:
        return PointsConfig()
    p = Path(path)
    if not p.is_file():
        raise CadxConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        cfg = PointsConfig.model_validate(data)
        cfg.ga_grid()
        return cfg
    except yaml.YAMLError as e:
        raise CadxConfigError(f"{p}: not valid YAML: {' '.join(str(e).split())}") from None
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise CadxConfigError(f"{p}: {loc}: {first['msg']}") from None
