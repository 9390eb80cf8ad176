"""Report section parsing on MIMIC-style free text and IU X-ray XML, and text clean-up."""

from __future__ import annotations

import pytest

from medvl.data.reports import SECTIONS, clean_text, format_report, parse_iu_abstract, parse_report

MODERN = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___ year old woman with ?pleural effusion  // ?pleural effusion
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  ___
 
 FINDINGS: 
 
 Cardiac size cannot be evaluated.  Large left pleural effusion is new.  Small
 right effusion is new.  The upper lungs are clear.  Right lower lobe opacities
 are better seen in prior CT.  There is no pneumothorax.  There are mild
 degenerative changes in the thoracic spine.
 
 IMPRESSION: 
 
 Large left pleural effusion.
 
 NOTIFICATION:  The findings were discussed with ___, M.D. by ___, M.D. on the
 telephone on ___ at 4:10 PM, 5 minutes after discovery of the findings.
"""

OLD_STYLE = """WET READ: ___ ___ ___ 9:47 PM
  Left retrocardiac opacity, ?atelectasis vs pneumonia.
 ______________________________________________________________________________
                                 FINAL REPORT
 REASON FOR EXAMINATION:  Evaluation of the patient with fever.
 
 CHEST, PA AND LATERAL:
 
 Heart size is top normal.  Mediastinum is unremarkable.  There is left
 retrocardiac opacity which might represent atelectasis, although infectious
 process cannot be excluded.  No pleural effusion or pneumothorax is seen.
 
 CONCLUSION:
 
 Left retrocardiac opacity, atelectasis versus pneumonia.
"""

COMBINED = """                                 FINAL REPORT
 HISTORY:  ___-year-old man with chest pain.
 
 COMPARISONS:  ___.
 
 FINDINGS AND IMPRESSION:  Single portable AP view of the chest. Lungs are
 clear without consolidation, effusion or pneumothorax. Cardiomediastinal
 silhouette is within normal limits.
"""

CLINICAL_INFO = """                                 FINAL REPORT
 CLINICAL INFORMATION
 Evaluate endotracheal tube position.
 
 TECHNIQUE:  Portable AP chest.
 
 IMPRESSON:  Endotracheal tube terminates 4 cm above the carina.
 FINDNGS:  Lines: right internal jugular catheter tip in the SVC. Comparison is
 made to prior study: no change.
"""

IU_DOC = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR10"/><MedlineCitation><Article><Abstract>
  <AbstractText Label="COMPARISON">None.</AbstractText>
  <AbstractText Label="INDICATION">XXXX-year-old female with chest pain.</AbstractText>
  <AbstractText Label="FINDINGS">The cardiomediastinal silhouette is within normal limits for size
  and contour. The lungs are normally inflated without evidence of focal airspace disease,
  pleural effusion, or pneumothorax.</AbstractText>
  <AbstractText Label="IMPRESSION"/>
</Abstract></Article></MedlineCitation></eCitation>"""


def test_modern_mimic_report():
    s = parse_report(MODERN)
    assert set(s) == set(SECTIONS)
    assert s["examination"] == "CHEST (PA AND LAT)"
    assert s["indication"] == "___ year old woman with ?pleural effusion // ?pleural effusion"
    assert s["technique"] == "Chest PA and lateral" and s["comparison"] == "___"
    assert s["findings"] == (
        "Cardiac size cannot be evaluated. Large left pleural effusion is new. Small right effusion is new. "
        "The upper lungs are clear. Right lower lobe opacities are better seen in prior CT. There is no "
        "pneumothorax. There are mild degenerative changes in the thoracic spine.")
    assert s["impression"] == "Large left pleural effusion."  # NOTIFICATION is not part of it
    assert s["other"].startswith("The findings were discussed with ___, M.D.")
    assert "FINAL REPORT" not in " ".join(s.values())


