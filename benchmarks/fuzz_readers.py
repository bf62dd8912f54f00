"""Benchmark: 10,000 seeded mutations of real small inputs through the readers and the cohort check.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fuzz_readers.py [--n 10000] [--seed 1]``. The mutator,
the seeds and the pass criteria are those of ``tests/test_fuzz.py`` (its docstring lists what no reader can
detect). Writes ``benchmarks/results/fuzz.json``: inputs tried, outcomes (decoded / CadxDataError / findings by
exception type), how many decoded images have changed voxels, errors by seed and field, and the findings.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cadx.utils import atomic_write_json  # noqa: E402
from test_fuzz import check_cohort, fuzz  # noqa: E402  (the test module holds the mutator)

OUT = ROOT / "benchmarks" / "results" / "fuzz.json"

#: What the fuzzer found before the reader fixes (400–1,000-mutation runs, seeds 0 and 1) and the fix.
FIXED = [
    "DICOM with an unknown VR in PixelData (pydicom NotImplementedError on deferred parse): read_image now "
    "turns any unanticipated library exception into CadxDataError field 'format' naming the file",
    "PNG whose IHDR claims a huge size (PIL DecompressionBombError): CadxDataError field 'size'",
    "PNG whose IHDR height exceeds its complete zlib stream (PIL zero-fills the missing rows, read as "
    "100000x20): the IDAT length is checked against IHDR, CadxDataError field 'pixel data'",
    "NIfTI whose dim exceeds the voxel data (nibabel fails, ITK zero-filled, read as 4x12x32767): a scalar "
    "NIfTI nibabel cannot read is CadxDataError field 'pixel data'",
    "NIfTI whose header needs more voxel bytes than the file holds while nibabel is bypassed (RGB datatype, a "
    "zero dim read by ITK as 1; read as 4x12x32767 zero-filled): the file size (.nii) or gzip size trailer "
    "(.nii.gz) is checked against the header, field 'pixel data'; a zero axis is field 'dim'",
    "NIfTI with a negative pixdim (read as spacing -2.5): spacing must be finite and positive, field 'spacing'",
    "DICOM with Columns = 0 (read as a 16x0 image) and TIFF with a 0-length axis: field 'Rows/Columns' / "
    "'pixel data' (no voxels)",
    "DICOM PixelSpacing 0 or negative (read as spacing (-1, -5)): field 'PixelSpacing'",
    "NIfTI with dim[0] = 1 (ImageData ValueError, wrapped at the boundary): 'unsupported image dimension', "
    "field 'format'",
    "left wrapped on purpose: DICOM elements pydicom parses lazily (an unknown VR, a DS that is no number in "
    "ImagePositionPatient / BitsAllocated / PixelData) raise on first access; read_image names the file and "
    "the tag in one line (field 'format'). Parsing every element eagerly would reject real files whose "
    "irrelevant tags hold invalid values",
    "multi-line messages (JPEG 2000 plugin lists, a CSV cell with a newline): CadxDataError is always one line",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rep = fuzz(Path(tmp), args.n, seed=args.seed)
    exceptions = {k: v for k, v in rep.outcomes.items() if k not in ("decoded", "CadxDataError")}
    result = {
        "benchmark": "fuzz_readers",
        "inputs_tried": rep.tried,
        "seconds": round(rep.seconds, 1),
        "outcomes": dict(rep.outcomes.most_common()),
        "unhandled_exceptions_by_type": exceptions,
        "library_exceptions_wrapped_at_read_image": {k: v for k, v in rep.fields.items() if "(wrapped " in k},
        "decoded_without_error": rep.outcomes["decoded"],
        "decoded_images_vs_clean_seed": dict(rep.decoded),
        "cohort_check_included": check_cohort is not None,
        "by_seed": {k: dict(sorted(v.items())) for k, v in rep.by_seed.items()},
        "errors_by_seed_and_field": dict(rep.fields.most_common()),
        "findings": rep.findings,
        "found_and_fixed": FIXED,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_1": round(os.getloadavg()[0], 2)},
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fuzz_readers.py"
                   + (f" --n {args.n}" if args.n != 10_000 else "") + (f" --seed {args.seed}" if args.seed != 1
                                                                        else ""),
    }
    atomic_write_json(OUT, result)
    print(f"{rep.tried} inputs in {rep.seconds:.0f} s: {dict(rep.outcomes)}; wrote {OUT}")


if __name__ == "__main__":
    main()
