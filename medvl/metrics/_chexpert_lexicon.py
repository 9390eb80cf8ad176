"""Lexicon of the rule-based CheXpert-style report labeler (:mod:`medvl.metrics.clinical`).

Data only: regular expressions (applied to lower-case, NFKC-normalised sentences) for the
mentions of the 14 CheXpert observations and of the "other findings" that rule out No
Finding, the phrases that cancel a mention ("pericardial effusion" is no pleural
effusion), and the negation, uncertainty and scope cues. The mention lists and the
aggregation follow the CheXpert labeler (Irvin et al., "CheXpert: A Large Chest Radiograph
Dataset with Uncertainty Labels and Expert Comparison", AAAI 2019, arXiv:1901.07031);
the cue lists transcribe its NegBio-derived rules (Peng et al., "NegBio: a high-performance
tool for negation and uncertainty detection in radiology reports", AMIA 2018) into surface
phrases with scopes, in the manner of NegEx (Chapman et al., J Biomed Inform 2001), since
no dependency parser is used.
"""

from __future__ import annotations

# Mention kinds: "pos" asserts the finding when neither negated nor uncertain;
# "attr" names an anatomical structure (heart size, mediastinal contours) and asserts
# the finding only with an abnormal qualifier (enlarged, widened, ...); "unc" is always
# uncertain unless negated (CheXpert's rule for vascular congestion and the like).
MENTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "enlarged_cardiomediastinum": (
        (r"mediastinal (?:widening|enlargement)", "pos"),
        (r"widen(?:ed|ing) (?:of )?(?:the )?(?:superior )?(?:cardio)?mediastin\w*", "pos"),
        (r"(?:cardio)?mediastinal (?:and hilar )?(?:silhouettes?|contours?|configuration|width|shadow)", "attr"),
        (r"(?:hilar and )?mediastinal contours?", "attr"),
        (r"cardiomediastinum", "attr"),
        (r"(?:superior )?mediastinum", "attr"),
        (r"pericardial silhouette", "attr"),
    ),
    "cardiomegaly": (
        (r"cardiomegaly", "pos"),
        (r"cardiac enlargement", "pos"),
        (r"enlarged heart", "pos"),
        (r"enlargement of the (?:heart|cardiac silhouette)", "pos"),
        (r"heart size", "attr"),
        (r"cardiac (?:size|silhouette|shadow|contours?)", "attr"),
        (r"heart(?! (?:border|failure|valve|rate|disease))", "attr"),
    ),
    "lung_opacity": (
        (r"opaci\w*", "pos"),
        (r"air[- ]?space (?:disease|process|opacit\w*|filling)", "pos"),
        (r"infiltrat\w*", "pos"),
        (r"interstitial (?:markings?|pattern|opacit\w*|thickening|prominence|abnormalit\w*|lung disease)", "pos"),
        (r"reticula\w*|reticulonodular", "pos"),
        (r"(?:parenchymal )?scar(?:ring|s)?\b", "pos"),
        (r"(?:peribronchial|bronchial wall) (?:thickening|cuffing)", "pos"),
        (r"haziness|hazy", "pos"),
        (r"ground[- ]glass", "pos"),
        (r"increased density|decreased translucency", "pos"),
    ),
    "lung_lesion": (
        (r"mass(?:es)?\b", "pos"),
        (r"nodul\w*", "pos"),
        (r"lump", "pos"),
        (r"lesions?\b", "pos"),
        (r"carcinoma\w*|neoplasm\w*|tumou?rs?\b|malignan\w*", "pos"),
    ),
    "edema": (
        (r"o?edema\w*", "pos"),
        (r"heart failure|chf\b", "pos"),
        (r"(?:pulmonary )?(?:vascular )?congestion", "unc"),
        (r"(?:pulmonary )?vascular (?:prominence|engorgement|redistribution)", "unc"),
        (r"cephalization|indistinctness", "unc"),
    ),
    "consolidation": (
        (r"consolidat\w*", "pos"),
    ),
    "pneumonia": (
        (r"(?:broncho)?pneumonia\w*", "pos"),
        (r"infection\w*|infectious(?: process)?", "pos"),
    ),
    "atelectasis": (
        (r"atelecta\w*", "pos"),
        (r"collaps\w*", "pos"),
    ),
    "pneumothorax": (
        (r"(?:hydro)?pneumothora(?:x|ces)", "pos"),
        (r"ptx\b", "pos"),
    ),
    "pleural_effusion": (
        (r"effusions?\b", "pos"),
        (r"pleural fluid", "pos"),
        (r"hydropneumothora(?:x|ces)|hydrothorax", "pos"),
        (r"blunt\w* (?:of )?(?:the )?(?:\w+ )?(?:costophrenic|cp) (?:angles?|sulc\w*)", "unc"),
        (r"(?:costophrenic|cp) (?:angles?|sulc\w*) (?:(?:is|are) )?(?:\w+ )?blunt\w*", "unc"),
    ),
    "pleural_other": (
        (r"pleural (?:thickening|scar\w*|plaques?|calcification\w*)", "pos"),
        (r"pleuro-?(?:parenchymal|pericardial) (?:scar\w*|thickening)", "pos"),
        (r"fibrothorax|fibrosis|apical cap", "pos"),
    ),
    "fracture": (
        (r"fractur\w*", "pos"),
        (r"fx\b", "pos"),
    ),
    "support_device": (
        (r"tubes?\b", "pos"),
        (r"lines?\b", "pos"),
        (r"picc\b|catheters?\b|cannula\w*", "pos"),
        (r"pacemaker\w*|pacer\w*|a?icd\b|defibrillator\w*", "pos"),
        (r"ports?\b|port-a-cath|mediport|portacath", "pos"),
        (r"wires?\b|clips?\b|stents?\b|coils?\b|drains?\b|electrodes?\b", "pos"),
        (r"(?:prosthetic|replacement) valves?|valve (?:replacement|prosthesis)", "pos"),
        (r"hardware|plates?\b|screws?\b|arthroplast\w*", "pos"),
        (r"(?:support |monitoring )?devices?\b|swan[- ]ganz|impella|lvad\b|iabp\b|balloon pump", "pos"),
    ),
    # Other findings: never output, but a positive or uncertain one rules out No Finding.
    "other": (
        (r"emphysema\w*|bullae?\b|bullous|copd\b|hyperinflat\w*|hyperexpan\w*", "pos"),
        (r"scoliosis|kyphosis|kyphotic|degenerat\w*|osteopenia|osteophyt\w*|deformit\w*", "pos"),
        (r"calcifi\w*|granulom\w*|atherosclero\w*|tortuo\w*", "pos"),
        (r"hernia\w*|eventration|elevat\w*", "pos"),
        (r"pneumomediastinum|pneumoperitoneum|free air", "pos"),
        (r"bronchiectasis|bronchitis|bronchiolitis|aspiration|metasta\w*", "pos"),
        (r"hematoma|hemorrhage|contusion|volume loss|thickening|density|densities", "pos"),
        (r"prominen\w*|hypertension", "pos"),
    ),
}

