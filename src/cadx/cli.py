"""The ``cadx`` command line: a thin face over the library (nothing in the library imports it).

Every command's work lives in a library function; this module parses options, prints, and turns
:class:`~cadx.errors.CadxError` into one line on stderr and exit code 2 (no traceback).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from cadx.errors import CadxConfigError, CadxError
from cadx.studies import STUDIES

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="cadx: computer-aided diagnosis on medical images — readers, patient-level CV, "
                       "paper models, metrics with CIs, reports.")
datasets_app = typer.Typer(no_args_is_help=True, help="Dataset adapters: list them, describe a cohort.")
models_app = typer.Typer(no_args_is_help=True, help="Model registry.")
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
cache_app = typer.Typer(no_args_is_help=True, help="The preprocessed-item cache (input.cache): list and prune it.")
app.add_typer(cache_app, name="cache")

out = Console()
err = Console(stderr=True)

OptionList = Annotated[list[str] | None, typer.Option("--option", "-o", help="Adapter option key=value.")]
SetList = Annotated[list[str] | None, typer.Option("--set", "-s", help="Config override key=value.")]
ExecutorOpt = Annotated[str, typer.Option("--executor", help="Where folds (study: variants) run: serial (this "
                                          "process) or ray (Ray tasks side by side; docs/ray.md).")]
AddressOpt = Annotated[str | None, typer.Option("--address", help="With --executor ray: a running Ray cluster "
                                                "(auto, HOST:PORT or ray://HOST:PORT); default: local Ray on this "
                                                "machine's CPUs.")]
CpusOpt = Annotated[int, typer.Option("--cpus-per-task", help="With --executor ray: CPUs (and torch threads) per "
                                      "task.")]


def _print_json(obj: Any) -> None:
    from cadx.utils import dumps_json

    sys.stdout.write(dumps_json(obj) + "\n")


def _print_registry(registry: Any) -> None:
    """A name/description/options table of a :class:`cadx.registry.Registry` (options with their defaults)."""
    table = Table("name", "description", "options")
    for e in registry:
        table.add_row(e.name, e.description, registry.describe_options(e.name))
    out.print(table)


def _options(pairs: list[str] | None) -> dict[str, str]:
    from cadx.data.datasets import parse_options

    return parse_options(pairs)


# --- datasets ---------------------------------------------------------------------------------------------
@datasets_app.command("list")
def datasets_list() -> None:
    """List the registered dataset adapters."""
    from cadx.data.datasets import DATASETS

    _print_registry(DATASETS)


@datasets_app.command("describe")
def datasets_describe(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. lidc, busi, medmnist:breastmnist.")],
    root: Annotated[Path, typer.Option(help="Folder (or file) the dataset lives in.")],
    option: OptionList = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    fingerprint: Annotated[Path | None, typer.Option(help="Also write fingerprint.json here.")] = None,
) -> None:
    """Count studies, patients and classes of a cohort (and optionally write its fingerprint)."""
    from cadx.data.datasets import load_dataset

    cohort = load_dataset(name, root, **_options(option))
    desc = cohort.describe()
    if fingerprint is not None:
        desc["fingerprint"] = str(fingerprint)
        cohort.write_fingerprint(fingerprint, progress=not as_json)
    if as_json:
        _print_json(desc)
        return
    table = Table("key", "value", title=f"{name} @ {root}")
    for k, v in desc.items():
        table.add_row(str(k), json.dumps(v) if isinstance(v, dict | list) else str(v))
    out.print(table)


@datasets_app.command("check")
def datasets_check(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. manifest, lidc, busi.")],
    root: Annotated[Path, typer.Option(help="Folder (or file) the dataset lives in.")],
    option: OptionList = None,
    all_: Annotated[bool, typer.Option("--all", help="Report every bad item (default: stop at the first).")] = False,
    allow_unlabelled: Annotated[bool, typer.Option(help="Unlabelled studies (empty/NaN/NA/None) are allowed.")
                                ] = False,
    need_lesion: Annotated[bool, typer.Option(help="An empty or missing mask is an error.")] = False,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: CPUs, at most 8).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the problems as JSON.")] = False,
) -> None:
    """Open every image and mask in full and check it: decodes to the promised size, finite voxels, positive
    spacing, mask shape/values, boxes, labels, attributes. Exit 2 with `error: FILE: FIELD: what` lines."""
    from cadx.data.check import check_cohort, summary
    from cadx.data.datasets import load_dataset

    opts = _options(option)
    cohort = load_dataset(name, root, **opts)
    problems = check_cohort(cohort, allow_unlabelled=allow_unlabelled, need_lesion=need_lesion, all_errors=all_,
                            workers=workers, progress=not as_json, recipe=(name, str(root), dict(opts)))
    errors = [p for p in problems if p.severity == "error"]
    if as_json:
        _print_json({"summary": summary(cohort, problems), "problems": [p.as_dict() for p in problems]})
    else:
        for p in problems if all_ else errors[:1]:
            (err if p.severity == "error" else out).print(p.line(), highlight=False, soft_wrap=True, markup=False)
        if not errors:
            out.print(summary(cohort, problems), highlight=False, soft_wrap=True, markup=False)
    if errors:
        raise typer.Exit(2)


# --- splits -----------------------------------------------------------------------------------------------
@app.command("splits")
def splits_cmd(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    root: Annotated[Path, typer.Option(help="Dataset folder or file.")],
    out_file: Annotated[Path, typer.Option("--out", help="splits.json to write.")],
    folds: Annotated[int, typer.Option(help="Number of folds.")] = 5,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    val_fraction: Annotated[float, typer.Option(help="Validation share carved from training patients.")] = 0.0,
    official: Annotated[bool, typer.Option(help="Honour the dataset's official split when it has one.")] = True,
    option: OptionList = None,
) -> None:
    """Write patient-level stratified folds (leakage-checked) to a splits.json."""
    from cadx.data.datasets import load_dataset
    from cadx.data.splits import make_splits

    cohort = load_dataset(name, root, **_options(option))
    splits = make_splits(cohort, folds=folds, seed=seed, val_fraction=val_fraction, use_official=official)
    splits.check(cohort)
    splits.save(out_file)
    table = Table("fold", "train", "val", "test", title=f"{len(cohort.patients)} patients → {out_file}")
    for f in splits.folds:
        table.add_row(str(f.fold), str(len(f.train)), str(len(f.val)), str(len(f.test)))
    out.print(table)


# --- models -----------------------------------------------------------------------------------------------
@models_app.command("list")
def models_list() -> None:
    """List the registered models."""
    from cadx.models import catalog_rows  # the static table: no network (torch, MONAI) is imported

    table = Table("name", "description", "options")
    for row in catalog_rows():
        table.add_row(*row)
    out.print(table)


# --- item cache -------------------------------------------------------------------------------------------
def _gb(n: int) -> str:
    return f"{n / 1024**3:.2f} GB"


@cache_app.command("list")
def cache_list() -> None:
    """The item cache's entries, least recently used first, and its size against the cap."""
    from cadx.pipeline.item_cache import cache_entries, cache_root, max_bytes_from_env

    rows, cap = cache_entries(), max_bytes_from_env()
    table = Table("entry", "kind", "cohort", "studies", "size", "last used", title=str(cache_root()))
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["last_used"]))
        table.add_row(r["name"][:52], str(r["kind"] or "incomplete"), str(r["cohort"] or ""), str(r["studies"] or ""),
                      _gb(r["bytes"]), when)
    out.print(table)
    out.print(f"{len(rows)} entries, {_gb(sum(r['bytes'] for r in rows))}; cap "
              f"{_gb(cap) if cap else 'none'} (CADX_ITEM_CACHE_MAX_GB)")


