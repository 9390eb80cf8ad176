"""VQADataModule and VQADataset on tiny fixtures of every VQA layout: one sample per question."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning as L
import pytest
import torch

from medvl.data import VQADataset, answer_vocabulary, closed_candidates, sources
from medvl.data.dataset import Collate
from medvl.data.formats import SLAKE, VQARAD, FormatResult, PathVQA, RecordSource
from medvl.datamodules import VQADataModule
from medvl.metrics.vqa import normalize_answer
from tests.data.formats.fixtures import (VQA_RAD_SPLIT, make_pathvqa, make_roco, make_slake, make_vqa_rad,
                                         make_vqa_rad_split)

REPO = Path(__file__).resolve().parents[2]
TINY = dict(img_size=32, batch_size=2, augment=False, preload=True)
KEYS = {"image", "question", "answer", "answer_raw", "answer_type", "question_type", "content_type", "question_id",
        "study_id"}
SYNTH = (24, 5)


class Records(RecordSource):
    """Given records over a given image folder (e.g. reordered, or with pairs removed)."""

    def __init__(self, records: list[dict], image_root: Path) -> None:
        self._records, self._root = records, image_root

    def _read(self) -> FormatResult:
        return FormatResult(records=self._records, image_root=self._root)


def _synthetic_counts(root: Path) -> dict[str, int]:
    counts = {"train": 0, "val": 0, "test": 0}
    for line in (root / "manifest.jsonl").read_text().splitlines():
        rec = json.loads(line)
        counts[rec["split"]] += len(rec.get("vqa") or ())
    return counts


# name -> (source from tmp_path and the synthetic root, options, questions per split (None: the manifest's))
CASES = {
    # VQA-RAD (OSF): 3 train questions on 2 images, 2 test; the 10% hold-out takes neither image.
    "vqa_rad": (lambda t, s: VQARAD(make_vqa_rad(t)), {}, {"train": 3, "val": 0, "test": 2}),
    # VQA-RAD (MEVF split): 7 train questions on 6 images, 3 test; a 50% hold-out takes 3 images, 3 questions.
    "vqa_rad_split": (lambda t, s: VQARAD(make_vqa_rad_split(t)), {"val_fraction": 0.5},
                      {"train": 4, "val": 3, "test": 3}),
    "slake": (lambda t, s: SLAKE(make_slake(t)), {}, {"train": 3, "val": 1, "test": 1}),
    "pathvqa": (lambda t, s: PathVQA(make_pathvqa(t)), {}, {"train": 3, "val": 1, "test": 1}),
    "synthetic": (lambda t, s: sources.Synthetic(str(s), *SYNTH), {}, None),
}


@pytest.fixture
def synth(make_synthetic) -> Path:
    return make_synthetic(*SYNTH)


def _dm(source, **kw) -> VQADataModule:
    return VQADataModule(source, **{**TINY, **kw})


def _samples(dm: VQADataModule, split: str) -> list[dict]:
    return [dm.datasets[split][i] for i in range(len(dm.datasets[split]))]


class QATokenizer:
    """A stand-in for a question+answer tokenizer: reads two fields, returns token tensors."""

    fields = ("question", "answer")

    def __call__(self, questions: list[str], answers: list[str]) -> dict[str, torch.Tensor]:
        lengths = [len(q.split()) + len(a.split()) for q, a in zip(questions, answers)]
        ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("name", list(CASES))
def test_counts_sample_and_batch(tmp_path, synth, caplog, name):
    build, options, counts = CASES[name]
    dm = _dm(build(tmp_path, synth), **options)
    with caplog.at_level(logging.INFO, logger="medvl"):
        dm.setup()
    expected = counts or _synthetic_counts(synth)
    assert all(isinstance(ds, VQADataset) for ds in dm.datasets.values())
    assert dm.question_counts() == expected
    for split, n in expected.items():
        assert f"{split} split: {n} questions kept, 0 dropped" in caplog.text
    sample = dm.datasets["test"][0]
    assert set(sample) == KEYS
    assert sample["image"].shape == (1, 32, 32) and sample["image"].dtype == torch.float32
    assert all(isinstance(sample[k], str) for k in KEYS - {"image"})
    assert sample["answer"] == normalize_answer(sample["answer_raw"]) and sample["answer"]
    assert sample["answer_type"] in ("closed", "open") and sample["question"]
    for split in expected:
        ids = dm.datasets[split].question_ids
        assert len(set(ids)) == len(ids) == expected[split]
    loader = dm.test_dataloader()
    loader.collate_fn = Collate({"qa": QATokenizer()})
    batch = next(iter(loader))
    n = min(2, expected["test"])
    assert batch["n_skipped"] == 0 and batch["image"].shape == (n, 1, 32, 32)
    assert set(batch) == KEYS | {"n_skipped", "qa_tokens"}
    assert all(len(batch[k]) == n and isinstance(batch[k][0], str) for k in KEYS - {"image"})
    assert batch["qa_tokens"]["input_ids"].shape[0] == n


def test_synthetic_questions_without_qid_get_record_ids(synth):
    dm = _dm(sources.Synthetic(str(synth), *SYNTH))
    dm.setup("test")
    ds = dm.datasets["test"]
    rec = ds.records[0]
    assert ds.question_ids[: len(rec["vqa"])] == [f"{rec['study_id']}#{i}" for i in range(len(rec["vqa"]))]
    assert dm.vqa_options()["val_split"] == "dataset"


def test_held_out_val_is_image_level_seeded_and_order_free(tmp_path):
    root = make_vqa_rad_split(tmp_path)
    dm = _dm(VQARAD(root), val_fraction=0.5)
    dm.setup()
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert len(train) and len(val)
    train_images = {r["image"] for r in train.records}
    assert train_images.isdisjoint(r["image"] for r in val.records)
    assert len(train) + len(val) == 7 and len(dm.datasets["test"]) == 3  # the test split is untouched
    assert {r["split"] for r in VQARAD(root).records()} == {"train", "test"}  # the source is not modified
    assert dm.vqa_options()["val_split"] == "held out 0.5 of train, seed 0"

    again = _dm(VQARAD(root), val_fraction=0.5)
    again.setup("validate")
    assert again.datasets["val"].question_ids == val.question_ids
    reversed_source = Records(list(reversed(VQARAD(root).records())), VQARAD(root).image_root())
    shuffled = _dm(reversed_source, val_fraction=0.5)
    assert {r["study_id"] for r in shuffled.all_records() if r["split"] == "val"} == {r["study_id"]
                                                                                       for r in val.records}
    seeds = {frozenset(r["study_id"] for r in _dm(VQARAD(root), val_fraction=0.5, val_seed=s).all_records()
                       if r["split"] == "val") for s in range(4)}
    assert len(seeds) > 1  # the seed matters
    none = _dm(VQARAD(root), val_fraction=0.0)
    assert none.question_counts() == {"train": 7, "val": 0, "test": 3}


def test_no_hold_out_when_the_source_has_val(tmp_path):
    root = make_slake(tmp_path)
    dm = _dm(SLAKE(root), val_fraction=0.5)
    assert dm.question_counts() == {"train": 3, "val": 1, "test": 1}
    assert [r["study_id"] for r in dm.datasets["val"].records] == ["val/xmlab2"]
    assert dm.vqa_options() == {"closed_rule": "answer_type", "answer_vocabulary": "train split",
                                "answer_min_count": 1, "val_split": "dataset", "answer_normalization": "vqav2"}


def test_vocabulary_from_train_only_unless_leaking(tmp_path, caplog):
    root = make_vqa_rad_split(tmp_path)
    dm = _dm(VQARAD(root), val_fraction=0.5)
    dm.setup()
    vocab = dm.answer_vocabulary()
    assert set(vocab) == {s["answer"] for s in _samples(dm, "train")}  # not the held-out val answers
    assert "pneumothorax" in {s["answer"] for s in _samples(dm, "test")} and "pneumothorax" not in vocab
    with caplog.at_level(logging.WARNING, logger="medvl"):
        leaky = _dm(VQARAD(root), val_fraction=0.5, leak_test_answers_into_vocab=True)
    assert "leak_test_answers_into_vocab=True" in caplog.text
    leaked = leaky.answer_vocabulary()
    assert "pneumothorax" in leaked and set(vocab) < set(leaked)
    assert leaked == ["yes", "2", "axial", "brain", "left lung", "no", "pneumothorax", "right"]  # yes: 3 times
    assert leaky.vqa_options()["answer_vocabulary"] == "train+val+test splits (leaks test answers)"
    assert _dm(VQARAD(root), val_fraction=0.0, answer_min_count=2).answer_vocabulary() == []
    assert _dm(VQARAD(root), answer_min_count=2, leak_test_answers_into_vocab=True).answer_vocabulary() == ["yes"]


def test_closed_rule_switch(tmp_path):
    root = make_vqa_rad_split(tmp_path)
    kinds = {}
    for rule in ("answer_type", "yes_no"):
        dm = _dm(VQARAD(root), val_fraction=0.0, closed_rule=rule)
        dm.setup("fit")
        kinds[rule] = {s["question"]: s["answer_type"] for s in _samples(dm, "train")}
        assert dm.vqa_options()["closed_rule"] == rule
        assert ("axial" in dm.closed_candidates()) == (rule == "answer_type")
    axial = "Is this an axial or coronal image?"
    assert kinds["answer_type"][axial] == "closed" and kinds["yes_no"][axial] == "open"
    assert {q for q in kinds["answer_type"] if kinds["answer_type"][q] != kinds["yes_no"][q]} == {axial}
    with pytest.raises(ValueError, match="closed_rule"):
        VQADataModule(VQARAD(root), closed_rule="maybe")


def test_repeated_qids_are_made_unique(tmp_path):
    entries = {"trainset.json": [dict(e, qid=3) for e in VQA_RAD_SPLIT["trainset.json"][:3]],
               "testset.json": VQA_RAD_SPLIT["testset.json"]}
    dm = _dm(VQARAD(make_vqa_rad_split(tmp_path, entries)), val_fraction=0.0)
    dm.setup("fit")
    assert dm.datasets["train"].question_ids == ["3", "3~2", "3~3"]
    assert [s["question_id"] for s in _samples(dm, "train")] == ["3", "3~2", "3~3"]


def test_unreadable_images_and_bad_pairs_are_counted(tmp_path, caplog):
    root = make_vqa_rad_split(tmp_path)
    (root / "images" / "synpic100.jpg").write_bytes(b"not a jpeg")
    records = [dict(r) for r in VQARAD(root).records()]
    records[1] = {**records[1], "vqa": [*records[1]["vqa"], {"question": "", "answer": "x"},
                                        {"question": "What?", "answer": "the"}]}
    dm = _dm(Records(records, root / "images"), val_fraction=0.0)
    with caplog.at_level(logging.INFO, logger="medvl"):
        dm.setup()
    assert "train split: 5 questions kept, 4 dropped (unreadable image: 2, malformed question: 1, empty answer: 1)" \
        in caplog.text
    assert "test split: 2 questions kept, 1 dropped (unreadable image: 1)" in caplog.text
    assert dm.datasets["train"].dropped == {"unreadable image": 2, "malformed question": 1, "empty answer": 1}


def test_a_split_without_pairs_has_fewer_questions_and_no_pairs_at_all_is_an_error(tmp_path, synth):
    records = sources.Synthetic(str(synth), *SYNTH).records()
    train = [r["study_id"] for r in records if r["split"] == "train"]
    unasked = set(train[::2]) | {r["study_id"] for r in records if r["split"] == "val"}
    stripped = [{k: v for k, v in r.items() if not (k == "vqa" and r["study_id"] in unasked)} for r in records]
    dm = _dm(Records(stripped, synth))
    asked = sum(len(r["vqa"]) for r in records if r["split"] == "train" and r["study_id"] not in unasked)
    assert dm.question_counts() == {**_synthetic_counts(synth), "train": asked, "val": 0}
    assert len(dm.datasets["train"].records) == len(train) - len(train[::2])  # images without questions: not read
    assert dm.vqa_options()["val_split"] == "dataset"  # the source has val records, so nothing is held out
    with pytest.raises(ValueError, match=r"ROCO \(.*\) has no questions"):
        _dm(sources.ROCO(str(make_roco(tmp_path)))).setup()


def test_a_cache_serves_the_held_out_split(tmp_path):
    root = make_vqa_rad_split(tmp_path)
    plain = _dm(VQARAD(root), val_fraction=0.5)
    cached = _dm(VQARAD(root), val_fraction=0.5, preload=False, cache_dir=str(tmp_path / "cache"), cache_workers=0)
    cached.prepare_data()
    assert cached.question_counts() == plain.question_counts()
    assert cached.datasets["val"].question_ids == plain.datasets["val"].question_ids
    torch.testing.assert_close(cached.datasets["val"][0]["image"], plain.datasets["val"][0]["image"], atol=0.05,
                               rtol=0)


def test_pure_functions():
    records = [{"vqa": [{"question": "a", "answer": "Yes", "answer_type": "CLOSED"},
                        {"question": "b", "answer": "Left", "answer_type": "CLOSED"},
                        {"question": "c", "answer": "no", "answer_type": "CLOSED"},
                        {"question": "d", "answer": "yes.", "answer_type": "OPEN"}]},
               {"study_id": "no pairs"}]
    assert answer_vocabulary(records) == ["yes", "left", "no"]
    assert answer_vocabulary(records, min_count=2) == ["yes"]
    assert closed_candidates(records, "answer_type") == ["left", "no", "yes"]
    assert closed_candidates(records, "yes_no") == ["yes", "no"]
    with pytest.raises(ValueError, match="rule"):
        closed_candidates(records, "other")


VQA_YAML = {"vqa_rad": make_vqa_rad_split, "slake": make_slake, "pathvqa": make_pathvqa}


@pytest.mark.parametrize("name", [*VQA_YAML, "synthetic_vqa"])
def test_yaml_builds_a_vqa_data_module(tmp_path, synth, name):
    from jsonargparse import ArgumentParser

    if name == "synthetic_vqa":
        root, extra = synth, ["--data.init_args.source.init_args.n", str(SYNTH[0]),
                              "--data.init_args.source.init_args.seed", str(SYNTH[1])]
    else:
        root, extra = VQA_YAML[name](tmp_path), []
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningDataModule, "data")
    cfg = parser.parse_args(["--data", str(REPO / "datamodules" / f"{name}.yaml"),
                             "--data.init_args.source.init_args.root", str(root), *extra,
                             "--data.init_args.cache_dir", "null", "--data.init_args.img_size", "32"])
    dm = parser.instantiate(cfg).data
    assert isinstance(dm, VQADataModule) and dm.img_size == 32
    assert sum(dm.question_counts().values()) > 0
