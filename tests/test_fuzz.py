"""Fuzz the readers with a seeded mutator: 0 unhandled exceptions on mutated real inputs.

Seeds (small, written per run): a 3-slice uncompressed DICOM series (one slice mutated, the folder read), one
uncompressed DICOM file, one real JPEG 2000 CT slice from ``../shared/data/ct_examples`` (skipped when absent),
a NIfTI as ``.nii.gz`` and ``.nii``, a PNG, a TIFF and a manifest CSV. Mutations (``numpy.random.default_rng``):
byte flips, truncation, insertion, deletion, and header-field edits — DICOM Rows / Columns / BitsAllocated /
PixelSpacing / ImagePositionPatient, NIfTI dim / pixdim / datatype / vox_offset / scl_slope, PNG IHDR (CRC
fixed up), TIFF IFD values, manifest cells (NaN / NA / empty / text / inf in label, path, box, attribute
columns, dropped or duplicated columns and rows). Each mutated input goes through
:func:`cadx.data.readers.read_image` (manifest: ``load_dataset("manifest", ...)``, every image and mask loaded,
and ``cadx.data.check.check_cohort`` when that module exists).

Pass criteria per input: either a :class:`CadxDataError` whose message is one line and names the mutated file (or
the series folder / manifest holding it), or a decoded image with finite voxels, a plausible shape (2–3 spatial
axes, each 1–4096, ≤ 64 M voxels, ≤ 4 channels) and finite positive spacing. Anything else is a finding.

Not detectable (documented, not tested for): a mutation that keeps the file well-formed decodes to *different*
values without any error —
- JPEG 2000 (and other compressed) DICOM payload bytes: the codestream carries no checksum, so a flipped byte in
  the entropy-coded data decodes to different pixels (often a local smear) with the header intact;
- uncompressed DICOM / NIfTI / TIFF voxel bytes: any byte pattern is a valid voxel value;
- header values that stay plausible: a PixelSpacing of 0.7 edited to 0.9, an ImagePositionPatient shifted along
  the slice normal by a regular amount, a NIfTI pixdim changed to another positive number, a scl_slope of 2;
- a NIfTI / TIFF / PNG header that promises *fewer* voxels than the file holds (dim[1] 10 → 3): the reader takes
  the prefix the header describes (DICOM is stricter: its pixel data must match Rows × Columns × frames exactly);
- a zero pixdim / zero DICOM spacing is an error, but ITK formats other than NIfTI that store no spacing read
  as 1 mm, like PNG / TIFF (no physical spacing in the format);
- gzip streams are CRC-checked and PNG chunks are CRC-checked (PIL verifies them), so those mutations are caught
  unless the mutator also fixes the CRC (our IHDR edits do, and then only the geometry checks remain);
- manifest cells that stay valid: a label typo that is still a non-empty string becomes a new class unless the
  config (``classes``) declares the classes; a numeric attribute changed to another number.
Measured numbers (inputs tried, outcomes, exception types) are in ``benchmarks/results/fuzz.json``
(``benchmarks/fuzz_readers.py``).
"""

from __future__ import annotations

import gzip
import shutil
import struct
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement

from cadx.data.datasets import load_dataset
from cadx.data.dicom_write import write_dicom_series
from cadx.data.image import ImageData, LazyImage
from cadx.data.readers import read_image, write_image
from cadx.data.study import Cohort, Study
from cadx.errors import CadxDataError

check_cohort: Callable[..., list[Any]] | None
try:  # the cohort check lands in a parallel change; fuzz it when present
    from cadx.data.check import check_cohort
except ImportError:  # pragma: no cover - depends on the tree
    check_cohort = None

CT_DICOM = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ct_examples" / "example_ct_dicom"
MAX_VOXELS = 64 * 1024 * 1024


# --- seeds ----------------------------------------------------------------------------------------------------
@dataclass
class Seed:
    """One input to mutate: ``data`` is the file's bytes; ``target`` is what ``read`` gets (the mutated file,
    or the folder / manifest holding it); ``kind`` picks the header editor."""

    name: str
    kind: str  # dicom | nifti | niftigz | png | tiff | csv
    data: bytes
    suffix: str
    series: dict[str, bytes] = field(default_factory=dict)  # other files of a DICOM series (name → bytes)
    extra: dict[str, bytes] = field(default_factory=dict)  # files a manifest points at


