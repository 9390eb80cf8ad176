"""Tiny fixtures in the official on-disk layouts of the public datasets.

Each ``make_<name>(tmp_path)`` writes a handful of studies exactly the way the
release lays them out (file names, column names, value spellings) and returns the
folder a user would pass as ``root``. Images are a few pixels, written by Pillow.
The contents of each fixture are listed in its docstring, so tests can state what
a reader must find.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CHEXPERT_HEADER = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
]
MIMIC_LABEL_HEADER = sorted(CHEXPERT_HEADER)  # the MIMIC tables list the observations alphabetically


def write_image(path: Path, *, seed: int = 0, size: tuple[int, int] = (20, 16), rgb: bool = False) -> Path:
    """A small random greyscale (or RGB) PNG/JPEG, format from the suffix."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if rgb else (size[1], size[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def _write_csv(path: Path, header: list[str], rows: list[list[str]], *, gz: bool = False) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(buf.getvalue().encode()))
    else:
        path.write_text(buf.getvalue())
    return path


# ----------------------------------------------------------------------------- MIMIC-CXR
MIMIC_REPORT_PA_LAT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___F with new onset ascites  // eval for infection
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  None.
 
 FINDINGS: 
 
 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.  Clips project over the left lung,
 potentially within the breast. The imaged upper abdomen is unremarkable.
 Chronic deformity of the posterior left sixth and seventh ribs are noted.
 
 IMPRESSION: 
 
 No acute cardiopulmonary process.
"""

MIMIC_REPORT_PORTABLE = """                                 FINAL REPORT
 INDICATION:  ___-year-old male with shortness of breath, evaluate for edema.
 
 COMPARISON:  Chest radiograph from ___.
 
 FINDINGS AND IMPRESSION:  Portable AP upright view of the chest. Moderate
 cardiomegaly is stable. There is mild pulmonary vascular congestion. Small
 bilateral pleural effusions, possibly slightly increased on the left. No
 pneumothorax.
"""

MIMIC_REPORT_VAL = """                                 FINAL REPORT
 HISTORY:  Cough and fever.
 
 FINDINGS:  Right lower lobe opacity, concerning for pneumonia.  Heart size is
 normal.
 
 IMPRESSION:  Right lower lobe pneumonia.
"""

MIMIC_REPORT_IMPRESSION_ONLY = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)
 
 INDICATION:  Line placement.
 
 IMPRESSION:  Right internal jugular central venous catheter terminates in the
 mid SVC.  No pneumothorax.
"""


