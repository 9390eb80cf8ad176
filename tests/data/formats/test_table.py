"""A user's CSV / TSV / JSONL table: columns, splits, labels and validation."""

from __future__ import annotations

import csv
import json

import pytest

from medvl.data.dataset import ManifestError
from medvl.data.formats import MissingFileError, hash_split, read_table

from .fixtures import write_image

ROWS = [
    # id, image, report, split, Cardiomegaly, Edema
    ("a1", "images/a1.png", "FINDINGS: Heart size is normal.\nIMPRESSION: No acute disease.", "train", "0", ""),
    ("a2", "images/a2.png", "Moderate cardiomegaly. Mild interstitial edema.", "valid", "1", "-1"),
    ("a3", "images/a3.png", "The image of this row is missing.", "test", "", ""),
    ("a4", "images/a4.png", "   ", "train", "", ""),
    ("a5", "images/a5.png", "Normal\u00a0chest.", "Test", "1.0", "0.0"),
]
HEADER = ["id", "image", "report", "split", "Cardiomegaly", "Edema"]


def _write(tmp_path, rows=ROWS, header=HEADER, name="table.csv", delimiter=","):
    for k, row in enumerate(ROWS):
        if row[0] != "a3":
            write_image(tmp_path / row[1], seed=k)
    path = tmp_path / name
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_with_labels_and_sections(tmp_path):
    res = read_table(_write(tmp_path), id_col="id", label_cols=["Cardiomegaly", "Edema"])
    recs = {r["study_id"]: r for r in res.records}
    assert list(recs) == ["a1", "a2", "a5"]
    assert res.dropped == {"missing image": 1, "empty text": 1}
    assert res.image_root == tmp_path
    assert recs["a1"]["findings"] == "Heart size is normal." and recs["a1"]["impression"] == "No acute disease."
    assert recs["a1"]["report"] == "FINDINGS: Heart size is normal. IMPRESSION: No acute disease."
    assert recs["a1"]["labels"] == {"cardiomegaly": 0}
    assert recs["a2"]["split"] == "val" and recs["a2"]["labels"] == {"cardiomegaly": 1, "edema": -1}
    assert recs["a2"]["findings"] == ""  # no headings: the text stays in report only
    assert recs["a5"]["split"] == "test" and recs["a5"]["report"] == "Normal chest."
    ones = read_table(tmp_path / "table.csv", id_col="id", label_cols=["Edema"], uncertainty="ones")
    assert {r["study_id"]: r["labels"] for r in ones.records}["a2"] == {"edema": 1}


def test_tsv_jsonl_and_hash_split(tmp_path):
    tsv = read_table(_write(tmp_path, name="table.tsv", delimiter="\t"), id_col="id")
    assert [r["study_id"] for r in tsv.records] == ["a1", "a2", "a5"]
    lines = [{"image": r[1], "caption": r[2], "labels": {"Cardiomegaly": r[4]}} for r in ROWS if r[0] != "a4"]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = read_table(tmp_path / "pairs.jsonl", text_col="caption", split_col=None, seed=4)
    assert [r["study_id"] for r in res.records] == ["images/a1", "images/a2", "images/a5"]
    for r in res.records:
        assert r["split"] == hash_split(r["study_id"], seed=4, fractions=(0.7, 0.1, 0.2))
    assert res.records[1]["labels"] == {"cardiomegaly": 1}
    labels_only = read_table(tmp_path / "table.tsv", text_col=None, id_col="id", label_cols=["Cardiomegaly"])
    assert labels_only.found == 4 and "report" not in labels_only.records[0]


@pytest.mark.parametrize(
    ("row", "message", "key"),
    [
        (("b1", "images/a1.png", "Text.", "holdout", "", ""), "unknown split 'holdout'", "malformed row"),
        (("b1", "images/a1.png", "Text.", "train", "maybe", ""), "bad label value 'maybe'", "malformed row"),
        (("a1", "images/a2.png", "Text.", "train", "", ""), "duplicate id 'a1'", "duplicate id"),
        (("b1", "../secret.png", "Text.", "train", "", ""), "'../secret.png' points outside", "path outside root"),
        (("b1", "/etc/passwd", "Text.", "train", "", ""), "'/etc/passwd' points outside", "path outside root"),
    ],
)
def test_malformed_rows(tmp_path, row, message, key):
    path = _write(tmp_path, rows=[*ROWS, row])
    # Line 8: the quoted report of a1 spans lines 2-3 of the file.
    with pytest.raises(ManifestError, match=rf"table\.csv:8: .*{message}"):
        read_table(path, id_col="id", label_cols=["Cardiomegaly", "Edema"])
    res = read_table(path, id_col="id", label_cols=["Cardiomegaly", "Edema"], on_error="skip")
    assert res.dropped[key] == 1 and res.found == 3


def test_missing_columns_and_files(tmp_path):
    path = _write(tmp_path, rows=[r[:3] for r in ROWS], header=HEADER[:3])
    with pytest.raises(ManifestError, match=r"table\.csv:1: missing column\(s\) \['split'\]"):
        read_table(path, on_error="skip")
    assert read_table(path, split_col=None, id_col="id").found == 3
    (tmp_path / "bad.jsonl").write_text('{"image": "images/a1.png", "report": "x"}\n{"image": \n[1, 2]\n')
    with pytest.raises(ManifestError, match=r"bad\.jsonl:2: malformed JSON"):
        read_table(tmp_path / "bad.jsonl", split_col=None)
    skipped = read_table(tmp_path / "bad.jsonl", split_col=None, on_error="skip")
    assert skipped.found == 1 and skipped.dropped == {"malformed row": 2}
    with pytest.raises(MissingFileError):
        read_table(tmp_path / "absent.csv")
