"""Declarative point systems (thesis A.7: ACR / AI TI-RADS) and their pure scorer.

A system is a YAML file (schema below; built-ins ``acr`` and ``ai`` ship in ``cadx/classical/systems``):

```yaml
name: ACR TI-RADS
bounds: [0, 3]                      # optional default optimiser bounds of every feature
categories:
  - name: composition
    rule: choose_one                # exactly one feature per nodule
    features:
      - {name: cystic, points: 0, fixed: true, aliases: ["cystic or almost completely cystic"]}
      - {name: solid, points: 2, bounds: [0, 3]}
  - name: echogenic_foci
    rule: choose_all                # any number of features; their points are summed (each counted once)
    features:
      - {name: none, points: 0, exclusive: true}   # may not be combined with another feature
      - {name: punctate, points: 3}
zero_total_if:                      # a nodule with any of these gets 0 total points (ACR: cystic, spongiform)
  - {category: composition, feature: cystic}
levels:                             # ascending min_points; a total below the first min_points is the first level
  - {name: TR1, min_points: 0, fna_mm: null, follow_up_mm: null}
  - {name: TR3, min_points: 3, fna_mm: 25, follow_up_mm: 15}   # FNA if size >= 25 mm, else follow-up if >= 15 mm
```

Feature and category names match case-insensitively, with ``-``, ``/`` and spaces equivalent to ``_``; aliases
likewise. Points are integers. Every problem in a file is one :class:`~cadx.errors.CadxDataError` naming the file
and the field (``categories[1].features[2].points``).

Scoring works on a *design matrix* ``X`` ``(N, F)``: ``X[i, f]`` = 1 when nodule ``i`` has feature ``f`` (0/1),
with the rows of ``zero_total_if`` nodules set to 0, so ``total = X @ points`` for any point vector of length
``F`` (the GA scores candidates this way). :func:`design_matrix` builds it from a table (one column per category:
a feature name, or for choose-all categories a ``;``-separated list; or one 0/1 column ``<category>__<feature>``
per feature of a choose-all category); a bad cell is one error naming the row, the column and the allowed values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from cadx.errors import CadxDataError

__all__ = [
    "BUILTIN_SYSTEMS", "Category", "Feature", "Level", "PointSystem", "ProportionTest", "design_matrix", "level_of",
    "load_system", "mcnemar_exact", "norm", "parse_system", "reclassification_table", "recommend", "system_to_dict",
    "totals", "two_proportion_test",
]

#: Built-in systems: short name → YAML file in ``cadx/classical/systems``.
BUILTIN_SYSTEMS: dict[str, str] = {"acr": "acr_tirads.yaml", "ai": "ai_tirads.yaml"}
RULES = ("choose_one", "choose_all")
RECOMMENDATIONS = ("FNA", "follow-up", "none")


def norm(text: Any) -> str:
    """Canonical form of a name: lower case, ``-``/``/``/spaces → ``_``, runs of ``_`` collapsed, stripped."""
    return re.sub(r"_+", "_", re.sub(r"[\s/\-]+", "_", str(text).strip().lower())).strip("_")


@dataclass(frozen=True)
class Feature:
    """One lexicon feature: ``points`` (int), optimiser ``bounds`` ``(lo, hi)``, ``fixed`` (not optimised),
    ``exclusive`` (choose-all only: may not be combined with another feature, e.g. ``none``), ``aliases``."""

    name: str
    points: int
    bounds: tuple[int, int]
    fixed: bool = False
    exclusive: bool = False
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Category:
    """A lexicon category: ``rule`` ``choose_one`` | ``choose_all`` and its features (in file order)."""

    name: str
    rule: str
    features: tuple[Feature, ...]

    def lookup(self) -> dict[str, int]:
        """Normalised name or alias → feature index within the category."""
        out: dict[str, int] = {}
        for i, f in enumerate(self.features):
            for n in (f.name, *f.aliases):
                out[norm(n)] = i
        return out


@dataclass(frozen=True)
class Level:
    """A risk level: totals ``>= min_points`` (up to the next level); FNA if size ``>= fna_mm``, else follow-up
    if size ``>= follow_up_mm`` (``None`` = never)."""

    name: str
    min_points: int
    fna_mm: float | None = None
    follow_up_mm: float | None = None


@dataclass(frozen=True)
class PointSystem:
    """A parsed point system (see the module docstring for the YAML). ``source`` = the file it came from."""

    name: str
    categories: tuple[Category, ...]
    levels: tuple[Level, ...]
    zero_total_if: tuple[tuple[str, str], ...] = ()
    description: str = ""
    source: str = "<system>"
    default_bounds: tuple[int, int] | None = None

    @property
    def feature_keys(self) -> list[tuple[str, str]]:
        """``(category, feature)`` of every design-matrix column, in order (length F)."""
        return [(c.name, f.name) for c in self.categories for f in c.features]

    @property
    def features(self) -> list[Feature]:
        return [f for c in self.categories for f in c.features]

    @property
    def points(self) -> NDArray[np.int64]:
        """``(F,)`` the system's points."""
        return np.array([f.points for f in self.features], dtype=np.int64)

    @property
    def bounds(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """``(low, high)`` each ``(F,)``: the optimiser's inclusive bounds."""
        fs = self.features
        return (np.array([f.bounds[0] for f in fs], dtype=np.int64),
                np.array([f.bounds[1] for f in fs], dtype=np.int64))

    @property
    def fixed(self) -> NDArray[np.bool_]:
        """``(F,)`` True where the feature is not optimised."""
        return np.array([f.fixed for f in self.features], dtype=bool)

    def column_names(self) -> list[str]:
        """``category:feature`` of every design-matrix column."""
        return [f"{c}:{f}" for c, f in self.feature_keys]

    def with_points(self, points: ArrayLike, name: str | None = None) -> PointSystem:
        """A copy with ``points`` ``(F,)`` (integers) replacing the features' points."""
        p = np.asarray(points)
        if p.shape != (len(self.features),):
            raise ValueError(f"points must have shape ({len(self.features)},), got {p.shape}")
        it = iter(int(v) for v in p)
        cats = tuple(replace(c, features=tuple(replace(f, points=next(it)) for f in c.features))
                     for c in self.categories)
        return replace(self, categories=cats, name=name or self.name)


# --- parsing -----------------------------------------------------------------------------------------------

def _err(src: str, fld: str, msg: str) -> CadxDataError:
    return CadxDataError(msg, path=src, field=fld)


def _int(v: Any, src: str, fld: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not v.is_integer()):
        raise _err(src, fld, f"expected an integer, got {v!r}")
    return int(v)


def _size(v: Any, src: str, fld: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
        raise _err(src, fld, f"expected a size in mm >= 0 or null, got {v!r}")
    return float(v)


def _bounds(v: Any, src: str, fld: str) -> tuple[int, int]:
    if not isinstance(v, list | tuple) or len(v) != 2:
        raise _err(src, fld, f"expected [low, high], got {v!r}")
    lo, hi = _int(v[0], src, f"{fld}[0]"), _int(v[1], src, f"{fld}[1]")
    if lo > hi:
        raise _err(src, fld, f"low {lo} > high {hi}")
    return lo, hi


def _keys(d: Mapping[str, Any], allowed: set[str], required: set[str], src: str, fld: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise _err(src, f"{fld}.{extra[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(d))
    if missing:
        raise _err(src, f"{fld}.{missing[0]}", "required key is missing")


def parse_system(data: Any, source: str = "<system>") -> PointSystem:
    """Validate a system dict (the parsed YAML) into a :class:`PointSystem`; one error naming ``source`` and the
    field on any problem (unknown key, non-integer points, duplicate names, a feature's points outside its
    bounds, a fixed feature, levels not ascending, unknown ``zero_total_if`` features)."""
    src = str(source)
    if not isinstance(data, Mapping):
        raise _err(src, "system", "a system must be a mapping with name, categories and levels")
    _keys(data, {"name", "description", "bounds", "categories", "levels", "zero_total_if"},
          {"name", "categories", "levels"}, src, "system")
    default_bounds = _bounds(data["bounds"], src, "bounds") if data.get("bounds") is not None else None
    cats_raw = data["categories"]
    if not isinstance(cats_raw, list) or not cats_raw:
        raise _err(src, "categories", "expected a non-empty list of categories")
    cats: list[Category] = []
    for ci, c in enumerate(cats_raw):
        cf = f"categories[{ci}]"
        if not isinstance(c, Mapping):
            raise _err(src, cf, "expected a mapping with name, rule and features")
        _keys(c, {"name", "rule", "features"}, {"name", "rule", "features"}, src, cf)
        rule = norm(c["rule"])
        if rule not in RULES:
            raise _err(src, f"{cf}.rule", f"expected one of {', '.join(RULES)}, got {c['rule']!r}")
        feats_raw = c["features"]
        if not isinstance(feats_raw, list) or not feats_raw:
            raise _err(src, f"{cf}.features", "expected a non-empty list of features")
        feats: list[Feature] = []
        for fi, f in enumerate(feats_raw):
            ff = f"{cf}.features[{fi}]"
            if not isinstance(f, Mapping):
                raise _err(src, ff, "expected a mapping with name and points")
            _keys(f, {"name", "points", "bounds", "fixed", "exclusive", "aliases"}, {"name", "points"}, src, ff)
            pts = _int(f["points"], src, f"{ff}.points")
            if f.get("bounds") is not None:
                b = _bounds(f["bounds"], src, f"{ff}.bounds")
            elif default_bounds is not None:
                b = default_bounds
            else:
                b = (pts, pts)
            fixed = bool(f.get("fixed", False))
            if not fixed and not b[0] <= pts <= b[1]:
                raise _err(src, f"{ff}.points", f"{pts} is outside the bounds [{b[0]}, {b[1]}]")
            if f.get("exclusive") and rule != "choose_all":
                raise _err(src, f"{ff}.exclusive", "only features of a choose_all category can be exclusive")
            aliases = f.get("aliases") or []
            if not isinstance(aliases, list):
                raise _err(src, f"{ff}.aliases", f"expected a list of names, got {aliases!r}")
            feats.append(Feature(norm(f["name"]), pts, b, fixed, bool(f.get("exclusive", False)),
                                 tuple(str(a) for a in aliases)))
        cat = Category(norm(c["name"]), rule, tuple(feats))
        seen: dict[str, int] = {}
        for fi, fe in enumerate(cat.features):
            for n in (fe.name, *fe.aliases):
                k = norm(n)
                if k in seen and seen[k] != fi:
                    raise _err(src, f"{cf}.features[{fi}]", f"name or alias {n!r} is used twice in the category")
                seen[k] = fi
        cats.append(cat)
    names = [c.name for c in cats]
    for ci, n in enumerate(names):
        if names.index(n) != ci:
            raise _err(src, f"categories[{ci}].name", f"category {n!r} is defined twice")
    by_name = {c.name: c for c in cats}
    zeros: list[tuple[str, str]] = []
    for zi, z in enumerate(data.get("zero_total_if") or []):
        zf = f"zero_total_if[{zi}]"
        if not isinstance(z, Mapping):
            raise _err(src, zf, "expected {category: ..., feature: ...}")
        _keys(z, {"category", "feature"}, {"category", "feature"}, src, zf)
        cat_ = by_name.get(norm(z["category"]))
        if cat_ is None:
            raise _err(src, f"{zf}.category", f"unknown category {z['category']!r}; categories: {', '.join(names)}")
        fidx = cat_.lookup().get(norm(z["feature"]))
        if fidx is None:
            raise _err(src, f"{zf}.feature", f"unknown feature {z['feature']!r} of {cat_.name}")
        zeros.append((cat_.name, cat_.features[fidx].name))
    lv_raw = data["levels"]
    if not isinstance(lv_raw, list) or not lv_raw:
        raise _err(src, "levels", "expected a non-empty list of levels")
    levels: list[Level] = []
    for li, lv in enumerate(lv_raw):
        lf = f"levels[{li}]"
        if not isinstance(lv, Mapping):
            raise _err(src, lf, "expected a mapping with name and min_points")
        _keys(lv, {"name", "min_points", "fna_mm", "follow_up_mm"}, {"name", "min_points"}, src, lf)
        level = Level(str(lv["name"]), _int(lv["min_points"], src, f"{lf}.min_points"),
                      _size(lv.get("fna_mm"), src, f"{lf}.fna_mm"),
                      _size(lv.get("follow_up_mm"), src, f"{lf}.follow_up_mm"))
        if levels and level.min_points <= levels[-1].min_points:
            raise _err(src, f"{lf}.min_points", f"{level.min_points} is not above the previous level's "
                                                f"{levels[-1].min_points} (levels must ascend)")
        if any(level.name == p.name for p in levels):
            raise _err(src, f"{lf}.name", f"level {level.name!r} is defined twice")
        levels.append(level)
    return PointSystem(str(data["name"]), tuple(cats), tuple(levels), tuple(zeros),
                       str(data.get("description", "")), src, default_bounds)


def load_system(spec: str | Path) -> PointSystem:
    """A built-in system by short name (``acr``, ``ai``; see :data:`BUILTIN_SYSTEMS`) or a YAML file path."""
    key = str(spec).strip().lower()
    if key in BUILTIN_SYSTEMS:
        ref = resources.files("cadx.classical") / "systems" / BUILTIN_SYSTEMS[key]
        return parse_system(yaml.safe_load(ref.read_text(encoding="utf-8")), f"cadx:{BUILTIN_SYSTEMS[key]}")
    path = Path(spec)
    if not path.is_file():
        raise CadxDataError(f"no such system file (built-ins: {', '.join(BUILTIN_SYSTEMS)})", path=path,
                            field="system")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise CadxDataError(f"not valid YAML: {e}", path=path, field="system") from None
    return parse_system(data, str(path))


def system_to_dict(system: PointSystem) -> dict[str, Any]:
    """The YAML dict of ``system`` (round-trips through :func:`parse_system`)."""
    def feat(f: Feature) -> dict[str, Any]:
        d: dict[str, Any] = {"name": f.name, "points": f.points, "bounds": list(f.bounds)}
        if f.fixed:
            d["fixed"] = True
        if f.exclusive:
            d["exclusive"] = True
        if f.aliases:
            d["aliases"] = list(f.aliases)
        return d
    return {
        "name": system.name, "description": system.description,
        "categories": [{"name": c.name, "rule": c.rule, "features": [feat(f) for f in c.features]}
                       for c in system.categories],
        "zero_total_if": [{"category": c, "feature": f} for c, f in system.zero_total_if],
        "levels": [{"name": lv.name, "min_points": lv.min_points, "fna_mm": lv.fna_mm,
                    "follow_up_mm": lv.follow_up_mm} for lv in system.levels],
    }


# --- scoring -----------------------------------------------------------------------------------------------

def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _flag(v: Any, src: str, row: int, col: str) -> bool:
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("1", "1.0", "true", "yes"):
            return True
        if s in ("0", "0.0", "false", "no"):
            return False
    elif isinstance(v, bool | int | float | np.integer | np.floating) and not _is_missing(v) and float(v) in (0, 1):
        return bool(v)
    raise CadxDataError(f"row {row}: {v!r} is not a 0/1 flag", path=src, field=col)


def design_matrix(table: pd.DataFrame, system: PointSystem, source: str = "<table>") -> NDArray[np.float64]:
    """``(N, F)`` 0/1 design matrix of ``table``'s N rows for ``system`` (column order :attr:`feature_keys`).

    Columns are matched case-insensitively to category names (``Composition`` → ``composition``). A
    choose-one cell holds one feature name or alias; a choose-all cell a ``;``-separated list (``punctate;
    macrocalcifications``; each feature counted once), or the category has one 0/1 column per feature named
    ``<category>__<feature>`` (all of them). Missing/unknown values, an exclusive feature combined with another,
    an empty choose-all selection, a missing column: one :class:`CadxDataError` naming ``source``, the row
    (1-based data row) and column, and the allowed values. Rows hit by ``zero_total_if`` are all zero.
    """
    cols = {norm(c): c for c in table.columns}
    n = len(table)
    blocks: list[NDArray[np.float64]] = []
    zero = np.zeros(n, dtype=bool)
    for cat in system.categories:
        look = cat.lookup()
        allowed = ", ".join(f.name for f in cat.features)
        block = np.zeros((n, len(cat.features)))
        flag_cols = [cols.get(norm(f"{cat.name}__{f.name}")) for f in cat.features]
        if cat.name in cols:
            col = cols[cat.name]
            for i, v in enumerate(table[col].tolist()):
                if _is_missing(v):
                    raise CadxDataError(f"row {i + 1}: empty cell; allowed: {allowed}", path=source, field=col)
                parts = [str(v)] if cat.rule == "choose_one" else [p for p in str(v).split(";") if p.strip()]
                if cat.rule == "choose_all" and not parts:
                    raise CadxDataError(f"row {i + 1}: empty selection; allowed: {allowed}", path=source, field=col)
                for p in parts:
                    j = look.get(norm(p))
                    if j is None:
                        raise CadxDataError(f"row {i + 1}: unknown value {p.strip()!r}; allowed: {allowed}",
                                            path=source, field=col)
                    block[i, j] = 1.0
        elif cat.rule == "choose_all" and any(c is not None for c in flag_cols):
            missing = [f"{cat.name}__{f.name}" for f, c in zip(cat.features, flag_cols, strict=True) if c is None]
            if missing:
                raise CadxDataError(f"0/1 columns of choose-all category {cat.name!r} are incomplete; missing: "
                                    f"{', '.join(missing)}", path=source, field=missing[0])
            for j, c in enumerate(flag_cols):
                assert c is not None
                block[:, j] = [_flag(v, source, i + 1, c) for i, v in enumerate(table[c].tolist())]
            empty = np.flatnonzero(block.sum(1) == 0)
            if empty.size:
                raise CadxDataError(f"row {empty[0] + 1}: no feature flagged; allowed: {allowed}", path=source,
                                    field=cat.name)
        else:
            extra = f" or one 0/1 column {cat.name}__<feature> per feature" if cat.rule == "choose_all" else ""
            raise CadxDataError(f"missing column {cat.name!r}{extra}; columns: {', '.join(map(str, table.columns))}",
                                path=source, field=cat.name)
        for j, f in enumerate(cat.features):
            if f.exclusive:
                bad = np.flatnonzero((block[:, j] > 0) & (block.sum(1) > 1))
                if bad.size:
                    raise CadxDataError(f"row {bad[0] + 1}: {f.name!r} cannot be combined with another feature",
                                        path=source, field=cols.get(cat.name, cat.name))
            if (cat.name, f.name) in system.zero_total_if:
                zero |= block[:, j] > 0
        blocks.append(block)
    X = np.concatenate(blocks, axis=1)
    X[zero] = 0.0
    return X


def totals(X: ArrayLike, points: ArrayLike) -> NDArray[np.int64]:
    """``(N,)`` total points ``X @ points`` of a design matrix ``(N, F)`` and points ``(F,)`` (or ``(P, F)`` →
    ``(P, N)``, one row per candidate)."""
    return np.rint(np.asarray(points, dtype=np.float64) @ np.asarray(X, dtype=np.float64).T).astype(np.int64)


def level_of(total: ArrayLike, system: PointSystem) -> NDArray[np.int64]:
    """``(N,)`` level index (0 = the first level) of each total: the last level whose ``min_points <= total``;
    totals below the first level's ``min_points`` are the first level."""
    mins = np.array([lv.min_points for lv in system.levels])
    idx = np.searchsorted(mins, np.asarray(total), side="right") - 1
    return np.clip(idx, 0, len(mins) - 1).astype(np.int64)


def recommend(level: ArrayLike, system: PointSystem, size_mm: ArrayLike | None = None) -> NDArray[np.str_]:
    """``(N,)`` ``"FNA"`` / ``"follow-up"`` / ``"none"`` from level indices and maximum sizes (mm).

    FNA when the level has an ``fna_mm`` and ``size >= fna_mm``; else follow-up when it has a ``follow_up_mm``
    and ``size >= follow_up_mm``; else none. ``size_mm=None`` (sizes unknown) means every nodule meets every
    threshold: FNA exactly when the level has an FNA rule (the choice documented in docs/points.md).
    NaN sizes raise ValueError (the caller names the row).
    """
    lv = np.asarray(level, dtype=np.int64)
    size = np.full(lv.shape, np.inf) if size_mm is None else np.asarray(size_mm, dtype=np.float64)
    if size.shape != lv.shape:
        raise ValueError(f"size_mm {size.shape} and level {lv.shape} differ in shape")
    if np.isnan(size).any():
        raise ValueError("size_mm holds NaN")
    fna = np.array([np.nan if x.fna_mm is None else x.fna_mm for x in system.levels])[lv]
    fu = np.array([np.nan if x.follow_up_mm is None else x.follow_up_mm for x in system.levels])[lv]
    is_fna = ~np.isnan(fna) & (size >= np.nan_to_num(fna))
    is_fu = ~np.isnan(fu) & (size >= np.nan_to_num(fu))
    return np.where(is_fna, "FNA", np.where(is_fu, "follow-up", "none"))


def reclassification_table(level_a: ArrayLike, level_b: ArrayLike, names: Sequence[str]) -> pd.DataFrame:
    """Counts of nodules by level under system A (rows) and B (columns), labelled ``names`` (all levels shown)."""
    a, b = np.asarray(level_a), np.asarray(level_b)
    k = len(names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (a, b), 1)
    return pd.DataFrame(cm, index=pd.Index(list(names), name="baseline"), columns=pd.Index(list(names), name="new"))


# --- the paper's tests -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProportionTest:
    """Result of a two-proportion test: the proportions, the statistic and the two-sided p-value."""

    p1: float
    p2: float
    statistic: float
    pvalue: float
    method: str
    extra: dict[str, Any] = field(default_factory=dict)


def two_proportion_test(x1: int, n1: int, x2: int, n2: int, correction: bool = True) -> ProportionTest:
    """Test for a difference between two binomial proportions ``x1/n1`` vs ``x2/n2`` (A.7 "a test for
    differences between two binomial proportions", done in R): R's ``prop.test`` — Pearson's chi-square on the
    2×2 table (scipy ``chi2_contingency``), Yates-corrected when ``correction`` (R's default). This test treats
    the two proportions as independent samples; when they come from the *same* nodules see :func:`mcnemar_exact`.
    """
    if not (0 <= x1 <= n1 and 0 <= x2 <= n2 and n1 > 0 and n2 > 0):
        raise ValueError(f"need 0 <= x <= n and n > 0, got {x1}/{n1} and {x2}/{n2}")
    table = np.array([[x1, n1 - x1], [x2, n2 - x2]])
    if (table.sum(0) == 0).any():
        return ProportionTest(x1 / n1, x2 / n2, 0.0, 1.0, "prop.test (chi-square)")
    chi2, p, _, _ = stats.chi2_contingency(table, correction=correction)
    return ProportionTest(x1 / n1, x2 / n2, float(chi2), float(p),
                          "prop.test (chi-square, Yates)" if correction else "prop.test (chi-square)")


def mcnemar_exact(a_only: int, b_only: int) -> ProportionTest:
    """Exact McNemar test of paired proportions on the same cases: ``a_only`` cases positive under A only and
    ``b_only`` under B only (the discordant pairs); p = two-sided binomial test of ``a_only`` of the discordant
    ones at 1/2 (scipy ``binomtest``). No discordant pairs → p = 1."""
    n = a_only + b_only
    if n == 0:
        return ProportionTest(float("nan"), float("nan"), 0.0, 1.0, "exact McNemar")
    p = stats.binomtest(a_only, n, 0.5).pvalue
    return ProportionTest(a_only / n, b_only / n, float(a_only), float(p), "exact McNemar",
                          {"a_only": a_only, "b_only": b_only})
