"""Training-step throughput and peak memory: medvl's PatchEncoder vs timm's ViT.

Both encoders have the identical configuration and start from the identical weights
(the timm model's state dict is loaded into medvl's, which shares timm's parameter
names), so they compute the same function. Every configuration -- {medvl, timm} x
{eager, torch.compile} x {fp32, bf16 autocast} -- runs in its own fresh subprocess, so
peak memory (the process's peak resident set above its baseline on CPU, the allocator
peak on GPU) is not polluted by the others. Compiled configurations use
``--compile-mode`` (default ``max-autotune-no-cudagraphs``: on the CPU, inductor's GEMM
templates with fused epilogues, medvl's CPU fast path), timm's and medvl's alike. A step
is forward + backward + AdamW step on a feature-regression loss. Configurations run in
interleaved rounds (``--repeats``) and the table reports medians.

The script first checks the numerics: medvl's and timm's features on the same batch
(fp32, max abs difference) and the first-step losses of every configuration.

On a CUDA machine the same script adds medvl with its Triton kernels enabled
(``MEDVL_FUSED=1``) against the reference path (``MEDVL_FUSED=0``).

Run::

    .venv/bin/python benchmarks/encoder.py                        # ViT-S/16 at 112 px, batch 32
    .venv/bin/python benchmarks/encoder.py --arch vit_base_patch16 --img 224 --batch 16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets, by
# a substring of torch.cuda.get_device_name(); --peak-tflops overrides (other devices, clocks).
BF16_PEAK_TFLOPS = {
    "H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0,
    "H100": 756.0, "GH200": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0,
}


def _peak_tflops(name: str) -> float | None:
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):  # the most specific match first
        if key in name:
            return BF16_PEAK_TFLOPS[key]
    return None


def _step_flops(model, x) -> int:
    """FLOPs of one training step (forward + backward) of ``model`` on ``x``, counted by torch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(x).float().square().mean().backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


TIMM_NAMES = {
    "vit_tiny_patch16": "vit_tiny_patch16_224",
    "vit_small_patch16": "vit_small_patch16_224",
    "vit_small_patch14": "vit_small_patch14_dinov2",
    "vit_base_patch16": "vit_base_patch16_224",
    "vit_large_patch16": "vit_large_patch16_224",
}


def _build(impl: str, arch: str, img: int, seed: int = 0):
    import timm
    import torch

    torch.manual_seed(seed)
    ref = timm.create_model(TIMM_NAMES[arch], pretrained=False, in_chans=1, img_size=img, num_classes=0)
    if impl == "timm":
        return ref
    from medvl.encoders import create_encoder

    model = create_encoder(arch, in_chans=1, img_size=img)
    model.load_state_dict(ref.state_dict(), strict=True)
    return model


def worker(cfg: dict) -> dict:
    """One configuration in a fresh process; returns throughput, memory and the first loss."""
    import torch

    torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])
    cuda = device.type == "cuda"
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    model = _build(cfg["impl"], cfg["arch"], cfg["img"]).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_fn = torch.compile(model, mode=cfg["compile_mode"]) if cfg["compile"] else model
    g = torch.Generator().manual_seed(1)
    x = torch.randn(cfg["batch"], 1, cfg["img"], cfg["img"], generator=g).to(device)
    target = torch.randn(cfg["batch"], model.num_features, generator=g).to(device)
    bf16 = cfg["dtype"] == "bf16"
    flops = _step_flops(model, x)  # eager, before compilation: the model's own FLOPs, not a graph's

    def step() -> float:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = step_fn(x)
        loss = (out.float() - target).square().mean()  # fp32 island: the loss reduction
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    first_loss = step()
    sync()
    first_s = time.perf_counter() - t0
    for _ in range(cfg["warmup"] - 1):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(cfg["steps"]):
        step()
    sync()
    elapsed = time.perf_counter() - t0
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return {"images_per_s": cfg["batch"] * cfg["steps"] / elapsed, "peak_mb": peak_mb,
            "first_loss": first_loss, "first_step_s": first_s, "tflops": flops * cfg["steps"] / elapsed / 1e12}


