"""``benchmarks/pretrain.py`` without running a trainer: the CSV + PNG export and the matched towers."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_pretrain", ROOT / "benchmarks" / "pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    from medvl.data.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("synth"), n=12, seed=0, workers=1, progress=False)


def test_export_writes_open_clip_csv_layout(bench, manifest, tmp_path):
    from PIL import Image

    from medvl.data.dataset import read_manifest
    from medvl.data.pipeline import ImagePipeline

    train = [r for r in read_manifest(manifest) if r["split"] == "train"]
    path = bench.export_open_clip_csv(manifest, tmp_path / "oc", rows=len(train) + 3)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))  # open_clip_train's default --csv-separator
    assert list(rows[0]) == ["filepath", "title"]
    assert len(rows) == len(train) + 3  # cycles through the split
    assert rows[len(train)]["filepath"] == rows[0]["filepath"]
    for row, rec in zip(rows, train):
        assert row["title"] == " ".join(rec["report"].split())  # one line, same words
        img = Image.open(row["filepath"])
        assert img.mode == "L" and img.size == (bench.IMG_SIZE, bench.IMG_SIZE)
    # the PNG is medvl's deterministic preprocessing of the DICOM file, to 8 bits
    want = ImagePipeline(bench.IMG_SIZE, 1).load(str(manifest.parent / train[0]["image"]))[0]
    got = np.asarray(Image.open(rows[0]["filepath"]), dtype=np.float32) / 255.0
    assert np.abs(got - want).max() <= 0.5 / 255 + 1e-6


def test_export_reads_back_with_pandas_as_open_clip_does(bench, manifest, tmp_path):
    pd = pytest.importorskip("pandas", reason="pandas comes with open_clip_torch[training] (the [bench] extra)")
    path = bench.export_open_clip_csv(manifest, tmp_path / "oc", rows=5)
    df = pd.read_csv(path, sep="\t")  # open_clip_train.data.CsvDataset
    assert len(df) == 5 and df["title"].str.len().min() > 0


def test_open_clip_config_matches_medvl_towers(bench):
    cfg = bench.open_clip_config()
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    assert (v["width"], v["layers"], v["width"] // v["head_width"], v["patch_size"], v["image_size"]) == (
        192, 12, 3, 16, 112)
    assert (t["width"], t["layers"], t["heads"], t["context_length"]) == (256, 4, 4, 96)
    assert cfg["embed_dim"] == bench.EMBED_DIM
    json.dumps(cfg)  # what the benchmark writes


def test_parameter_counts_agree(bench):
    pytest.importorskip("open_clip")
    counts = bench.tower_parameters()
    m, o = counts["medvl"], counts["open_clip"]
    assert m["text"] == o["text"]
    # medvl's patch embedding has a bias (192 = the width); nothing else differs
    assert m["image"] - o["image"] == 192
    for key in ("image", "text", "total"):
        assert abs(m[key] - o[key]) / o[key] < 1e-4, key


def test_launcher_arguments_parse_in_open_clip_train(bench, tmp_path):
    pytest.importorskip("open_clip_train.params", reason="open_clip_train needs the [bench] extra "
                                                         "(open_clip_torch[training])")
    import argparse

    from open_clip_train.params import parse_args

    a = argparse.Namespace(csv=tmp_path / "train.csv", batch=32, workers=0, config_dir=tmp_path)
    for comparison in bench.COMPARISONS:
        cmd = bench._open_clip_cmd(a, comparison, tmp_path / "run", n_steps=8)
        assert cmd[:4] == [sys.executable, str(ROOT / "benchmarks" / "pretrain.py"), "--openclip-worker", str(tmp_path)]
        args = parse_args(cmd[cmd.index("--") + 1:])
        assert args.model == bench.OPEN_CLIP_MODEL and args.batch_size == 32 and args.dataset_type == "csv"
        assert (args.precision, args.torchcompile) == (("fp32", False) if comparison == "fp32" else ("amp_bf16", True))
        assert args.image_mean == [bench.MEAN] * 3 and args.image_std == [bench.STD] * 3


def test_step_log_line_parses(bench):
    line = ("2026-12-02,10:33:31 | INFO | Train Epoch: 0 [32/96 (33%)] Data (t): 1.320 Batch (t): 12.073, "
            "2.65060/s, 2.65060/s/gpu LR: 0.000500 Logit Scale: 14.286 Contrastive_loss: 3.5401 (3.5401) "
            "Loss: 3.5401 (3.5401)")
    m = bench._OC_STEP.search(line)
    assert m and float(m.group(2)) == pytest.approx(2.6506) and float(m.group(3)) == pytest.approx(3.5401)


def test_profile_summary_buckets(bench):
    shares = bench.profile_summary([{"name": "aten::mm", "self_cpu_us": 60.0},
                                    {"name": "aten::_foreach_mul_", "self_cpu_us": 20.0},
                                    {"name": "aten::whatever", "self_cpu_us": 20.0}])
    assert shares == {"matmul": 0.6, "optimizer": 0.2, "other": 0.2}
