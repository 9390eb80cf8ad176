"""ResumableLoader: after load_state_dict the loader yields the rest of the interrupted epoch, and only that.

The end-to-end kill-and-resume run is tests/test_resume.py; these hold the loader to the
same promise on its own: every cut point, with augmentation, with loader workers, under
Lightning's DDP sampler wrapper, and with the consumed batches never read again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from medvl.data.dataset import EpochSampler, ResumableLoader, ResumeMismatchError
from medvl.datamodules import SyntheticCXR

SIZE = 32
PER_EPOCH = 5  # 21 training studies in batches of 4


@pytest.fixture(scope="module")
def synth(make_synthetic) -> Path:
    return make_synthetic(24, 5)


def _train_loader(root: Path, num_workers: int) -> ResumableLoader:
    dm = SyntheticCXR(root=str(root), n=24, img_size=SIZE, batch_size=4, num_workers=num_workers, augment=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableLoader) and len(loader) == PER_EPOCH
    return loader


def _epochs(loader, epochs) -> list[tuple[int, dict]]:
    out = []
    for epoch in epochs:  # as Lightning's fit loop: set_epoch, then the epoch's iterator
        loader.sampler.set_epoch(epoch)
        out += [(epoch, batch) for batch in loader]
    return out


def _same(got: list[tuple[int, dict]], expected: list[tuple[int, dict]]) -> None:
    assert [(e, b["study_id"]) for e, b in got] == [(e, b["study_id"]) for e, b in expected]
    for (_, g), (_, x) in zip(got, expected):
        assert torch.equal(g["image"], x["image"])  # the augmentation too


def _cut_and_resume(root: Path, num_workers: int, k: int) -> tuple[list, dict]:
    """Hand out k batches of the two-epoch run, save the state, resume in a new loader: the batches after."""
    first = _train_loader(root, num_workers)
    first.sampler.set_epoch(k // PER_EPOCH)
    it = iter(first)
    for _ in range(k % PER_EPOCH):
        next(it)
    state = first.state_dict()
    del it, first
    resumed = _train_loader(root, num_workers)
    resumed.load_state_dict(state)
    return _epochs(resumed, range(resumed.sampler.epoch, 2)), state


def test_every_cut_point_resumes_with_the_uninterrupted_batches(synth, seeded):
    whole = _epochs(_train_loader(synth, 0), (0, 1))
    assert len(whole) == 2 * PER_EPOCH
    for k in range(2 * PER_EPOCH + 1):
        rest, state = _cut_and_resume(synth, 0, k)
        assert state["epoch"] == k // PER_EPOCH and state["batches"] == k % PER_EPOCH
        _same(rest, whole[k:])


def test_loader_workers_resume_alike(synth, seeded):
    whole = _epochs(_train_loader(synth, 0), (0, 1))
    for k in (3, 7):  # inside epoch 0 (the workers' first epoch) and inside epoch 1
        rest, _ = _cut_and_resume(synth, 2, k)
        _same(rest, whole[k:])


def test_the_consumed_batches_are_not_read_again(synth, seeded):
    loader = _train_loader(synth, 0)
    dataset = loader.dataset
    reads: list[int] = []
    load = dataset.load_image
    dataset.load_image = lambda i: reads.append(i) or load(i)
    loader.load_state_dict({**loader.state_dict(), "epoch": 0, "batches": 3})
    loader.sampler.set_epoch(0)
    assert len(list(loader)) == PER_EPOCH - 3
    assert len(reads) == 2 * 4
    reads.clear()
    assert len(list(loader)) == PER_EPOCH  # the iterator after that is a whole epoch again
    assert len(reads) == PER_EPOCH * 4


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def _ddp_loader(rank: int, n: int = 22, batch_size: int = 2):
    """A training loader as Lightning makes it for DDP rank ``rank`` of 2: re-created around its sampler wrapper."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
    from lightning.pytorch.utilities.data import _update_dataloader
    from lightning.fabric.utilities.data import _replace_dunder_methods

    data = _Indices(n)
    with _replace_dunder_methods(DataLoader, "dataset"):  # as Lightning, while the data module builds it
        loader = ResumableLoader(data, batch_size=batch_size, sampler=EpochSampler(data, seed=3), drop_last=True)
    wrapper = DistributedSamplerWrapper(loader.sampler, num_replicas=2, rank=rank, shuffle=True, seed=0)
    loader = _update_dataloader(loader, wrapper)
    assert isinstance(loader, ResumableLoader) and loader.sampler is wrapper
    return loader


def test_under_ddp_the_position_is_in_the_ranks_own_batches():
    for rank in (0, 1):
        full = _ddp_loader(rank)
        whole = []
        for epoch in (0, 1):
            full.sampler.set_epoch(epoch)  # Lightning's wrapper forwards it to EpochSampler
            whole += [b.tolist() for b in full]
        per_epoch = len(full)
        assert len(whole) == 2 * per_epoch == 10
        for k in (2, per_epoch + 3):
            cut = _ddp_loader(rank)
            cut.sampler.set_epoch(k // per_epoch)
            it = iter(cut)
            for _ in range(k % per_epoch):
                next(it)
            resumed = _ddp_loader(rank)
            resumed.load_state_dict(cut.state_dict())
            rest = []
            for epoch in range(k // per_epoch, 2):
                resumed.sampler.set_epoch(epoch)
                rest += [b.tolist() for b in resumed]
            assert rest == whole[k:], (rank, k)


def test_a_position_is_skipped_only_inside_its_own_epoch():
    data = _Indices(12)
    loader = ResumableLoader(data, batch_size=3, sampler=EpochSampler(data, seed=1), drop_last=True)
    state = {**loader.state_dict(), "epoch": 0, "batches": 2}
    loader.load_state_dict(state)
    assert loader.state_dict()["batches"] == 2  # pending: what a checkpoint saved now would hold
    loader.sampler.set_epoch(1)  # Lightning ended epoch 0 early (limit_train_batches): a whole epoch 1
    assert len(list(loader)) == 4
    loader.load_state_dict({**state, "batches": 4})  # a complete epoch: the next one, whole
    assert loader.sampler.epoch == 1 and len(list(loader)) == 4


def test_a_state_of_another_shape_is_refused():
    data = _Indices(12)
    loader = ResumableLoader(data, batch_size=3, sampler=EpochSampler(data, seed=1), drop_last=True)
    state = loader.state_dict()
    other = ResumableLoader(data, batch_size=4, sampler=EpochSampler(data, seed=1), drop_last=True)
    with pytest.raises(ResumeMismatchError, match=r"num_batches: checkpoint 4, now 3; batch_size: checkpoint 3, now 4"):
        other.load_state_dict(state)
