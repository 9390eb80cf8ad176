"""A preprocessed, memory-mapped image cache: decode every study once, read it fast ever after.

``build_cache`` runs the deterministic prefix of the image pipeline
(:meth:`medvl.data.pipeline.ImagePipeline.load`: DICOM/PNG/JPEG decode with modality LUT,
VOI LUT or an explicit window, MONOCHROME1 inversion, colour to the encoder's channels,
longest-side resize and zero pad) once per item and stores the result as fixed-size
``uint8`` or ``uint16`` arrays in ``.npy`` shards that are opened with ``mmap_mode="r"``.
Training then costs one page-cache read per sample instead of a DICOM decode;
augmentation and normalisation run after the cache.

The layout of a cache folder::

    spec.json              the CacheSpec and its fingerprint (written first)
    shard_00000.npy        (n, C, S, S) uint8/uint16, row i = item i of the shard
    shard_00000.json       per-item status: ok, or skipped with the reason
    ...
    manifest.jsonl         one row per readable item: the source row's non-image fields,
                           its shard/row, and the sha256 of its source path (never the path)
    cache.json             summary, written last: the cache is complete when it exists

Guarantees:

* **Atomic**: every file is written to a temporary name in the same folder and moved
  into place with :func:`os.replace`; a shard counts as done only once its ``.json``
  exists, and that is written after its ``.npy``.
* **Resumable**: an interrupted build keeps its finished shards; running it again
  redoes only the missing ones.
* **Refuses mismatches**: a folder built with a different :class:`CacheSpec` or from a
  different list of sources raises :class:`CacheMismatchError` instead of mixing data.
* **Parallel**: shards are independent and built by a process pool, with a progress bar.
* **No identifying values**: pixels, the non-identifying manifest fields and hashes only;
  :attr:`medvl.data.DicomImage.meta` is not stored, source paths are stored as hashes.

:class:`CacheReader` reads a cache for :class:`medvl.data.dataset.ImageReportDataset`. It
opens shards lazily in whichever process touches them first, so it pickles into
data-loader workers and DDP processes cheaply and every process maps the same files
read-only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

import numpy as np

from medvl.data.dicom import DicomReadError

if TYPE_CHECKING:
    from medvl.data.pipeline import ImagePipeline

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CacheMismatchError",
    "CacheReader",
    "CacheSpec",
    "CacheSummary",
    "build_cache",
    "is_complete",
    "read_cache_manifest",
]

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 2
"""Bumped whenever the on-disk layout or the preprocessing code changes meaning."""

# Row fields never copied into the cache manifest: the image path is replaced by its hash.
_PATH_FIELDS = frozenset({"image", "images", "path"})
_NAMED_SKIPS = 20  # unreadable files named one by one on the console; the rest are counted by reason


class CacheMismatchError(ValueError):
    """A cache folder that was built with other parameters or from other sources."""


@dataclass(frozen=True)
class CacheSpec:
    """What a cache holds; two builds with equal specs produce identical shards.

    Attributes:
        img_size: Square side S; the longest image side is resized to S and the rest
            zero-padded (the same transform as the uncached path).
        dtype: ``uint8`` (4x smaller, 1/255 steps, ample for 8-bit display windows)
            or ``uint16`` (keeps 12-16-bit detail when the window is wide).
        window: ``None`` for each file's own VOI, a preset name (``"lung"``) or a
            ``(centre, width)`` pair in modality units that overrides it.
        shard_size: Items per shard: large enough for sequential reads, small enough
            that a resumed build loses little work.
        in_chans: Channels C of the stored images (colour folded to luma for 1).
        version: :data:`CACHE_FORMAT_VERSION` at build time.
    """

    img_size: int = 224
    dtype: Literal["uint8", "uint16"] = "uint8"
    window: tuple[float, float] | str | None = None
    shard_size: int = 512
    in_chans: int = 1
    version: int = CACHE_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.img_size < 1 or self.in_chans < 1:
            raise ValueError(f"img_size and in_chans must be >= 1, got {self.img_size} and {self.in_chans}")
        if self.dtype not in ("uint8", "uint16"):
            raise ValueError(f"dtype must be 'uint8' or 'uint16', got {self.dtype!r}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        if isinstance(self.window, list):  # JSON round trip
            object.__setattr__(self, "window", tuple(float(v) for v in self.window))

    @classmethod
    def for_pipeline(cls, pipeline: ImagePipeline, **kwargs: Any) -> CacheSpec:
        """The spec that stores ``pipeline``'s prefix (``dtype``/``shard_size`` in ``kwargs``)."""
        return cls(img_size=pipeline.img_size, in_chans=pipeline.in_chans, window=pipeline.window, **kwargs)

    def pipeline(self) -> ImagePipeline:
        """An image pipeline whose prefix is what this cache stores."""
        from medvl.data.pipeline import ImagePipeline

        return ImagePipeline(self.img_size, self.in_chans, self.window)

    @property
    def max_value(self) -> int:
        return 255 if self.dtype == "uint8" else 65535

    def fingerprint(self) -> str:
        """A short hash of every field; part of the folder's identity."""
        blob = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class CacheSummary:
    """What a build did.

    Attributes:
        out_dir: The cache folder.
        n_items: Items in the source list.
        n_cached: Items stored (readable).
        skipped: Reason -> count for unreadable items (they are not in the manifest).
        shards_built: Shards written by this call (the rest were already done).
        n_shards: Shards in the cache.
    """

    out_dir: Path
    n_items: int
    n_cached: int
    skipped: Counter = field(default_factory=Counter)
    shards_built: int = 0
    n_shards: int = 0

    def __str__(self) -> str:
        reasons = ", ".join(f"{r}: {n}" for r, n in self.skipped.most_common())
        skipped = sum(self.skipped.values())
        return (
            f"{self.out_dir}: {self.n_cached} of {self.n_items} items cached in {self.n_shards} "
            f"shard(s) ({self.shards_built} built now), {skipped} skipped"
            + (f" ({reasons})" if reasons else "")
        )


