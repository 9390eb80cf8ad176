"""End to end: two report files -> NLG + clinical metrics with bootstrap intervals -> JSON + Markdown."""

from __future__ import annotations

import csv
import json

import pytest

from medvl.cli import main
from medvl.metrics.clinical import LABELER_VERSION, clinical_efficacy
from medvl.metrics.nlg import compute_nlg
from medvl.metrics.report_eval import evaluate_report_files, read_reports


def main_eval_reports(args: list[str]) -> int:
    """``medvl eval reports ARGS``."""
    return main(["eval", "reports", *args])

REFS = {
    "s01": "Moderate cardiomegaly. Small left pleural effusion. No pneumothorax.",
    "s02": "No acute cardiopulmonary process.",
    "s03": "Right lower lobe consolidation concerning for pneumonia.",
    "s04": "Endotracheal tube terminates 4 cm above the carina. Mild pulmonary edema.",
    "s05": "Heart size is normal. The lungs are clear.",
    "s06": "Possible small right pneumothorax.\nNo effusion.",
    "s07": "Bibasilar atelectasis. No focal consolidation.",
    "s08": "Healed left rib fractures. No acute process.",
}
PREDS = {
    "s01": "Mild cardiomegaly. Small left pleural effusion.",
    "s02": "No acute cardiopulmonary process.",
    "s03": "No focal consolidation. No pneumothorax.",
    "s04": "Endotracheal tube in standard position. Pulmonary edema.",
    "s05": "Heart size is normal. Lungs are clear.",
    "s06": "Small right pneumothorax.",
    "s07": "",
    "s08": "No acute process.",
}


def _write_jsonl(path, reports, **extra):
    with open(path, "w", encoding="utf-8") as f:
        for sid, text in reports.items():
            f.write(json.dumps({"study_id": sid, "report": text, **extra}) + "\n")
    return path


def _write_csv(path, reports, bom=True):
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(["study_id", "report"])
        for sid, text in reversed(list(reports.items())):  # another order: joined on study_id
            writer.writerow([sid, text])
    return path


def test_evaluate_report_files(tmp_path):
    odd = dict(PREDS)
    odd["s05"] = "Heart\u00a0size is\u200b normal. \uff2cungs are clear\u2014"  # NBSP, zero width, full-width L
    pred = _write_jsonl(tmp_path / "pred.jsonl", odd, model="x")
    ref = _write_csv(tmp_path / "ref.csv", REFS)
    out = tmp_path / "out"
    result = evaluate_report_files(pred, ref, out, n_resamples=300)

    assert read_reports(pred)["s05"] == "Heart size is normal. Lungs are clear-"
    ids = list(REFS)
    nlg = compute_nlg([read_reports(pred)[s] for s in ids], [REFS[s] for s in ids])
    ce = clinical_efficacy([read_reports(pred)[s] for s in ids], [REFS[s] for s in ids])
    metrics = result["metrics"]
    assert result["n_samples"] == 8 and result["n_resamples"] == 300
    for key, value in {**nlg, **{k: v for k, v in ce.items() if k.startswith(("ce_micro", "ce_macro"))}}.items():
        assert metrics[key]["value"] == pytest.approx(value, abs=1e-12), key
    for key in ("bleu4", "cider", "rougeL", "meteor", "ce_micro_f1", "ce_uap_macro_f1", "ce_f1/cardiomegaly"):
        m = metrics[key]
        assert m["ci_low"] <= m["value"] <= m["ci_high"], key
    assert metrics["cider"]["ci_low"] < metrics["cider"]["ci_high"]
    assert result["label_counts"]["cardiomegaly"] == {"pred_positive": 1, "ref_positive": 1, "pred_uncertain": 0,
                                                      "ref_uncertain": 0}

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["bleu1"] == metrics["bleu1"]
    md = (out / "metrics.md").read_text()
    assert md.startswith("# Report generation metrics (8 studies)")
    assert saved["labeler_version"] == LABELER_VERSION and f"Clinical labels: {LABELER_VERSION}." in md
    assert f"| cider | {metrics['cider']['value']:.4f} |" in md and "| support_device |" in md


