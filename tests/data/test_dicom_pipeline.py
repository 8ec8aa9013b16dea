"""The DICOM grayscale pipeline, step by step, on constructed files against the plain reference."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from support.dicom_reference import dataset, reference_grey, to_bytes

from densecam_core.data.decode import ImageError, decode_pixels
from densecam_core.data.dicom import decode_dicom

MAX = 64_000_000


def ramp(bits: int = 12, signed: bool = False, shape: tuple[int, int] = (32, 128)) -> np.ndarray:
    """Every stored value of the bit depth (and then some repeats), in a fixed random order."""
    low = -(1 << (bits - 1)) if signed else 0
    values = np.arange(low, low + (1 << bits))
    values = np.resize(values, shape[0] * shape[1])
    return np.random.default_rng(0).permutation(values).reshape(shape)


def decoded(ds: Dataset, window: str = "first") -> np.ndarray:
    return decode_dicom(to_bytes(ds), window=window, max_pixels=MAX)


def assert_within_one_grey_level(ds: Dataset, stored: np.ndarray, window: str = "first") -> np.ndarray:
    got = decoded(ds, window)
    expected = reference_grey(ds, stored, voi=window)
    assert got.dtype == np.uint8 and got.shape == stored.shape
    assert np.abs(got.astype(np.float64) - expected).max() <= 1.0
    return got


def test_rescale_then_linear_window():
    stored = ramp(12)
    ds = dataset(stored, RescaleSlope="2", RescaleIntercept="-1024", WindowCenter="1200", WindowWidth="1500")
    got = assert_within_one_grey_level(ds, stored)
    assert got.min() == 0 and got.max() == 255, "the window clips at both ends"


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_other_voi_functions(function):
    stored = ramp(12)
    ds = dataset(stored, WindowCenter="2000", WindowWidth="900", VOILUTFunction=function)
    assert_within_one_grey_level(ds, stored)


def test_window_of_width_one_is_a_threshold_at_center_less_half():
    stored = ramp(10)
    got = decoded(dataset(stored, bits_stored=10, WindowCenter="512", WindowWidth="1"))
    assert set(np.unique(got)) == {0, 255}
    assert (got[stored <= 511] == 0).all() and (got[stored >= 512] == 255).all()


def test_first_of_several_windows():
    stored = ramp(12)
    ds = dataset(stored, WindowCenter=["800", "3000"], WindowWidth=["400", "2000"])
    assert_within_one_grey_level(ds, stored)


def voi_lut_item(entries: np.ndarray, first: int, bits: int, name: str = "TEST LUT") -> Dataset:
    item = Dataset()
    item.add_new(0x00283002, "SS" if first < 0 else "US", [len(entries), first, bits])  # LUT Descriptor
    item.add_new(0x00283006, "US", [int(v) for v in entries])  # LUT Data
    item.LUTExplanation = name
    return item


def test_voi_lut_sequence_with_a_negative_first_value_and_signed_pixels():
    stored = ramp(12, signed=True)
    entries = (np.linspace(0, 1, 3000) ** 0.5 * 65535).astype(int)  # a gamma curve, 16-bit output
    ds = dataset(stored, signed=True)
    ds.VOILUTSequence = Sequence([voi_lut_item(entries, first=-1500, bits=16)])
    assert_within_one_grey_level(ds, stored)


def test_modality_lut_sequence_then_window():
    stored = ramp(12)
    table = (4095 - np.arange(4096)) // 2  # a decreasing modality LUT
    item = voi_lut_item(table, first=0, bits=12)
    item.ModalityLUTType = "US"
    ds = dataset(stored, WindowCenter="1000", WindowWidth="1200")
    ds.ModalityLUTSequence = Sequence([item])
    assert_within_one_grey_level(ds, stored)


def test_monochrome1_is_inverted_after_the_voi_transform():
    """A window that does not sit mid-range tells the two orders apart: inverting the stored values first
    (cornerstone3D's old bug) windows the wrong end of the range."""
    stored = ramp(12)
    window = {"WindowCenter": "700", "WindowWidth": "800"}
    monochrome2 = decoded(dataset(stored, **window)).astype(int)
    ds1 = dataset(stored, **window)
    ds1.PhotometricInterpretation = "MONOCHROME1"
    monochrome1 = assert_within_one_grey_level(ds1, stored).astype(int)
    assert np.abs(monochrome1 - (255 - monochrome2)).max() <= 1
    inverted_first = reference_grey(dataset(4095 - stored, **window), 4095 - stored)
    assert np.abs(monochrome1 - inverted_first).mean() > 50


def test_signed_pixels_with_rescale():
    stored = ramp(12, signed=True)
    ds = dataset(stored, signed=True, RescaleSlope="1", RescaleIntercept="-100", WindowCenter="0", WindowWidth="2000")
    assert_within_one_grey_level(ds, stored)


def test_without_a_window_the_stored_values_are_spread_min_to_max():
    stored = (ramp(12) // 4) + 300  # 300 .. 1323
    got = assert_within_one_grey_level(dataset(stored), stored)
    assert got[stored == stored.min()].max() == 0 and got[stored == stored.max()].min() == 255


def test_minmax_and_percentile_ignore_the_files_window():
    stored = ramp(12)
    ds = dataset(stored, WindowCenter="100", WindowWidth="50")
    assert_within_one_grey_level(ds, stored, window="minmax")
    spread = decoded(ds, "percentile").astype(float)
    low, high = np.percentile(stored, [0.5, 99.5])
    expected = np.clip((stored - low) / (high - low), 0, 1) * 255
    assert np.abs(spread - expected).max() <= 1.0 + 255 / (high - low)  # percentiles fall between stored values


def test_lut_mode_prefers_the_voi_lut_over_the_window():
    stored = ramp(8, shape=(16, 16))
    ds = dataset(stored, bits_stored=8, WindowCenter="10", WindowWidth="4")
    ds.VOILUTSequence = Sequence([voi_lut_item(np.arange(256)[::-1], first=0, bits=8)])
    assert_within_one_grey_level(ds, stored, window="lut")
    assert_within_one_grey_level(ds, stored, window="first")  # the window, as the reference takes it


def test_colour_and_palette_files_become_rgb():
    rgb = np.random.default_rng(1).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    ds = dataset(np.zeros((8, 12)), bits_stored=8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.HighBit = 8, 7
    ds.PixelData = rgb.tobytes()
    assert np.array_equal(decoded(ds), rgb)


def truncated_palette() -> bytes:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    ds = dcmread(get_testdata_file("OBXXXX1A.dcm"))
    ds.RedPaletteColorLookupTableData = ds.RedPaletteColorLookupTableData[:10]
    return to_bytes(ds)


def too_large() -> bytes:
    ds = dataset(np.zeros((1, 1)))
    ds.Rows = ds.Columns = 50_000  # 2.5e9 pixels claimed, 2 bytes of pixel data
    return to_bytes(ds)


def with_elements(**elements) -> bytes:
    ds = dataset(ramp(12, shape=(8, 8)))
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


def unsupported_syntax() -> bytes:
    ds = dataset(ramp(12, shape=(8, 8)))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video
    ds.PixelData = encapsulate([b"\x00" * 128])
    return to_bytes(ds)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda: with_elements(WindowCenter="100", WindowWidth="0"), r"window width 0 is not usable"),
        (lambda: with_elements(WindowCenter="100", WindowWidth="-20"), r"window width -20 is not usable"),
        (lambda: with_elements(BitsStored=17), r"BitsStored 17 is larger than BitsAllocated 16"),
        (lambda: with_elements(Rows=0), r"empty DICOM image \(0x8 pixels\)"),
        (lambda: with_elements(NumberOfFrames=3), r"multi-frame DICOM \(3 frames"),
        (too_large, r"image too large: 50000x50000 .*refused before decoding"),
        (truncated_palette, r"palette colour lookup table is broken"),
        (unsupported_syntax, r"unsupported DICOM transfer syntax 1\.2\.840\.10008\.1\.2\.4\.100"),
        (lambda: to_bytes(dataset(np.zeros((64, 64))))[:-3000], r"truncated or corrupt DICOM pixel data"),
    ],
    ids=["width-0", "width-negative", "bits-stored", "0xN", "multi-frame", "bomb", "palette", "syntax", "truncated"],
)
def test_bad_files_are_refused_with_their_reason(make, reason):
    with pytest.raises(ImageError, match=reason):
        decode_dicom(make(), max_pixels=MAX)


