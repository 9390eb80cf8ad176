"""Lexicon of the rule-based CheXpert-style report labeler (:mod:`medvl.metrics.clinical`).

Data only: regular expressions, applied to lower-case, NFKC-normalised report text, for

* the **mentions** of the 14 CheXpert observations and of the "other findings" that rule
  out No Finding (Irvin et al., "CheXpert: A Large Chest Radiograph Dataset with
  Uncertainty Labels and Expert Comparison", AAAI 2019, arXiv:1901.07031: its mention
  and unmention phrase lists, widened with the synonyms MIMIC-CXR reports use);
* the **cues** of negation and uncertainty, each with the direction it reaches in and the
  rule it implements. They restate, as surface phrases, the pre-negation uncertainty,
  negation and post-negation uncertainty rules that the CheXpert labeler and NegBio
  (Peng et al., "NegBio: a high-performance tool for negation and uncertainty detection
  in radiology reports", AMIA 2018) match on dependency graphs;
* the **structure** words that bound a cue's scope: clause ends, commas, coordinating
  conjunctions, "with", and finite verbs (after NegEx and ConText: Chapman et al., J
  Biomed Inform 2001; Harkema et al., J Biomed Inform 2009).

Everything here is our own wording; no pattern file of CheXpert or NegBio is copied.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------- mentions
# Per observation, (pattern, kind). Kinds:
#   "pos"  - asserts the finding unless negated or hedged ("small left effusion");
#   "attr" - names an anatomical structure ("heart size", "mediastinal contours"): a
#            finding only with an abnormal qualifier ("enlarged", "widened"), negative when
#            called normal, and otherwise not a mention at all;
#   "unc"  - an indirect sign, uncertain unless negated (CheXpert's rule for vascular
#            congestion; blunted costophrenic angles for effusion).
# The same pattern under two observations is one mention of both ("hydropneumothorax").
# Patterns are tried left to right in the text; where two start at the same word the one
# listed first wins, so longer phrases come first, and BLOCK (phrases that mention nothing)
# is tried before all of them. Septal and Kerley lines are Lung Opacity mentions, so their
# "lines" is no device. "other" findings are never output but rule out
# No Finding (CheXpert's ``no_finding`` phrase list: emphysema, scoliosis, granuloma, ...).
BLOCK: tuple[str, ...] = (
    # Phrases that contain an observation's word but mention none (CheXpert's unmention lists).
    r"mass effect|massive(?:ly)?",
    r"(?:pleural|b|skin ?folds?|skin|fissural|azygo-?esophageal|azygos|paraspinal|"
    r"paratracheal|mach|junction|hair|tram[- ]?track|fissure) lines?|lines? of (?:the )?(?:fissure|pleura)",
    r"line of sight|(?:leads?|leading|led) to",
    r"(?:fractured|broken|fragmented) (?:\w+ )?(?:sternotomy |sternal )?wires?|"
    r"fractures? of (?:the |a |one of the )?(?:\w+ ){0,4}?(?:sternotomy|sternal) wires?",
    r"(?:over|overlying|overlies|overlie|behind|through|projecting over|projects over|project over|"
    r"obscuring|obscures) the heart",
)

MENTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "enlarged_cardiomediastinum": (
        (r"(?:cardio)?mediastinal (?:widening|enlargement)", "pos"),
        (r"widen(?:ed|ing) (?:of )?(?:the )?(?:superior |upper )?(?:cardio)?mediastin\w*", "pos"),
        (r"(?:enlarged|widened|prominent) (?:cardio)?mediastinum", "pos"),
        (r"cardiac and mediastinal (?:silhouettes?|contours?)", "attr"),  # also a Cardiomegaly mention
        (r"(?:cardio)?mediastinal (?:and hilar )?(?:silhouettes?|contours?|configuration|width|shadow)", "attr"),
        (r"(?:hilar and )?mediastinal contours?", "attr"),
        (r"(?:cardio)?mediastinum|superior mediastinum", "attr"),
        (r"pericardial silhouette", "attr"),
    ),
    "cardiomegaly": (
        (r"cardiomegaly", "pos"),
        (r"cardiac (?:enlargement|hypertrophy)", "pos"),
        (r"(?:enlarged|large|globular|dilated) (?:heart|cardiac silhouette)", "pos"),
        (r"enlargement of the (?:heart|cardiac silhouette)", "pos"),
        (r"cardiac and mediastinal (?:silhouettes?|contours?)", "attr"),
        (r"heart size|size of the heart", "attr"),
        (r"cardiac (?:size|silhouette|shadow|contours?|diameter)", "attr"),
        (r"heart(?! (?:failure|border|borders|valves?|rate|disease|surgery|transplant|catheteri[sz]ation))", "attr"),
    ),
    "lung_opacity": (
        (r"(?:nodular|reticulonodular) (?:opacit\w*|densit\w*|opacification)", "pos"),  # also Lung Lesion
        (r"opaci\w*", "pos"),
        (r"air[- ]?space (?:disease|process|opacit\w*|filling)", "pos"),
        (r"infiltrat\w*", "pos"),
        (r"interstitial (?:markings?|pattern|opacit\w*|thickening|prominence|abnormalit\w*|lung disease|"
         r"changes?|process|disease|infiltrat\w*)", "pos"),
        (r"reticula\w*|reticulonodular", "pos"),
        (r"(?:parenchymal |apical |biapical )?scar(?:ring|s)?\b", "pos"),
        (r"(?:peribronchial|peribronchovascular|bronchial wall|airway wall) (?:thickening|cuffing|opacit\w*)", "pos"),
        (r"(?:peribronchial|bronchial) cuffing", "pos"),
        (r"haziness|hazy", "pos"),
        (r"ground[- ]?glass", "pos"),
        (r"septal (?:thickening|lines)|kerley(?: b)? lines", "pos"),
        (r"increased (?:density|attenuation)|decreased translucency", "pos"),
    ),
    "lung_lesion": (
        (r"(?:nodular|reticulonodular) (?:opacit\w*|densit\w*|opacification)", "pos"),
        (r"mass(?:es)?\b|mass-like|masslike", "pos"),
        (r"nodules?\b", "pos"),
        (r"lump\b", "pos"),
        (r"cavitary (?:lesions?|mass(?:es)?|nodules?)|cavitation", "pos"),
        (r"lesions?\b", "pos"),
        (r"carcinoma\w*|neoplasm\w*|tumou?rs?\b|malignan\w*|cancer", "pos"),
    ),
    "edema": (
        (r"heart failure|chf\b", "pos"),
        (r"o?edema\w*", "pos"),
        (r"fluid overload|volume overload", "pos"),
        (r"(?:pulmonary )?(?:vascular|venous) (?:congestion|engorgement|redistribution|plethora|indistinctness|"
         r"prominence)", "unc"),
        (r"(?:prominen\w*|engorge\w*|indistinct\w*|distended|enlarged|increased) (?:of )?(?:the )?(?:pulmonary |"
         r"central |hilar )?(?:vasculature|vessels|vascular markings)", "unc"),
        (r"(?:pulmonary )?congestion|cephalization|indistinctness", "unc"),
    ),
    "consolidation": (
        (r"consolidat\w*", "pos"),
    ),
    "pneumonia": (
        (r"(?:broncho)?pneumonias?\b|pneumonic|pna\b", "pos"),
        (r"infecti\w*", "pos"),
    ),
    "atelectasis": (
        (r"atelecta\w*", "pos"),
        (r"collaps\w*", "pos"),
    ),
    "pneumothorax": (
        (r"hydropneumothora(?:x|ces)", "pos"),  # also Pleural Effusion
        (r"pneumothora(?:x|ces)|ptx\b", "pos"),
        (r"(?:intra)?pleural (?:air|gas)|air in the pleural space", "pos"),
    ),
    "pleural_effusion": (
        (r"hydropneumothora(?:x|ces)", "pos"),
        (r"(?:pleural )?effusions? and (?:associated |adjacent )?(?:pleural )?thickening", "pos"),  # also Pleural Other
        (r"(?:pleural )?effusions?\b", "pos"),
        (r"pleural (?:fluid|collections?)", "pos"),
        (r"hydrothorax|ha?emothorax|empyema", "pos"),
        (r"blunt\w* (?:of )?(?:the )?(?:\w+ )?(?:costophrenic|cp) (?:angles?|sulc\w*|recess\w*)", "unc"),
        (r"(?:costophrenic|cp) (?:angles?|sulc\w*) (?:(?:is|are|remains?) )?(?:\w+ )?blunt\w*", "unc"),
    ),
    "pleural_other": (
        (r"(?:pleural )?effusions? and (?:associated |adjacent )?(?:pleural )?thickening", "pos"),
        (r"(?:calcified )?pleural (?:and parenchymal )?(?:thickening|scar\w*|plaques?|calcification\w*|"
         r"abnormalit\w*|disease|lesions?|mass(?:es)?)", "pos"),
        (r"(?:thicken\w*|calcifi\w*|scar\w*) (?:of|along) (?:\w+ ){0,5}?pleura\w*", "pos"),
        (r"pleuro-?(?:parenchymal|pericardial) (?:scar\w*|thickening)", "pos"),
        (r"thickened pleura|fibrothorax|fibrosis|apical caps?\b", "pos"),
    ),
    "fracture": (
        (r"fractur\w*|fx\b", "pos"),
    ),
    "support_device": (
        (r"tubes?\b|ett\b|ngt\b|ogt\b|tracheostomy|trach\b", "pos"),
        (r"lines?\b", "pos"),
        (r"picc\b|catheters?\b|cannula\w*|sheath|cvc\b", "pos"),
        (r"pacemaker\w*|pacer\w*|a?icd\b|defibrillator\w*|(?:pacing|pacer|pacemaker|ecg|ekg|monitoring|"
         r"epicardial|transvenous|defibrillator|icd) (?:leads?|wires?)", "pos"),
        (r"ports?\b|port-a-cath|mediport|portacath", "pos"),
        (r"drains?\b|coils?\b|stimulator|loop recorder", "pos"),
        (r"(?:prosthetic|replacement|mechanical|bioprosthetic) (?:aortic |mitral )?valves?|valve (?:replacement|"
         r"prosthesis)", "pos"),
        (r"hardware|plates?\b|screws?\b|arthroplast\w*", "pos"),
        (r"(?:support |monitoring )?devices?\b|swan[- ]ganz|impella|lvad\b|iabp\b|balloon pump", "pos"),
    ),
    "other": (
        # Phrases that would otherwise be read as an observation: osseous or extrathoracic
        # lesions, calcified nodules (CheXpert unmentions them), pericardial effusion,
        # soft-tissue edema, vertebral collapse, subcutaneous air.
        (r"(?:lytic|sclerotic|blastic|osseous|bony|bone|skin|cutaneous|hepatic|liver|renal|adrenal|splenic|"
         r"breast|vertebral|soft tissue|chest wall|neck|axillary) (?:lesions?|mass(?:es)?|nodules?)", "pos"),
        (r"calcified (?:nodul\w*|granuloma\w*|lymph nodes?|nodes?)", "pos"),
        (r"(?:breast|prostate|colon|colorectal|rectal|renal|pancreatic|esophageal|gastric|ovarian|bladder|thyroid|"
         r"laryngeal|cervical|uterine|hepatocellular|head and neck) (?:cancer|carcinoma|malignancy|neoplasm|"
         r"tumou?r)s?", "pos"),
        (r"(?:pericardial|joint|knee|shoulder) effusions?", "pos"),
        (r"(?:soft[- ]tissue|subcutaneous|chest wall|peripheral|airway|laryngeal|upper extremity|"
         r"lower extremity|scalp|facial) o?edema", "pos"),
        (r"(?:vertebral|vertebral body|compression) (?:collapse|deformit\w*)", "pos"),
        (r"mediastinal (?:venous|vascular) (?:engorgement|congestion|distension)", "pos"),
        (r"subcutaneous (?:emphysema|air|gas)|(?:soft tissue|chest wall) (?:emphysema|air|gas)", "pos"),
        (r"emphysema\w*|bullae?\b|bullous|copd\b|hyperinflat\w*|hyperexpan\w*|overinflat\w*", "pos"),
        (r"scoliosis|kyphosis|kyphotic|degenerat\w*|osteopenia|osteophyt\w*|deformit\w*|dislocat\w*", "pos"),
        (r"calcifi\w*|granulom\w*|atherosclero\w*|tortuo\w*|ectatic|ectasia|unfold\w*", "pos"),
        (r"hernia\w*|eventration|elevat\w*", "pos"),
        (r"pneumomediastinum|pneumopericardium|pneumoperitoneum|free (?:intraperitoneal |abdominal )?air", "pos"),
        (r"bronchiectasis|bronchitis|bronchiolitis|aspiration|metasta\w*|fibrotic", "pos"),
        (r"hematoma|hemorrhage|contusion|volume loss|thickening|density|densities", "pos"),
        (r"(?:lymph)?adenopathy|lymph node enlargement|(?:tracheal )?deviat\w*|foreign bod(?:y|ies)|bullets?\b", "pos"),
        (r"prominen\w*|hypertension", "pos"),
    ),
}

# Abnormal qualifiers that make an "attr" mention a finding ("heart size is enlarged").
ABNORMAL_QUALIFIERS = (r"\b(?:enlarg\w*|prominen\w*|widen\w*|wide|increas\w*|large|dilat\w*|exaggerat\w*|"
                       r"globular|borderline)\b")
# A qualifier after these words describes something else ("the heart is difficult to assess
# due to increasing opacification"; "heart size is stable compared to the enlarged ...").
QUALIFIER_END = r"\b(?:due to|because|given|secondary to|related to|by|from|than|compared|since|relative to)\b"

# ----------------------------------------------------------------------------- cues
# (pattern, kind, rule). Kinds, by the stage of CheXpert's classification they belong to:
#   "pre>", "pre<", "pre<>" - pre-negation uncertainty: matched before negation, so "cannot
#        exclude pneumonia" is uncertain although it contains a negation;
#   "neg>", "neg<", "neg<>" - negation;
#   "neg>1" - negation of the next noun phrase only ("not", "normal");
#   "neg<1" - negation of the phrase just before, without a verb ("heart size normal");
#   "neg>if" - negation that continues an earlier negation of its clause ("no consolidation
#        is seen to suggest pneumonia"), a hedge otherwise;
#   "unc>", "unc<", "unc<>" - uncertainty (post-negation: a negated mention stays negative);
#   "unc<|>" - forward if a mention follows in its scope ("the opacity is likely atelectasis"),
#        backward otherwise ("atelectasis is likely");
#   "pseudo" - looks like a cue but is none ("normal position", "gram-negative"): it is
#        consumed so that the shorter cue inside it does not fire, and is transparent to scopes;
#   "stop" - a pseudo-cue that also ends the scopes around it ("no change in X").
# ">" reaches forward (the mentions after the cue), "<" backward, "<>" both. How far is
# decided by sentence, clause and list structure (see medvl.metrics._labeler), never by a
# count of words. A pattern that starts with "{be}" may follow a copula or auxiliary and
# an adverb ("is absent", "has since resolved", "are otherwise unremarkable"), with
# "{be!}" it must. Where two cues start at the same word the one listed first wins, so
# the longer forms come first.
COPULA = (r"(?:is|are|was|were|has been|have been|had been|has|have|had|remains?|remained|appears?|appeared|"
          r"seems?|looks?)")
COPULA_ADVERB = (r"(?:now|again|still|also|previously|since|otherwise|overall|grossly|entirely|essentially|"
                 r"completely|fully|stably|currently|relatively|then|subsequently)")
_TECHNIQUE = (r"(?:the |a |an |some |differences in |difference in )?(?:patient(?:'s)? |mild |slight |rightward |"
              r"leftward |the patient's |semi-?(?:erect|upright|supine) )?(?:rotation|rotated positioning|positioning|"
              r"position|technique|projection|supine (?:positioning|position|technique|projection)|supine|"
              r"portable technique|ap (?:technique|projection|positioning)|low (?:lung )?volumes|lung volumes|"
              r"(?:poor |shallow |low )?inspiration|inspiratory effort|body habitus|habitus|overlying soft tissues?|"
              r"soft tissues?|epicardial fat|fat pad|mediastinal fat|fat)")

CUES: tuple[tuple[str, str, str], ...] = (
    # --- pseudo-cues
    (r"no (?:\w+ )?(?:significant |substantial |appreciable |interval |major |overall |definite |notable |"
     r"radiographic |further )*(?:change|changes|increase|progression|difference|worsening|enlargement)\b",
     "stop", "'no significant change in X' and 'no increase in X' say X persists; they negate nothing and end "
     "the scope of an earlier cue"),
    (r"without (?:significant |substantial |interval |appreciable )*(?:change|progression|increase)",
     "stop", "'without change' describes persistence, not absence"),
    (r"(?:in |at )?(?:normal|standard|satisfactory|appropriate|expected|good|acceptable|unremarkable) "
     r"(?:position|positioning|placement|location|alignment|course|caliber)",
     "pseudo", "in 'tube in normal position' the word normal qualifies the placement, not the device"),
    (r"not only|gram[- ]negative|no longer intubated", "pseudo",
     "fixed phrases that are no negation: 'not only', 'gram-negative'"),
    (r"{be}(?:nearly|almost|near|partially|partly|largely|mostly|incompletely|not (?:completely|entirely|fully)|"
     r"near[- ]complete|partial|incomplete) (?:resolved|resolution|cleared|clearing|resolving|removed|removal)"
     r"(?: of)?", "pseudo", "a partly resolved finding is still present: 'nearly resolved effusion', "
     "'X has partially cleared'"),
    (r"{be}not (?:\w+ )?(?:changed|increased|decreased|improved|worsened|progressed)(?: (?:significantly|"
     r"substantially|appreciably|markedly|much|in size|in appearance))?",
     "stop", "'X has not changed appreciably' says X persists"),
    (r"(?:that|which) (?:was|were|is|are|had been|has been) (?:previously |recently |initially |earlier |"
     r"formerly )?(?:seen|noted|present|described|demonstrated|identified|visuali[sz]ed|shown)",
     "pseudo", "a relative clause recalling an earlier study ends no scope: 'the effusion that was seen "
     "previously has resolved'"),
    # --- pre-negation uncertainty
    (r"(?:cannot|can not|can't|could not|couldn't|may not|might not) (?:be )?(?:entirely |completely |"
     r"definitely |totally |fully |definitively |reliably |confidently |absolutely |firmly |certainly )?"
     r"(?:exclude[ds]?|rule[ds]? out|ruled out)",
     "pre<>", "'cannot exclude X' and 'X cannot be excluded' (CheXpert: uncertainty matched before negation)"),
    (r"{be}not (?:be )?(?:\w+ )?(?:excluded|ruled out)",
     "pre<", "'X is not excluded', 'X is not entirely excluded', 'not ruled out' are uncertain"),
    (r"difficult to (?:exclude|rule out)|(?:no|without) (?:\w+ )?evidence to rule out",
     "pre<>", "'difficult to exclude X' is uncertain"),
    (r"no new", "pre>", "'no new X' leaves an old X open (CheXpert's pre-negation rule)"),
    # --- a finding explained away by technique (before "is likely" below)
    (r"(?:(?:may|might|could) (?:also )?(?:be |represent |reflect )?(?:just |simply |partly |in part )?|possibly |"
     r"partly |partially |in part )(?:due to|related to|relate to|secondary to|attributable to|(?:a |the )?result "
     r"of|caused by|exaggerated by|accentuated by|explained by|from) " + _TECHNIQUE,
     "unc<", "a finding that may be due to technique is uncertain: 'mediastinal widening may be due to supine "
     "positioning'"),
    (r"{be}(?:(?:most |more )?likely |probably |presumably |almost certainly )?(?:due to|related to|relates? to|"
     r"secondary to|attributable to|(?:a |the )?result of|caused by|explained by|accounted for by|reflecting|"
     r"reflects?) " + _TECHNIQUE,
     "neg<", "a finding explained by technique is no finding: 'widening of the mediastinum is likely due to "
     "supine positioning', 'prominence related to low lung volumes'"),
    # --- the object of an examination, not a finding
    (r"(?:(?:to|for) )?(?:(?:further |better )?evaluat(?:e|ion|ing)|assess(?:ment|ing)?|detect(?:ion|ing)?|"
     r"look(?:ing)?|screen(?:ing)?|search(?:ing)?|monitor(?:ing)?) (?:for|of)(?: (?:the )?(?:presence|"
     r"development) of)?(?: a| an)?|(?:sensitivity|ability) (?:to|for) (?:detect(?:ion|ing)?|identify(?:ing)?|"
     r"the detection of|see)(?: a| an)?|to (?:detect|identify|evaluate|assess)(?: for)?(?: a| an)?|"
     r"if (?:there is )?(?:continued |ongoing |persistent |further )?(?:clinical )?(?:concern|suspicion) (?:for|of)",
     "neg>", "the object of a search is no finding, as CheXpert treats rule out X: 'sensitivity to detect "
     "pneumothorax', 'evaluation for pneumonia', 'if there is continued concern for rib fractures'"),
    # --- uncertainty phrases that contain a negation word (before the negations)
    (r"{be}(?:not well|poorly|incompletely|not clearly|not definitely|not reliably|not adequately|not fully) "
     r"(?:seen|visuali[sz]ed|evaluated|assessed|delineated|imaged|demonstrated)",
     "unc<>", "'X is not well visualized' and 'poorly evaluated X' are uncertain (CheXpert)"),
    (r"(?:cannot|can not|could not) be (?:assessed|evaluated|determined)",
     "unc<", "'X cannot be assessed' is uncertain"),
    (r"{be}(?:difficult|hard|impossible) to (?:assess|evaluate|see|determine)",
     "unc<", "'X is difficult to assess' is uncertain"),
    # --- negation, backward: the finding comes first, the predicate denies it
    (r"{be}(?:not|no longer) (?:\w+ )?(?:seen|visuali[sz]ed|visible|identified|demonstrated|evident|present|noted|"
     r"detected|apparent|appreciated|appreciable|observed)",
     "neg<", "'X is not seen', 'X is no longer visualized', 'X not identified' (NegEx post-negation)"),
    (r"{be}(?:absent|excluded|ruled out|removed|withdrawn|disappeared|gone)",
     "neg<", "'X is absent', 'X has been removed', 'X disappeared' (CheXpert)"),
    (r"{be}(?:resolved|cleared)", "neg<>", "'X has resolved', 'X has since resolved', 'X cleared', and "
     "'resolved X' (CheXpert)"),
    (r"{be}(?:not|never) (?:been )?(?:\w+ )?(?:enlarged|widened|dilated)",
     "neg<", "'the heart is not enlarged' (CheXpert)"),
    (r"{be!}(?:within normal limits|(?:at |within )?(?:the )?(?:upper |high )?(?:limits?|range) of normal|"
     r"(?:top|upper|high|low)[- ]normal|normal|unremarkable|negative)",
     "neg<", "'X is normal', 'X and Y are unremarkable', 'X is within normal limits', 'X is at the upper "
     "limits of normal' (CheXpert)"),
    (r"normal in (?:size|caliber|calibre|contour|appearance|configuration|width)",
     "neg<", "'the heart is normal in size'"),
    (r"within normal limits|(?:at |within )?(?:the )?(?:upper |high )?(?:limits?|range) of normal",
     "neg<1", "'heart size within normal limits' without a verb"),
    (r"(?:top|upper|high)[- ]normal|normal|unremarkable",
     "neg>1<1", "'normal heart size', 'top-normal heart size', 'heart size normal' (CheXpert: normal, "
     "unremarkable)"),
    (r"none|negative(?! for)", "neg<1", "'pneumothorax none' without a verb"),
    # --- negation, forward: the cue comes first and covers the following list
    (r"no longer", "neg<>", "'no longer X' and 'X no longer'"),
    (r"(?:no|without|not) (?:\w+ )?(?:evidence|signs?|findings?|features?|suggestion|demonstration) (?:of|for|"
     r"to suggest)", "neg>", "'no evidence of X', 'no radiographic evidence of X', 'without signs of X' "
     "(CheXpert)"),
    (r"no|without|negative for|free of|clear of|absence of|neither|rather than|instead of|as opposed to",
     "neg>", "'no X, Y, or Z', 'without X', 'negative for X', 'free of X', 'X rather than Y' (CheXpert)"),
    (r"(?:interval |complete |subsequent )?(?:resolution|removal|disappearance|clearing|extraction|withdrawal) "
     r"of(?: the)?|status post removal of",
     "neg>", "'resolution of X', 'interval removal of the tube' (CheXpert)"),
    (r"history of", "neg>", "'history of X' is no current finding (CheXpert)"),
    (r"rule[sd]? out|ruling out|to exclude|exclud(?:e|es|ing)\b|r / o|mistaken for",
     "neg>", "'rule out X', 'to exclude X', 'should not be mistaken for X' (CheXpert: exclude, rule out)"),
    (r"not", "neg>1", "'atelectasis, not pneumonia'"),
    (r"to (?:suggest|indicate|explain|represent)|suggestive of",
     "neg>if", "continues an earlier negation of its clause, 'no consolidation is seen to suggest pneumonia' "
     "(CheXpert); otherwise a hedge, 'opacity suggestive of pneumonia'"),
    # --- uncertainty, backward
    (r"{be!}(?:(?:more|most|less|very) )?(?:possible|possibly present|questioned|suspected|questionable|equivocal|"
     r"borderline|uncertain|indeterminate|likely|probable|favou?red|suggested|considered|a (?:possibility|"
     r"consideration)|not (?:entirely )?certain|in question)",
     "unc<|>", "a predicate hedge covers its complement when it has one, 'the opacity is likely atelectasis', "
     "and its subject otherwise: 'X is possible', 'X is suspected', 'X is likely', 'X is a consideration' "
     "(CheXpert)"),
    (r"(?:may|might|could|can|possibly|probably) (?:also |still )?(?:be )?(?:present|seen|visible|developing|"
     r"considered|noted|identified|included|occult|missed|hidden)",
     "unc<", "'X may be present', 'X could be considered', 'fractures may be occult' (CheXpert)"),
    (r"{be}(?:radiographically )?occult", "unc<", "'a fracture is radiographically occult' is uncertain"),
    (r"{be}(?:partially |partly )?obscured", "unc<", "'X is obscured' (CheXpert: obscure)"),
    # --- uncertainty, both ways
    (r"versus|vs|and / or", "unc<>", "'X versus Y', 'X vs Y', 'X and/or Y' (CheXpert: versus, and/or)"),
    # --- uncertainty, forward
    (r"(?:may|might|could|would|can)(?: (?:also|possibly|potentially|still|in part))?(?: (?:be|represent|reflect|"
     r"indicate|include|relate|correspond|signify|have))?(?: (?:(?:related|due|secondary|attributable) to|"
     r"consistent with|compatible with|in keeping with))?",
     "unc>", "'may represent X', 'could be X', 'might reflect X', 'may be due to X' (CheXpert)"),
    (r"(?:(?:(?:most|more|less) )?likely|probabl[ey]|possibl[ey]|presum(?:ed|ably|ptive)) (?:represents?|reflects?|"
     r"indicates?|relates? to|is|are|due to|related to|secondary to|suggests?|corresponds? to)",
     "unc>", "a hedge before a verb covers its object: 'opacity likely reflects atelectasis', 'probably represents "
     "pneumonia'"),
    (r"(?:(?:most|more|less) )?likely|probabl[ey]|possibl[ey]|presum(?:ed|ably|ptive)|questionabl[ey]|"
     r"question of|suspicious(?: for| of)?|suspicion (?:of|for)|suspect(?:ed|s)?|concerning for|(?:a )?concern "
     r"for|worrisome(?: for)?|suggest(?:s|ed|ing)?|suggestion of|favou?r(?:s|ed|ing)?\b|"
     r"consider(?:s|ed|ing|ation)?(?: of)?|differential(?: diagnosis| diagnoses| considerations?)?(?: (?:would "
     r")?(?:includes?|including|is|are))?|equivocal|maybe|perhaps|uncertain|indeterminate|cannot be (?:"
     r"differentiated|distinguished)|(?:clinical(?:ly)? )?correlat\w*(?: clinically)?(?: for| with)?|"
     r"secondary to|borderline|(?:raising|raises) (?:the )?(?:possibility|question) of",
     "unc>", "hedges: 'possible X', 'likely X', 'questionable X', 'suspicious for X', 'concerning for X', "
     "'differential includes X', 'correlate clinically for X' (CheXpert, NegBio)"),
)

# ----------------------------------------------------------------------------- structure
# (pattern, kind). "end" closes every scope (a clause boundary); "comma", "and", "or" and
# "with" shape lists; "verb" is a finite verb that ends a noun phrase, so a forward scope
# stops there ("no pneumothorax is seen and ...") and a backward one does not reach past it
# ("the tube that was placed has been removed" stops at "was"). STRUCTURE_WORDS start and
# end at word boundaries; STRUCTURE_PUNCT start with punctuation.
STRUCTURE_WORDS: tuple[tuple[str, str], ...] = (
    (r"but|however|although|though|whereas|while|except(?: for)?|apart from|other than|aside from|"
     r"with the exception of|besides|which|who|whose|nevertheless|nonetheless|otherwise|in addition|"
     r"additionally|yet|and (?:the|there|this|these|it|its)", "end"),
    (r"or|nor", "or"),
    (r"and|as well as", "and"),
    (r"with|along with", "with"),
    (r"is|are|was|were|has|have|had|remains?|remained|appears?|appeared|persists?|persisted|measures?|"
     r"demonstrates?|shows?|reveals?|projects?|extends?|terminates?|courses?|ends?|lies|overlies|overlie|"
     r"represents?|reflects?|indicates?|seems?|looks?|be|been|being|will|does|do|did", "verb"),
)
STRUCTURE_PUNCT: tuple[tuple[str, str], ...] = (
    (r"[;:]|,\s*(?:and\s+)?(?:the|there|this|these|it|its)\b", "end"),
    (r",", "comma"),
    (r"&", "and"),
)

# Words that, opening the next item after a comma or "and"/"with", start a new assertion
# rather than continue a negated list: "no pneumothorax, small left effusion". A list
# closed by "or"/"nor" is one negated list whatever its items' modifiers ("no effusion,
# pneumothorax, large consolidation, or mass").
NEW_ASSERTION = frozenset(
    "small mild mildly moderate moderately large severe minimal trace tiny new increased increasing persistent "
    "persistently stable unchanged decreased decreasing improved improving worsening worsened extensive "
    "developing residual patchy left right bilateral bibasilar bibasal there interval again the a an this these "
    "possible possibly probable probably likely questionable suspected presumed may might could cannot "
    "borderline slight slightly subtle known chronic old healed dense diffuse multifocal scattered".split()
)

# Side words of a mention's laterality (``extract_mentions``): (pattern, side).
LATERALITY = (
    (r"\b(?:bilateral\w*|bibasilar|bibasal|both)\b", "bilateral"),
    (r"\b(?:left|lt)\b", "left"),
    (r"\b(?:right|rt)\b", "right"),
)

# ----------------------------------------------------------------------------- sections
# Sections that hold the reason for the study rather than its findings; the labeler skips
# them (CheXpert labels the impression; "INDICATION: rule out pneumonia" is no finding).
# "narrative" sections run to the next heading or blank line, "line" ones to the end of
# their line.
SKIP_SECTIONS_NARRATIVE = (r"indications?|clinical (?:indications?|history|information|info|data|details|notes?)|"
                           r"(?:patient |past medical |medical |surgical )?history|reason for (?:the |this )?(?:exam(?:ination)?|study|"
                           r"request|consult(?:ation)?)|"
                           r"reason|(?:underlying )?medical condition|provisional diagnosis|admitting diagnosis|"
                           r"ordering diagnosis|question")
SKIP_SECTIONS_LINE = r"exam(?:ination)?|technique|comparisons?|comparison (?:exam|study|film)s?|reference exam|" \
                     r"procedure|type of (?:exam|study)|study|dictated by|signed by|attending"
KEEP_SECTIONS = r"findings?|impressions?|conclusions?|summary|opinion|wet read|recommendations?|notification|" \
                r"addendum|final report"
