"""The DICOM pixel pipeline: parse, check, decode, modality LUT, VOI LUT/window, colour.

The stages of the DICOM grayscale transformation chain (PS3.3 C.11, PS3.4 N.2.1.1), used
by :func:`medvl.data.dicom.read_dicom` for single images, by
:func:`medvl.data.series.read_series` for volumes and by
:class:`medvl.data.monai_reader.MedvlDicomReader` for plane geometry:

* :func:`open_dataset` parses a Part 10 file; :func:`check_pixel_data` checks that there
  are pixels an installed decoder can read and that their length matches the header;
  :func:`decode_pixels` decodes the first or all frames (YBR converted to RGB).
* :func:`frame_views` gives, per frame, the attributes that frame is read with: enhanced
  multi-frame images carry rescale, window and plane geometry per frame in functional
  groups (PS3.3 C.7.6.16).
* :func:`apply_modality` applies the modality LUT (rescale slope/intercept or *Modality
  LUT Sequence*); :func:`greyscale_display` the VOI LUT (window center/width with LINEAR,
  LINEAR_EXACT or SIGMOID, or a *VOI LUT Sequence*) or an explicit window, scales the VOI
  output range to [0, 1] and inverts MONOCHROME1 so that 1 is always bright;
  :func:`colour_display` scales RGB, YBR_* and PALETTE COLOR images by their bit depth.

The stages are pydicom's own (``pydicom.pixels.apply_modality_lut``, ``apply_voi_lut``,
``apply_color_lut``); ``tests/data/test_dicom_corpus.py`` holds the output to them on
every file of pydicom's and pydicom-data's test corpus. Every failure raises
:class:`DicomReadError` naming the file and the reason; library messages quoted in it
pass through :func:`scrubbed_error`, which removes the values of
:data:`medvl.data.deid.IDENTIFYING_KEYWORDS`.

Hostile input. Nothing a file declares is allocated or decoded before it is checked:
the decoded size (rows x columns x frames x samples x bytes per value) must stay under
:data:`MAX_DECODED_BYTES`, a Deflated dataset must inflate to less than that, native
pixel data must have the declared length, and each JPEG, JPEG-LS or JPEG 2000 frame's
own codestream header must declare the image the DICOM header does (a decoder allocates
what the codestream says). A decoder that panics (pylibjpeg-rle raises
``pyo3_runtime.PanicException``, a ``BaseException``) is caught like any other
failure by :func:`as_read_error`; only ``KeyboardInterrupt``, ``SystemExit`` and
``GeneratorExit`` pass through.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from medvl.data.deid import IDENTIFYING_KEYWORDS

__all__ = [
    "GREY",
    "MAX_DECODED_BYTES",
    "RGB_LIKE",
    "DicomReadError",
    "apply_modality",
    "as_read_error",
    "check_pixel_data",
    "colour_display",
    "decode_pixels",
    "frame_views",
    "greyscale_display",
    "header_text",
    "is_decoder_panic",
    "is_read_failure",
    "min_max_scale",
    "open_dataset",
    "photometric_interpretation",
    "scrubbed_error",
]

GREY: frozenset[str] = frozenset({"MONOCHROME1", "MONOCHROME2"})
"""Greyscale photometric interpretations (read through the modality and VOI LUTs)."""

RGB_LIKE: frozenset[str] = frozenset(
    {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420"}
)
"""Colour photometric interpretations that decode to RGB (PALETTE COLOR goes through its LUT)."""

MAX_DECODED_BYTES: int = 2 * 1024**3
"""Largest pixel buffer (bytes) a read may allocate: 2 GiB unless changed.

