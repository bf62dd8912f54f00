"""In-memory image with its geometry, and a lazily loaded handle to one.

Convention used everywhere in cadx: ``array`` is channel-first, ``(C, Y, X)`` for 2D and ``(C, Z, Y, X)``
for 3D; ``spacing``/``origin`` are given per spatial axis **in array order** (z, y, x), in mm; ``direction``
is the row-major ``ndim × ndim`` cosine matrix in the same axis order. Readers convert from ITK's
(x, y, z) order so no caller ever has to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cadx.errors import CadxDataError


@dataclass
class ImageData:
    """A channel-first array with spacing, origin and direction (array axis order)."""

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...] | None = None
    direction: tuple[float, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        nsp = self.array.ndim - 1
        if nsp not in (2, 3):
            raise ValueError(f"ImageData needs (C,Y,X) or (C,Z,Y,X), got shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)
        if len(self.spacing) != nsp:
            raise ValueError(f"spacing {self.spacing} does not match {nsp} spatial axes")
        if self.origin is None:
            self.origin = (0.0,) * nsp
        if self.direction is None:
            self.direction = tuple(np.eye(nsp).ravel().tolist())

    @property
    def spatial_ndim(self) -> int:
        return self.array.ndim - 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape[1:])

    @property
    def channels(self) -> int:
        return int(self.array.shape[0])


@dataclass
class LazyImage:
    """A handle that loads an :class:`ImageData` on demand.

    ``source`` names where it comes from (a path, or ``file.npz[key][i]``) for error messages;
    ``cache=True`` keeps the loaded image after the first call.
    """

    loader: Callable[[], ImageData]
    source: str
    cache: bool = False
    _cached: ImageData | None = field(default=None, repr=False, compare=False)

    def load(self) -> ImageData:
        if self._cached is not None:
            return self._cached
        img = self.loader()
        if not isinstance(img, ImageData):
            raise CadxDataError("loader did not return an image", path=self.source, field="image")
        if self.cache:
            self._cached = img
        return img

    @classmethod
    def from_array(cls, array: np.ndarray, spacing: tuple[float, ...] | None = None, source: str = "<array>",
                   **meta: Any) -> LazyImage:
        """Wrap an array already in memory (channel-first) as a lazy image."""
        arr = np.asarray(array)
        sp = spacing if spacing is not None else (1.0,) * (arr.ndim - 1)
        img = ImageData(arr, sp, meta=dict(meta))
        return cls(lambda: img, source)