@cache_app.command("prune")
def cache_prune(
    max_gb: Annotated[float | None, typer.Option("--max-gb", help="Delete least recently used entries until the "
                                                 "cache holds at most this (default: the cap).")] = None,
    older_than_days: Annotated[float | None, typer.Option("--older-than-days", help="Delete entries unused for "
                                                          "longer.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Delete every entry.")] = False,
) -> None:
    """Delete cache entries now (incomplete ones always); runs recreate what they need."""
    from cadx.pipeline.item_cache import max_bytes_from_env, prune

    if max_gb is not None and max_gb < 0:
        raise CadxConfigError(f"--max-gb: {max_gb} < 0")
    cap = 0 if all_ else int(max_gb * 1024**3) if max_gb is not None else max_bytes_from_env()
    gone = prune(max_bytes=cap, older_than=None if older_than_days is None else older_than_days * 86400.0,
                 grace=0.0)
    out.print(f"deleted {len(gone)} entries, {_gb(sum(r['bytes'] for r in gone))}")


# --- experiments ------------------------------------------------------------------------------------------
@app.command("cv")
def cv_cmd(
    config: Annotated[Path, typer.Argument(help="Experiment YAML.")],
    set_: SetList = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/<name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue a killed run; finished folds are skipped.")] = False,
    data_root: Annotated[Path | None, typer.Option(help="Shortcut for --set data.root=DIR.")] = None,
    skip_check: Annotated[bool, typer.Option(help="Skip the full data check (cohort already passed `cadx datasets "
                                             "check`); recorded in the run folder.")] = False,
    seeds: Annotated[str | None, typer.Option(help="Training seeds, e.g. 0,1,2: one run per seed in OUT/seed_<s>/ "
                                              "on the same splits (config seed), then OUT/seeds.json, "
                                              "OUT/report.md (mean ± SD, seed ensemble); finished seeds are "
                                              "skipped; with --executor ray seeds × folds run side by side.")
                  ] = None,
    final: Annotated[bool, typer.Option("--final", help="Also train the final model on every study into "
                                        "OUT/final (what `cadx train` writes), as one more task beside the folds "
                                        "(= --set cv.final=true; network runs).")] = False,
    executor: ExecutorOpt = "serial",
    address: AddressOpt = None,
    cpus_per_task: CpusOpt = 1,
) -> None:
    """Patient-level cross-validation: out-of-fold predictions, metrics with CIs, report. The cohort is checked
    in full first (`cadx datasets check`)."""
    from cadx.config import load_config
    from cadx.runs import run_cv
    from cadx.runs.executors import make_executor

    runner = make_executor(executor, address, cpus_per_task)
    sets = list(set_ or []) + ([f"data.root={data_root}"] if data_root else []) + (
        ["data.checked=true"] if skip_check else []) + (["cv.final=true"] if final else [])
    cfg = load_config(config, sets)
    run_dir = out_dir or Path("runs") / cfg.name
    if seeds is not None:
        from cadx.runs.seeds import parse_seeds, run_seeds

        try:
            record = run_seeds(cfg, parse_seeds(seeds), run_dir, executor=runner)
        finally:
            runner.close()
        for k in ("auc", "accuracy"):
            m = record["metrics"].get(k)
            if m and m["mean"] is not None:
                sd = "" if m["sd"] is None else f" ± {m['sd']:.3f}"
                out.print(f"{k}: {m['mean']:.3f}{sd} over seeds; seed ensemble {m['ensemble']}")
        out.print(f"seed runs and report: {run_dir}")
        return
    try:
        metrics = run_cv(cfg, run_dir, resume=resume, executor=runner)
    finally:
        runner.close()
    _print_pooled(metrics.get("pooled", {}), title=f"{cfg.name}: pooled out-of-fold")
    out.print(f"run folder: {run_dir}")


