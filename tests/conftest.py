"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def seeded(monkeypatch):
    """The run's seed as ``seed_everything(7)`` leaves it (``PL_GLOBAL_SEED``), undone after the test."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")


@pytest.fixture(scope="session")
def make_synthetic(tmp_path_factory) -> Callable[[int, int], Path]:
    """``make(n, seed)``: a synthetic dataset written through ``medvl synth``, once per (n, seed).

    Modules asking for the same ``(n, seed)`` share the folder: treat it as read-only.
    """
    from medvl.cli import main

    made: dict[tuple[int, int], Path] = {}

    def make(n: int, seed: int) -> Path:
        if (n, seed) not in made:
            root = tmp_path_factory.mktemp(f"synthetic_n{n}_s{seed}")
            assert main(["synth", "--out", str(root), "--n", str(n), "--seed", str(seed), "--workers", "1"]) == 0
            made[n, seed] = root
        return made[n, seed]

    return make
