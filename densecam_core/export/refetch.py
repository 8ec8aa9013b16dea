"""Sources of a PACS run whose cache is gone are fetched again by the query the run recorded, into the same
cache under the same pseudonymous names: the export then finds each instance by the keyed pseudonym of its
SOP Instance UID (no map of UIDs is ever stored)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from densecam_core.data.pseudonyms import Identifiers
from densecam_core.data.sources.dicomweb.address import is_dicomweb
from densecam_core.store.run import Run

TARGETED = "(a targeted pull"


def refetch_missing_sources(run: Run, rows: pd.DataFrame, identifiers: object) -> int:
    """Pull again the instances of ``rows`` missing from a DICOMweb run's cache; how many were missing. A targeted
    pull (its list of studies is not recorded) and other runs are left alone: their rows say the file is gone."""
    source = run.record.manifest_source
    if not is_dicomweb(source) or TARGETED in source or not isinstance(identifiers, Identifiers | None):
        return 0
    missing = [str(path) for path in rows["path"] if not os.path.exists(str(path))]
    if not missing:
        return 0
    from densecam_core.data.manifest import read_manifest

    for root in sorted({str(Path(path).parent.parent) for path in missing}):
        read_manifest(source, pacs_cache=root, identifiers=identifiers, dicom_metadata=False)
    return len(missing)
