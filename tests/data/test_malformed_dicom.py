"""A malformed-input corpus, built here from pydicom's real test files, through the readers.

Every case is made by damaging a real file in a known way: empty, truncated and
non-DICOM files, flipped header bytes, noise inside the encapsulated fragments of
each codec (RLE, JPEG, JPEG-LS, JPEG 2000), wrong pixel data lengths, false transfer
syntaxes, absurd declared sizes, corrupt value representations, a Deflated
dataset that inflates without bound, a JP2 box that sends pydicom's parser into an
endless loop, and an RLE header that makes the Rust decoder (pylibjpeg-rle) panic.
The contract is the same for all of them: :func:`medvl.data.dicom.read_image`
returns a finite image in [0, 1] or raises :class:`DicomReadError` naming the file;
no other exception escapes, nothing hangs, and absurd sizes are refused before
anything is decoded or allocated.
"""

from __future__ import annotations

import io
import re
import signal
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom.pixels
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import DeflatedExplicitVRLittleEndian

import medvl.data.pixels as pixels
from medvl.data.dicom import DicomImage, DicomReadError, read_image
from medvl.data.pixels import as_read_error, is_decoder_panic, is_read_failure
from medvl.data.series import list_series, read_series
from tests.data._pydicom_files import pydicom_file

CODEC_FILES = {
    "rle": "MR_small_RLE.dcm",
    "rle_rgb": "SC_rgb_rle.dcm",
    "rle_multiframe": "emri_small_RLE.dcm",
    "jpeg_baseline": "SC_rgb_jpeg_dcmtk.dcm",
    "jpeg_lossless": "JPGLosslessP14SV1_1s_1f_8b.dcm",
    "jpeg_ls": "MR_small_jpeg_ls_lossless.dcm",
    "j2k": "JPEG2000.dcm",
    "j2k_lossless_rgb": "US1_J2KR.dcm",
}
"""One real encapsulated file per codec (and a colour or multi-frame variant)."""

LARGE_CODECS = ("jpeg_lossless", "j2k_lossless_rgb")  # 768 x 1024, 480 x 640 x 3: slow to decode

NATIVE_FILES = ("CT_small.dcm", "MR_small.dcm", "image_dfl.dcm")
"""Real native files: explicit VR little endian and Deflated."""

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on damaged headers

CASE_SECONDS = 10.0  # no case may take longer: a hang fails instead of blocking the run


class _Hang(BaseException):
    """Raised by :func:`_deadline`; a BaseException, so no reader may convert it."""


@contextmanager
def _deadline(seconds: float = CASE_SECONDS) -> Iterator[None]:
    """Fail a read that runs longer than ``seconds`` (pure-Python loops are interrupted)."""
    main = threading.current_thread() is threading.main_thread()
    if not hasattr(signal, "setitimer") or not main:
        yield
        return

    def _alarm(signum: int, frame: object) -> None:
        raise _Hang(f"read did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _read_or_refuse(path: Path, **kwargs: object) -> DicomImage | DicomReadError:
    """Read ``path``: a valid image, or a DicomReadError naming it; anything else fails."""
    try:
        with _deadline():
            image = read_image(path, **kwargs)
    except DicomReadError as err:
        assert err.path == str(path)
        assert str(path) in str(err)
        assert err.reason
        return err
    except _Hang:
        pytest.fail(f"{path.name}: the read hung (over {CASE_SECONDS} s)")
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        pytest.fail(f"{path.name}: {type(err).__module__}.{type(err).__name__} escaped: {err}")
    assert image.pixels.dtype == np.float32
    assert np.isfinite(image.pixels).all()
    if kwargs.get("output", "display") == "display":
        assert image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0
    return image


def _refused(path: Path, reason: str = "", **kwargs: object) -> DicomReadError:
    """Read ``path`` and require a DicomReadError whose reason matches ``reason``."""
    result = _read_or_refuse(path, **kwargs)
    assert isinstance(result, DicomReadError), f"{path.name} was read: {result.pixels.shape}"
    if reason:
        assert re.search(reason, result.reason), result.reason
    return result


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path)
    return path


def _with_frames(ds: Dataset, frames: list[bytes]) -> Dataset:
    """``ds`` with its encapsulated pixel data replaced by ``frames`` (one fragment each)."""
    ds.PixelData = encapsulate(frames)
    return ds


