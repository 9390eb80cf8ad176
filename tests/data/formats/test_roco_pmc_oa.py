"""ROCO and PMC-OA: captions, image naming, splits and the error policy."""

from __future__ import annotations

import json

import pytest

from medvl.data.dataset import ManifestError
from medvl.data.formats import MissingFileError, hash_split, read_pmc_oa, read_roco

from .fixtures import make_pmc_oa, make_roco


def _by_id(res):
    return {r["study_id"]: r for r in res.records}


def test_roco_radiology(tmp_path):
    res = read_roco(make_roco(tmp_path))
    recs = _by_id(res)
    assert list(recs) == ["ROCO_00002", "ROCO_00003", "ROCO_00004", "ROCO_00020", "ROCO_00027"]
    assert res.dropped == {"missing image": 1}
    assert res.split_counts() == {"train": 3, "val": 1, "test": 1}
    assert res.image_root == tmp_path / "roco-dataset" / "data"
    first = recs["ROCO_00002"]
    assert first["image"] == "train/radiology/images/PMC4083729_AMHA-3-101-g001.jpg"
    assert (res.image_root / first["image"]).is_file()
    assert first["report"] == first["caption"] == (
        "Computed tomography scan in axial view showing obliteration of the left maxillary sinus")
    assert first["keywords"] == ["tomography", "obliteration", "maxillary", "sinus"]
    assert first["subset"] == "radiology"
    assert recs["ROCO_00004"]["caption"] == 'Anteroposterior radiograph of the pelvis showing "fleck" sign.'
    both = read_roco(tmp_path / "roco-dataset" / "data", subsets=["radiology", "non-radiology"])
    assert both.found == 8 and {r["subset"] for r in both.records} == {"radiology", "non-radiology"}


def test_roco_image_names_without_dlinks(tmp_path):
    repo = make_roco(tmp_path)
    folder = repo / "data" / "test" / "radiology"
    (folder / "dlinks.txt").unlink()
    (folder / "images" / "PMC2766744_cios-1-176-g005.jpg").rename(folder / "images" / "ROCO_00027.jpg")
    assert _by_id(read_roco(repo))["ROCO_00027"]["image"] == "test/radiology/images/ROCO_00027.jpg"
    (folder / "images" / "ROCO_00027.jpg").rename(folder / "images" / "PMC2766744_cios-1-176-g005.jpg")
    (folder / "licences.txt").write_text("ROCO_ID,PMC_ID,CC\nROCO_00027,PMC2766744_cios-1-176-g005.jpg,CC BY\n")
    assert _by_id(read_roco(repo))["ROCO_00027"]["image"] == "test/radiology/images/PMC2766744_cios-1-176-g005.jpg"


def test_roco_errors(tmp_path):
    repo = make_roco(tmp_path)
    captions = repo / "data" / "validation" / "radiology" / "captions.txt"
    captions.write_text(captions.read_text() + "a caption line without its id\n")
    with pytest.raises(ManifestError, match=r"validation/radiology/captions\.txt:2: expected 'ROCO_<id><TAB>"):
        read_roco(repo)
    assert read_roco(repo, on_error="skip").dropped == {"missing image": 1, "malformed row": 1}
    captions.unlink()
    with pytest.raises(MissingFileError, match="captions"):
        read_roco(repo)
    with pytest.raises(MissingFileError, match="non-radiology"):
        read_roco(tmp_path / "elsewhere", subsets=["non-radiology"])


def test_pmc_oa_split_files(tmp_path):
    res = read_pmc_oa(make_pmc_oa(tmp_path))
    assert res.split_counts() == {"train": 3, "val": 1, "test": 1}
    assert res.dropped == {"missing image": 1}
    assert res.image_root == tmp_path / "pmc_oa" / "images" / "caption_T060_filtered_top4_sep_v0_subfigures"
    rec = _by_id(res)["PMC212319_Fig3_4"]
    assert rec["image"] == "PMC212319_Fig3_4.jpg" and (res.image_root / rec["image"]).is_file()
    assert rec["report"] == rec["caption"].replace("\n", " ")
    assert rec["caption"].startswith("A. Real time image of the translocation of ARF1-GFP")


def test_pmc_oa_without_split_files_hashes_the_image_name(tmp_path):
    res = read_pmc_oa(make_pmc_oa(tmp_path, split_files=False), seed=5)
    assert res.found == 5
    for r in res.records:
        assert r["split"] == hash_split(r["image"], seed=5, fractions=(0.8, 0.1, 0.1))


def test_pmc_oa_errors(tmp_path):
    root = make_pmc_oa(tmp_path)
    lines = (root / "train.jsonl").read_text().splitlines()
    lines[1] = lines[1][:-5]  # truncated JSON
    lines.append(json.dumps({"image": "../../../outside.jpg", "caption": "Escapes the image folder."}))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"train\.jsonl:2: malformed JSON"):
        read_pmc_oa(root)
    res = read_pmc_oa(root, on_error="skip")
    assert res.dropped == {"missing image": 1, "malformed row": 1, "path outside root": 1}
    with pytest.raises(MissingFileError, match="image folder"):
        read_pmc_oa(root, images_dir=tmp_path / "nowhere")
    with pytest.raises(MissingFileError, match="pmc_oa.jsonl"):
        read_pmc_oa(tmp_path)