def make_mimic(tmp_path: Path, *, reports: str = "folder") -> Path:
    """MIMIC-CXR-JPG 2.0.0: ``files/`` tree, the four ``mimic-cxr-2.0.0-*`` tables, reports.

    Studies (subject -> study: images, split, report):

    * p10000032/s50414267: PA ``02aa804e-...`` + LATERAL ``174413ec-...``; train; full report.
      chexpert: No Finding 1.0; negbio: No Finding 1.0, Support Devices 0.0.
    * p10000032/s53189527: AP; train; "FINDINGS AND IMPRESSION". chexpert: Cardiomegaly 1.0,
      Edema -1.0 (uncertain), Pleural Effusion 1.0, Pneumothorax 0.0.
    * p10000764/s57375967: PA; ``validate``; findings + impression. chexpert: Pneumonia -1.0,
      Consolidation 1.0.
    * p10000898/s50771383: PA whose JPG file is missing; test.
    * p10000935/s51178377: LATERAL only; train.
    * p10000935/s56164612: PA; train; impression-only report.
    * p10000980/s58219844: PA; test; no report file.

    The split table is gzipped (as PhysioNet ships it); the others are plain CSV.
    ``reports``: ``"folder"`` (``mimic-cxr-reports/files/...``), ``"zip"``
    (``mimic-cxr-reports.zip``) or ``"inline"`` (next to the study folders, as in the
    DICOM release).
    """
    root = tmp_path / "mimic-cxr-jpg" / "2.0.0"
    studies = [
        # subject, study, [(dicom_id, view)], split, report, chexpert labels
        ("10000032", "50414267", [("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA"),
                                  ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL")],
         "train", MIMIC_REPORT_PA_LAT, {"No Finding": "1.0"}),
        ("10000032", "53189527", [("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "AP")], "train",
         MIMIC_REPORT_PORTABLE,
         {"Cardiomegaly": "1.0", "Edema": "-1.0", "Pleural Effusion": "1.0", "Pneumothorax": "0.0"}),
        ("10000764", "57375967", [("096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "PA")], "validate",
         MIMIC_REPORT_VAL, {"Pneumonia": "-1.0", "Consolidation": "1.0"}),
        ("10000898", "50771383", [("b75df6e5-7e0c2a18-bb4d0e84-4bd8dd10-a8b0e2c6", "PA")], "test",
         MIMIC_REPORT_VAL, {}),
        ("10000935", "51178377", [("6ad03ed1-97ee17ee-9cf8b320-f7011003-cd93b42d", "LATERAL")], "train",
         MIMIC_REPORT_VAL, {}),
        ("10000935", "56164612", [("3b8bfe08-9a4a5d1b-0c8e2b29-2a7c4c5e-1f1d3e4a", "PA")], "train",
         MIMIC_REPORT_IMPRESSION_ONLY, {"Support Devices": "1.0"}),
        ("10000980", "58219844", [("e084de3b-be89b11e-20fe3f9f-9c8d8dfe-4cfd202c", "PA")], "test", None, {}),
    ]
    split_rows, meta_rows, label_rows, negbio_rows = [], [], [], []
    report_files: dict[str, str] = {}
    for i, (subject, study, images, split, report, labels) in enumerate(studies):
        folder = f"files/p{subject[:2]}/p{subject}/s{study}"
        for j, (dicom_id, view) in enumerate(images):
            split_rows.append([dicom_id, study, subject, split])
            meta_rows.append([dicom_id, subject, study, "CHEST (PA AND LAT)", view, "3056", "2544", "21800506",
                              "213014.531", "CHEST (PA AND LAT)", "postero-anterior", "Erect"])
            if study != "50771383":
                write_image(root / folder / f"{dicom_id}.jpg", seed=10 * i + j, size=(24, 28))
        label_rows.append([subject, study] + [labels.get(c, "") for c in MIMIC_LABEL_HEADER])
        negbio = dict(labels)
        if study == "50414267":
            negbio["Support Devices"] = "0.0"
        negbio_rows.append([subject, study] + [negbio.get(c, "") for c in MIMIC_LABEL_HEADER])
        if report is not None:
            report_files[f"{folder}.txt"] = report
    _write_csv(root / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"], split_rows, gz=True)
    _write_csv(root / "mimic-cxr-2.0.0-metadata.csv",
               ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"], meta_rows)
    _write_csv(root / "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id", *MIMIC_LABEL_HEADER], label_rows)
    _write_csv(root / "mimic-cxr-2.0.0-negbio.csv", ["subject_id", "study_id", *MIMIC_LABEL_HEADER], negbio_rows)
    if reports == "zip":
        import zipfile

        with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as z:
            for rel, text in report_files.items():
                z.writestr(rel, text)
    else:
        base = root / "mimic-cxr-reports" if reports == "folder" else root
        for rel, text in report_files.items():
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            (base / rel).write_text(text)
    return root


# ----------------------------------------------------------------------------- CheXpert
def make_chexpert(tmp_path: Path) -> Path:
    """``CheXpert-v1.0-small/`` with train.csv, valid.csv and images; returns its parent.

    train.csv rows (Path, view, labels):

    * patient00001/study1/view1_frontal.jpg: Frontal AP; No Finding 1.0 (others blank).
    * patient00002/study2/view1_frontal.jpg: Frontal AP; Edema -1.0, Pleural Effusion 1.0,
      Cardiomegaly 0.0, Support Devices 1.0.
    * patient00002/study2/view2_lateral.jpg: Lateral (blank AP/PA); same labels.
    * patient00003/study1/view1_frontal.jpg: Frontal PA; image file missing.
    * patient00004/study1/view1_frontal.jpg: Frontal PA; Atelectasis -1.0.

    valid.csv: patient64541/study1/view1_frontal.jpg, Frontal AP, Cardiomegaly 1.0,
    Lung Opacity 1.0.
    """
    data = tmp_path / "CheXpert-v1.0-small"
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_HEADER]

    def row(path: str, sex: str, age: str, fl: str, appa: str, labels: dict[str, str]) -> list[str]:
        return [f"CheXpert-v1.0-small/{path}", sex, age, fl, appa] + [labels.get(c, "") for c in CHEXPERT_HEADER]

    sick = {"Edema": "-1.0", "Pleural Effusion": "1.0", "Cardiomegaly": "0.0", "Support Devices": "1.0"}
    train = [
        ("train/patient00001/study1/view1_frontal.jpg", "Female", "68", "Frontal", "AP", {"No Finding": "1.0"}),
        ("train/patient00002/study2/view1_frontal.jpg", "Male", "87", "Frontal", "AP", sick),
        ("train/patient00002/study2/view2_lateral.jpg", "Male", "87", "Lateral", "", sick),
        ("train/patient00003/study1/view1_frontal.jpg", "Male", "41", "Frontal", "PA", {}),
        ("train/patient00004/study1/view1_frontal.jpg", "Female", "20", "Frontal", "PA", {"Atelectasis": "-1.0"}),
    ]
    valid = [("valid/patient64541/study1/view1_frontal.jpg", "Male", "73", "Frontal", "AP",
              {"Cardiomegaly": "1.0", "Lung Opacity": "1.0"})]
    _write_csv(data / "train.csv", header, [row(*r) for r in train])
    _write_csv(data / "valid.csv", header, [row(*r) for r in valid])
    for i, r in enumerate(train + valid):
        if "patient00003" not in r[0]:
            write_image(data / r[0], seed=i, size=(20, 24))
    return tmp_path


# ----------------------------------------------------------------------------- IU X-ray
def iu_xml(uid: int, sections: dict[str, str], images: list[str], mesh_major: list[str],
           mesh_auto: list[str] = ()) -> str:
    """One ``ecgen-radiology/<n>.xml`` report in the Open-i schema."""
    abstract = "\n".join(f'            <AbstractText Label="{k}">{v}</AbstractText>' for k, v in sections.items())
    mesh = "".join(f"<major>{m}</major>" for m in mesh_major)
    mesh += "".join(f"<automatic>{m}</automatic>" for m in mesh_auto)
    parents = "\n".join(
        f'   <parentImage id="{im}">\n      <figureId>F{k + 1}</figureId>\n'
        f"      <caption>Xray Chest PA and Lateral</caption>\n      <panel type=\"single\">\n"
        f"         <url>/hadoop/storage/radiology/extract/{im}.jpg</url>\n         <imgModality>7</imgModality>\n"
        f"      </panel>\n   </parentImage>"
        for k, im in enumerate(images)
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{uid}"/>
   <pmcId id="{uid}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{uid}"/>
   <licenseType>open-access</licenseType>
   <publisher>Indiana University</publisher>
   <title>Indiana University Chest X-ray Collection</title>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
{abstract}
         </Abstract>
         <Affiliation>Indiana University School of Medicine</Affiliation>
         <Language>eng</Language>
      </Article>
   </MedlineCitation>
   <MeSH>{mesh}</MeSH>
{parents}
</eCitation>
"""


IU_REPORTS = [
    # id, sections, images (the second image of CXR3 is missing on disk), MeSH major, MeSH automatic
    (1, {"COMPARISON": "None.", "INDICATION": "Positive TB test",
         "FINDINGS": "The cardiac silhouette and mediastinum size are within normal limits. There is no "
                     "pulmonary edema. There is no focal consolidation. There are no XXXX of a pleural "
                     "effusion. There is no evidence of pneumothorax.",
         "IMPRESSION": "Normal chest x-XXXX."},
     ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"], ["normal"], []),
    (2, {"COMPARISON": "Chest radiographs XXXX.", "INDICATION": "XXXX-year-old male, chest pain.",
         "FINDINGS": "The cardiomediastinal silhouette is within normal limits for size and contour. The lungs "
                     "are normally inflated without evidence of focal airspace disease, pleural effusion, or "
                     "pneumothorax. Stable calcified granuloma within the right upper lung.",
         "IMPRESSION": "No acute cardiopulmonary abnormality."},
     ["CXR2_IM-0652-1001"], ["Calcified Granuloma/lung/upper lobe/right"], ["Calcified Granuloma"]),
    (3, {"COMPARISON": "XXXX", "INDICATION": "Dyspnea.",
         "FINDINGS": "Borderline cardiomegaly. Midline sternotomy XXXX. Enlarged pulmonary arteries.",
         "IMPRESSION": "Borderline cardiomegaly. No acute disease."},
     ["CXR3_IM-1384-1001", "CXR3_IM-1384-2001"],
     ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"], ["Sternotomy"]),
    (4, {"COMPARISON": "None", "INDICATION": "Preop", "FINDINGS": "",
         "IMPRESSION": "No active disease."},
     ["CXR4_IM-2050-1001"], ["normal"], []),
    (5, {"INDICATION": "Cough", "FINDINGS": "Lungs are clear.", "IMPRESSION": "Normal chest."},
     [], ["normal"], []),
    (6, {"INDICATION": "Fever", "FINDINGS": "Heart size normal. Lungs clear \u2014 no effusion.",
         "IMPRESSION": "No acute disease."},
     ["CXR6_IM-2192-1001"], ["normal"], []),
]


def make_iu(tmp_path: Path, *, archive: bool = True, extra_files: dict[str, str] | None = None) -> Path:
    """``NLMCXR_reports.tgz`` (or ``ecgen-radiology/``) and ``NLMCXR_png/`` of :data:`IU_REPORTS`.

    CXR4 has an empty FINDINGS section, CXR5 no image, CXR3's second image is missing.
    ``extra_files`` adds raw ``name -> text`` XML files (e.g. malformed ones).
    """
    tmp_path.mkdir(parents=True, exist_ok=True)
    files = {f"ecgen-radiology/{uid}.xml": iu_xml(uid, s, ims, major, auto) for uid, s, ims, major, auto in IU_REPORTS}
    files.update({f"ecgen-radiology/{k}": v for k, v in (extra_files or {}).items()})
    if archive:
        with tarfile.open(tmp_path / "NLMCXR_reports.tgz", "w:gz") as tar:
            for name, text in files.items():
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    else:
        for name, text in files.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
    for k, (_, _, ims, _, _) in enumerate(IU_REPORTS):
        for im in ims:
            if im != "CXR3_IM-1384-2001":
                write_image(tmp_path / "NLMCXR_png" / f"{im}.png", seed=k, size=(18, 18))
    return tmp_path


# ----------------------------------------------------------------------------- ROCO
ROCO_ROWS = {
    # split folder -> subset -> [(ROCO id, PMC archive id, image name, caption, keywords)]
    "train": {
        "radiology": [
            ("ROCO_00002", "PMC4083729", "AMHA-3-101-g001.jpg",
             " Computed tomography scan in axial view showing obliteration of the left maxillary sinus",
             ["tomography", "obliteration", "maxillary", "sinus"]),
            ("ROCO_00003", "PMC2837471", "IJD2009-150251.001.jpg",
             " Bacterial contamination occurred after completion of root canal treatment in the tooth, "
             "which remained with a temporary filling for 15 months.", ["contamination", "root", "canal"]),
            ("ROCO_00004", "PMC2505281", "1471-2474-9-104-2.jpg",
             " Anteroposterior radiograph of the pelvis showing \u201cfleck\u201d sign.", ["pelvis"]),
            ("ROCO_00005", "PMC3245617", "1752-1947-5-557-1.jpg", " Missing image on disk.", []),
        ],
        "non-radiology": [
            ("ROCO_81826", "PMC3498864", "jovr-04-256f2.jpg", " Clinical photograph of the eye.", ["eye"]),
        ],
    },
    "validation": {
        "radiology": [("ROCO_00020", "PMC3970251", "CRIONM2014-931546.003.jpg",
                       " Axial computed tomography scan of the pelvis showing a diffuse infiltration of the "
                       "bladder wall, catheter in situ (arrow).", ["bladder"])],
        "non-radiology": [("ROCO_81834", "PMC3498865", "jovr-04-256f3.jpg", " Fundus photograph.", [])],
    },
    "test": {
        "radiology": [("ROCO_00027", "PMC2766744", "cios-1-176-g005.jpg",
                       " Postoperative anteroposterior radiograph of the pelvis.", ["pelvis"])],
        "non-radiology": [("ROCO_81840", "PMC4299014", "sensors-14-22285f2.jpg", " Sensor diagram.", [])],
    },
}


def make_roco(tmp_path: Path) -> Path:
    """The roco-dataset repository layout with :data:`ROCO_ROWS`; returns the repository folder.

    ROCO_00005's image is not on disk.
    """
    repo = tmp_path / "roco-dataset"
    for split, subsets in ROCO_ROWS.items():
        for subset, rows in subsets.items():
            folder = repo / "data" / split / subset
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "captions.txt").write_text("".join(f"{r[0]}\t{r[3]}\n" for r in rows))
            (folder / "dlinks.txt").write_text("".join(
                f"{r[0]}\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/08/e7/{r[1]}.tar.gz "
                f"-P /path/to/Dir\t{r[2]}\n" for r in rows))
            (folder / "keywords.txt").write_text("".join(f"{r[0]}\t\t" + "\t".join(r[4]) + "\n" for r in rows))
            for k, r in enumerate(rows):
                if r[0] != "ROCO_00005":
                    write_image(folder / "images" / f"{r[1]}_{r[2]}", seed=k, size=(22, 18), rgb=True)
    return repo


# ----------------------------------------------------------------------------- PMC-OA
PMC_OA_ROWS = {
    "train": [
        {"image": "PMC212319_Fig3_4.jpg", "caption": "A. Real time image of the translocation of ARF1-GFP to "
                                                     "the plasma membrane.", "alignment_type": "sep",
         "alignment_score": 0.85},
        {"image": "PMC2000273_pbio-0050250-g001_0.jpg", "caption": "Axial CT showing a hypodense lesion.",
         "alignment_type": "sep", "alignment_score": 0.91},
        {"image": "PMC2000273_pbio-0050250-g001_1.jpg", "caption": "Coronal reformat of the same lesion.",
         "alignment_type": "sep", "alignment_score": 0.77},
    ],
    "valid": [{"image": "PMC1064095_1471-2121-6-14-5_2.jpg", "caption": "Immunofluorescence of HeLa cells.",
               "alignment_type": "sep", "alignment_score": 0.66}],
    "test": [{"image": "PMC1134654_1471-2407-5-48-2_0.jpg", "caption": "H&E stained section, x200.",
              "alignment_type": "sep", "alignment_score": 0.72},
             {"image": "PMC1134654_1471-2407-5-48-2_9.jpg", "caption": "Sub-figure whose image is missing.",
              "alignment_type": "sep", "alignment_score": 0.5}],
}


def make_pmc_oa(tmp_path: Path, *, split_files: bool = True) -> Path:
    """PMC-OA: ``train/valid/test.jsonl`` (or only ``pmc_oa.jsonl``) and ``images/caption_T060.../``.

    The last test sub-figure is not on disk.
    """
    root = tmp_path / "pmc_oa"
    root.mkdir()
    everything = [r for rows in PMC_OA_ROWS.values() for r in rows]
    if split_files:
        for name, rows in PMC_OA_ROWS.items():
            (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "pmc_oa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in everything))
    for k, r in enumerate(everything[:-1]):
        write_image(root / "images" / "caption_T060_filtered_top4_sep_v0_subfigures" / r["image"], seed=k, rgb=True)
    return root


# ----------------------------------------------------------------------------- VQA-RAD
VQA_RAD_ENTRIES = [
    {"qid": 0, "phrase_type": "freeform", "qid_linked_id": "03f451ca-de62-4617-9679-e836026a7642",
     "image_case_url": "https://medpix.nlm.nih.gov/case?id=48e1dd0e-8552-46ad-a354-5eb55be86de6",
     "image_name": "synpic54610.jpg", "image_organ": "HEAD", "evaluation": "not evaluated",
     "question": "Are regions of the brain infarcted?", "question_rephrase": "NULL",
     "question_relation": "NULL", "question_frame": "NULL", "question_type": "PRES", "answer": "Yes",
     "answer_type": "CLOSED"},
    {"qid": 1, "phrase_type": "para", "qid_linked_id": "03f451ca-de62-4617-9679-e836026a7642",
     "image_case_url": "", "image_name": "synpic54610.jpg", "image_organ": "HEAD", "evaluation": "given",
     "question": "Are there areas of infarction in the brain?", "question_rephrase": "NULL",
     "question_relation": "NULL", "question_frame": "NULL", "question_type": "PRES", "answer": "Yes",
     "answer_type": "CLOSED"},
    {"qid": 2, "phrase_type": "freeform", "qid_linked_id": "06e26b2c-04b9-42dc-8e98-1ebf2f1b6a0e",
     "image_case_url": "", "image_name": "synpic29265.jpg", "image_organ": "CHEST", "evaluation": "evaluated",
     "question": "Which side is the pleural effusion on?", "question_rephrase": "NULL",
     "question_relation": "NULL", "question_frame": "NULL", "question_type": "POS", "answer": "Right",
     "answer_type": "OPEN"},
    {"qid": 3, "phrase_type": "test_freeform", "qid_linked_id": "9a0cbd2c-1b4b-4d5b-a6c1-1f0f5bb1a4f0",
     "image_case_url": "", "image_name": "synpic54610.jpg", "image_organ": "HEAD", "evaluation": "evaluated",
     "question": "How many lesions are seen?", "question_rephrase": "NULL", "question_relation": "NULL",
     "question_frame": "NULL", "question_type": "COUNT", "answer": 2, "answer_type": "OPEN"},
    {"qid": 4, "phrase_type": "test_para", "qid_linked_id": "b3cdd5e0-6d0f-4f18-a9de-0b4b7c2a7d6e",
     "image_case_url": "", "image_name": "synpic42202.jpg", "image_organ": "ABD", "evaluation": "evaluated",
     "question": "Is there free air under the diaphragm?", "question_rephrase": "NULL",
     "question_relation": "NULL", "question_frame": "NULL", "question_type": "PRES", "answer": "No",
     "answer_type": "CLOSED"},
    {"qid": 5, "phrase_type": "freeform", "qid_linked_id": "c0a1e6a4-43f5-4c36-9d5b-5a4c2d7bb7a1",
     "image_case_url": "", "image_name": "synpic99999.jpg", "image_organ": "CHEST", "evaluation": "evaluated",
     "question": "Is this a PA film?", "question_rephrase": "NULL", "question_relation": "NULL",
     "question_frame": "NULL", "question_type": "PLANE", "answer": "Yes", "answer_type": "CLOSED"},
]


def make_vqa_rad(tmp_path: Path, entries: list[dict] | None = None) -> Path:
    """``VQA_RAD Dataset Public.json`` and ``VQA_RAD Image Folder/``; synpic99999.jpg is missing."""
    root = tmp_path / "vqa_rad"
    (root / "VQA_RAD Image Folder").mkdir(parents=True)
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(entries if entries is not None else VQA_RAD_ENTRIES,
                                                                 indent=4))
    for k, name in enumerate(("synpic54610.jpg", "synpic29265.jpg", "synpic42202.jpg")):
        write_image(root / "VQA_RAD Image Folder" / name, seed=k)
    return root



def _rad(qid: int, image: str, organ: str, question: str, answer, answer_type: str, question_type: str,
         phrase_type: str) -> dict:
    """One entry of the MEVF/MMQ split files (the keys they keep of the OSF release)."""
    return {"qid": qid, "image_name": image, "image_organ": organ, "answer": answer, "answer_type": answer_type,
            "question_type": question_type, "question": question, "phrase_type": phrase_type}


VQA_RAD_SPLIT = {
    "trainset.json": [
        _rad(0, "synpic100.jpg", "HEAD", "Is there a mass?", "Yes", "CLOSED ", "PRES", "freeform"),
        _rad(1, "synpic100.jpg", "HEAD", "What organ is shown?", "Brain", "OPEN", "ORGAN", "para"),
        _rad(2, "synpic101.jpg", "CHEST", "Which side is the effusion on?", "Right", "Open", "POS", "freeform"),
        _rad(3, "synpic102.jpg", "HEAD", "Is this an axial or coronal image?", "Axial", "closed", "PLANE",
             "freeform"),
        _rad(4, "synpic103.jpg", "ABD", "Is there free air?", "No", "CLOSED", "PRES", "freeform"),
        _rad(5, "synpic104.jpg", "CHEST", "Where is the nodule?", "Left lung", "OPEN", "POS", "freeform"),
        _rad(6, "synpic105.jpg", "HEAD", "How many lesions are seen?", 2, "OPEN", "COUNT", "freeform"),
        _rad(7, "synpic106.jpg", "CHEST", "Is this a PA film?", "Yes", "CLOSED", "PLANE", "freeform"),
    ],
    "testset.json": [
        _rad(8, "synpic100.jpg", "HEAD", "Is the mass enhancing?", "Yes", "CLOSED", "ATTRIB", "test_freeform"),
        _rad(9, "synpic107.jpg", "CHEST", "What is the abnormality?", "Pneumothorax", "OPEN", "ABN",
             "test_freeform"),
        _rad(10, "synpic107.jpg", "CHEST", "Is the lung collapsed?", "yes ", " CLOSED", "PRES", "test_para"),
    ],
}


def make_vqa_rad_split(tmp_path: Path, splits: dict[str, list[dict]] | None = None, *,
                       images: str = "images") -> Path:
    """The MEVF/MMQ split of VQA-RAD: ``trainset.json``, ``testset.json`` and ``images/``.

    Train: 8 questions on synpic100-106 (synpic106.jpg is missing), with ``answer_type``
    spelled ``"CLOSED "``, ``"Open"``, ``"closed"`` as in the release, a closed question
    whose answer is not yes/no ("Axial") and a numeric answer. Test: 3 questions on
    synpic100 (also a train image) and synpic107, whose answer "Pneumothorax" no
    training question has.
    """
    root = tmp_path / "vqa_rad_split"
    root.mkdir(parents=True)
    for name, entries in (splits if splits is not None else VQA_RAD_SPLIT).items():
        (root / name).write_text(json.dumps(entries, indent=4))
    for k in (0, 1, 2, 3, 4, 5, 7):
        write_image(root / images / f"synpic10{k}.jpg", seed=k)
    return root


# ----------------------------------------------------------------------------- SLAKE
def _slake(img_id: int, qid: int, question: str, answer: str, lang: str, answer_type: str, content: str,
           modality: str = "MRI", location: str = "Brain") -> dict:
    return {"img_id": img_id, "img_name": f"xmlab{img_id}/source.jpg", "question": question, "answer": answer,
            "q_lang": lang, "location": location, "modality": modality, "answer_type": answer_type,
            "base_type": "vqa", "content_type": content, "triple": ["vhead", "_", "_"], "qid": qid}


SLAKE_SPLITS = {
    "train.json": [
        _slake(0, 0, "What modality is used to take this image?", "MRI", "en", "OPEN", "Modality"),
        _slake(0, 1, "Does the picture contain liver?", "No", "en", "CLOSED", "Organ"),
        _slake(0, 2, "这张图片的成像方式是什么?", "核磁共振", "zh", "OPEN", "Modality"),
        _slake(1, 3, "Where is the abnormality located?", "Left Lung, Right", "en", "OPEN", "Position",
               modality="X-Ray", location="Chest_lung"),
    ],
    "validate.json": [_slake(2, 4, "Is the lung healthy?", "Yes", "en", "CLOSED", "Abnormality",
                             modality="CT", location="Chest_lung")],
    "test.json": [_slake(3, 5, "Which organ is abnormal?", "Lung", "en", "OPEN", "Organ", modality="CT"),
                  _slake(9, 6, "Is this image missing?", "Yes", "en", "CLOSED", "Abnormality")],
}


def make_slake(tmp_path: Path) -> Path:
    """``Slake1.0/{train,validate,test}.json`` and ``imgs/xmlabN/source.jpg``; returns the parent.

    One Chinese question (train, xmlab0); xmlab9's image is missing.
    """
    data = tmp_path / "Slake1.0"
    data.mkdir()
    for name, entries in SLAKE_SPLITS.items():
        (data / name).write_text(json.dumps(entries, ensure_ascii=False, indent=1), encoding="utf-8")
    for k in (0, 1, 2, 3):
        write_image(data / "imgs" / f"xmlab{k}" / "source.jpg", seed=k, rgb=True)
        (data / "imgs" / f"xmlab{k}" / "mask.png").write_bytes(b"")  # present in the release; unused
    return tmp_path


# ----------------------------------------------------------------------------- PathVQA
PATHVQA_SPLITS = {
    "train": [{"image": "train_0422", "question": "Where are liver stem cells (oval cells) located?",
               "answer": "in the canals of hering"},
              {"image": "train_0422", "question": "Are liver stem cells located in the canals of Hering?",
               "answer": "yes"},
              {"image": "train_0001", "question": "What does this image show?", "answer": "pancreatitis"}],
    "val": [{"image": "val_0010", "question": "Is there hemorrhage?", "answer": "no"}],
    "test": [{"image": "test_0003", "question": "What is present?", "answer": "carcinoma"},
             {"image": "test_0999", "question": "Is this image on disk?", "answer": "no"}],
}


def make_pathvqa(tmp_path: Path) -> Path:
    """``pvqa/qas/{split}/{split}_qa.pkl`` and ``pvqa/images/{split}/*.jpg``; returns the parent.

    test_0999.jpg is missing.
    """
    data = tmp_path / "pvqa"
    for split, entries in PATHVQA_SPLITS.items():
        (data / "qas" / split).mkdir(parents=True)
        (data / "qas" / split / f"{split}_qa.pkl").write_bytes(pickle.dumps(entries))
        for k, e in enumerate(entries):
            if e["image"] != "test_0999":
                write_image(data / "images" / split / f"{e['image']}.jpg", seed=k, rgb=True)
    return tmp_path