def _frames(ds: Dataset) -> list[bytes]:
    count = int(ds.get("NumberOfFrames", 1) or 1)
    return list(generate_frames(ds.PixelData, number_of_frames=count))


# --- Empty, truncated and non-DICOM files ------------------------------------------------


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.dcm"
    path.write_bytes(b"")
    _refused(path, "not a DICOM file")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"FINDINGS: no acute cardiopulmonary process.\n" * 20, id="text"),
        pytest.param(b"\x00" * 4096, id="zeros"),
        pytest.param(np.random.default_rng(0).bytes(4096), id="random"),
        pytest.param(b"\x00" * 128 + b"DICM", id="preamble-only"),
        pytest.param(
            b"\x00" * 128 + b"DICM" + np.random.default_rng(1).bytes(2048), id="dicm-junk"
        ),
        pytest.param(b"PK\x03\x04" + b"\x00" * 200, id="zip"),
    ],
)
def test_non_dicom_bytes_named_dcm(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not_really.dcm"
    path.write_bytes(content)
    _refused(path)


def test_png_named_dcm(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(buffer, "PNG")
    path = tmp_path / "scan.dcm"
    path.write_bytes(buffer.getvalue())
    _refused(path, "not a DICOM file")


def test_folder_named_dcm(tmp_path: Path) -> None:
    (tmp_path / "series.dcm").mkdir()
    _refused(tmp_path / "series.dcm", "not found")


@pytest.mark.parametrize("name", [*NATIVE_FILES, *CODEC_FILES.values()])
def test_truncated_files(tmp_path: Path, name: str) -> None:
    data = pydicom_file(name).read_bytes()
    cuts = sorted({1, 64, 128, 132, 140, 200, 400, *(int(len(data) * f) for f in (0.1, 0.5, 0.9))})
    cuts += [len(data) - 3, len(data) - 1]
    for cut in cuts:
        path = tmp_path / f"cut_{cut}.dcm"
        path.write_bytes(data[:cut])
        result = _read_or_refuse(path)
        if cut < len(data) * 0.9:  # a header or most of the pixels are missing
            assert isinstance(result, DicomReadError), f"{name} cut at {cut} was read"


# --- Flipped header bytes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", *(CODEC_FILES[c] for c in CODEC_FILES if c not in LARGE_CODECS)]
)
def test_flipped_header_bytes(tmp_path: Path, name: str) -> None:
    data = pydicom_file(name).read_bytes()
    header_end = data.rfind(b"\xe0\x7f\x10\x00")  # the PixelData tag
    assert header_end > 132
    for position in np.linspace(0, header_end + 12, 30).astype(int):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        path = tmp_path / f"flip_{position}.dcm"
        path.write_bytes(damaged)
        _read_or_refuse(path)
        _read_or_refuse(path, all_frames=True)


# --- Noise inside the encapsulated fragments, for each codec ------------------------------


@pytest.mark.parametrize("codec", sorted(CODEC_FILES))
@pytest.mark.parametrize("where", ["header", "middle", "everywhere", "tail"])
def test_noisy_compressed_pixel_data(tmp_path: Path, codec: str, where: str) -> None:
    """Overwrite bytes inside the first fragment; the codestream or RLE header, or its data."""
    ds = dcmread(pydicom_file(CODEC_FILES[codec]))
    frames = _frames(ds)
    rng = np.random.default_rng(sorted(CODEC_FILES).index(codec))
    for trial in range(4):
        frame = bytearray(frames[0])
        n = len(frame)
        if where == "header":
            positions = rng.integers(0, min(n, 80), size=3)
        elif where == "middle":
            positions = rng.integers(n // 4, 3 * n // 4, size=16)
        elif where == "tail":
            positions = rng.integers(max(0, n - 32), n, size=4)
        else:
            positions = rng.integers(0, n, size=max(1, n // 20))
        for position in positions:
            frame[position] = int(rng.integers(0, 256))
        damaged = _with_frames(ds, [bytes(frame), *frames[1:]])
        path = _save(damaged, tmp_path / f"{where}{trial}.dcm")
        _read_or_refuse(path)
        _read_or_refuse(path, all_frames=True)


def test_rle_decoder_panic_becomes_dicom_read_error(tmp_path: Path) -> None:
    """Shifting the second segment offset of an RLE header by one makes pylibjpeg-rle panic.

    The panic is ``pyo3_runtime.PanicException``, a BaseException that ``except
    Exception`` does not catch; it used to kill a DataLoader worker.
    """
    ds = dcmread(pydicom_file(CODEC_FILES["rle"]))
    frame = bytearray(_frames(ds)[0])
    count, first, second = struct.unpack_from("<3L", frame)
    assert (count, first) == (2, 64)  # 16-bit greyscale: two byte segments
    struct.pack_into("<L", frame, 8, second + 1)
    path = _save(_with_frames(ds, [bytes(frame)]), tmp_path / "rle_panic.dcm")

    from rle.utils import decode_pixel_data  # the premise: the decoder itself panics

    try:
        decode_pixel_data(
            bytes(frame), rows=64, columns=64, bits_allocated=16, samples_per_pixel=1, version=2
        )
    except BaseException as err:  # noqa: BLE001
        if isinstance(err, Exception) or not is_decoder_panic(err):
            raise
    else:
        pytest.skip("this pylibjpeg-rle no longer panics on the mutation")
    error = _refused(path, "pixel data could not be decoded .*PanicException")
    assert "index out of bounds" in error.reason


def test_panic_is_a_read_failure_but_interrupts_are_not() -> None:
    panic_type = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})
    assert is_decoder_panic(panic_type("boom")) and is_read_failure(panic_type("boom"))
    assert is_read_failure(ValueError("x")) and is_read_failure(NotImplementedError("x"))
    for err in (KeyboardInterrupt(), SystemExit(1), GeneratorExit()):
        assert not is_read_failure(err)
    with pytest.raises(DicomReadError, match=r"/x\.dcm: decode \(PanicException: boom\)"):
        with as_read_error("/x.dcm", "decode"):
            raise panic_type("boom")
    with pytest.raises(KeyboardInterrupt), as_read_error("/x.dcm", "decode"):
        raise KeyboardInterrupt


def test_jp2_box_of_length_zero_does_not_hang(tmp_path: Path) -> None:
    """pydicom's ``get_j2k_parameters`` loops forever on a JP2 box of length 0."""
    ds = dcmread(pydicom_file(CODEC_FILES["j2k"]))
    jp2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x00ftyp" + _frames(ds)[0]
    path = _save(_with_frames(ds, [jp2]), tmp_path / "jp2_loop.dcm")
    started = time.perf_counter()
    _refused(path, "no valid J2K codestream header")
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("codec", "marker", "offset"),
    [
        ("jpeg_baseline", b"\xff\xc0", 5),  # SOF0: P, Y, X
        ("jpeg_lossless", b"\xff\xc3", 5),  # SOF3
        ("jpeg_ls", b"\xff\xf7", 5),  # SOF55
        ("j2k", b"\xff\x4f\xff\x51", 8),  # SOC SIZ: Xsiz, Ysiz
        ("j2k_lossless_rgb", b"\xff\x4f\xff\x51", 8),
    ],
)
def test_codestream_declaring_a_huge_image_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codec: str, marker: bytes, offset: int
) -> None:
    """Decoders allocate what the codestream header says (65535 x 65535 took 13 s and 6 GB)."""
    ds = dcmread(pydicom_file(CODEC_FILES[codec]))
    frame = bytearray(_frames(ds)[0])
    j2k = codec.startswith("j2k")
    header = (int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel))
    assert (pixels._j2k_size if j2k else pixels._jpeg_size)(bytes(frame)) == header
    at = frame.find(marker) + offset
    huge = struct.pack(">LL", 65536, 65536) if j2k else struct.pack(">HH", 65535, 65535)
    frame[at : at + len(huge)] = huge  # J2K: Xsiz, Ysiz; JPEG: Y, X
    path = _save(_with_frames(ds, [bytes(frame)]), tmp_path / "bomb.dcm")
    with _no_decoding(monkeypatch):
        error = _refused(path, "codestream declares .* but the header")
    assert f"{int(ds.Rows)} x {int(ds.Columns)}" in error.reason


