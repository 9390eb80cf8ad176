"""End-to-end pretraining throughput: ``medvl fit`` against open_clip's own trainer ``open_clip_train``.

Both trainers run as their users run them, each in its own fresh process, on the same
work:

* **Same data.** medvl trains on its synthetic phantom set (``medvl synth``, generated
  into a folder of its own under ``--out``). The script exports the same training split
  for open_clip_train in its CSV layout (``--dataset-type csv --csv-img-key filepath
  --csv-caption-key title``): one PNG per study holding medvl's deterministic
  preprocessing of the DICOM file (window, resize/pad to 112 px, 8-bit), and the report
  text. Both normalise with mean 0.5, std 0.25 and tokenise with the same CLIP BPE to 96
  tokens.
* **Same towers.** medvl's ``vit_tiny_patch16`` (ViT-Ti/16: width 192, 12 blocks, 3 heads)
  at 112 px with CLIP's ``ln_pre`` (``pre_norm``), 3 input channels (the data module
  replicates the grey level, as open_clip's loader does), and ``text_transformer_small``
  (width 256, 4 layers, 4 heads, 96 tokens, pooled at the end-of-text token), linear
  projections to 256; the open_clip model config JSON is written from medvl's encoder
  configs (:func:`open_clip_config`) and registered with ``open_clip.add_model_config``
  by a small launcher (this file with ``--openclip-worker``). The parameter counts
  agree to 192 (medvl's patch embedding has a bias); ``tests/test_bench_pretrain.py``
  holds them together.
* **Same run.** Batch 32, CLIP's InfoNCE loss, AdamW (lr 5e-4, weight decay 0.2, betas
  0.9/0.98), the same number of steps, no validation, a checkpoint at the end.

Two comparisons (``--compare``): ``fp32`` (both in fp32, eager), and ``best``, each at its
best CPU setting: open_clip_train ``--precision amp_bf16 --torchcompile``; medvl
``--trainer.precision bf16-mixed``, ``--model.init_args.compile`` (``--medvl-compile``,
default medvl's CPU fast path ``max-autotune-no-cudagraphs``) and the preprocessed cache
(``--data.init_args.cache_dir``, built once before the rounds).

What is measured: the time of every optimiser step (from the end of the previous step
to the end of this one, so the wait for the batch counts: open_clip_train's ``Batch (t)``,
parsed from its per-step log lines; for medvl a small Lightning callback,
``benchmarks/_pretrain_timer.py``), samples/s over the steps after ``--warmup`` (compilation
happens there), start-up (launch until the first step begins: imports, model, data set-up)
and the first step separately, the peak resident set of the process (``wait4``'s
``ru_maxrss``), and the first losses (about ln 32 = 3.47 at initialisation for both, so both
do the same work). Runs are interleaved (medvl, open_clip, medvl, open_clip, ...) over
``--rounds`` and the table gives medians. ``--profile`` adds one run per trainer and
comparison that records one training step after the warm-up with ``torch.profiler`` and
prints the top operators by self CPU time.

What still differs (printed with the table): medvl's text tower is bidirectional with a
key-padding mask and trims trailing padding to the batch's longest report, open_clip's is
causal over all 96 tokens; medvl augments (albumentations affine, brightness/contrast,
gamma, noise), open_clip crops (RandomResizedCrop, scale 0.9-1); medvl compiles the image
encoder, open_clip the whole model; LayerNorm eps 1e-6 vs 1e-5; AdamW eps 1e-8 vs 1e-6.

Run::

    .venv/bin/python benchmarks/pretrain.py                       # both comparisons (~6 min on 2 idle cores)
    .venv/bin/python benchmarks/pretrain.py --compare fp32 --rounds 3 --steps 10
    .venv/bin/python benchmarks/pretrain.py --profile --rounds 1

Needs open_clip's training extra: ``pip install -e '.[bench]'`` (``open_clip_torch[training]``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# The towers: medvl registry names and overrides, and the data they eat.
VISION = "vit_tiny_patch16"
VISION_KWARGS = {"pre_norm": True}  # CLIP's ln_pre, which open_clip's VisionTransformer has
TEXT = "text_transformer_small"
TEXT_KWARGS = {"pool": "eot"}  # CLIP's end-of-text pooling, open_clip's "argmax" pool
EMBED_DIM = 256
IMG_SIZE = 112
IN_CHANS = 3  # open_clip's VisionTransformer takes RGB; medvl's data module replicates the grey level
MEAN, STD = 0.5, 0.25
OPEN_CLIP_MODEL = "medvl-ViT-Ti-16-112-text4"

COMPARISONS = ("fp32", "best")

TRAINERS = ("medvl", "open_clip")

INSTALL_HINT = ("open_clip_train (open_clip's trainer) cannot be imported: {err}.\n"
                "Install the benchmark extra: .venv/bin/pip install -e '.[bench]'  "
                "(or: .venv/bin/pip install 'open_clip_torch[training]')")


# -- the work: towers and data ----------------------------------------------------------------


def open_clip_config(img_size: int = IMG_SIZE) -> dict[str, Any]:
    """open_clip's model config (``model_configs/*.json`` schema) of medvl's towers.

    Read from medvl's own configs, so a change of the registry entries moves both sides.
    """
    from medvl.encoders import create_encoder

    vis = create_encoder(VISION, img_size=img_size, in_chans=IN_CHANS, **VISION_KWARGS).config
    txt = create_encoder(TEXT, **TEXT_KWARGS).config
    from medvl.encoders.text import BPETokenizer

    vocab = BPETokenizer(txt.context_length).vocab_size
    return {
        "embed_dim": EMBED_DIM,
        "vision_cfg": {
            "image_size": img_size,
            "layers": vis.depth,
            "width": vis.embed_dim,
            "head_width": vis.embed_dim // vis.num_heads,
            "mlp_ratio": vis.mlp_ratio,
            "patch_size": vis.patch_size,
        },
        "text_cfg": {
            "context_length": txt.context_length,
            "vocab_size": vocab,
            "width": txt.width,
            "heads": txt.heads,
            "layers": txt.layers,
            "mlp_ratio": txt.mlp_ratio,
        },
    }


def write_open_clip_config(folder: Path, img_size: int = IMG_SIZE) -> Path:
    """Writes ``<folder>/<OPEN_CLIP_MODEL>.json``; returns the folder (for ``open_clip.add_model_config``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{OPEN_CLIP_MODEL}.json").write_text(json.dumps(open_clip_config(img_size), indent=2))
    return folder


def tower_parameters(img_size: int = IMG_SIZE) -> dict[str, dict[str, int]]:
    """Parameters of the image tower (+ projection), text tower (+ projection) and in all, per framework."""
    import open_clip
    import tempfile

    from medvl.networks import ImageTextModel

    def count(*parts: Any) -> int:
        return sum(p.numel() for part in parts for p in (part.parameters() if hasattr(part, "parameters") else [part]))

    m = ImageTextModel(vision_encoder=VISION, text_encoder=TEXT, img_size=img_size, in_chans=IN_CHANS,
                       embed_dim=EMBED_DIM, vision_kwargs=VISION_KWARGS, text_kwargs=TEXT_KWARGS)
    with tempfile.TemporaryDirectory() as tmp:
        open_clip.add_model_config(write_open_clip_config(Path(tmp), img_size))
        o = open_clip.create_model(OPEN_CLIP_MODEL)
    return {
        "medvl": {"image": count(m.visual, m.image_proj), "text": count(m.text, m.text_proj), "total": count(m)},
        "open_clip": {"image": count(o.visual),
                      "text": count(o.token_embedding, o.positional_embedding, o.transformer, o.ln_final,
                                    o.text_projection),
                      "total": count(o)},
    }


def synthetic_dataset(out: Path, n: int) -> Path:
    """The synthetic set of ``n`` studies under ``out/data_n<n>`` (generated once); returns its manifest."""
    root = out / f"data_n{n}"
    if not (root / "manifest.jsonl").is_file():
        from medvl.data.synth import generate_dataset

        generate_dataset(root, n=n, seed=0, progress=False)
    return root / "manifest.jsonl"


def export_open_clip_csv(manifest: Path, out: Path, *, rows: int | None = None, img_size: int = IMG_SIZE,
                         split: str = "train") -> Path:
    """Writes ``split`` of a medvl manifest in open_clip_train's CSV layout; returns the CSV.

    ``out/images/<study_id>.png`` holds medvl's deterministic preprocessing of the study
    (DICOM LUTs and window, longest side resized to ``img_size`` and padded, [0, 1]) as
    8-bit grey, the same quantisation as medvl's cache; ``out/train.csv`` (tab-separated, as
    open_clip_train reads by default) has columns ``filepath`` (absolute) and ``title`` (the
    report, newlines as spaces: the CLIP tokenizer collapses whitespace either way).

    Args:
        rows: Rows to write, cycling through the split (open_clip_train runs one epoch of
            them); None: the split once.
    """
    import numpy as np
    from PIL import Image

    from medvl.data.dataset import read_manifest
    from medvl.data.pipeline import ImagePipeline

    records = [r for r in read_manifest(manifest) if r["split"] == split]
    if not records:
        raise ValueError(f"{manifest}: no {split!r} records")
    pipe = ImagePipeline(img_size, 1, None, MEAN, STD)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in records:
        png = images / f"{r['study_id']}.png"
        if not png.is_file():
            x = pipe.load(str(manifest.parent / r["image"]))[0]  # (S, S) float32 in [0, 1]
            Image.fromarray(np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L").save(png)
        paths.append(str(png.resolve()))
    n = len(records) if rows is None else rows
    path = out / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["filepath", "title"])
        for i in range(n):
            r = records[i % len(records)]
            w.writerow([paths[i % len(records)], " ".join(str(r["report"]).split())])
    return path


def trimmed_batch_share(manifest: Path, batch: int) -> tuple[float, float]:
    """(share of training reports longer than the context, chance that a batch is all shorter).

    medvl trims trailing padding to the batch's longest report; the second number is how
    often that makes its text tower cheaper than open_clip's, which always runs all tokens.
    """
    from medvl.data.dataset import read_manifest
    from medvl.encoders import create_encoder

    tok = create_encoder(TEXT, **TEXT_KWARGS).tokenizer
    texts = [str(r["report"]) for r in read_manifest(manifest) if r["split"] == "train"]
    full = float(tok(texts)["attention_mask"][:, -1].float().mean())
    return full, (1.0 - full) ** batch


# -- running the two trainers ------------------------------------------------------------------


def _medvl_cmd(a: argparse.Namespace, comparison: str, run_dir: Path, timer: Path, n_steps: int,
               profile_step: int | None) -> list[str]:
    exe = Path(sys.executable).with_name("medvl")
    cmd = [str(exe), "fit",
           "--model.class_path", "medvl.models.ContrastivePretraining",
           "--model.init_args.vision_encoder", VISION, "--model.init_args.text_encoder", TEXT,
           "--model.init_args.vision_kwargs", json.dumps(VISION_KWARGS),
           "--model.init_args.text_kwargs", json.dumps(TEXT_KWARGS),
           "--model.init_args.embed_dim", str(EMBED_DIM),
           "--data.class_path", "medvl.datamodules.SyntheticCXR",
           "--data.init_args.root", str(a.data_root), "--data.init_args.n", str(a.n),
           "--data.init_args.img_size", str(IMG_SIZE), "--data.init_args.in_chans", str(IN_CHANS),
           "--data.init_args.batch_size", str(a.batch), "--data.init_args.num_workers", str(a.workers),
           "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_steps", str(n_steps),
           "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
           "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1",
           "--trainer.default_root_dir", str(run_dir), "--seed_everything", "0",
           "--trainer.callbacks+=_pretrain_timer.StepTimer", "--trainer.callbacks.out", str(timer)]
    if profile_step is not None:
        cmd += ["--trainer.callbacks.profile_step", str(profile_step),
                "--trainer.callbacks.profile_out", str(run_dir / "profile.json")]
    if comparison == "fp32":
        cmd += ["--trainer.precision", "32-true"]
    else:
        cmd += ["--trainer.precision", "bf16-mixed", "--model.init_args.compile", a.medvl_compile,
                "--data.init_args.cache_dir", str(a.cache_dir)]
    return cmd


def _open_clip_cmd(a: argparse.Namespace, comparison: str, run_dir: Path, n_steps: int) -> list[str]:
    argv = ["--model", OPEN_CLIP_MODEL, "--train-data", str(a.csv), "--dataset-type", "csv",
            "--csv-img-key", "filepath", "--csv-caption-key", "title",
            "--batch-size", str(a.batch), "--epochs", "1", "--workers", str(a.workers),
            "--lr", "5e-4", "--wd", "0.2", "--beta1", "0.9", "--beta2", "0.98",
            "--warmup", str(max(1, int(0.05 * n_steps))), "--seed", "0", "--log-every-n-steps", "1",
            "--image-mean", *[str(MEAN)] * 3, "--image-std", *[str(STD)] * 3,
            "--logs", str(run_dir.parent), "--name", run_dir.name, "--device", "cpu"]
    if comparison == "fp32":
        argv += ["--precision", "fp32"]
    else:
        argv += ["--precision", "amp_bf16", "--torchcompile"]
    return [sys.executable, str(Path(__file__).resolve()), "--openclip-worker", str(a.config_dir), "--", *argv]


def _launch(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> dict[str, Any]:
    """Runs ``cmd``; returns its output lines with arrival times, exit status and peak RSS."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True)
    lines: list[tuple[float, str]] = []

    def read() -> None:
        with open(log, "w") as f:
            for line in proc.stdout:
                lines.append((time.time(), line.rstrip("\n")))
                f.write(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, 9))
    timer.start()
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own peak RSS (KiB), and its reaped workers'
    timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)
    return {"rc": proc.returncode, "lines": lines, "t0": t0, "t_end": time.time(),
            "peak_rss_mb": usage.ru_maxrss / 1024}


_OC_STEP = re.compile(r"Train Epoch: \d+ \[\s*(\d+)/\d+ .*?Batch \(t\): [\d.]+, ([\d.eE+-]+)/s,.*?\bLoss: (\S+) \(")


def _result(steps_s: list[float], cpu: list[float], losses: list[float], start_wall: float, r: dict[str, Any],
            a: argparse.Namespace) -> dict[str, Any]:
    """Measurements of a run from its step times and the CPU time at the end of every step."""
    timed = steps_s[a.warmup:a.warmup + a.steps]
    if len(timed) < a.steps:
        raise RuntimeError(f"only {len(steps_s)} steps reported, {a.warmup + a.steps} expected")
    last = a.warmup + a.steps - 1
    cpu_step = (cpu[last] - cpu[a.warmup - 1]) / a.steps if len(cpu) > last and a.warmup > 0 else float("nan")
    return {"samples_per_s": a.batch * len(timed) / sum(timed), "step_s": statistics.median(timed),
            "cpu_s_per_step": cpu_step,
            "startup_s": start_wall - r["t0"], "first_step_s": steps_s[0],
            "warmup_s": sum(steps_s[:a.warmup]), "peak_rss_mb": r["peak_rss_mb"],
            "first_losses": losses[:3], "wall_s": r["t_end"] - r["t0"], "steps_s": steps_s}


def run_once(a: argparse.Namespace, trainer: str, comparison: str, tag: str,
             profile_step: int | None = None) -> dict[str, Any]:
    """One run of one trainer in a fresh process; returns its measurements."""
    run_dir = a.out / "runs" / f"{tag}-{trainer}-{comparison}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    n_steps = a.warmup + a.steps if profile_step is None else profile_step + 2
    # One inductor cache for both trainers, emptied when the benchmark starts: round 1 compiles cold.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCHINDUCTOR_CACHE_DIR": str(a.out / "inductor_cache")}
    if trainer == "medvl":
        timer = run_dir / "steps.json"
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [env.get("PYTHONPATH")])])
        r = _launch(_medvl_cmd(a, comparison, run_dir, timer, n_steps, profile_step), env, run_dir / "stdout.log",
                    a.timeout)
        if r["rc"] or not timer.is_file():
            raise RuntimeError(f"medvl fit failed (exit {r['rc']}); see {run_dir / 'stdout.log'}:\n"
                               + "\n".join(x for _, x in r["lines"][-15:]))
        t = json.loads(timer.read_text())
        steps_s, losses, start_wall, cpu = t["step_s"], t["losses"], t["start_wall"], t["cpu_s"]
        compiled_graphs = t.get("dynamo", {}).get("unique_graphs", 0)
    else:
        env["BENCH_MARKS_OUT"] = str(run_dir / "marks.json")
        if profile_step is not None:
            env["BENCH_PROFILE_STEP"] = str(profile_step)
            env["BENCH_PROFILE_OUT"] = str(run_dir / "profile.json")
        r = _launch(_open_clip_cmd(a, comparison, run_dir, n_steps), env, run_dir / "stdout.log", a.timeout)
        steps_s, losses, ends = [], [], []
        for when, line in r["lines"]:
            m = _OC_STEP.search(line)
            if m:
                steps_s.append(a.batch / float(m.group(2)))  # Batch (t) of this step, from its samples/s
                losses.append(float(m.group(3)))
                ends.append(when)
        if r["rc"] or not steps_s:
            raise RuntimeError(f"open_clip_train failed (exit {r['rc']}); see {run_dir / 'stdout.log'}:\n"
                               + "\n".join(x for _, x in r["lines"][-15:]))
        start_wall = ends[0] - steps_s[0]  # the first log line arrives as its step ends
        marks = json.loads((run_dir / "marks.json").read_text()) if (run_dir / "marks.json").is_file() else []
        cpu = [c for _, c in marks[1:]]  # CPU time when batch i + 1 is handed out: step i is done
        compiled_graphs = None
    if profile_step is not None:
        prof = json.loads((run_dir / "profile.json").read_text())
        return {"profile": prof, "run_dir": str(run_dir)}
    return {**_result(steps_s, cpu, losses, start_wall, r, a), "compiled_graphs": compiled_graphs,
            "run_dir": str(run_dir)}


# -- the open_clip launcher -------------------------------------------------------------------------


def write_profile(prof: Any, path: str, rows: int) -> None:
    """Closes a running ``torch.profiler.profile`` and writes its top-``rows`` table and every op to ``path`` (JSON).

    Shared by the open_clip launcher here and medvl's step timer (``_pretrain_timer.py``).
    """
    prof.__exit__(None, None, None)
    avg = prof.key_averages()
    with open(path, "w") as f:
        json.dump({"table": avg.table(sort_by="self_cpu_time_total", row_limit=rows),
                   "ops": [{"name": e.key, "self_cpu_us": e.self_cpu_time_total,
                            "cpu_total_us": e.cpu_time_total, "count": e.count} for e in avg]}, f)


class _HookedLoader:
    """open_clip_train's train loader, unchanged, noting the clock at every batch it hands out.

    ``marks[i]`` = (wall, process CPU time) when batch ``i`` is handed to the training loop
    (the last mark: when the loop asks for one more and the epoch ends), written to
    ``marks_out`` at the end. With ``profile_step``, torch.profiler records from handing out
    that batch to handing out the next: the step and the fetch of the next batch.
    """

    def __init__(self, loader: Any, marks_out: str, profile_step: int | None = None,
                 profile_out: str | None = None, rows: int = 25) -> None:
        self._loader, self._marks_out, self._rows = loader, marks_out, rows
        self._step, self._profile_out = profile_step, profile_out
        self._prof: Any = None

    def __getattr__(self, name: str) -> Any:  # num_batches, num_samples, ...
        return getattr(self._loader, name)

    def __len__(self) -> int:
        return len(self._loader)

    def _stop(self) -> None:
        if self._prof is None:
            return
        write_profile(self._prof, self._profile_out, self._rows)
        self._prof = None

    def __iter__(self):
        marks: list[tuple[float, float]] = []
        for i, batch in enumerate(self._loader):
            if self._step is not None and i == self._step + 1:
                self._stop()
            marks.append((time.time(), time.process_time()))
            if self._step is not None and i == self._step:
                from torch.profiler import ProfilerActivity, profile

                self._prof = profile(activities=[ProfilerActivity.CPU])
                self._prof.__enter__()
            yield batch
        marks.append((time.time(), time.process_time()))
        self._stop()
        with open(self._marks_out, "w") as f:
            json.dump(marks, f)


def openclip_worker(config_dir: str, argv: list[str]) -> int:
    """Registers the model config folder, hooks the train loader's clock, runs ``open_clip_train.main.main(argv)``."""
    try:
        import open_clip
        import open_clip_train.main as oc_main
    except ImportError as err:
        print(INSTALL_HINT.format(err=err), file=sys.stderr)
        return 3
    open_clip.add_model_config(config_dir)
    train_one_epoch = oc_main.train_one_epoch
    step = os.environ.get("BENCH_PROFILE_STEP")

    def hooked(model: Any, data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        data["train"].dataloader = _HookedLoader(data["train"].dataloader, os.environ["BENCH_MARKS_OUT"],
                                                 None if step is None else int(step),
                                                 os.environ.get("BENCH_PROFILE_OUT"))
        return train_one_epoch(model, data, *args, **kwargs)

    oc_main.train_one_epoch = hooked  # main() looks it up in its module at call time
    return oc_main.main(argv) or 0


# -- reporting --------------------------------------------------------------------------------------

_CATEGORIES = (  # self-CPU-time buckets of a profile, first match wins
    ("data loading", ("enumerate(dataloader)", "dataloader", "collate")),
    ("compiled regions", ("compiled", "torch-compiled", "cpp_fused", "inductor", "triton", "graph_")),
    ("optimizer", ("optimizer.step", "_foreach", "adam")),
    ("elementwise (optimizer, grads)", ("aten::mul", "aten::add", "aten::div", "aten::sqrt", "aten::addcmul",
                                        "aten::addcdiv", "aten::lerp", "aten::fill_", "aten::zero_")),
    ("attention", ("attention", "softmax", "_flash", "sdpa", "_efficient")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn", "aten::_addmm", "linear",
                "aten::matmul", "onednn", "convolution")),
    ("norm/activation", ("layer_norm", "gelu", "native_layer_norm")),
    ("copies/casts", ("copy_", "aten::to", "_to_copy", "contiguous", "clone", "cat", "empty")),
)


def profile_summary(ops: list[dict[str, Any]]) -> dict[str, float]:
    """Share of self CPU time per category (see ``_CATEGORIES``); the rest is ``other``.

    open_clip's AdamW on the CPU runs per parameter (no foreach/fused kernel by default), so
    its aten ops (mul_, add_, div, sqrt, addcmul_, addcdiv_, lerp_) land in "elementwise",
    with the gradient accumulation; medvl's fused kernel (``_fused_adamw_``) is "optimizer". (The inclusive time of ``Optimizer.step`` says nothing here:
    Lightning runs forward and backward inside it, as the step's closure.)
    """
    total = sum(o["self_cpu_us"] for o in ops) or 1.0
    shares: dict[str, float] = {}
    for o in ops:
        name = o["name"].lower()
        cat = next((c for c, keys in _CATEGORIES if any(k in name for k in keys)), "other")
        shares[cat] = shares.get(cat, 0.0) + o["self_cpu_us"] / total
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))


