"""The dependency rule of DESIGN.md: lower packages never import Lightning."""

from tests._multiprocess import run_python

LOWER = [
    "medvl",
    "medvl.layers",
    "medvl.encoders",
    "medvl.heads",
    "medvl.losses",
    "medvl.metrics",
    "medvl.data",
    "medvl.data.dataset",
    "medvl.data.synth",
    "medvl.data.transforms",
    "medvl.data.cache",
    "medvl.data.deid",
    "medvl.data.vocab",
    "medvl.data.reports",
    "medvl.data.formats",
    "medvl.kernels",
    "medvl.heads.report_decoder",
    "medvl.heads.generation",
    "medvl.export",
    "medvl._preprocess",
    "medvl.encoders.interop",
    "medvl.data.series",
    "medvl.data.monai_reader",
    "medvl.metrics.nlg",
    "medvl.metrics.clinical",
    "medvl.metrics.report_eval",
    "medvl.losses.distributed",
    "medvl.losses.classification",
    "medvl.encoders.source",
    "medvl.networks",
    "medvl.networks.vqa",
    "medvl.heads.vqa",
    "medvl.losses.vqa",
    "medvl.metrics.vqa",
    "medvl.data.vqa",
    "medvl.networks.classifier",
    "medvl.optim",
]

# One fresh interpreter imports the lower packages one by one and reports the first
# that brings Lightning into sys.modules.
_PROBE = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
    bad = sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning'))
    if bad:
        print(name, bad[:5]); sys.exit(1)
"""


def test_lower_packages_do_not_import_lightning():
    res = run_python(["-c", _PROBE, *LOWER], timeout=300)
    assert res.returncode == 0, f"Lightning imported by: {res.stdout.strip()} {res.stderr[-2000:]}"


def test_probe_detects_lightning():
    # The check can fail: importing a Lightning module is caught.
    res = run_python(["-c", _PROBE, "medvl.models"], timeout=300)
    assert res.returncode == 1 and "medvl.models" in res.stdout, (
        f"exit code {res.returncode}\nstdout: {res.stdout[-2000:]}\nstderr: {res.stderr[-2000:]}")
