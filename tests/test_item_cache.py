"""The item cache (cadx.pipeline.item_cache, issue #19 item 1): cached stores equal fresh builds, the key follows its
inputs, corrupt entries are rebuilt, ``off`` never touches the disk, stores pickle by path, and a CV run gives the
same predictions with the cache on or off.

One tiny synthetic cohort on disk (8 patients, DICOM + NIfTI) is generated once per module; every test points the
cache at its own temporary folder (the session's is already temporary, see conftest)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import torch

from cadx.config import ExperimentConfig, load_config
from cadx.data.study import Cohort
from cadx.data.synthetic import generate_cohort
from cadx.errors import CadxConfigError
from cadx.pipeline import item_cache
from cadx.pipeline.item_cache import cohort_record, entry_key, open_entry, write_entry
from cadx.pipeline.items import ItemStore, build_store
from cadx.pipeline.seg_items import SegData, build_seg_data
from cadx.runs.cv import run_cv
from cadx.runs.folder import config_diff, load_cohort

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.options={n_patients: 8}", "input.size=16", "train.epochs=1", "train.batch_size=16",
        "train.progress=false", "cv.folds=2", "eval.bootstrap=20", "model.kwargs={width: 4, stem: small}"]
SEG = ["task.segmentation=true", "task.classification=false", "segmentation.tissue_class=false"]


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "data"
    generate_cohort(root, n_patients=8)
    return root


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "items"
    monkeypatch.setenv("CADX_ITEM_CACHE_DIR", str(path))
    return path


def config(root: Path, *sets: str) -> ExperimentConfig:
    return load_config(ROOT / "configs" / "synthetic_resnet18.yaml", [f"data.root={root}", *TINY, *sets])


def same_store(a: ItemStore, b: ItemStore) -> None:
    assert torch.equal(a.images, b.images)
    assert (a.masks is None) == (b.masks is None)
    if a.masks is not None and b.masks is not None:
        assert torch.equal(a.masks, b.masks)
    for f in ("study", "slice_pos", "labels", "attributes", "score"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert (a.classes, a.attribute_names, a.study_ids, a.patient_ids) == (b.classes, b.attribute_names, b.study_ids,
                                                                          b.patient_ids)


def mapped(t: torch.Tensor, path: Path) -> bool:
    """Whether ``t``'s memory lies in a mapping of ``path`` (/proc/self/maps; True where there is no /proc)."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return True
    ptr = t.data_ptr()
    for line in maps.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[5] == str(path.resolve()):
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            if lo <= ptr < hi:
                return True
    return False


def status(store: ItemStore) -> str:
    return str(store.meta["item_cache"]["status"])


# --- equality with a fresh build ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sets", [(), ("task.segmentation=true", "task.attributes=all")], ids=["plain", "masks"])
def test_cached_store_equals_fresh_build(syn_root: Path, cache_dir: Path, sets: tuple[str, ...]) -> None:
    cohort = load_cohort(config(syn_root))
    fresh = build_store(cohort, config(syn_root, "input.cache=off", *sets), progress=False)
    assert status(fresh) == "off" and not cache_dir.exists()
    cfg = config(syn_root, "input.cache=disk", *sets)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "The given NumPy array is not writable"
        written = build_store(cohort, cfg, progress=False)
        hit = build_store(cohort, cfg, progress=False)
    assert status(written) == "written" and status(hit) == "hit"
    assert hit.meta["item_cache"]["key"] == written.meta["item_cache"]["key"]
    assert len(list(cache_dir.iterdir())) == 1
    for store in (written, hit):
        same_store(store, fresh)
        assert mapped(store.images, Path(store.meta["item_cache"]["path"]) / "images.npy")  # not read in
        assert store.images.numpy().flags.writeable  # copy-on-write: torch gets a writable array
    # a write goes to this process's private copy, never to the file
    hit.images[0].fill_(7.0)
    again = build_store(cohort, cfg, progress=False)
    assert status(again) == "hit" and torch.equal(again.images, fresh.images)


