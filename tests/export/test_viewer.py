"""What a radiologist sees: the objects densecam sends to a real PACS (Orthanc), opened in the most used open
web viewer (OHIF 3.13, npm's prebuilt ``@ohif/app``) in headless Chromium. The Secondary Capture and the binary
Segmentation must show; OHIF does not render fractional Segmentations (its own refusal, checked too, so this
test would see the day it does)."""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from densecam_core.data.pseudonyms import create_key
from jobs.cli import export as export_cli
from tests.support.dicom_runs import explain
from tests.support.ohif import serving_viewer
from tests.support.orthanc import running_orthanc
from tests.support.pacs_seed import NEMA
from tests.support.system import require

pytestmark = pytest.mark.slow
SOURCE = "RG3_UNCR.dcm"  # the NEMA tibia CR: OHIF shows it (it shows the JPEG 2000 chest CR black, map or not)


def _browser():
    chromium, driver = require("chromium", "chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1400,900", "--enable-unsafe-swiftshader"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def _viewport(browser, seconds: float = 30.0) -> np.ndarray:
    """The pixels of the viewer's largest canvas, as shown on screen (RGB), its tour and banner dismissed first
    (they may appear late). While a display set is being swapped in, the viewport has no canvas for a moment (or
    the one found is replaced before it is read): it is looked for again, up to ``seconds``."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + seconds
    while True:
        _dismiss(browser)
        shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
        try:
            boxes = [c.rect for c in browser.find_elements(By.TAG_NAME, "canvas")]
        except StaleElementReferenceException:
            boxes = []
        if boxes:
            box = max(boxes, key=lambda b: b["width"] * b["height"])
            crop = shot.crop(
                (int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"]))
            )
            return np.asarray(crop).astype(int)
        assert time.monotonic() < deadline, f"the viewer showed no viewport within {seconds:.0f} s"
        time.sleep(0.5)


def coloured(pixels: np.ndarray) -> float:
    """The share of pixels with warm colour: a radiograph is grey and the viewer's own dialogs are blue, while a
    map over the radiograph (the colormap's reds, yellows and greens, a segment's red) is not."""
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return float((((red - blue) > 60) | ((green - blue) > 60)).mean())


def _until(condition: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def _dismiss(browser) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    for label in ("Skip all", "Confirm and hide"):
        for button in browser.find_elements(By.XPATH, f"//*[normalize-space(text())='{label}']"):
            with contextlib.suppress(WebDriverException):  # gone or covered meanwhile: the next look tries again
                button.click()


def _open(browser, url: str, study: str) -> dict[str, object]:
    """The study open in the viewer, its tour and banner dismissed; its thumbnails by modality (a binary
    Segmentation's as ``SEG binary``)."""
    from selenium.webdriver.common.by import By

    browser.get(f"{url}/viewer?StudyInstanceUIDs={study}")
    thumbnails = "[data-cy^='study-browser-thumbnail']"
    assert _until(lambda: len(browser.find_elements(By.CSS_SELECTOR, thumbnails)) == 4, 90)
    found = {}
    for thumbnail in browser.find_elements(By.CSS_SELECTOR, thumbnails):
        modality = thumbnail.text.split("\n")[0]
        found[modality + (" binary" if "binary" in thumbnail.text else "")] = thumbnail
    return found


def _look(url: str, study: str, screenshot: Path) -> tuple[dict[str, float], list[str]]:
    """Open the study, show the CR, the Secondary Capture, the CR again, the fractional Segmentation and then the
    binary one; how coloured the viewport is with each Segmentation loaded, and the browser's errors."""
    from selenium.webdriver.common.action_chains import ActionChains

    browser = _browser()
    try:
        thumbnails = _open(browser, url, study)
        assert set(thumbnails) == {"CR", "OT", "SEG", "SEG binary"}
        assert _until(lambda: (_viewport(browser).mean(-1) > 20).mean() > 0.3)  # the CR, shown
        assert coloured(_viewport(browser)) < 0.01  # grey
        ActionChains(browser).double_click(thumbnails["OT"]).perform()
        assert _until(lambda: coloured(_viewport(browser)) > 0.05)  # the Secondary Capture
        ActionChains(browser).double_click(thumbnails["CR"]).perform()
        assert _until(lambda: coloured(_viewport(browser)) < 0.01)  # grey again: the colour was the SC's
        shown = {}
        ActionChains(browser).double_click(thumbnails["SEG"]).perform()
        _until(lambda: coloured(_viewport(browser)) > 0.1, 10)
        shown["fractional"] = coloured(_viewport(browser))
        refused = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        ActionChains(browser).double_click(thumbnails["SEG binary"]).perform()
        _until(lambda: coloured(_viewport(browser)) > 0.1, 20)
        shown["binary"] = coloured(_viewport(browser))
        browser.save_screenshot(str(screenshot))
        failed = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]  # since the last read
        assert not failed, f"the binary Segmentation made the viewer fail: {failed}"
        return shown, refused
    finally:
        browser.quit()


def test_the_secondary_capture_and_the_binary_segmentation_show_in_ohif(tmp_path: Path, monkeypatch):
    (tmp_path / "source").mkdir()
    shutil.copy(NEMA / SOURCE, tmp_path / "source" / SOURCE)
    study = str(pydicom.dcmread(NEMA / SOURCE, stop_before_pixels=True).StudyInstanceUID)
    key = create_key(tmp_path / "keys" / "key")
    run_id = explain(tmp_path / "source", tmp_path / "store", str(key))
    with running_orthanc(tmp_path / "pacs") as pacs:
        pacs.upload(NEMA / SOURCE)
        for name, value in {**pacs.env(), "DENSECAM_PSEUDONYM_KEY": str(key)}.items():
            monkeypatch.setenv(name, value)
        for kind in ("binary:0.5", "fractional"):  # the same Secondary Capture twice: one object
            argv = [str(tmp_path / "store"), "--run", run_id, "--seg", kind, "--no-progress", "--send", pacs.source]
            assert export_cli.main([*argv, "--out", str(tmp_path / f"export-{kind[:3]}")]) == 0
        with serving_viewer(pacs) as url:
            shown, refused = _look(url, study, tmp_path / "ohif.png")
    assert shown["binary"] > 0.1  # the segments over the radiograph
    assert shown["fractional"] < 0.05  # OHIF's own refusal, and the radiograph stays
    assert any("Fractional segmentations are not yet supported" in message for message in refused)
