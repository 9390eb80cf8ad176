"""Tests for medvl.data.transforms: load -> resize/pad -> augment -> tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medvl.data.transforms import (
    AlbumentationsD,
    LoadMedicalImage,
    LoadMedicalImaged,
    ResizeLongestPad,
    ResizeLongestPadd,
    build_image_transforms,
    default_train_augmentation,
)

SIZE = 32


def _write_dicom(path: Path, stored: np.ndarray, photometric: str = "MONOCHROME2") -> Path:
    """A minimal 16-bit (12 stored) secondary-capture DICOM file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def wide_dicom(tmp_path: Path) -> Path:
    """A 40 x 80 image; min-max scaling puts a single pixel at 0, the rest above."""
    rng = np.random.default_rng(0)
    stored = rng.integers(1000, 4096, size=(40, 80), dtype=np.uint16)
    return _write_dicom(tmp_path / "wide.dcm", stored)


@pytest.fixture
def tall_png(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    pixels = rng.integers(50, 256, size=(64, 16), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(tmp_path / "tall.png")
    return tmp_path / "tall.png"


def test_eval_pipeline_on_dicom_keeps_aspect_and_pads_with_zero(wide_dicom: Path) -> None:
    sample = {"image": str(wide_dicom), "report": "Clear lungs."}
    out = build_image_transforms(SIZE, train=False)(sample)
    image = out["image"]
    assert type(image) is torch.Tensor  # plain tensor, not a MONAI MetaTensor
    assert image.shape == (1, SIZE, SIZE) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert out["report"] == "Clear lungs."
    assert "image_meta" not in out
    # 40 x 80 -> 16 x 32: rows 0-7 and 24-31 are padding, the middle is the image.
    assert torch.all(image[:, :8] == 0) and torch.all(image[:, 24:] == 0)
    assert torch.all(image[:, 8:24] > 0)


def test_eval_pipeline_on_png(tall_png: Path) -> None:
    image = build_image_transforms(SIZE, train=False)({"image": tall_png})["image"]
    assert image.shape == (1, SIZE, SIZE) and image.dtype == torch.float32
    # 64 x 16 -> 32 x 8: columns 0-11 and 20-31 are padding.
    assert torch.all(image[..., :12] == 0) and torch.all(image[..., 20:] == 0)
    assert torch.all(image[..., 12:20] > 0)


def test_train_pipeline_augments_but_keeps_shape(wide_dicom: Path) -> None:
    plain = build_image_transforms(SIZE, train=False)({"image": wide_dicom})["image"]
    train = build_image_transforms(SIZE, train=True)
    outs = [train({"image": wide_dicom})["image"] for _ in range(8)]
    for out in outs:
        assert out.shape == (1, SIZE, SIZE) and out.dtype == torch.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
    assert any(not torch.allclose(out, plain) for out in outs)


def test_default_augmentation_has_no_flip() -> None:
    import albumentations as A

    names = {type(t).__name__ for t in default_train_augmentation(SIZE).transforms}
    assert not {n for n in names if "Flip" in n or "Transpose" in n}
    assert {"Affine", "RandomBrightnessContrast", "RandomGamma", "GaussNoise"} <= names
    flips = (A.HorizontalFlip, A.VerticalFlip)
    assert not any(isinstance(t, flips) for t in default_train_augmentation(SIZE))


def test_default_augmentation_is_warning_free() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aug = default_train_augmentation(SIZE)
        aug(image=np.random.default_rng(0).random((SIZE, SIZE, 1), dtype=np.float32))


def test_load_stores_meta_and_folds_colour(tmp_path: Path, wide_dicom: Path) -> None:
    d = LoadMedicalImaged(keys="image")({"image": wide_dicom})
    assert d["image"].shape == (1, 40, 80) and d["image"].dtype == np.float32
    assert d["image_meta"]["modality"] == "DX"
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((10, 12, 3), dtype=np.uint8)).save(rgb)
    assert LoadMedicalImage()(rgb).shape == (1, 10, 12)


def test_load_applies_window(wide_dicom: Path) -> None:
    default = LoadMedicalImage()(wide_dicom)
    windowed = LoadMedicalImage(window=(2048, 512))(wide_dicom)
    assert windowed.shape == default.shape and not np.allclose(windowed, default)
    assert windowed.min() == 0.0 and windowed.max() == 1.0


def test_resize_array_and_dict_agree() -> None:
    img = np.random.default_rng(2).random((1, 400, 330), dtype=np.float32)
    out = ResizeLongestPad(224)(img)
    assert isinstance(out, np.ndarray) and out.shape == (1, 224, 224) and out.dtype == np.float32
    assert out.max() <= img.max() + 1e-6 and out.min() >= 0.0  # antialiased, no overshoot
    d = ResizeLongestPadd(keys="image", size=224)({"image": torch.from_numpy(img)})
    assert isinstance(d["image"], torch.Tensor)
    np.testing.assert_allclose(d["image"].numpy(), out)


def test_resize_downscale_is_antialiased() -> None:
    # A one-pixel checkerboard averages to grey, instead of aliasing to black or white.
    board = (np.indices((64, 64)).sum(0) % 2).astype(np.float32)[None]
    out = ResizeLongestPad(16)(board)
    np.testing.assert_allclose(out, 0.5, atol=0.05)


def test_resize_upscales_small_images() -> None:
    out = ResizeLongestPad(SIZE)(np.ones((1, 8, 4), dtype=np.float32))
    assert out.shape == (1, SIZE, SIZE)
    assert out[0, :, 8:24].min() == pytest.approx(1.0) and out[0, :, :8].max() == 0.0


def test_albumentations_d_keeps_channels_first() -> None:
    import albumentations as A

    img = np.random.default_rng(3).random((1, 20, 30), dtype=np.float32)
    rotate = A.Compose([A.Rotate(limit=(90, 90), p=1.0)])
    out = AlbumentationsD(keys="image", transform=rotate)({"image": img})
    assert out["image"].shape == (1, 20, 30) and out["image"].dtype == np.float32
    assert not np.allclose(out["image"], img)
    identity = AlbumentationsD(keys="image", transform=A.Compose([]))
    tensor_out = identity({"image": torch.from_numpy(img)})
    assert isinstance(tensor_out["image"], torch.Tensor)
    np.testing.assert_array_equal(tensor_out["image"].numpy(), img)
