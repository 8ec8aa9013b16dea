"""bf16 requested where the device only emulates it must warn; native bf16 and fp32 must not."""

from __future__ import annotations

import warnings

import pytest
import torch

from densecam_core import Explainer, load_densenet169
from densecam_core.model.precision import SlowPrecisionWarning, native_bf16, warn_if_emulated


def _cpu_bf16(monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "native"), [(False, False, False), (True, False, True), (False, True, True)]
)
def test_native_bf16_follows_cpu_flags(monkeypatch, avx512_bf16, amx, native):
    _cpu_bf16(monkeypatch, avx512_bf16, amx)
    assert native_bf16("cpu") is native


def test_explainer_warns_on_emulated_bf16(monkeypatch):
    _cpu_bf16(monkeypatch, False, False)
    model = load_densenet169()
    with pytest.warns(SlowPrecisionWarning, match="emulated.*fp32"):
        Explainer(model, precision="bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Explainer(model, precision="fp32")


def test_no_warning_with_native_bf16(monkeypatch):
    _cpu_bf16(monkeypatch, True, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_emulated("bf16", "cpu")
        Explainer(load_densenet169(), precision="bf16")
