"""What a DICOM header says about the image, checked before any pixel work: cheap and exact.

The model reads frontal chest radiographs. A DICOM file says what it holds in three tags,
none of them patient data, and these rules act on them (``cxr.dicom`` calls
:func:`check_header` right after reading the header):

* **Modality (0008,0060)** must be a projection radiograph: :data:`RADIOGRAPH_MODALITIES`
  (CR, DX, RG, and DR, which some vendors write for DX). Anything else (CT, MR, US, NM, PT,
  MG, XA, RF, IO, PX, OT secondary captures, RT objects, SR, SEG, waveforms...) gets
  ``NotAChestXray`` naming the modality. A file without Modality (non-conformant, but
  tools that convert PNGs write them) is not judged here.
* **Body Part Examined (0018,0015)**, when present and not empty, must name the chest:
  one of its words is in :data:`CHEST_BODY_PARTS` (CHEST, THORAX, LUNG...; "CHEST PA" and
  "PORTABLE CHEST" pass, "CSPINE", "ABDOMEN" and "CHESTABDOMEN" do not).
* **View Position (0018,5101)**: a lateral view (:data:`LATERAL_VIEWS`: LL, RL, LAT,
  LATERAL) gets ``LateralView``; so does a View Code Sequence whose first item means a
  lateral view when View Position is absent. Frontal views (PA, AP), decubitus (RLD, LLD:
  the beam still crosses the chest front to back) and obliques (RLO, LLO) are read.

Values echoed in a message are reduced to the characters their VR allows (CS: A-Z, 0-9,
space, underscore; at most 64 characters for a code meaning), so a crafted header cannot put
markup or a long text into a response.
"""

from __future__ import annotations

import re

from .errors import LateralView, NotAChestXray

#: Modality values of a projection radiograph: Computed Radiography, Digital Radiography,
#: Radiographic imaging (film/screen), and "DR", not a DICOM term but written by some vendors.
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "RG", "DR"})

#: What the refused modalities are, for the message (the list refused is "everything else").
MODALITY_NAMES = {
    "CT": "a CT slice", "MR": "an MR slice", "US": "an ultrasound image",
    "NM": "a nuclear medicine image", "PT": "a PET image", "MG": "a mammogram",
    "XA": "an angiography image", "RF": "a fluoroscopy image", "IO": "an intra-oral X-ray",
    "PX": "a panoramic dental X-ray", "OT": "a secondary capture (other)",
    "SC": "a secondary capture", "RTDOSE": "an RT dose", "RTSTRUCT": "an RT structure set",
    "RTPLAN": "an RT plan", "RTIMAGE": "an RT portal image", "SR": "a structured report",
    "SEG": "a segmentation", "ECG": "a waveform", "DOC": "a document", "KO": "a key object note",
    "PR": "a presentation state", "OP": "an ophthalmic photograph", "XC": "a photograph",
    "ES": "an endoscopy image", "SM": "a slide microscopy image",
}

#: Words of Body Part Examined that mean the chest (English defined term, common synonyms,
#: and the spellings Spanish, Portuguese and Italian systems write).
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "LUNGS", "TORAX", "TORACE"})

#: View Position values of a lateral view.
LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT"})

#: The header tags these rules read (``cxr.dicom`` adds them to the tags it parses).
HEADER_TAGS = ("Modality", "BodyPartExamined", "ViewPosition", "ViewCodeSequence")


def check_header(ds) -> None:
    """Raise ``NotAChestXray`` or ``LateralView`` when the header says so; else return."""
    modality = _cs(ds.get("Modality"))
    if modality and modality not in RADIOGRAPH_MODALITIES:
        what = MODALITY_NAMES.get(modality, "not a projection radiograph")
        raise NotAChestXray(
            f"The DICOM Modality is {modality} ({what}); this model reads chest radiographs "
            "(Modality CR or DX) only."
        )
    body_part = _cs(ds.get("BodyPartExamined"))
    if body_part and not CHEST_BODY_PARTS.intersection(re.split(r"[ _]+", body_part)):
        raise NotAChestXray(
            f"The DICOM Body Part Examined is {body_part}, not the chest; this model reads "
            "chest radiographs only."
        )
    view = _cs(ds.get("ViewPosition"))
    if view in LATERAL_VIEWS:
        raise LateralView(
            f"The DICOM View Position is {view}, a lateral view; this model reads frontal "
            "(PA or AP) chest radiographs only."
        )
    if not view:
        meaning = _view_code_meaning(ds)
        if meaning and _is_lateral_meaning(meaning):
            raise LateralView(
                f"The DICOM View Code Sequence says '{meaning}', a lateral view; this model "
                "reads frontal (PA or AP) chest radiographs only."
            )


def _cs(value) -> str:
    """A Code String value as text of its own charset (first value of a multi-valued one)."""
    if value is None:
        return ""
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        value = value[0] if len(value) else ""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return re.sub(r"[^A-Z0-9 _]", "", str(value).upper()).strip()[:16]


def _view_code_meaning(ds) -> str:
    try:
        sequence = ds.get("ViewCodeSequence")
        if not sequence:
            return ""
        meaning = str(sequence[0].get("CodeMeaning", "") or "")
    except Exception:  # noqa: BLE001 - a damaged sequence says nothing about the view
        return ""
    return re.sub(r"[^A-Za-z0-9 ()\-]", "", meaning).strip()[:64]


def _is_lateral_meaning(meaning: str) -> bool:
    words = set(re.split(r"[^a-z]+", meaning.lower()))
    return "lateral" in words and not words & {"decubitus", "oblique"}
