"""The two DICOM objects an exported map becomes, built with highdicom from the source image read at export time.

* a **Secondary Capture** (RGB): the windowed radiograph with the heatmap blended over it on the source's own
  pixel grid and a burned-in legend; every viewer shows it, none can measure it;
* a **fractional Segmentation** (``PROBABILITY``, 8-bit): the map normalised to [0, 1] over the image on the
  same grid, referencing the source image; Slicer, Weasis and highdicom read its values.

Patient and study modules come from the source (the store holds only pseudonyms); every new UID is
derived from the run id and the source's SOP Instance UID, so exporting twice gives the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from densecam_core import __version__

SC_SERIES_NUMBER = 9101
SEG_SERIES_NUMBER = 9102
WEAK_SEG_SERIES_NUMBER = 9103
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root for UIDs derived from a hash
NOT_FOR_DIAGNOSIS = "densecam explanation - not for diagnosis"
PLACEHOLDER_ORIENTATION = ("A", "F")


@dataclass(frozen=True)
class MapLabel:
    """What an exported map is: recorded in both objects and burned into the Secondary Capture."""

    run_id: str
    fingerprint: str
    method: str
    block: int | None
    target: str
    architecture: str

    @property
    def what(self) -> str:
        block = "" if self.method == "cam" else f" block {self.block}"
        return f"{self.method}{block}" + (f" {self.target}" if self.target else "")


class SourceProblem(ValueError):
    """A source DICOM that cannot carry an export (a module it needs is missing); the image is skipped."""


def derived_uid(*parts: str) -> str:
    """A UID fixed by ``parts`` (run id, source SOP Instance UID, object kind): exports are repeatable."""
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=UID_ROOT, entropy_srcs=[str(p) for p in parts]))


def check_source(source: Any) -> None:
    """Refuse, naming the element, a source whose study an export cannot join."""
    for keyword in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID", "Rows", "Columns"):
        if not str(source.get(keyword, "") or "").strip():
            raise SourceProblem(f"the source has no {keyword}: an export cannot join its study")


def secondary_capture(source: Any, overlay: np.ndarray, label: MapLabel, variant: str = "") -> Any:
    """The burned-in overlay ``(rows, columns, 3)`` uint8 as a Secondary Capture in a new series of the study;
    ``variant`` names any option that changed its pixels from the default (it enters the UIDs: another blend is
    another object)."""
    import highdicom as hd

    check_source(source)
    sop = str(source.SOPInstanceUID)
    laterality = str(source.get("ImageLaterality", "") or source.get("Laterality", "") or "") or None
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(overlay),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=derived_uid(label.run_id, str(source.StudyInstanceUID), label.what, "sc-series"),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=derived_uid(label.run_id, sop, label.what, "sc", *([variant] if variant else [])),
        instance_number=int(source.get("InstanceNumber", 1) or 1),
        manufacturer="densecam",
        patient_orientation=PLACEHOLDER_ORIENTATION,  # highdicom requires one; the source's replaces it below
        laterality=laterality if laterality in ("L", "R") else None,
    )
    empty: Any = None  # pydicom writes None as an empty element
    sc.PatientOrientation = source.get("PatientOrientation", None) or empty  # the source's grid, in its words
    if "Laterality" not in sc:
        sc.Laterality = empty  # type 2: present, empty where the source does not say
    sc.BurnedInAnnotation = "YES"
    sc.SeriesDescription = f"densecam {label.what}"[:64]
    sc.ImageComments = f"{NOT_FOR_DIAGNOSIS}; run {label.run_id}; model {label.fingerprint[:16]}"
    _reference(sc, source)
    _created_at(sc, source, (label.run_id, sop, label.what, "sc", *([variant] if variant else [])))
    return sc


def segmentation(source: Any, heat01: np.ndarray, label: MapLabel, raw_range: tuple[float, float]) -> Any:
    """The map in [0, 1] ``(rows, columns)`` as an 8-bit fractional (``PROBABILITY``) Segmentation of the source."""
    import highdicom as hd

    check_source(source)
    sop = str(source.SOPInstanceUID)
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=np.ascontiguousarray(heat01, dtype=np.float32)[None],
        segmentation_type="FRACTIONAL",
        fractional_type="PROBABILITY",
        max_fractional_value=255,
        segment_descriptions=[_segment(1, label.what, label)],
        series_instance_uid=derived_uid(label.run_id, str(source.StudyInstanceUID), label.what, "seg-series"),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=derived_uid(label.run_id, sop, label.what, "seg"),
        content_description=f"{label.what}: min-max over the image of [{raw_range[0]:.4g}, {raw_range[1]:.4g}]"[:64],
        **_seg_common(source, label),
    )
    _finish_seg(seg, source)
    seg.SegmentSequence[0].SegmentDescription = f"{label.what} run {label.run_id}"[:64]
    seg.SeriesDescription = f"densecam {label.what} (values)"[:64]
    _created_at(seg, source, (label.run_id, sop, label.what, "seg"))
    return seg


def binary_segmentation(
    source: Any,
    masks: list[tuple[str, np.ndarray]],
    label: MapLabel,
    content: str,
    description: str = "densecam weak labels",
) -> Any:
    """Masks as a binary Segmentation of the source (the kind OHIF renders): one segment per ``(name, mask (rows,
    columns))``. ``content`` names everything that decided the masks (maps, thresholds, rules): it enters the
    UIDs, so other settings make another object and the same settings the same one."""
    import highdicom as hd

    check_source(source)
    sop = str(source.SOPInstanceUID)
    stack = np.stack([np.asarray(m, dtype=np.uint8) for _, m in masks], axis=-1)[None]
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=stack,
        segmentation_type="BINARY",
        segment_descriptions=[_segment(i + 1, name, label) for i, (name, _) in enumerate(masks)],
        series_instance_uid=derived_uid(label.run_id, str(source.StudyInstanceUID), content, "weak-series"),
        series_number=WEAK_SEG_SERIES_NUMBER,
        sop_instance_uid=derived_uid(label.run_id, sop, content, "weak-seg"),
        content_description=f"{description} (thresholded maps)"[:64],
        **_seg_common(source, label),
    )
    _finish_seg(seg, source)
    seg.SeriesDescription = description[:64]
    _created_at(seg, source, (label.run_id, sop, content, "weak-seg"))
    return seg


def _segment(number: int, what: str, label: MapLabel) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"densecam {what}"[:64],
        version=__version__,
        family=codes.cid7162.ArtificialIntelligence,
        parameters={"run": label.run_id, "model": label.fingerprint[:16], "architecture": label.architecture},
    )
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=what[:64],
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type="AUTOMATIC",
        algorithm_identification=algorithm,
    )


def _seg_common(source: Any, label: MapLabel) -> dict[str, Any]:
    """The Segmentation arguments both kinds share: equipment and content label."""
    return {
        "instance_number": int(source.get("InstanceNumber", 1) or 1),
        "manufacturer": "densecam",
        "manufacturer_model_name": label.architecture,
        "software_versions": __version__,
        "device_serial_number": label.fingerprint[:16],
        "content_label": "DENSECAM",
        "omit_empty_frames": False,
    }


def pixel_spacing(source: Any, keywords: tuple[str, ...] = ("PixelSpacing",)) -> list[float] | None:
    """The source's pixel spacing (mm, row then column) under the first of ``keywords`` whose two values are
    positive and finite; None when none is (a zero or missing spacing is never copied into a Segmentation: it
    would make the object invalid)."""
    for keyword in keywords:
        value = source.get(keyword)
        try:
            numbers = [float(v) for v in value] if value is not None else []
        except (TypeError, ValueError):
            continue
        if len(numbers) == 2 and all(np.isfinite(numbers)) and min(numbers) > 0:
            return numbers
    return None


def _finish_seg(seg: Any, source: Any) -> None:
    """What highdicom leaves to the caller: the source's patient orientation (type 2C without a frame of
    reference), and the plane a web viewer needs to lay the segments over their image (``viewer_geometry``)."""
    seg.PatientOrientation = source.get("PatientOrientation", None) or None
    viewer_geometry(seg, source)


NOMINAL_SPACING_MM = [1.0, 1.0]
"""The spacing a Segmentation states when its source states none (viewers assume the same for the source)."""


def viewer_geometry(seg: Any, source: Any) -> None:
    """Pixel measures, plane orientation and plane position, without which OHIF cannot show a Segmentation of a
    projection radiograph (it reads them unconditionally). The spacing is the source's valid PixelSpacing, else
    its ImagerPixelSpacing, else a nominal 1 mm (never a zero copied from the source); the plane is the
    source's where it has one, else the image plane itself, in a frame of reference derived from the source
    instance, so every Segmentation of one image shares it."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    measures = Dataset()
    measures.PixelSpacing = pixel_spacing(source, ("PixelSpacing", "ImagerPixelSpacing")) or NOMINAL_SPACING_MM
    measures.SliceThickness = 1.0
    orientation = Dataset()
    orientation.ImageOrientationPatient = list(source.get("ImageOrientationPatient", None) or [1, 0, 0, 0, 1, 0])
    shared = seg.SharedFunctionalGroupsSequence[0]
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    position = list(source.get("ImagePositionPatient", None) or [0, 0, 0])
    for frame in seg.PerFrameFunctionalGroupsSequence:
        item = Dataset()
        item.ImagePositionPatient = position
        frame.PlanePositionSequence = Sequence([item])
    seg.FrameOfReferenceUID = source.get("FrameOfReferenceUID", None) or derived_uid(
        str(source.SOPInstanceUID), "frame-of-reference"
    )
    seg.PositionReferenceIndicator = source.get("PositionReferenceIndicator", None) or ""