@app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Argument(help="Experiment YAML.")],
    set_: SetList = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder (default runs/<name>).")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Shortcut for --set data.root=DIR.")] = None,
    skip_check: Annotated[bool, typer.Option(help="Skip the full data check (cohort already passed `cadx datasets "
                                             "check`); recorded in the run folder.")] = False,
) -> None:
    """Train one model on all studies (for `cadx predict` on new studies); the cohort is checked in full first."""
    from cadx.config import load_config
    from cadx.runs import train_final

    sets = list(set_ or []) + ([f"data.root={data_root}"] if data_root else []) + (
        ["data.checked=true"] if skip_check else [])
    cfg = load_config(config, sets)
    path = train_final(cfg, out_dir or Path("runs") / cfg.name)
    out.print(f"final model: {path}")


@app.command("predict")
def predict_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder from `cadx cv` or `cadx train`.")],
    study: Annotated[Path, typer.Option(help="DICOM folder, volume or image file.")],
    mask: Annotated[Path | None, typer.Option(help="Optional lesion mask (ROI inputs).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Segmentation runs: where the predicted mask "
                                                 "goes (default <run>/predictions).")] = None,
    covariate: Annotated[list[str] | None, typer.Option(help="name=number study metadata the run's input uses, "
                                                        "e.g. diameter_mm=12.5 (repeatable).")] = None,
    fold: Annotated[int | None, typer.Option(help="Predict with fold K's model and its decision parameters (for a "
                                             "study of fold K's test set: the same answer as its row in the run's "
                                             "predictions.csv).")] = None,
    allow_partial: Annotated[bool, typer.Option(help="Use the finished folds of a run with an unfinished fold "
                                                "(says how many of how many on stderr).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    backend: Annotated[str, typer.Option(help="torch (the checkpoints) or onnx (RUN's `cadx export`, in RUN/onnx "
                                         "or RUN itself, run by onnxruntime; same preprocessing and decision).")]
    = "torch",
) -> None:
    """Predict one study with the run's final model, else its fold ensemble (mean outputs, mean priors/thresholds),
    or one fold's model (--fold); aggregation and decision as in the run's CV. Segmentation runs write the mask."""
    from cadx.runs import predict_study

    cov: dict[str, float] = {}
    for k, v in (_options(covariate) if covariate else {}).items():   # no covariates: no dataset adapters imported
        try:
            cov[k] = float(v)
        except ValueError:
            raise typer.BadParameter(f"--covariate {k}={v}: not a number") from None
    result = predict_study(run, study, mask=mask, out_dir=out_dir, covariates=cov, fold=fold,
                           allow_partial=allow_partial, backend=backend)
    if as_json:
        _print_json(result)
        return
    table = Table("class", "probability", title=f"{study} → {result.get('prediction')}")
    for k, v in result.get("probabilities", {}).items():
        table.add_row(str(k), f"{v:.3f}")
    out.print(table)
    for k, v in (result.get("attributes") or {}).items():
        out.print(f"{k}: {v:.3f}")
    if result.get("mask"):
        out.print(f"mask: {result['mask']} ({result.get('lesion_voxels')} lesion voxels)")


@app.command("export")
def export_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder from `cadx cv` or `cadx train`.")],
    fmt: Annotated[str, typer.Option("--format", help="Export format (onnx).")] = "onnx",
    fold: Annotated[str | None, typer.Option(help="K = fold K's model, final = the final model (default: final/ "
                                             "when trained, else every finished fold: the ensemble).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Export folder (default RUN/onnx).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 17).")] = 17,
    allow_partial: Annotated[bool, typer.Option(help="Export the finished folds of a run with an unfinished fold.")]
    = False,
) -> None:
    """Export a run's models to ONNX (one model.onnx per fold or the final model, dynamic batch axis) with
    export.json (preprocessing, classes, positive class, decision/calibration fits, aggregation); predict with
    `cadx predict OUT --study S --backend onnx`."""
    from cadx.runs.export import export_run

    folder = export_run(run, out_dir, fold=fold, fmt=fmt, opset=opset, allow_partial=allow_partial)
    out.print(f"export: {folder / 'export.json'}")


