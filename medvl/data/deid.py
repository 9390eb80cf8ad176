"""De-identify DICOM files after the DICOM Basic Application Confidentiality Profile.

Implements the actions of PS3.15 Annex E, Table E.1-1 (basic profile, no retention
options) for what medvl users share: de-identified copies of a training set.

* Person names (every element of VR ``PN``, at any depth) are emptied, except Patient's
  Name, which becomes the same pseudonym as Patient ID.
* Patient ID becomes ``ANON-<12 hex>``, a keyed hash (HMAC-SHA256) of the original, so
  studies of one patient stay linked within a dataset but cannot be traced back without
  the key.
* Every UID that is not a registered DICOM UID (SOP classes, transfer syntaxes, coding
  schemes stay) is replaced by ``2.25.<decimal of a keyed hash>`` (PS3.5 B.2), so the
  same original UID maps to the same new UID everywhere in the dataset and references
  between instances survive.
* Dates, times and date-times (VR ``DA``, ``TM``, ``DT``) are emptied.
* Every other attribute listed in :data:`IDENTIFYING_KEYWORDS`
  (addresses, institution, physicians, accession number, free-text comments, device
  identifiers, ...) is removed, and so are all private tags.
* Patient Identity Removed is set to ``YES`` with De-identification Method and the
  code ``113100`` (Basic Application Confidentiality Profile).

Pixels are not changed. A file whose Burned In Annotation is ``YES`` may show a name in
its pixels; :func:`deidentify_file` reports it so the caller can count or exclude it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# No medvl import at module level: the DICOM reader imports IDENTIFYING_KEYWORDS from
# here, so DicomReadError (medvl.data.pixels) is imported where it is raised.

__all__ = ["IDENTIFYING_KEYWORDS", "Deidentifier", "DeidResult", "deidentify_dataset", "deidentify_file"]

METHOD = "medvl basic profile (DICOM PS3.15 Annex E, Table E.1-1)"

IDENTIFYING_KEYWORDS: frozenset[str] = frozenset(
    {
        # Patient
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientBirthName",
        "PatientMotherBirthName",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "PatientInsurancePlanCodeSequence",
        "MedicalRecordLocator",
        "MilitaryRank",
        "BranchOfService",
        "EthnicGroup",
        "Occupation",
        "PatientReligiousPreference",
        "CountryOfResidence",
        "RegionOfResidence",
        "PatientComments",
        "AdditionalPatientHistory",
        "ResponsiblePerson",
        "ResponsibleOrganization",
        "PersonName",
        # Study / visit
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "StudyComments",
        "AdmissionID",
        "AdmittingDiagnosesDescription",
        "RequestingPhysician",
        "RequestAttributesSequence",
        "RequestedProcedureID",
        "ScheduledProcedureStepID",
        "PerformedProcedureStepID",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "PerformedProcedureStepDescription",
        # People and places
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "ReferringPhysicianName",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "PhysiciansOfRecord",
        "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy",
        "OperatorsName",
        "StationName",
        "DeviceSerialNumber",
        "PlateID",
        "DetectorID",
        # Dates and times
        "StudyDate",
        "SeriesDate",
        "AcquisitionDate",
        "ContentDate",
        "InstanceCreationDate",
        "StudyTime",
        "SeriesTime",
        "AcquisitionTime",
        "ContentTime",
        "InstanceCreationTime",
        "AcquisitionDateTime",
        # Instance identifiers
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "MediaStorageSOPInstanceUID",
        "ReferencedSOPInstanceUID",
        "FrameOfReferenceUID",
        "SynchronizationFrameOfReferenceUID",
        "IrradiationEventUID",
        "InstanceCreatorUID",
        "StorageMediaFileSetUID",
        "UID",
        # Free text that often carries names
        "ImageComments",
        "DerivationDescription",
        "SeriesDescription",
        "ProtocolName",
    }
)
"""DICOM keywords treated as identifying (after the PS3.15 Annex E basic profile).

