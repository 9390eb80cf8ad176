"""Question-level VQA samples over image-level records, and the answer vocabulary.

The VQA readers (:mod:`medvl.data.formats`: VQA-RAD, SLAKE, PathVQA), the synthetic set
and medvl manifests give one record per image with its question-answer pairs in
``vqa``. :class:`VQADataset` serves one sample per *question*, while images are read,
preloaded or cached once per *image* by the machinery of
:class:`~medvl.data.dataset.ImageReportDataset`. Answers are compared after the VQAv2
normalisation (:func:`medvl.metrics.vqa.normalize_answer`; Antol et al., ICCV 2015),
and whether a question is closed follows an explicit rule
(:func:`medvl.metrics.vqa.is_closed`), so a results file can say which was used.

:func:`answer_vocabulary` and :func:`closed_candidates` are the pure functions a
classifier head's answer set and a closed-question scorer are built from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medvl.data.dataset import ImageReportDataset
from medvl.data.dicom import DicomReadError
from medvl.metrics.vqa import CLOSED_RULES, is_closed, normalize_answer

if TYPE_CHECKING:
    from medvl.data.cache import CacheReader
    from medvl.data.pipeline import ImagePipeline

__all__ = ["VQADataset", "answer_vocabulary", "closed_candidates", "iter_questions"]


def iter_questions(records: Iterable[dict[str, Any]], rule: str = "answer_type",
                   dropped: Counter[str] | None = None) -> Iterator[tuple[int, int, dict[str, Any], str, bool]]:
    """``(record index, question index, pair, normalised answer, closed)`` of every usable question.

    A record without ``vqa`` has no questions. A pair that is not a dict with a text
    question and an answer, or whose ``answer_type`` is neither closed nor open, is
    counted in ``dropped`` as ``"malformed question"``; one whose answer normalises to
    nothing (e.g. ``"the"``) as ``"empty answer"``.

    Args:
        records: Image-level records.
        rule: The closed/open rule of :func:`~medvl.metrics.vqa.is_closed`.
        dropped: Counter the left-out questions are added to.
    """
    for ri, rec in enumerate(records):
        for qi, pair in enumerate(rec.get("vqa") or ()):
            try:
                if not isinstance(pair, dict) or not str(pair.get("question") or "").strip():
                    raise ValueError("no question")
                raw = pair.get("answer")
                if raw is None or isinstance(raw, (dict, list, bool)):
                    raise ValueError("no answer")
                closed = is_closed(str(raw), pair.get("answer_type"), rule)
            except ValueError:
                if dropped is not None:
                    dropped["malformed question"] += 1
                continue
            answer = normalize_answer(str(raw))
            if not answer:
                if dropped is not None:
                    dropped["empty answer"] += 1
                continue
            yield ri, qi, pair, answer, closed


def _by_frequency(answers: Iterable[str], min_count: int = 1) -> list[str]:
    """Distinct answers seen at least ``min_count`` times, most frequent first, ties alphabetical."""
    counts = Counter(answers)
    return sorted((a for a, n in counts.items() if n >= min_count), key=lambda a: (-counts[a], a))


def answer_vocabulary(records: Iterable[dict[str, Any]], *, min_count: int = 1) -> list[str]:
    """The normalised answers of ``records``' questions, most frequent first, ties alphabetical.

    Args:
        records: Image-level records with ``vqa`` pairs (pass the training split only,
            unless a leak of evaluation answers is intended).
        min_count: Keep answers given at least this many times.

    Examples:
        >>> answer_vocabulary([{"vqa": [{"question": "q", "answer": "Yes"}, {"question": "r", "answer": "yes."},
        ...                             {"question": "s", "answer": "Left"}, {"question": "t", "answer": "no"}]}])
        ['yes', 'left', 'no']
    """
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    return _by_frequency((answer for *_, answer, _ in iter_questions(records)), min_count)


def closed_candidates(records: Iterable[dict[str, Any]], rule: str = "answer_type") -> list[str]:
    """The normalised answers of the closed questions (by ``rule``), most frequent first, ties alphabetical.

    Args:
        records: Image-level records with ``vqa`` pairs (the training split).
        rule: ``"answer_type"`` or ``"yes_no"`` (:func:`~medvl.metrics.vqa.is_closed`).
    """
    if rule not in CLOSED_RULES:
        raise ValueError(f"unknown closed/open rule {rule!r}; expected one of {CLOSED_RULES}")
    return _by_frequency(answer for *_, answer, closed in iter_questions(records, rule) if closed)


class VQADataset(ImageReportDataset):
    """One sample per question of image-level records; images read once per image.

    ``len`` is the number of questions. Images go through the parent's machinery
    (file, ``preload`` or ``cache``); preloading drops records whose image cannot be
    read (their questions are counted in :attr:`dropped` as ``"unreadable image"``),
    and the question index is built after it. Without preloading or a cache an image
    is decoded once per question, so small sets want ``preload=True``.

    A sample is ``{"image": (C, S, S) tensor, "question", "answer" (normalised),
    "answer_raw", "answer_type" ("closed"/"open" by ``closed_rule``), "question_type",
    "content_type" ("" when the dataset has none), "question_id", "study_id"}``; an
    unreadable image gives ``{"skipped": reason, "file": path}``, which
    :class:`~medvl.data.dataset.Collate` drops, counts and lists for the task.

    ``question_id`` is the question's ``qid`` when it has one, else
    ``"<study_id>#<question index>"``; a repeated id gets ``~2``, ``~3``, ... in
    record order, so the ids of a dataset are unique.

    Args:
        records: Image-level records with ``vqa`` pairs (one split).
        root: Folder the records' ``image`` paths are relative to (not needed with ``cache``).
        pipeline: The image pipeline.
        closed_rule: ``"answer_type"`` (the dataset's annotation, yes/no when absent) or
            ``"yes_no"`` (closed iff the normalised answer is yes or no).
        label_names: Passed to :class:`~medvl.data.dataset.ImageReportDataset`; unused by
            the samples.
        text_key: As ``label_names``.
        cache: A prepared cache holding the pipeline's prefix.
        preload: Run the image prefix on every image once, up front.
        progress: Show a progress bar while preloading.

    Attributes:
        dropped: Reason -> questions left out here (the source counts its own drops).
        question_ids: The samples' ``question_id`` in index order.
    """

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        root: str | Path | None = None,
        *,
        pipeline: ImagePipeline,
        closed_rule: str = "answer_type",
        label_names: Sequence[str] = (),
        text_key: str = "report",
        cache: CacheReader | None = None,
        preload: bool = False,
        progress: bool = True,
    ) -> None:
        if closed_rule not in CLOSED_RULES:
            raise ValueError(f"closed_rule must be one of {CLOSED_RULES}, got {closed_rule!r}")
        self.closed_rule = closed_rule
        self.dropped: Counter[str] = Counter()
        self._n_questions = {str(r["study_id"]): len(r.get("vqa") or ()) for r in records}
        # Images without questions are not decoded at all.
        kept = [r for r in records if r.get("vqa")]
        self.index: list[tuple[int, int, str, bool]] = []
        self.question_ids: list[str] = []
        super().__init__(kept, root, pipeline=pipeline, label_names=label_names, text_key=text_key, cache=cache,
                         preload=preload, progress=progress)
        self._build_index()

    def preload(self, progress: bool = True) -> None:
        """:meth:`ImageReportDataset.preload`, then the question index over the records kept."""
        super().preload(progress=progress)
        self._build_index()

    def _build_index(self) -> None:
        dropped: Counter[str] = Counter()
        unreadable = sum(self._n_questions.get(sid, 0) for sid in self.skipped)
        if unreadable:
            dropped["unreadable image"] = unreadable
        self.index, self.question_ids, seen = [], [], set()
        for ri, qi, pair, answer, closed in iter_questions(self.records, self.closed_rule, dropped):
            raw_qid = pair.get("qid")
            qid = ("" if raw_qid is None else str(raw_qid).strip()) or f"{self.records[ri]['study_id']}#{qi}"
            unique, k = qid, 1
            while unique in seen:
                k += 1
                unique = f"{qid}~{k}"
            seen.add(unique)
            self.index.append((ri, qi, answer, closed))
            self.question_ids.append(unique)
        self.dropped = dropped

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ri, qi, answer, closed = self.index[index]
        rec = self.records[ri]
        try:
            img = self.load_image(ri)
        except DicomReadError as e:
            return {"skipped": e.reason, "file": e.path}
        pair = rec["vqa"][qi]
        seed = self.augmentation_seed(index) if self.pipeline.augments else None
        return {
            "image": self.pipeline.finish(img, seed=seed),
            "question": str(pair["question"]),
            "answer": answer,
            "answer_raw": str(pair["answer"]),
            "answer_type": "closed" if closed else "open",
            "question_type": str(pair.get("question_type") or ""),
            "content_type": str(pair.get("content_type") or ""),
            "question_id": self.question_ids[index],
            "study_id": str(rec["study_id"]),
        }
