"""Atomic writes: whole files or nothing, ordinary permissions, JSON with numpy values and NaN → null."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from cadx.utils import atomic_write_json, atomic_write_text


def test_atomic_write_json_content_and_mode(tmp_path: Path) -> None:
    p = atomic_write_json(tmp_path / "sub" / "m.json", {"a": np.float32(0.5), "n": np.int64(3), "x": float("nan"),
                                                        "v": np.arange(3)})
    assert json.loads(p.read_text()) == {"a": 0.5, "n": 3, "x": None, "v": [0, 1, 2]}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0o600
    assert [f.name for f in p.parent.iterdir()] == ["m.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    p = atomic_write_text(tmp_path / "r.txt", "old")
    with pytest.raises(TypeError):
        atomic_write_json(p, {"bad": object()})
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["r.txt"]


def test_progress_goes_to_stderr_not_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    from cadx.data import Cohort, LazyImage, Study

    cohort = Cohort([Study(f"s{i}", f"p{i}", {"image": LazyImage.from_array(np.full((1, 4, 4), i, np.float32))},
                           label="a") for i in range(3)])
    fp = cohort.fingerprint(progress=True)
    assert fp["studies"] == 3 and fp["intensity"]["p50"] == 1.0
    assert capsys.readouterr().out == ""  # `--json` output on stdout stays parseable
