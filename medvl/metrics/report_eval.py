"""Score a file of generated reports against a file of reference reports.

``medvl eval reports --pred FILE --ref FILE [--out DIR]`` reads both files, joins them
on ``study_id``, and computes the NLG metrics of :mod:`medvl.metrics.nlg` (BLEU-1..4,
METEOR, ROUGE-L, CIDEr-D, COCO conventions) and the clinical-efficacy metrics of
:mod:`medvl.metrics.clinical` (CheXpert-style labels, micro/macro P/R/F1, positive-only
and uncertain-as-positive), each with a paired percentile bootstrap confidence interval
(:mod:`medvl.metrics.bootstrap`). Results go to ``metrics.json`` and ``metrics.md`` (a
Markdown table) in the output folder.

Input formats: JSON Lines (one ``{"study_id": ..., "report": ...}`` object per line; a
JSON array of such objects is accepted too) or CSV/TSV with ``study_id`` and ``report``
columns (quoted fields may span lines). Files are read as UTF-8 (a byte-order mark is
ignored) and report text is normalised by :func:`medvl.data.reports.clean_text` (NFKC,
ASCII quotes and dashes, zero-width and control characters removed, whitespace
collapsed).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medvl.data.reports import clean_text
from medvl.metrics.bootstrap import bootstrap_many
from medvl.metrics.clinical import CHEXPERT_LABELS, LABELER_VERSION, ce_prepared, label_reports
from medvl.metrics.nlg import METEOR_IMPLEMENTATION, nlg_metrics

__all__ = ["evaluate_report_files", "format_markdown", "read_reports"]

_MAIN_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rougeL", "cider",
              "ce_micro_precision", "ce_micro_recall", "ce_micro_f1",
              "ce_macro_precision", "ce_macro_recall", "ce_macro_f1",
              "ce_uap_micro_precision", "ce_uap_micro_recall", "ce_uap_micro_f1",
              "ce_uap_macro_precision", "ce_uap_macro_recall", "ce_uap_macro_f1")


def _records(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    """(location, record) pairs of a JSONL/JSON or CSV/TSV file."""
    suffix = path.suffix.lower()
    stripped = text.lstrip()
    if suffix in (".jsonl", ".ndjson", ".json") or (suffix not in (".csv", ".tsv") and stripped[:1] in "{["):
        if stripped.startswith("["):
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
            return [(f"item {i}", r) for i, r in enumerate(rows)]
        out = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append((f"line {lineno}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {lineno} is not valid JSON ({err.msg})") from None
        return out
    delimiter = "\t" if suffix == ".tsv" else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if reader.fieldnames is None:
        return []
    reader.fieldnames = [(f or "").strip().lower() for f in reader.fieldnames]
    try:
        return [(f"row {i + 2}", row) for i, row in enumerate(reader)]
    except csv.Error as err:
        raise ValueError(f"{path}: malformed CSV ({err})") from None


def read_reports(path: str | Path, field: str = "report") -> dict[str, str]:
    """Read a report file into ``{study_id: cleaned report}``, in file order.

    Args:
        path: JSONL/JSON or CSV/TSV file with ``study_id`` and ``report`` fields.
        field: The text field, when it is not ``report`` (e.g. ``generated`` or
            ``reference`` in the ``test_reports.jsonl`` a ReportGeneration test writes).

    Returns:
        Study id (as a stripped string) -> report text (normalised; "" when empty).

    Raises:
        ValueError: Naming the file and the reason: not UTF-8, malformed, a record
            without ``study_id`` or ``report``, duplicate study ids, or no records.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (invalid byte at offset {err.start})") from None
    reports: dict[str, str] = {}
    duplicates: list[str] = []
    field = field.strip().lower()
    for where, rec in _records(path, text):
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: {where} is not an object with study_id and {field}")
        rec = {str(k).strip().lower(): v for k, v in rec.items()}
        missing = [k for k in ("study_id", field) if k not in rec]
        if missing:
            raise ValueError(f"{path}: {where} has no {' or '.join(missing)} field")
        sid = clean_text(str(rec["study_id"]))
        if not sid:
            raise ValueError(f"{path}: {where} has an empty study_id")
        if sid in reports:
            duplicates.append(sid)
        reports[sid] = clean_text(str(rec[field])) if rec[field] is not None else ""
    if duplicates:
        raise ValueError(f"{path}: duplicate study_id {_some(duplicates)}")
    if not reports:
        raise ValueError(f"{path}: no reports")
    return reports


def _some(ids: Sequence[str], k: int = 5) -> str:
    ids = sorted(set(ids))
    return ", ".join(ids[:k]) + (f" and {len(ids) - k} more" if len(ids) > k else "")


