"""Shared fixtures: where ../shared/data is, and a skip marker for tests that need it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import helpers  # noqa: F401  (registers the tiny test model and dataset)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CADX_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data; skips the test when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p}")
    return p


def pytest_configure(config: pytest.Config) -> None:
    """Markers registered here (pyproject's list is for the whole project; ``--strict-markers`` is on)."""
    config.addinivalue_line("markers", "browser: drives Debian's Chromium through Playwright (skipped without it)")


@pytest.fixture(autouse=True, scope="session")
def _item_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The item cache (cadx.pipeline.item_cache) of the whole session: a temporary folder, never the user's."""
    old = os.environ.get("CADX_ITEM_CACHE_DIR")
    path = tmp_path_factory.mktemp("item_cache")
    os.environ["CADX_ITEM_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("CADX_ITEM_CACHE_DIR", None)
    else:
        os.environ["CADX_ITEM_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_path()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """The tests' tiny models run fastest single-threaded (and CI shares its 2 cores); restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def n_params(m: Any) -> int:
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in m.parameters())