def make_seeds(work: Path, real_ct: bool = True) -> list[Seed]:
    """Write the clean inputs under ``work`` and return them (bytes kept in memory)."""
    rng = np.random.default_rng(0)
    seeds: list[Seed] = []
    vol = rng.normal(0, 300, (3, 16, 16))
    files = write_dicom_series(vol, (2.0, 0.7, 0.7), work / "series", patient_id="FUZZ", uid_seed="fuzz")
    blobs = {p.name: p.read_bytes() for p in files}
    seeds.append(Seed("dicom_series", "dicom", blobs[files[1].name], ".dcm",
                      series={k: v for k, v in blobs.items() if k != files[1].name}))
    seeds.append(Seed("dicom_file", "dicom", blobs[files[0].name], ".dcm"))
    if real_ct and CT_DICOM.is_dir():
        first = sorted(CT_DICOM.iterdir())[0]
        seeds.append(Seed("dicom_j2k_real", "dicom", first.read_bytes(), ".dcm"))
    img = ImageData(rng.normal(0, 1, (1, 4, 12, 10)).astype(np.float32), (2.5, 0.8, 0.8))
    seeds.append(Seed("nifti", "nifti", write_image(img, work / "v.nii").read_bytes(), ".nii"))
    seeds.append(Seed("nifti_gz", "niftigz", write_image(img, work / "v.nii.gz").read_bytes(), ".nii.gz"))
    png = ImageData(rng.integers(0, 255, (1, 16, 20), dtype=np.uint8), (1.0, 1.0))
    seeds.append(Seed("png", "png", write_image(png, work / "p.png").read_bytes(), ".png"))
    import tifffile  # optional: TIFF support

    tifffile.imwrite(work / "t.tif", rng.integers(0, 4000, (16, 18), dtype=np.uint16))
    seeds.append(Seed("tiff", "tiff", (work / "t.tif").read_bytes(), ".tif"))
    mask = np.zeros((1, 16, 20), dtype=np.uint8)
    mask[0, 4:9, 5:11] = 255
    write_image(ImageData(mask, (1.0, 1.0)), work / "m.png")
    csv = ("study_id,patient_id,path,label,mask,box,age\n"
           "s1,p1,img.png,benign,mask.png,2 3 9 12,51\n"
           "s2,p2,img.png,malignant,mask.png,1 1 5 5,63.5\n"
           "s3,p3,img.png,benign,,,\n")
    seeds.append(Seed("manifest", "csv", csv.encode(), ".csv",
                      extra={"img.png": seeds[-2].data, "mask.png": (work / "m.png").read_bytes()}))
    return seeds


# --- mutations ------------------------------------------------------------------------------------------------
def _flip(rng: np.random.Generator, b: bytes) -> bytes:
    out = bytearray(b)
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(len(out)))
        out[i] = out[i] ^ (1 << int(rng.integers(8))) if rng.random() < 0.5 else int(rng.integers(256))
    return bytes(out)


def _truncate(rng: np.random.Generator, b: bytes) -> bytes:
    return b[: int(rng.integers(len(b)))]


def _insert(rng: np.random.Generator, b: bytes) -> bytes:
    i = int(rng.integers(len(b) + 1))
    return b[:i] + rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes() + b[i:]


def _delete(rng: np.random.Generator, b: bytes) -> bytes:
    i = int(rng.integers(len(b)))
    return b[:i] + b[i + int(rng.integers(1, 65)):]


_BAD_DS = ["0", "-1", "nan", "inf", "abc", "1e308", "", "0.7\\0.7\\0.7", "1\\", "\\"]


def _edit_dicom(rng: np.random.Generator, b: bytes, work: Path) -> bytes:
    """Set one of Rows / Columns / BitsAllocated / PixelSpacing / ImagePositionPatient to a bad value (raw
    element bytes, so pydicom writes values it would refuse to build)."""
    src = work / "edit_in.dcm"
    src.write_bytes(b)
    ds = pydicom.dcmread(src)
    key = ["Rows", "Columns", "BitsAllocated", "PixelSpacing", "ImagePositionPatient"][int(rng.integers(5))]
    if key in ("Rows", "Columns", "BitsAllocated"):
        old = int(ds.get(key, 16))
        v = int(rng.choice([0, 1, 7, old * 2, old + 1, 65535] if key != "BitsAllocated" else [0, 1, 7, 8, 12,
                                                                                             32, 64]))
        vr, raw = "US", struct.pack("<H", v)
    else:
        n = int(rng.integers(1, 5))
        text = "\\".join(str(rng.choice([*_BAD_DS, "0", "10", "-5"])) for _ in range(n))
        raw = text.encode("latin-1")
        raw, vr = raw + b" " * (len(raw) % 2), "DS"
    tag = pydicom.datadict.tag_for_keyword(key)
    assert tag is not None
    ds._dict[pydicom.tag.Tag(tag)] = RawDataElement(pydicom.tag.Tag(tag), vr, len(raw), raw, 0, False, True)  # type: ignore[assignment]
    out = work / "edit_out.dcm"
    ds.save_as(out, enforce_file_format=False)
    return out.read_bytes()