# Phrases that cancel an overlapping mention of the observation.
UNMENTIONS: dict[str, tuple[str, ...]] = {
    "pleural_effusion": (r"(?:pericardial|joint|knee|shoulder) effusions?",),
    "lung_lesion": (r"calcified (?:nodul\w*|granuloma\w*)", r"mass effect",
                    r"(?:lytic|sclerotic|blastic|osseous|bony|bone|skin|cutaneous) lesions?"),
    "lung_opacity": (r"pleural scar\w*", r"pleuro-?parenchymal scar\w*"),
    "cardiomegaly": (r"(?:over|overlying|overlies|behind|through|projecting over|projects over|in) the heart",),
    "edema": (r"(?:soft tissue|subcutaneous|chest wall) edema",),
    "atelectasis": (r"(?:vertebral|vertebral body|compression) collaps\w*",),
    "support_device": (r"(?:pleural|septal|kerley(?: b)?|b|skin ?fold|fissural|azygos|paraspinal|paratracheal|"
                       r"mach|junction|hair) lines?", r"plate-?like", r"lines? of (?:the )?(?:fissure|pleura)",
                       r"(?:lead|leads) to", r"tube(?:s)? (?:feeding )?(?:was|were) removed"),
    "other": (r"elevated (?:jvp|troponin|wbc|white)",),
}