# --- Wrong pixel data lengths ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda data: data[:-2], r"pixel data is 32766 bytes .* needs 32768"),
        (lambda data: data[: len(data) // 2], r"pixel data is 16384 bytes .* needs 32768"),
        (lambda data: data + b"\x01\x02", r"pixel data is 32770 bytes .* needs 32768"),
        (lambda data: b"", r"PixelData element is empty"),
    ],
    ids=["two-short", "half", "excess-content", "empty"],
)
def test_native_pixel_data_of_the_wrong_length(
    tmp_path: Path, change: Callable[[bytes], bytes], reason: str
) -> None:
    ds = dcmread(pydicom_file("CT_small.dcm"))
    ds.PixelData = change(ds.PixelData)
    _refused(_save(ds, tmp_path / "length.dcm"), reason)


def test_encapsulated_pixel_data_of_the_wrong_length(tmp_path: Path) -> None:
    ds = dcmread(pydicom_file(CODEC_FILES["jpeg_ls"]))
    frame = _frames(ds)[0]
    for cut in (2, len(frame) // 2):
        path = _save(_with_frames(ds, [frame[:cut]]), tmp_path / f"cut{cut}.dcm")
        _refused(path)
    path = _save(_with_frames(ds, [frame[:-2]]), tmp_path / "no_eoi.dcm")
    _refused(path, "no end marker; truncated")  # libjpeg would fill the missing rows in
    ds = dcmread(pydicom_file(CODEC_FILES["rle_multiframe"]))
    path = _save(_with_frames(ds, _frames(ds)[:4]), tmp_path / "missing_frames.dcm")
    _refused(path, "NumberOfFrames is 10 but the encapsulated pixel data holds only 4 fragments")


# --- False transfer syntaxes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "old", "new", "reason"),
    [
        ("CT_small.dcm", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5", "encapsulated|corrupt"),
        ("CT_small.dcm", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", ""),  # big endian
        ("CT_small.dcm", "1.2.840.10008.1.2.1", "1.2.840.10008.9.9.9", "no decoder"),
        ("CT_small.dcm", "1.2.840.10008.1.2.1", "not-a-uid-at-all!!!", "no decoder"),
        ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1", ""),
        ("SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "J2K"),
        ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.80", "JPEG-LS"),
        # libjpeg also reads JPEG-LS, so this one may decode: either outcome is fine
        ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.50", None),
    ],
)
def test_false_transfer_syntax(
    tmp_path: Path, name: str, old: str, new: str, reason: str | None
) -> None:
    data = pydicom_file(name).read_bytes()
    padded_old, padded_new = (uid.encode() + b"\x00" * (len(uid) % 2) for uid in (old, new))
    assert len(padded_old) == len(padded_new) and data.count(padded_old) == 1
    path = tmp_path / "false_syntax.dcm"
    path.write_bytes(data.replace(padded_old, padded_new))
    for all_frames in (False, True):
        if reason is None:
            _read_or_refuse(path, all_frames=all_frames)
        else:
            _refused(path, reason, all_frames=all_frames)


# --- Absurd declared sizes: refused before decoding or allocating ------------------------------


@contextmanager
def _no_decoding(monkeypatch: pytest.MonkeyPatch, limit_mib: float = 64) -> Iterator[None]:
    """Require that no decoder runs and less than ``limit_mib`` MiB is allocated."""
    calls: list[object] = []

    def _pixel_array(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise RuntimeError("decoded although the header should have been refused")

    monkeypatch.setattr(pydicom.pixels, "pixel_array", _pixel_array)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        yield
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert not calls, "pixel data was decoded"
    assert peak < limit_mib * 2**20, f"{peak / 2**20:.0f} MiB allocated"
    assert time.perf_counter() - started < 2.0


@pytest.mark.parametrize(
    ("name", "attrs", "kwargs", "reason"),
    [
        ("CT_small.dcm", {"Rows": 65535, "Columns": 65535}, {}, r"65535 x 65535 .*over max_pixels"),
        (
            "CT_small.dcm",
            {"Rows": 65535, "Columns": 65535},
            {"max_pixels": None},
            r"65535 x 65535 .* decodes to 8589672450 bytes, over the limit of 2147483648 "
            r"bytes \(MAX_DECODED_BYTES\)",
        ),
        ("CT_small.dcm", {"NumberOfFrames": 10**9}, {}, r"pixel data is 32768 bytes .* needs"),
        (
            "CT_small.dcm",
            {"NumberOfFrames": 2**31 - 1},
            {"all_frames": True, "max_pixels": None},
            r"x 2147483647 of 2147483647 frames .*MAX_DECODED_BYTES",
        ),
        ("CT_small.dcm", {"BitsAllocated": 4096}, {}, r"invalid BitsAllocated 4096"),
        ("CT_small.dcm", {"BitsAllocated": 12}, {}, r"invalid BitsAllocated 12"),
        ("CT_small.dcm", {"SamplesPerPixel": 65535}, {}, r"invalid SamplesPerPixel 65535"),
        ("CT_small.dcm", {"Rows": 0}, {}, r"invalid image size 0x128"),
        (
            "emri_small_RLE.dcm",
            {"NumberOfFrames": 2**31 - 1},
            {},
            r"NumberOfFrames is 2147483647 but .* only 10 fragments",
        ),
        (
            "emri_small_RLE.dcm",
            {"NumberOfFrames": 2**31 - 1},
            {"all_frames": True, "max_pixels": None},
            r"64 x 64 \(rows x columns\) x 2147483647 of 2147483647 frames .*MAX_DECODED_BYTES",
        ),
        (
            "MR_small_RLE.dcm",
            {"Rows": 65535, "Columns": 65535},
            {"max_pixels": None},
            r"65535 x 65535 .*MAX_DECODED_BYTES",
        ),
        (
            "JPEG2000.dcm",
            {"Rows": 65535, "Columns": 65535, "BitsAllocated": 64},
            {"max_pixels": None},
            r"65535 x 65535 .*64 bits allocated decodes to 34358689800 bytes",
        ),
        (
            "SC_rgb_jpeg_dcmtk.dcm",
            {"Rows": 4000, "Columns": 4000},
            {},
            r"JPEG codestream declares 100 x 100 x 3 .* but the header 4000 x 4000 x 3",
        ),
    ],
    ids=lambda value: (
        "-".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else None
    ),
)
def test_absurd_declared_sizes_are_refused_before_decoding(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    attrs: dict[str, int],
    kwargs: dict[str, object],
    reason: str,
) -> None:
    ds = dcmread(pydicom_file(name))
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    path = _save(ds, tmp_path / "absurd.dcm")
    with _no_decoding(monkeypatch):
        _refused(path, reason, **kwargs)


def test_decoded_byte_limit_is_configurable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = pydicom_file("CT_small.dcm")
    assert pixels.MAX_DECODED_BYTES == 2 * 1024**3
    monkeypatch.setattr(pixels, "MAX_DECODED_BYTES", 32768)  # exactly 128 x 128 x 2 bytes
    assert read_image(path).pixels.shape == (128, 128)
    monkeypatch.setattr(pixels, "MAX_DECODED_BYTES", 32767)
    with _no_decoding(monkeypatch):
        _refused(path, r"128 x 128 .* decodes to 32768 bytes, over the limit of 32767 bytes")


def test_deflate_bomb_is_refused_before_inflating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pydicom inflates a Deflated dataset in one call; 4 MB of zeros deflate to a few KB."""
    ds = dcmread(pydicom_file("CT_small.dcm"))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.add_new(0x00091010, "OB", b"\x00" * 4_000_000)
    path = _save(ds, tmp_path / "deflate_bomb.dcm")
    assert path.stat().st_size < 100_000
    assert read_image(path).pixels.shape == (128, 128)  # under the default limit: fine
    monkeypatch.setattr(pixels, "MAX_DECODED_BYTES", 1_000_000)
    _refused(path, r"Deflated dataset inflates to more than 1000000 bytes")
    assert read_image(pydicom_file("image_dfl.dcm")).pixels.shape == (512, 512)
    corrupt = bytearray(path.read_bytes())
    corrupt[-2000:-1000] = b"\xff" * 1000
    (tmp_path / "deflate_corrupt.dcm").write_bytes(corrupt)
    _refused(tmp_path / "deflate_corrupt.dcm")


# --- Corrupt value representations (pydicom raises NotImplementedError lazily) -----------------


def _with_bad_vr(name: str, tmp_path: Path, *tags: bytes) -> Path:
    """Copy of ``name`` whose elements ``tags`` (group, element, VR bytes) carry VR 'ZZ'."""
    data = pydicom_file(name).read_bytes()
    for tag in tags:
        assert data.count(tag) == 1, tag
        data = data.replace(tag, tag[:4] + b"ZZ")
    path = tmp_path / "bad_vr.dcm"
    path.write_bytes(data)
    return path


PATIENT_NAME = b"\x10\x00\x10\x00PN"
RESCALE_INTERCEPT = b"\x28\x00\x52\x10DS"
MODALITY = b"\x08\x00\x60\x00CS"
ROWS = b"\x28\x00\x10\x00US"
SERIES_UID = b"\x20\x00\x0e\x00UI"
IMAGE_POSITION = b"\x20\x00\x32\x00DS"


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        ((RESCALE_INTERCEPT,), r"invalid LUT or window .*NotImplementedError: Unknown Value Repr"),
        ((RESCALE_INTERCEPT, PATIENT_NAME), r"NotImplementedError: Unknown Value Representation"),
        ((MODALITY,), r"corrupt DICOM header \(NotImplementedError"),
        ((ROWS,), r"incomplete image pixel module"),
    ],
    ids=["rescale", "rescale-and-patient-name", "modality", "rows"],
)
def test_unknown_value_representation(tmp_path: Path, tags: tuple[bytes, ...], reason: str) -> None:
    path = _with_bad_vr("CT_small.dcm", tmp_path, *tags)
    error = _refused(path, reason)
    assert "CompressedSamples" not in str(error)  # CT_small's PatientName, even unconverted
    _refused(path, reason, output="modality")


def test_unknown_value_representation_while_quoting_a_decoder_error(tmp_path: Path) -> None:
    """The error message is scrubbed of identifying values; one with a bad VR used to escape."""
    ds = dcmread(pydicom_file(CODEC_FILES["rle"]))
    frame = bytearray(_frames(ds)[0])
    struct.pack_into("<L", frame, 4, 65)  # first segment offset: the decoder refuses it
    source = _save(_with_frames(ds, [bytes(frame)]), tmp_path / "rle.dcm")
    data = source.read_bytes()
    tag = b"\x10\x00\x10\x00PN"
    assert data.count(tag) == 1
    path = tmp_path / "rle_bad_vr.dcm"
    path.write_bytes(data.replace(tag, tag[:4] + b"\x44\x9f"))
    error = _refused(path, "pixel data could not be decoded")
    assert str(ds.PatientName) not in str(error)


# --- Series reading ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tags", [(MODALITY,), (SERIES_UID,), (IMAGE_POSITION,), (RESCALE_INTERCEPT,), (ROWS,)],
    ids=["modality", "series-uid", "image-position", "rescale", "rows"],
)
def test_series_with_unknown_value_representation(tmp_path: Path, tags: tuple[bytes, ...]) -> None:
    path = _with_bad_vr("CT_small.dcm", tmp_path, *tags)
    with _deadline():
        with pytest.raises(DicomReadError, match="bad_vr.dcm") as info:
            read_series(tmp_path)
    assert "NotImplementedError: Unknown Value Representation 'ZZ'" in info.value.reason
    assert info.value.path == str(path)


def test_series_skips_empty_and_non_dicom_files_but_refuses_broken_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = pydicom_file("CT_small.dcm").read_bytes()
    (tmp_path / "slice.dcm").write_bytes(good)
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.dcm").write_text("not an image")
    assert read_series(tmp_path).volume.shape == (1, 128, 128)
    assert [info.num_files for info in list_series(tmp_path)] == [1]

    (tmp_path / "slice.dcm").write_bytes(good[: len(good) - 5000])
    with pytest.raises(DicomReadError, match=r"slice\.dcm: pixel data is .* bytes"):
        read_series(tmp_path)

    ds = dcmread(pydicom_file("CT_small.dcm"))
    ds.Rows, ds.Columns = 65535, 65535
    ds.save_as(tmp_path / "slice.dcm")
    with _no_decoding(monkeypatch):
        with pytest.raises(DicomReadError, match=r"slice\.dcm: declared image 65535 x 65535"):
            read_series(tmp_path, max_voxels=None)

    ds = dcmread(pydicom_file(CODEC_FILES["rle"]))
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    frame = bytearray(_frames(ds)[0])
    struct.pack_into("<L", frame, 8, struct.unpack_from("<L", frame, 8)[0] + 1)  # panics
    _with_frames(ds, [bytes(frame)]).save_as(tmp_path / "slice.dcm")
    with pytest.raises(DicomReadError, match=r"slice\.dcm: pixel data could not be decoded"):
        read_series(tmp_path)
