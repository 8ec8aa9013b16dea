"""The scores' layout: a folder per metric family, read as one frame; the layout before family folders read as it is,
in the current spelling; a family name the store cannot hold refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from densecam_core.evaluation.families import MetricFamily, register_family, validate_families
from densecam_core.store import scores
from densecam_core.store.layout import StoreError


def _rows(metric: str, values: list[float], stage: int | None = None) -> pd.DataFrame:
    ids = [f"img{i}" for i in range(len(values))]
    return pd.DataFrame(
        {"image_id": ids, "row": range(len(ids)), "method": "cam", "block": 4, "metric": metric, "stage": stage}
        | {"value": values, "shard": 0}
    )


def _error(image_id: str, row: int) -> pd.DataFrame:
    return pd.DataFrame({"image_id": [image_id], "row": [row], "metric": "error", "value": np.nan, "error": "gone"})


def test_each_family_has_its_folder_and_an_image_that_failed_is_one_error_row(tmp_path):
    run = str(tmp_path / "run")
    scores.write_metrics_part(
        run, 0, pd.concat([_rows("deletion_auc", [0.1, 0.2]), _error("img9", 9)]), family="deletion"
    )
    scores.write_metrics_part(
        run, 0, pd.concat([_rows("stability_r", [0.7, 0.8]), _error("img9", 9)]), family="stability"
    )
    scores.write_evaluation(run, "deletion", {"seed": 0})
    assert sorted(p.name for p in (tmp_path / "run" / "metrics").iterdir()) == ["family=deletion", "family=stability"]
    frame = scores.read_metrics(run)
    assert sorted(frame["metric"]) == ["deletion_auc", "deletion_auc", "error", "stability_r", "stability_r"]
    assert list(scores.family_parts(run, "stability")) == [0] and scores.family_parts(run, "insertion") == {}
    assert scores.scored_families(run) == {"deletion": {"seed": 0}}
    hive = pd.read_parquet(tmp_path / "run" / "metrics")  # other tools read the folder as one dataset
    assert sorted(hive["family"].astype(str).unique()) == ["deletion", "stability"]


def test_scores_written_before_family_folders_are_read_in_the_current_spelling(tmp_path):
    run = tmp_path / "run"
    (run / "metrics").mkdir(parents=True)
    old = pd.concat([_rows("deletion_auc", [0.1]), _rows("randomization_spearman", [0.9], stage=5)])
    pq.write_table(scores.metric_table(old), run / "metrics" / "part-000000.parquet")
    (run / "metrics" / "_evaluation.json").write_text(
        json.dumps({"seed": 0, "steps": 16, "metrics": ["deletion", "randomization"]})
    )
    frame = scores.read_metrics(str(run))
    assert sorted(frame["metric"]) == ["deletion_auc", "randomisation_spearman"]
    assert scores.scored_families(str(run)) == {
        "deletion": {"seed": 0, "steps": 16},
        "randomisation": {"seed": 0, "steps": 16},
    }
    assert (
        list(scores.family_parts(str(run), "randomisation")) == [0] and scores.family_parts(str(run), "stability") == {}
    )
    assert validate_families("deletion,randomization,localization") == ("deletion", "randomisation", "localisation")
    scores.clear_metrics(str(run), ("stability",))
    assert scores.holds_legacy_scores(str(run))


def test_a_family_name_the_store_cannot_hold_is_refused():
    with pytest.raises(StoreError, match="not a name the store can hold"):
        register_family(MetricFamily(name="../up", metrics=("x",), scorer="m:f"))
    with pytest.raises(StoreError, match="not a name the store can hold"):
        scores.family_dir("run", "Deletion")
