"""The shared machinery: path checks, label cells, the hash split, summaries."""

from __future__ import annotations

from collections import Counter

import pytest

from medvl.data.dataset import ManifestError
from medvl.data.formats import Collector, FormatResult, apply_uncertainty, hash_split, inside_root, parse_label


def test_inside_root():
    assert inside_root("files/p10/a.jpg") == "files/p10/a.jpg"
    assert inside_root("files/./p10//a.jpg") == "files/p10/a.jpg"
    assert inside_root("files/../other/a.jpg") == "other/a.jpg"
    assert inside_root("files\\p10\\a.jpg") == "files/p10/a.jpg"
    for bad in ("../a.jpg", "a/../../b.jpg", "/etc/passwd", "C:/x.png", "", ".", ".."):
        assert inside_root(bad) is None, bad


def test_parse_label():
    assert [parse_label(v) for v in ("1.0", "0.0", "-1.0", "", " 1 ", "nan", None, 1, 0.0, -1, float("nan"))] == [
        1, 0, -1, None, 1, None, None, 1, 0, -1, None]
    for bad in ("2.0", "yes", "0.5", True):
        with pytest.raises(ValueError, match="bad label value"):
            parse_label(bad)
    assert apply_uncertainty({"a": -1, "b": 1, "c": 0}, "ones") == {"a": 1, "b": 1, "c": 0}
    assert apply_uncertainty({"a": -1, "b": 1, "c": 0}, "zeros") == {"a": 0, "b": 1, "c": 0}
    assert apply_uncertainty({"a": -1}, "ignore") == {"a": -1}


def test_hash_split_is_deterministic_and_proportional():
    keys = [f"CXR{i}" for i in range(6000)]
    splits = [hash_split(k, seed=1) for k in keys]
    assert splits == [hash_split(k, seed=1) for k in reversed(keys)][::-1]  # order-independent
    counts = Counter(splits)
    assert abs(counts["train"] / 6000 - 0.7) < 0.03 and abs(counts["val"] / 6000 - 0.1) < 0.02
    assert splits != [hash_split(k, seed=2) for k in keys]
    assert {hash_split(k, fractions=(0.0, 0.0, 1.0)) for k in keys[:50]} == {"test"}
    with pytest.raises(ValueError, match="fractions"):
        hash_split("x", fractions=(0.5, 0.2, 0.2))


def test_collector_policy_and_summary(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    raising = Collector(tmp_path)
    with pytest.raises(ManifestError, match=r"^t\.csv:4: image path '\.\./x\.png' points outside the dataset root$"):
        raising.image("../x.png", "t.csv:4")
    skipping = Collector(tmp_path, on_error="skip")
    assert skipping.image("a.png", "t.csv:2") == "a.png"
    assert skipping.image("b.png", "t.csv:3") is None
    assert skipping.image("../x.png", "t.csv:4") is None
    assert skipping.add({"study_id": "s1"}, "t.csv:2") and not skipping.add({"study_id": "s1"}, "t.csv:5")
    res = skipping.result()
    assert res.summary() == "found 1, dropped 3 (missing image: 1, path outside root: 1, duplicate id: 1)"
    assert FormatResult([], tmp_path).summary() == "found 0, dropped 0"
    assert Collector(tmp_path, check_files=False).image("b.png", "t.csv:3") == "b.png"