# NIfTI-1 header fields: (offset, struct format, bad values)
_NIFTI_FIELDS: list[tuple[int, str, list[float]]] = [
    (40, "<h", [0, -1, 1, 2, 5, 8, 99]),  # dim[0]
    (42, "<h", [0, -1, 1, 3, 100, 32767]),  # dim[1]
    (44, "<h", [0, -1, 1, 24, 32767]),  # dim[2]
    (46, "<h", [0, -1, 2, 8, 32767]),  # dim[3]
    (70, "<h", [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 2304, 9999]),  # datatype
    (72, "<h", [0, 1, 7, 8, 16, 64, 128]),  # bitpix
    (80, "<f", [0.0, -1.0, float("nan"), float("inf"), 1e-30, 1e30]),  # pixdim[1]
    (84, "<f", [0.0, -1.0, float("nan"), 1e-30]),  # pixdim[2]
    (88, "<f", [0.0, -2.5, float("inf"), 1e30]),  # pixdim[3]
    (108, "<f", [0.0, 1.0, 347.0, 352.0, 1e9, -1.0]),  # vox_offset
    (112, "<f", [0.0, float("nan"), float("inf"), 1e38]),  # scl_slope
    (116, "<f", [float("nan"), float("inf"), 1e38]),  # scl_inter
]


def _edit_nifti(rng: np.random.Generator, b: bytes) -> bytes:
    out = bytearray(b)
    for _ in range(int(rng.integers(1, 3))):
        off, fmt, values = _NIFTI_FIELDS[int(rng.integers(len(_NIFTI_FIELDS)))]
        v = values[int(rng.integers(len(values)))]
        out[off: off + struct.calcsize(fmt)] = struct.pack(fmt, int(v) if fmt == "<h" else v)
    return bytes(out)


def _edit_png(rng: np.random.Generator, b: bytes) -> bytes:
    """Edit the IHDR (width, height, bit depth, colour type, interlace) and fix its CRC."""
    out = bytearray(b)
    choice = int(rng.integers(4))
    if choice == 0:
        out[16:20] = struct.pack(">I", int(rng.choice([0, 1, 15, 17, 40, 100000, 2**31 - 1])))
    elif choice == 1:
        out[20:24] = struct.pack(">I", int(rng.choice([0, 1, 15, 17, 40, 100000, 2**31 - 1])))
    elif choice == 2:
        out[24] = int(rng.choice([0, 1, 2, 4, 8, 16, 3, 255]))
    else:
        out[25 + int(rng.integers(3))] = int(rng.choice([0, 1, 2, 3, 4, 6, 7, 255]))
    out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])) & 0xFFFFFFFF)
    return bytes(out)


def _edit_tiff(rng: np.random.Generator, b: bytes) -> bytes:
    """Overwrite the value of one random entry of the first IFD (width, length, bits, offsets, counts...)."""
    out = bytearray(b)
    end = "<" if b[:2] == b"II" else ">"
    ifd = struct.unpack(end + "I", b[4:8])[0]
    n = struct.unpack(end + "H", b[ifd: ifd + 2])[0]
    e = ifd + 2 + 12 * int(rng.integers(n))
    typ = struct.unpack(end + "H", b[e + 2: e + 4])[0]
    v = int(rng.choice([0, 1, 2, 3, 7, 16, 17, 255, 65535, len(b), len(b) * 4]))
    if typ == 3:  # SHORT
        out[e + 8: e + 10] = struct.pack(end + "H", v & 0xFFFF)
    else:
        out[e + 8: e + 12] = struct.pack(end + "I", v)
    return bytes(out)


