"""On-disk cache of preprocessed item arrays, memory-mapped on load (issue #19 item 1).

:func:`cadx.pipeline.items.build_store` and :func:`cadx.pipeline.seg_items.build_seg_data` preprocess every study
of a cohort; with ``input.cache`` on they go through :func:`cached_arrays`, so a second run on the same cohort and
preprocessing (``--seeds``, a study's variants, ``--resume``, ``cadx train`` after ``cadx cv``, the MTMR/DMRN
tables) maps the arrays from disk instead of rebuilding them, and Ray fold tasks unpickle a path, not the bytes
(the stores' ``__getstate__``), so they share one copy in the page cache.

Location: ``$CADX_ITEM_CACHE_DIR``, else ``$CADX_CACHE_DIR/items`` (the variable the dedup hash cache already
uses), else ``$XDG_CACHE_HOME/cadx/items``, else ``~/.cache/cadx/items``: one per user, independent of the working
directory and of the run folder (a run folder is per experiment; the cache is shared by every run on the same
cohort), and never inside the data folder (which may be read-only or shared). One entry = one folder
``<kind>-<key[:40]>/`` with one ``.npy`` per array and ``entry.json`` (full key, version, each array's
shape/dtype/file size, what made it).

Key (:func:`entry_key`): SHA-256 of :data:`CACHE_VERSION`, the numpy/torch versions, a hash of the source of the
preprocessing and data modules (``cadx/pipeline/{preprocess,items,seg_items,item_cache}.py``, ``cadx/data/**``,
so a forgotten version bump cannot serve stale items), the cohort record (:func:`cohort_record`: name, info, every
study's id, patient, attributes, boxes, metadata and image/mask sources, plus size and mtime (ns) of every file
under the cohort's source and each study's source files/folders, by real path) and the caller's settings
(``input`` without ``augment``/``cache``, ``data.dataset``/``options``, and what else the builder reads). Labels
are not in the key: the per-study targets are recomputed from the cohort on every load (no image is read), so the
``classes``/``attributes`` arguments cannot go stale. Not detected: a file rewritten with the same size and mtime,
or bytes flipped inside a ``.npy`` of the right size (delete the folder, or ``input.cache: off``).

Safety: an entry is written in a temporary folder and renamed into place (two processes building the same key:
the second rename fails and that process maps the winner's entry); an entry whose ``entry.json`` is missing or
unreadable, whose key/version differ, or whose files have another size, shape or dtype is moved aside, deleted and
rebuilt, never trusted. Arrays are mapped copy-on-write (``mmap_mode="c"``): writable for torch (no
non-writable-array warning), and a write would change only this process's private copy, never the file.

Size (:func:`prune`): an entry's last use is its ``entry.json`` mtime (touched on every hit). After each write
the least recently used entries are deleted until the cache holds at most ``$CADX_ITEM_CACHE_MAX_GB`` (default
:data:`DEFAULT_MAX_GB`; ``0`` = no limit), never the entry just written nor one used in the last
:data:`PRUNE_GRACE_SECONDS` (a run or its Ray workers may still map it), so the cap can be exceeded for that long;
leftovers of killed writers (``.tmp-*``, ``.trash-*`` older than the grace) go too. Each source change makes new
keys, so without this the cache would grow by a copy of every cohort per cadx version. ``cadx cache list`` and
``cadx cache prune`` show and trim it by hand.

Modes (``input.cache``): ``off`` never touches the disk; ``disk`` reads and writes entries; ``auto`` (default)
reads an existing entry and writes a new one only when the build took at least :data:`AUTO_MIN_SECONDS` (a
cheap store is rebuilt rather than written; measured in ``benchmarks/results/item_cache/``). A cohort whose images
are not files (in-memory arrays) is never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cadx.data.study import Cohort
from cadx.errors import CadxConfigError, CadxDataError

#: Bump when preprocessing changes in a way the source hash cannot see (e.g. a reader's behaviour in a dependency).
CACHE_VERSION = 1
#: Environment variable naming cadx's cache base folder (item entries go to ``<it>/items``; dedup hashes beside).
CACHE_ENV = "CADX_CACHE_DIR"
#: Environment variable capping the item cache's size in GB (LRU eviction after each write; ``0`` = no cap).
MAX_GB_ENV = "CADX_ITEM_CACHE_MAX_GB"
DEFAULT_MAX_GB = 20.0
#: Entries used (or written) this recently are never evicted: a run and its Ray workers may still map them.
PRUNE_GRACE_SECONDS = 3600.0
#: Environment variable naming the item cache folder itself (overrides ``CADX_CACHE_DIR``; the test suite's).
ITEM_CACHE_ENV = "CADX_ITEM_CACHE_DIR"
#: ``input.cache: auto`` writes an entry only when building took at least this long (seconds).
AUTO_MIN_SECONDS = 2.0
ENTRY_FILE = "entry.json"

_BRACKETS = re.compile(r"(\[[^\[\]]*\])+$")


def cache_root() -> Path:
    """The items cache folder: ``$CADX_ITEM_CACHE_DIR`` itself, else ``$CADX_CACHE_DIR/items``,
    ``$XDG_CACHE_HOME/cadx/items`` or ``~/.cache/cadx/items``."""
    own = os.environ.get(ITEM_CACHE_ENV)
    if own:
        return Path(own)
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base) / "items"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cadx" / "items"


@lru_cache(maxsize=1)
def code_hash() -> str:
    """SHA-256 of the preprocessing and data modules' source (read once per process)."""
    pkg = Path(__file__).resolve().parents[1]
    files = [pkg / "pipeline" / n for n in ("preprocess.py", "items.py", "seg_items.py", "item_cache.py")]
    files += sorted((pkg / "data").rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _path_state(path: str) -> list[Any]:
    """``["file", size, mtime_ns]`` or ``["dir", [[relpath, size, mtime_ns], ...]]`` (recursive, sorted)."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return ["file", st.st_size, st.st_mtime_ns]
    rows: list[list[Any]] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            try:
                s = os.stat(p)
            except OSError:  # a dangling link: its name still counts
                rows.append([os.path.relpath(p, path), -1, -1])
                continue
            rows.append([os.path.relpath(p, path), s.st_size, s.st_mtime_ns])
    return ["dir", rows]


def _source_path(source: str) -> tuple[str, str] | None:
    """``(real path, bracket suffix)`` of a :class:`LazyImage` source (``file.npz[key][i]`` → the npz), or None
    when it names no existing file or folder (``<array>``: an in-memory image)."""
    if source and os.path.exists(source):
        return os.path.realpath(source), ""
    m = _BRACKETS.search(source or "")
    if m and m.start() > 0 and os.path.exists(source[:m.start()]):
        return os.path.realpath(source[:m.start()]), m.group(0)
    return None


def cohort_record(cohort: Cohort) -> tuple[dict[str, Any] | None, str]:
    """What identifies ``cohort``'s images without reading them: ``(record, "")``, or ``(None, reason)`` when a
    study's image or mask source is not a file or folder (then the cohort is not cached).

    The record holds the cohort's name and info, per study its id, patient id, attributes, boxes, metadata and
    image/mask ``(name, real path + [suffix])`` in order, and ``files``: size and mtime of the cohort's source (a
    folder: every file under it) and of every source file or folder, by real path.
    """
    files: dict[str, list[Any]] = {}

    def state(path: str) -> None:
        if path not in files:
            files[path] = _path_state(path)

    root = _source_path(cohort.source)
    if root is not None:
        state(root[0])
    studies = []
    for st in cohort:
        srcs: list[list[Any]] = []
        for group, images in (("image", st.images), ("mask", st.masks)):
            for name, img in images.items():
                sp = _source_path(img.source)
                if sp is None:
                    return None, f"study {st.study_id}: {group} {name!r} is not a file ({img.source!r})"
                state(sp[0])
                srcs.append([group, name, sp[0] + sp[1]])
        studies.append([st.study_id, st.patient_id, sorted(st.attributes.items()), [list(b) for b in st.boxes],
                        st.metadata, srcs])
    return {"name": cohort.name, "info": cohort.info, "studies": studies, "files": files}, ""


def entry_key(kind: str, cohort: dict[str, Any], settings: dict[str, Any]) -> str:
    """SHA-256 hex of everything that decides a ``kind`` entry's arrays (see the module docstring)."""
    doc = {"cache_version": CACHE_VERSION, "kind": kind, "numpy": np.__version__, "torch": torch.__version__,
           "code": code_hash(), "settings": settings, "cohort": cohort}
    text = json.dumps(doc, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def entry_dir(root: Path, kind: str, key: str) -> Path:
    return root / f"{kind}-{key[:40]}"


def _discard(path: Path) -> None:
    """Move ``path`` aside (atomic) and delete it; a concurrent discard or a missing folder is not an error."""
    trash = path.parent / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def open_entry(path: Path, key: str, mmap: Iterable[str] = ()) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The arrays and ``entry.json`` of the entry at ``path`` when it is complete and made for ``key``; arrays named
    in ``mmap`` are memory-mapped copy-on-write, the others read into memory. None when absent. A corrupt or
    mismatching entry is discarded (and None returned) so the caller rebuilds it."""
    meta_path = path / ENTRY_FILE
    if not meta_path.is_file():
        if path.is_dir():  # a folder without entry.json is never produced by write_entry: a foreign/broken one
            _discard(path)
        return None
    mm = set(mmap)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != key or meta.get("version") != CACHE_VERSION:
            raise ValueError("key or version differs")
        arrays: dict[str, np.ndarray] = {}
        for name, spec in meta["arrays"].items():
            f = path / f"{name}.npy"
            if f.stat().st_size != int(spec["bytes"]):
                raise ValueError(f"{f.name}: size differs")
            arr = np.load(f, mmap_mode="c" if name in mm and int(np.prod(spec["shape"])) > 0 else None,
                          allow_pickle=False)
            if list(arr.shape) != list(spec["shape"]) or str(arr.dtype) != spec["dtype"]:
                raise ValueError(f"{f.name}: shape or dtype differs")
            arrays[name] = arr
    except (OSError, ValueError, KeyError, TypeError):
        _discard(path)
        return None
    return arrays, meta


def write_entry(path: Path, key: str, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> bool:
    """Write an entry atomically (temporary folder beside it, then rename). False when another process's entry got
    there first (then that one stands). Raises OSError when the cache folder is not writable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        specs = {}
        for name, arr in arrays.items():
            a = np.ascontiguousarray(arr)
            np.save(tmp / f"{name}.npy", a, allow_pickle=False)
            specs[name] = {"shape": list(a.shape), "dtype": str(a.dtype), "bytes": (tmp / f"{name}.npy").stat().st_size}
        meta = {"key": key, "version": CACHE_VERSION, "arrays": specs, "created": time.time(), **info}
        (tmp / ENTRY_FILE).write_text(json.dumps(meta, indent=1, default=repr), encoding="utf-8")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, path)
        except OSError:
            if (path / ENTRY_FILE).is_file():  # another process won the race: keep its entry
                return False
            raise
        return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def cached_arrays(kind: str, cohort: Cohort, settings: dict[str, Any], mode: str,
                  build: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
                  mmap: Iterable[str] = ()) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """``build() -> (arrays, info)`` through the cache: returns ``(arrays, info, record)``.

    ``mode`` ``off`` | ``disk`` | ``auto`` (module docstring); ``settings`` is everything besides the cohort that
    decides the arrays (JSON-able); ``info`` is small JSON kept in ``entry.json`` and returned on a hit;
    ``mmap`` names the arrays to map rather than read. ``record`` says what happened: ``mode``, ``status`` (``off``,
    ``hit``, ``written``, ``built``), ``reason`` for ``built``, ``key``, ``path``, ``seconds``; it holds ``path``
    and ``key`` only when the arrays returned are the entry's (memory-mapped).
    """
    t0 = time.perf_counter()
    if mode == "off":
        arrays, info = build()
        return arrays, info, {"mode": mode, "status": "off", "seconds": round(time.perf_counter() - t0, 3)}
    cohort_rec, reason = cohort_record(cohort)
    if cohort_rec is None:
        arrays, info = build()
        return arrays, info, {"mode": mode, "status": "built", "reason": f"not cacheable: {reason}",
                              "seconds": round(time.perf_counter() - t0, 3)}
    key = entry_key(kind, cohort_rec, settings)
    path = entry_dir(cache_root(), kind, key)
    rec: dict[str, Any] = {"mode": mode, "key": key}
    found = open_entry(path, key, mmap)
    if found is not None:
        arrays, meta = found
        _touch(path)
        return arrays, dict(meta.get("info", {})), {**rec, "status": "hit", "path": str(path),
                                                    "seconds": round(time.perf_counter() - t0, 3)}
    arrays, info = build()
    built_s = time.perf_counter() - t0
    if mode == "auto" and built_s < AUTO_MIN_SECONDS:
        return arrays, info, {**rec, "status": "built", "reason": f"auto: build took {built_s:.2f} s < "
                              f"{AUTO_MIN_SECONDS:g} s", "seconds": round(built_s, 3)}
    try:
        write_entry(path, key, arrays, {"info": info, "kind": kind, "studies": len(cohort),
                                        "cohort": cohort.name, "build_seconds": round(built_s, 3)})
        found = open_entry(path, key, mmap)
    except OSError as e:  # a read-only or full disk: the run goes on with the arrays in memory
        return arrays, info, {**rec, "status": "built", "reason": f"not written: {e}",
                              "seconds": round(time.perf_counter() - t0, 3)}
    if found is None:
        raise CadxDataError("the item cache entry just written could not be read back", path=path, field="cache")
    prune(path.parent, max_bytes=max_bytes_from_env(), keep=(path,))
    return found[0], info, {**rec, "status": "written", "path": str(path), "build_seconds": round(built_s, 3),
                            "seconds": round(time.perf_counter() - t0, 3)}