def test_cached_seg_data_equals_fresh_build(syn_root: Path, cache_dir: Path) -> None:
    cohort = load_cohort(config(syn_root))
    fresh = build_seg_data(cohort, config(syn_root, "input.cache=off", *SEG))
    cfg = config(syn_root, "input.cache=disk", *SEG)
    for want in ("written", "hit"):
        data = build_seg_data(cohort, cfg)
        assert status(data.store) == want
        same_store(data.store, fresh.store)
        assert len(data.gt) == len(fresh.gt) == len(cohort)
        for g, h in zip(data.gt, fresh.gt, strict=True):
            assert g.dtype == h.dtype == np.bool_ and np.array_equal(g, h)
        np.testing.assert_array_equal(data.tissue, fresh.tissue)
        np.testing.assert_array_equal(data.lesion, fresh.lesion)


# --- the key ------------------------------------------------------------------------------------------------------
def _key(cohort: Cohort, cfg: ExperimentConfig) -> str:
    return str(build_store(cohort, cfg, progress=False).meta["item_cache"]["key"])


def test_key_follows_size_files_and_version(syn_root: Path, cache_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(syn_root, root)
    cfg = config(root, "input.cache=disk")
    base = _key(load_cohort(cfg), cfg)
    assert _key(load_cohort(cfg), cfg) == base  # same inputs, same key
    assert _key(load_cohort(cfg), config(root, "input.cache=disk", "input.augment.enabled=false")) == base
    assert _key(load_cohort(cfg), config(root, "input.cache=disk", "input.size=20")) != base
    mask = sorted((root / "masks").iterdir())[0]
    st = mask.stat()
    os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: new mtime, same bytes
    touched = _key(load_cohort(cfg), cfg)
    assert touched != base
    dcm = next(p for p in sorted((root / "images").rglob("*")) if p.is_file())
    dcm.write_bytes(dcm.read_bytes() + b"\0")  # new content (and size)
    assert _key(load_cohort(cfg), cfg) not in (base, touched)
    monkeypatch.setattr(item_cache, "CACHE_VERSION", item_cache.CACHE_VERSION + 1)
    bumped = _key(load_cohort(cfg), cfg)
    monkeypatch.undo()
    assert bumped != _key(load_cohort(cfg), config(root, "input.cache=disk"))


def test_key_is_the_same_in_another_process(syn_root: Path, cache_dir: Path) -> None:
    cfg = config(syn_root, "input.cache=disk")
    here = _key(load_cohort(cfg), cfg)
    code = ("import sys; sys.path.insert(0, 'tests'); from test_item_cache import config, _key; "
            "from cadx.runs.folder import load_cohort; from pathlib import Path; "
            f"c = config(Path({str(syn_root)!r}), 'input.cache=disk'); print(_key(load_cohort(c), c))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"})
    assert out.stdout.strip().splitlines()[-1] == here


def test_in_memory_cohort_is_not_cached(cache_dir: Path) -> None:
    import helpers

    cfg = helpers.tiny_config("input.cache=disk")
    store = build_store(helpers.tiny_cohort(4), cfg, progress=False)
    rec = store.meta["item_cache"]
    assert rec["status"] == "built" and "not cacheable" in rec["reason"] and "<array>" in rec["reason"]
    assert not cache_dir.exists()


# --- broken entries, races, off, auto -----------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "entry_json", "no_entry_json", "wrong_key"])
def test_corrupt_entry_is_rebuilt(syn_root: Path, cache_dir: Path, damage: str) -> None:
    cfg = config(syn_root, "input.cache=disk")
    cohort = load_cohort(cfg)
    first = build_store(cohort, cfg, progress=False)
    entry = Path(first.meta["item_cache"]["path"])
    fresh = build_store(cohort, config(syn_root, "input.cache=off"), progress=False)
    del first
    if damage == "truncate":
        f = entry / "images.npy"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "entry_json":
        (entry / "entry.json").write_text("{not json")
    elif damage == "no_entry_json":
        (entry / "entry.json").unlink()
    else:
        meta = json.loads((entry / "entry.json").read_text())
        (entry / "entry.json").write_text(json.dumps({**meta, "key": "0" * 64}))
    again = build_store(cohort, cfg, progress=False)
    assert status(again) == "written"  # the damaged entry was discarded, never used
    same_store(again, fresh)
    assert status(build_store(cohort, cfg, progress=False)) == "hit"
    assert [p.name for p in cache_dir.iterdir()] == [entry.name]  # no temporary or trash folder left


