"""The geometry a web viewer needs on a Segmentation of a projection radiograph (docs/VIEWERS.md): pixel
measures from the source's valid spacing (never a zero), plane orientation and position, and one frame of
reference per source image."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from densecam_core.export.dicom_objects import NOMINAL_SPACING_MM, viewer_geometry


def _seg(frames: int = 2) -> Dataset:
    seg = Dataset()
    seg.SharedFunctionalGroupsSequence = Sequence([Dataset()])
    seg.PerFrameFunctionalGroupsSequence = Sequence([Dataset() for _ in range(frames)])
    return seg


def _source(**elements: object) -> Dataset:
    source = Dataset()
    source.SOPInstanceUID = "1.2.3.4"
    for name, value in elements.items():
        setattr(source, name, value)
    return source


@pytest.mark.parametrize(
    "elements, spacing",
    [
        ({"PixelSpacing": [0.2, 0.1]}, [0.2, 0.1]),
        ({"PixelSpacing": [0, 0], "ImagerPixelSpacing": [0.15, 0.15]}, [0.15, 0.15]),  # the zero never copied
        ({"ImagerPixelSpacing": [0.143, 0.143]}, [0.143, 0.143]),
        ({"PixelSpacing": [0, 0]}, NOMINAL_SPACING_MM),  # the NEMA chest CR
        ({}, NOMINAL_SPACING_MM),
    ],
)
def test_pixel_measures_come_from_a_valid_spacing(elements: dict, spacing: list[float]):
    seg = _seg()
    viewer_geometry(seg, _source(**elements))
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == pytest.approx(spacing)


def test_the_plane_is_the_sources_else_the_image_plane_in_one_frame_of_reference_per_image():
    seg, again = _seg(), _seg()
    viewer_geometry(seg, _source())
    viewer_geometry(again, _source())
    assert [
        float(v) for v in seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    ] == [1, 0, 0, 0, 1, 0]
    assert all(
        [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] == [0, 0, 0]
        for f in seg.PerFrameFunctionalGroupsSequence
    )
    assert seg.FrameOfReferenceUID == again.FrameOfReferenceUID != _frame_of(_source(SOPInstanceUID="1.2.3.5"))
    placed = _seg()
    viewer_geometry(
        placed,
        _source(
            ImageOrientationPatient=[0, 1, 0, 0, 0, -1], ImagePositionPatient=[5, 6, 7], FrameOfReferenceUID="9.8.7"
        ),
    )
    assert [
        float(v) for v in placed.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0].ImagePositionPatient
    ] == [5, 6, 7]
    assert placed.FrameOfReferenceUID == "9.8.7"


def _frame_of(source: Dataset) -> str:
    seg = _seg()
    viewer_geometry(seg, source)
    return str(seg.FrameOfReferenceUID)