Checked against what the header declares (rows x columns x frames decoded x samples x
bytes per decoded value), and against a Deflated dataset's inflated size, before
anything is decoded. It bounds the decoded stored values; the stages after decoding
(float64 LUTs, the float32 output) take a few times more, which ``max_pixels`` of
:func:`medvl.data.dicom.read_dicom` bounds. Set it on this module to change it, e.g.
``medvl.data.pixels.MAX_DECODED_BYTES = 8 * 1024**3``.
"""

# Functional group macros (PS3.3 C.7.6.16) whose attributes replace the classic
# top-level ones for each frame of an enhanced multi-frame image.
_FRAME_MACROS = (
    "PixelValueTransformationSequence",  # RescaleSlope / RescaleIntercept / RescaleType
    "FrameVOILUTSequence",  # WindowCenter / WindowWidth / VOILUTFunction
    "PixelMeasuresSequence",  # PixelSpacing / SliceThickness / SpacingBetweenSlices
    "PlanePositionSequence",  # ImagePositionPatient
    "PlaneOrientationSequence",  # ImageOrientationPatient
)
# Top-level geometry a frame view keeps besides group 0028 (image pixel, LUT modules).
_GEOMETRY_KEYWORDS = (
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceThickness",
    "SpacingBetweenSlices",
)


class DicomReadError(ValueError):
    """An image file that cannot be turned into trustworthy pixels.

    Raised for DICOM and PNG/JPEG input alike. The message is ``"<path>: <reason>"``.

    Attributes:
        path: The file that failed.
        reason: Why, in words (no header values that could identify a patient).
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the two-argument constructor picklable (DataLoader workers re-raise).
        return (type(self), (self.path, self.reason))


def is_decoder_panic(err: BaseException) -> bool:
    """True for a panic in a Rust extension: pyo3's ``pyo3_runtime.PanicException``.

    pyo3 (used by pylibjpeg-rle) derives it from ``BaseException``, so ``except
    Exception`` misses it, and each extension module creates its own class, so it
    is recognised by module and name rather than imported.
    """
    return any(
        cls.__module__ == "pyo3_runtime" and cls.__name__ == "PanicException"
        for cls in type(err).__mro__
    )


def is_read_failure(err: BaseException) -> bool:
    """True when ``err`` means bad input: any ``Exception`` or a decoder panic.

    ``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` are not failures of
    the file and must propagate.
    """
    return isinstance(err, Exception) or is_decoder_panic(err)


@contextmanager
def as_read_error(path: str | os.PathLike[str], what: str, ds: Any = None) -> Iterator[None]:
    """Turn every read failure inside the block into a scrubbed :class:`DicomReadError`.

    A DicomReadError passes unchanged; other failures (:func:`is_read_failure`)
    become ``scrubbed_error(path, what, err, ds)``; anything else propagates.
    """
    try:
        yield
    except DicomReadError:
        raise
    except BaseException as err:
        if not is_read_failure(err):
            raise
        raise scrubbed_error(path, what, err, ds) from err


