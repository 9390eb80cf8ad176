"""VQA-RAD, SLAKE and PathVQA: image-level records with their question-answer pairs."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from medvl.data.dataset import ManifestError
from medvl.data.formats import MissingFileError, read_pathvqa, read_slake, read_vqa_rad

from .fixtures import VQA_RAD_ENTRIES, VQA_RAD_SPLIT, make_pathvqa, make_slake, make_vqa_rad, make_vqa_rad_split


def _by_id(res):
    return {r["study_id"]: r for r in res.records}


def test_vqa_rad_groups_questions_by_image_and_split(tmp_path):
    res = read_vqa_rad(make_vqa_rad(tmp_path))
    recs = _by_id(res)
    assert list(recs) == ["train/synpic54610", "train/synpic29265", "test/synpic54610", "test/synpic42202"]
    assert res.unit == "questions" and res.found == 5
    assert res.summary() == "found 5, dropped 1 (missing image: 1)"
    brain = recs["train/synpic54610"]
    assert brain["image"] == "synpic54610.jpg" and brain["split"] == "train" and brain["organ"] == "HEAD"
    assert [q["question"] for q in brain["vqa"]] == ["Are regions of the brain infarcted?",
                                                     "Are there areas of infarction in the brain?"]
    assert brain["vqa"][0] == {"question": "Are regions of the brain infarcted?", "answer": "Yes",
                               "answer_type": "closed", "qid": "0", "question_type": "PRES"}
    count = recs["test/synpic54610"]["vqa"][0]
    assert count["answer"] == "2" and count["answer_type"] == "open"  # a numeric answer in the JSON
    assert recs["train/synpic29265"]["vqa"][0]["answer_type"] == "open"
    assert (res.image_root / brain["image"]).is_file()


def test_vqa_rad_errors(tmp_path):
    entries = [dict(e) for e in VQA_RAD_ENTRIES]
    entries[2]["answer_type"] = "MAYBE"
    del entries[4]["question"]
    root = make_vqa_rad(tmp_path, entries)
    with pytest.raises(ManifestError, match=r"Public\.json: entry 2: unknown answer_type 'MAYBE'"):
        read_vqa_rad(root)
    res = read_vqa_rad(root, on_error="skip")
    assert res.dropped == {"malformed row": 2, "missing image": 1} and res.found == 3
    (root / "VQA_RAD Dataset Public.json").write_text('[{"qid": 0,\n "image_name": ')
    with pytest.raises(ManifestError, match=r"Public\.json:2: malformed JSON"):
        read_vqa_rad(root, on_error="skip")
    (root / "VQA_RAD Dataset Public.json").write_text('{"qid": 0}')
    with pytest.raises(ManifestError, match="expected a JSON list"):
        read_vqa_rad(root)
    with pytest.raises(MissingFileError, match="VQA_RAD Dataset Public.json"):
        read_vqa_rad(tmp_path)



def test_vqa_rad_split_files_of_mevf(tmp_path):
    root = make_vqa_rad_split(tmp_path)
    res = read_vqa_rad(root)
    assert res.summary() == "found 10, dropped 1 (missing image: 1)"
    recs = _by_id(res)
    assert list(recs) == ["train/synpic100", "train/synpic101", "train/synpic102", "train/synpic103",
                          "train/synpic104", "train/synpic105", "test/synpic100", "test/synpic107"]
    assert recs["train/synpic100"]["image"] == "synpic100.jpg" and recs["train/synpic100"]["organ"] == "HEAD"
    assert recs["train/synpic100"]["vqa"][0] == {"question": "Is there a mass?", "answer": "Yes",
                                                 "answer_type": "closed", "qid": "0", "question_type": "PRES"}
    # "CLOSED ", "Open", "closed", " CLOSED": the annotation is read stripped and case-folded
    kinds = [q["answer_type"] for r in res.records for q in r["vqa"]]
    assert kinds == ["closed", "open", "open", "closed", "closed", "open", "open", "closed", "open", "closed"]
    assert recs["test/synpic107"]["vqa"][1]["answer"] == "yes"
    assert read_vqa_rad(root, release="split").records == res.records


def test_vqa_rad_split_takes_the_split_from_the_file_name(tmp_path):
    swapped = {"trainset.json": [dict(e, phrase_type="test_para") for e in VQA_RAD_SPLIT["trainset.json"]],
               "testset.json": [dict(e, phrase_type="freeform") for e in VQA_RAD_SPLIT["testset.json"]]}
    res = read_vqa_rad(make_vqa_rad_split(tmp_path, swapped, images="VQA_RAD Image Folder"))
    assert res.split_counts() == {"train": 6, "test": 2}
    assert (res.image_root / res.records[0]["image"]).is_file() and res.image_root.name == "VQA_RAD Image Folder"


def test_vqa_rad_release_option(tmp_path):
    split_root = make_vqa_rad_split(tmp_path / "s")
    public_root = make_vqa_rad(tmp_path / "p")
    with pytest.raises(MissingFileError, match="VQA_RAD Dataset Public.json"):
        read_vqa_rad(split_root, release="public")
    with pytest.raises(MissingFileError, match="trainset.json"):
        read_vqa_rad(public_root, release="split")
    # both layouts in one folder: auto prefers the public release
    for name, entries in VQA_RAD_SPLIT.items():
        (public_root / name).write_text(json.dumps(entries))
    assert read_vqa_rad(public_root).found == 5
    assert read_vqa_rad(public_root, release="split").summary() == "found 0, dropped 11 (missing image: 11)"
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match=r"VQA_RAD Dataset Public\.json.*trainset\.json and .*testset\.json"):
        read_vqa_rad(tmp_path / "empty")
    (split_root / "testset.json").unlink()
    with pytest.raises(MissingFileError, match="testset.json"):
        read_vqa_rad(split_root, release="split")
    with pytest.raises(MissingFileError, match="neither"):
        read_vqa_rad(split_root)
    with pytest.raises(ValueError, match="release must be"):
        read_vqa_rad(split_root, release="osf")
    (split_root / "testset.json").write_text(json.dumps(VQA_RAD_SPLIT["testset.json"]))
    (split_root / "images").rename(split_root / "imgs")
    with pytest.raises(MissingFileError, match="images.*VQA_RAD Image Folder.*image folder not found"):
        read_vqa_rad(split_root)


def test_slake_languages(tmp_path):
    root = make_slake(tmp_path)
    en = read_slake(root)
    recs = _by_id(en)
    assert list(recs) == ["train/xmlab0", "train/xmlab1", "val/xmlab2", "test/xmlab3"]
    assert en.found == 5 and en.dropped == {"language zh": 1, "missing image": 1}
    head = recs["train/xmlab0"]
    assert head["image"] == "xmlab0/source.jpg" and head["modality"] == "MRI" and head["location"] == "Brain"
    assert [(q["answer"], q["answer_type"]) for q in head["vqa"]] == [("MRI", "open"), ("No", "closed")]
    assert all(q["lang"] == "en" for q in head["vqa"])
    zh = read_slake(root / "Slake1.0", lang="zh")
    assert [r["study_id"] for r in zh.records] == ["train/xmlab0"]
    assert zh.records[0]["vqa"][0]["question"] == "这张图片的成像方式是什么?"
    assert zh.records[0]["vqa"][0]["answer"] == "核磁共振"
    assert zh.dropped == {"language en": 6}
    assert len(_by_id(read_slake(root, lang="all"))["train/xmlab0"]["vqa"]) == 3
    (root / "Slake1.0" / "validate.json").rename(root / "Slake1.0" / "validation.json")
    assert read_slake(root).records == en.records
    (root / "Slake1.0" / "validation.json").unlink()
    with pytest.raises(MissingFileError, match=r"validate\.json, .*validation\.json: SLAKE val questions not found"):
        read_slake(root)


def test_pathvqa(tmp_path):
    res = read_pathvqa(make_pathvqa(tmp_path))
    recs = _by_id(res)
    assert list(recs) == ["train/train_0422", "train/train_0001", "val/val_0010", "test/test_0003"]
    assert res.found == 5 and res.dropped == {"missing image": 1}
    liver = recs["train/train_0422"]
    assert liver["image"] == "train/train_0422.jpg" and (res.image_root / liver["image"]).is_file()
    assert [(q["answer"], q["answer_type"]) for q in liver["vqa"]] == [("in the canals of hering", "open"),
                                                                       ("yes", "closed")]
    assert recs["val/val_0010"]["vqa"][0]["answer_type"] == "closed"


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_pathvqa_refuses_pickles_that_reference_code(tmp_path):
    root = make_pathvqa(tmp_path)
    marker = tmp_path / "pwned"
    (root / "pvqa" / "qas" / "val" / "val_qa.pkl").write_bytes(pickle.dumps([_Evil(str(marker))]))
    with pytest.raises(ManifestError, match=r"val_qa\.pkl: not a plain-data pickle \(refusing .* os\.makedirs\)"):
        read_pathvqa(root, on_error="skip")
    assert not marker.exists()
    (root / "pvqa" / "qas" / "val" / "val_qa.pkl").write_bytes(pickle.dumps([]))
    (root / "pvqa" / "qas" / "test" / "test_qa.pkl").unlink()
    with pytest.raises(MissingFileError, match="test_qa.pkl"):
        read_pathvqa(root)


def test_records_are_json_serialisable(tmp_path):
    for res in (read_vqa_rad(make_vqa_rad(tmp_path)), read_vqa_rad(make_vqa_rad_split(tmp_path)),
                read_slake(make_slake(tmp_path)), read_pathvqa(make_pathvqa(tmp_path))):
        assert json.loads(json.dumps(res.records)) == res.records
