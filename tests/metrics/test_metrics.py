"""Tests for medvl.metrics: AUROC against scikit-learn and hand cases; retrieval Recall@K."""

import numpy as np
import pytest
import torch

from medvl.metrics import binary_auroc, multilabel_auroc, retrieval_recall_at_k, roc_curve
from medvl.metrics.retrieval import retrieval_ranks


# ------------------------------------------------------------------ AUROC
def test_auroc_hand_cases():
    assert binary_auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert binary_auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert binary_auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5  # all ties -> chance
    # pairs (pos, neg): (0.4 > 0.1) yes, (0.4 vs 0.4) tie = 1/2, (0.7 > 0.1), (0.7 > 0.4): 3.5 / 4
    assert binary_auroc([0.1, 0.4, 0.4, 0.7], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert np.isnan(binary_auroc([0.1, 0.2], [1, 1]))
    assert np.isnan(binary_auroc([0.1, 0.2], [0, 0]))


@pytest.mark.parametrize("seed", range(3))
def test_auroc_matches_sklearn_with_ties(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=200) / 5.0  # heavy ties
    targets = rng.integers(0, 2, size=200)
    assert binary_auroc(scores, targets) == pytest.approx(metrics.roc_auc_score(targets, scores))
    fpr, tpr, thr = roc_curve(scores, targets)
    s_fpr, s_tpr, s_thr = metrics.roc_curve(targets, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, s_fpr)
    np.testing.assert_allclose(tpr, s_tpr)
    np.testing.assert_allclose(thr[1:], s_thr[1:])
    assert np.isinf(thr[0])
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    assert trapezoid(tpr, fpr) == pytest.approx(binary_auroc(scores, targets))


def test_auroc_accepts_torch_and_rejects_bad_input():
    s = torch.tensor([0.1, 0.9], dtype=torch.bfloat16, requires_grad=True)
    assert binary_auroc(s, torch.tensor([0, 1])) == 1.0
    with pytest.raises(ValueError, match="0/1"):
        binary_auroc([0.1, 0.2, 0.3], [0, 1, -1])
    with pytest.raises(ValueError, match="NaN"):
        binary_auroc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="length"):
        binary_auroc([0.1, 0.2], [0, 1, 1])


def test_multilabel_auroc_ignores_entries_per_column():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.random((60, 4))
    targets = rng.integers(0, 2, size=(60, 4)).astype(float)
    targets[rng.random((60, 4)) < 0.2] = -1  # uncertain
    targets[:5, 1] = np.nan  # missing
    targets[:, 3] = np.where(targets[:, 3] == -1, -1, 1)  # only positives left -> NaN
    out = multilabel_auroc(scores, targets, ignore_index=-1)
    assert out.shape == (4,)
    for c in range(3):
        keep = (targets[:, c] != -1) & ~np.isnan(targets[:, c])
        assert out[c] == pytest.approx(metrics.roc_auc_score(targets[keep, c], scores[keep, c]))
    assert np.isnan(out[3])
    with pytest.raises(ValueError):
        multilabel_auroc(scores, targets[:, :2])


# -------------------------------------------------------------- retrieval
def test_identity_features_give_perfect_recall():
    feats = torch.eye(6, 8)
    out = retrieval_recall_at_k(feats, feats.numpy(), ks=(1, 5))
    assert out == {
        "i2t_R@1": 1.0, "t2i_R@1": 1.0, "mean_R@1": 1.0,
        "i2t_R@5": 1.0, "t2i_R@5": 1.0, "mean_R@5": 1.0,
    }


def test_known_ranks_on_hand_built_similarity():
    # Images are basis vectors e0..e3; text i points mostly at e_perm[i] with a little
    # of e_i, so image i's own text has cosine eps while text perm^-1(i) wins.
    n, eps = 4, 0.1
    img = torch.eye(n)
    perm = [1, 0, 3, 2]
    txt = torch.stack([img[perm[i]] + eps * img[i] for i in range(n)])
    # For image i: text j scores cos(e_i, e_perm[j] + eps e_j). j = perm^-1(i) scores
    # ~1, its own text scores eps -> rank 1 (second). Same for t2i by symmetry of perm.
    ranks = retrieval_ranks(img, txt)
    assert ranks.tolist() == [1, 1, 1, 1]
    out = retrieval_recall_at_k(img, txt, ks=(1, 2))
    assert out["i2t_R@1"] == 0.0 and out["i2t_R@2"] == 1.0
    assert out["t2i_R@1"] == 0.0 and out["t2i_R@2"] == 1.0
    assert out["mean_R@2"] == 1.0


def test_mixed_ranks_and_chunking_agree():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(50, 16, generator=g)
    txt = img + 0.8 * torch.randn(50, 16, generator=g)
    full = retrieval_recall_at_k(img, txt, ks=(1, 5, 10))
    chunked = retrieval_recall_at_k(img, txt, ks=(1, 5, 10), chunk_size=7)
    assert full == chunked
    # brute-force reference with argsort
    sim = torch.nn.functional.normalize(img, dim=1) @ torch.nn.functional.normalize(txt, dim=1).T
    order = sim.argsort(dim=1, descending=True)
    rank = (order == torch.arange(50)[:, None]).float().argmax(dim=1)
    for k in (1, 5, 10):
        assert full[f"i2t_R@{k}"] == pytest.approx((rank < k).float().mean().item())
    assert 0 < full["i2t_R@1"] < full["i2t_R@5"] <= full["i2t_R@10"] <= 1


def test_groups_count_identical_reports_as_matches():
    # Items 0-2 share one (normal) report; their text embeddings are identical, so
    # without groups image 1 and 2 cannot tell which copy is theirs.
    img = torch.tensor([[1.0, 0.1, 0.0], [1.0, 0.0, 0.1], [1.0, 0.05, 0.05], [0.0, 1.0, 0.0]])
    txt = torch.tensor([[1.0, 0.0, 0.0]] * 3 + [[0.0, 1.0, 0.0]])
    plain = retrieval_recall_at_k(img, txt, ks=(1,))
    assert plain["i2t_R@1"] == 0.25  # ties are pessimistic: only image 3 is unambiguous
    grouped = retrieval_recall_at_k(img, txt, ks=(1,), groups=[0, 0, 0, 1])
    assert grouped["i2t_R@1"] == 1.0 and grouped["t2i_R@1"] == 1.0


def test_collapsed_embeddings_score_zero():
    same = torch.ones(5, 4)
    assert retrieval_recall_at_k(same, same, ks=(1,))["mean_R@1"] == 0.0


def test_retrieval_bad_input():
    with pytest.raises(ValueError, match="paired"):
        retrieval_recall_at_k(torch.randn(3, 4), torch.randn(4, 4))
    with pytest.raises(ValueError, match="groups"):
        retrieval_recall_at_k(torch.randn(3, 4), torch.randn(3, 4), groups=[0, 1])
