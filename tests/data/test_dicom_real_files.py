"""read_image on real radiographs no one here wrote: the NEMA WG04 CRs of pydicom-data and the
modality-LUT / VOI-LUT test images, against the plain pipeline of dicom_reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from support.dicom_reference import reference_grey

from densecam_core import read_image

data_store = pytest.importorskip("data_store", reason="pydicom-data ships the NEMA test radiographs")
NEMA = Path(data_store.__file__).parent / "data"


@pytest.mark.parametrize(
    "name",
    ["RG1_UNCR", "RG3_UNCR", "RG1_J2KR", "RG3_J2KR", "RG3_J2KI", "mlut_18", "vlut_04", "MR2_UNCR", "693_UNCR"],
)
def test_read_image_equals_the_standards_pipeline_within_one_grey_level(name):
    path = NEMA / f"{name}.dcm"
    ds = pydicom.dcmread(path)
    expected = reference_grey(ds, ds.pixel_array)
    got = read_image(str(path))
    assert got.dtype == np.uint8 and got.shape == (ds.Rows, ds.Columns)
    assert np.abs(got.astype(np.float64) - expected).max() <= 1.0


def test_the_tibia_is_monochrome1_and_shown_as_a_viewer_shows_it():
    """RG3: a 10-bit MONOCHROME1 extremity CR. As a viewer shows it (docs/dicom-tibia.png): the exposed
    air beside the leg dark, the tibia's shaft bright, the collimated border white (measured 25, 171, 255)."""
    image = read_image(str(NEMA / "RG3_UNCR.dcm"))
    assert image.shape == (1760, 1760)
    air, shaft, border = image[400:1200, 480:540].mean(), image[400:1200, 800:880].mean(), image[:100, :100].mean()
    assert air < 50 and shaft > 140 and border > 250


@pytest.mark.parametrize("base", ["RG1", "RG3"])
def test_lossless_jpeg2000_decodes_to_the_uncompressed_pixels(base):
    assert np.array_equal(read_image(str(NEMA / f"{base}_J2KR.dcm")), read_image(str(NEMA / f"{base}_UNCR.dcm")))


@pytest.mark.parametrize("base, mean_limit", [("RG1", 0.6), ("RG3", 0.3)])
def test_lossy_jpeg2000_is_within_a_fraction_of_a_grey_level_on_average(base, mean_limit):
    """Measured: RG1 0.43 and RG3 0.18 grey levels mean absolute difference (at most 3), the 10:1 lossy
    copy against its uncompressed original; the bounds leave ~40 % above that."""
    lossy = read_image(str(NEMA / f"{base}_J2KI.dcm")).astype(int)
    original = read_image(str(NEMA / f"{base}_UNCR.dcm")).astype(int)
    difference = np.abs(lossy - original)
    assert difference.mean() < mean_limit and difference.max() <= 4


@pytest.mark.parametrize(
    "name, shape",
    [("SC_rgb.dcm", (100, 100, 3)), ("SC_ybr_full_uncompressed.dcm", (100, 100, 3)), ("OBXXXX1A.dcm", (600, 800, 3))],
)
def test_colour_files_read_as_rgb(name, shape):
    image = read_image(str(NEMA / name))
    assert image.shape == shape and image.dtype == np.uint8


def test_ybr_full_becomes_the_same_rgb_as_the_rgb_file():
    rgb = read_image(str(NEMA / "SC_rgb.dcm")).astype(int)
    ybr = read_image(str(NEMA / "SC_ybr_full_uncompressed.dcm")).astype(int)
    difference = np.abs(rgb - ybr)
    assert difference.mean() < 1 and difference.max() <= 8  # 8-bit YCbCr rounding: measured 0.57 and 6


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_compressed_transfer_syntaxes_decode_like_the_uncompressed_file(name):
    from pydicom.data import get_testdata_file

    assert np.array_equal(read_image(get_testdata_file(name)), read_image(get_testdata_file("MR_small.dcm")))


def test_jpeg_lossless_process_14_decodes_as_pylibjpeg_does():
    """JPEG lossless (1.2.840.10008.1.2.4.70) goes through pylibjpeg-libjpeg, not Pillow."""
    ds = pydicom.dcmread(NEMA / "JPEG-LL.dcm")
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    got = read_image(str(NEMA / "JPEG-LL.dcm"))
    assert np.abs(got.astype(np.float64) - reference_grey(ds, ds.pixel_array)).max() <= 1.0