@app.command("export-dicom")
def export_dicom_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder from `cadx cv` or `cadx train`.")],
    study: Annotated[Path, typer.Option(help="Folder of one DICOM series (single-frame images).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where seg.dcm, sr.dcm and export.json go.")],
    series_uid: Annotated[str | None, typer.Option(help="The series to use when the folder holds several.")] = None,
    fold: Annotated[int | None, typer.Option(help="Predict with fold K's model (default: final/, else the folds' "
                                             "ensemble).")] = None,
    allow_partial: Annotated[bool, typer.Option(help="Use the finished folds of a run with an unfinished fold.")]
    = False,
    stow: Annotated[str | None, typer.Option(help="DICOMweb root URL to STOW seg.dcm/sr.dcm to, e.g. "
                                             "http://127.0.0.1:8042/dicom-web.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print export.json.")] = False,
) -> None:
    """Predict a DICOM series with the run and write the answer as DICOM: seg.dcm (segmentation runs: the mask as a
    DICOM SEG referencing the series) and sr.dcm (TID 1500 SR: finding, probability, attributes, model, operating
    point); --stow sends both to a PACS (docs/pacs.md)."""
    from cadx.runs.dicom_export import export_dicom

    summary = export_dicom(run, study, out_dir, fold=fold, allow_partial=allow_partial, series_uid=series_uid)
    if stow:
        from cadx.dicom.pacs import store

        files = [summary[k]["path"] for k in ("seg", "sr") if summary.get(k)]
        summary["stowed"] = store(stow, files)
    if as_json:
        _print_json(summary)
        return
    out.print(f"{summary['wording']}")
    for k in ("seg", "sr"):
        if summary.get(k):
            out.print(f"{k}: {summary[k]['path']} (SOPInstanceUID {summary[k]['SOPInstanceUID']})")
    if stow:
        out.print(f"stored in {stow}: {len(summary['stowed'])} instance(s)")


@app.command("evaluate")
def evaluate_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    dataset: Annotated[str, typer.Option(help="Dataset name of the external cohort.")],
    root: Annotated[Path, typer.Option(help="Its folder or file.")],
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-o", help="Adapter option key=value; overrides the run's own data.options (which apply when "
        "the dataset is the run's).")] = None,
    fold: Annotated[str | None, typer.Option(
        help="Score with fold K's model, or 'own': each patient with the model of the fold that held it out "
        "(reproduces the CV rows on the run's cohort). Default: final/, else the mean of the fold models.")] = None,
    name: Annotated[str | None, typer.Option(help="Folder name under RUN/external/ (default: from the dataset, "
                                                  "options and --fold).")] = None,
    allow_partial: Annotated[bool, typer.Option(help="Use the finished folds of a run with an unfinished fold "
                                                "(says how many of how many on stderr).")] = False,
    skip_check: Annotated[bool, typer.Option(help="Skip the full data check (cohort already passed `cadx datasets "
                                             "check`); recorded in the run folder.")] = False,
    tta: Annotated[str | None, typer.Option(
        help="Test-time augmentation instead of the run's eval.tta: none or flips (mean over the identity and each "
             "spatial axis flipped; with --fold own it re-scores the CV).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the pooled metrics as JSON.")] = False,
) -> None:
    """External validation: apply a trained run to another cohort, scored as its CV was (metrics with CIs in
    RUN/external/NAME/, an external-validation section beside the CV figures in the run's report)."""
    from cadx.runs import evaluate_run

    pooled = evaluate_run(run, dataset, root, _options(option), name=name, fold=fold, allow_partial=allow_partial,
                          check=not skip_check, log=None if as_json else out.print, tta=tta)  # overlap line first
    if as_json:
        _print_json(pooled)
        return
    _print_pooled(pooled, title=f"{run} on {dataset}")


@app.command("report")
def report_cmd(
    runs: Annotated[list[Path], typer.Argument(
        help="Run folders, or folders of runs (e.g. runs/demo: every run folder inside is reported).")],
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Where report.html/.md go (default: the folder given; several: <common parent>/report).")]
    = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an existing report even if it names other runs or holds more tables/figures.")]
    = False,
) -> None:
    """Write report.html (self-contained) and report.md for one or several runs side by side.

    An existing report that this one would make poorer (a run dropped, fewer tables/figures) is kept and the
    command fails, unless --force."""
    from cadx.report import write_report

    html, md = write_report(list(runs), out_dir, keep_richer=not force)
    out.print(f"report: {html}\nmarkdown: {md}")


@app.command("ensemble")
def ensemble_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Finished run folders with the same test studies (splits).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the ensemble's predictions/metrics/report.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the pooled metrics as JSON.")] = False,
) -> None:
    """Equal-weight mean of several runs' study probabilities (seed or model ensemble), evaluated with CIs."""
    from cadx.runs.ensemble import ensemble_runs

    m = ensemble_runs(runs, out_dir)
    if as_json:
        _print_json(m["pooled"])
        return
    _print_pooled(m["pooled"], title=f"ensemble of {len(runs)} runs → {out_dir}")


@app.command("demo")
def demo_cmd(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs/demo"),
    set_: SetList = None,
) -> None:
    """Build the synthetic CT cohort, cross-validate ResNet-18 and DMRN, write the report; prints the run
    folders to use with `cadx predict` (--set applies to both demo configs, e.g. train.epochs=2)."""
    from cadx.runs import run_demo

    run_demo(out_dir, list(set_ or []), console=out)