_BAD_CELLS = ["", "NaN", "nan", "NA", "None", "fifty", "inf", "-inf", "1e309", "-1", "0", "999999", "\"",
              "a,b", "1 2 3", "9 9 1 1", "0 0 0 0 0 0", "-5 -5 2 2", "missing.png", "/dev/null", "img.png",
              "mask.png", "p1", "s1", "benign", "train", "bogus", "\x00", "é"]


def _edit_csv(rng: np.random.Generator, b: bytes) -> bytes:
    lines = b.decode("utf-8", errors="replace").splitlines()
    rows = [ln.split(",") for ln in lines]
    op = int(rng.integers(5))
    if op <= 1:  # replace cells
        for _ in range(int(rng.integers(1, 4))):
            r = int(rng.integers(1, len(rows)))
            c = int(rng.integers(len(rows[r])))
            rows[r][c] = str(rng.choice(_BAD_CELLS))
    elif op == 2:  # drop or rename a column
        c = int(rng.integers(len(rows[0])))
        if rng.random() < 0.5:
            rows = [r[:c] + r[c + 1:] for r in rows]
        else:
            rows[0][c] = str(rng.choice(["", "label", "x0", "Study_ID", "path ", "box"]))
    elif op == 3:  # duplicate, drop or shorten a row
        r = int(rng.integers(1, len(rows)))
        k = int(rng.integers(3))
        if k == 0:
            rows.insert(r, list(rows[r]))
        elif k == 1:
            del rows[r]
        else:
            rows[r] = rows[r][: int(rng.integers(len(rows[r])))]
    else:  # header only / empty
        rows = rows[:1] if rng.random() < 0.5 else []
    return ("\n".join(",".join(r) for r in rows) + "\n").encode("utf-8")


def mutate(rng: np.random.Generator, seed: Seed, work: Path) -> tuple[str, bytes]:
    """One random mutation of ``seed``: ``(operation name, mutated bytes)``."""
    ops: list[tuple[str, Callable[[], bytes]]] = [
        ("flip", lambda: _flip(rng, seed.data)), ("truncate", lambda: _truncate(rng, seed.data)),
        ("insert", lambda: _insert(rng, seed.data)), ("delete", lambda: _delete(rng, seed.data))]
    if seed.kind == "dicom":
        ops.append(("header", lambda: _edit_dicom(rng, seed.data, work)))
    elif seed.kind == "nifti":
        ops.append(("header", lambda: _edit_nifti(rng, seed.data)))
    elif seed.kind == "niftigz":  # edit the header inside the gzip stream, or the compressed bytes
        ops.append(("header", lambda: gzip.compress(_edit_nifti(rng, gzip.decompress(seed.data)), mtime=0)))
    elif seed.kind == "png":
        ops.append(("header", lambda: _edit_png(rng, seed.data)))
    elif seed.kind == "tiff":
        ops.append(("header", lambda: _edit_tiff(rng, seed.data)))
    elif seed.kind == "csv":
        ops.append(("cells", lambda: _edit_csv(rng, seed.data)))
        ops.append(("cells", lambda: _edit_csv(rng, seed.data)))
    # header/cell edits get half the draws: they reach deeper than random bytes
    weights = np.array([1.0] * 4 + [4.0] * (len(ops) - 4))
    name, fn = ops[int(rng.choice(len(ops), p=weights / weights.sum()))]
    return name, fn()


# --- running one input ----------------------------------------------------------------------------------------
def _plausible(img: ImageData) -> str | None:
    """Why a decoded image is implausible, or None."""
    arr = np.asarray(img.array)
    if arr.ndim not in (3, 4) or not 1 <= arr.shape[0] <= 4:
        return f"shape {arr.shape}"
    if any(not 1 <= s <= 4096 for s in arr.shape[1:]) or arr.size > MAX_VOXELS:
        return f"shape {arr.shape}"
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        return "non-finite voxels"
    sp = np.asarray(img.spacing, dtype=float)
    if sp.size != arr.ndim - 1 or not np.isfinite(sp).all() or (sp <= 0).any():
        return f"spacing {img.spacing}"
    return None


def _check(cohort: Cohort) -> str | None:
    """Run ``check_cohort`` (when present): why its report is a finding (a multi-line or unnamed problem, or a
    reader exception it had to wrap), or None."""
    if check_cohort is None:
        return None
    for p in check_cohort(cohort, allow_unlabelled=True, all_errors=True, workers=0):
        if not p.path or "\n" in p.line() or p.message.startswith("cannot read ("):
            return f"check: {p.line()[:200]}"
    return None


