"""Visual question answering data: question-level loaders over a VQA record source.

:class:`VQADataModule` is :class:`~medvl.datamodules.ImageTextDataModule` (the same
source, image pipeline, cache, preloading and loaders) whose datasets are
:class:`~medvl.data.vqa.VQADataset`: one sample per question, images read once per
image. What makes medical VQA numbers hard to compare is written down as options here
and returned by :meth:`VQADataModule.vqa_options` for the results file: the
closed/open rule, where the answer vocabulary comes from (and whether it leaks test
answers), the answer normalisation, and where the validation split comes from.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Literal

from medvl.data.cache import read_cache_manifest
from medvl.data.formats import hash_split
from medvl.data.sources import RecordSource
from medvl.data.vqa import VQADataset, answer_vocabulary, closed_candidates, iter_questions
from medvl.datamodules.base import SPLITS, ImageTextDataModule
from medvl.metrics.vqa import CLOSED_RULES

__all__ = ["VQADataModule"]

log = logging.getLogger(__name__)

ClosedRule = Literal["answer_type", "yes_no"]


class VQADataModule(ImageTextDataModule):
    """Question-level train/val/test loaders over a VQA source (VQA-RAD, SLAKE, PathVQA, synthetic, manifest).

    A sample is the :class:`~medvl.data.vqa.VQADataset` dict (``image``, ``question``,
    ``answer`` normalised, ``answer_raw``, ``answer_type``, ``question_type``,
    ``content_type``, ``question_id``, ``study_id``). Only records with ``vqa`` pairs are
    used; a source with none raises ValueError at set-up.

    Args:
        source: A record source whose records carry ``vqa`` pairs.
        closed_rule: Which questions count as closed. ``answer_type`` (default): the
            dataset's own CLOSED/OPEN annotation (yes/no where it has none, as in
            PathVQA), the rule VQA-RAD and SLAKE results are reported under;
            ``yes_no``: closed iff the normalised answer is yes or no, the usual PathVQA
            rule, which makes e.g. "axial or coronal?" open.
        answer_min_count: Keep answers given at least this many times in the vocabulary
            (default 1: every training answer, so no training question is unanswerable;
            raise it to drop the long tail of one-off answers).
        leak_test_answers_into_vocab: Build the answer vocabulary from the train, val and
            test splits instead of train only (default False). Some published
            repositories do this, which lets a classifier answer test questions whose
            answer never occurs in training and inflates open accuracy; set it only to
            reproduce them. A warning is logged and :meth:`vqa_options` records it.
        val_fraction: Share of the training images held out as ``val`` when the source
            has no ``val`` records (VQA-RAD has none; default 0.1). The hold-out is
            image-level and seeded: ``blake2b`` of the record's ``study_id``, as in
            :func:`~medvl.data.formats.hash_split`, so it never depends on file order.
            Not applied when the source has a val split (SLAKE, PathVQA, synthetic).
        val_seed: Seed of that hold-out (default 0).
        **kwargs: The loader options of :class:`ImageTextDataModule` (``img_size``,
            ``batch_size``, ``preload``, ``cache_dir``, ...).
    """

    def __init__(
        self,
        source: RecordSource,
        closed_rule: ClosedRule = "answer_type",
        answer_min_count: int = 1,
        leak_test_answers_into_vocab: bool = False,
        val_fraction: float = 0.1,
        val_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if closed_rule not in CLOSED_RULES:
            raise ValueError(f"closed_rule must be one of {CLOSED_RULES}, got {closed_rule!r}")
        if answer_min_count < 1:
            raise ValueError(f"answer_min_count must be at least 1, got {answer_min_count}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        super().__init__(source, **kwargs)
        self.closed_rule, self.answer_min_count = closed_rule, answer_min_count
        self.leak_test_answers_into_vocab = leak_test_answers_into_vocab
        self.val_fraction, self.val_seed = val_fraction, val_seed
        self._records: list[dict[str, Any]] | None = None
        self._val_from_dataset: bool | None = None
        if leak_test_answers_into_vocab:
            log.warning("leak_test_answers_into_vocab=True: the answer vocabulary includes the val and test "
                        "answers, so test questions with unseen answers become answerable; scores are not "
                        "comparable with train-only vocabularies")

    # -- records and splits -----------------------------------------------------------------

    def all_records(self) -> list[dict[str, Any]]:
        """The source's records that carry questions, with the held-out ``val`` split applied.

        Raises:
            ValueError: No record of the source has a ``vqa`` pair.
        """
        if self._records is None:
            records = [r for r in self.source.records() if r.get("vqa")]
            if not records:
                where = getattr(self.source, "root", None) or getattr(self.source, "path", None)
                at = f" ({where})" if where is not None else ""
                raise ValueError(f"{type(self.source).__name__}{at} has no questions: none of its "
                                 f"{len(self.source.records())} records carries `vqa` pairs; VQADataModule needs a "
                                 "VQA source (VQARAD, SLAKE, PathVQA, Synthetic or a manifest with vqa)")
            self._val_from_dataset = any(r["split"] == "val" for r in self.source.records())
            if not self._val_from_dataset:
                records = [self._hold_out(r) for r in records]
            self._records = records
        return self._records

    def _hold_out(self, record: dict[str, Any]) -> dict[str, Any]:
        """``record``, moved to ``val`` when it is a training image the seeded hash holds out."""
        if record["split"] != "train" or self.val_fraction == 0:
            return record
        fractions = (1.0 - self.val_fraction, self.val_fraction, 0.0)
        if hash_split(str(record["study_id"]), seed=self.val_seed, fractions=fractions) == "val":
            return {**record, "split": "val"}
        return record

    def _split_records(self, split: str) -> list[dict[str, Any]]:
        return [r for r in self.all_records() if r["split"] == split]

    def _val_origin(self) -> str:
        self.all_records()
        return "dataset" if self._val_from_dataset else f"held out {self.val_fraction} of train, seed {self.val_seed}"

    def _cached_rows(self, split: str) -> list[dict[str, Any]]:
        # The split is this module's (after the hold-out), whoever built the cache.
        splits = {str(r["study_id"]): r["split"] for r in self.all_records()}
        return [{**r, "split": split} for r in read_cache_manifest(self.cache_dir)
                if splits.get(str(r["study_id"])) == split]

    # -- what the answers are ---------------------------------------------------------------

    def answer_vocabulary(self) -> list[str]:
        """Normalised answers, most frequent first (ties alphabetical), given ``answer_min_count`` times.

        From the training split (after the hold-out), or every split with
        ``leak_test_answers_into_vocab``.
        """
        records = self.all_records() if self.leak_test_answers_into_vocab else self._split_records("train")
        return answer_vocabulary(records, min_count=self.answer_min_count)

    def closed_candidates(self) -> list[str]:
        """Normalised answers of the training split's closed questions (by ``closed_rule``), most frequent first."""
        return closed_candidates(self._split_records("train"), self.closed_rule)

    def train_questions(self) -> list[tuple[str, str]]:
        """``(question, normalised answer)`` of every training question (after the hold-out),
        e.g. to build a generative head's word vocabulary."""
        return [(str(pair["question"]), answer)
                for _, _, pair, answer, _ in iter_questions(self._split_records("train"), self.closed_rule)]

    def vqa_options(self) -> dict[str, Any]:
        """The choices a results file must record to make its numbers reproducible."""
        vocab = "train+val+test splits (leaks test answers)" if self.leak_test_answers_into_vocab else "train split"
        return {
            "closed_rule": self.closed_rule,
            "answer_vocabulary": vocab,
            "answer_min_count": self.answer_min_count,
            "val_split": self._val_origin(),
            "answer_normalization": "vqav2",
        }

    def question_counts(self) -> dict[str, int]:
        """Questions per split as the loaders serve them (builds the datasets not yet built)."""
        return {split: len(self._dataset(split)) for split in SPLITS}

    # -- datasets -----------------------------------------------------------------------------

    def _new_dataset(self, records: list[dict[str, Any]], root: Any, **kwargs: Any) -> VQADataset:
        return VQADataset(records, root, closed_rule=self.closed_rule, **kwargs)

    def _dataset(self, split: str) -> VQADataset:
        if split in self.datasets:
            return self.datasets[split]  # type: ignore[return-value]
        ds = super()._dataset(split)
        assert isinstance(ds, VQADataset)
        dropped = Counter(ds.dropped)
        present = {str(r["study_id"]) for r in ds.records} | set(ds.skipped)
        lost = sum(len(r["vqa"]) for r in self._split_records(split) if str(r["study_id"]) not in present)
        if lost:  # images left out of the cache as unreadable
            dropped["unreadable image"] += lost
        reasons = ", ".join(f"{k}: {v}" for k, v in dropped.most_common() if v)
        log.info("%s split: %d questions kept, %d dropped%s", split, len(ds), sum(dropped.values()),
                 f" ({reasons})" if reasons else "")
        return ds
