"""densecam report: the page's content against plain references, its escaping, its refusals, and the page in a
real browser (headless Chromium through selenium): the galleries, the body-part filter, no request leaving
the page, no JavaScript error."""

from __future__ import annotations

import html.parser
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from support.store import spec, write_shard
from support.system import require

from densecam_core import open_store
from densecam_core.export import report_content as content
from densecam_core.export.report import ReportRequest, parse_maps, write_report
from densecam_core.store.layout import StoreError, plan_shards
from densecam_core.store.writer import RunWriter
from jobs.cli.main import main as cli_main

HOSTILE_ID = "<script>alert('id')</script>.png"
HOSTILE_PART = "<b onmouseover=alert(1)>ELBOW</b>"


def _run(tmp_path: Path, *, fingerprint: str = "f" * 64, seed: int = 0):
    """A run of 18 PNG radiographs of three body parts (one hostile), labels 0/1/none, spread probabilities,
    two error rows, maps with a bright spot each (random, so every card's overlay differs)."""
    rng = np.random.default_rng(seed)
    images = tmp_path / f"images-{seed}"
    images.mkdir()
    n = 18
    parts = ["WRIST", "HAND", HOSTILE_PART]
    ids = [f"study{i // 3}/image{i}.png" for i in range(n - 1)] + [HOSTILE_ID]
    paths = []
    for i in range(len(ids)):
        path = images / f"file{i}.png"
        height, width = 40 + 4 * i, 90 - 2 * i
        y, x = np.mgrid[:height, :width]
        pixels = 60 + 120 * np.exp(-(((x - width / 2) / width) ** 2 + ((y - height / 3) / height) ** 2) * 4)
        Image.fromarray(np.clip(pixels + rng.normal(0, 4, pixels.shape), 0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    manifest = pd.DataFrame(
        {
            "image_id": ids,
            "path": paths,
            "split": "valid",
            "body_part": [parts[i % 3] for i in range(n)],
            "patient_id": [f"p{i // 6}" for i in range(n)],
            "study_id": [f"study{i // 3}" for i in range(n)],
            "view": 1,
            "label": [float(i % 2) if i < 15 else np.nan for i in range(n)],
        }
    )
    the_spec = spec(fingerprint=fingerprint)
    writer = RunWriter(str(tmp_path / "store"), the_spec)
    writer.create_or_open("test.pt")
    planned = writer.plan(manifest)
    probs = np.linspace(0.02, 0.98, n)
    rng.shuffle(probs)
    for _, rows in planned.groupby("shard"):
        row_ids = rows["row"].to_numpy()
        arrays = {
            name: rng.random((len(rows), *shape)).astype(np.float32) for name, shape in the_spec.array_shapes().items()
        }
        index = rows.copy()
        index["orig_height"] = [40 + 4 * i for i in row_ids]
        index["orig_width"] = [90 - 2 * i for i in row_ids]
        index["resize_mode"] = "stretch"
        index["prob"] = probs[row_ids]
        index["logit"] = np.log(index["prob"] / (1 - index["prob"]))
        index["status"] = ["ok" if i not in (4, 11) else "error" for i in row_ids]
        index["error"] = [
            None if i not in (4, 11) else f"cannot decode '/data/x{i}.png': <script>alert({i})</script>"
            for i in row_ids
        ]
        index["run_id"] = the_spec.run_id
        shard = plan_shards(len(rows), the_spec.shard_size, int(row_ids.min()))[0]
        write_shard(writer.run_url, shard, the_spec.shard_size, arrays, index)
    return open_store(str(tmp_path / "store")).run(the_spec.run_id)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run for the tests that only read it (each writes its report in a folder of its own)."""
    return _run(tmp_path_factory.mktemp("report-run"))


def test_auroc_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200), 1)  # many ties
    assert content.auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert math.isnan(content.auroc(np.ones(5), np.arange(5.0)))


def test_body_part_table_against_a_plain_count(run):
    index = run.index
    table = content.body_part_table(index).set_index("body_part")
    for part, rows in index.groupby("body_part"):
        ok = rows[rows["status"] == "ok"]
        labelled = ok[ok["label"].notna()]
        assert table.loc[part, "images"] == len(rows) and table.loc[part, "errors"] == (rows["status"] != "ok").sum()
        assert table.loc[part, "abnormal"] == (ok["label"] == 1).sum()
        assert table.loc[part, "mean_prob"] == pytest.approx(ok["prob"].mean())
        if labelled["label"].nunique() == 2:
            assert table.loc[part, "auroc"] == pytest.approx(roc_auc_score(labelled["label"], labelled["prob"]))
    assert table.loc["all", "images"] == len(index) and table.loc["all", "ok"] == 16


def test_galleries_choose_what_their_titles_say(run):
    index = run.index
    chosen = {g.key: g.rows for g in content.galleries(index, per_gallery=5)}
    ok = index[index["status"] == "ok"]
    assert chosen["confident"]["image_id"].tolist() == ok.nlargest(5, "prob")["image_id"].tolist()
    distance = (ok["prob"] - 0.5).abs()
    assert set(chosen["uncertain"]["image_id"]) == set(ok.loc[distance.nsmallest(5).index, "image_id"])
    labelled = ok[ok["label"].notna()]
    wrong = labelled[(labelled["prob"] >= 0.5) != (labelled["label"] == 1)]
    assert set(chosen["misclassified"]["image_id"]) <= set(wrong["image_id"])
    assert len(chosen["misclassified"]) == min(5, len(wrong))
    assert sorted(chosen["errors"]["image_id"]) == sorted(index.loc[index["status"] != "ok", "image_id"])


def test_error_reasons_fold_paths_and_numbers(run):
    reasons = content.error_reasons(run.index)
    assert len(reasons) == 1 and reasons["images"].iloc[0] == 2
    assert "/data/x" not in reasons["reason"].iloc[0] and "cannot decode" in reasons["reason"].iloc[0]


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_the_page_escapes_every_string_from_the_store(run, tmp_path):
    result = write_report(run, tmp_path / "report", ReportRequest(per_gallery=30))
    page = Path(result.page).read_text()
    parser = _Tags()
    parser.feed(page)
    tags = [tag for tag, _ in parser.tags]
    assert tags.count("script") == 1, "only the page's own script"
    assert "b" not in tags, "the body part's markup stays text"
    assert not any(name.startswith("on") for _, attrs in parser.tags for name in attrs), "no event handler attribute"
    assert "&lt;script&gt;alert(&#x27;id&#x27;)&lt;/script&gt;.png" in page
    assert "&lt;b onmouseover=alert(1)&gt;ELBOW&lt;/b&gt;" in page
    # every picture lies beside the page, named by a digest (no image id in a file name)
    sources = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert sources and all(s.startswith("thumbs/") and (Path(result.page).parent / s).is_file() for s in sources)
    assert all("script" not in s and "study" not in s for s in sources)


def test_thumbnails_are_small_and_show_the_runs_overlay(run, tmp_path):
    result = write_report(run, tmp_path / "report", ReportRequest(per_gallery=30, thumb_size=48))
    folder = Path(result.page).parent
    sizes = [Image.open(p).size for p in (folder / "thumbs").iterdir()]
    assert sizes and max(max(s) for s in sizes) == 48
    # each map's thumbnail is the reader's full-size overlay (Run.overlay) shrunk, up to resampling and JPEG
    from densecam_core.export.report_thumbnails import thumbnail_name

    for image_id in run.index.loc[run.index["status"] == "ok", "image_id"].head(4):
        for method, block, key in (("cam", None, "cam"), ("gradcam", 4, "gradcam-4")):
            written = np.asarray(Image.open(folder / thumbnail_name(image_id, key)), dtype=np.float64)
            full = run.overlay(image_id, method, block)
            reference = np.asarray(
                Image.fromarray(full).resize(written.shape[1::-1], Image.Resampling.BOX), dtype=np.float64
            )
            assert np.abs(written - reference).mean() < 4.0, (image_id, key)  # of 255


def test_a_thumbs_link_in_the_output_folder_is_replaced_never_written_through(run, tmp_path):
    out, elsewhere = tmp_path / "report", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "thumbs").symlink_to(elsewhere)
    result = write_report(run, out, ReportRequest(per_gallery=2, thumb_size=32, overwrite=True))
    assert list(elsewhere.iterdir()) == [], "nothing lands where the link pointed"
    assert not (out / "thumbs").is_symlink() and any((out / "thumbs").iterdir())
    assert Path(result.page).parent == out


def test_the_quality_grid_says_what_the_scores_say(tmp_path):
    """Scores committed as the evaluation commits them: Grad-CAM block 4 deletes faster than the random map,
    fails randomisation (its maps stay correlated) and is unstable; insertion was not scored."""
    from densecam_core.store.scores import write_metrics_part

    run = _run(tmp_path)
    ok = run.index[run.index["status"] == "ok"]
    rows = []
    for n, (image_id, row) in enumerate(zip(ok["image_id"], ok["row"])):
        base = {"image_id": image_id, "row": row, "block": 4, "shard": 0}
        rows.append({**base, "method": "gradcam", "metric": "deletion_auc", "value": 0.2 + 0.01 * (n % 3)})
        rows.append({**base, "method": "random", "metric": "deletion_auc", "value": 0.6 + 0.01 * (n % 2)})
        rows.append({**base, "method": "gradcam", "metric": "stability_r", "value": 0.5})
        rows += [
            {**base, "method": "gradcam", "metric": "randomisation_spearman", "stage": s, "value": 0.9} for s in (1, 2)
        ]
    frame = pd.DataFrame(rows)
    for family, part in frame.groupby(frame["metric"].str.split("_").str[0]):
        write_metrics_part(run.url, 0, part, family=str(family))
    result = write_report(run, tmp_path / "report", ReportRequest())
    parser = _Tags()
    parser.feed(Path(result.page).read_text())
    badges = [attrs for tag, attrs in parser.tags if tag == "span" and "verdict" in attrs.get("class", "")]
    assert [b["class"] for b in badges] == ["verdict yes", "verdict na", "verdict no", "verdict no"]
    mean = pd.DataFrame(rows).query("method == 'gradcam' and metric == 'deletion_auc'")["value"].mean()
    assert badges[0]["title"].startswith(f"beats random on deletion; deletion_auc {mean:.3f} [")
    assert badges[2]["title"].startswith("fails randomisation; randomisation_spearman 0.900")
    assert badges[3]["title"].startswith("not stable; stability_r 0.500")


def test_a_source_gone_since_the_run_leaves_its_card_without_pictures(tmp_path):
    run = _run(tmp_path)
    gone = run.index[run.index["status"] == "ok"].nlargest(1, "prob").iloc[0]
    Path(gone["path"]).unlink()
    result = write_report(run, tmp_path / "report", ReportRequest(per_gallery=30))
    page = Path(result.page).read_text()
    card = page[page.index(f">{gone['image_id']}<") :].split('class="card"')[0]
    assert "no pictures: the source could not be read now" in card and "<img" not in card
    ok_cards, gone_cards = page.count('data-status="ok"'), page.count(f">{gone['image_id']}<")
    assert gone_cards >= 1 and page.count("<img") == 3 * (ok_cards - gone_cards), "the other cards keep their pictures"


def test_an_evaluation_that_scored_no_image_leaves_the_grid_empty_not_the_page(tmp_path):
    from densecam_core.store.scores import write_metrics_part

    run = _run(tmp_path)
    ok = run.index[run.index["status"] == "ok"]
    errors = pd.DataFrame(
        {
            "image_id": ok["image_id"],
            "row": ok["row"],
            "metric": "error",
            "value": np.nan,
            "error": "unreadable",
            "shard": 0,
        }
    )
    write_metrics_part(run.url, 0, errors, family="deletion")
    page = Path(write_report(run, tmp_path / "report", ReportRequest()).page).read_text()
    assert "No map-quality scores" in page and 'id="quality"' not in page


def test_refusals_come_before_any_file(run, tmp_path, capsys):
    with pytest.raises(StoreError, match="no 'layercam' maps; it has cam, gradcam"):
        write_report(run, tmp_path / "a", ReportRequest(maps=[("layercam", 4)]))
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match="the block after"):
        parse_maps("gradcam:x")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="`overwrite`"):
        write_report(run, busy, ReportRequest())
    store = str(Path(run.store_url))
    assert cli_main(["report", store, "--run", run.run_id, "--out", str(busy)]) == 2
    assert "holds other files" in capsys.readouterr().err
    assert cli_main(["report", store, "--run", run.run_id, "--compare", run.run_id, "--out", str(tmp_path / "c")]) == 2
    assert "same run" in capsys.readouterr().err
    assert cli_main(["report", store, "--run", run.run_id, "--out", str(tmp_path / "ok")]) == 0
    assert "cards" in capsys.readouterr().out and (tmp_path / "ok" / "index.html").is_file()


def _browser():
    chromium, driver = require("chromium", "chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})  # the DevTools network log
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def _loaded(browser, images, timeout: float = 15.0) -> bool:
    """Whether every image has its pixels within ``timeout`` s: lazy images load after the page's load event, and
    only near the viewport (a loaded machine's Chromium may not have reached those below it)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    def every_one_loaded(_) -> bool:
        waiting = [i for i in images if int(i.get_attribute("naturalWidth")) == 0]
        for image in waiting:  # a lazy image loads once near the viewport: bring each one there
            browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", image)
        return not waiting

    try:
        WebDriverWait(browser, timeout, poll_frequency=0.2).until(every_one_loaded)
    except TimeoutException:
        return False
    return True


@pytest.mark.slow  # starts a browser
def test_the_page_in_a_real_browser(tmp_path):
    run = _run(tmp_path)
    other = _run(tmp_path, fingerprint="e" * 64, seed=1)  # another model's run of the same image ids
    result = write_report(run, tmp_path / "report", ReportRequest(per_gallery=6), compare=other)
    browser = _browser()
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        browser.get(Path(result.page).as_uri())
        galleries = {
            section.get_attribute("id"): section
            for section in browser.find_elements(By.CSS_SELECTOR, "section.gallery")
        }
        assert set(galleries) == {
            f"gallery-{k}" for k in ("confident", "uncertain", "misclassified", "changed", "errors")
        }
        confident = galleries["gallery-confident"].find_elements(By.CSS_SELECTOR, ".card")
        expected = run.index[run.index["status"] == "ok"].nlargest(6, "prob")["image_id"].tolist()
        assert [card.find_element(By.CSS_SELECTOR, ".meta").text.split("\n")[0] for card in confident] == expected
        # the hostile id is shown as text, and its markup never became an element
        texts = browser.find_element(By.TAG_NAME, "body").text
        assert HOSTILE_ID in texts and len(browser.find_elements(By.TAG_NAME, "script")) == 1
        # every picture loaded from beside the page
        images = browser.find_elements(By.CSS_SELECTOR, ".card img")
        assert images and _loaded(browser, images)
        # the body-part filter hides every other card
        Select(browser.find_element(By.ID, "filter-part")).select_by_value("HAND")
        cards = browser.find_elements(By.CSS_SELECTOR, ".card")
        visible = [c for c in cards if c.is_displayed()]
        assert visible and all(c.get_attribute("data-part") == "HAND" for c in visible)
        hand_cards = sum(1 for c in cards if c.get_attribute("data-part") == "HAND")
        assert len(visible) == hand_cards < len(cards)
        assert browser.find_element(By.ID, "shown-total").text == str(hand_cards)
        Select(browser.find_element(By.ID, "filter-part")).select_by_value("")
        assert sum(c.is_displayed() for c in browser.find_elements(By.CSS_SELECTOR, ".card")) == len(cards)
        # no request left the page, no alert ran, no JavaScript error was logged
        requests = [
            message["params"]["request"]["url"]
            for message in (json.loads(entry["message"])["message"] for entry in browser.get_log("performance"))
            if message["method"] == "Network.requestWillBeSent"
        ]
        assert len(requests) > len(images) // 2 and all(url.startswith("file://") for url in requests), requests
        assert browser.execute_script("return document.querySelectorAll('[onmouseover]').length") == 0
        severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        browser.quit()


def _audited_run(tmp_path: Path):
    """A constructed run (no source files) of one hostile body part whose abnormal images' maps point at a
    corner, audited: one flagged cluster, atlases, notes."""
    from support.audit_maps import blob, run_with_maps

    from densecam_core.analysis.audit import AuditRequest, audit_run
    from densecam_core.store.analyses import write_audit

    def corner_or_centre(i: int, h: int, w: int) -> np.ndarray:
        rng = np.random.default_rng(i)
        if i < 20:
            return blob(h, w, 0.1 + 0.01 * rng.standard_normal(), 0.1, 0.08)
        return blob(h, w, 0.5 + 0.1 * rng.standard_normal(), 0.5 + 0.1 * rng.standard_normal())

    labels = [1] * 60 + [0] * 30
    run = run_with_maps(str(tmp_path / "audited"), labels, corner_or_centre, body_parts=[HOSTILE_PART] * 90)
    result = audit_run(run, AuditRequest(methods=("gradcam",), blocks=(3,)))
    tables = {"images": result.images, "clusters": result.clusters, "atlases": result.atlases}
    write_audit(run.url, settings=result.settings, tables=tables, arrays=result.arrays, messages=result.messages)
    return run


def test_the_audit_section_shows_flagged_clusters_first_escaped(tmp_path):
    run = _audited_run(tmp_path)
    result = write_report(run, tmp_path / "report", ReportRequest(per_gallery=2, thumb_size=32))
    page = Path(result.page).read_text()
    assert "Audit: right for the right reasons?" in page and "1 flagged clusters" in page
    assert "paste test: not run" in page and "flagged because: median corner_excess above the median" in page
    assert HOSTILE_PART not in page and "&lt;b onmouseover=alert(1)&gt;ELBOW&lt;/b&gt;" in page
    assert page.index("flagged clusters") < page.index("Atlases")
    for name in ("mean.jpg", "peaks.jpg"):
        assert any(p.name.endswith(name) for p in (tmp_path / "report" / "thumbs").iterdir())
    (tmp_path / "plain").mkdir()
    plain = write_report(_run(tmp_path / "plain"), tmp_path / "plain-report", ReportRequest(per_gallery=2))
    assert "No audit of this run yet" in Path(plain.page).read_text()


@pytest.mark.slow  # starts a browser
def test_the_audit_section_in_a_real_browser(tmp_path):
    run = _audited_run(tmp_path)
    result = write_report(run, tmp_path / "report", ReportRequest(per_gallery=2, thumb_size=32))
    browser = _browser()
    try:
        from selenium.webdriver.common.by import By

        browser.get(Path(result.page).as_uri())
        flagged = browser.find_elements(By.CSS_SELECTOR, ".card.flagged")
        assert len(flagged) == 1
        text = flagged[0].text
        assert "gradcam block 3" in text and "flagged because" in text
        # the hostile body part names its atlas (label x body part) as text, never as markup
        assert HOSTILE_PART in browser.find_element(By.TAG_NAME, "body").text
        assert len(browser.find_elements(By.TAG_NAME, "script")) == 1
        assert browser.execute_script("return document.querySelectorAll('[onmouseover]').length") == 0
        pictures = browser.find_elements(By.CSS_SELECTOR, ".card.flagged img, .card img[alt='peaks']")
        assert pictures and _loaded(browser, pictures)
        severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        browser.quit()