def path_hash(path: str | os.PathLike[str]) -> str:
    """sha256 of a source path as given in the manifest (relative, POSIX separators)."""
    return hashlib.sha256(Path(path).as_posix().encode("utf-8")).hexdigest()


def _sources_hash(records: Sequence[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for rec in records:
        h.update(path_hash(rec["image"]).encode())
        h.update(str(rec["study_id"]).encode() + b"\0")
    return h.hexdigest()[:16]


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=1, sort_keys=True), "utf-8"))


def _build_shard(
    shard: int, items: list[tuple[str, str]], out_dir: str, spec: CacheSpec
) -> tuple[int, list[dict[str, Any]]]:
    """Build one shard (in a worker process); return its per-item status list."""
    out = Path(out_dir)
    npy = out / f"shard_{shard:05d}.npy"
    status: list[dict[str, Any]] = []
    pipeline = spec.pipeline()
    shape = (len(items), spec.in_chans, spec.img_size, spec.img_size)

    def write(tmp: Path) -> None:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=spec.dtype, shape=shape)
        for row, (study_id, source) in enumerate(items):
            try:
                img = pipeline.load(source)  # (C, S, S) in [0, 1]
                arr[row] = np.rint(np.clip(img, 0.0, 1.0) * spec.max_value).astype(spec.dtype)
                status.append({"study_id": study_id, "ok": True})
            except DicomReadError as err:
                arr[row] = 0
                # The reason only: the path may itself carry identifiers (MRN folders).
                status.append({"study_id": study_id, "ok": False, "reason": err.reason})
        arr.flush()
        del arr

    _atomic_write(npy, write)
    _write_json(out / f"shard_{shard:05d}.json", {"fingerprint": spec.fingerprint(), "items": status})
    return shard, status