def test_concurrent_writers_leave_one_valid_entry(tmp_path: Path) -> None:
    arrays = {"images": np.arange(24, dtype=np.float32).reshape(2, 1, 3, 4), "study": np.arange(2)}
    path, key = tmp_path / "items-abc", "a" * 64
    won: list[bool] = []
    threads = [threading.Thread(target=lambda: won.append(write_entry(path, key, arrays, {}))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False] * 5 + [True]
    got = open_entry(path, key, ("images",))
    assert got is not None and np.array_equal(got[0]["images"], arrays["images"])
    assert [p.name for p in tmp_path.iterdir()] == ["items-abc"]


# --- size cap and eviction ----------------------------------------------------------------------------------------
def _entry(root: Path, name: str, nbytes: int, used: float) -> Path:
    """A complete entry of ``nbytes`` of array data whose last use is ``used`` (epoch seconds)."""
    path = root / name
    assert write_entry(path, name * 2, {"a": np.zeros(nbytes, np.uint8)}, {"kind": "items", "cohort": name})
    os.utime(path / "entry.json", (used, used))
    return path


def test_prune_deletes_least_recently_used_down_to_the_cap(tmp_path: Path) -> None:
    now = 1e9
    old, mid, new = (_entry(tmp_path, n, 10_000, now - age) for n, age in (("old", 3e5), ("mid", 2e5), ("new", 1e5)))
    rows = item_cache.cache_entries(tmp_path)
    assert [r["name"] for r in rows] == ["old", "mid", "new"]  # LRU first
    size = {r["name"]: r["bytes"] for r in rows}  # entry.json's "created" float may differ by a byte or two
    assert size["old"] == sum(f.stat().st_size for f in old.iterdir()) and size["old"] > 10_000
    # cap of the two newest entries: only the least recently used goes
    gone = item_cache.prune(tmp_path, max_bytes=size["mid"] + size["new"], grace=0, now=now)
    assert [r["name"] for r in gone] == ["old"] and not old.exists() and mid.exists() and new.exists()
    # keep and the grace window protect entries whatever the cap
    gone = item_cache.prune(tmp_path, max_bytes=0, keep=(mid,), grace=1.5e5, now=now)
    assert gone == [] and mid.exists() and new.exists()
    gone = item_cache.prune(tmp_path, max_bytes=0, keep=(mid,), grace=0, now=now)
    assert [r["name"] for r in gone] == ["new"] and [p.name for p in tmp_path.iterdir()] == ["mid"]
    # unused for longer than older_than, with no size cap
    assert [r["name"] for r in item_cache.prune(tmp_path, older_than=1.9e5, grace=0, now=now)] == ["mid"]
    assert item_cache.cache_entries(tmp_path) == [] and item_cache.cache_entries(tmp_path / "absent") == []


def test_prune_removes_only_old_incomplete_folders(tmp_path: Path) -> None:
    now = time.time()
    _entry(tmp_path, "ok", 100, now - 10)
    for name, age in ((".tmp-killed", 2 * item_cache.PRUNE_GRACE_SECONDS), (".tmp-writing", 5.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.npy").write_bytes(b"x" * 50)
        os.utime(tmp_path / name, (now - age, now - age))
    rows = {r["name"]: r for r in item_cache.cache_entries(tmp_path)}
    assert not rows[".tmp-killed"]["complete"] and rows["ok"]["complete"]
    gone = item_cache.prune(tmp_path, grace=0, now=now)  # no cap: only the killed writer's folder
    assert [r["name"] for r in gone] == [".tmp-killed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-writing", "ok"]


def test_writes_evict_over_the_cap_and_hits_mark_use(syn_root: Path, cache_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(syn_root, "input.cache=disk")
    cohort = load_cohort(cfg)
    first = build_store(cohort, cfg, progress=False).meta["item_cache"]
    assert first["status"] == "written"
    stale = time.time() - 10 * item_cache.PRUNE_GRACE_SECONDS
    os.utime(Path(first["path"]) / "entry.json", (stale, stale))
    assert status(build_store(cohort, cfg, progress=False)) == "hit"  # a hit marks the entry as used now
    assert (Path(first["path"]) / "entry.json").stat().st_mtime > stale + 1
    os.utime(Path(first["path"]) / "entry.json", (stale, stale))
    monkeypatch.setenv(item_cache.MAX_GB_ENV, "1e-9")  # a cap below one entry: the older one must go
    cfg2 = config(syn_root, "input.cache=disk", "input.size=20")
    second = build_store(cohort, cfg2, progress=False).meta["item_cache"]
    assert second["status"] == "written" and Path(second["path"]).is_dir()  # never the entry just written
    assert not Path(first["path"]).exists()
    monkeypatch.setenv(item_cache.MAX_GB_ENV, "lots")
    with pytest.raises(CadxConfigError, match="CADX_ITEM_CACHE_MAX_GB"):
        item_cache.max_bytes_from_env()
    monkeypatch.setenv(item_cache.MAX_GB_ENV, "0")
    assert item_cache.max_bytes_from_env() is None
    monkeypatch.delenv(item_cache.MAX_GB_ENV)
    assert item_cache.max_bytes_from_env() == int(item_cache.DEFAULT_MAX_GB * 1024**3)


def test_cache_cli_lists_and_prunes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cadx.cli import app

    monkeypatch.setenv("CADX_ITEM_CACHE_DIR", str(tmp_path))
    now = time.time()
    _entry(tmp_path, "aaa", 1000, now - 3 * 86400)
    _entry(tmp_path, "bbb", 1000, now)
    runner = CliRunner()
    res = runner.invoke(app, ["cache", "list"])
    assert res.exit_code == 0 and "2 entries" in res.output and res.output.index("aaa") < res.output.index("bbb")
    res = runner.invoke(app, ["cache", "prune", "--older-than-days", "2"])
    assert res.exit_code == 0 and "deleted 1 entries" in res.output
    assert [p.name for p in tmp_path.iterdir()] == ["bbb"]
    res = runner.invoke(app, ["cache", "prune", "--all"])
    assert res.exit_code == 0 and "deleted 1 entries" in res.output and list(tmp_path.iterdir()) == []


def test_off_never_touches_the_disk(syn_root: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("the cache was consulted")

    monkeypatch.setattr(item_cache, "cohort_record", boom)
    monkeypatch.setattr(item_cache, "open_entry", boom)
    monkeypatch.setattr(item_cache, "write_entry", boom)
    cfg = config(syn_root, "input.cache=off")
    store = build_store(load_cohort(cfg), cfg, progress=False)
    assert store.meta["item_cache"]["status"] == "off" and not cache_dir.exists()
    # build_store(cache=False) (one-study predictions) is off whatever the config says
    cfg = config(syn_root, "input.cache=disk")
    assert status(build_store(load_cohort(cfg), cfg, progress=False, cache=False)) == "off"


def test_auto_writes_only_slow_builds(syn_root: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(syn_root)
    assert cfg.input.cache == "auto"
    cohort = load_cohort(cfg)
    monkeypatch.setattr(item_cache, "AUTO_MIN_SECONDS", 1e9)
    rec = build_store(cohort, cfg, progress=False).meta["item_cache"]
    assert rec["status"] == "built" and rec["reason"].startswith("auto: build took") and not cache_dir.exists()
    monkeypatch.setattr(item_cache, "AUTO_MIN_SECONDS", 0.0)
    assert status(build_store(cohort, cfg, progress=False)) == "written"
    monkeypatch.setattr(item_cache, "AUTO_MIN_SECONDS", 1e9)
    assert status(build_store(cohort, cfg, progress=False)) == "hit"  # auto always reads an existing entry


def test_yaml_off_and_resume_ignore_the_switch(tmp_path: Path) -> None:
    assert load_config(None, ["input.cache=off"]).input.cache == "off"  # YAML's bare off is a boolean
    (tmp_path / "c.yaml").write_text("input: {cache: off}\n")
    assert load_config(tmp_path / "c.yaml").input.cache == "off"
    load_config(None, ["input.cache=disk"]).save(tmp_path / "config.yaml")
    assert config_diff(load_config(None, ["input.cache=off"]), tmp_path / "config.yaml") == []
    assert config_diff(load_config(None, ["input.size=20"]), tmp_path / "config.yaml") == ["input"]


# --- pickling (Ray) -----------------------------------------------------------------------------------------------
def test_cached_store_pickles_as_its_path(syn_root: Path, cache_dir: Path) -> None:
    cohort = load_cohort(config(syn_root))
    fresh = build_store(cohort, config(syn_root, "input.cache=off"), progress=False)
    cached = build_store(cohort, config(syn_root, "input.cache=disk"), progress=False)
    assert len(pickle.dumps(fresh)) > fresh.images.numel() * 4
    for dumps in (pickle.dumps, cloudpickle.dumps):
        blob = dumps(cached)
        assert len(blob) < 10_000 < fresh.images.numel() * 4
        back = pickle.loads(blob)
        same_store(back, fresh)
        assert back.meta["item_cache"]["path"] == cached.meta["item_cache"]["path"]
        assert len(pickle.dumps(back)) < 10_000  # and again by path
    # another array in a field: pickled by value
    cached.images = cached.images[:3].clone()
    assert len(pickle.dumps(cached)) > cached.images.numel() * 4
    # an entry missing on the unpickling machine: one clear error
    blob = pickle.dumps(build_store(cohort, config(syn_root, "input.cache=disk"), progress=False))
    import shutil

    shutil.rmtree(cache_dir)
    with pytest.raises(Exception, match="item cache entry not found on this machine"):
        pickle.loads(blob)


def test_cached_seg_data_pickles_as_its_path(syn_root: Path, cache_dir: Path) -> None:
    cohort = load_cohort(config(syn_root))
    data = build_seg_data(cohort, config(syn_root, "input.cache=disk", *SEG))
    fresh = build_seg_data(cohort, config(syn_root, "input.cache=off", *SEG))
    gt_bytes = sum(g.nbytes for g in fresh.gt)
    assert len(pickle.dumps(fresh)) > gt_bytes
    blob = cloudpickle.dumps(data)
    assert len(blob) < 20_000 < gt_bytes
    back: SegData = pickle.loads(blob)
    same_store(back.store, fresh.store)
    assert all(np.array_equal(a, b) for a, b in zip(back.gt, fresh.gt, strict=True))


# --- a whole run --------------------------------------------------------------------------------------------------
def test_run_cv_predictions_equal_with_the_cache_on_or_off(syn_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    run_cv(config(syn_root, "input.cache=off"), tmp_path / "off")
    run_cv(config(syn_root, "input.cache=disk"), tmp_path / "disk")
    run_cv(config(syn_root, "input.cache=disk"), tmp_path / "hit")
    off = pd.read_csv(tmp_path / "off" / "predictions.csv")
    for run, want in (("disk", "written"), ("hit", "hit")):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / run / "predictions.csv"), off)
        rec = json.loads((tmp_path / run / "data_check.json").read_text())["item_cache"]
        assert rec["status"] == want and len(rec["key"]) == 64
    assert json.loads((tmp_path / "off" / "data_check.json").read_text())["item_cache"]["status"] == "off"
    assert cohort_record(load_cohort(config(syn_root)))[0] is not None
    assert entry_key("items", {}, {}) != entry_key("seg", {}, {})


def _in_task(store: ItemStore) -> tuple[float, bool, int]:
    """What a Ray task sees of a cached store: the sum of its images, whether they are the entry's mapped file."""
    path = Path(store.meta["item_cache"]["path"]) / "images.npy"
    return float(store.images.double().sum()), mapped(store.images, path), os.getpid()


@pytest.mark.slow
def test_ray_tasks_map_the_cached_entry(syn_root: Path, cache_dir: Path) -> None:
    """The store reaches two Ray tasks as a path (``ray.put`` of a few KB); each task maps the same file."""
    pytest.importorskip("ray")
    from cadx.runs.executors import RayExecutor

    cached = build_store(load_cohort(config(syn_root)), config(syn_root, "input.cache=disk"), progress=False)
    want = float(cached.images.double().sum())
    ex = RayExecutor(num_cpus=2, cpus_per_task=1, progress=False)
    from ray import cloudpickle as ray_pickle

    ray_pickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        got = [r for _, r in ex.map(lambda i: _in_task(cached), [(0,), (1,)])]
    finally:
        ray_pickle.unregister_pickle_by_value(sys.modules[__name__])
        ex.close()
    assert [g[0] for g in got] == [want, want] and all(g[1] for g in got)
    assert os.getpid() not in {g[2] for g in got}