def _read_manifest(csv_path: Path) -> str | None:
    cohort = load_dataset("manifest", csv_path)
    why = _check(cohort)
    if why:
        return why
    for study in cohort:
        for lazy in (study.image(), study.mask()):
            if lazy is not None:
                why = _plausible(lazy.load())
                if why:
                    return f"{lazy.source}: {why}"
    return None


def run_one(seed: Seed, data: bytes, case: Path, ref: np.ndarray | None = None) -> tuple[str, str]:
    """Write ``data`` as the mutated input under the empty folder ``case`` and read it.

    Returns ``(outcome, detail)``: outcome ``decoded`` / ``CadxDataError`` / ``bad message`` / ``implausible`` /
    ``<exception type>`` (the last three are findings). For ``decoded`` images, detail is ``same`` or
    ``changed`` against ``ref`` (the clean seed's voxels) when given; for errors it is the field."""
    case.mkdir(parents=True, exist_ok=True)
    if seed.kind == "csv":
        for k, v in seed.extra.items():
            (case / k).write_bytes(v)
        target = case / "manifest.csv"
        target.write_bytes(data)
        names = {target}
    elif seed.series:
        for k, v in seed.series.items():
            (case / k).write_bytes(v)
        (case / f"mutated{seed.suffix}").write_bytes(data)
        target = case
        names = {case, case / f"mutated{seed.suffix}"}
    else:
        target = case / f"mutated{seed.suffix}"
        target.write_bytes(data)
        names = {target}
    try:
        if seed.kind == "csv":
            why = _read_manifest(target)
        else:
            why = _check(Cohort([Study("s", "p", images={"image": LazyImage(lambda: read_image(target),
                                                                               str(target))})]))
            img = read_image(target)
            why = why or _plausible(img)
            if not why and ref is not None:
                same = img.array.shape == ref.shape and np.array_equal(img.array, ref)
                return "decoded", "same" if same else "changed"
        return ("implausible", why) if why else ("decoded", "")
    except CadxDataError as e:
        msg = str(e)
        named = (e.path is not None and Path(e.path) in names) or any(str(n) in msg for n in names)
        named = named or (seed.kind == "csv" and bool(e.path))  # a row's image named by its own path
        if "\n" in msg or not named:
            return "bad message", msg[:300]
        if e.message.startswith("cannot read it ("):  # read_image's boundary wrapped a library exception
            return "CadxDataError", f"{e.field} (wrapped {e.message[16:].split(':')[0]})"
        return "CadxDataError", e.field or ""
    except MemoryError:
        return "MemoryError", ""
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return type(e).__name__, f"{e!s:.200} @ {Path(tb.filename).name}:{tb.lineno}"


def _write_clean(seed: Seed, case: Path) -> Path:
    """The clean seed as a readable path (the series folder for a series seed)."""
    case.mkdir(parents=True, exist_ok=True)
    for k, v in seed.series.items():
        (case / k).write_bytes(v)
    (case / f"clean{seed.suffix}").write_bytes(seed.data)
    return case if seed.series else case / f"clean{seed.suffix}"


@dataclass
class FuzzReport:
    tried: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    by_seed: dict[str, Counter[str]] = field(default_factory=dict)
    fields: Counter[str] = field(default_factory=Counter)
    decoded: Counter[str] = field(default_factory=Counter)  # images that decoded: same / changed voxels
    findings: list[dict[str, str]] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(v for k, v in self.outcomes.items() if k not in ("decoded", "CadxDataError"))


