"""MIMIC-CXR(-JPG): tables, views, sections, labels, reports sources and the error policy."""

from __future__ import annotations

import gzip

import pytest

from medvl.data.dataset import ManifestError
from medvl.data.formats import MissingFileError, read_mimic_cxr

from .fixtures import make_mimic

PA_ID = "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"


@pytest.fixture
def mimic(tmp_path):
    return make_mimic(tmp_path)


def _by_study(result):
    return {r["study_id"]: r for r in result.records}


def test_default_reads_frontal_studies_with_findings(mimic):
    res = read_mimic_cxr(mimic)
    recs = _by_study(res)
    assert set(recs) == {"s50414267", "s53189527", "s57375967"}
    assert res.dropped == {"missing image": 1, "no frontal image": 1, "no findings section": 1, "missing report": 1}
    assert res.summary() == ("found 3, dropped 4 (missing image: 1, no frontal image: 1, "
                             "no findings section: 1, missing report: 1)")
    first = recs["s50414267"]
    assert first["image"] == f"files/p10/p10000032/s50414267/{PA_ID}.jpg"
    assert first["images"] == [first["image"]]  # the lateral view is filtered out
    assert first["view"] == "PA" and first["split"] == "train"
    assert first["findings"].startswith("There is no focal consolidation, pleural effusion or pneumothorax.")
    assert "  " not in first["findings"] and "\n" not in first["findings"]
    assert first["impression"] == "No acute cardiopulmonary process."
    assert first["indication"] == "___F with new onset ascites // eval for infection"
    assert first["comparison"] == "None."
    assert first["report"] == first["findings"]
    assert first["labels"] == {"no_finding": 1}
    assert (res.image_root / first["image"]).is_file()
    assert recs["s57375967"]["split"] == "val"  # "validate" in the official table
    assert recs["s57375967"]["indication"] == "Cough and fever."  # HISTORY stands in for a missing INDICATION


def test_combined_section_and_uncertainty_policies(mimic):
    ignore = _by_study(read_mimic_cxr(mimic))["s53189527"]
    assert ignore["view"] == "AP"
    assert ignore["findings"] == ignore["impression"]
    assert ignore["findings"].startswith("Portable AP upright view of the chest. Moderate cardiomegaly")
    assert ignore["labels"] == {"cardiomegaly": 1, "edema": -1, "pleural_effusion": 1, "pneumothorax": 0}
    ones = _by_study(read_mimic_cxr(mimic, uncertainty="ones"))
    zeros = _by_study(read_mimic_cxr(mimic, uncertainty="zeros"))
    assert ones["s53189527"]["labels"]["edema"] == 1 and zeros["s53189527"]["labels"]["edema"] == 0
    assert ones["s57375967"]["labels"] == {"consolidation": 1, "pneumonia": 1}
    assert zeros["s57375967"]["labels"] == {"consolidation": 1, "pneumonia": 0}
    negbio = _by_study(read_mimic_cxr(mimic, labels="negbio"))
    assert negbio["s50414267"]["labels"] == {"no_finding": 1, "support_device": 0}
    assert "labels" not in _by_study(read_mimic_cxr(mimic, labels="none"))["s50414267"]


def test_sections_views_and_images_options(mimic):
    impression = read_mimic_cxr(mimic, section="impression")
    recs = _by_study(impression)
    assert set(recs) == {"s50414267", "s53189527", "s57375967", "s56164612"}
    assert recs["s56164612"]["report"].startswith("Right internal jugular central venous catheter")
    both = _by_study(read_mimic_cxr(mimic, section="both"))
    assert both["s50414267"]["report"] == (
        f"FINDINGS: {both['s50414267']['findings']}\n\nIMPRESSION: No acute cardiopulmonary process.")
    assert both["s56164612"]["report"].startswith("IMPRESSION: Right internal jugular")

    every = read_mimic_cxr(mimic, views="all", images="all")
    ids = [r["study_id"] for r in every.records]
    assert f"s50414267/{PA_ID}" in ids and len([i for i in ids if i.startswith("s50414267/")]) == 2
    assert "s51178377/6ad03ed1-97ee17ee-9cf8b320-f7011003-cd93b42d" in ids  # the lateral-only study
    assert every.found == 5
    assert every.dropped == {"missing image": 1, "no findings section": 1, "missing report": 1}
    lateral = read_mimic_cxr(mimic, views="lateral")
    assert {r["study_id"] for r in lateral.records} == {"s50414267", "s51178377"}
    assert all(r["view"] == "LATERAL" for r in lateral.records)
    per_image_frontal = read_mimic_cxr(mimic, images="all")
    assert per_image_frontal.dropped["not frontal"] == 2  # the two lateral images


