"""Tests for medvl.data.monai_reader through MONAI's LoadImage / LoadImaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from monai.transforms import Compose, EnsureChannelFirstd, LoadImage, LoadImaged
from pydicom import dcmread
from pydicom.uid import generate_uid

from medvl.data.dicom import DicomReadError, read_dicom
from medvl.data.monai_reader import MedvlDicomReader
from medvl.data.series import read_series
from tests.data._pydicom_files import pydicom_file

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _patient_point(ds: object, row: float, col: float) -> np.ndarray:
    """PS3.3 C.7.6.2.1.1: position of pixel (row, column) in LPS mm."""
    ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
    iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    return ipp + iop[:3] * dx * col + iop[3:] * dy * row


def _oblique_copy(tmp_path: Path) -> Path:
    ds = dcmread(str(pydicom_file("CT_small.dcm")))
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.6, 0.0, -0.8]  # oblique, unit, orthogonal
    ds.ImagePositionPatient = [12.0, -30.0, 45.0]
    ds.PixelSpacing = [0.5, 0.8]  # rows 0.5 mm apart, columns 0.8 mm apart
    path = tmp_path / "oblique.dcm"
    ds.save_as(path)
    return path


def test_loadimage_2d_matches_read_dicom_and_geometry(tmp_path: Path) -> None:
    path = _oblique_copy(tmp_path)
    ds = dcmread(path)
    img = LoadImage(reader=MedvlDicomReader(), image_only=True, ensure_channel_first=True)(path)
    pixels = read_dicom(path).pixels  # (H, W)
    assert tuple(img.shape) == (1, 128, 128)
    np.testing.assert_array_equal(img[0].numpy(), pixels.T)  # MONAI order: (x, y) = (W, H)
    affine = img.affine.numpy()
    for row, col in [(0, 0), (3, 7), (127, 5)]:
        world = affine @ np.array([col, row, 0.0, 1.0])  # MONAI index (i=column, j=row)
        np.testing.assert_allclose(world[:3], LPS_TO_RAS @ _patient_point(ds, row, col), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :2], axis=0), [0.8, 0.5])  # x, y spacing
    assert img.meta["modality"] == "CT"
    assert str(ds.PatientName) not in repr(dict(img.meta))
    assert str(ds.SOPInstanceUID) not in repr(dict(img.meta))


def test_numpy_order_and_lps() -> None:
    path = str(pydicom_file("CT_small.dcm"))
    ds = dcmread(path)
    reader = MedvlDicomReader(numpy_order=True, affine_lps_to_ras=False, window="lung")
    img = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(path)
    np.testing.assert_array_equal(img[0].numpy(), read_dicom(path, window="lung").pixels)
    world = img.affine.numpy() @ np.array([9.0, 4.0, 0.0, 1.0])  # (row, column) order
    np.testing.assert_allclose(world[:3], _patient_point(ds, 9, 4), atol=1e-6)
    assert img.meta["window"] == (-600.0, 1500.0)


def test_modality_output_gives_hounsfield_units() -> None:
    path = str(pydicom_file("CT_small.dcm"))
    ds = dcmread(path)
    img = LoadImage(reader=MedvlDicomReader(output="modality", numpy_order=True), image_only=True)(
        path
    )
    np.testing.assert_array_equal(img.numpy(), ds.pixel_array * 1.0 - 1024.0)


def test_rgb_channel_last_becomes_first() -> None:
    path = str(pydicom_file("SC_rgb.dcm"))
    img = LoadImage(reader=MedvlDicomReader(), image_only=True, ensure_channel_first=True)(path)
    assert tuple(img.shape) == (3, 100, 100)
    expected = np.moveaxis(read_dicom(path).pixels, -1, 0).transpose(0, 2, 1)  # (C, W, H)
    np.testing.assert_array_equal(img.numpy(), expected)


def test_frames_become_channels() -> None:
    path = str(pydicom_file("emri_small.dcm"))
    reader = MedvlDicomReader(all_frames=True, numpy_order=True)
    img = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(path)
    assert tuple(img.shape) == (10, 64, 64)
    np.testing.assert_array_equal(img.numpy(), read_dicom(path, all_frames=True).pixels)


def test_list_of_files_stacks_channels() -> None:
    paths = [str(pydicom_file("MR_small.dcm")), str(pydicom_file("MR_small_RLE.dcm"))]
    img = LoadImage(reader=MedvlDicomReader(), image_only=True, ensure_channel_first=True)(paths)
    assert tuple(img.shape) == (2, 64, 64)
    np.testing.assert_array_equal(img[0].numpy(), img[1].numpy())  # same image, two encodings


def _write_series(folder: Path, zs: list[float]) -> None:
    folder.mkdir()
    template = dcmread(str(pydicom_file("CT_small.dcm")))
    uid = generate_uid()
    for k, z in enumerate(zs):
        ds = template.copy()
        ds.PixelData = (template.pixel_array + np.int16(5 * k)).astype(np.int16).tobytes()
        ds.ImagePositionPatient = [-158.0, -179.0, float(z)]
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        ds.save_as(folder / f"{len(zs) - k:02d}.dcm")


def test_loadimaged_reads_a_series_folder(tmp_path: Path) -> None:
    _write_series(tmp_path / "ct", [0.0, 2.0, 4.0, 6.0])
    volume = read_series(tmp_path / "ct")
    load = Compose(
        [LoadImaged(keys="image", reader=MedvlDicomReader()), EnsureChannelFirstd(keys="image")]
    )
    sample = load({"image": str(tmp_path / "ct"), "report": "no acute findings"})
    img = sample["image"]
    assert tuple(img.shape) == (1, 128, 128, 4)  # (C, x, y, z)
    np.testing.assert_array_equal(img[0].numpy(), volume.volume.transpose(2, 1, 0))
    assert img.min() < -500  # Hounsfield units
    for i, j, k in [(0, 0, 0), (5, 9, 3)]:
        world = img.affine.numpy() @ np.array([i, j, k, 1.0])
        lps = volume.affine @ np.array([k, j, i, 1.0])
        np.testing.assert_allclose(world[:3], LPS_TO_RAS @ lps[:3], atol=1e-6)
    np.testing.assert_allclose(img.pixdim[:3].numpy(), [0.661468, 0.661468, 2.0], atol=1e-6)
    assert img.meta["units"] == "HU" and sample["report"] == "no acute findings"


def test_enhanced_file_as_volume() -> None:
    path = str(pydicom_file("eCT_Supplemental.dcm"))
    reader = MedvlDicomReader(as_volume=True, numpy_order=True)
    img = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(path)
    np.testing.assert_array_equal(img[0].numpy(), read_series(path).volume)


def test_verify_suffix(tmp_path: Path) -> None:
    reader = MedvlDicomReader()
    assert reader.verify_suffix("a/b/image.dcm") and reader.verify_suffix("IM0001.IMA")
    assert reader.verify_suffix("1.2.840.113619.2.55.3") and reader.verify_suffix("IM_0001")
    assert reader.verify_suffix(str(tmp_path)) and reader.verify_suffix(["x.dcm", "y.dcm"])
    assert not reader.verify_suffix("scan.nii.gz") and not reader.verify_suffix(["x.dcm", "y.png"])


def test_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.dcm"
    bad.write_text("not an image\n" * 20)
    with pytest.raises(DicomReadError, match="notes.dcm: not a DICOM file"):
        MedvlDicomReader().read(bad)
    with pytest.raises(RuntimeError, match="not a DICOM file"):  # LoadImage reports the reason
        LoadImage(reader=MedvlDicomReader(), image_only=True)(bad)
