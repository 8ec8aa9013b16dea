"""MURA v1.1's path grammar: split, body part, patient, study, result and view, read from a file's path."""

from __future__ import annotations

import re
from dataclasses import dataclass

BODY_PARTS = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
MURA_DIR = "MURA-v1.1"
_MURA_PATH = re.compile(
    r"(?:^|/)(?P<split>train|valid)/XR_(?P<body_part>[A-Z]+)/(?P<patient>patient\d+)/"
    r"study(?P<study>\d+)_(?P<result>positive|negative)/(?:image(?P<view>\d+)\.\w+)?$"
)


@dataclass(frozen=True)
class MuraFields:
    split: str
    body_part: str
    patient_id: str
    study_id: str
    view: int | None
    label: int


def parse_mura_path(path: str) -> MuraFields | None:
    """Fields encoded in a MURA path (``.../train/XR_WRIST/patient00001/study1_positive/image2.png``)."""
    match = _MURA_PATH.search(path.replace("\\", "/"))
    if not match:
        return None
    patient, body_part, study = match["patient"], match["body_part"], match["study"]
    return MuraFields(
        split=match["split"],
        body_part=body_part,
        patient_id=patient,
        study_id=f"{patient}/XR_{body_part}/study{study}",  # study numbers restart per body part
        view=int(match["view"]) if match["view"] else None,
        label=1 if match["result"] == "positive" else 0,
    )
