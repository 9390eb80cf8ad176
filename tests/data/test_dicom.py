"""Tests for medvl.data.dicom on pydicom's real test files and tiny synthetic ones."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medvl.data.dicom import (
    IDENTIFYING_KEYWORDS,
    META_KEYS,
    WINDOW_PRESETS,
    DicomImage,
    DicomReadError,
    read_dicom,
    read_image,
    resolve_window,
)
from tests.data._pydicom_files import pydicom_file


def _reference(path: str) -> np.ndarray:
    """pydicom's modality LUT + VOI LUT, scaled by the VOI output range, MONOCHROME1 inverted."""
    ds = dcmread(path)
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    values = apply_modality_lut(arr, ds)
    if "WindowCenter" in ds:
        # The window's output range is what it maps -inf and +inf to.
        lo, hi = apply_voi_lut(np.array([-1e12, 1e12]), ds, prefer_lut=False)
        out = (apply_voi_lut(values, ds, prefer_lut=False) - lo) / (hi - lo)
    elif "VOILUTSequence" in ds:
        out = apply_voi_lut(values, ds) / (2 ** ds.VOILUTSequence[0].LUTDescriptor[2] - 1)
    else:
        values = values.astype(np.float64)
        out = (values - values.min()) / (values.max() - values.min())
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = 1.0 - out
    return out