def reopen(path: str, key: str, mmap: Iterable[str]) -> dict[str, np.ndarray]:
    """The arrays of the entry at ``path`` (an unpickled store maps the same file). Raises CadxDataError when the
    entry is missing or is not ``key``'s (a Ray worker without the driver's filesystem: use a shared
    ``$CADX_CACHE_DIR`` or ``input.cache: off``)."""
    found = open_entry(Path(path), key, mmap)
    if found is None:
        raise CadxDataError("item cache entry not found on this machine (a Ray worker needs the driver's "
                            f"${CACHE_ENV} on a shared filesystem, or input.cache: off)", path=path, field="cache")
    return found[0]


def _touch(path: Path) -> None:
    """Mark the entry at ``path`` as used now (``entry.json`` mtime; a read-only cache just keeps the old time)."""
    try:
        os.utime(path / ENTRY_FILE)
    except OSError:
        pass


def max_bytes_from_env() -> int | None:
    """The cap from ``$CADX_ITEM_CACHE_MAX_GB`` (default :data:`DEFAULT_MAX_GB`); None when ``<= 0`` (no cap).
    A value that is not a number raises CadxConfigError naming the variable."""
    text = os.environ.get(MAX_GB_ENV, "").strip()
    try:
        gb = float(text) if text else DEFAULT_MAX_GB
    except ValueError:
        raise CadxConfigError(f"${MAX_GB_ENV}={text!r} is not a number of GB (0 = no cap)") from None
    return int(gb * 1024**3) if gb > 0 else None


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def cache_entries(root: Path | None = None) -> list[dict[str, Any]]:
    """The entries under ``root`` (default :func:`cache_root`), least recently used first: ``path``, ``name``,
    ``kind``, ``cohort``, ``studies``, ``bytes`` (every file of the folder), ``created``, ``last_used`` (epoch
    seconds) and ``complete`` (False for a folder without a readable ``entry.json``, e.g. a killed writer's
    ``.tmp-*``, whose ``last_used`` is the folder's mtime). An absent root has no entries."""
    root = cache_root() if root is None else Path(root)
    rows: list[dict[str, Any]] = []
    if not root.is_dir():
        return rows
    for path in root.iterdir():
        if not path.is_dir():
            continue
        meta_path = path / ENTRY_FILE
        meta: dict[str, Any] = {}
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            used = meta_path.stat().st_mtime
            complete = not path.name.startswith(".") and isinstance(meta, dict) and "key" in meta
        except (OSError, ValueError):
            try:
                used = path.stat().st_mtime
            except OSError:  # removed meanwhile by another process
                continue
            complete = False
        meta = meta if isinstance(meta, dict) else {}
        rows.append({"path": str(path), "name": path.name, "kind": meta.get("kind"), "cohort": meta.get("cohort"),
                     "studies": meta.get("studies"), "bytes": _tree_bytes(path), "created": meta.get("created"),
                     "last_used": used, "complete": complete})
    rows.sort(key=lambda r: (r["last_used"], r["name"]))
    return rows