def _reference(derived: Any, source: Any) -> None:
    """The source image as the derived image's SourceImageSequence."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    derived.SourceImageSequence = Sequence([item])


def _created_at(derived: Any, source: Any, uid_parts: tuple[str, ...]) -> None:
    """Every date, time and UID that highdicom would take from the clock or a random source, taken from the
    source instead, so two exports of the same run are the same bytes (a PACS then keeps one object)."""
    date = str(source.get("ContentDate", "") or source.get("StudyDate", "") or "19700101")
    time = str(source.get("ContentTime", "") or source.get("StudyTime", "") or "000000")
    derived.ContentDate, derived.ContentTime = date, time
    for date_keyword, time_keyword in (
        ("InstanceCreationDate", "InstanceCreationTime"),
        ("SeriesDate", "SeriesTime"),
        ("DateOfSecondaryCapture", "TimeOfSecondaryCapture"),
    ):
        if date_keyword in derived:
            setattr(derived, date_keyword, date)
        if time_keyword in derived:
            setattr(derived, time_keyword, time)
    for item in derived.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time
    organisation = derived_uid(*uid_parts, "dimension-organisation")
    for item in derived.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = organisation
    for item in derived.get("DimensionIndexSequence", []):
        item.DimensionOrganizationUID = organisation