def _write_dicom(
    path: Path, stored: np.ndarray, *, photometric: str = "MONOCHROME2", **attrs: object
) -> Path:
    """A minimal valid 16-bit secondary-capture file with identifying values to leak."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN8675309"
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20240229"
    ds.InstitutionName = "St Elsewhere Hospital"
    ds.AccessionNumber = "ACC4242"
    ds.Modality = "DX"
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = stored.astype("<u2").tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def stored() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 4096, size=(24, 40), dtype=np.uint16)


# --- Pixel parity with pydicom on real files ---------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # rescale slope/intercept, no window
        "MR_small.dcm",  # window, signed
        "RG1_UNCR.dcm",  # chest CR, MONOCHROME1, window
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
        "MR_small_RLE.dcm",  # RLE
        "JPEG2000.dcm",  # JPEG 2000
        "693_J2KR.dcm",  # JPEG 2000 lossless CT with rescale + window
        "vlut_04.dcm",  # VOI LUT Sequence
        "mlut_18.dcm",  # Modality LUT Sequence
    ],
)
def test_greyscale_matches_pydicom_pipeline(name: str) -> None:
    path = str(pydicom_file(name))
    image = read_dicom(path)
    assert isinstance(image, DicomImage)
    assert image.pixels.dtype == np.float32
    assert image.pixels.ndim == 2
    assert 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0
    np.testing.assert_allclose(image.pixels, _reference(path), atol=1e-5)


def test_chest_cr_is_monochrome1_and_lossless_j2k_matches() -> None:
    uncompressed = read_dicom(str(pydicom_file("RG1_UNCR.dcm")))
    compressed = read_dicom(str(pydicom_file("RG1_J2KR.dcm")))
    assert uncompressed.meta["photometric_interpretation"] == "MONOCHROME1"
    assert uncompressed.meta["modality"] == "CR"
    ds = dcmread(str(pydicom_file("RG1_UNCR.dcm")), stop_before_pixels=True)
    first = lambda v: float(v[0] if v.VM > 1 else v.value)  # noqa: E731
    assert uncompressed.meta["window"] == (first(ds["WindowCenter"]), first(ds["WindowWidth"]))
    np.testing.assert_array_equal(uncompressed.pixels, compressed.pixels)


def test_window_override_uses_modality_units() -> None:
    path = str(pydicom_file("CT_small.dcm"))
    ds = dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds)
    lung = read_dicom(path, window=(-600, 1500))
    expected = np.clip((hu - (-600 - 750)) / 1500, 0, 1)
    np.testing.assert_allclose(lung.pixels, expected, atol=1e-6)
    assert lung.meta["window"] == (-600.0, 1500.0)
    assert not np.allclose(lung.pixels, read_dicom(path).pixels)


def test_window_override_replaces_file_window() -> None:
    path = str(pydicom_file("MR_small.dcm"))
    assert read_dicom(path).meta["window"] == (600.0, 1600.0)
    assert read_dicom(path, window=(100, 50)).meta["window"] == (100.0, 50.0)
    with pytest.raises(ValueError, match="width"):
        read_dicom(path, window=(100, 0))


# --- Colour and multi-frame ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_rle.dcm",
        "SC_ybr_full_422_uncompressed.dcm",  # converted YBR_FULL_422 -> RGB
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
    ],
)
def test_colour_files_give_rgb_matching_the_rgb_original(name: str) -> None:
    rgb = read_dicom(str(pydicom_file("SC_rgb.dcm"))).pixels
    other = read_dicom(str(pydicom_file(name))).pixels
    assert rgb.shape == other.shape == (100, 100, 3)
    assert other.dtype == np.float32
    np.testing.assert_allclose(other, rgb, atol=8 / 255)  # chroma subsampling / JPEG error
    np.testing.assert_allclose(rgb[0, 0], [1.0, 0.0, 0.0])  # top-left block is pure red


def test_palette_colour() -> None:
    image = read_dicom(str(pydicom_file("examples_palette.dcm")))
    assert image.pixels.shape == (350, 800, 3)
    assert 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0
    assert image.meta["photometric_interpretation"] == "PALETTE COLOR"


def test_multiframe_first_or_all_frames() -> None:
    path = str(pydicom_file("emri_small.dcm"))
    first = read_dicom(path)
    every = read_dicom(path, all_frames=True)
    assert first.pixels.shape == (64, 64)
    assert every.pixels.shape == (10, 64, 64)
    assert every.meta["number_of_frames"] == 10
    frames = dcmread(path).pixel_array.astype(np.float64)  # no VOI: min-max over the frames read
    np.testing.assert_allclose(every.pixels, (frames - frames.min()) / np.ptp(frames), atol=1e-6)
    rle = read_dicom(str(pydicom_file("emri_small_RLE.dcm")), all_frames=True)
    np.testing.assert_array_equal(every.pixels, rle.pixels)


# --- MONOCHROME1 on a synthetic pair ---------------------------------------------------


def test_monochrome1_is_inverted(tmp_path: Path, stored: np.ndarray) -> None:
    m2 = read_dicom(_write_dicom(tmp_path / "m2.dcm", stored, photometric="MONOCHROME2"))
    m1 = read_dicom(_write_dicom(tmp_path / "m1.dcm", 4095 - stored, photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1.pixels, m2.pixels, atol=1e-6)
    brightest = np.unravel_index(np.argmin(4095 - stored), stored.shape)  # lowest MONOCHROME1 value
    assert m1.pixels[brightest] == pytest.approx(1.0)


def test_monochrome1_window_is_mirrored(tmp_path: Path, stored: np.ndarray) -> None:
    m2 = read_dicom(_write_dicom(tmp_path / "m2.dcm", stored), window=(2048, 2000))
    m1_path = _write_dicom(tmp_path / "m1.dcm", 4095 - stored, photometric="MONOCHROME1")
    m1 = read_dicom(m1_path, window=(4095 - 2048, 2000))
    np.testing.assert_allclose(m1.pixels, m2.pixels, atol=1e-6)


def test_constant_image_does_not_divide_by_zero(tmp_path: Path) -> None:
    image = read_dicom(_write_dicom(tmp_path / "flat.dcm", np.full((8, 8), 7, dtype=np.uint16)))
    assert np.isfinite(image.pixels).all()
    np.testing.assert_array_equal(image.pixels, 0.0)


# --- Meta never identifies -------------------------------------------------------------


def _normalise(key: str) -> str:
    return key.replace("_", "").lower()


def test_meta_whitelist_has_no_identifying_values(tmp_path: Path, stored: np.ndarray) -> None:
    path = _write_dicom(tmp_path / "phi.dcm", stored)
    ds = dcmread(path)
    meta = read_dicom(path).meta
    assert tuple(meta) == META_KEYS
    assert not {_normalise(k) for k in meta} & {_normalise(k) for k in IDENTIFYING_KEYWORDS}
    text = repr(meta)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "InstitutionName",
                    "AccessionNumber", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert str(ds[keyword].value) not in text, keyword
    assert meta["pixel_spacing"] == (0.2, 0.2)  # falls back to ImagerPixelSpacing
    assert meta["view_position"] == "PA"
    assert meta["body_part"] == "CHEST"
    assert meta["sop_class_uid"] == SecondaryCaptureImageStorage
    assert meta["window"] is None


def test_meta_of_real_file_has_no_patient_name() -> None:
    path = str(pydicom_file("CT_small.dcm"))
    ds = dcmread(path, stop_before_pixels=True)
    meta = read_dicom(path).meta
    assert str(ds.PatientName) not in repr(meta)
    assert str(ds.SOPInstanceUID) not in repr(meta)
    assert meta["transfer_syntax_uid"] == ExplicitVRLittleEndian


def test_identifying_keywords_are_real_dicom_keywords() -> None:
    from pydicom.datadict import tag_for_keyword

    unknown = sorted(k for k in IDENTIFYING_KEYWORDS if tag_for_keyword(k) is None)
    assert not unknown
    must = {"PatientName", "PatientID", "SOPInstanceUID", "StudyInstanceUID", "AccessionNumber"}
    assert must <= IDENTIFYING_KEYWORDS


# --- Errors name the file and the reason -------------------------------------------------


def _raises(path: Path | str, reason: str, **kwargs: object) -> DicomReadError:
    with pytest.raises(DicomReadError, match=re.escape(str(path))) as info:
        read_dicom(path, **kwargs)
    assert re.search(reason, info.value.reason), info.value.reason
    assert info.value.path == str(path)
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    _raises(tmp_path / "nope.dcm", "not found")


def test_not_a_dicom_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.dcm"
    path.write_text("FINDINGS: no acute cardiopulmonary process.\n" * 10)
    _raises(path, "not a DICOM file")


def test_truncated_in_pixel_data(tmp_path: Path) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    path = tmp_path / "truncated.dcm"
    path.write_bytes(data[: len(data) - 5000])  # cut inside the 32 KiB pixel data
    _raises(path, "pixel data is .* bytes .* needs")


def test_truncated_in_header(tmp_path: Path) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    (tmp_path / "cut_early.dcm").write_bytes(data[:300])  # inside the first data element
    _raises(tmp_path / "cut_early.dcm", "no PixelData element: nothing after the file meta")
    assert data.find(b"\x28\x00\x11\x00") < 5000 < data.find(b"\xe0\x7f\x10\x00")
    (tmp_path / "cut_late.dcm").write_bytes(data[:5000])  # after Rows/Columns, before pixels
    _raises(tmp_path / "cut_late.dcm", "no PixelData element although Rows/Columns .*truncated")
    (tmp_path / "cut_meta.dcm").write_bytes(data[:100])  # inside the file meta
    _raises(tmp_path / "cut_meta.dcm", "not a DICOM file")
    (tmp_path / "cut_sequence.dcm").write_bytes(data[:1000])  # inside a sequence
    _raises(tmp_path / "cut_sequence.dcm", "no PixelData element|corrupt")


def test_no_pixel_data(tmp_path: Path) -> None:
    ds = dcmread(str(pydicom_file("CT_small.dcm")))
    del ds.PixelData
    path = tmp_path / "header_only.dcm"
    ds.save_as(path)
    _raises(path, "no PixelData")


def test_pixel_data_length_mismatch(tmp_path: Path, stored: np.ndarray) -> None:
    path = _write_dicom(tmp_path / "short.dcm", stored, Rows=stored.shape[0] + 3)
    _raises(path, "pixel data is 1920 bytes .* needs 2160")
    path = _write_dicom(tmp_path / "long.dcm", stored, Rows=stored.shape[0] - 2)
    _raises(path, "pixel data is 1920 bytes .* needs 1760")


def test_over_max_pixels() -> None:
    path = str(pydicom_file("CT_small.dcm"))
    _raises(path, "over max_pixels=1000", max_pixels=1000)
    assert read_dicom(path, max_pixels=None).pixels.shape == (128, 128)


def test_unknown_transfer_syntax(tmp_path: Path) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    old = b"1.2.840.10008.1.2.1\x00"  # Explicit VR Little Endian, padded to even length
    assert data.count(old) == 1
    path = tmp_path / "made_up_syntax.dcm"
    path.write_bytes(data.replace(old, b"1.2.840.10008.9.9.9\x00"))
    _raises(path, re.escape("no decoder for transfer syntax 1.2.840.10008.9.9.9"))


def test_transfer_syntax_without_decoder_is_named(tmp_path: Path) -> None:
    ds = dcmread(str(pydicom_file("JPEG2000.dcm")))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: no pixel decoder
    path = tmp_path / "mpeg2.dcm"
    ds.save_as(path)
    _raises(path, r"1\.2\.840\.10008\.1\.2\.4\.100 \(MPEG2")


def test_error_is_a_value_error_and_pickles() -> None:
    err = DicomReadError("/x/y.dcm", "no PixelData element")
    assert isinstance(err, ValueError)
    assert str(err) == "/x/y.dcm: no PixelData element"
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.reason) == (err.path, err.reason)


# --- PNG / JPEG ---------------------------------------------------------------------------


def test_png_8_and_16_bit(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a8 = rng.integers(0, 256, size=(20, 30), dtype=np.uint8)
    Image.fromarray(a8, mode="L").save(tmp_path / "a.png")
    a16 = rng.integers(0, 65536, size=(20, 30), dtype=np.uint16)
    Image.fromarray(a16).save(tmp_path / "b.png")
    img8, img16 = read_image(tmp_path / "a.png"), read_image(tmp_path / "b.png")
    np.testing.assert_allclose(img8.pixels, a8 / 255.0, atol=1e-6)
    np.testing.assert_allclose(img16.pixels, a16 / 65535.0, atol=1e-6)
    assert img8.pixels.dtype == img16.pixels.dtype == np.float32
    assert img16.meta["bits_stored"] == 16
    assert set(img8.meta) == set(META_KEYS) and img8.meta["modality"] is None


def test_jpeg_rgb_becomes_grey(tmp_path: Path) -> None:
    Image.fromarray(np.full((16, 12, 3), 200, dtype=np.uint8)).save(tmp_path / "c.jpg")
    image = read_image(tmp_path / "c.jpg")
    assert image.pixels.shape == (16, 12)
    np.testing.assert_allclose(image.pixels, 200 / 255.0, atol=2 / 255)


def test_read_image_dispatch_and_png_errors(tmp_path: Path) -> None:
    assert read_image(str(pydicom_file("CT_small.dcm"))).meta["modality"] == "CT"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DicomReadError, match=re.escape(str(bad))):
        read_image(bad)
    with pytest.raises(DicomReadError, match="max_pixels"):
        Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(tmp_path / "big.png")
        read_image(tmp_path / "big.png", max_pixels=100)


# --- Window presets, VOI functions, modality output ---------------------------------------


def test_window_presets_are_named_ct_windows() -> None:
    assert WINDOW_PRESETS["lung"] == (-600.0, 1500.0)
    assert WINDOW_PRESETS["brain"] == (40.0, 80.0)
    for name in ("mediastinum", "soft_tissue", "bone"):
        center, width = WINDOW_PRESETS[name]
        assert width > 0
    assert 300 <= WINDOW_PRESETS["bone"][0] <= 600 and WINDOW_PRESETS["bone"][1] >= 1500
    assert resolve_window("Soft-Tissue") == WINDOW_PRESETS["soft_tissue"]
    assert resolve_window((10, 20)) == (10.0, 20.0)
    assert resolve_window(None) is None
    with pytest.raises(ValueError, match="unknown window preset 'lungs'.*lung"):
        resolve_window("lungs")
    with pytest.raises(ValueError, match="center, width"):
        resolve_window((1, 2, 3))


def test_window_preset_equals_its_tuple() -> None:
    path = str(pydicom_file("CT_small.dcm"))
    by_name = read_dicom(path, window="bone")
    by_value = read_dicom(path, window=WINDOW_PRESETS["bone"])
    np.testing.assert_array_equal(by_name.pixels, by_value.pixels)
    assert by_name.meta["window"] == WINDOW_PRESETS["bone"]
    assert not np.array_equal(by_name.pixels, read_dicom(path, window="lung").pixels)
    with pytest.raises(ValueError, match="unknown window preset"):
        read_dicom(path, window="kidney stone")


@pytest.mark.parametrize(
    ("name", "function", "center", "width"),
    [
        ("CT_small.dcm", "LINEAR_EXACT", 40.0, 400.0),  # signed, rescaled CT
        ("CT_small.dcm", "SIGMOID", 40.0, 400.0),
        ("MR_small.dcm", "LINEAR_EXACT", 600.0, 0.5),  # width < 1 is valid for LINEAR_EXACT
        ("MR_small.dcm", "SIGMOID", 600.0, 1600.0),
        ("RG1_UNCR.dcm", "SIGMOID", 2000.0, 3000.0),  # MONOCHROME1
    ],
)
def test_voi_functions_match_pydicom_windowing(
    tmp_path: Path, name: str, function: str, center: float, width: float
) -> None:
    ds = dcmread(str(pydicom_file(name)))
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = center, width, function
    path = tmp_path / f"{function}_{name}"
    ds.save_as(path)
    ds = dcmread(path)
    windowed = apply_windowing(apply_modality_lut(ds.pixel_array, ds), ds)
    with np.errstate(over="ignore"):
        lo, hi = apply_windowing(np.array([-1e12, 1e12]), ds)  # the output range
    expected = (windowed - lo) / (hi - lo)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        expected = 1.0 - expected
    image = read_dicom(path)
    np.testing.assert_allclose(image.pixels, expected, atol=2e-6)
    assert image.meta["window"] == (center, width)


def test_modality_output_is_hounsfield_units() -> None:
    path = str(pydicom_file("CT_small.dcm"))
    ds = dcmread(path)
    image = read_dicom(path, output="modality")
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert image.pixels.dtype == np.float32
    np.testing.assert_array_equal(image.pixels, expected.astype(np.float32))
    assert image.pixels.min() < 0  # air and fat are negative HU, not clipped
    assert image.meta["window"] is None
    with pytest.raises(ValueError, match="output must be one of"):
        read_dicom(path, output="hu")
    with pytest.raises(ValueError, match="applies to output='display' only"):
        read_dicom(path, output="modality", window="lung")
    with pytest.raises(DicomReadError, match="needs a greyscale image"):
        read_dicom(str(pydicom_file("SC_rgb.dcm")), output="modality")


def test_enhanced_ct_takes_rescale_and_window_from_functional_groups() -> None:
    path = str(pydicom_file("eCT_Supplemental.dcm"))
    ds = dcmread(path)
    assert "RescaleIntercept" not in ds and "WindowCenter" not in ds  # only in the groups
    hu = read_dicom(path, all_frames=True, output="modality").pixels
    np.testing.assert_array_equal(hu, ds.pixel_array.astype(np.float32) - 1024.0)
    image = read_dicom(path, all_frames=True)
    assert image.pixels.shape == (2, 512, 512)
    assert image.meta["window"] == (49.0, 102.0)
    # LINEAR window (PS3.3 C.11.2.1.2.1) on HU, scaled to [0, 1]
    center, width = 49.0 - 0.5, 102.0 - 1.0
    linear = np.clip((hu.astype(np.float64) - center) / width + 0.5, 0, 1)
    np.testing.assert_allclose(image.pixels, linear, atol=1e-5)


# --- More errors ----------------------------------------------------------------------------


def test_zero_padding_is_accepted_but_excess_content_is_not(
    tmp_path: Path, stored: np.ndarray
) -> None:
    padded = _write_dicom(tmp_path / "padded.dcm", stored)
    ds = dcmread(padded)
    ds.PixelData = ds.PixelData + bytes(80)  # one row of zero padding
    ds.save_as(padded)
    np.testing.assert_array_equal(
        read_dicom(padded).pixels, read_dicom(_write_dicom(tmp_path / "plain.dcm", stored)).pixels
    )
    ds.PixelData = ds.PixelData[:-80] + b"\x01" * 80
    ds.save_as(tmp_path / "excess.dcm")
    _raises(tmp_path / "excess.dcm", "pixel data is 2000 bytes .* needs 1920")


def test_invalid_number_of_frames(tmp_path: Path, stored: np.ndarray) -> None:
    path = _write_dicom(tmp_path / "frames.dcm", stored)
    data = path.read_bytes()
    ds = dcmread(path)
    ds.add_new(0x00280008, "IS", "2")
    ds.save_as(path)
    data = path.read_bytes().replace(b"\x08\x00IS\x02\x002 ", b"\x08\x00IS\x02\x00x ")
    path.write_bytes(data)
    _raises(path, "invalid NumberOfFrames")


def test_installed_decoder_without_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000Lossless

    decoder = get_decoder(JPEG2000Lossless)
    assert decoder.is_available
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg", "pylibjpeg-openjpeg")})
    path = str(pydicom_file("MR_small_jp2klossless.dcm"))
    err = _raises(path, r"no installed decoder for transfer syntax 1\.2\.840\.10008\.1\.2\.4\.90")
    assert "pylibjpeg-openjpeg" in err.reason


def test_decoder_error_messages_are_scrubbed(
    tmp_path: Path, stored: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pydicom.pixels

    path = _write_dicom(tmp_path / "phi.dcm", stored)
    ds = dcmread(path)

    def leaky(*args: object, **kwargs: object) -> None:
        who = f"{ds.PatientName} / {ds.PatientID}"
        raise ValueError(f"cannot decode frame for {who}\nat {ds.StudyDate}")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", leaky)
    err = _raises(path, "pixel data could not be decoded .*<redacted>")
    for value in ("Doe", "Jane", "MRN8675309", "20240229"):
        assert value not in str(err), value
    assert "\n" not in err.reason


def test_late_parse_errors_become_dicom_read_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import medvl.data.dicom as dicom

    def lazy_failure(*args: object, **kwargs: object) -> None:
        # pydicom converts elements on first access; a corrupt sequence fails only then.
        raise OSError("No tag to read at file position 3E8")

    monkeypatch.setattr(dicom, "_meta", lazy_failure)
    _raises(str(pydicom_file("CT_small.dcm")), r"corrupt DICOM header \(OSError: No tag to read")