def open_dataset(path: str | os.PathLike[str], *, stop_before_pixels: bool = False) -> Any:
    """Parse a Part 10 file with pydicom; every failure becomes a DicomReadError.

    Empty files and files without the ``DICM`` prefix are "not a DICOM file"; a
    Deflated dataset that would inflate beyond :data:`MAX_DECODED_BYTES` is refused
    before pydicom inflates it in memory.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not Path(path).is_file():
        raise DicomReadError(path, "file not found")
    if Path(path).stat().st_size == 0:
        raise DicomReadError(path, "not a DICOM file (empty file)")
    with as_read_error(path, "truncated or corrupt DICOM"):
        _check_inflated_size(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on harmless header quirks
            return pydicom.dcmread(path, force=False, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as err:
        raise DicomReadError(path, f"not a DICOM file ({err})") from err
    except BaseException as err:
        if not is_read_failure(err):
            raise
        raise scrubbed_error(path, "truncated or corrupt DICOM", err) from err


def _check_inflated_size(path: str | os.PathLike[str]) -> None:
    """Refuse a Deflated Explicit VR dataset that inflates beyond :data:`MAX_DECODED_BYTES`.

    pydicom inflates the whole dataset with one ``zlib.decompress`` call, so a small
    file could otherwise expand to any size in memory; here it is inflated in chunks
    that are counted and dropped. Files that are not Part 10 or not Deflated are left
    to :func:`pydicom.dcmread` to judge.
    """
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:  # pydicom's own file meta reader: private, so its absence only skips the check
        from pydicom.filereader import _read_file_meta_info, read_preamble
    except ImportError:  # pragma: no cover - a future pydicom
        return
    limit = MAX_DECODED_BYTES
    with open(path, "rb") as fp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                read_preamble(fp, False)
                meta = _read_file_meta_info(fp)
        except InvalidDicomError:
            return  # not Part 10: dcmread says so
        except Exception:  # noqa: BLE001 - a corrupt file meta: dcmread says so
            return
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            return
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total = 0
        while chunk := fp.read(1 << 20):
            while chunk:
                total += len(inflater.decompress(chunk, 1 << 24))
                if total > limit:
                    raise DicomReadError(
                        path,
                        f"Deflated dataset inflates to more than {limit} bytes "
                        "(MAX_DECODED_BYTES); refused before decompression",
                    )
                chunk = inflater.unconsumed_tail


def scrubbed_error(
    path: str | os.PathLike[str], what: str, err: BaseException, ds: Any = None
) -> DicomReadError:
    """A DicomReadError for ``what``, quoting ``err`` with identifying header values removed.

    Library messages rarely quote header values, but when they do, any value of an
    :data:`~medvl.data.deid.IDENTIFYING_KEYWORDS` element found in ``ds`` (and each ``^``
    component of a person name) is replaced by ``<redacted>``; the message is
    joined onto one line and cut at 400 characters.
    """
    try:
        text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        if ds is not None:
            for value in _identifying_values(ds):
                parts = {p.strip() for p in (value, *value.split("^"))}
                for part in sorted(parts, key=len, reverse=True):  # whole name first
                    if len(part) >= 3 and part in text:
                        text = text.replace(part, "<redacted>")
    except Exception:  # noqa: BLE001 - cannot scrub: quote nothing rather than leak
        text = ""
    text = text if len(text) <= 400 else text[:400] + "..."
    return DicomReadError(path, f"{what} ({type(err).__name__}{': ' + text if text else ''})")


def _identifying_values(ds: Any) -> list[str]:
    """The values of the identifying elements in ``ds``, as strings.

    An element that cannot be converted (a corrupt VR or value: the likely reason
    for the error being quoted) contributes its raw bytes, decoded as Latin-1 and
    split at backslashes, so its value is still redacted.
    """
    from pydicom.datadict import tag_for_keyword

    found: list[str] = []
    for keyword in IDENTIFYING_KEYWORDS:
        tag = tag_for_keyword(keyword)
        if tag is None or tag not in ds:
            continue
        try:
            elem = ds[tag]
            if elem.VR == "SQ" or elem.value is None:
                continue
            values = elem.value if elem.VM > 1 else [elem.value]
            found.extend(str(value) for value in values)
        except Exception:  # noqa: BLE001 - fall back to the raw, unconverted bytes
            raw = getattr(ds.get_item(tag), "value", None)
            if isinstance(raw, bytes | bytearray):
                found.extend(bytes(raw).decode("latin-1").split("\\"))
    return [value.strip("\x00 ") for value in found if value.strip("\x00 ")]


def photometric_interpretation(ds: Any) -> str:
    """The dataset's PhotometricInterpretation, upper case ("" when missing)."""
    return str(ds.get("PhotometricInterpretation", "")).strip().upper()


def check_pixel_data(
    path: str | os.PathLike[str], ds: Any, *, all_frames: bool, max_pixels: int | None
) -> tuple[Any, int]:
    """Check there are pixels we can decode; return the transfer syntax and frame count."""
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        if other:
            reason = f"no PixelData element ({other[0]} is not supported)"
        elif len(ds) == 0:
            reason = "no PixelData element: nothing after the file meta (truncated file?)"
        elif "Rows" in ds and "Columns" in ds:
            # pydicom stops quietly at the end of a file cut inside the header.
            reason = (
                "no PixelData element although Rows/Columns describe an image (truncated file?)"
            )
        else:
            reason = "no PixelData element"
        raise DicomReadError(path, reason)
    if not ds.PixelData:  # present with length 0
        raise DicomReadError(path, "PixelData element is empty")
    tsyntax = _check_decodable(path, ds)
    frames = _check_geometry(path, ds, all_frames=all_frames, max_pixels=max_pixels)
    return tsyntax, frames


