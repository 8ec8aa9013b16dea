"""The report page of a run: seconds to write it, against writing the same cards' images as PNG panels
(``densecam export --to png``, the overlay panels one image at a time) in the same run, the page's size,
and how long headless Chromium takes to open it (``--browser``).

    python benchmarks/report.py --images 5000 --per-gallery 24 --browser
    python benchmarks/report.py --images 500 --per-gallery 500
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from machine import describe_cpu


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000, help="images in the run")
    parser.add_argument("--side", type=int, default=512, help="side of the PNG sources, pixels")
    parser.add_argument("--per-gallery", type=int, default=24)
    parser.add_argument("--baseline-images", type=int, default=100, help="images the PNG-panel baseline writes")
    parser.add_argument("--browser", action="store_true", help="also time headless Chromium opening the page")
    return parser


def write_run(root: Path, images: int, side: int):
    """A run of ``images`` grey PNG sources with random maps (the report's cost does not depend on the maps)."""
    from PIL import Image
    from support.store import spec, write_shard

    from densecam_core import open_store
    from densecam_core.store.layout import plan_shards
    from densecam_core.store.writer import RunWriter

    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    y, x = np.mgrid[:side, :side]
    base = 60 + 120 * np.exp(-(((x - side / 2) / side) ** 2 + ((y - side / 3) / side) ** 2) * 4)
    paths = []
    for i in range(images):
        path = root / "images" / f"image{i:05d}.png"
        Image.fromarray(np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    parts = ["ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST"]
    manifest = pd.DataFrame(
        {
            "image_id": [f"XR_{parts[i % 7]}/patient{i // 3:05d}/image{i % 3}.png" for i in range(images)],
            "path": paths,
            "split": "valid",
            "body_part": [parts[i % 7] for i in range(images)],
            "patient_id": [f"patient{i // 3:05d}" for i in range(images)],
            "study_id": [f"patient{i // 3:05d}" for i in range(images)],
            "view": [i % 3 + 1 for i in range(images)],
            "label": (np.arange(images) // 3 % 2).astype(float),
        }
    )
    the_spec = spec(shard_size=256)
    writer = RunWriter(str(root / "store"), the_spec)
    writer.create_or_open("benchmark.pt")
    planned = writer.plan(manifest)
    probability = rng.random(images)
    for _, rows in planned.groupby("shard"):
        row_ids = rows["row"].to_numpy()
        arrays = {n: rng.random((len(rows), *s)).astype(np.float32) for n, s in the_spec.array_shapes().items()}
        index = rows.assign(orig_height=side, orig_width=side, resize_mode="stretch", status="ok", error=None)
        index = index.assign(prob=probability[row_ids], logit=0.0, run_id=the_spec.run_id)
        write_shard(writer.run_url, plan_shards(len(rows), 256, int(row_ids.min()))[0], 256, arrays, index)
    return open_store(str(root / "store")).run(the_spec.run_id)


def open_in_browser(page: str) -> tuple[float, float]:
    """(seconds until the page's DOM is ready, seconds until its load event) in headless Chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    try:
        browser.get(Path(page).as_uri())
        timing = browser.execute_script(
            "const t = performance.timing; return [t.domContentLoadedEventEnd - t.navigationStart, "
            "t.loadEventEnd - t.navigationStart]"
        )
        return timing[0] / 1000, timing[1] / 1000
    finally:
        browser.quit()


def main(argv: list[str] | None = None) -> int:
    from densecam_core.export.report import ReportRequest, write_report
    from densecam_core.export.run_export import ExportRequest, export_run

    args = build_parser().parse_args(argv)
    print(f"machine: {describe_cpu()}; {args.images} images of {args.side}x{args.side} pixels")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        run = write_run(root, args.images, args.side)
        started = time.perf_counter()
        result = write_report(run, root / "report", ReportRequest(per_gallery=args.per_gallery))
        report = time.perf_counter() - started
        shown = sorted({s.split("/")[-1].split("-")[0] for s in _sources(result.page)})
        cards = sorted(set(run.index["image_id"]) & set(_card_ids(run, shown)))
        baseline = cards[: args.baseline_images]
        started = time.perf_counter()
        export_run(run, root / "panels", ExportRequest(to="png", images=baseline))
        panels = (time.perf_counter() - started) / len(baseline)
        size = sum(p.stat().st_size for p in (root / "report").rglob("*") if p.is_file())
        print(
            f"report: {result.cards} cards of {len(cards)} images, {result.pictures} pictures, {size / 2**20:.1f} MiB"
        )
        print(f"  write the report        {report:7.2f} s, {report / len(cards) * 1000:6.1f} ms per image shown")
        print(
            f"  PNG panels (baseline)   {panels * 1000:6.1f} ms per image ({len(baseline)} images)"
            f"  -> report / panels = {report / len(cards) / panels:.3f}x per image"
        )
        if args.browser:
            ready, loaded = open_in_browser(result.page)
            print(f"  headless Chromium: DOM ready {ready:.2f} s, load event {loaded:.2f} s")
    return 0


def _sources(page: str) -> list[str]:
    import re

    return re.findall(r'src="(thumbs/[^"]+)"', Path(page).read_text())


def _card_ids(run, digests: list[str]) -> list[str]:
    from densecam_core.export.report_thumbnails import image_digest

    wanted = set(digests)
    return [image_id for image_id in run.index["image_id"] if image_digest(image_id) in wanted]


if __name__ == "__main__":
    sys.exit(main())
