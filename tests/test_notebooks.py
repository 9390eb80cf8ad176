"""The notebooks run top to bottom (their code cells, in order, in a fresh interpreter).

No Jupyter needed: the code cells are joined and executed by ``python`` in a copy of the
notebook folder. The encoder notebook gets a tiny export through ``MEDVL_EXPORT``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests._multiprocess import run_python

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def _code(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory) -> Path:
    import medvl

    out = tmp_path_factory.mktemp("export") / "tiny"
    encoder = medvl.create_encoder("test_vit_tiny_patch8", img_size=32, in_chans=1)
    return medvl.export_encoder(encoder, out, formats=(), image_mean=0.5, image_std=0.25)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(notebook, tiny_export, tmp_path):
    script = tmp_path / f"{notebook.stem}.py"
    script.write_text(_code(notebook))
    env = {**os.environ, "MEDVL_EXPORT": str(tiny_export), "MPLBACKEND": "Agg"}
    res = run_python([str(script)], cwd=tmp_path, env=env, timeout=600)
    assert res.returncode == 0, f"{notebook.name} failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    if "figures" in script.read_text():
        pngs = list((tmp_path / "figures").glob("*.png"))
        assert pngs and all(p.stat().st_size > 1000 for p in pngs)


def test_notebooks_use_only_the_public_api():
    for notebook in NOTEBOOKS:
        code = _code(notebook)
        assert "medvl._" not in code and "import medvl." not in code, notebook.name
