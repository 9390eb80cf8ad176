"""The frozen encoder's feature cache: each image encoded once, hits equal to the encoder, bounded, reset on load."""

from __future__ import annotations

import pytest
import torch

from medvl.networks import ReportGenerator
from medvl.networks._feature_cache import FeatureCache
from medvl.losses import VQALoss
from tests.networks.test_vqa import QUESTIONS, _fusion, _images, _vocab


class _Counting(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return self.lin(x.flatten(1)).unsqueeze(1)  # (B, 1, 3) "tokens"


def test_hits_are_the_encoders_output_and_only_misses_are_encoded():
    enc, cache = _Counting(), FeatureCache(budget_mb=1)
    x = torch.randn(5, 4)
    with torch.no_grad():
        first = cache(enc, x)
        assert enc.seen == 5 and (cache.hits, cache.misses) == (0, 5)
        mixed = torch.cat([x[[3, 1]], torch.randn(2, 4), x[[3]]])  # three held, two new
        out = cache(enc, mixed)
    assert enc.seen == 7 and (cache.hits, cache.misses) == (3, 7)
    torch.testing.assert_close(out, enc(mixed), rtol=0, atol=1e-6)
    torch.testing.assert_close(first, enc(x), rtol=0, atol=1e-6)
    x2 = x.clone()
    x2[0, 0] = torch.nextafter(x2[0, 0], torch.tensor(float("inf")))  # one value one ulp up: another image, a miss
    with torch.no_grad():
        cache(enc, x2[:1])
    assert cache.misses == 8


def test_the_budget_evicts_least_recently_used_and_zero_disables():
    enc = _Counting()
    per_image = 3 * 4  # (1, 3) float32
    cache = FeatureCache(budget_mb=2 * per_image / 2**20)  # room for two images
    a, b, c = torch.randn(3, 1, 4)
    with torch.no_grad():
        cache(enc, a), cache(enc, b), cache(enc, a), cache(enc, c)  # b is the least recently used
        assert len(cache) == 2
        seen = enc.seen
        cache(enc, a)
        assert enc.seen == seen  # kept
        cache(enc, b)
        assert enc.seen == seen + 1  # evicted, encoded again
        off = FeatureCache(budget_mb=0)
        off(enc, a), off(enc, a)
    assert len(off) == 0 and enc.seen == seen + 3
    with pytest.raises(ValueError, match=">= 0"):
        FeatureCache(budget_mb=-1)


def test_autocast_and_dtype_are_part_of_the_key():
    enc, cache = _Counting(), FeatureCache(budget_mb=1)
    x = torch.randn(2, 4)
    with torch.no_grad():
        fp32 = cache(enc, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = cache(enc, x)
    assert enc.seen == 4 and fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16


def test_fusion_vqa_encodes_each_image_once_and_answers_as_without_the_cache():
    plain, cached = _fusion(freeze="all"), _fusion(freeze="all", feature_cache_mb=16)
    cached.load_state_dict(plain.state_dict())
    calls = []
    real = cached.visual.forward_features
    cached.visual.forward_features = lambda x: (calls.append(x.shape[0]), real(x))[1]
    images = _images(2).repeat(2, 1, 1, 1)  # two images, two questions each
    plain.eval(), cached.eval()
    for _ in range(3):  # epochs
        torch.testing.assert_close(cached(images, QUESTIONS)["logits"], plain(images, QUESTIONS)["logits"],
                                   rtol=1e-5, atol=1e-6)
    assert calls == [2]  # the first batch's two distinct images, nothing after
    assert (cached.feature_cache.misses, cached.feature_cache.hits) == (2, 10)
    cached.load_state_dict(plain.state_dict())  # new weights: the cache is emptied
    assert len(cached.feature_cache) == 0


def test_what_is_cached_follows_the_freeze_mode():
    assert _fusion(freeze="none", feature_cache_mb=16).feature_cache is None
    assert _fusion(freeze="all").feature_cache is None  # off by default
    assert _fusion(freeze="all", feature_cache_mb=16).feature_cache.trunk_blocks is None  # the whole output
    depth = len(_fusion().visual.blocks)
    assert _fusion(freeze="partial", unfreeze_last=1, feature_cache_mb=16).feature_cache.trunk_blocks == depth - 1
    assert _fusion(freeze="partial", unfreeze_last=depth, feature_cache_mb=16).feature_cache is None  # no trunk
    # a trunk with dropout, drop-path or a BatchNorm stem is cached too: its owner keeps it in eval mode
    for kwargs in ({"proj_drop_rate": 0.1, "drop_path_rate": 0.2}, {"stem": "conv"}):
        net = _fusion(freeze="partial", unfreeze_last=1, feature_cache_mb=16, vision_kwargs=kwargs).train()
        assert net.feature_cache.trunk_blocks == depth - 1
        assert not net.visual.patch_embed.training and not net.visual.blocks[0].training
        assert net.visual.blocks[-1].training and net.visual.norm.training
    gen = ReportGenerator(vision_encoder="test_vit_tiny_patch8", img_size=32, freeze="all", vocab=_vocab(),
                          decoder_kwargs={"dim": 32, "depth": 1, "num_heads": 2}, feature_cache_mb=16)
    with torch.no_grad():
        gen.visual_context(_images(3)), gen.visual_context(_images(3))
    assert (gen.feature_cache.hits, gen.feature_cache.misses) == (3, 3)


@pytest.mark.parametrize("kwargs", [{}, {"rope": True, "reg_tokens": 2}])
def test_trunk_and_rest_compose_to_forward_features(kwargs):
    from medvl.encoders import create_encoder

    torch.manual_seed(0)
    enc = create_encoder("test_vit_tiny_patch8", img_size=32, in_chans=1, **kwargs).eval()
    x = torch.randn(2, 1, 32, 32)
    for k in range(len(enc.blocks) + 1):
        torch.testing.assert_close(enc.forward_rest(enc.forward_trunk(x, k), k, x.shape[2:]), enc.forward_features(x))


@pytest.mark.parametrize("kwargs", [{}, {"stem": "conv"}], ids=["patch-stem", "conv-stem-batchnorm"])
def test_partial_freeze_trains_the_last_blocks_on_the_cached_trunk(kwargs):
    plain = _fusion(freeze="partial", unfreeze_last=1, vision_kwargs=kwargs)
    cached = _fusion(freeze="partial", unfreeze_last=1, feature_cache_mb=16, vision_kwargs=kwargs)
    cached.load_state_dict(plain.state_dict())
    images = _images(2).repeat(2, 1, 1, 1)
    targets = torch.tensor([0, 2, 1, 3])
    for model in (plain, cached):
        model.train()
        for _ in range(2):  # two steps: the second reads the trunk from the cache
            model.zero_grad()
            VQALoss()(**model(images, QUESTIONS), targets=targets).backward()
    assert cached.feature_cache.misses == 2 and cached.feature_cache.hits == 6
    last = dict(plain.visual.blocks[-1].named_parameters())
    for name, p in cached.visual.blocks[-1].named_parameters():
        torch.testing.assert_close(p.grad, last[name].grad, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in cached.visual.blocks[0].parameters())  # the frozen trunk
    torch.testing.assert_close(cached.visual.norm.weight.grad, plain.visual.norm.weight.grad, rtol=1e-4, atol=1e-6)


def test_the_tasks_pass_the_budget_to_their_networks():
    from medvl.models import VQA, ReportGeneration

    vqa = VQA(head="fusion", vision_encoder="test_vit_tiny_patch8", img_size=32, text_encoder="test_text_tiny",
              answers=["yes", "no"], freeze="all", feature_cache_mb=8,
              fusion_kwargs={"dim": 32, "depth": 1, "num_heads": 2})
    report = ReportGeneration(vision_encoder="test_vit_tiny_patch8", img_size=32, vocab=_vocab(), freeze="all",
                              decoder_kwargs={"dim": 32, "depth": 1, "num_heads": 2}, feature_cache_mb=8)
    assert vqa.model.feature_cache.budget == report.model.feature_cache.budget == 8 * 2**20
    assert vqa.hparams.feature_cache_mb == 8  # recorded with the run
