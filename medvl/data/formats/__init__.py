"""Public datasets in their official on-disk layouts: one source class and one reader each.

One module per layout. Its source class (a :class:`LayoutSource`, e.g. :class:`MIMICCXR`)
holds the layout's options, typed and documented once, and reads the dataset on first
use; its ``read_<name>(root, **options)`` is ``<Class>(root, **options).result()``. Both
give a :class:`FormatResult`: ``records`` in the manifest schema of
:mod:`medvl.data.dataset` (``study_id``, ``image`` relative to ``image_root``,
``split`` in train/val/test, text fields ``report``/``findings``/``impression``/
``indication``/``comparison`` where the dataset has them, ``labels`` as
``{name: 1 | 0 | -1}`` with absent = not mentioned, ``vqa`` as a list of
``{question, answer, answer_type: "closed" | "open"}``), the ``image_root``, and
``dropped``, a :class:`collections.Counter` of reason -> count.
:meth:`FormatResult.summary` reads "found N, dropped M (reason: k, ...)". The image-text
sources are also :mod:`medvl.data.sources`, where data modules take them from.

=================  ========================  ===========================================  ==============
source             reader                    layout                                       records
=================  ========================  ===========================================  ==============
:class:`MIMICCXR`  :func:`read_mimic_cxr`    MIMIC-CXR-JPG / MIMIC-CXR (DICOM) + reports  study or image
:class:`CheXpert`  :func:`read_chexpert`     CheXpert-v1.0(-small) train.csv / valid.csv  image
:class:`IUXray`    :func:`read_iu_xray`      NLMCXR_reports.tgz (or ecgen-radiology/)     report or image
:class:`ROCO`      :func:`read_roco`         roco-dataset data/{train,validation,test}/   image
:class:`PMCOA`     :func:`read_pmc_oa`       PMC-OA train/valid/test.jsonl, pmc_oa.jsonl  image
:class:`VQARAD`    :func:`read_vqa_rad`      VQA_RAD Dataset Public.json, or trainset/    image (+ vqa)
                                             testset.json + images/ (MEVF/MMQ split)
:class:`SLAKE`     :func:`read_slake`        Slake1.0/{train,validate|validation,test}    image (+ vqa)
                                             .json + imgs/
:class:`PathVQA`   :func:`read_pathvqa`      pvqa/qas/{train,val,test}/*_qa.pkl           image (+ vqa)
:class:`Table`     :func:`read_table`        your CSV / TSV / JSONL                       row
=================  ========================  ===========================================  ==============

VQA datasets give one record per image (and split) with all its question-answer
pairs in ``vqa``; their ``dropped`` counts questions (``FormatResult.unit``).
Datasets without an official split (IU X-ray, PMC-OA without its split files, a
table without a split column) are split by :func:`hash_split`, a seeded hash of the
record id that does not depend on file order.

Robustness policy, the same in every layout (``on_error`` and ``check_files`` are options of
every source, see :class:`LayoutSource`):

* **Missing required file** (split table, captions file, JSON, image folder):
  :class:`MissingFileError` (a :class:`~medvl.data.dataset.ManifestError` and a
  :class:`FileNotFoundError`) naming every path tried.
* **Malformed row** (bad label value, missing column, unknown split, unparseable
  JSON line or XML file, duplicate id): :class:`~medvl.data.dataset.ManifestError`
  whose message names the file, the line/row/entry and the reason
  (``on_error="raise"``, the default); with ``on_error="skip"`` the row is left out
  and counted under a short reason (``"malformed row"``, ``"duplicate id"``, ...).
  A table whose header lacks a required column raises either way.
* **Image path outside the dataset root** (absolute, or climbing with ``..``): a
  malformed row, counted as ``"path outside root"`` when skipping. The check is
  lexical, so a dataset folder that is a symbolic link is fine.
* **Missing image file**: counted as ``"missing image"`` and left out when
  ``check_files=True`` (the default); ``check_files=False`` skips the file-system
  checks (the data loader then skips and counts unreadable files).
* **Deliberate filters** (views, language, studies without the requested report
  section) are counted too (``"not frontal"``, ``"language zh"``, ``"no findings
  section"``), so the summary accounts for every row.

Messages name files, line numbers and reasons, never report text or DICOM header
values.
"""

from medvl.data.formats._base import (
    CHEXPERT_COLUMNS,
    Collector,
    FormatResult,
    LayoutSource,
    MissingFileError,
    RecordSource,
    VqaGroups,
    apply_uncertainty,
    hash_split,
    inside_root,
    normalize_split,
    parse_label,
)
from medvl.data.formats.chexpert import CheXpert, read_chexpert
from medvl.data.formats.iu_xray import IUXray, read_iu_xray
from medvl.data.formats.mimic_cxr import MIMICCXR, read_mimic_cxr
from medvl.data.formats.pathvqa import PathVQA, read_pathvqa
from medvl.data.formats.pmc_oa import PMCOA, read_pmc_oa
from medvl.data.formats.roco import ROCO, read_roco
from medvl.data.formats.slake import SLAKE, read_slake
from medvl.data.formats.table import Table, read_table
from medvl.data.formats.vqa_rad import VQARAD, read_vqa_rad

__all__ = [
    "CHEXPERT_COLUMNS",
    "CheXpert",
    "Collector",
    "FormatResult",
    "IUXray",
    "LayoutSource",
    "MIMICCXR",
    "MissingFileError",
    "PMCOA",
    "PathVQA",
    "ROCO",
    "RecordSource",
    "SLAKE",
    "Table",
    "VQARAD",
    "VqaGroups",
    "apply_uncertainty",
    "hash_split",
    "inside_root",
    "normalize_split",
    "parse_label",
    "read_chexpert",
    "read_iu_xray",
    "read_mimic_cxr",
    "read_pathvqa",
    "read_pmc_oa",
    "read_roco",
    "read_slake",
    "read_table",
    "read_vqa_rad",
]