@pytest.mark.parametrize("where", ["zip", "inline"])
def test_reports_from_zip_or_next_to_the_studies(tmp_path, where):
    root = make_mimic(tmp_path, reports=where)
    res = read_mimic_cxr(root)
    assert res.found == 3 and res.dropped["missing report"] == 1
    assert _by_study(res)["s50414267"]["impression"] == "No acute cardiopulmonary process."


def test_dicom_release_paths(mimic):
    res = read_mimic_cxr(mimic, image_format="dcm", check_files=False)
    assert all(r["image"].endswith(".dcm") for r in res.records)
    assert "missing image" not in res.dropped
    checked = read_mimic_cxr(mimic, image_format="dcm")  # only JPGs on disk
    assert checked.found == 0 and checked.dropped["missing image"] == 6


def test_missing_tables_are_named(mimic):
    (mimic / "mimic-cxr-2.0.0-metadata.csv").unlink()
    with pytest.raises(MissingFileError, match="mimic-cxr-2.0.0-metadata.csv") as err:
        read_mimic_cxr(mimic)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ManifestError)
    assert read_mimic_cxr(mimic, views="all").found == 4  # the metadata only serves the view filter
    (mimic / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="split"):
        read_mimic_cxr(mimic, views="all")


def test_bad_label_value_raises_or_drops_the_study(mimic):
    path = mimic / "mimic-cxr-2.0.0-chexpert.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace("-1.0", "2.0")  # row of s53189527 (Edema)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"chexpert\.csv:3: bad label value '2\.0'.*'Edema'"):
        read_mimic_cxr(mimic)
    res = read_mimic_cxr(mimic, on_error="skip")
    assert "s53189527" not in _by_study(res) and res.dropped["malformed row"] == 1 and res.found == 2


def test_path_outside_root(mimic):
    path = mimic / "mimic-cxr-2.0.0-split.csv.gz"
    text = gzip.decompress(path.read_bytes()).decode().replace(PA_ID, "../../../../../../etc/passwd", 1)
    path.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(ManifestError, match=r"split\.csv\.gz:2: image path .* points outside the dataset root"):
        read_mimic_cxr(mimic, views="all")
    res = read_mimic_cxr(mimic, views="all", on_error="skip")
    # s50414267 keeps its lateral image; its PA path was rejected, never read.
    assert _by_study(res)["s50414267"]["view"] == "LATERAL"
    every = read_mimic_cxr(mimic, views="all", images="all", on_error="skip")
    assert every.dropped["path outside root"] == 1
    assert all(not r["image"].startswith("..") for r in every.records)


def test_malformed_split_row(mimic):
    path = mimic / "mimic-cxr-2.0.0-split.csv.gz"
    text = gzip.decompress(path.read_bytes()).decode() + "x-y-z,123,notanumber,train\n"
    path.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(ManifestError, match=r"split\.csv\.gz:10: subject_id/study_id must be numbers"):
        read_mimic_cxr(mimic)
    res = read_mimic_cxr(mimic, on_error="skip")
    assert res.dropped["malformed row"] == 1 and res.found == 3


def test_unknown_split_value(mimic):
    path = mimic / "mimic-cxr-2.0.0-split.csv.gz"
    text = gzip.decompress(path.read_bytes()).decode().replace(",validate", ",holdout")
    path.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(ManifestError, match="unknown split 'holdout'"):
        read_mimic_cxr(mimic)
