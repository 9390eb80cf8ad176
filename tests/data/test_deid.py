"""Basic-profile de-identification: what is removed, what is kept, consistency of the mapping."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from medvl.data import read_dicom
from medvl.data.deid import Deidentifier, deidentify_file
from medvl.data.dicom import DicomReadError


def _with_phi(path: str) -> Dataset:
    ds = pydicom.dcmread(path)
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN12345678"
    ds.PatientBirthDate = "19500101"
    ds.AccessionNumber = "ACC987654321"
    ds.InstitutionName = "Saint Elsewhere Hospital"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.StudyDate = "20240229"
    ds.add_new((0x0009, 0x0010), "LO", "ACME private creator")
    ds.add_new((0x0009, 0x1001), "LO", "MRN12345678 in a private tag")
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ref.PerformingPhysicianName = "Quinn^Michaela"  # a PN nested in a sequence
    ds.ReferencedImageSequence = [ref]
    return ds


def test_basic_profile_removes_identifiers_and_keeps_pixels(tmp_path):
    src = tmp_path / "in.dcm"
    ds = _with_phi(get_testdata_file("CT_small.dcm"))
    ds.save_as(src)
    deid = Deidentifier(key=b"k" * 32)
    result = deidentify_file(src, tmp_path / "out.dcm", deid)
    out = pydicom.dcmread(tmp_path / "out.dcm")
    blob = (tmp_path / "out.dcm").read_bytes()
    for secret in (b"Doe^Jane", b"MRN12345678", b"19500101", b"ACC987654321", b"Saint Elsewhere",
                   b"House^Gregory", b"Quinn^Michaela", b"20240229", ds.SOPInstanceUID.encode(),
                   ds.StudyInstanceUID.encode(), ds.SeriesInstanceUID.encode()):
        assert secret not in blob, secret
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert str(out.PatientID) == str(out.PatientName) == deid.pseudonym("MRN12345678")
    assert not any(elem.tag.is_private for elem in out.iterall())
    # The class UID stays (it names the SOP class, not the patient); instance UIDs remap
    # consistently, so the reference inside the sequence still points at the instance.
    assert out.SOPClassUID == ds.SOPClassUID
    assert out.SOPInstanceUID == deid.uid(ds.SOPInstanceUID)
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPInstanceUID.startswith("2.25.") and len(out.SOPInstanceUID) <= 64
    assert result.uids_remapped >= 3 and result.removed >= 5
    np.testing.assert_array_equal(read_dicom(src).pixels, read_dicom(tmp_path / "out.dcm").pixels)


def test_mapping_is_consistent_per_key_and_differs_across_keys():
    a, b = Deidentifier(key=b"a" * 32), Deidentifier(key=b"b" * 32)
    uid = "1.2.826.0.1.3680043.8.498.1"
    assert a.uid(uid) == a.uid(uid) != b.uid(uid)
    assert a.pseudonym("MRN1") == a.pseudonym("MRN1") != a.pseudonym("MRN2")


def test_key_file_is_created_private_and_reused(tmp_path):
    key = tmp_path / "deid.key"
    first = Deidentifier.from_key_file(key)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert Deidentifier.from_key_file(key).uid("1.2.3") == first.uid("1.2.3")


def test_non_dicom_input_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(DicomReadError, match="notes.txt"):
        deidentify_file(bad, tmp_path / "out.dcm", Deidentifier())
