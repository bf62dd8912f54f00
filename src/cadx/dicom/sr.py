"""``write_sr``: a model's finding for one study as a DICOM SR — a TID 1500 Measurement Report in a Comprehensive 3D
SR document (highdicom).

Content (one measurement group, TID 1501, or TID 1411 when a SEG is given):

* observer: a device (the model: name, version, manufacturer "cadx");
* finding type (coded): ``malignant`` → SCT 21594007 "Malignant", ``benign`` → SCT 30807003 "Benign", ``lesion`` →
  SCT 52988006 "Lesion", any other class → a private code (scheme ``99CADX``, value and meaning = the class name);
* measurement "Probability" (DCM 122157, unit UCUM ``1``) = ``probability`` — the model's probability *of the
  finding*; one measurement per entry of ``attributes`` (scheme ``99CADX``, value ``attr-<name>``, meaning = the
  name, unit ``1``); each measurement carries the algorithm identification (name, version);
* the operating-point wording as a TEXT item (99CADX ``operating-point``) in the group: TID 1501 has no slot for
  free text in highdicom's builder, so it is appended to the group's content (readers that walk the content tree
  see it; highdicom's template parser ignores it) — a choice, not in the paper/issue;
* with ``seg``: the group is volumetric and references segment 1 of the SEG, which joins the evidence.

The SR shares the source's StudyInstanceUID and patient module and gets a new series. Text must be non-empty; a
probability outside [0, 1] or a non-finite value → CadxDataError naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from cadx.dicom.seg import MANUFACTURER, check_sources, prepared_sources, source_order
from cadx.errors import CadxDataError

__all__ = ["PRIVATE_SCHEME", "finding_code", "write_sr"]

#: Coding scheme designator of cadx's private codes (DICOM PS3.16: "99" prefix = local scheme).
PRIVATE_SCHEME = "99CADX"
_KNOWN = {"malignant": codes.SCT.Malignant, "benign": codes.SCT.Benign, "lesion": codes.SCT.Lesion}
_NO_UNITS = codes.UCUM.NoUnits
OPERATING_POINT = hd.sr.CodedConcept("operating-point", PRIVATE_SCHEME, "Operating point")


def _uid(seed: str | None, *parts: str) -> str:
    return generate_uid() if seed is None else generate_uid(entropy_srcs=[seed, *parts])


def finding_code(finding: str) -> hd.sr.CodedConcept:
    """The coded concept for a class name (see the module docstring); case-insensitive for the known ones."""
    known = _KNOWN.get(finding.strip().lower())
    if known is not None:
        return hd.sr.CodedConcept(known.value, known.scheme_designator, known.meaning)
    return hd.sr.CodedConcept(finding, PRIVATE_SCHEME, finding)


def attribute_code(name: str) -> hd.sr.CodedConcept:
    """The private coded concept naming attribute ``name`` (value ``attr-<name>``)."""
    return hd.sr.CodedConcept(f"attr-{name}", PRIVATE_SCHEME, name)


def _finite(value: float, field: str, where: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise CadxDataError(f"not a finite number: {value!r}", path=where, field=field)
    return v


def write_sr(source_datasets: Sequence[Dataset], *, finding: str, probability: float | None, model_name: str,
             model_version: str, attributes: Mapping[str, float] | None = None, operating_point: str = "",
             seg: Dataset | None = None, series_number: int = 902, uid_seed: str | None = None,
             where: str = "source") -> Dataset:
    """Build the Comprehensive 3D SR (TID 1500) described in the module docstring and return it.

    ``source_datasets``: the study's source series (single-frame images; they are the SR's evidence and the
    measurement group's source images when no ``seg``). ``finding``: the predicted class; ``probability`` in
    [0, 1] (None: no Probability measurement, e.g. a segmentation-only run); ``attributes`` {name: value}
    (finite); ``operating_point``: the wording of the run's decision rule
    (omitted when empty); ``seg``: a SEG from :func:`cadx.dicom.seg.write_seg` over the same study.
    ``uid_seed`` makes the new UIDs deterministic.
    """
    check_sources(source_datasets, where)
    if not finding.strip():
        raise CadxDataError("empty finding", path=where, field="finding")
    if not model_name.strip() or not model_version.strip():
        raise CadxDataError("model name and version must be non-empty", path=where, field="model_name")
    p = None if probability is None else _finite(probability, "probability", where)
    if p is not None and not 0.0 <= p <= 1.0:
        raise CadxDataError(f"{p} is outside [0, 1]", path=where, field="probability")
    attrs = {str(k): _finite(v, f"attributes.{k}", where) for k, v in (attributes or {}).items()}
    sources = prepared_sources([source_datasets[i] for i in source_order(source_datasets)])
    if seg is not None and str(seg.StudyInstanceUID) != str(sources[0].StudyInstanceUID):
        raise CadxDataError("the SEG belongs to another study", path=where, field="seg.StudyInstanceUID")

    algo = hd.sr.AlgorithmIdentification(name=model_name, version=model_version)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=_uid(uid_seed, "device", model_name, model_version), name=model_name,
            manufacturer_name=MANUFACTURER, model_name=f"{model_name} {model_version}"))
    context = hd.sr.ObservationContext(observer_device_context=device)
    measurements = [] if p is None else [hd.sr.Measurement(name=codes.DCM.Probability, value=p, unit=_NO_UNITS,
                                                           algorithm_id=algo)]
    measurements += [hd.sr.Measurement(name=attribute_code(k), value=v, unit=_NO_UNITS, algorithm_id=algo)
                     for k, v in attrs.items()]
    tracking = hd.sr.TrackingIdentifier(uid=_uid(uid_seed, "finding"), identifier="finding 1")
    group: hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    if seg is not None:
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            # built by hand: highdicom's ReferencedSegment.from_segmentation expects per-frame segment ids, which
            # its own one-segment SEG keeps in the shared functional groups
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID), segment_number=1,
                source_series=hd.sr.SourceSeriesForSegmentation(str(sources[0].SeriesInstanceUID))),
            finding_type=finding_code(finding), algorithm_id=algo, measurements=measurements)
    else:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, finding_type=finding_code(finding), algorithm_id=algo,
            measurements=measurements,
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(s) for s in sources])
    if operating_point.strip():
        group[0].ContentSequence.append(hd.sr.TextContentItem(
            name=OPERATING_POINT, value=operating_point.strip()[:1024],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    report = hd.sr.MeasurementReport(observation_context=context,
                                     procedure_reported=codes.LN.CTUnspecifiedBodyRegion
                                     if str(sources[0].get("Modality", "")) == "CT" else codes.SCT.ImagingProcedure,
                                     imaging_measurements=[group])
    evidence = [*sources, *([seg] if seg is not None else [])]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0], series_instance_uid=_uid(uid_seed, "sr-series"),
        series_number=series_number, sop_instance_uid=_uid(uid_seed, "sr-sop"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=f"cadx finding ({model_name} {model_version})"[:64])
    sr.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the wording (an em dash) and names outside Latin-1 survive
    return sr