def decode_pixels(path: str | os.PathLike[str], ds: Any, *, all_frames: bool) -> np.ndarray:
    """Stored values of the first or of all frames (YBR converted to RGB)."""
    from pydicom.pixels import pixel_array

    # Decoder errors have many types; pylibjpeg-rle panics (see is_decoder_panic).
    with as_read_error(path, "pixel data could not be decoded", ds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # raw=False: pydicom converts YBR_FULL / YBR_FULL_422 to RGB
            # (pydicom.pixels.convert_color_space) unless the codec already did.
            arr = pixel_array(ds, index=None if all_frames else 0, raw=False)
    return arr


def _check_decodable(path: str | os.PathLike[str], ds: Any) -> Any:
    """Return the transfer syntax UID after checking a decoder is installed for it."""
    from pydicom.pixels import get_decoder

    tsyntax = ds.file_meta.get("TransferSyntaxUID")
    if tsyntax is None:
        raise DicomReadError(path, "file meta has no TransferSyntaxUID")
    label = f"{tsyntax} ({tsyntax.name})" if tsyntax.name != str(tsyntax) else str(tsyntax)
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError as err:
        raise DicomReadError(path, f"no decoder for transfer syntax {label}") from err
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin"
        raise DicomReadError(
            path, f"no installed decoder for transfer syntax {label} (missing: {missing})"
        )
    return tsyntax


def _check_geometry(
    path: str | os.PathLike[str], ds: Any, *, all_frames: bool, max_pixels: int | None
) -> int:
    """Check declared sizes and the pixel data against them; return the number of frames.

    Everything here reads the header and the still-encoded bytes only, so an absurd
    header is refused before a decoder allocates for it:

    * the image pixel module (Rows, Columns, SamplesPerPixel, BitsAllocated,
      NumberOfFrames) holds sane values;
    * the values decoded (rows x columns x samples x frames decoded) are at most
      ``max_pixels`` and their bytes at most :data:`MAX_DECODED_BYTES`;
    * native pixel data shorter than rows x columns x frames x samples x bits
      allocated is an error; longer data is accepted only when every excess byte is
      zero (trailing padding, which pydicom also ignores), since excess content means
      the header understates the image;
    * encapsulated pixel data holds at least one fragment per frame, and each JPEG,
      JPEG-LS or JPEG 2000 frame decoded declares Rows x Columns in its codestream
      (:func:`_check_codestreams`).
    """
    from pydicom.pixels.utils import get_expected_length, get_nr_frames

    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.BitsAllocated)
    except Exception as err:  # noqa: BLE001
        raise DicomReadError(path, f"incomplete image pixel module ({err})") from err
    try:
        frames = int(get_nr_frames(ds, warn=False))
    except (TypeError, ValueError) as err:
        raise DicomReadError(path, "invalid NumberOfFrames (not an integer)") from err
    if rows <= 0 or cols <= 0:
        raise DicomReadError(path, f"invalid image size {rows}x{cols}")
    if frames <= 0:
        raise DicomReadError(path, f"invalid NumberOfFrames {frames}")
    if samples not in (1, 3):
        raise DicomReadError(path, f"invalid SamplesPerPixel {samples} (must be 1 or 3)")
    if not (bits == 1 or (bits % 8 == 0 and 8 <= bits <= 64)):
        raise DicomReadError(
            path, f"invalid BitsAllocated {bits} (must be 1 or a multiple of 8 up to 64)"
        )
    decoded_frames = frames if all_frames else 1
    declared = (
        f"{rows} x {cols} (rows x columns) x {decoded_frames} of {frames} frames x "
        f"{samples} samples"
    )
    decoded = rows * cols * samples * decoded_frames
    if max_pixels is not None and decoded > max_pixels:
        raise DicomReadError(
            path, f"image has {decoded} values ({declared}), over max_pixels={max_pixels}"
        )
    nbytes = decoded * _decoded_itemsize(bits)
    if nbytes > MAX_DECODED_BYTES:
        raise DicomReadError(
            path,
            f"declared image {declared} x {bits} bits allocated decodes to {nbytes} bytes, "
            f"over the limit of {MAX_DECODED_BYTES} bytes (MAX_DECODED_BYTES); "
            "refused before decoding",
        )
    tsyntax = ds.file_meta.TransferSyntaxUID
    if not tsyntax.is_encapsulated:
        expected = get_expected_length(ds, unit="bytes")
        data = ds.PixelData
        actual = len(data)
        # Native pixel data is padded to an even length; zero bytes beyond that are padding.
        short = actual < expected
        excess = actual > expected + (expected % 2) and any(data[expected:])
        if short or excess:
            raise DicomReadError(
                path,
                f"pixel data is {actual} bytes but rows x columns x frames x samples x "
                f"bits allocated needs {expected} (truncated or inconsistent header)",
            )
    else:
        _check_codestreams(path, ds, tsyntax, rows, cols, frames, decoded_frames)
    return frames


