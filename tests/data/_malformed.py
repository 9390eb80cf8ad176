"""Builders of malformed DICOM files, each a real pydicom test file damaged in one known way.

``BUILDERS[kind](path)`` writes one bad file at ``path``; tests that need bad files among
good ones (a dataset in which some studies cannot be read) take them from here. The
reader's own corpus, with many more variants of each damage, is
``tests/data/test_malformed_dicom.py``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_frames

from tests.data._pydicom_files import pydicom_file

__all__ = ["BUILDERS", "bogus_transfer_syntax", "huge_rows", "not_a_dicom", "rle_decoder_panic", "truncated",
           "zero_byte"]


def zero_byte(path: Path) -> Path:
    """An empty file: "not a DICOM file (empty file)"."""
    path.write_bytes(b"")
    return path


def not_a_dicom(path: Path) -> Path:
    """A report saved under the image's name: "not a DICOM file"."""
    path.write_bytes(b"FINDINGS: no acute cardiopulmonary process.\n" * 20)
    return path


def truncated(path: Path, fraction: float = 0.5) -> Path:
    """``CT_small.dcm`` cut at ``fraction`` of its length: half of its pixel data is missing."""
    data = pydicom_file("CT_small.dcm").read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def bogus_transfer_syntax(path: Path) -> Path:
    """``CT_small.dcm`` declaring a transfer syntax UID that no decoder knows: "no decoder"."""
    data = pydicom_file("CT_small.dcm").read_bytes()
    old, new = b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.9.9.9\x00"
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))
    return path


def huge_rows(path: Path) -> Path:
    """``CT_small.dcm`` declaring a 65535 x 65535 image: refused before anything is decoded."""
    ds = dcmread(pydicom_file("CT_small.dcm"))
    ds.Rows, ds.Columns = 65535, 65535
    ds.save_as(path)
    return path


def rle_decoder_panic(path: Path) -> Path:
    """``MR_small_RLE.dcm`` whose second RLE segment offset is shifted by one byte.

    pylibjpeg-rle's Rust decoder panics on it (``pyo3_runtime.PanicException``, a
    BaseException that ``except Exception`` misses).
    """
    ds = dcmread(pydicom_file("MR_small_RLE.dcm"))
    frame = bytearray(next(iter(generate_frames(ds.PixelData, number_of_frames=1))))
    count, first, second = struct.unpack_from("<3L", frame)
    assert (count, first) == (2, 64)  # 16-bit greyscale: two byte segments
    struct.pack_into("<L", frame, 8, second + 1)
    ds.PixelData = encapsulate([bytes(frame)])
    ds.save_as(path)
    return path


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "zero-byte": zero_byte,
    "not-a-dicom": not_a_dicom,
    "truncated": truncated,
    "bogus-transfer-syntax": bogus_transfer_syntax,
    "rle-decoder-panic": rle_decoder_panic,
    "huge-rows": huge_rows,
}
"""Kind -> builder; one of each makes a mix of reasons."""