@app.command("serve")
def serve_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run folders: the first classifier run is the worklist's model; "
                                               "segmentation / detection runs add mask / box overlays.")],
    studies: Annotated[Path | None, typer.Option(help="A folder of studies (each DICOM folder or image file in it) "
                                                 "or a cadx manifest CSV.")] = None,
    pacs: Annotated[str | None, typer.Option(help="DICOMweb root URL whose studies are listed, e.g. "
                                             "http://127.0.0.1:8042/dicom-web.")] = None,
    host: Annotated[str, typer.Option(help="Bind address; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    db: Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL (default sqlite:///RUN/serve.sqlite3; "
                                           "postgresql+psycopg://user@host/db for a shared server).")] = None,
    token: Annotated[str | None, typer.Option(help="Access token (else env CADX_SERVE_TOKEN): every request needs "
                                              "'Authorization: Bearer TOKEN' or the cookie /login?token= sets.")
                     ] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Size limit of a DICOM upload.")] = 200.0,
    cors_origin: Annotated[list[str] | None, typer.Option(help="Origin allowed cross-site (repeatable); default "
                                                          "none.")] = None,
    threads: Annotated[int, typer.Option(help="torch threads (0 = torch's default).")] = 1,
) -> None:
    """The reading room: worklist, viewer and reader feedback in the browser (docs/serve.md)."""
    import logging  # configured only when serving (the other commands print through rich)

    import uvicorn  # the ASGI server: loaded only when serving

    from cadx.serve import ServeSettings, create_app

    _threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = ServeSettings(runs=list(runs), studies=studies, pacs=pacs, host=host, port=port, db_url=db,
                             token=token, max_upload_mb=max_upload_mb, cors_origins=list(cors_origin or []))
    application = create_app(settings)
    err.print(f"cadx serve: http://{host}:{port}/ ({len(runs)} run(s))", highlight=False)
    uvicorn.run(application, host=host, port=port, access_log=False, log_level="info")


study_app = typer.Typer(no_args_is_help=True, help="The paper studies: each derives its runs from one config, runs "
                        "them through the engine and writes its tables, figures, notes and report in one folder.")
app.add_typer(study_app, name="study")

Threads = Annotated[int, typer.Option(help="torch threads (0 = torch's default; 1 is much faster on a busy 2-core "
                                           "machine).")]


def _study_command(name: str) -> Any:
    """``@study_app.command`` for the study ``name`` of :data:`cadx.studies.STUDIES` (its description = the help)."""
    return study_app.command(name, help=STUDIES[name].description)


def _threads(n: int) -> None:
    if n > 0:
        import torch  # heavy: loaded only when a study runs

        torch.set_num_threads(n)


def _input_mode(mode: str) -> Any:
    if mode not in ("paper", "reduced"):
        raise CadxConfigError(f"--input-mode: expected paper or reduced, got {mode!r}")
    return mode