def prune(root: Path | None = None, *, max_bytes: int | None = None, older_than: float | None = None,
          keep: Iterable[Path] = (), grace: float = PRUNE_GRACE_SECONDS, now: float | None = None
          ) -> list[dict[str, Any]]:
    """Delete cache entries under ``root`` (default :func:`cache_root`) and return the deleted rows of
    :func:`cache_entries`.

    Deleted: incomplete folders (killed writers), entries unused for more than ``older_than`` seconds, then the
    least recently used entries until the rest hold at most ``max_bytes`` (None = no size cap). Never deleted:
    ``keep``, anything used within ``grace`` seconds of ``now`` (``grace=0`` for an explicit ``cadx cache
    prune``, which the user runs when no run needs the entries) and an incomplete folder younger than
    :data:`PRUNE_GRACE_SECONDS` whatever ``grace`` (a writer may still be filling it). A deleted entry is renamed aside
    first (atomic), so a concurrent reader sees it whole or not at all; a mapped file stays readable by the
    process mapping it (POSIX unlink semantics).
    """
    now = time.time() if now is None else now
    kept = {os.path.realpath(p) for p in keep}
    every = cache_entries(root)
    total = sum(r["bytes"] for r in every)
    deleted: list[dict[str, Any]] = []
    for r in every:  # least recently used first
        age = now - r["last_used"]
        if os.path.realpath(r["path"]) in kept or age < grace or (not r["complete"] and age < PRUNE_GRACE_SECONDS):
            continue
        stale = older_than is not None and age > older_than
        if not r["complete"] or stale or (max_bytes is not None and total > max_bytes):
            _discard(Path(r["path"]))
            total -= r["bytes"]
            deleted.append(r)
    return deleted