def test_old_style_report_with_wet_read_and_view_title():
    s = parse_report(OLD_STYLE)
    assert s["indication"] == "Evaluation of the patient with fever."
    assert s["findings"].startswith("Heart size is top normal. Mediastinum is unremarkable.")
    assert s["findings"].endswith("No pleural effusion or pneumothorax is seen.")
    assert s["impression"] == "Left retrocardiac opacity, atelectasis versus pneumonia."
    assert "9:47" not in " ".join(s.values())  # the wet read preamble is dropped


def test_combined_section_fills_findings_and_impression():
    s = parse_report(COMBINED)
    assert s["findings"] == s["impression"]
    assert s["findings"].startswith("Single portable AP view of the chest. Lungs are clear")
    assert s["history"] == "___-year-old man with chest pain." and s["indication"] == ""
    assert s["comparison"] == "___."


def test_bare_heading_typos_and_colons_inside_text():
    s = parse_report(CLINICAL_INFO)
    assert s["history"] == "Evaluate endotracheal tube position."
    assert s["impression"] == "Endotracheal tube terminates 4 cm above the carina."
    assert s["findings"] == ("Lines: right internal jugular catheter tip in the SVC. Comparison is made to "
                             "prior study: no change.")
    assert s["comparison"] == ""


def test_flattened_title_case_and_repeated_sections():
    flat = parse_report("FINDINGS: Heart size normal. Lungs clear. IMPRESSION: No acute process.")
    assert flat["findings"] == "Heart size normal. Lungs clear." and flat["impression"] == "No acute process."
    title = parse_report("Indication: Cough.\nFindings: Clear lungs.\nImpression: Normal.")
    assert (title["indication"], title["findings"], title["impression"]) == ("Cough.", "Clear lungs.", "Normal.")
    repeated = parse_report("FINDINGS:\n\nFINDINGS:  Small left effusion.\nFINDINGS: Stable cardiomegaly.")
    assert repeated["findings"] == "Small left effusion. Stable cardiomegaly."


def test_missing_sections_and_headless_text():
    s = parse_report(" IMPRESSION:  No acute cardiopulmonary process.")
    assert s["findings"] == "" and s["indication"] == "" and s["impression"] == "No acute cardiopulmonary process."
    headless = parse_report("Heart size normal.\n Lungs are clear.")
    assert headless["other"] == "Heart size normal. Lungs are clear." and headless["findings"] == ""
    assert parse_report("") == dict.fromkeys(SECTIONS, "") == parse_report(None)


def test_odd_unicode_is_normalised():
    raw = ("\ufeffFINDINGS:\u00a0The\u200b heart is \u201cnormal\u201d \u2014 the pa\u00adtient\u2019s "
           "lungs\x07 are clear\u3000(\uff11\uff10 mm nodule\u2026)\r\nIMPRESSION:\tNo\u00a0change.")
    s = parse_report(raw)
    assert s["findings"] == "The heart is \"normal\" - the patient's lungs are clear (10 mm nodule...)"
    assert s["impression"] == "No change."
    assert clean_text("a\u2028b\x00c  ____ d", keep_newlines=True) == "a\nbc ___ d"
    assert clean_text(" x \n\n\n\n y ") == "x y"


def test_iu_xml_sections():
    s = parse_report(IU_DOC)
    assert s["comparison"] == "None." and s["indication"] == "XXXX-year-old female with chest pain."
    assert s["findings"].startswith("The cardiomediastinal silhouette is within normal limits for size and contour.")
    assert "\n" not in s["findings"] and s["impression"] == ""
    fragment = ('<AbstractText Label="FINDINGS">Clear.</AbstractText>'
                '<AbstractText Label="IMPRESSION">Normal.</AbstractText>')
    assert parse_iu_abstract(fragment)["impression"] == "Normal." and parse_report(fragment)["findings"] == "Clear."
    with pytest.raises(ValueError, match="malformed report XML"):
        parse_iu_abstract('<AbstractText Label="FINDINGS">unclosed')


def test_format_report():
    s = parse_report(MODERN)
    assert format_report(s) == f"FINDINGS: {s['findings']}\n\nIMPRESSION: Large left pleural effusion."
    assert format_report({"findings": "", "impression": "Normal."}) == "IMPRESSION: Normal."
