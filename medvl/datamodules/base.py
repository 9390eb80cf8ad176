"""The one LightningDataModule of image–text data: a record source composed with the loader options.

Every data module of medvl is an :class:`ImageTextDataModule`: a
:class:`~medvl.data.sources.RecordSource` says where the studies are (a manifest, the
synthetic set, MIMIC-CXR in its own layout, ...), and the options here say how they
become batches, once for every source: the image pipeline
(:class:`~medvl.data.pipeline.ImagePipeline`: size, channels, window, normalisation,
augmentation), the optional preprocessed cache, preloading and the loaders.

What the data is travels to the model: ``label_names``, ``img_size``, ``in_chans``,
``window``, ``image_mean`` and ``image_std`` are attributes that ``medvl``'s CLI links
into the model's arguments, and :meth:`check_model` lets a task verify them when it is
used outside the CLI. Tokenisation runs in the loader workers: the loaders collate with
the task's ``tokenizers()`` (:class:`~medvl.data.dataset.Collate`).

The same seed (``medvl fit --seed_everything N``) gives the same batches: the loaders
take the run's seed (:func:`~medvl.data.transforms.run_seed`) when they are built; the
training order and every sample's augmentation are pure functions of (seed, epoch,
index) (:class:`~medvl.data.dataset.EpochSampler`, whose ``set_epoch`` Lightning calls
before each training epoch and which passes the epoch on to the dataset), whatever
``num_workers`` is; the workers' global generators are seeded from (seed, rank, epoch,
worker id) (:class:`~medvl.data.dataset.SeedWorkers`). See "Determinism" in
:mod:`medvl.data.dataset` for what is bitwise and where. The batches being equal, two
CPU runs train to bitwise-equal weights on one machine with the same thread count
(``torch.get_num_threads()``: parallel reductions split their work by it); on GPUs some
kernels (atomics in scatter/index_add and some backward passes) are not deterministic
unless ``--trainer.deterministic true`` (``torch.use_deterministic_algorithms``).
Without ``--seed_everything`` LightningCLI draws a random seed (and saves it in the
run's ``config.yaml``), so only the same seed repeats a run.

The training loader is a :class:`~medvl.data.dataset.ResumableLoader`: its position in
the epoch is saved in every checkpoint, and a run resumed mid-epoch (``medvl fit ...
--ckpt_path last``) continues with the batch after the last one the checkpoint covers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from torch.utils.data import DataLoader

from medvl.data.cache import CacheMismatchError, CacheReader, CacheSpec, build_cache, is_complete, read_cache_manifest
from medvl.data.dataset import (Collate, EpochSampler, ImageReportDataset, ManifestError, ResumableLoader,
                                SeedWorkers)
from medvl.data.pipeline import ImagePipeline
from medvl.data.sources import RecordSource
from medvl.data.transforms import run_seed

__all__ = ["ImageTextDataModule"]

log = logging.getLogger(__name__)

TextKey = Literal["report", "findings", "impression"]
SPLITS = ("train", "val", "test")


class ImageTextDataModule(L.LightningDataModule):
    """Train/val/test loaders over a record source's ``split`` column.

    Args:
        source: Where the records come from (:mod:`medvl.data.sources`).
        img_size: Square input size (longest side resized, then zero-padded).
        in_chans: Image channels the encoder takes (colour folded to luma for 1).
        window: ``(centre, width)`` or a preset name overriding the DICOM files' own windows.
        image_mean: Normalisation mean of the [0, 1] grey levels (a number or one per channel).
        image_std: Normalisation std (a number or one per channel).
        batch_size: Samples per batch; contrastive losses want it as large as fits.
        num_workers: Data-loader worker processes (0 loads in the main process).
        text_key: Record field used as the text: ``report``, ``findings`` or ``impression``.
        label_names: Label columns, in order; None: the source's. A name the data does not
            have is an error at set-up.
        augment: Albumentations augmentation on the training split (after the cache).
        preload: Run the deterministic image preprocessing once at set-up and keep the
            result in memory (small datasets).
        cache_dir: Preprocessed cache folder (:mod:`medvl.data.cache`). Built by
            ``prepare_data`` (rank 0 only) when absent, resumed when interrupted, refused
            when built with another size, channels, dtype or window; then every process
            reads the memory-mapped shards.
        cache_dtype: ``uint8`` or ``uint16`` pixels in the cache.
        cache_workers: Processes that build the cache (None: all cores).
    """

    def __init__(
        self,
        source: RecordSource,
        img_size: int = 224,
        in_chans: int = 1,
        window: tuple[float, float] | str | None = None,
        image_mean: float | list[float] = 0.5,
        image_std: float | list[float] = 0.25,
        batch_size: int = 64,
        num_workers: int = 0,
        text_key: TextKey = "report",
        label_names: list[str] | None = None,
        augment: bool = True,
        preload: bool = False,
        cache_dir: str | None = None,
        cache_dtype: Literal["uint8", "uint16"] = "uint8",
        cache_workers: int | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.img_size, self.in_chans = img_size, in_chans
        self.image_mean, self.image_std = image_mean, image_std
        self.batch_size, self.num_workers, self.text_key = batch_size, num_workers, text_key
        self.augment, self.preload = augment, preload
        self.cache_dir, self.cache_dtype, self.cache_workers = cache_dir, cache_dtype, cache_workers
        self._pipeline = ImagePipeline(img_size, in_chans, window, image_mean, image_std)  # checks the values
        self.window = self._pipeline.window
        self.label_names: list[str] = list(label_names) if label_names is not None else source.label_names()
        self.datasets: dict[str, ImageReportDataset] = {}
        self._checked = False

    # -- what the data is -----------------------------------------------------------------

    def pipeline(self, split: str) -> ImagePipeline:
        """The image pipeline of a split (augmentation on the training split only)."""
        return ImagePipeline(self.img_size, self.in_chans, self.window, self.image_mean, self.image_std,
                             augment=self.augment and split == "train")

    def preprocessing(self) -> dict[str, Any]:
        """The preprocessing record (as in an export's ``config.json``) of the evaluation pipeline."""
        return self._pipeline.preprocessing()

    def check_model(self, model: Any) -> None:
        """Raises ValueError when ``model``'s data-linked arguments disagree with this data module."""
        hp = getattr(model, "hparams", {})
        mine = {"img_size": self.img_size, "in_chans": self.in_chans, "image_mean": self.image_mean,
                "image_std": self.image_std, "label_names": self.label_names}
        wrong = {k: (hp[k], v) for k, v in mine.items() if hp.get(k) is not None and hp[k] != v}
        if wrong:
            lines = "; ".join(f"{k}: model {m!r}, data {d!r}" for k, (m, d) in wrong.items())
            raise ValueError(f"{type(model).__name__} and {type(self).__name__} disagree: {lines}")

    def _check_labels(self) -> None:
        if self._checked:
            return
        present: set[str] = set()
        for rec in self.source.records():
            present.update(rec.get("labels") or {})
        if self.source.default_label_names is not None:
            present.update(self.source.default_label_names)
        missing = [n for n in self.label_names if n not in present]
        if missing:
            raise ValueError(
                f"label_names {missing} are not labels of this data ({type(self.source).__name__} has "
                f"{sorted(present) or 'no labels'}); requested: {self.label_names}"
            )
        self._checked = True

    # -- records, cache, datasets ----------------------------------------------------------

    def all_records(self) -> list[dict[str, Any]]:
        """Every record of the dataset (all splits), in the medvl manifest schema."""
        return self.source.records()

    def train_texts(self) -> list[str]:
        """The training split's texts (``text_key``), e.g. to build a report vocabulary."""
        return [str(r.get(self.text_key) or "") for r in self.all_records() if r["split"] == "train"]

    def cache_spec(self) -> CacheSpec:
        """The preprocessing the cache must have been built with."""
        return CacheSpec.for_pipeline(self._pipeline, dtype=self.cache_dtype)

    def prepare_data(self) -> None:
        """Make the data exist and build (or resume) the cache; Lightning calls this on rank 0."""
        self.source.prepare()
        if self.cache_dir and not is_complete(self.cache_dir, self.cache_spec()):
            summary = build_cache(self.all_records(), self.source.image_root(), self.cache_dir, self.cache_spec(),
                                  num_workers=self.cache_workers)
            log.warning("cache: %s", summary)

    def _new_dataset(self, records: list[dict[str, Any]], root: Any, **kwargs: Any) -> ImageReportDataset:
        """The dataset of one split's records (a hook: :class:`~medvl.datamodules.VQADataModule` serves questions)."""
        return ImageReportDataset(records, root, **kwargs)

    def _cached_rows(self, split: str) -> list[dict[str, Any]]:
        """The finished cache's rows of ``split`` (a hook for data modules that assign splits themselves)."""
        return read_cache_manifest(self.cache_dir, split=split)

    def _dataset(self, split: str) -> ImageReportDataset:
        if split in self.datasets:
            return self.datasets[split]
        self._check_labels()
        rows = [r for r in self.all_records() if r["split"] == split]
        common = dict(pipeline=self.pipeline(split), label_names=self.label_names, text_key=self.text_key)
        if self.cache_dir:
            if not is_complete(self.cache_dir, self.cache_spec()):
                raise CacheMismatchError(f"{self.cache_dir}: no finished cache with {self.cache_spec()}; "
                                         "call prepare_data() or run `medvl prepare` first")
            ds = self._new_dataset(self._cached_rows(split), None, cache=CacheReader(self.cache_dir), **common)
        else:
            ds = self._new_dataset(rows, self.source.image_root(), preload=self.preload, **common)
        dropped = len(rows) - len(ds.records)  # records, also where an item is less (a question)
        log.info("%s split: %d studies found, %d dropped as unreadable", split, len(rows), dropped)
        if dropped:
            log.warning("%s: %d studies, %d dropped as unreadable", split, len(rows), dropped)
        self.datasets[split] = ds
        return ds

    def setup(self, stage: str | None = None) -> None:
        log.info("%s: %s", type(self.source).__name__, self.source.summary())
        if self.trainer is not None and self.trainer.lightning_module is not None:
            self.check_model(self.trainer.lightning_module)
        splits = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["test"]}
        for split in splits.get(stage, list(SPLITS)):
            self._dataset(split)

    # -- loaders ------------------------------------------------------------------------------

    def collate(self) -> Collate:
        """Collation with the attached task's tokenizers (``task.tokenizers()``), if any."""
        task = self.trainer.lightning_module if self.trainer is not None else None
        tokenizers = task.tokenizers() if task is not None and hasattr(task, "tokenizers") else {}
        return Collate(tokenizers)

    def _check_texts(self, split: str) -> None:
        """A task that reads the text (its ``text_fields`` name ``"report"``) must get one in every record.

        Raises:
            ManifestError: A record whose ``text_key`` field is missing, null or blank,
                naming the manifest file and line when the source is a manifest (else the
                source and the study), and how many records of the split lack it.
        """
        task = self.trainer.lightning_module if self.trainer is not None else None
        if "report" not in getattr(task, "text_fields", ()):
            return
        records = self._dataset(split).records
        missing = [r for r in records if not str(r.get(self.text_key) or "").strip()]
        if not missing:
            return
        sid = str(missing[0]["study_id"])
        where = f"{type(self.source).__name__} study {sid!r}"
        path = getattr(self.source, "path", None)
        if path is not None and Path(path).is_file():
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if f'"{sid}"' in line and str(json.loads(line).get("study_id")) == sid:
                        where = f"{path}:{lineno}"
                        break
        raise ManifestError(
            f"{where}: no {self.text_key!r} text ({len(missing)} of the {len(records)} {split} records lack it); "
            f"{type(task).__name__} trains on it: fill it in, drop those rows, or choose another text_key")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        """A loader seeded from the run's seed (read now: ``seed_everything`` comes first).

        The shuffled (training) loader can resume mid-epoch (:class:`~medvl.data.dataset.ResumableLoader`).
        """
        self._check_texts(split)
        dataset = self._dataset(split)
        seed = run_seed()
        dataset.seed = seed  # the augmentation's base seed, the same in every worker
        rank = self.trainer.global_rank if self.trainer is not None else 0
        workers = SeedWorkers(seed, rank)
        sampler = EpochSampler(dataset, seed=seed) if shuffle else None
        world = self.trainer.world_size if self.trainer is not None else 1
        if sampler is not None and world > 1:
            # Shard the order here, by interleaving: rank r takes positions r, r + P, ... of it, so that
            # the P ranks' batches at step b are together the one-process batch b at P x batch_size.
            # Lightning's wrapper (a DistributedSampler shuffles every training loader) would permute the
            # order once more; drop_last: floor(n / P) per rank, the one-process number of batches.
            sampler = DistributedSamplerWrapper(sampler, num_replicas=world, rank=rank, shuffle=False, drop_last=True)
        loader = ResumableLoader if shuffle else DataLoader
        return loader(
            dataset, batch_size=self.batch_size, sampler=sampler,
            drop_last=shuffle, num_workers=self.num_workers, collate_fn=self.collate(),
            persistent_workers=self.num_workers > 0, worker_init_fn=workers, generator=workers.generator(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
