"""CheXpert: the Path prefix, views, uncertainty policies, splits and the error policy."""

from __future__ import annotations

import shutil

import pytest

from medvl.data.dataset import ManifestError
from medvl.data.formats import MissingFileError, hash_split, read_chexpert
from medvl.data.labels import CHEXPERT_LABELS

from .fixtures import make_chexpert

SICK = "train/patient00002/study2/view1_frontal"


@pytest.fixture
def chexpert(tmp_path):
    return make_chexpert(tmp_path)


def _by_id(res):
    return {r["study_id"]: r for r in res.records}


def test_default_frontal_u_ignore(chexpert):
    res = read_chexpert(chexpert)
    recs = _by_id(res)
    assert set(recs) == {"train/patient00001/study1/view1_frontal", SICK,
                         "train/patient00004/study1/view1_frontal", "valid/patient64541/study1/view1_frontal"}
    assert res.dropped == {"not frontal": 1, "missing image": 1}
    assert res.image_root == chexpert / "CheXpert-v1.0-small"
    sick = recs[SICK]
    assert sick["image"] == SICK + ".jpg" and (res.image_root / sick["image"]).is_file()
    assert sick["labels"] == {"edema": -1, "pleural_effusion": 1, "cardiomegaly": 0, "support_device": 1}
    assert sick["view"] == "frontal" and sick["projection"] == "AP" and sick["split"] == "train"
    assert recs["valid/patient64541/study1/view1_frontal"]["split"] == "val"
    assert recs["train/patient00001/study1/view1_frontal"]["labels"] == {"no_finding": 1}
    assert "sex" not in sick and "age" not in sick and "report" not in sick


def test_uncertainty_and_blank_policies(chexpert):
    assert _by_id(read_chexpert(chexpert, uncertainty="ones"))[SICK]["labels"]["edema"] == 1
    zeros = _by_id(read_chexpert(chexpert, uncertainty="zeros"))
    assert zeros[SICK]["labels"]["edema"] == 0
    assert zeros["train/patient00004/study1/view1_frontal"]["labels"] == {"atelectasis": 0}
    negative = _by_id(read_chexpert(chexpert, blank="negative"))["train/patient00001/study1/view1_frontal"]
    assert negative["labels"] == {n: (1 if n == "no_finding" else 0) for n in CHEXPERT_LABELS}
    with pytest.raises(ValueError, match="uncertainty"):
        read_chexpert(chexpert, uncertainty="maybe")


def test_views_and_splits(chexpert):
    lateral = read_chexpert(chexpert, views="lateral")
    assert [r["study_id"] for r in lateral.records] == ["train/patient00002/study2/view2_lateral"]
    assert lateral.records[0]["projection"] == ""
    assert lateral.dropped["not lateral"] == 5
    every = read_chexpert(chexpert, views="all")
    assert every.found == 5 and every.dropped == {"missing image": 1}
    as_test = read_chexpert(chexpert, valid_split="test")
    assert as_test.split_counts() == {"train": 3, "test": 1}
    carved = read_chexpert(chexpert, views="all", val_fraction=0.5, seed=3)
    for r in carved.records:
        if r["study_id"].startswith("train/"):
            patient = r["study_id"].split("/")[1]
            expected = hash_split(patient, seed=3, fractions=(0.5, 0.5, 0.0))
            assert r["split"] == expected
    by_patient = {}
    for r in carved.records:
        by_patient.setdefault(r["study_id"].split("/")[1], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_patient.values())  # a patient's images share a split


def test_root_may_be_the_release_folder_or_a_renamed_copy(chexpert):
    inner = read_chexpert(chexpert / "CheXpert-v1.0-small")
    renamed = shutil.copytree(chexpert / "CheXpert-v1.0-small", chexpert / "chexpert_small")
    copy = read_chexpert(renamed)
    assert [r["image"] for r in copy.records] == [r["image"] for r in inner.records]
    assert copy.image_root == renamed and copy.found == 4


def test_malformed_rows_missing_columns_and_files(chexpert):
    data = chexpert / "CheXpert-v1.0-small"
    text = (data / "train.csv").read_text()
    (data / "train.csv").write_text(text.replace("-1.0,,,,,1.0", "yes,,,,,1.0", 1))
    with pytest.raises(ManifestError, match=r"train\.csv:3: bad label value 'yes'.*'Edema'"):
        read_chexpert(chexpert)
    skipped = read_chexpert(chexpert, on_error="skip")
    assert skipped.dropped["malformed row"] == 1 and SICK not in _by_id(skipped)

    header, *rows = text.splitlines()
    (data / "train.csv").write_text("\n".join([header.replace(",Edema", ",Oedema")] + rows) + "\n")
    with pytest.raises(ManifestError, match=r"train\.csv:1: missing column\(s\) \['Edema'\]"):
        read_chexpert(chexpert, on_error="skip")  # a broken header cannot be skipped

    (data / "train.csv").write_text(text + "CheXpert-v1.0-small/../../secret.jpg,Male,50,Frontal,PA" + "," * 14 + "\n")
    with pytest.raises(ManifestError, match=r"train\.csv:7: image path '\.\./\.\./secret\.jpg' points outside"):
        read_chexpert(chexpert)
    assert read_chexpert(chexpert, on_error="skip").dropped["path outside root"] == 1

    (data / "train.csv").unlink()
    with pytest.raises(MissingFileError, match="train.csv"):
        read_chexpert(chexpert)
