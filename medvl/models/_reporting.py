"""Human-facing test reports: a table on the console, JSON and a ROC-curve PNG on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medvl.metrics.classification import roc_curve


def out_dir(trainer) -> Path:
    """The run's log folder (created): where a test or predict run writes its files."""
    d = Path(trainer.log_dir or trainer.default_root_dir)
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """One JSON object per line, UTF-8, non-ASCII kept as is."""
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def gather_rows(trainer, rows: list) -> list:
    """Every rank's ``rows`` (picklable objects), concatenated in rank order; ``rows`` itself on one process."""
    if trainer.world_size <= 1:
        return rows
    import torch.distributed as dist

    parts: list[list] = [None] * trainer.world_size  # type: ignore[list-item]
    dist.all_gather_object(parts, rows)
    return [r for part in parts for r in part]


def gather_uneven(module, *tensors):
    """Every rank's rows of each tensor, concatenated in rank order (each tensor itself on one process).

    Lightning's ``all_gather`` needs the same shape on every rank, but skipped samples leave
    the ranks with different numbers of rows, and a rank whose batches were all unreadable
    has none (``None``: its tensors take their trailing shape and dtype from another rank).
    Rows are padded to the longest rank's count, gathered and cut back. Every rank must
    call; a tensor that is None on every rank stays None.
    """
    trainer = module.trainer
    if trainer.world_size <= 1:
        return tensors
    import torch

    meta = gather_rows(trainer, [[None if t is None else (t.shape[0], tuple(t.shape[1:]), t.dtype) for t in tensors]])
    out = []
    for i, tensor in enumerate(tensors):
        ranks = [m[i] for m in meta]
        known = next((r for r in ranks if r is not None), None)
        if known is None:
            out.append(None)
            continue
        _, tail, dtype = known
        counts = [0 if r is None else r[0] for r in ranks]
        local = tensor if tensor is not None else torch.zeros((0, *tail), dtype=dtype, device=module.device)
        top = max(counts)
        if top == 0:  # every rank has zero rows
            out.append(local)
            continue
        padded = torch.cat([local, local.new_zeros((top - local.shape[0], *tail))])
        gathered = module.all_gather(padded)  # (world, top, *tail)
        out.append(torch.cat([gathered[r, :n] for r, n in enumerate(counts)]))
    return tuple(out)


def report_metrics(
    metrics: dict[str, float], scores: np.ndarray | None, labels: np.ndarray, names: list[str], trainer,
    *, unscored: list[str] | None = None,
) -> Path:
    """Print the zero-shot/retrieval tables and write ``test_metrics.json`` and ``roc_curves.png``.

    Args:
        metrics: ``auroc/<name>``, ``auroc_mean`` (when ``names``) and retrieval recalls.
        scores: Zero-shot scores ``(N, len(names))``; None without zero-shot.
        labels: Labels ``(N, len(names))``.
        names: The scored label names.
        trainer: Gives the output folder.
        unscored: Label names without prompts, listed as ``unscored_labels`` in the JSON.

    Returns:
        The folder the files were written to.
    """
    from rich.console import Console
    from rich.table import Table

    out = out_dir(trainer)
    console = Console()
    if names:
        console.print(_auroc_table("Zero-shot classification (test split)", "finding", metrics, labels, names))
    rtable = Table(title="Retrieval (test split)")
    rtable.add_column("direction")
    ks = sorted({k.split("@")[1] for k in metrics if "R@" in k and not k.startswith("mean")}, key=int)
    for k in ks:
        rtable.add_column(f"R@{k}", justify="right")
    for d, label in (("i2t", "image → report"), ("t2i", "report → image")):
        rtable.add_row(label, *(f"{metrics[f'{d}_R@{k}']:.3f}" for k in ks))
    console.print(rtable)
    if names:
        console.print(f"mean zero-shot AUROC: {metrics['auroc_mean']:.4f}")
    if unscored:
        console.print(f"not scored (no prompts): {', '.join(unscored)}")
    payload = {**metrics, "unscored_labels": list(unscored or [])}
    _save(console, out, payload, scores if names else None, labels, names, metrics, "Zero-shot ROC (test)")
    return out


def report_classification(
    metrics: dict[str, float], scores: np.ndarray, labels: np.ndarray, names: list[str], trainer, *, title: str
) -> Path:
    """Print a per-class AUROC table and write ``test_metrics.json`` and ``roc_curves.png``."""
    from rich.console import Console

    out = out_dir(trainer)
    console = Console()
    console.print(_auroc_table(title, "label", metrics, labels, names))
    console.print(f"mean AUROC: {metrics['auroc_mean']:.4f}")
    _save(console, out, metrics, scores, labels, names, metrics, "ROC (test)")
    return out


def _auroc_table(title: str, first_column: str, metrics: dict[str, float], labels: np.ndarray, names: list[str]):
    """A rich table: per label, its AUROC and the positives / negatives it was measured on."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column(first_column)
    table.add_column("AUROC", justify="right")
    table.add_column("positives / negatives", justify="right")
    for j, name in enumerate(names):
        pos, neg = int((labels[:, j] == 1).sum()), int((labels[:, j] == 0).sum())
        table.add_row(name, f"{metrics[f'auroc/{name}']:.3f}", f"{pos} / {neg}")
    return table


def _save(
    console, out: Path, payload: dict, scores: np.ndarray | None, labels: np.ndarray, names: list[str],
    metrics: dict[str, float], roc_title: str,
) -> None:
    """Writes ``payload`` to ``test_metrics.json`` and, given ``scores``, ``roc_curves.png``; says where."""
    (out / "test_metrics.json").write_text(json.dumps(payload, indent=2))
    if scores is not None:
        _plot_roc(scores, labels, names, metrics, out / "roc_curves.png", title=roc_title)
        console.print(f"metrics and ROC curves written to {out}")
    else:
        console.print(f"metrics written to {out}")


def _plot_roc(
    scores: np.ndarray, labels: np.ndarray, names: list[str], metrics: dict[str, float], path: Path,
    title: str = "Zero-shot ROC (test)",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for j, name in enumerate(names):
        keep = labels[:, j] >= 0
        if len(np.unique(labels[keep, j])) < 2:
            continue
        fpr, tpr, _ = roc_curve(scores[keep, j], labels[keep, j])
        ax.plot(fpr, tpr, label=f"{name} ({metrics[f'auroc/{name}']:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