# Cues: (pattern, kind, direction, window). kind: "preneg" (uncertainty matched before
# negation, e.g. "cannot exclude"), "neg", "unc", "stable" (for "attr" mentions only),
# "pseudo" (looks like a cue but is not one, e.g. "no change": it only blocks the shorter
# cues inside it). direction: "fwd" (scopes over the mentions after it), "bwd" (before it),
# "both". window: the most words between cue and mention, or None for the whole clause.
CUES: tuple[tuple[str, str, str, int | None], ...] = (
    # --- pre-negation uncertainty
    (r"(?:cannot|can not|can't|could not|may not|might not) (?:be )?(?:entirely |completely |definitely |totally |fully |"
     r"definitively |reliably )?(?:exclude[ds]?|rule[ds]? out|ruled out)", "preneg", "both", None),
    (r"(?:is|are|was|were)? ?not (?:be )?(?:entirely |completely |definitely |totally )?(?:excluded|ruled out)",
     "preneg", "both", 8),
    (r"difficult to (?:exclude|rule out)", "preneg", "both", None),
    (r"no new", "preneg", "fwd", None),
    # --- negation (longer forms first where a shorter cue would end the scope)
    (r"no (?:\w+ ){0,4}?to (?:suggest|explain|indicate)", "neg", "fwd", None),
    (r"no (?:\w+ ){0,3}?(?:concerning|suspicious|worrisome|diagnostic) (?:for|of)", "neg", "fwd", None),
    (r"nothing to suggest", "neg", "fwd", None),
    (r"no (?:suspicious|concerning|worrisome|definite|definitive|obvious|convincing|discrete|clear|"
     r"(?:\w+ )?evidence of (?:suspicious|definite|obvious))", "neg", "fwd", None),  # "no definite X" (CheXpert)
    (r"no|without|negative for|free of|clear of|absence of|absent|rather than|instead of|resolution of|"
     r"resolved|removal of|disappearance of|history of|rule out|ruling out|to exclude|exclude[ds]?", "neg", "fwd", None),
    (r"no longer", "neg", "both", 6),
    (r"not", "neg", "fwd", 3),
    (r"(?:is|are|was|were|has been|have been)? ?(?:not|no longer) (?:\w+ )?(?:seen|visuali[sz]ed|visible|identified|"
     r"demonstrated|evident|present|noted|detected|apparent)", "neg", "bwd", 8),
    (r"(?:is|are|was|were|has been|have been)? ?(?:absent|excluded|ruled out|removed|withdrawn)", "neg", "bwd", 8),
    (r"(?:has|have|had)? ?(?:since )?(?:resolved|cleared|disappeared)", "neg", "bwd", 8),
    (r"(?:is|are|was|were|appears?|appeared|remains?|remained|looks?|seems?)(?: (?:now|otherwise|again|still|stably|"
     r"overall|grossly|entirely|essentially|relatively|currently|within))? (?:normal|unremarkable)",
     "neg", "bwd", 8),
    (r"(?:within|at the upper limits? of|at the upper range of|upper limits? of|top|upper|high)[- ](?:normal|"
     r"limits? of normal)(?: limits)?", "neg", "both", 8),
    (r"normal in (?:size|caliber|calibre|contour|appearance|configuration)", "neg", "bwd", 8),
    (r"not (?:\w+ )?enlarged", "neg", "bwd", 8),
    (r"normal|unremarkable", "neg", "fwd", 3),
    (r"normal|unremarkable|none|negative", "neg", "bwd", 1),
    # --- uncertainty (after negation)
    (r"(?:is|are|was|were)? ?(?:not well|poorly|incompletely|not clearly) (?:seen|visuali[sz]ed|evaluated|assessed|"
     r"delineated)", "unc", "both", 8),
    (r"(?:is|are|was|were)? ?not appreciated", "unc", "bwd", 8),
    (r"(?:may|might|could|can|possibly) (?:also )?(?:be )?(?:present|seen|visible|developing|considered)",
     "unc", "bwd", 8),
    (r"(?:is|are|was|were) (?:possible|questioned|suspected|questionable|equivocal|borderline|uncertain|"
     r"indeterminate)", "unc", "bwd", 8),
    (r"less likely|suspected|questioned|versus|vs\.?|borderline", "unc", "both", 6),
    (r"obscur\w*", "unc", "fwd", 3),
    (r"(?:is|are) obscured", "unc", "bwd", 6),
    (r"may|might|could|would|possible|possibly|probable|presumed|presumably|presumptive|questionable|"
     r"question of|suspicious(?: for| of)?|suspicion (?:of|for)|suspect\w*|concerning for|concern for|"
     r"worrisome(?: for)?|suggestive of|suggest\w*|favou?r(?:s|ed|ing)?\b|consider(?:s|ed|ing|ation)?\b|differential(?: diagnosis)?(?: (?:includes?|"
     r"including|considerations? includes?))?|equivocal|maybe|perhaps|uncertain|indeterminate|cannot be "
     r"differentiated|correlat\w* clinically|clinical correlation|secondary to", "unc", "fwd", None),
    # --- stability (for "attr" mentions: CheXpert calls a stable heart size uncertain)
    (r"stable|stably|unchanged|not (?:significantly )?changed|similar(?: in appearance)?(?: to (?:the )?prior)?|"
     r"no (?:\w+ )?(?:interval |significant |substantial )?change", "stable", "both", None),
    # --- pseudo-cues
    (r"no (?:significant |substantial |interval |appreciable )?(?:change|increase|progression)", "pseudo", "both", None),
    (r"without (?:significant |interval )?change|not only|gram[- ]negative", "pseudo", "both", None),
    (r"to (?:suggest|explain|indicate)", "pseudo", "both", None),
)