def test_a_non_dicom_file_with_a_dicom_name_is_named(tmp_path):
    fake = tmp_path / "scan.dcm"
    fake.write_text("patient notes, not an image\n" * 20)
    with pytest.raises(ImageError, match=r"not a DICOM file despite its 'dcm' extension"):
        decode_pixels(str(fake))


def test_dicom_without_pixel_data_names_its_sop_class():
    from pydicom.data import get_testdata_file

    with open(get_testdata_file("test-SR.dcm"), "rb") as handle:
        data = handle.read()
    with pytest.raises(ImageError, match=r"DICOM without pixel data \(Comprehensive SR Storage\)"):
        decode_dicom(data, max_pixels=MAX)


def test_a_corrupt_header_is_named_without_quoting_its_values():
    """pydicom's messages may quote an element's value; an error row must not carry a patient's name."""
    from densecam_core.data.dicom import header_fault

    fault = header_fault(ValueError("With tag (0010,0010) got exception: invalid value 'Doe^Jane' for VR PN"))
    assert fault == "ValueError at tag (0010,0010)" and "Doe" not in fault


def test_the_decoder_reports_header_faults_through_header_fault(monkeypatch):
    import pydicom

    def broken(*_args, **_kwargs):
        raise ValueError("With tag (0010,0010) got exception: invalid value 'Doe^Jane' for VR PN")

    monkeypatch.setattr(pydicom, "dcmread", broken)
    with pytest.raises(ImageError) as caught:
        decode_dicom(to_bytes(dataset(np.zeros((8, 8)))), max_pixels=MAX)
    assert caught.value.reason == "corrupt DICOM header (ValueError at tag (0010,0010))"
