"""Which array names a run's metadata may hold: every method the Explainer has, a future one named with digits,
and never a path out of the run."""

from __future__ import annotations

import pytest

from densecam_core.store.layout import ARRAY_NAME, array_name
from densecam_core.vocabulary import ALL_METHODS, BLOCKS


def test_every_method_and_a_future_one_have_names_the_store_accepts():
    names = ["logits", "targets", "cam", *(array_name(m, b) for m in (*ALL_METHODS, "gradcam2") for b in BLOCKS)]
    assert all(ARRAY_NAME.match(name) for name in names)


@pytest.mark.parametrize(
    "name", ["../x/block1", "Gradcam/block1", "gradcam/block5", "a/b/block1", "/block1", "2cam/block1"]
)
def test_paths_and_other_shapes_are_refused(name: str):
    assert not ARRAY_NAME.match(name)


def test_the_explainer_has_a_function_for_every_method_name_and_no_other():
    from densecam_core.cam.methods import METHOD_FUNCTIONS

    assert tuple(METHOD_FUNCTIONS) == ALL_METHODS