def _numerics(arch: str, img: int) -> float:
    import torch

    medvl, ref = _build("medvl", arch, img).eval(), _build("timm", arch, img).eval()
    x = torch.randn(4, 1, img, img, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return float((medvl(x) - ref(x)).abs().max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="vit_small_patch16", choices=sorted(TIMM_NAMES))
    p.add_argument("--img", type=int, default=112)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=8, help="timed steps per configuration and round")
    p.add_argument("--repeats", type=int, default=3, help="rounds over all configurations (median reported)")
    p.add_argument("--compile-mode", default="max-autotune-no-cudagraphs",
                   help="torch.compile mode of the compiled configurations, timm's and medvl's alike "
                        "(default: %(default)s, medvl's CPU fast path; 'default' for the plain mode)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation happens here)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--only", default=None, help="comma-separated subset, e.g. medvl-compile-fp32,timm-eager-fp32")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense bf16 peak for model FLOP utilisation (default: from the device name "
                        "on CUDA, see BF16_PEAK_TFLOPS)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(json.loads(a.worker))))
        return

    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    peak = a.peak_tflops or (_peak_tflops(name) if device == "cuda" else None)
    print(f"{a.arch} (timm: {TIMM_NAMES[a.arch]}), 1x{a.img}x{a.img}, batch {a.batch}, device {device} ({name}), "
          f"{a.threads} threads, torch {torch.__version__}, compile mode {a.compile_mode}")
    print(f"numerics: max |medvl - timm| on the same weights and batch (fp32) = {_numerics(a.arch, a.img):.2e}")

    configs = []
    for dtype in ("fp32", "bf16"):
        for impl in ("timm", "medvl"):
            for mode in ("eager", "compile"):
                configs.append({"impl": impl, "compile": mode == "compile", "dtype": dtype, "fused": "1",
                                "label": f"{impl}-{mode}-{dtype}"})
        if device == "cuda":  # medvl's Triton kernels against its reference path
            configs.append({"impl": "medvl", "compile": False, "dtype": dtype, "fused": "0",
                            "label": f"medvl-eager-{dtype}-reference"})
    if a.only:
        keep = set(a.only.split(","))
        configs = [c for c in configs if c["label"] in keep]

    # Rounds run every configuration once, in turn, so drift of a shared machine (frequency,
    # neighbours) hits all of them alike; the table reports each one's median round.
    shared = {"arch": a.arch, "img": a.img, "batch": a.batch, "steps": a.steps, "warmup": a.warmup,
              "threads": a.threads, "device": device,
              "compile_mode": None if a.compile_mode == "default" else a.compile_mode}
    runs: dict[str, list[dict]] = {c["label"]: [] for c in configs}
    for round_ in range(a.repeats):
        print(f"round {round_ + 1}/{a.repeats}", flush=True)
        for c in configs:
            cfg = {**c, **shared}
            env = {**os.environ, "MEDVL_FUSED": c["fused"]}
            proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], env=env,
                                  capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{c['label']}: failed\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(line[-1][len("RESULT "):])
            runs[c["label"]].append(r)
            print(f"  {c['label']:<32} {r['images_per_s']:8.2f} img/s  peak {r['peak_mb']:8.0f} MB  "
                  f"first loss {r['first_loss']:.6f}  first step {r['first_step_s']:.1f} s", flush=True)
    results = {}
    for label, rs in runs.items():
        if rs:
            speeds = sorted(r["images_per_s"] for r in rs)
            results[label] = {"images_per_s": statistics.median(speeds), "min": speeds[0], "max": speeds[-1],
                              "peak_mb": max(r["peak_mb"] for r in rs),
                              "tflops": statistics.median(r["tflops"] for r in rs)}

    print(f"\nmedian of {a.repeats} rounds (min-max in brackets)")
    print(f"{'configuration':<32} {'img/s':>8} {'range':>15} {'peak MB':>9} {'vs timm eager (same dtype)':>28}")
    for label, r in results.items():
        dtype = "bf16" if "bf16" in label else "fp32"
        base = results.get(f"timm-eager-{dtype}")
        ratio = f"{r['images_per_s'] / base['images_per_s']:.2f}x speed, {r['peak_mb'] / max(base['peak_mb'], 1):.2f}x mem" if base else "-"
        span = f"[{r['min']:.1f}-{r['max']:.1f}]"
        print(f"{label:<32} {r['images_per_s']:8.2f} {span:>15} {r['peak_mb']:9.0f} {ratio:>28}")
    if peak:
        print(f"\nmodel FLOP utilisation (FLOPs of the step as torch counts them, against {peak:.1f} TFLOP/s "
              "dense bf16)")
        for label, r in results.items():
            if "bf16" in label:
                print(f"{label:<32} {r["tflops"]:8.2f} TFLOP/s  MFU {100 * r['tflops'] / peak:5.1f}%"
                      f"{'  (target >= 45%)' if label.startswith('medvl') else ''}")
    for dtype in ("fp32", "bf16"):
        fast, base = results.get(f"medvl-compile-{dtype}"), results.get(f"timm-eager-{dtype}")
        if fast and base:
            print(f"medvl fast path (compile) / timm eager, {dtype}: {fast['images_per_s'] / base['images_per_s']:.2f}x "
                  f"(target >= {'1.3' if device == 'cuda' else '1.25'}x)")
        best = {impl: max((r["images_per_s"], k) for k, r in results.items() if k.startswith(impl) and dtype in k)
                for impl in ("medvl", "timm") if any(k.startswith(impl) and dtype in k for k in results)}
        if len(best) == 2:
            print(f"best medvl ({best['medvl'][1]}) / best timm ({best['timm'][1]}), {dtype}: "
                  f"{best['medvl'][0] / best['timm'][0]:.2f}x")


if __name__ == "__main__":
    main()