The reader (:mod:`medvl.data.dicom`) never copies any of these into
:attr:`~medvl.data.dicom.DicomImage.meta` and scrubs their values from the library
messages it quotes; :class:`Deidentifier` removes or replaces them.
"""

# Kept although identifying-looking: needed to read the file, not tied to a person.
_KEEP_UIDS_VR_UI = frozenset({"TransferSyntaxUID", "SOPClassUID", "MediaStorageSOPClassUID",
                              "ImplementationClassUID", "ReferencedSOPClassUID"})
_PSEUDONYMISED = frozenset({"PatientName", "PatientID"})


@dataclass(frozen=True)
class DeidResult:
    """What de-identifying one file did.

    Attributes:
        burned_in_annotation: The header says identifying text may be in the pixels.
        removed: Number of elements removed or emptied.
        uids_remapped: Number of UID values replaced.
    """

    burned_in_annotation: bool
    removed: int
    uids_remapped: int


class Deidentifier:
    """Applies the basic profile with one key, so a whole dataset maps consistently.

    Args:
        key: Secret for the keyed hashes (pseudonyms and UIDs). Keep it private: with it
            an original ID can be tested against a pseudonym. ``None`` draws a random
            key, which makes the mapping consistent within this object's lifetime only.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str]) -> Deidentifier:
        """Read the key from a file, creating it (mode 0600) with a random key if absent."""
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_hex(32).encode())
        return cls(path.read_bytes().strip())

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def pseudonym(self, patient_id: str) -> str:
        """The stable pseudonym for a patient ID."""
        return "ANON-" + self._digest("patient", patient_id).hex()[:12]

    def uid(self, original: str) -> str:
        """The replacement for a UID: ``2.25.`` + a 128-bit keyed hash in decimal (PS3.5 B.2)."""
        return "2.25." + str(int.from_bytes(self._digest("uid", original)[:16], "big"))

    def __call__(self, ds: Any) -> DeidResult:
        """De-identify a pydicom Dataset in place (file meta included)."""
        from pydicom.dataset import Dataset
        from pydicom.uid import UID

        counts = {"removed": 0, "uids": 0}
        patient_id = str(ds.get("PatientID", "") or "")
        burned = str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES"
        ds.remove_private_tags()

        def registered(value: str) -> bool:
            return UID(value).name != value  # pydicom names every registered UID

        def visit(d: Any) -> None:
            for elem in list(d):
                kw, vr = elem.keyword, elem.VR
                if vr == "SQ":
                    if kw in IDENTIFYING_KEYWORDS:
                        del d[elem.tag]
                        counts["removed"] += 1
                    else:
                        for item in elem.value:
                            visit(item)
                elif vr == "UI":
                    if kw in _KEEP_UIDS_VR_UI or elem.value in (None, ""):
                        continue
                    values = elem.value if elem.VM > 1 else [elem.value]
                    new = [str(v) if registered(str(v)) else self.uid(str(v)) for v in values]
                    counts["uids"] += sum(a != b for a, b in zip(map(str, values), new))
                    elem.value = new if elem.VM > 1 else new[0]
                elif kw in _PSEUDONYMISED:
                    continue
                elif vr in ("PN", "DA", "TM", "DT"):
                    if elem.value not in (None, ""):
                        elem.value = ""
                        counts["removed"] += 1
                elif kw in IDENTIFYING_KEYWORDS:
                    del d[elem.tag]
                    counts["removed"] += 1

        visit(ds)
        alias = self.pseudonym(patient_id) if patient_id else ""
        ds.PatientID = alias
        ds.PatientName = alias
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
        code.CodeMeaning = "Basic Application Confidentiality Profile"
        ds.DeidentificationMethodCodeSequence = [code]
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return DeidResult(burned, counts["removed"], counts["uids"])


def deidentify_file(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], deidentifier: Deidentifier
) -> DeidResult:
    """Write a de-identified copy of one DICOM file (atomically).

    Raises:
        DicomReadError: ``src`` is not a readable DICOM file.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    from medvl.data.pixels import DicomReadError

    try:
        ds = pydicom.dcmread(src)
    except InvalidDicomError as err:
        raise DicomReadError(src, f"not a DICOM file ({err})") from err
    except Exception as err:  # noqa: BLE001 - any parse failure means corrupt input
        raise DicomReadError(src, f"truncated or corrupt DICOM ({type(err).__name__})") from err
    result = deidentifier(ds)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def deidentify_dataset(
    manifest: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    deidentifier: Deidentifier,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """De-identified copies of every DICOM file of a manifest, plus a manifest for them.

    Files are written as ``out_dir/images/<keyed hash of the source path>.dcm`` (source
    paths often embed patient IDs); PNG/JPEG files, which carry no header, are copied.
    Rows keep every field but ``image``. An unreadable file is skipped and counted.

    Returns:
        Counts: ``written``, ``skipped`` (reason -> n), ``burned_in_annotation``.
    """
    import json
    import shutil
    from collections import Counter

    from rich.progress import track

    from medvl.data.dataset import read_manifest
    from medvl.data.dicom import PIL_SUFFIXES
    from medvl.data.pixels import DicomReadError

    manifest = Path(manifest)
    root, out = manifest.parent, Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, skipped, burned = [], Counter(), 0
    for row in track(read_manifest(manifest), description="de-identifying", disable=not progress, transient=True):
        src = root / row["image"]
        suffix = src.suffix.lower() if src.suffix.lower() in PIL_SUFFIXES else ".dcm"
        name = deidentifier._digest("path", Path(row["image"]).as_posix()).hex()[:24] + suffix
        dst = out / "images" / name
        try:
            if suffix == ".dcm":
                burned += deidentify_file(src, dst, deidentifier).burned_in_annotation
            else:
                if not src.is_file():
                    raise DicomReadError(src, "file not found")
                shutil.copyfile(src, dst)
        except DicomReadError as err:
            skipped[err.reason] += 1
            continue
        rows.append({**row, "image": f"images/{name}"})
    tmp = out / ".manifest.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    os.replace(tmp, out / "manifest.jsonl")
    return {"written": len(rows), "skipped": dict(skipped), "burned_in_annotation": burned}