def _fmt_losses(xs: list[float]) -> str:
    return ", ".join(f"{x:.3f}" for x in xs)


def _table(results: dict[str, dict[str, Any]], rounds: int) -> list[str]:
    head = ("| comparison | trainer | samples/s (median) | [min-max] | step s | CPU s/step | peak RSS MB | "
            "start-up s | first step s | first losses |")
    out = [head, "|" + "---|" * 10]
    for comp, per in results.items():
        for trainer in TRAINERS:
            r = per.get(trainer)
            if not r:
                continue
            out.append(f"| {comp} | {trainer} | {r['samples_per_s']:.2f} | [{r['min']:.2f}-{r['max']:.2f}] | "
                       f"{r['step_s']:.3f} | {r['cpu_s_per_step']:.2f} | {r['peak_rss_mb']:.0f} | {r['startup_s']:.1f} | "
                       f"{r['first_step_s']:.1f} | {_fmt_losses(r['first_losses'])} |")
        if per.get("medvl") and per.get("open_clip"):
            m, o = per["medvl"], per["open_clip"]
            out.append(f"| {comp} | **medvl / open_clip** | **{m['samples_per_s'] / o['samples_per_s']:.2f}x** | "
                       f"| {m['step_s'] / o['step_s']:.2f}x | {m['cpu_s_per_step'] / o['cpu_s_per_step']:.2f}x | "
                       f"{m['peak_rss_mb'] / o['peak_rss_mb']:.2f}x | "
                       f"{m['startup_s'] / o['startup_s']:.2f}x | {m['first_step_s'] / o['first_step_s']:.2f}x | |")
    return out


