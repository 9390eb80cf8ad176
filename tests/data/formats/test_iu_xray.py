"""IU X-ray: reports read from the tgz or the extracted folder, MeSH, images and the seeded split."""

from __future__ import annotations

import pytest

from medvl.data.dataset import ManifestError
from medvl.data.formats import MissingFileError, hash_split, read_iu_xray

from .fixtures import iu_xml, make_iu


def _by_id(res):
    return {r["study_id"]: r for r in res.records}


def test_reads_the_archive(tmp_path):
    res = read_iu_xray(make_iu(tmp_path))
    recs = _by_id(res)
    assert list(recs) == ["CXR1", "CXR2", "CXR3", "CXR6"]
    assert res.dropped == {"no findings section": 1, "no image": 1}
    assert res.image_root == tmp_path / "NLMCXR_png"
    one = recs["CXR1"]
    assert one["image"] == "CXR1_1_IM-0001-3001.png"
    assert one["images"] == ["CXR1_1_IM-0001-3001.png", "CXR1_1_IM-0001-4001.png"]
    assert one["findings"].startswith("The cardiac silhouette and mediastinum size are within normal limits.")
    assert "There are no XXXX of a pleural effusion." in one["findings"]  # de-identification kept as is
    assert one["impression"] == "Normal chest x-XXXX."
    assert one["indication"] == "Positive TB test" and one["comparison"] == "None."
    assert one["report"] == one["findings"] and one["mesh"] == ["normal"]
    assert recs["CXR3"]["images"] == ["CXR3_IM-1384-1001.png"]  # its second image is missing
    assert recs["CXR3"]["mesh"] == ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"]
    assert recs["CXR3"]["mesh_automatic"] == ["Sternotomy"]
    assert recs["CXR6"]["findings"] == "Heart size normal. Lungs clear - no effusion."
    for r in res.records:
        assert r["split"] == hash_split(r["study_id"], seed=0, fractions=(0.7, 0.1, 0.2))
        assert (res.image_root / r["image"]).is_file()


def test_folder_equals_archive_and_options(tmp_path):
    from_tgz = read_iu_xray(make_iu(tmp_path / "a"))
    from_dir = read_iu_xray(make_iu(tmp_path / "b", archive=False))
    assert from_dir.records == from_tgz.records and from_dir.dropped == from_tgz.dropped
    every = read_iu_xray(tmp_path / "a", images="all")
    assert [r["study_id"] for r in every.records] == [
        "CXR1/CXR1_1_IM-0001-3001", "CXR1/CXR1_1_IM-0001-4001", "CXR2/CXR2_IM-0652-1001",
        "CXR3/CXR3_IM-1384-1001", "CXR6/CXR6_IM-2192-1001"]
    assert every.dropped == {"missing image": 1, "no findings section": 1, "no image": 1}
    impression = _by_id(read_iu_xray(tmp_path / "a", section="impression"))
    assert impression["CXR4"]["report"] == "No active disease." and impression["CXR4"]["findings"] == ""
    both = _by_id(read_iu_xray(tmp_path / "a", section="both"))
    assert both["CXR2"]["report"].startswith("FINDINGS: The cardiomediastinal silhouette")
    assert both["CXR2"]["report"].endswith("\n\nIMPRESSION: No acute cardiopulmonary abnormality.")
    seeds = {seed: [r["split"] for r in read_iu_xray(tmp_path / "a", seed=seed).records] for seed in range(6)}
    assert len({tuple(v) for v in seeds.values()}) > 1  # the seed changes the split
    assert seeds[2] == [r["split"] for r in read_iu_xray(tmp_path / "b", seed=2).records]


def test_malformed_xml_and_outside_paths(tmp_path):
    bad = {"7.xml": '<?xml version="1.0"?><eCitation><uId id="CXR7"/><MeSH>',
           "8.xml": iu_xml(8, {"FINDINGS": "Clear."}, ["../../../outside"], [])}
    root = make_iu(tmp_path, extra_files=bad)
    with pytest.raises(ManifestError, match=r"NLMCXR_reports\.tgz:ecgen-radiology/7\.xml: malformed XML"):
        read_iu_xray(root)
    res = read_iu_xray(root, on_error="skip")
    assert res.dropped["malformed XML"] == 1 and res.dropped["path outside root"] == 1
    assert res.found == 4
    (tmp_path / "NLMCXR_reports.tgz").unlink()
    with pytest.raises(MissingFileError, match="NLMCXR_reports.tgz"):
        read_iu_xray(root)
