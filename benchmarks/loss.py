"""Peak memory and time of the contrastive losses: blockwise (tile by tile) against the plain B x B loss.

``ClipLoss`` and ``SigLipLoss`` with ``blockwise=True`` never hold the B x B logits
(:func:`medvl.kernels.blockwise_clip_loss` / ``blockwise_siglip_loss``: Triton on a GPU,
a tiled torch path elsewhere); the plain loss materialises the logits, their softmax or
log-sigmoid and the gradient of each. Each configuration runs forward + backward in its
own fresh process, so one's peak does not hide another's: on CUDA the allocator's peak
above the inputs (features and their gradients), on the CPU the peak resident set above
the process's baseline. The script checks that both give the same loss and gradients
(max abs difference), then prints the memory ratio (target on a GPU: blockwise <= 1/8 of
the plain loss at batch 32k) and the time per step (median of ``--repeats`` interleaved
rounds).

Run::

    .venv/bin/python benchmarks/loss.py                           # CPU: batch 4096, dim 512
    .venv/bin/python benchmarks/loss.py --batch 32768 --dim 768   # the GPU check (benchmarks/gpu.sh)
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


def _inputs(cfg: dict):
    import torch

    g = torch.Generator().manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[cfg["dtype"]]
    img = torch.nn.functional.normalize(torch.randn(cfg["batch"], cfg["dim"], generator=g), dim=-1)
    txt = torch.nn.functional.normalize(img + 0.5 * torch.randn(cfg["batch"], cfg["dim"], generator=g), dim=-1)
    img, txt = (t.to(cfg["device"], dtype).requires_grad_(True) for t in (img, txt))
    return img, txt


def _loss(cfg: dict):
    from medvl.losses import ClipLoss, SigLipLoss

    if cfg["loss"] == "clip":
        return ClipLoss(blockwise=cfg["blockwise"], block_size=cfg["block_size"], gather=False), {"logit_scale": 14.3}
    return SigLipLoss(blockwise=cfg["blockwise"], block_size=cfg["block_size"], gather=False), {
        "logit_scale": 10.0, "logit_bias": -10.0}


def worker(cfg: dict) -> dict:
    """One configuration in a fresh process: peak memory, time, loss and gradients' checksum."""
    import torch

    cuda = cfg["device"] == "cuda"
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    img, txt = _inputs(cfg)
    loss_fn, scalars = _loss(cfg)

    def step() -> float:
        img.grad = txt.grad = None
        loss = loss_fn(img, txt, **scalars)
        loss.backward()
        return float(loss)

    value = step()  # warm-up (Triton compiles here)
    if cuda:
        torch.cuda.synchronize()
        held = torch.cuda.memory_allocated()  # inputs and their gradients
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(cfg["steps"]):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated() - held) / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    grads = torch.cat([img.grad.float().flatten(), txt.grad.float().flatten()])
    torch.save(grads.cpu(), cfg["grad_path"])
    return {"peak_mb": peak_mb, "step_s": statistics.median(times), "loss": value}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=None, help="default: 32768 on CUDA, 4096 on the CPU")
    p.add_argument("--dim", type=int, default=None, help="embedding size (default: 768 on CUDA, 512 on the CPU)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="features' dtype")
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--losses", default="clip,siglip")
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration and round")
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds (median reported)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", default=None, help="folder for the gradients and results.json (default: a temp dir)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print("RESULT " + json.dumps(worker(json.loads(a.worker))))
        return

    import tempfile

    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batch = a.batch or (32768 if device == "cuda" else 4096)
    dim = a.dim or (768 if device == "cuda" else 512)
    out = a.out or tempfile.mkdtemp(prefix="medvl_loss_bench_")
    os.makedirs(out, exist_ok=True)
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"contrastive losses: batch {batch}, dim {dim}, {a.dtype} features, block {a.block_size}, "
          f"device {device} ({name}), torch {torch.__version__}")
    configs = [{"loss": loss, "blockwise": bw, "label": f"{loss}-{'blockwise' if bw else 'plain'}"}
               for loss in a.losses.split(",") for bw in (False, True)]
    shared = {"batch": batch, "dim": dim, "dtype": a.dtype, "block_size": a.block_size, "device": device,
              "steps": a.steps}
    runs: dict[str, list[dict]] = {c["label"]: [] for c in configs}
    for round_ in range(a.repeats):
        print(f"round {round_ + 1}/{a.repeats}", flush=True)
        for c in configs:
            cfg = {**c, **shared, "grad_path": os.path.join(out, f"{c['label']}.pt")}
            proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True,
                                  text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"  {c['label']}: failed (exit {proc.returncode})\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(line[-1][len("RESULT "):])
            runs[c["label"]].append(r)
            print(f"  {c['label']:<18} peak {r['peak_mb']:10.1f} MB  {r['step_s'] * 1e3:9.1f} ms/step  "
                  f"loss {r['loss']:.6f}", flush=True)

    results = {}
    print(f"\n{'loss':<8} {'plain MB':>10} {'blockwise MB':>13} {'memory ratio':>13} {'plain ms':>9} "
          f"{'blockwise ms':>13} {'|d loss|':>9} {'max |d grad|':>13}")
    for loss in a.losses.split(","):
        plain, block = runs.get(f"{loss}-plain"), runs.get(f"{loss}-blockwise")
        if not plain or not block:
            continue
        pm, bm = max(r["peak_mb"] for r in plain), max(r["peak_mb"] for r in block)
        pt, bt = statistics.median(r["step_s"] for r in plain), statistics.median(r["step_s"] for r in block)
        dl = abs(plain[0]["loss"] - block[0]["loss"])
        g0 = torch.load(os.path.join(out, f"{loss}-plain.pt"), weights_only=True)
        g1 = torch.load(os.path.join(out, f"{loss}-blockwise.pt"), weights_only=True)
        dg = float((g0 - g1).abs().max())
        ratio = bm / max(pm, 1e-9)
        results[loss] = {"plain_peak_mb": pm, "blockwise_peak_mb": bm, "memory_ratio": ratio,
                         "plain_step_s": pt, "blockwise_step_s": bt, "loss_abs_diff": dl, "grad_max_abs_diff": dg}
        print(f"{loss:<8} {pm:10.1f} {bm:13.1f} {ratio:13.4f} {pt * 1e3:9.1f} {bt * 1e3:13.1f} {dl:9.2e} {dg:13.2e}")
    if device == "cuda":
        for loss, r in results.items():
            verdict = "met" if r["memory_ratio"] <= 1 / 8 else "NOT met"
            print(f"{loss}: blockwise peak / plain peak = {r['memory_ratio']:.4f} (target <= 0.125: {verdict})")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"device": name, **shared, "results": results}, f, indent=2)
    print(f"results: {os.path.join(out, 'results.json')}")


if __name__ == "__main__":
    main()