def _decoded_itemsize(bits_allocated: int) -> int:
    """Bytes per value of the array pydicom decodes to (1-bit data is unpacked to uint8)."""
    for size in (1, 2, 4):
        if bits_allocated <= 8 * size:
            return size
    return 8


_END_MARKER = b"\xff\xd9"  # JPEG / JPEG-LS EOI and JPEG 2000 EOC

_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
)  # SOF0-SOF15 (ISO/IEC 10918-1 B.1.1.3, without DHT, JPG, DAC) and SOF55 (JPEG-LS)


def _jpeg_size(src: bytes) -> tuple[int, int, int] | None:
    """``(rows, columns, components)`` from a JPEG or JPEG-LS frame header, None if unparseable.

    Walks the marker segments from SOI to the first SOF (ISO/IEC 10918-1 B.2,
    ISO/IEC 14495-1 C.2); every step moves forward, so it ends on any input.
    """
    if src[:2] != b"\xff\xd8":
        return None
    offset, end = 2, len(src)
    while offset + 4 <= end:
        if src[offset] != 0xFF:
            return None
        marker = src[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
        elif marker in _JPEG_SOF:
            if offset + 10 > end:
                return None
            rows = int.from_bytes(src[offset + 5 : offset + 7], "big")
            cols = int.from_bytes(src[offset + 7 : offset + 9], "big")
            return rows, cols, src[offset + 9]
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            offset += 2
        elif marker in (0xD8, 0xD9, 0xDA):  # SOI, EOI or SOS before any SOF
            return None
        else:
            length = int.from_bytes(src[offset + 2 : offset + 4], "big")
            if length < 2:
                return None
            offset += 2 + length
    return None


def _j2k_size(src: bytes) -> tuple[int, int, int] | None:
    """``(rows, columns, components)`` from a JPEG 2000 SIZ segment, None if unparseable.

    A JP2 file wrapper is walked box by box to the ``jp2c`` codestream box
    (ISO/IEC 15444-1 I.4); a box shorter than its own header before it (such as
    length 0) makes the frame unparseable, since pydicom's own parser
    (``get_j2k_parameters``) would loop forever on it.
    """
    offset, end = 0, len(src)
    if src[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":
        offset = 12
        while True:
            if offset + 8 > end:
                return None
            if src[offset + 4 : offset + 8] == b"jp2c":
                offset += 8
                break
            length = int.from_bytes(src[offset : offset + 4], "big")
            if length < 8:
                return None
            offset += length
    if src[offset : offset + 4] != b"\xff\x4f\xff\x51" or offset + 42 > end:
        return None  # SOC, then SIZ (15444-1 A.5.1)

    def u32(at: int) -> int:
        return int.from_bytes(src[offset + at : offset + at + 4], "big")

    xsiz, ysiz, x0, y0 = u32(8), u32(12), u32(16), u32(20)
    components = int.from_bytes(src[offset + 40 : offset + 42], "big")
    return ysiz - y0, xsiz - x0, components


def _check_codestreams(
    path: str | os.PathLike[str],
    ds: Any,
    tsyntax: Any,
    rows: int,
    cols: int,
    frames: int,
    decoded_frames: int,
) -> None:
    """Check encapsulated frames before decoding: enough fragments, honest codestream headers.

    JPEG, JPEG-LS and JPEG 2000 decoders allocate the image their codestream header
    declares, not the one the DICOM header does, and fill a truncated frame in
    silently; a frame whose header is unparseable or declares another size or
    sample count, or that lacks its end marker, is refused here.
    """
    from pydicom.encaps import generate_frames, parse_basic_offsets, parse_fragments
    from pydicom.uid import (
        JPEG2000TransferSyntaxes,
        JPEGLSTransferSyntaxes,
        JPEGTransferSyntaxes,
    )

    data = ds.PixelData
    try:
        buffer = BytesIO(data)
        parse_basic_offsets(buffer)
        fragments, _ = parse_fragments(buffer)
    except Exception as err:  # noqa: BLE001
        raise scrubbed_error(path, "malformed encapsulated pixel data", err, ds) from err
    if fragments < frames:
        raise DicomReadError(
            path,
            f"NumberOfFrames is {frames} but the encapsulated pixel data holds only "
            f"{fragments} fragments (at least one per frame)",
        )
    if tsyntax in JPEG2000TransferSyntaxes:
        codec, size_of = "J2K", _j2k_size  # JPEG 2000
    elif tsyntax in JPEGLSTransferSyntaxes:
        codec, size_of = "JPEG-LS", _jpeg_size
    elif tsyntax in JPEGTransferSyntaxes:
        codec, size_of = "JPEG", _jpeg_size
    else:
        return  # RLE: the decoder writes into the declared size
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    offsets = None
    if ds.get("ExtendedOffsetTable") and ds.get("ExtendedOffsetTableLengths"):
        offsets = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about frame boundaries it guesses
            encoded = generate_frames(data, number_of_frames=frames, extended_offsets=offsets)
            # Frames are joined from their fragments only to read their ends and headers;
            # the EOI / EOC marker (FF D9) may be followed by a byte of padding.
            headers = [
                (size_of(frame), _END_MARKER in frame[-10:])
                for _, frame in zip(range(decoded_frames), encoded)
            ]
        for index, (size, ends) in enumerate(headers):
            if not ends:
                raise DicomReadError(
                    path,
                    f"pixel data could not be decoded (frame {index}: the {codec} codestream "
                    "has no end marker; truncated?)",
                )
            if size is None:
                raise DicomReadError(
                    path,
                    f"pixel data could not be decoded (frame {index}: no valid {codec} "
                    "codestream header)",
                )
            if size != (rows, cols, samples):
                raise DicomReadError(
                    path,
                    f"pixel data could not be decoded (frame {index}: the {codec} codestream "
                    f"declares {size[0]} x {size[1]} x {size[2]} (rows x columns x samples) "
                    f"but the header {rows} x {cols} x {samples})",
                )
    except DicomReadError:
        raise
    except Exception as err:  # noqa: BLE001
        raise scrubbed_error(path, "malformed encapsulated pixel data", err, ds) from err


def frame_views(path: str | os.PathLike[str], ds: Any, count: int) -> list[Any]:
    """Per-frame datasets holding the attributes that frame's pixels are read with.

    A classic image gives ``[ds]`` (one view for every frame). An enhanced
    multi-frame image gives one view per frame: group 0028 and the plane
    geometry of the top level, overridden by the shared and then the frame's own
    functional groups (:data:`_FRAME_MACROS`), so that pydicom's LUT functions
    see the rescale and window of that frame (PS3.3 C.7.6.16).
    """
    from pydicom.dataset import Dataset

    shared = ds.get("SharedFunctionalGroupsSequence") or []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if not shared and not per_frame:
        return [ds]
    if per_frame and len(per_frame) < count:
        raise DicomReadError(
            path,
            f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items for {count} frames",
        )
    base = Dataset()
    base.file_meta = ds.file_meta  # LUT data of VR OW needs the byte order
    for elem in ds:
        if elem.tag.group == 0x0028 or elem.keyword in _GEOMETRY_KEYWORDS:
            base.add(elem)
    _overlay(base, shared[0] if shared else None)
    views = []
    for index in range(count):
        view = Dataset()
        view.file_meta = ds.file_meta
        for elem in base:
            view.add(elem)
        _overlay(view, per_frame[index] if per_frame else None)
        views.append(view)
    return views


def _overlay(view: Any, group: Any) -> None:
    """Copy the attributes of a functional group item's macros onto ``view``."""
    if group is None:
        return
    for macro in _FRAME_MACROS:
        seq = group.get(macro)
        if seq:
            for elem in seq[0]:
                view.add(elem)


def apply_modality(arr: np.ndarray, views: list[Any]) -> np.ndarray:
    """Modality LUT per frame (one call when every frame shares one view)."""
    from pydicom.pixels import apply_modality_lut

    if len(views) == 1:
        return apply_modality_lut(arr, views[0])
    frames = zip(arr, views, strict=True)
    return np.stack([apply_modality_lut(frame, view) for frame, view in frames])


def greyscale_display(
    values: np.ndarray,
    views: list[Any],
    window: tuple[float, float] | None,
    photometric: str,
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """VOI -> [0, 1] -> MONOCHROME1 inversion on modality values; return pixels and window."""
    used: tuple[float, float] | None = None
    if window is not None:
        center, width = window
        out = (values.astype(np.float64) - (center - width / 2)) / width
        used = window
    else:
        first = views[0]
        if not _has_voi_lut(first) and _has_window(first):
            used = (_first(first["WindowCenter"]), _first(first["WindowWidth"]))
        if len(views) == 1:
            out = _voi(values, first)
            out = min_max_scale(values) if out is None else out
        else:
            frames = [_voi(frame, view) for frame, view in zip(values, views, strict=True)]
            missing = [i for i, f in enumerate(frames) if f is None]
            if missing:  # frames without VOI share one min-max over themselves
                scaled = min_max_scale(values[missing])
                for i, frame in zip(missing, scaled, strict=True):
                    frames[i] = frame
            out = np.stack(frames)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    if photometric == "MONOCHROME1":
        out = 1.0 - out  # MONOCHROME1: low values are bright
    return out, used


def _voi(values: np.ndarray, view: Any) -> np.ndarray | None:
    """The view's first VOI (LUT preferred, as pydicom) scaled to [0, 1]; None without VOI."""
    from pydicom.pixels import apply_voi_lut

    if _has_voi_lut(view):
        if values.dtype.kind == "f" and np.array_equal(values, np.round(values)):
            values = values.astype(np.int64)  # LUT lookup needs integer indices
        depth = int(view.VOILUTSequence[0].LUTDescriptor[2])
        return apply_voi_lut(values, view, index=0, prefer_lut=True) / float(2**depth - 1)
    if _has_window(view):
        lo, hi = _voi_output_range(view)
        return (apply_voi_lut(values, view, index=0, prefer_lut=False) - lo) / (hi - lo)
    return None


def _has_voi_lut(ds: Any) -> bool:
    seq = ds.get("VOILUTSequence")
    return bool(seq) and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]


def _has_window(ds: Any) -> bool:
    """True when the file has a usable first window (positive width)."""
    if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        return False
    try:
        width = _first(ds["WindowWidth"])
        _first(ds["WindowCenter"])
    except (TypeError, ValueError, IndexError):
        return False
    func = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    return width >= 1 if func == "LINEAR" else width > 0


def _first(elem: Any) -> float:
    """First value of a possibly multi-valued DS element, as float."""
    value = elem.value
    return float(value[0] if elem.VM > 1 else value)


def _voi_output_range(ds: Any) -> tuple[float, float]:
    """Output range of pydicom's ``apply_windowing`` (mirrors its own computation)."""
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
    else:
        lo, hi = float(-(2 ** (int(ds.BitsStored) - 1))), float(2 ** (int(ds.BitsStored) - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = lo * slope + intercept, hi * slope + intercept
    return lo, hi


def min_max_scale(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the image's own range; a constant image becomes zeros."""
    values = values.astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    if hi - lo <= 0:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def colour_display(arr: np.ndarray, ds: Any, photometric: str) -> np.ndarray:
    """RGB (or palette-mapped) values scaled by their bit depth to float32 [0, 1]."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds)[..., :3]  # drop alpha if present
        depth = int(ds.RedPaletteColorLookupTableDescriptor[2])
        if depth not in (8, 16) or rgb.max(initial=0) > 2**depth - 1:
            depth = 8 * rgb.dtype.itemsize
    else:
        rgb = arr
        depth = int(ds.BitsStored)
    return np.clip(rgb.astype(np.float32) / float(2**depth - 1), 0.0, 1.0)


def header_text(value: Any) -> str | None:
    """A header value as a stripped string, None when empty or missing."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None