def _shard_done(out: Path, shard: int, spec: CacheSpec, study_ids: list[str]) -> list[dict] | None:
    """The status list of a finished shard that matches, else None."""
    meta, npy = out / f"shard_{shard:05d}.json", out / f"shard_{shard:05d}.npy"
    if not (meta.is_file() and npy.is_file()):
        return None
    try:
        info = json.loads(meta.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    items = info.get("items", [])
    if info.get("fingerprint") != spec.fingerprint() or [i["study_id"] for i in items] != study_ids:
        return None
    return items


def build_cache(
    records: Sequence[dict[str, Any]],
    image_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    spec: CacheSpec | None = None,
    *,
    num_workers: int | None = None,
    progress: bool = True,
) -> CacheSummary:
    """Preprocess every record's image into memory-mapped shards (resumable, atomic).

    Args:
        records: Manifest rows (``study_id``, ``image`` relative to ``image_root``,
            ``split`` and any text/label fields); see :mod:`medvl.data.dataset`.
        image_root: Folder the ``image`` paths are relative to.
        out_dir: Cache folder; created if needed.
        spec: Preprocessing parameters (defaults to :class:`CacheSpec`'s).
        num_workers: Processes for decoding; ``None`` uses every CPU, 0 stays in-process.
        progress: Show a progress bar.

    Returns:
        What was built and what was skipped.

    Raises:
        CacheMismatchError: ``out_dir`` holds a cache with another spec or other sources.
    """
    spec = spec or CacheSpec()
    out, root = Path(out_dir), Path(image_root)
    out.mkdir(parents=True, exist_ok=True)
    records = list(records)
    identity = {"spec": asdict(spec), "fingerprint": spec.fingerprint(), "sources": _sources_hash(records)}
    spec_file = out / "spec.json"
    if spec_file.is_file():
        old = json.loads(spec_file.read_text("utf-8"))
        if old.get("fingerprint") != identity["fingerprint"]:
            raise CacheMismatchError(
                f"{out}: cache was built with {old.get('spec')}, not {identity['spec']}; "
                "use another folder or delete this one"
            )
        if old.get("sources") != identity["sources"]:
            raise CacheMismatchError(
                f"{out}: cache was built from a different list of images; "
                "use another folder or delete this one"
            )
    else:
        _write_json(spec_file, identity)

    shards = [records[i : i + spec.shard_size] for i in range(0, len(records), spec.shard_size)]
    results: dict[int, list[dict]] = {}
    todo = []
    for i, chunk in enumerate(shards):
        done = _shard_done(out, i, spec, [str(r["study_id"]) for r in chunk])
        if done is not None:
            results[i] = done
        else:
            todo.append(i)

    def jobs(i: int) -> list[tuple[str, str]]:
        return [(str(r["study_id"]), str(root / r["image"])) for r in shards[i]]

    if todo:
        from rich.progress import Progress

        n_todo = sum(len(shards[i]) for i in todo)
        workers = (os.cpu_count() or 1) if num_workers is None else num_workers
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"caching {n_todo} images", total=n_todo)
            if workers <= 0 or len(todo) == 1:
                for i in todo:
                    results[i] = _build_shard(i, jobs(i), str(out), spec)[1]
                    bar.advance(task, len(shards[i]))
            else:
                import multiprocessing as mp

                # spawn, not fork: forking a process whose torch/OpenMP thread pools already
                # run can leave the children waiting forever on a lock held by a thread that
                # did not survive the fork. Each worker pays one import of torch and MONAI.
                ctx = mp.get_context("spawn")
                with ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx) as pool:
                    futures = [pool.submit(_build_shard, i, jobs(i), str(out), spec) for i in todo]
                    for fut in as_completed(futures):
                        i, status = fut.result()
                        results[i] = status
                        bar.advance(task, len(shards[i]))

    skipped: Counter = Counter()
    rows = []
    for i, chunk in enumerate(shards):
        for row, (rec, status) in enumerate(zip(chunk, results[i])):
            if not status["ok"]:
                skipped[status["reason"]] += 1
                if sum(skipped.values()) <= _NAMED_SKIPS:  # on the console only: the cache keeps no paths
                    log.warning("skipping %s (study %s): %s%s", root / rec["image"], rec["study_id"], status["reason"],
                                " (further unreadable files are counted, not named)"
                                if sum(skipped.values()) == _NAMED_SKIPS else "")
                continue
            entry = {k: v for k, v in rec.items() if k not in _PATH_FIELDS}
            entry.update(cache_shard=i, cache_row=row, source_sha256=path_hash(rec["image"]))
            rows.append(entry)
    _atomic_write(
        out / "manifest.jsonl",
        lambda p: p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8"),
    )
    summary = CacheSummary(out, len(records), len(rows), skipped, len(todo), len(shards))
    _write_json(
        out / "cache.json",
        {**identity, "n_items": len(records), "n_cached": len(rows), "n_shards": len(shards),
         "skipped": dict(skipped)},
    )
    if skipped:
        log.warning("%s", summary)
    return summary


def is_complete(out_dir: str | os.PathLike[str], spec: CacheSpec | None = None) -> bool:
    """True when ``out_dir`` holds a finished cache (with ``spec``, if given)."""
    info = Path(out_dir) / "cache.json"
    if not info.is_file():
        return False
    if spec is None:
        return True
    return json.loads(info.read_text("utf-8")).get("fingerprint") == spec.fingerprint()


def read_cache_manifest(out_dir: str | os.PathLike[str], *, split: str | None = None) -> list[dict]:
    """The rows of a finished cache, optionally of one split."""
    out = Path(out_dir)
    if not is_complete(out):
        raise CacheMismatchError(f"{out}: not a finished medvl cache (no cache.json); run `medvl prepare`")
    rows = []
    with (out / "manifest.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                if split is None or row.get("split") == split:
                    rows.append(row)
    return rows


class CacheReader:
    """Reads the images of a finished cache; pickles into worker processes without its maps.

    Args:
        cache_dir: A finished cache folder.
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = Path(cache_dir)
        info = json.loads((self.cache_dir / "spec.json").read_text("utf-8"))
        self.spec = CacheSpec(**info["spec"])
        self._shards: dict[int, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are per process: workers reopen the shards they touch.
        return {**self.__dict__, "_shards": {}}

    def check(self, pipeline: ImagePipeline) -> None:
        """Raises CacheMismatchError unless the cache stores ``pipeline``'s prefix."""
        want = CacheSpec.for_pipeline(pipeline, dtype=self.spec.dtype, shard_size=self.spec.shard_size)
        if want.fingerprint() != self.spec.fingerprint():
            raise CacheMismatchError(
                f"{self.cache_dir}: cache holds {self.spec} but the pipeline wants size {pipeline.img_size}, "
                f"{pipeline.in_chans} channel(s), window {pipeline.window}; use another cache folder"
            )

    def _shard(self, index: int) -> np.ndarray:
        arr = self._shards.get(index)
        if arr is None:
            arr = np.load(self.cache_dir / f"shard_{index:05d}.npy", mmap_mode="r")
            self._shards[index] = arr
        return arr

    def image(self, record: dict[str, Any]) -> np.ndarray:
        """The ``(C, S, S)`` float32 image in [0, 1] of a cache-manifest row."""
        raw = self._shard(int(record["cache_shard"]))[int(record["cache_row"])]
        return raw.astype(np.float32) * np.float32(1.0 / self.spec.max_value)
