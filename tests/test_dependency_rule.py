"""The dependency rule of DESIGN.md: lower packages never import Lightning."""

import subprocess
import sys

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
    res = subprocess.run([sys.executable, "-c", _PROBE, *LOWER], capture_output=True, text=True)
    assert res.returncode == 0, f"Lightning imported by: {res.stdout.strip()} {res.stderr[-2000:]}"


def test_probe_detects_lightning():
    # The check can fail: importing a Lightning module is caught.
    res = subprocess.run([sys.executable, "-c", _PROBE, "medvl.models"], capture_output=True, text=True)
    assert res.returncode == 1 and "medvl.models" in res.stdout
