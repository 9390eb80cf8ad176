"""Image loading throughput: MONAI's DICOM pipeline vs medvl's reader vs medvl's cache.

All three paths turn the same DICOM files into (1, S, S) float32 training inputs, in the
same process, one after the other:

  (a) MONAI  ``LoadImage(reader="PydicomReader")`` + ``EnsureChannelFirst`` +
      ``ScaleIntensity`` + ``Resize``  (the usual MONAI recipe)
  (b) medvl  ``ImagePipeline`` (modality LUT, VOI LUT, MONOCHROME1, resize/pad, normalise)
  (c) medvl  ``ImageReportDataset`` over a ``medvl prepare`` cache of the same files

The one-off cost of building the cache is printed too. Run::

    .venv/bin/python benchmarks/data.py               # 200 synthetic studies, S = 224
    .venv/bin/python benchmarks/data.py --n 500 --size 256 --manifest data/synthetic_cxr/manifest.jsonl
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def _rate(fn, items, *, min_seconds: float = 2.0) -> tuple[float, int]:
    """Images/s of ``fn`` over ``items``, repeating passes until ``min_seconds`` have elapsed."""
    fn(items[0])  # warm-up: imports, decoder plugins, page cache
    done, t0 = 0, time.perf_counter()
    while True:
        for item in items:
            fn(item)
        done += len(items)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return done / elapsed, done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", default=None, help="medvl manifest (default: generate a synthetic set)")
    p.add_argument("--n", type=int, default=200, help="files to use (default: %(default)s)")
    p.add_argument("--size", type=int, default=224, help="output side S (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, as in one data-loader worker (default: %(default)s)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")  # MONAI's optional-GPU-codec notices
    with tempfile.TemporaryDirectory(prefix="medvl-bench-data-") as tmp:
        _run(a, Path(tmp))


def _run(a: argparse.Namespace, tmp: Path) -> None:
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Resize, ScaleIntensity

    from medvl.data.cache import CacheReader, CacheSpec, build_cache, read_cache_manifest
    from medvl.data.dataset import ImageReportDataset, read_manifest
    from medvl.data.dicom import read_image
    from medvl.data.pipeline import ImagePipeline

    if a.manifest is None:
        from medvl.data.synth import generate_dataset

        manifest = generate_dataset(tmp / "synthetic", n=a.n, seed=0, progress=False)
    else:
        manifest = Path(a.manifest)
    rows = read_manifest(manifest)[: a.n]
    root = manifest.parent
    paths = [str(root / r["image"]) for r in rows]
    shapes = [read_image(q).pixels.shape for q in paths[:50]]
    print(f"{len(paths)} DICOM files from {manifest} (e.g. {shapes[0]}, up to {max(shapes)}); output 1x{a.size}x{a.size}; "
          f"torch threads {a.threads}")

    monai_pipe = Compose([
        LoadImage(reader="PydicomReader", image_only=True),
        EnsureChannelFirst(),
        ScaleIntensity(),
        Resize((a.size, a.size)),
    ])
    pipeline = ImagePipeline(a.size)

    def monai_load(path: str) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(monai_pipe(path))

    def medvl_load(path: str) -> np.ndarray:
        return pipeline.finish(pipeline.load(path)).numpy()

    # Same output shape from both uncached paths, so they do the same amount of work.
    assert monai_load(paths[0]).shape == medvl_load(paths[0]).shape == (1, a.size, a.size)

    results = {}
    results["MONAI LoadImage(PydicomReader)+ScaleIntensity+Resize"] = _rate(monai_load, paths)
    results["medvl ImagePipeline (read, resize, normalise)"] = _rate(medvl_load, paths)

    cache = tmp / "cache"
    t0 = time.perf_counter()
    summary = build_cache(rows, root, cache, CacheSpec.for_pipeline(pipeline), num_workers=0, progress=False)
    build_s = time.perf_counter() - t0
    ds = ImageReportDataset(read_cache_manifest(cache), cache=CacheReader(cache), pipeline=pipeline, label_names=())
    results["medvl cache (uint8 memmap shards)"] = _rate(lambda i: ds[i]["image"], list(range(len(ds))))

    base = results["MONAI LoadImage(PydicomReader)+ScaleIntensity+Resize"][0]
    print(f"\n{'pipeline':<56} {'images/s':>10} {'vs MONAI':>9}")
    for name, (rate, n) in results.items():
        print(f"{name:<56} {rate:>10.1f} {rate / base:>8.2f}x")
    print(f"\ncache build (one-off, 1 process): {build_s:.1f} s for {summary.n_cached} images "
          f"({summary.n_cached / build_s:.1f} images/s)")
    cache_rate = results["medvl cache (uint8 memmap shards)"][0]
    print(f"ratio cache / MONAI = {cache_rate / base:.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