def _finite(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def evaluate_report_files(pred_path: str | Path, ref_path: str | Path, out_dir: str | Path | None = None,
                          n_resamples: int = 1000, *, alpha: float = 0.05, seed: int = 0,
                          pred_field: str = "report", ref_field: str = "report",
                          observations: Sequence[str] | None = None) -> dict[str, Any]:
    """NLG and clinical-efficacy metrics of a prediction file against a reference file.

    Args:
        pred_path: Generated reports (JSONL or CSV with ``study_id``, ``report``).
        ref_path: Reference reports, same format; the study ids must match exactly.
        out_dir: Folder for ``metrics.json`` and ``metrics.md`` (created); None writes nothing.
        n_resamples: Bootstrap resamples for the confidence intervals (0 skips them).
        alpha: 1 - confidence level of the intervals.
        seed: Seed of the bootstrap.
        pred_field: Text field of ``pred_path``.
        ref_field: Text field of ``ref_path``.
        observations: CheXpert observations the clinical-efficacy averages run over
            (default all 14).

    Returns:
        ``{"n_samples", "observations", "confidence", "n_resamples", "seed",
        "meteor_implementation", "labeler_version", "metrics": {key: {"value", "ci_low", "ci_high"}},
        "label_counts": {observation: {"pred_positive", "ref_positive", "pred_uncertain",
        "ref_uncertain"}}}``; NaN is written as null.

    Raises:
        ValueError: A file cannot be read, or the two files' study ids differ (the error
            names both files and some of the ids).
    """
    pred_path, ref_path = Path(pred_path), Path(ref_path)
    preds, refs = read_reports(pred_path, pred_field), read_reports(ref_path, ref_field)
    only_ref = [s for s in refs if s not in preds]
    only_pred = [s for s in preds if s not in refs]
    if only_ref or only_pred:
        parts = []
        if only_ref:
            parts.append(f"{len(only_ref)} study_id(s) of {ref_path} missing from {pred_path}: {_some(only_ref)}")
        if only_pred:
            parts.append(f"{len(only_pred)} study_id(s) of {pred_path} missing from {ref_path}: {_some(only_pred)}")
        raise ValueError("; ".join(parts))
    ids = list(refs)
    hyps, gold = [preds[s] for s in ids], [refs[s] for s in ids]

    prepared = {name: metric.prepare(hyps, gold) for name, metric in nlg_metrics().items()}
    hyp_labels, ref_labels = label_reports(hyps), label_reports(gold)
    prepared.update(ce_prepared(hyp_labels, ref_labels, observations))
    if n_resamples > 0:
        intervals = bootstrap_many(prepared, len(ids), n_resamples, alpha, seed)
    else:
        intervals = {k: (p.point, float("nan"), float("nan")) for k, p in prepared.items()}
    metrics = {k: {"value": _finite(v), "ci_low": _finite(lo), "ci_high": _finite(hi)}
               for k, (v, lo, hi) in intervals.items()}
    counts = {name: {"pred_positive": int((hyp_labels[:, j] == 1).sum()), "ref_positive": int((ref_labels[:, j] == 1).sum()),
                     "pred_uncertain": int((hyp_labels[:, j] == -1).sum()),
                     "ref_uncertain": int((ref_labels[:, j] == -1).sum())}
              for j, name in enumerate(CHEXPERT_LABELS)}
    result = {"n_samples": len(ids), "observations": list(observations or CHEXPERT_LABELS),
              "confidence": 1 - alpha, "n_resamples": n_resamples, "seed": seed,
              "meteor_implementation": METEOR_IMPLEMENTATION, "labeler_version": LABELER_VERSION,
              "metrics": metrics, "label_counts": counts}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        (out / "metrics.md").write_text(format_markdown(result), encoding="utf-8")
    return result


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def format_markdown(result: dict[str, Any]) -> str:
    """Markdown tables of an :func:`evaluate_report_files` result."""
    level = round(100 * result["confidence"])
    lines = [f"# Report generation metrics ({result['n_samples']} studies)", "",
             f"METEOR: {result.get('meteor_implementation', 'unrecorded')}.", "",
             f"Clinical labels: {result.get('labeler_version', 'unrecorded')}.", "",
             f"| metric | value | {level}% CI |", "| --- | ---: | ---: |"]
    metrics = result["metrics"]
    for key in _MAIN_KEYS:
        m = metrics[key]
        ci = "n/a" if m["ci_low"] is None else f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]"
        lines.append(f"| {key} | {_fmt(m['value'])} | {ci} |")
    lines += ["", f"| observation | F1 | {level}% CI | F1 (uncertain = positive) | predicted positive | "
                  "reference positive |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in result["observations"]:
        m, u, c = metrics[f"ce_f1/{name}"], metrics[f"ce_uap_f1/{name}"], result["label_counts"][name]
        ci = "n/a" if m["ci_low"] is None else f"[{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]"
        lines.append(f"| {name} | {_fmt(m['value'])} | {ci} | {_fmt(u['value'])} | {c['pred_positive']} | "
                     f"{c['ref_positive']} |")
    return "\n".join(lines) + "\n"
