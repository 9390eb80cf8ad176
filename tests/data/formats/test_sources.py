"""The source classes of the layouts: one place for each layout's options, seen by the CLI and by the readers."""

from __future__ import annotations

import inspect
import pickle
from dataclasses import fields

import pytest

from medvl.data import formats, sources
from medvl.data.formats import LayoutSource, RecordSource
from medvl.data.labels import CHEXPERT_LABELS

from .fixtures import make_chexpert, make_iu, make_mimic, make_pathvqa, make_pmc_oa, make_roco, make_slake, make_vqa_rad

# source class, its reader, the fixture
LAYOUTS = {
    "mimic_cxr": (formats.MIMICCXR, formats.read_mimic_cxr, make_mimic),
    "chexpert": (formats.CheXpert, formats.read_chexpert, make_chexpert),
    "iu_xray": (formats.IUXray, formats.read_iu_xray, make_iu),
    "roco": (formats.ROCO, formats.read_roco, make_roco),
    "pmc_oa": (formats.PMCOA, formats.read_pmc_oa, make_pmc_oa),
    "vqa_rad": (formats.VQARAD, formats.read_vqa_rad, make_vqa_rad),
    "slake": (formats.SLAKE, formats.read_slake, make_slake),
    "pathvqa": (formats.PathVQA, formats.read_pathvqa, make_pathvqa),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_the_reader_is_the_source(tmp_path, name):
    cls, read, make = LAYOUTS[name]
    root = make(tmp_path)
    src = cls(root, on_error="skip")
    assert read(root, on_error="skip") == src.result() and src.options["on_error"] == "skip"
    with pytest.raises(TypeError, match="no_such_option"):
        read(root, no_such_option=1)
    with pytest.raises(TypeError):
        read(root, "skip")  # options are keyword-only, as they always were
    clone = pickle.loads(pickle.dumps(src))
    assert clone._result is None and clone.options == src.options


def test_every_option_is_typed_and_documented_for_the_cli():
    from jsonargparse import ArgumentParser

    for cls in (*(c for c, _, _ in LAYOUTS.values()), formats.Table):
        params = inspect.signature(cls).parameters
        assert all(p.annotation is not inspect.Parameter.empty for p in params.values()), cls
        assert all(p.kind is p.KEYWORD_ONLY for p in list(params.values())[1:]), cls
        parser = ArgumentParser()
        parser.add_class_arguments(cls, "s")
        docs = {a.dest[2:]: a.help for a in parser._actions if a.dest.startswith("s.")}
        assert set(docs) == set(params) and all(docs.values()), (cls.__name__, docs)


def test_no_option_hides_the_source_api():
    api = {n for n in dir(LayoutSource) if not n.startswith("__")} - {f.name for f in fields(LayoutSource)}
    for cls, _, _ in LAYOUTS.values():
        assert not api & {f.name for f in fields(cls)}, cls
    assert "image_root" in inspect.signature(formats.Table).parameters and callable(formats.Table("t.csv").image_root)


def test_label_names_of_each_layout():
    assert formats.MIMICCXR("r").label_names() == list(CHEXPERT_LABELS)
    assert formats.MIMICCXR("r", labels="none").label_names() == []
    assert formats.CheXpert("r").default_label_names == CHEXPERT_LABELS
    assert all(c("r").default_label_names == () for c in (formats.IUXray, formats.ROCO, formats.PMCOA))
    assert formats.Table("t.csv", label_cols=["Pleural Effusion", "My Label"]).default_label_names == (
        "pleural_effusion", "my_label")
    assert formats.Table("t.csv").default_label_names is None


def test_the_sources_module_names_the_same_classes():
    for name in ("MIMICCXR", "CheXpert", "IUXray", "ROCO", "PMCOA", "Table", "RecordSource"):
        assert getattr(sources, name) is getattr(formats, name)
    assert issubclass(sources.Manifest, RecordSource)