def test_json_array_tsv_and_no_intervals(tmp_path):
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"study_id": k, "report": v} for k, v in PREDS.items()]))
    ref = tmp_path / "ref.tsv"
    ref.write_text("study_id\treport\n" + "".join(f"{k}\t{v.replace(chr(10), ' ')}\n" for k, v in REFS.items()))
    result = evaluate_report_files(pred, ref, n_resamples=0)
    assert result["metrics"]["bleu4"]["ci_low"] is None and result["metrics"]["bleu4"]["value"] > 0


def test_errors_name_the_file_and_reason(tmp_path):
    ref = _write_csv(tmp_path / "ref.csv", REFS)
    partial = _write_jsonl(tmp_path / "partial.jsonl", {k: v for k, v in PREDS.items() if k not in ("s03", "s07")})
    with pytest.raises(ValueError) as err:
        evaluate_report_files(partial, ref)
    assert "partial.jsonl" in str(err.value) and "ref.csv" in str(err.value) and "s03, s07" in str(err.value)

    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"study_id": 1, "report": "a"}\n{"study_id": "1", "report": "b"}\n')
    with pytest.raises(ValueError, match=r"dup\.jsonl: duplicate study_id 1"):
        read_reports(dup)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,text\n1,No effusion.\n")
    with pytest.raises(ValueError, match=r"bad\.csv: row 2 has no study_id or report field"):
        read_reports(bad)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"study_id": "1", "report": "d\u00e9j\u00e0"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.jsonl: not UTF-8"):
        read_reports(latin)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"study_id": "1", "report": "x"}\n{"study_id": \n')
    with pytest.raises(ValueError, match=r"broken\.jsonl: line 2 is not valid JSON"):
        read_reports(broken)
    with pytest.raises(ValueError, match="no such file"):
        read_reports(tmp_path / "missing.jsonl")


def test_main_eval_reports(tmp_path, capsys):
    pred = _write_jsonl(tmp_path / "pred.jsonl", PREDS)
    ref = _write_jsonl(tmp_path / "ref.jsonl", REFS)
    assert main_eval_reports(["--pred", str(pred), "--ref", str(ref), "--out", str(tmp_path / "o"),
                              "--n-resamples", "100"]) == 0
    assert "| bleu4 |" in capsys.readouterr().out
    assert (tmp_path / "o" / "metrics.json").exists() and (tmp_path / "o" / "metrics.md").exists()
    assert main_eval_reports(["--pred", str(tmp_path / "nope.jsonl"), "--ref", str(ref)]) == 1
    assert "nope.jsonl: no such file" in capsys.readouterr().err


def test_one_run_file_with_two_fields_and_an_observation_subset(tmp_path, capsys):
    """The test_reports.jsonl of a ReportGeneration run scores directly, over chosen observations."""
    run = tmp_path / "test_reports.jsonl"
    with open(run, "w", encoding="utf-8") as f:
        for sid in REFS:
            f.write(json.dumps({"study_id": sid, "generated": PREDS[sid], "reference": REFS[sid]}) + "\n")
    keep = ["cardiomegaly", "pleural_effusion", "pneumothorax", "no_finding"]
    assert main_eval_reports(["--pred", str(run), "--pred-field", "generated", "--ref", str(run),
                              "--ref-field", "reference", "--observations", ",".join(keep),
                              "--n-resamples", "0", "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "metrics.json").read_text())
    ids = list(REFS)
    expected = clinical_efficacy([PREDS[s] for s in ids], [REFS[s] for s in ids], keep)
    assert result["observations"] == keep
    assert result["metrics"]["ce_macro_f1"]["value"] == pytest.approx(expected["ce_macro_f1"])
    assert expected["ce_macro_f1"] != pytest.approx(clinical_efficacy([PREDS[s] for s in ids],
                                                                      [REFS[s] for s in ids])["ce_macro_f1"])
    table = capsys.readouterr().out
    assert "| cardiomegaly |" in table and "| fracture |" not in table
    with pytest.raises(ValueError, match="has no report field"):
        read_reports(run)  # the default field is absent: named in the error