# Clause boundaries: a cue's scope never crosses these.
TERMINATORS = (r";|\bbut\b|\bhowever\b|\balthough\b|\bthough\b|\bwhereas\b|\bwhile\b|\bexcept\b|"
               r"\bapart from\b|\bother than\b|\baside from\b|\bwhich\b|\bwho\b|\bnevertheless\b|\botherwise\b|"
               r"\bin addition\b|\badditionally\b|\bbeyond\b|\band there (?:is|are|has|have)\b|,\s*and (?:the|there|a|an|this|these|it)\b|"
               r",\s*there\b|\bwith the exception of\b|\bbesides\b")

# Verbs that end a forward scope ("no pneumothorax is seen and the heart is enlarged").
SCOPE_VERBS = r"\b(?:is|are|was|were|has|have|had|remains?|appears?|demonstrates?|shows?|measures?|persists?|" \
              r"extends?|terminates?|projects?|courses?|ends?)\b"

# Words that open a new assertion after a comma inside a negated list
# ("no pneumothorax, small left effusion").
NEW_ASSERTION = frozenset(
    "small mild mildly moderate moderately large severe minimal trace tiny new increased increasing persistent "
    "persistently stable unchanged decreased decreasing improved improving worsening worsened extensive developing "
    "residual patchy left right bilateral bibasilar bibasal there interval again".split()
)

# Qualifiers that make an "attr" mention (heart size, mediastinum) a finding.
ABNORMAL_QUALIFIERS = r"\b(?:enlarg\w*|prominen\w*|widen\w*|wide|increas\w*|large|dilat\w*|abnormal\w*|" \
                      r"exaggerat\w*|globular|cardiomegaly)\b"

LATERALITY = (
    (r"\b(?:bilateral\w*|bibasilar|bibasal|both)\b", "bilateral"),
    (r"\b(?:left|lt)\b", "left"),
    (r"\b(?:right|rt)\b", "right"),
)
