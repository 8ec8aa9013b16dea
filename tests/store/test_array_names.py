"""Which array names a run's metadata may hold: every method the registry has, a future one named with digits,
and never a path out of the run; a map's key, its array name and label agree."""

from __future__ import annotations

import pytest

from densecam_core.store.layout import array_name, is_array_name
from densecam_core.vocabulary import BLOCKS, METHOD_REGISTRY, MapKey, Method, map_keys, method_names, register_method


def test_every_method_and_a_future_one_have_names_the_store_accepts():
    names = ["logits", "targets", "cam", *(array_name(m, b) for m in (*method_names(), "gradcam2") for b in BLOCKS)]
    assert all(is_array_name(name) for name in names)


@pytest.mark.parametrize(
    "name",
    [
        "../x/block1",
        "Gradcam/block1",
        "gradcam/block5",
        "a/b/block1",
        "/block1",
        "2cam/block1",
        "cam/block2",
        "gradcam",
    ],
)
def test_paths_and_other_shapes_are_refused(name: str):
    assert not is_array_name(name)


def test_a_key_names_its_array_and_reads_back_from_it():
    for key in map_keys(method_names(), target=2):
        assert MapKey.from_array_name(key.array_name, target=2) == key
    assert MapKey("cam").array_name == "cam" and MapKey("cam").label == "CAM"
    assert (
        MapKey("gradcampp", 3).label == "Grad-CAM++ block 3" and MapKey("gradcampp", 3).array_name == "gradcampp/block3"
    )
    with pytest.raises(ValueError, match=r"block must be one of \(4,\) for 'cam'"):
        MapKey("cam", 2)
    with pytest.raises(ValueError, match="not a method name"):
        MapKey("../x", 1)


def test_a_registered_method_is_known_to_the_explainer_settings_and_the_store():
    from densecam_core.cam.explainer import method_function
    from densecam_core.vocabulary import validate_methods

    for name in method_names():
        assert callable(method_function(name))
    method = Method("doubled", "densecam_core.cam.methods:hirescam", "Doubled", default=False)
    try:
        register_method(method)
        assert validate_methods("doubled,gradcam") == ("gradcam", "doubled")
        assert is_array_name("doubled/block2") and MapKey("doubled", 2).label == "Doubled block 2"
    finally:
        del METHOD_REGISTRY["doubled"]
    with pytest.raises(ValueError, match="none of"):
        register_method(Method("random", "m:f", "Random"))
    with pytest.raises(ValueError, match="lower-case letter"):
        register_method(Method("a/b", "m:f", "Path"))
    with pytest.raises(ValueError, match="only the built-in methods are computed by default"):
        register_method(Method("mine", "m:f", "Mine", default=True))  # METHODS, configs' default, is fixed
    assert "mine" not in METHOD_REGISTRY