def _split_list(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _int_list(option: str, text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CadxConfigError(f"{option}: expected comma-separated integers, got {text!r}") from None


def _yaml_pairs(option: str, pairs: list[str] | None) -> dict[str, Any]:
    """``key=value`` items with YAML values (``width=8`` → ``{"width": 8}``)."""
    kv: dict[str, Any] = {}
    for item in pairs or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CadxConfigError(f"{option} {item!r}: expected key=value")
        kv[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return kv


@_study_command("anatomy")
def study_anatomy_cmd(
    config: Annotated[Path, typer.Argument(help="configs/papers/anatomy_mednist.yaml")],
    out_dir: Annotated[Path, typer.Option("--out", help="Study folder.")] = Path("runs/anatomy"),
    nets: Annotated[str | None, typer.Option(help="Nets, comma separated (default: all four).")] = None,
    input_mode: Annotated[str, typer.Option(help="paper (each net's paper input size) or reduced.")] = "paper",
    sizes: Annotated[str | None, typer.Option(help="TRAIN,VAL,TEST images for a reduced split.")] = None,
    naive: Annotated[bool, typer.Option(help="Also run the naive per-image split.")] = True,
    naive_nets: Annotated[str | None, typer.Option(help="Nets for the naive split (default: all).")] = None,
    set_: SetList = None,
    resume: Annotated[bool, typer.Option(help="Reuse finished runs with the same config.")] = True,
    threads: Threads = 0,
) -> None:
    from cadx.config import load_config
    from cadx.studies.anatomy import PAPER_ORDER, run_anatomy_study

    cfg = load_config(config, list(set_ or []))
    part_sizes = None
    if sizes:
        vals = _int_list("--sizes", sizes)
        if len(vals) != 3:
            raise CadxConfigError(f"--sizes: expected TRAIN,VAL,TEST, got {sizes!r}")
        part_sizes = dict(zip(("train", "val", "test"), vals, strict=True))
    _threads(threads)
    df = run_anatomy_study(cfg, out_dir, nets=_split_list(nets) or list(PAPER_ORDER), naive_split=naive,
                           input_mode=_input_mode(input_mode), sizes=part_sizes, resume=resume,
                           naive_nets=_split_list(naive_nets))
    out.print(df.to_string(index=False))


@_study_command("learning-curve")
def study_learning_curve_cmd(
    config: Annotated[Path, typer.Argument(help="configs/papers/anatomy_mednist.yaml")],
    sizes: Annotated[str, typer.Option(help="Training-set sizes in images, comma separated (7 as in Fig. 13).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs/learning_curve"),
    nets: Annotated[str | None, typer.Option(help="Nets, comma separated (default: all four).")] = None,
    input_mode: Annotated[str, typer.Option(help="paper (each net's paper input size) or reduced.")] = "paper",
    test_size: Annotated[int | None, typer.Option(help="Test images (default: the whole fixed test set).")] = None,
    set_: SetList = None,
    threads: Threads = 0,
) -> None:
    from cadx.config import load_config
    from cadx.studies.anatomy import PAPER_ORDER, run_learning_curve

    cfg = load_config(config, list(set_ or []))
    size_list = _int_list("--sizes", sizes)
    _threads(threads)
    df = run_learning_curve(cfg, size_list, out_dir, nets=_split_list(nets) or list(PAPER_ORDER),
                            input_mode=_input_mode(input_mode), test_size=test_size)
    out.print(f"{len(df)} points → {out_dir}")


@_study_command("dmrn")
def study_dmrn_cmd(
    config: Annotated[Path, typer.Argument(help="configs/papers/dmrn_adrenal.yaml or dmrn_adrenalmnist3d.yaml")],
    out_dir: Annotated[Path, typer.Option("--out", help="Study folder.")] = Path("runs/dmrn"),
    models: Annotated[str | None, typer.Option(help="Models/variants, comma separated, or all (default set).")]
    = None,
    tsne: Annotated[bool, typer.Option(help="t-SNE figures of DMRN and ResNet embeddings (Fig. 5).")] = True,
    network: Annotated[list[str] | None, typer.Option(
        help="Model kwarg key=value for every network variant (not hc_svm), e.g. width=8 (repeatable).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Override key=value of the base (DMRN) config; every model derives from it.")] = None,
    threads: Threads = 0,
) -> None:
    from cadx.config import load_config
    from cadx.studies.dmrn import run_dmrn_study

    cfg = load_config(config, list(set_ or []))
    kwargs = _yaml_pairs("--network", network)
    _threads(threads)
    df = run_dmrn_study(cfg, out_dir, models=_split_list(models), tsne=tsne, network_kwargs=kwargs)
    out.print(df.to_string(index=False))


@_study_command("mtmr")
def study_mtmr_cmd(
    config: Annotated[Path, typer.Argument(help="configs/papers/mtmr_lidc.yaml")],
    out_dir: Annotated[Path, typer.Option("--out", help="Study folder.")] = Path("runs/mtmr"),
    variants: Annotated[str | None, typer.Option(help="mtmr,no_rank,no_reg (default: all three).")] = None,
    regressors: Annotated[bool, typer.Option(help="LASSO/elastic-net Table III baselines.")] = True,
    set_: SetList = None,
    threads: Threads = 0,
) -> None:
    from cadx.config import load_config
    from cadx.studies.mtmr import VARIANTS, run_mtmr_study

    cfg = load_config(config, list(set_ or []))
    _threads(threads)
    metrics = run_mtmr_study(cfg, out_dir, variants=_split_list(variants) or list(VARIANTS), regressors=regressors)
    _print_pooled(metrics.get("pooled", {}), title="MTMR-Net pooled out-of-fold")
    out.print(f"study folder: {out_dir}")


@_study_command("imbalance")
def study_imbalance_cmd(
    config: Annotated[Path, typer.Argument(help="Study YAML, e.g. configs/papers/imbalance_mednist.yaml.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Study folder (results.csv, plots, summary.md).")]
    = Path("runs/imbalance"),
    set_: Annotated[list[str] | None, typer.Option(
        "--set", "-s", help="Override key=value: study.* and experiment.* address those parts, any other key the "
        "experiment (train.epochs=2).")] = None,
    resume: Annotated[bool, typer.Option(help="Skip grid cells already in results.csv.")] = True,
    threads: Threads = 0,
) -> None:
    from cadx.studies.imbalance import load_study_config, run_imbalance_study

    cfg = load_study_config(config, list(set_ or []))
    _threads(threads)
    df = run_imbalance_study(cfg, out_dir, resume=resume)
    out.print(f"{len(df)} runs; summary: {out_dir / 'summary.md'}")


@_study_command("segmentation")
def study_segmentation_cmd(
    runs: Annotated[list[str] | None, typer.Argument(
        help="Runs (unet_lgg, scnet_lgg, scnet_lgg_no2step, scnet_busi_grouped, scnet_busi_naive) or groups "
        "(unet, scnet); default all.")] = None,
    work_dir: Annotated[Path, typer.Option("--work", help="Folder of the run folders.")] = Path("runs/seg"),
    out_dir: Annotated[Path, typer.Option("--out", help="Results folder (summary.md/json, copies of small files).")]
    = Path("runs/seg_results"),
    project: Annotated[Path, typer.Option(help="Project folder holding configs/papers/.")] = Path("."),
    threads: Threads = 1,
) -> None:
    from cadx.studies.segmentation import run_segmentation_study

    _threads(threads)
    summary = run_segmentation_study(work_dir, out_dir, runs, project=project,
                                     on_run=lambda name, m: out.print(f"{name}: {m.get('run', {}).get('seconds')} s"))
    out.print(f"{len(summary['runs'])} runs; summary: {out_dir / 'summary.md'}")


@_study_command("points-lidc")
def study_points_lidc_cmd(
    config: Annotated[Path | None, typer.Argument(help="Study YAML (benchmarks/results/points_lidc/config.yaml); "
                                                       "none = defaults.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Study folder.")] = Path("runs/points_lidc"),
) -> None:
    from cadx.studies.points import load_points_config, run_points_lidc

    m = run_points_lidc(load_points_config(config), out_dir)
    for name, (auc, lo, hi) in m["auc"].items():
        out.print(f"{name}: AUC {auc:.3f} [{lo:.3f}, {hi:.3f}]")
    out.print(f"report: {out_dir / 'report.md'}")


# --- points (thesis A.7: point systems and the genetic algorithm) --------------------------------------------
points_app = typer.Typer(no_args_is_help=True, help="Point systems (ACR / AI TI-RADS or your YAML): score a "
                         "feature table, or optimise the points with a genetic algorithm (docs/points.md).")
app.add_typer(points_app, name="points")
PointsSystem = Annotated[str, typer.Option("--system", help="acr, ai or a system YAML file.")]
PointsLabel = Annotated[str, typer.Option("--label", help="Binary label column (0/1, benign/malignant).")]
PointsSize = Annotated[str | None, typer.Option("--size-column", help="Maximum nodule size in mm (none: every "
                                                "nodule meets every size threshold).")]
PointsOut = Annotated[Path, typer.Option("--out", help="Output folder.")]


@points_app.command("fit")
def points_fit_cmd(
    table: Annotated[Path, typer.Argument(help="Feature table CSV: one column per category + the label.")],
    system: PointsSystem, label: PointsLabel, out_dir: PointsOut, size_column: PointsSize = None,
    test_split: Annotated[str, typer.Option(help="none | last:N | column:NAME | fraction:F")] = "none",
    folds: Annotated[int, typer.Option(help="Patient-grouped CV folds (GA tuning; out-of-fold evaluation "
                                            "without a test split).")] = 3,
    config: Annotated[Path | None, typer.Option(help="GA settings YAML (ga, grid, seed, n_resamples keys of the "
                                                     "points study config; default grid: population 50/100 x "
                                                     "generations 25/50 x indpb 0.05/0.1).")] = None,
) -> None:
    """Optimise the points with DEAP's GA (hyper-parameters by inner CV), compare with the baseline system."""
    from cadx.studies.points import load_points_config, run_points_fit

    cfg = load_points_config(config)
    m = run_points_fit(table, system, label, out_dir, size_column=size_column, test_split=test_split, folds=folds,
                       grid=cfg.ga_grid(), n_resamples=cfg.n_resamples, seed=cfg.seed)
    for tag, s in m["systems"].items():
        out.print(f"{tag}: AUC {s['auc'][0]:.3f} [{s['auc'][1]:.3f}, {s['auc'][2]:.3f}], sensitivity "
                  f"{s['sensitivity']['x']}/{s['sensitivity']['n']}, specificity "
                  f"{s['specificity']['x']}/{s['specificity']['n']}")
    out.print(f"report: {out_dir / 'report.md'}")


@points_app.command("score")
def points_score_cmd(
    table: Annotated[Path, typer.Argument(help="Feature table CSV: one column per category + the label.")],
    system: PointsSystem, label: PointsLabel, out_dir: PointsOut, size_column: PointsSize = None,
    baseline: Annotated[str | None, typer.Option(help="A second system to compare against (acr, ai, YAML).")]
    = None,
    n_resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 2000,
) -> None:
    """Score a feature table with a point system (optionally against a baseline system)."""
    from cadx.studies.points import run_points_score

    m = run_points_score(table, system, label, out_dir, size_column=size_column, baseline=baseline,
                         n_resamples=n_resamples)
    for tag, s in m["systems"].items():
        out.print(f"{tag}: AUC {s['auc'][0]:.3f} [{s['auc'][1]:.3f}, {s['auc'][2]:.3f}], sensitivity "
                  f"{s['sensitivity']['x']}/{s['sensitivity']['n']}, specificity "
                  f"{s['specificity']['x']}/{s['specificity']['n']}")
    out.print(f"report: {out_dir / 'report.md'}")


@_study_command("anomaly")
def study_anomaly_cmd(
    config: Annotated[Path, typer.Argument(help="configs/papers/anomaly_lgg.yaml or anomaly_busi.yaml")],
    out_dir: Annotated[Path, typer.Option("--out", help="Study folder (report.md, per_image.csv, figures/).")]
    = Path("runs/anomaly"),
    set_: SetList = None,
    resume: Annotated[bool, typer.Option(help="Reuse splits.json and continue the GAN from its last epoch.")] = True,
    threads: Threads = 1,
) -> None:
    from cadx.studies.anomaly import load_study_config, run_anomaly_study

    cfg = load_study_config(config, list(set_ or []))
    _threads(threads)
    metrics = run_anomaly_study(cfg, out_dir, resume=resume)
    for r in metrics["table"]:
        out.print(f"{r['score']:>6} {r['map']:>8}: ratio {r['mean']:.3f} (SD {r['sd']:.3f}), pixel AUROC "
                  f"{r['auroc_mean']:.3f} (pooled {r['auroc_pooled']:.3f}), {r['images']} images")
    out.print(f"report: {out_dir / 'report.md'} ({metrics['seconds']['total']:.0f} s)")


@_study_command("calipers")
def study_calipers_cmd(
    config: Annotated[Path, typer.Argument(help="configs/papers/calipers_busi.yaml")],
    out_dir: Annotated[Path, typer.Option("--out", help="Study folder (report.md, summary.json, Dice CSVs, "
                                                        "detector.json, learning_curve.png).")]
    = Path("runs/calipers"),
    set_: SetList = None,
    project: Annotated[Path, typer.Option(help="Folder the config's relative paths start from.")] = Path("."),
) -> None:
    from cadx.studies.calipers import load_calipers_config, run_calipers_study

    cfg = load_calipers_config(config, _yaml_pairs("--set", set_))
    summary = run_calipers_study(cfg, out_dir, project=project, log=out.print)
    for r in summary["modes"]:
        out.print(f"{r['mode']:>14}: Dice mean {r['dice_mean']:.3f}, median {r['dice_median']:.3f} (n={r['n']})")
    out.print(f"report: {out_dir / 'report.md'} ({summary['seconds']:.0f} s)")


@_study_command("multitask")
def study_multitask_cmd(
    config: Annotated[Path, typer.Argument(help="configs/papers/multitask_lidc.yaml")],
    out_dir: Annotated[Path, typer.Option("--out", help="Study folder (multitask/ and single/ runs, report.md, "
                                                        "cases.csv, reader_comparison.csv).")]
    = Path("runs/multitask_lidc"),
    variants: Annotated[str | None, typer.Option(help="multitask,single (default both; multitask required).")]
    = None,
    set_: SetList = None,
    threads: Threads = 0,
) -> None:
    from cadx.evaluation.multiplicity import format_p
    from cadx.studies.multitask import VARIANTS, load_study_config, run_multitask_study

    cfg = load_study_config(config, list(set_ or []))
    _threads(threads)
    m = run_multitask_study(cfg, out_dir, variants=_split_list(variants) or list(VARIANTS))
    auc = m["study"]["auc"]
    for v, r in auc["variants"].items():
        out.print(f"{v}: AUC {_fmt(r['auc'])} {r['ci']}")
    out.print(f"paired bootstrap p (multi − single AUC) = {format_p(auc['p_value'])}; report: "
              f"{out_dir / 'report.md'}")


@_study_command("radiogenomics")
def study_radiogenomics_cmd(
    config: Annotated[Path, typer.Argument(help="configs/papers/radiogenomics_lgg.yaml")],
    out_dir: Annotated[Path, typer.Option("--out", help="Study folder (report.md, features.csv, hypotheses.csv, "
                                                        "table3_auc.csv, power.csv, dice.csv, results.json).")]
    = Path("runs/radiogenomics"),
    set_: SetList = None,
    threads: Threads = 1,
) -> None:
    from cadx.evaluation.multiplicity import format_p
    from cadx.studies.radiogenomics import load_radiogenomics_config, run_radiogenomics_study

    cfg = load_radiogenomics_config(config, list(set_ or []))
    _threads(threads)
    res = run_radiogenomics_study(cfg, out_dir)
    for r in res["hypotheses"]:
        out.print(f"{r['source']:>9} {r['hypothesis']:<34} n={r['n']:<3} p={format_p(r['p'])} "
                  f"Bonferroni {format_p(r['p_bonferroni'])} Holm {format_p(r['p_holm'])}")
    out.print(f"report: {out_dir / 'report.md'} ({res['seconds']:.0f} s)")


@_study_command("detection")
def study_detection_cmd(
    config: Annotated[Path, typer.Argument(help="configs/papers/detection_lgg.yaml or detection_busi.yaml")],
    out_dir: Annotated[Path, typer.Option("--out", help="Study folder (runs/<name>_<loss>/, report.md, "
                                                        "summary.json, froc_lesion.png, froc_patient.png).")]
    = Path("runs/detection"),
    losses: Annotated[str | None, typer.Option(help="Objectness losses, comma separated (bce, weighted_bce, focal, "
                                                    "reduced_focal; default all four).")] = None,
    main: Annotated[str, typer.Option(help="The loss whose full FROC table leads the report.")] = "focal",
    set_: SetList = None,
    threads: Threads = 1,
    executor: ExecutorOpt = "serial",
    address: AddressOpt = None,
    cpus_per_task: CpusOpt = 1,
) -> None:
    from cadx.config import load_config
    from cadx.runs.executors import make_executor
    from cadx.studies.detection import run_detection_study

    runner = make_executor(executor, address, cpus_per_task)
    cfg = load_config(config, list(set_ or []))
    _threads(threads)
    try:
        summary = run_detection_study(cfg, out_dir, _split_list(losses), main=main,
                                      on_run=lambda name, m: out.print(
                                          f"{name}: sens@2FP {m['lesion']['sensitivity'].get('2.0', float('nan')):.3f}"
                                          f" ({m.get('run', {}).get('seconds')} s)"), executor=runner)
    finally:
        runner.close()
    out.print(f"{len(summary['runs'])} runs; report: {out_dir / 'report.md'}")


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _print_pooled(pooled: dict[str, Any], title: str) -> None:
    ci = pooled.get("ci", {})
    table = Table("metric", "value", "95% CI", title=title)
    for k, v in pooled.items():
        if isinstance(v, int | float):
            lo_hi = ci.get(k)
            table.add_row(k, _fmt(v), f"[{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else "")
    out.print(table)


def main() -> None:
    """Console entry point: cadx's own errors become one line on stderr and exit code 2."""
    try:
        app()
    except CadxError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except FileNotFoundError as e:
        err.print(f"[red]error:[/red] {e.filename}: not found", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)