def _differences(a: argparse.Namespace, long_share: float, untrimmed: float) -> list[str]:
    return [
        f"image tower: identical shapes (ViT-Ti/16 at {IMG_SIZE} px, ln_pre, [CLS] pooling, {IN_CHANS} channels: "
        "medvl's data module replicates the grey level as open_clip's loader converts to RGB); medvl's patch "
        "embedding has a bias (+192 parameters); LayerNorm eps 1e-6 (medvl) vs 1e-5",
        "text tower: identical shapes (width 256, 4 layers, 4 heads, 96 tokens, EOT pooling); medvl attends "
        "bidirectionally with a key-padding mask and trims trailing padding to the batch's longest report, "
        f"open_clip is causal over all 96 tokens; {long_share:.0%} of the training reports fill the 96 tokens, "
        f"so {1 - untrimmed:.1%} of batches of {a.batch} run the full length in medvl too",
        "data: medvl reads the DICOM files (preloaded into memory at set-up; in 'best' from its uint8 cache) and "
        "augments (albumentations affine, brightness/contrast, gamma, noise); open_clip decodes the exported "
        "8-bit PNG per sample and applies RandomResizedCrop(scale 0.9-1, bicubic); "
        f"loader workers {a.workers} in both",
        f"'best': medvl compiles its whole network, both towers and projections (mode {a.medvl_compile}), "
        "under bf16-mixed autocast; open_clip compiles the whole CLIP model (default mode) under amp_bf16 autocast",
        "optimiser: AdamW lr 5e-4, wd 0.2, betas 0.9/0.98 in both (medvl: torch's fused kernel; open_clip: the "
        "default per-parameter loop); eps 1e-8 (medvl) vs 1e-6; warm-up + cosine "
        "schedules over the run; both write a checkpoint after the last step (outside the timing)",
        "peak RSS: the main process (with workers > 0, the larger of it and any one worker)",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", default="fp32,best", help="comma-separated subset of: " + ", ".join(COMPARISONS))
    p.add_argument("--steps", type=int, default=6, help="timed steps per run (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps first; compilation happens here (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the table gives medians (default: %(default)s)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="data-loader workers of both trainers (default: %(default)s)")
    p.add_argument("--medvl-compile", default="max-autotune-no-cudagraphs",
                   help="medvl's --model.init_args.compile in 'best' (default: %(default)s, its CPU fast path; "
                        "'true' for torch.compile's default mode)")
    p.add_argument("--profile", action="store_true",
                   help="also profile one step after the warm-up of each trainer and comparison (torch.profiler)")
    p.add_argument("--profile-rows", type=int, default=15)
    p.add_argument("--timeout", type=float, default=1200, help="seconds one run may take (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("runs/bench_pretrain"), help="data, runs and results (default: %(default)s)")
    p.add_argument("--openclip-worker", default=None, help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    if "--openclip-worker" in argv:  # the launcher: <config dir> -- <open_clip_train argv>
        i = argv.index("--openclip-worker")
        sep = argv.index("--")
        return openclip_worker(argv[i + 1], argv[sep + 1:])
    a = p.parse_args(argv)
    comparisons = [c for c in a.compare.split(",") if c]
    unknown = [c for c in comparisons if c not in COMPARISONS]
    if unknown:
        p.error(f"unknown comparison(s) {unknown}; choose from {COMPARISONS}")
    if a.warmup < 1 or a.steps < 1 or a.rounds < 1:
        p.error("--warmup, --steps and --rounds must be at least 1")
    try:
        import open_clip_train.main  # noqa: F401
    except ImportError as err:
        print(INSTALL_HINT.format(err=err), file=sys.stderr)
        return 2

    import torch

    a.out = a.out.resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    import shutil

    shutil.rmtree(a.out / "inductor_cache", ignore_errors=True)
    total_rows = (a.warmup + a.steps) * a.batch
    a.n = max(64, math.ceil(total_rows / 0.7))  # ~78% of the synthetic studies are in the training split
    t0 = time.perf_counter()
    manifest = synthetic_dataset(a.out, a.n)
    a.data_root = manifest.parent
    a.csv = export_open_clip_csv(manifest, a.out / f"open_clip_n{a.n}", rows=total_rows)
    a.config_dir = write_open_clip_config(a.out / "open_clip_config")
    a.cache_dir = a.out / f"cache_n{a.n}_{IMG_SIZE}_c{IN_CHANS}"
    if "best" in comparisons:
        from medvl.datamodules import SyntheticCXR

        SyntheticCXR(root=str(a.data_root), n=a.n, img_size=IMG_SIZE, in_chans=IN_CHANS,
                     cache_dir=str(a.cache_dir)).prepare_data()
    params = tower_parameters()
    long_share, untrimmed = trimmed_batch_share(manifest, a.batch)
    load = os.getloadavg()
    print(f"medvl fit vs open_clip_train: {VISION} + {TEXT} at {IMG_SIZE} px, batch {a.batch}, "
          f"{a.warmup} warm-up + {a.steps} timed steps, {a.rounds} round(s), workers {a.workers}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"load average {load[0]:.1f}")
    print(f"data: {a.n} synthetic studies in {a.data_root}; open_clip CSV {a.csv} ({total_rows} rows); "
          f"prepared in {time.perf_counter() - t0:.0f} s")
    print("parameters (image tower + projection / text tower + projection / total): "
          + "; ".join(f"{k} {v['image']:,} / {v['text']:,} / {v['total']:,}" for k, v in params.items()))

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {c: {t: [] for t in TRAINERS} for c in comparisons}
    for rnd in range(a.rounds):
        print(f"round {rnd + 1}/{a.rounds}", flush=True)
        for comp in comparisons:
            for trainer in TRAINERS:  # medvl, open_clip, medvl, open_clip, ...
                try:
                    r = run_once(a, trainer, comp, f"r{rnd}")
                except RuntimeError as err:
                    print(f"  {comp:<5} {trainer:<10} failed: {err}", flush=True)
                    continue
                runs[comp][trainer].append(r)
                print(f"  {comp:<5} {trainer:<10} {r['samples_per_s']:7.2f} samples/s  step {r['step_s']:.3f} s  "
                      f"CPU {r['cpu_s_per_step']:.2f} s/step  "
                      f"peak RSS {r['peak_rss_mb']:5.0f} MB  start-up {r['startup_s']:5.1f} s  "
                      f"first step {r['first_step_s']:5.1f} s  losses {_fmt_losses(r['first_losses'])}", flush=True)

    results: dict[str, dict[str, Any]] = {}
    for comp, per in runs.items():
        results[comp] = {}
        for trainer, rs in per.items():
            if not rs:
                continue
            speeds = sorted(r["samples_per_s"] for r in rs)
            med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
            results[comp][trainer] = {
                "samples_per_s": statistics.median(speeds), "min": speeds[0], "max": speeds[-1],
                "step_s": med("step_s"), "cpu_s_per_step": med("cpu_s_per_step"), "peak_rss_mb": med("peak_rss_mb"), "startup_s": med("startup_s"),
                "first_step_s": med("first_step_s"), "first_losses": rs[0]["first_losses"], "rounds": len(rs),
            }

    table = _table(results, a.rounds)
    diffs = _differences(a, long_share, untrimmed)
    print(f"\nmedian of {a.rounds} round(s); samples/s over {a.steps} steps after {a.warmup} warm-up steps; "
          "CPU s/step: process CPU time (all threads) per timed step; start-up = launch until the first step "
          "begins; first step includes compilation")
    print("\n".join(table))
    for comp, per in runs.items():
        cold = {t: rs[0]["first_step_s"] for t, rs in per.items() if rs}
        if comp == "best" and cold:
            print("first step of round 1 (cold inductor cache; later rounds reuse it): "
                  + ", ".join(f"{t} {v:.1f} s" for t, v in cold.items()))
    for r in runs.get("best", {}).get("medvl", [])[:1]:
        if r.get("compiled_graphs") == 0:
            diffs.append(f"WARNING: medvl was asked to compile (--model.init_args.compile {a.medvl_compile}) but "
                         "torch._dynamo compiled no graph: its 'best' ran eager")
    print("what differs:\n" + "\n".join(f"  - {d}" for d in diffs))

    profiles: dict[str, dict[str, Any]] = {}
    if a.profile:
        for comp in comparisons:
            for trainer in TRAINERS:
                try:
                    prof = run_once(a, trainer, comp, "profile", profile_step=a.warmup)["profile"]
                except (RuntimeError, FileNotFoundError) as err:
                    print(f"profile {comp} {trainer} failed: {err}")
                    continue
                shares = profile_summary(prof["ops"])
                profiles[f"{comp}/{trainer}"] = {"shares": shares, "table": prof["table"]}
                print(f"\nwhere the time goes: {trainer}, {comp}, step {a.warmup + 1} (self CPU time)")
                print("  " + ", ".join(f"{k} {v:.0%}" for k, v in shares.items()))
                print("\n".join(prof["table"].splitlines()[: a.profile_rows + 4]))

    stamp = time.strftime("%Y-%m-%d %H:%M")
    record = {"date": stamp, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cores": os.cpu_count(), "load_average_at_start": load, "args": {k: str(v) for k, v in vars(a).items()},
              "parameters": params, "results": results, "runs": runs, "differences": diffs,
              "profiles": {k: {"shares": v["shares"]} for k, v in profiles.items()}}
    (a.out / "results.json").write_text(json.dumps(record, indent=2))
    md = [f"# medvl fit vs open_clip_train ({stamp})", "",
          f"{VISION} + {TEXT} at {IMG_SIZE} px, batch {a.batch}, {a.warmup} warm-up + {a.steps} timed steps, "
          f"median of {a.rounds} interleaved round(s); torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {load[0]:.1f} at start.", "", *table, "", "What differs:", "", *[f"- {d}" for d in diffs]]
    for k, v in profiles.items():
        md += ["", f"## Where the time goes: {k}", "", ", ".join(f"{c} {s:.0%}" for c, s in v["shares"].items()),
               "", "```", *v["table"].splitlines()[: a.profile_rows + 4], "```"]
    (a.out / "results.md").write_text("\n".join(md) + "\n")
    print(f"\nwrote {a.out / 'results.json'} and {a.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
