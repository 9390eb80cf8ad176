"""Ablation: how the fusion VQA classifier pools the image stream (``mean`` vs ``spatial``).

The image encoder is an export (``make demo`` writes ``exports/quickstart``), frozen; its
patch tokens are computed once per image. On those cached tokens the same question
encoder, co-attention layers and answer classifier (:class:`medvl.networks.FusionVQA`'s
parts) are trained from the same seed for each pooling, and scored on the
**validation** split (the test split is not read) per question kind::

    .venv/bin/python benchmarks/vqa_pooling.py                  # 8 epochs, ~10 min on 2 CPU cores
    .venv/bin/python benchmarks/vqa_pooling.py --epochs 3 --pools mean spatial

``mean`` is METER's pooling: it forgets where a token was, so side and lobe questions
depend on what the co-attention writes into the tokens. ``spatial`` adds a
position-preserving readout (see :class:`medvl.heads.vqa.AnswerClassifier`).
"""

from __future__ import annotations

import argparse
import math
import random
import time
from collections import Counter

import torch
import torch.nn.functional as F
from tqdm import tqdm


def _cache(export: str, root: str, n: int) -> dict:
    from medvl.data.sources import Synthetic
    from medvl.datamodules import VQADataModule
    from medvl.encoders.source import read_encoder_source

    src = read_encoder_source(export)
    enc, pre = src.encoder.eval(), src.preprocessing
    dm = VQADataModule(source=Synthetic(root=root, n=n, seed=0), img_size=pre["img_size"], preload=True,
                       augment=False, image_mean=pre["mean"], image_std=pre["std"], window=pre.get("window"))
    out = {"answers": dm.answer_vocabulary()}
    for split in ("train", "val"):
        ds, feats, rows = dm._dataset(split), {}, []
        for i in tqdm(range(len(ds)), desc=f"encoding {split}", leave=False):
            s = ds[i]
            if "skipped" in s:
                continue
            if s["study_id"] not in feats:
                with torch.no_grad():
                    feats[s["study_id"]] = enc.forward_features(s["image"][None])[0]
            rows.append({k: s[k] for k in ("question", "answer", "answer_type", "question_type", "study_id")})
        out[split] = (feats, rows)
    out["img_size"], out["in_chans"], out["encoder"] = pre["img_size"], pre["in_chans"], enc
    return out


def _train(data: dict, pool: str, a: argparse.Namespace) -> dict[str, float]:
    from medvl.networks import FusionVQA

    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    answers = data["answers"]
    index = {x: i for i, x in enumerate(answers)}
    net = FusionVQA(answers, encoder=data["encoder"], img_size=data["img_size"], in_chans=data["in_chans"],
                    freeze="all", text_encoder=a.text_encoder, pool=pool,
                    fusion_kwargs={"dim": a.dim, "depth": a.depth, "num_heads": 4, "dropout": 0.1})
    parts = [net.text, net.fusion, net.head]
    opt = torch.optim.AdamW([p for m in parts for p in m.parameters()], lr=a.lr, weight_decay=0.05)
    feats, rows = data["train"]
    per_epoch = len(rows) // a.batch_size
    steps = a.epochs * per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, s / max(1, 0.05 * steps)) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))

    def logits(batch: list[dict], feats: dict) -> torch.Tensor:
        q = net.tokenizer([r["question"] for r in batch])
        words, mask = net.text.forward_tokens(q["input_ids"], q["attention_mask"])
        t, v = net.fusion(words, mask, torch.stack([feats[r["study_id"]] for r in batch]))
        return net.head(t, mask, v)

    for _ in tqdm(range(a.epochs), desc=f"pool={pool}", leave=False):
        for m in parts:
            m.train()
        order = list(range(len(rows)))
        rng.shuffle(order)
        for b in range(per_epoch):
            batch = [rows[i] for i in order[b * a.batch_size:(b + 1) * a.batch_size]]
            y = torch.tensor([index.get(r["answer"], -100) for r in batch])
            loss = F.cross_entropy(logits(batch, feats), y, ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    for m in parts:
        m.eval()
    feats, rows = data["val"]
    hit, n = Counter(), Counter()
    with torch.no_grad():
        for b in range(0, len(rows), 128):
            batch = rows[b:b + 128]
            for r, i in zip(batch, logits(batch, feats).argmax(-1).tolist()):
                for key in ("overall", r["answer_type"], r["question_type"]):
                    hit[key] += answers[i] == r["answer"]
                    n[key] += 1
    return {k: hit[k] / n[k] for k in n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--export", default="exports/quickstart", help="image encoder export (default: %(default)s)")
    p.add_argument("--root", default="data/synthetic_cxr", help="synthetic set folder (default: %(default)s)")
    p.add_argument("--n", type=int, default=2000, help="synthetic studies (default: %(default)s)")
    p.add_argument("--pools", nargs="+", default=["mean", "spatial"])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--text-encoder", default="text_transformer_tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    data = _cache(a.export, a.root, a.n)
    print(f"encoded {len(data['train'][0])} train and {len(data['val'][0])} val images in "
          f"{time.perf_counter() - t0:.0f} s; {len(data['train'][1])} train / {len(data['val'][1])} val questions")
    results = {}
    for pool in a.pools:
        t0 = time.perf_counter()
        results[pool] = _train(data, pool, a)
        print(f"pool={pool}: {a.epochs} epochs in {time.perf_counter() - t0:.0f} s")
    keys = ["overall", "closed", "open"] + sorted(k for k in results[a.pools[0]] if k not in ("overall", "closed", "open"))
    print(f"\nvalidation accuracy (frozen {a.export}, seed {a.seed}, {a.epochs} epochs)\n")
    print("| kind | " + " | ".join(a.pools) + " |")
    print("| --- |" + " --- |" * len(a.pools))
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{results[p].get(k, float('nan')):.3f}" for p in a.pools) + " |")


if __name__ == "__main__":
    main()
