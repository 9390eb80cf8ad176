"""Tests for medvl.data.series: sorting, spacing, HU and geometry checks on real CT slices.

Series are built from copies of pydicom's ``CT_small.dcm`` with new positions,
instance numbers and UIDs, written under shuffled file names.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medvl.data.dicom import DicomReadError
from medvl.data.series import DicomVolume, list_series, read_series, series_key

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _ct_small() -> str:
    path = get_testdata_file("CT_small.dcm")
    if path is None:
        pytest.skip("CT_small.dcm not in the installed pydicom test data")
    return str(path)


def _write_series(
    folder: Path,
    positions: list[list[float]],
    *,
    orientation: list[float] = AXIAL,
    series_uid: str | None = None,
    instance_numbers: list[int] | None = None,
    seed: int = 0,
    prefix: str = "",
) -> tuple[str, list[np.ndarray]]:
    """Write one slice per position, stored values differing per slice; return UID and arrays."""
    folder.mkdir(exist_ok=True)
    template = dcmread(_ct_small())
    uid = series_uid or generate_uid()
    names = np.random.default_rng(seed).permutation(len(positions))  # disk order != position order
    stored = []
    for k, position in enumerate(positions):
        ds = template.copy()
        arr = template.pixel_array.astype(np.int16) + np.int16(10 * k)
        ds.PixelData = arr.tobytes()
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = list(orientation)
        ds.InstanceNumber = instance_numbers[k] if instance_numbers else k + 1
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"{prefix}{names[k]:03d}.dcm")
        stored.append(arr)
    return uid, stored


def _hu(stored: np.ndarray) -> np.ndarray:
    ds = dcmread(_ct_small(), stop_before_pixels=True)
    return (stored * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).astype(np.float32)


def _axial(zs: list[float]) -> list[list[float]]:
    return [[-158.135803, -179.035797, z] for z in zs]


def test_two_series_sorted_by_position_in_hounsfield_units(tmp_path: Path) -> None:
    zs = [-65.7, -75.7, -70.7, -80.7, -60.7]  # written out of order, 5 mm apart
    uid, stored = _write_series(tmp_path / "mixed", _axial(zs))
    other_uid, _ = _write_series(tmp_path / "mixed", _axial([0.0, 1.0, 2.0]), seed=1, prefix="b")
    (tmp_path / "mixed" / "README.txt").write_text("export notes\n")  # not DICOM: ignored

    infos = list_series(tmp_path / "mixed")
    assert sorted(i.num_slices for i in infos) == [3, 5]
    assert {i.key for i in infos} == {series_key(uid), series_key(other_uid)}
    assert uid not in repr(infos) and other_uid not in repr(infos)

    with pytest.raises(DicomReadError, match="holds 2 series") as info:
        read_series(tmp_path / "mixed")
    assert uid not in str(info.value) and other_uid not in str(info.value)
    assert series_key(uid) in str(info.value)

    volume = read_series(tmp_path / "mixed", series_uid=series_key(uid))
    assert isinstance(volume, DicomVolume)
    assert volume.volume.dtype == np.float32 and volume.volume.shape == (5, 128, 128)
    order = np.argsort(zs)
    for k, index in enumerate(order):
        np.testing.assert_array_equal(volume.volume[k], _hu(stored[index]))
    assert volume.volume.min() < -500  # HU, not windowed to [0, 1]
    np.testing.assert_allclose(volume.spacing, (5.0, 0.661468, 0.661468), atol=1e-6)
    np.testing.assert_allclose(volume.origin, _axial([-80.7])[0], atol=1e-6)
    np.testing.assert_allclose(volume.direction, [[0, 0, 1], [0, 1, 0], [1, 0, 0]], atol=1e-9)
    for k in range(5):  # the affine puts voxel (k, 0, 0) at that slice's ImagePositionPatient
        np.testing.assert_allclose(
            (volume.affine @ [k, 0, 0, 1])[:3], _axial([sorted(zs)[k]])[0], atol=1e-5
        )
    np.testing.assert_allclose(
        (volume.affine @ [0, 2, 3, 1])[:3] - volume.origin, [3 * 0.661468, 2 * 0.661468, 0]
    )
    assert volume.meta["modality"] == "CT" and volume.meta["units"] == "HU"
    assert volume.meta["series_key"] == series_key(uid)
    assert uid not in repr(volume.meta)

    by_uid = read_series(tmp_path / "mixed", series_uid=uid)
    np.testing.assert_array_equal(by_uid.volume, volume.volume)
    unknown = generate_uid()
    with pytest.raises(DicomReadError, match="no series matches") as info:
        read_series(tmp_path / "mixed", series_uid=unknown)
    assert unknown not in str(info.value)


def test_sorted_by_position_not_instance_number(tmp_path: Path) -> None:
    zs = [0.0, 3.0, 6.0, 9.0]
    _, stored = _write_series(tmp_path / "s", _axial(zs), instance_numbers=[4, 2, 3, 1])
    volume = read_series(tmp_path / "s")
    for k in range(4):
        np.testing.assert_array_equal(volume.volume[k], _hu(stored[k]))
    assert volume.spacing[0] == pytest.approx(3.0)


def test_oblique_stack_sorted_along_the_normal(tmp_path: Path) -> None:
    # Sagittal: rows run anterior->posterior (+y), columns run head->feet (-z).
    # normal = (0,1,0) x (0,0,-1) = (-1,0,0), so slices sort by decreasing x.
    xs = [4.0, -2.0, 10.0, 1.0, 7.0]
    positions = [[x, -100.0, 50.0] for x in xs]
    _, stored = _write_series(tmp_path / "sag", positions, orientation=[0, 1, 0, 0, 0, -1])
    volume = read_series(tmp_path / "sag")
    order = np.argsort([-x for x in xs])
    for k, index in enumerate(order):
        np.testing.assert_array_equal(volume.volume[k], _hu(stored[index]))
    np.testing.assert_allclose(volume.direction[0], [-1, 0, 0], atol=1e-9)
    np.testing.assert_allclose(volume.direction[1:], [[0, 0, -1], [0, 1, 0]], atol=1e-9)
    assert volume.spacing[0] == pytest.approx(3.0)
    np.testing.assert_allclose(volume.origin, [10.0, -100.0, 50.0])


def test_missing_slice_is_an_error_or_a_warning(tmp_path: Path) -> None:
    _write_series(tmp_path / "gap", _axial([0.0, 2.5, 5.0, 10.0]))
    with pytest.raises(DicomReadError, match=r"non-uniform slice spacing: gaps from 2\.5 to 5 mm"):
        read_series(tmp_path / "gap")
    with pytest.warns(UserWarning, match="non-uniform slice spacing"):
        volume = read_series(tmp_path / "gap", on_irregular="warn")
    assert volume.spacing[0] == pytest.approx(10.0 / 3)
    assert volume.meta["irregular"] is True
    assert read_series(tmp_path / "gap", spacing_tolerance=1.5).meta["irregular"] is False
    with pytest.raises(ValueError, match="on_irregular"):
        read_series(tmp_path / "gap", on_irregular="ignore")


def test_small_position_jitter_is_uniform(tmp_path: Path) -> None:
    _write_series(tmp_path / "jitter", _axial([0.0, 5.004, 9.998, 15.001]))
    volume = read_series(tmp_path / "jitter")
    assert volume.meta["irregular"] is False
    assert volume.spacing[0] == pytest.approx(15.001 / 3)


def test_sheared_stack_is_irregular(tmp_path: Path) -> None:
    positions = [[-158.0 + 0.5 * k, -179.0, 5.0 * k] for k in range(4)]  # drifts in x: tilt
    _write_series(tmp_path / "tilt", positions)
    with pytest.raises(DicomReadError, match="not on one line"):
        read_series(tmp_path / "tilt")


def test_duplicate_positions(tmp_path: Path) -> None:
    _write_series(tmp_path / "dup", _axial([0.0, 5.0, 5.0, 10.0]))
    with pytest.raises(DicomReadError, match="duplicate slice positions"):
        read_series(tmp_path / "dup")


def test_inconsistent_orientation_or_size(tmp_path: Path) -> None:
    _write_series(tmp_path / "orient", _axial([0.0, 5.0, 10.0]))
    odd = sorted((tmp_path / "orient").glob("*.dcm"))[0]
    ds = dcmread(odd)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9, 0.43589]
    ds.save_as(odd)
    with pytest.raises(DicomReadError, match="different orientations"):
        read_series(tmp_path / "orient")

    _write_series(tmp_path / "size", _axial([0.0, 5.0, 10.0]))
    odd = sorted((tmp_path / "size").glob("*.dcm"))[0]
    ds = dcmread(odd)
    ds.PixelData, ds.Rows = ds.pixel_array[:64].tobytes(), 64
    ds.save_as(odd)
    with pytest.raises(DicomReadError, match="different sizes"):
        read_series(tmp_path / "size")


def test_per_slice_rescale_is_applied(tmp_path: Path) -> None:
    _, stored = _write_series(tmp_path / "rescale", _axial([0.0, 5.0]))
    first = next(
        p for p in (tmp_path / "rescale").glob("*.dcm") if dcmread(p).ImagePositionPatient[2] == 0
    )
    ds = dcmread(first)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    ds.save_as(first)
    volume = read_series(tmp_path / "rescale")
    np.testing.assert_array_equal(volume.volume[0], stored[0] * 2.0 - 1000)
    np.testing.assert_array_equal(volume.volume[1], _hu(stored[1]))


def test_missing_geometry_and_bad_slices(tmp_path: Path) -> None:
    _write_series(tmp_path / "nogeo", _axial([0.0, 5.0]))
    odd = sorted((tmp_path / "nogeo").glob("*.dcm"))[1]
    ds = dcmread(odd)
    del ds.ImagePositionPatient
    ds.save_as(odd)
    with pytest.raises(DicomReadError, match=re.escape(str(odd)) + ".*cannot be placed in 3D"):
        read_series(tmp_path / "nogeo")

    _write_series(tmp_path / "cut", _axial([0.0, 5.0]))
    odd = sorted((tmp_path / "cut").glob("*.dcm"))[0]
    odd.write_bytes(odd.read_bytes()[:-5000])
    with pytest.raises(DicomReadError, match=re.escape(str(odd)) + ".*pixel data is"):
        read_series(tmp_path / "cut")


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DicomReadError, match="folder not found"):
        read_series(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    with pytest.raises(DicomReadError, match="no DICOM image files"):
        read_series(tmp_path / "empty")
    _write_series(tmp_path / "big", _axial([0.0, 5.0]))
    with pytest.raises(DicomReadError, match="over max_voxels=1000"):
        read_series(tmp_path / "big", max_voxels=1000)


def test_enhanced_multiframe_ct_file() -> None:
    path = get_testdata_file("eCT_Supplemental.dcm")
    ds = dcmread(path)
    volume = read_series(path)
    assert volume.volume.shape == (2, 512, 512)
    # IOP (-1,0,0, 0,1,0): normal (0,0,-1), so the frame at z=-149 comes first.
    hu = ds.pixel_array.astype(np.float32) - 1024.0  # PixelValueTransformationSequence
    np.testing.assert_array_equal(volume.volume, hu[::-1])
    np.testing.assert_allclose(volume.spacing, (10.0, 0.388672, 0.388672))
    np.testing.assert_allclose(volume.origin, (99.5, -301.5, -149.0))
    np.testing.assert_allclose(volume.direction, [[0, 0, -1], [0, 1, 0], [-1, 0, 0]], atol=1e-9)
    assert volume.meta["units"] == "HU" and volume.meta["slice_thickness"] == 10.0


def test_classic_multiframe_without_positions_is_refused() -> None:
    path = get_testdata_file("emri_small.dcm")  # 10 frames, no functional groups
    with pytest.raises(DicomReadError, match="classic multi-frame"):
        read_series(path)
