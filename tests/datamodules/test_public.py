"""Public datasets end to end: a source in the official layout composed with the loader, one batch."""

from __future__ import annotations

import csv
import logging

import pytest
import torch

from medvl.data import sources
from medvl.data.labels import CHEXPERT_LABELS
from medvl.datamodules import ImageTextDataModule
from tests.data.formats.fixtures import make_chexpert, make_iu, make_mimic, make_pmc_oa, make_roco, write_image

TINY = dict(img_size=32, batch_size=2, augment=False)


def MIMICCXR(root, **kw):  # noqa: N802  (reads like the source it builds)
    src = {k: kw.pop(k) for k in list(kw) if k not in TINY and k not in ("augment", "cache_dir")}
    return ImageTextDataModule(sources.MIMICCXR(root, **src), **kw)


def CheXpert(root, **kw):  # noqa: N802
    src = {k: kw.pop(k) for k in list(kw) if k not in TINY}
    return ImageTextDataModule(sources.CheXpert(root, **src), **kw)


def _table(tmp_path):
    rows = [("images/t0.png", "FINDINGS: Clear lungs.\nIMPRESSION: Normal.", "train", "0"),
            ("images/t1.png", "Small right pleural effusion.", "train", "1"),
            ("images/t2.png", "Mild cardiomegaly.", "train", "-1"),
            ("images/t3.png", "No acute process.", "val", "")]
    for k, row in enumerate(rows):
        write_image(tmp_path / row[0], seed=k)
    with (tmp_path / "pairs.csv").open("w", newline="") as f:
        csv.writer(f).writerows([("image", "report", "split", "Pleural Effusion"), *rows])
    return tmp_path / "pairs.csv"