def fuzz(work: Path, n: int, seed: int = 0, time_limit: float | None = None, real_ct: bool = True) -> FuzzReport:
    """Run ``n`` mutations round-robin over the seeds (stops early after ``time_limit`` seconds)."""
    rng = np.random.default_rng(seed)
    seeds = make_seeds(work / "seeds", real_ct=real_ct)
    refs = {s.name: None if s.kind == "csv" else read_image(_write_clean(s, work / "ref" / s.name)).array
            for s in seeds}
    rep = FuzzReport(by_seed={s.name: Counter() for s in seeds})
    t0 = time.perf_counter()
    for i in range(n):
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
        s = seeds[i % len(seeds)]
        op, data = mutate(rng, s, work)
        case = work / "case"
        shutil.rmtree(case, ignore_errors=True)
        outcome, detail = run_one(s, data, case, refs[s.name])
        rep.tried += 1
        rep.outcomes[outcome] += 1
        rep.by_seed[s.name][f"{op}:{outcome}"] += 1
        if outcome == "CadxDataError":
            rep.fields[f"{s.name}:{detail}"] += 1
        elif outcome == "decoded" and detail:
            rep.decoded[detail] += 1
        elif outcome != "decoded" and len(rep.findings) < 50:
            rep.findings.append({"i": str(i), "seed": s.name, "op": op, "outcome": outcome, "detail": detail})
    rep.seconds = time.perf_counter() - t0
    return rep


# --- tests ----------------------------------------------------------------------------------------------------
def test_mutations_are_deterministic_and_change_the_input(tmp_path):
    seeds = make_seeds(tmp_path / "s", real_ct=False)
    a = [mutate(np.random.default_rng(7), s, tmp_path)[1] for s in seeds]
    b = [mutate(np.random.default_rng(7), s, tmp_path)[1] for s in seeds]
    assert a == b
    assert sum(x != s.data for x, s in zip(a, seeds, strict=True)) >= len(seeds) - 1


def test_clean_seeds_decode(tmp_path):
    for s in make_seeds(tmp_path / "s"):
        assert run_one(s, s.data, tmp_path / s.name) == ("decoded", ""), s.name


def test_known_bad_edits_are_one_line_errors(tmp_path):
    seeds = {s.name: s for s in make_seeds(tmp_path / "s", real_ct=False)}
    nii = seeds["nifti"]
    zero_dim = bytearray(nii.data)
    zero_dim[42:44] = struct.pack("<h", 0)
    assert run_one(nii, bytes(zero_dim), tmp_path / "a")[0] == "CadxDataError"
    for edits, fld in ([(42, 32767), (46, 0)], "dim"), ([(42, 32767), (70, 128)], "pixel data"):
        b = bytearray(nii.data)  # ITK zero-filled both (a zero axis read as 1; RGB bypasses nibabel)
        for off, v in edits:
            b[off:off + 2] = struct.pack("<h", v)
        assert run_one(nii, bytes(b), tmp_path / f"n{fld}") == ("CadxDataError", fld)
    one_d = bytearray(nii.data)  # dim[0] = 1: a 1-D "image" (was a ValueError wrapped at the boundary)
    one_d[40:42] = struct.pack("<h", 1)
    assert run_one(nii, bytes(one_d), tmp_path / "n1") == ("CadxDataError", "format")
    png = seeds["png"]
    assert run_one(png, png.data[:60], tmp_path / "b") == ("CadxDataError", "pixel data")
    tall = bytearray(png.data)  # IHDR height 100000 with a valid CRC: PIL zero-fills the missing rows
    tall[20:24] = struct.pack(">I", 100_000)
    tall[29:33] = struct.pack(">I", zlib.crc32(bytes(tall[12:29])) & 0xFFFFFFFF)
    assert run_one(png, bytes(tall), tmp_path / "t") == ("CadxDataError", "pixel data")
    csv = seeds["manifest"]
    assert run_one(csv, csv.data.replace(b"51", b"fifty"), tmp_path / "c") == ("CadxDataError", "age")
    quoted = csv.data.replace(b"mask.png,2 3", b"\"mask.png,2 3", 1)  # a quote opens a multi-line cell
    assert run_one(csv, quoted, tmp_path / "d")[0] == "CadxDataError"
    assert str(CadxDataError("a\nb", path="f.csv", field="x")) == "f.csv: x: a b"


def test_fuzz_readers_fast(tmp_path):
    """300 mutations (≈ 37 per seed), bounded to 20 s: every outcome is a decode or a one-line CadxDataError."""
    rep = fuzz(tmp_path, 300, seed=0, time_limit=20.0)
    assert rep.tried >= 100
    assert rep.failures == 0, rep.findings[:5]
    assert rep.outcomes["CadxDataError"] >= rep.tried // 4  # the mutations do reach the checks


@pytest.mark.slow
def test_fuzz_readers_10000(tmp_path):
    rep = fuzz(tmp_path, 10_000, seed=1)
    assert rep.tried == 10_000
    assert rep.failures == 0, rep.findings[:5]
