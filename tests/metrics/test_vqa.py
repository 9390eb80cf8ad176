"""Tests for medvl.metrics.vqa; every expected value is worked out by hand."""

from __future__ import annotations

import math

import pytest

from medvl.metrics.vqa import (
    CLOSED_RULES,
    bleu1,
    exact_match,
    is_closed,
    normalize_answer,
    token_f1,
    token_recall,
    vqa_markdown,
    vqa_scores,
)

# ----------------------------------------------------------------------------- normalise


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # case, surrounding space, trailing period
        ("Yes.", "yes"),
        (" NO ", "no"),
        ("left\nlung\t", "left lung"),
        ("left    lung", "left lung"),
        # punctuation: ", " touches a space -> deleted; "!" touches none -> space
        ("Hello, world!", "hello world"),
        ("(left)", "left"),
        ("left/right", "left right"),
        # the official rules on hyphens: no space around -> a space; spaced -> deleted
        ("x-ray", "x ray"),
        ("x - ray", "x ray"),
        # a digit-comma-digit anywhere: every punctuation character is deleted
        ("1,000", "1000"),
        ("1,000-2,000", "10002000"),
        # a period survives only if a digit follows it
        ("3.5", "3.5"),
        ("3.5 cm.", "3.5 cm"),
        ("3.", "3"),
        (".5", ".5"),
        # ':' and "'" are not in the official punctuation list
        ("t2: bright", "t2: bright"),
        ("don't", "don't"),
        # number words (note the official "none" -> "0")
        ("Two", "2"),
        ("Three nodules", "3 nodules"),
        ("none", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),
        # articles
        ("the left lung", "left lung"),
        ("An effusion", "effusion"),
        ("a", ""),
        # contractions restored
        ("dont", "don't"),
        ("It isnt", "it isn't"),
        ("whats", "what's"),
        # official quirk: the capitalised key "Im" never matches a lower-cased word
        ("Im", "im"),
        # NFKC and zero-width characters (medvl addition)
        ("\uff39\uff25\uff33", "yes"),  # full-width "YES"
        ("no\u200b", "no"),  # trailing zero-width space
        ("left\u200blung", "leftlung"),  # a zero-width space is dropped, not a space
        ("left\u00a0lung", "left lung"),  # no-break space -> space
        ("\ufb01brosis", "fibrosis"),  # "fi" ligature
        ("\ufeffyes", "yes"),  # byte-order mark
        ("", ""),
        ("   ", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


# ----------------------------------------------------------------------------- is_closed


def test_closed_rules_constant() -> None:
    assert CLOSED_RULES == ("answer_type", "yes_no")


def test_closed_rules_disagree() -> None:
    # "left" annotated CLOSED (e.g. a left/right choice): closed by annotation only.
    assert is_closed("left", "CLOSED") is True
    assert is_closed("left", "CLOSED", rule="yes_no") is False
    # "yes" annotated OPEN: open by annotation, closed by the yes/no rule.
    assert is_closed("yes", "OPEN") is False
    assert is_closed("yes", "OPEN", rule="yes_no") is True


def test_is_closed_annotation_is_stripped_and_casefolded() -> None:
    assert is_closed("left", "CLOSED ") is True  # VQA-RAD's stray trailing space
    assert is_closed("left", "closed") is True
    assert is_closed("yes", " Open") is False


def test_is_closed_falls_back_to_yes_no_without_annotation() -> None:
    assert is_closed("No.", None) is True
    assert is_closed("left lung", None) is False
    assert is_closed(" YES ", "") is True
    assert is_closed("left", "  ") is False


def test_is_closed_invalid_rule() -> None:
    with pytest.raises(ValueError, match="bogus"):
        is_closed("yes", "CLOSED", rule="bogus")


def test_is_closed_unknown_annotation() -> None:
    with pytest.raises(ValueError, match="MAYBE"):
        is_closed("yes", "MAYBE")
    # the yes/no rule ignores the annotation entirely
    assert is_closed("yes", "MAYBE", rule="yes_no") is True


# ----------------------------------------------------------------------------- per question


def test_exact_match() -> None:
    assert exact_match("The Left Lung.", "left lung") == 1.0
    assert exact_match("two", "2") == 1.0
    assert exact_match("left", "left lung") == 0.0


def test_token_recall() -> None:
    # ref {left, lung} both in pred {mass, in, left, lung} ("a", "the" dropped) -> 2/2
    assert token_recall("a mass in the left lung", "left lung") == 1.0
    # ref {left, lung}, pred {left} -> 1/2
    assert token_recall("left", "left lung") == 0.5
    # multiplicity: ref {left x2, lung}, pred {left x2} -> min(2,2) = 2 of 3
    assert token_recall("left left", "left left lung") == pytest.approx(2 / 3)
    # multiplicity the other way: ref {left x2}, pred {left} -> 1 of 2
    assert token_recall("left", "left left") == 0.5
    # nothing in common -> 0
    assert token_recall("heart", "left lung") == 0.0


def test_token_recall_empty_reference() -> None:
    assert token_recall("", "") == 1.0
    assert token_recall("lung", "") == 0.0
    assert token_recall("lung", "the") == 0.0  # "the" normalises to ""


def test_token_f1() -> None:
    # pred {left, upper, lobe}, ref {left, lobe}: overlap 2, P = 2/3, R = 1,
    # F1 = 2 * (2/3) * 1 / (2/3 + 1) = (4/3) / (5/3) = 0.8
    assert token_f1("left upper lobe", "left lobe") == pytest.approx(0.8)
    # pred {heart}, ref {left, heart, border}: P = 1, R = 1/3, F1 = (2/3) / (4/3) = 0.5
    assert token_f1("heart", "left heart border") == pytest.approx(0.5)
    assert token_f1("heart", "lung") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("", "lung") == 0.0
    assert token_f1("lung", "") == 0.0


def test_bleu1() -> None:
    # identical -> precision 1, c = r -> no penalty
    assert bleu1("left lung", "the left lung") == 1.0
    # clipping: pred {lung x3}, ref {left, lung}; "lung" counts at most once -> 1/3;
    # c = 3 >= r = 2 -> no penalty
    assert bleu1("lung lung lung", "left lung") == pytest.approx(1 / 3)
    # brevity: pred {lung}, ref {left, lower, lung}: precision 1, c = 1 < r = 3,
    # BP = exp(1 - 3/1) = exp(-2) = 0.135335...
    assert bleu1("lung", "left lower lung") == pytest.approx(math.exp(-2))
    # pred {left, lung}, ref {left, upper, lung, lobe}: precision 1, BP = exp(1 - 4/2)
    assert bleu1("left lung", "left upper lung lobe") == pytest.approx(math.exp(-1))
    assert bleu1("", "lung") == 0.0
    assert bleu1("", "") == 0.0


# ----------------------------------------------------------------------------- vqa_scores

# Six questions, scored by hand:
#   q  pred                ref                 type    exact recall F1   BLEU-1
#   1  "Yes"               "yes"               closed  1
#   2  "no"                "yes"               closed  0
#   3  "left lung"         "the left lung"     open    1     1      1    1
#   4  "right lower lobe"  "right lobe"        open    0     2/2    0.8  2/3 (c=3>=r=2)
#   5  "heart"             "left heart border" open    0     1/3    0.5  exp(-2) (c=1<r=3)
#   6  "Two"               "2"                 open    1     1      1    1
PREDS = ["Yes", "no", "left lung", "right lower lobe", "heart", "Two"]
REFS = ["yes", "yes", "the left lung", "right lobe", "left heart border", "2"]
TYPES = ["closed", "closed", "open", "open", "open", "open"]
HEADLINE = [
    "overall_accuracy",
    "closed_accuracy",
    "open_accuracy",
    "open_recall",
    "open_f1",
    "open_bleu1",
]


def test_vqa_scores_six_questions() -> None:
    s = vqa_scores(PREDS, REFS, TYPES, n_bootstrap=0)
    assert s == pytest.approx(
        {
            "n": 6.0,
            "n_closed": 2.0,
            "n_open": 4.0,
            "overall_accuracy": 3 / 6,  # q1, q3, q6
            "closed_accuracy": 1 / 2,  # q1
            "open_accuracy": 2 / 4,  # q3, q6
            "open_recall": (1 + 1 + 1 / 3 + 1) / 4,  # = 5/6
            "open_f1": (1 + 0.8 + 0.5 + 1) / 4,  # = 0.825
            "open_bleu1": (1 + 2 / 3 + math.exp(-2) + 1) / 4,  # = 0.700501...
        }
    )
    assert s["open_recall"] == pytest.approx(5 / 6)
    assert s["open_f1"] == pytest.approx(0.825)
    assert s["open_bleu1"] == pytest.approx(0.700501, abs=1e-6)
    assert all(isinstance(v, float) for v in s.values())


def test_vqa_scores_keys_with_intervals() -> None:
    s = vqa_scores(PREDS, REFS, TYPES, n_bootstrap=200)
    expected = {"n", "n_closed", "n_open", *HEADLINE}
    expected |= {f"{m}_ci_{side}" for m in HEADLINE for side in ("low", "high")}
    assert set(s) == expected


def test_vqa_scores_answer_types_are_casefolded() -> None:
    s = vqa_scores(PREDS, REFS, [" CLOSED", "Closed", "OPEN ", "open", "Open", "open"], n_bootstrap=0)
    assert s["n_closed"] == 2.0 and s["n_open"] == 4.0


def test_vqa_scores_groups() -> None:
    groups = {
        "question_type": ["PRES", "PRES", "POS", "POS", "POS", ""],
        "content_type": ["Organ", "Abnormality", "Organ", "Organ", "Abnormality", "Quantity"],
    }
    s = vqa_scores(PREDS, REFS, TYPES, groups=groups, n_bootstrap=0)
    group_keys = {k: v for k, v in s.items() if "/" in k}
    assert group_keys == pytest.approx(
        {
            "question_type/PRES/accuracy": 1 / 2,  # q1 right, q2 wrong
            "question_type/PRES/n": 2.0,
            "question_type/POS/accuracy": 1 / 3,  # q3 right, q4 q5 wrong
            "question_type/POS/n": 3.0,
            # q6's "" is skipped: no "question_type//..." key
            "content_type/Organ/accuracy": 2 / 3,  # q1, q3 right; q4 wrong
            "content_type/Organ/n": 3.0,
            "content_type/Abnormality/accuracy": 0.0,  # q2, q5 wrong
            "content_type/Abnormality/n": 2.0,
            "content_type/Quantity/accuracy": 1.0,  # q6
            "content_type/Quantity/n": 1.0,
        }
    )


def test_vqa_scores_without_open_questions() -> None:
    s = vqa_scores(["yes", "yes", "no"], ["yes", "no", "no"], ["closed"] * 3, n_bootstrap=100)
    assert s["n_open"] == 0.0
    assert s["closed_accuracy"] == pytest.approx(2 / 3)
    assert not any(k.startswith("open_") for k in s)
    assert set(s) == {
        "n",
        "n_closed",
        "n_open",
        "overall_accuracy",
        "overall_accuracy_ci_low",
        "overall_accuracy_ci_high",
        "closed_accuracy",
        "closed_accuracy_ci_low",
        "closed_accuracy_ci_high",
    }


def test_vqa_scores_without_closed_questions() -> None:
    s = vqa_scores(["left"], ["left"], ["open"], n_bootstrap=0)
    assert "closed_accuracy" not in s and s["n_closed"] == 0.0
    assert s["open_accuracy"] == 1.0


def test_vqa_scores_intervals_bracket_and_are_deterministic() -> None:
    a = vqa_scores(PREDS, REFS, TYPES, n_bootstrap=500, seed=3)
    b = vqa_scores(PREDS, REFS, TYPES, n_bootstrap=500, seed=3)
    assert a == b
    for m in HEADLINE:
        assert 0.0 <= a[f"{m}_ci_low"] <= a[m] <= a[f"{m}_ci_high"] <= 1.0
        # every subset here has mixed scores, so the interval is not a point
        assert a[f"{m}_ci_low"] < a[f"{m}_ci_high"]
    # the point estimates do not depend on the seed or the resamples
    c = vqa_scores(PREDS, REFS, TYPES, n_bootstrap=50, seed=4)
    for m in HEADLINE:
        assert c[m] == a[m]


def test_vqa_scores_interval_degenerate_when_all_correct() -> None:
    s = vqa_scores(["yes", "no", "left lung"], ["yes", "no", "left lung"], ["closed", "closed", "open"])
    for m in HEADLINE:
        assert s[m] == s[f"{m}_ci_low"] == s[f"{m}_ci_high"] == 1.0


def test_vqa_scores_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        vqa_scores(["yes"], ["yes", "no"], ["closed"])
    with pytest.raises(ValueError, match="maybe"):
        vqa_scores(["yes"], ["yes"], ["maybe"])
    with pytest.raises(ValueError, match="question_type"):
        vqa_scores(["yes"], ["yes"], ["closed"], groups={"question_type": ["A", "B"]})


# ----------------------------------------------------------------------------- markdown


def test_vqa_markdown() -> None:
    metrics = vqa_scores(
        PREDS,
        REFS,
        TYPES,
        groups={"question_type": ["PRES", "PRES", "POS", "POS", "POS", ""]},
        n_bootstrap=100,
    )
    md = vqa_markdown(metrics, title="VQA-RAD test", options={"closed_rule": "answer_type", "vocabulary": "train"})
    lines = md.splitlines()
    assert lines[0] == "# VQA-RAD test"
    assert "Questions: n = 6, n_closed = 2, n_open = 4." in lines
    assert "| metric | value | 95% CI |" in lines
    row = next(line for line in lines if line.startswith("| closed_accuracy |"))
    low, high = metrics["closed_accuracy_ci_low"], metrics["closed_accuracy_ci_high"]
    assert row == f"| closed_accuracy | 0.5000 | [{low:.4f}, {high:.4f}] |"
    assert "## question_type" in lines
    assert "| POS | 3 | 0.3333 |" in lines
    assert "| PRES | 2 | 0.5000 |" in lines
    assert lines.index("## question_type") < lines.index("## Evaluation options")
    assert "- closed_rule: answer_type" in lines and "- vocabulary: train" in lines


def test_vqa_markdown_skips_absent_metrics_and_missing_ci() -> None:
    metrics = vqa_scores(["yes"], ["yes"], ["closed"], n_bootstrap=0)
    md = vqa_markdown(metrics, title="closed only")
    assert "| closed_accuracy | 1.0000 | - |" in md
    assert "open_" not in md
    assert "Evaluation options" not in md