CASES = {
    # name -> (build the DataModule from tmp_path, expected summary, label names, has text)
    "mimic": (lambda t: MIMICCXR(root=str(make_mimic(t)), **TINY),
              "found 3, dropped 4 (missing image: 1, no frontal image: 1, no findings section: 1, missing report: 1)",
              CHEXPERT_LABELS, True),
    "chexpert": (lambda t: CheXpert(root=str(make_chexpert(t)), **TINY),
                 "found 4, dropped 2 (not frontal: 1, missing image: 1)", CHEXPERT_LABELS, False),
    "iu": (lambda t: ImageTextDataModule(sources.IUXray(str(make_iu(t)), fractions=(1.0, 0.0, 0.0)), **TINY),
           "found 4, dropped 2 (no findings section: 1, no image: 1)", (), True),
    "roco": (lambda t: ImageTextDataModule(sources.ROCO(str(make_roco(t))), **TINY),
             "found 5, dropped 1 (missing image: 1)", (), True),
    "pmc_oa": (lambda t: ImageTextDataModule(sources.PMCOA(str(make_pmc_oa(t))), **TINY),
               "found 5, dropped 1 (missing image: 1)", (), True),
    "table": (lambda t: ImageTextDataModule(sources.Table(str(_table(t)), label_cols=["Pleural Effusion"]), **TINY),
              "found 4, dropped 0", ("pleural_effusion",), True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_setup_fit_and_one_training_batch(tmp_path, caplog, name):
    build, summary, label_names, has_text = CASES[name]
    dm = build(tmp_path)
    with caplog.at_level(logging.INFO, logger="medvl"):
        dm.setup("fit")
    assert f"{type(dm.source).__name__}: {summary}" in caplog.text
    batch = next(iter(dm.train_dataloader()))
    assert batch["n_skipped"] == 0
    assert batch["image"].shape == (2, 1, 32, 32) and batch["image"].dtype == torch.float32
    assert torch.isfinite(batch["image"]).all() and batch["image"].max() > 0
    assert batch["labels"].shape == (2, len(label_names))
    assert dm.label_names == list(label_names)
    assert all(bool(r) for r in batch["report"]) == has_text
    assert len(dm.datasets["train"]) >= 2


def test_labels_and_text_reach_the_batch(tmp_path):
    dm = MIMICCXR(root=str(make_mimic(tmp_path / "m")), uncertainty="zeros", section="impression", **TINY)
    dm.setup("validate")
    val = next(iter(dm.val_dataloader()))
    assert val["study_id"] == ["s57375967"] and val["report"] == ["Right lower lobe pneumonia."]
    expected = {"consolidation": 1.0, "pneumonia": 0.0}  # U-Zeros; unmentioned findings are -1 (ignored)
    assert val["labels"][0].tolist() == [expected.get(n, -1.0) for n in CHEXPERT_LABELS]
    chexpert = CheXpert(root=str(make_chexpert(tmp_path / "c")), valid_split="test", **TINY)
    chexpert.setup("test")
    test = next(iter(chexpert.test_dataloader()))
    expected = {"cardiomegaly": 1.0, "lung_opacity": 1.0}
    assert test["labels"][0].tolist() == [expected.get(n, -1.0) for n in CHEXPERT_LABELS]


def test_augmented_training_batch(tmp_path):
    dm = ImageTextDataModule(sources.MIMICCXR(str(make_mimic(tmp_path))), img_size=32, batch_size=2, augment=True)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 32, 32) and torch.isfinite(batch["image"]).all()


def test_lightning_cli_can_select_and_configure_them(tmp_path):
    import lightning as L
    from jsonargparse import ArgumentParser

    root = make_mimic(tmp_path)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(L.LightningDataModule, "data")

    def config(**source):
        return {"data": {"class_path": "medvl.datamodules.ImageTextDataModule",
                         "init_args": {"source": {"class_path": "medvl.data.sources.MIMICCXR",
                                                  "init_args": {"root": str(root), **source}},
                                       "img_size": 32}}}

    dm = parser.instantiate_classes(parser.parse_object(config(section="both", views="all"))).data
    assert isinstance(dm.source, sources.MIMICCXR) and dm.source.options["section"] == "both" and dm.img_size == 32
    assert dm.all_records()[0]["report"].startswith("FINDINGS: ")
    assert dm.label_names == list(CHEXPERT_LABELS)
    with pytest.raises(Exception, match="section"):
        parser.parse_object(config(section="summary"))


def test_old_names_still_work_and_warn(tmp_path):
    from medvl.datamodules import MIMICCXR as Old

    with pytest.warns(DeprecationWarning, match="ImageTextDataModule"):
        dm = Old(root=str(make_mimic(tmp_path)), section="impression", img_size=32, batch_size=2)
    assert isinstance(dm, ImageTextDataModule) and dm.source.options["section"] == "impression"


def test_label_names_the_data_lacks_are_an_error(tmp_path):
    dm = ImageTextDataModule(sources.ROCO(str(make_roco(tmp_path))), label_names=["cardiomegaly"], **TINY)
    with pytest.raises(ValueError, match=r"label_names \['cardiomegaly'\] are not labels of this data"):
        dm.setup("fit")


def test_public_datamodule_reads_from_a_cache(tmp_path):
    root = make_mimic(tmp_path / "m")
    plain = MIMICCXR(root=str(root), **TINY)
    cached = MIMICCXR(root=str(root), cache_dir=str(tmp_path / "cache"), **TINY)
    cached.prepare_data()  # builds the shards
    assert (tmp_path / "cache" / "cache.json").is_file()
    plain.setup("fit")
    cached.setup("fit")
    a = next(iter(plain.val_dataloader()))
    b = next(iter(cached.val_dataloader()))
    assert a["study_id"] == b["study_id"] and a["report"] == b["report"]
    torch.testing.assert_close(a["labels"], b["labels"])
    torch.testing.assert_close(a["image"], b["image"], atol=0.5 / 255 / 0.25 + 1e-6, rtol=0)  # uint8 shards, / std
