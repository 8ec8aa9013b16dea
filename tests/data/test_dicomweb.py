"""A PACS as source and destination, against a real Orthanc (Debian's, with its DICOMweb and GDCM plugins) on
127.0.0.1: what is pulled, what becomes an error row, what never reaches a store or a log, what goes back
into each study, and how misbehaving servers are met."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from densecam_core import open_store, read_manifest
from densecam_core.data.errors import ManifestError
from densecam_core.data.pseudonyms import create_key
from jobs.cli import explain as explain_cli
from jobs.cli import export as export_cli
from tests.support.certificates import make_certificates, server_context
from tests.support.dicom_runs import explain
from tests.support.faulty_proxy import faulty_proxy
from tests.support.orthanc import Pacs, running_orthanc
from tests.support.pacs_seed import IN_RANGE, Seeded, seed_files, spread_studies
from tests.support.system import require

pytestmark = pytest.mark.slow
QUERY = f"?StudyDate={IN_RANGE}&Modality=CR"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed_files(tmp_path_factory.mktemp("seed"))


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory, seeded: Seeded) -> Iterator[Pacs]:
    """Orthanc with the seeded objects, compression off as a user would not know to set it."""
    with running_orthanc(tmp_path_factory.mktemp("pacs")) as server:
        for path in seeded.in_range + seeded.outside:
            server.upload(path)
        yield server


@pytest.fixture(scope="module")
def gzip_pacs(tmp_path_factory: pytest.TempPathFactory, seeded: Seeded) -> Iterator[Pacs]:
    """The same with Orthanc's default, gzip on: densecam asks for identity, so nothing changes."""
    with running_orthanc(tmp_path_factory.mktemp("gzip-pacs"), compression=True) as server:
        for path in seeded.in_range + seeded.outside:
            server.upload(path)
        yield server


def _log_in(pacs: Pacs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The PACS's credentials in the environment, and a pseudonym key; the key's path."""
    for name, value in pacs.env().items():
        monkeypatch.setenv(name, value)
    key = create_key(tmp_path / "keys" / "pseudonym.key")
    monkeypatch.setenv("DENSECAM_PSEUDONYM_KEY", str(key))
    return key


@pytest.fixture
def logged_in(pacs: Pacs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return _log_in(pacs, tmp_path, monkeypatch)


def _instances(pacs: Pacs) -> list[dict]:
    return pacs.session().get(f"{pacs.rest}/instances", params={"expand": ""}, timeout=30).json()


@pytest.mark.parametrize("server", ["pacs", "gzip_pacs"])
def test_pull_takes_exactly_the_in_range_crs_as_stored_and_a_second_run_pulls_nothing(
    server: str,
    request: pytest.FixtureRequest,
    seeded: Seeded,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    pacs: Pacs = request.getfixturevalue(server)
    _log_in(pacs, tmp_path, monkeypatch)
    frame = read_manifest(pacs.source + QUERY, pacs_cache=tmp_path / "cache")
    assert frame.attrs["pacs"] == {"pulled": 6, "cached": 0, "failed": 0}
    expected = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in seeded.in_range}
    pulled = {}
    for path in frame["path"]:
        ds = pydicom.dcmread(path)
        pulled[str(ds.SOPInstanceUID)] = ds
    assert set(pulled) == set(expected)  # no SR, nothing outside the dates
    for uid, original in expected.items():  # as stored: JPEG 2000 stays JPEG 2000, pixel bytes unchanged
        source = pydicom.dcmread(original)
        assert pulled[uid].file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        assert pulled[uid].get("PixelData") == source.get("PixelData")
    names = " ".join(frame["image_id"])
    assert not any(identifier in names for identifier in seeded.identifiers)
    assert all(name.startswith("s-") and "/i-" in name for name in frame["image_id"])
    again = read_manifest(pacs.source + QUERY, pacs_cache=tmp_path / "cache")
    assert again.attrs["pacs"] == {"pulled": 0, "cached": 6, "failed": 0}
    assert list(again["image_id"]) == list(frame["image_id"])  # the same rows in the same order
    assert "6 image instances" in capsys.readouterr().err


def test_explain_and_send_back_leaks_nothing_and_lands_in_each_study(
    pacs: Pacs, seeded: Seeded, logged_in: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    store = tmp_path / "store"
    run_id = explain(pacs.source + QUERY, store, str(logged_in), pacs_cache=tmp_path / "cache")
    run = open_store(str(store)).run(run_id)
    index = run.index.set_index("image_id")
    assert (index["status"] == "ok").sum() == 3 and (index["status"] == "error").sum() == 3
    assert index.loc[index["status"] == "error", "error"].str.len().gt(0).all()
    assert run.meta["manifest_source"] == pacs.source + QUERY
    secrets_ = [*seeded.identifiers, pacs.password]
    for path in store.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaked = [s for s in secrets_ if s.encode() in data]
            assert not leaked, f"{path.relative_to(store)} holds {leaked}"
    logs = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert caplog.records and not [s for s in secrets_ if s in logs]

    before = len(_instances(pacs))
    argv = [str(store), "--run", run_id, "--seg", "binary:0.5", "--no-progress", "--send", pacs.source, "--verify"]
    require("dciodvfy")
    assert export_cli.main([*argv, "--out", str(tmp_path / "export")]) == 0
    sent = pd.read_csv(tmp_path / "export" / "send-summary.csv")
    assert len(sent) == 6 and (sent["status"] == "verified").all()
    assert len(_instances(pacs)) == before + 6
    for name in sent["file"]:
        exported = pydicom.dcmread(tmp_path / "export" / name, stop_before_pixels=True)
        stored = (
            pacs.session()
            .get(
                f"{pacs.url}/studies/{exported.StudyInstanceUID}/instances",
                params={"SOPInstanceUID": exported.SOPInstanceUID, "includefield": "00100020"},
                timeout=30,
            )
            .json()
        )
        assert len(stored) == 1  # in its source's study
        source_uid = _referenced_source(exported)
        source = next(pydicom.dcmread(p, stop_before_pixels=True) for p in seeded.good if _uid(p) == source_uid)
        assert exported.StudyInstanceUID == source.StudyInstanceUID and exported.PatientID == source.PatientID
        assert stored[0]["00100020"]["Value"][0] == source.PatientID
    for name in sent["file"]:  # what the PACS now holds passes the standard's validator
        report = subprocess.run(
            ["dciodvfy", str(tmp_path / "export" / name)], capture_output=True, text=True, timeout=60
        )
        errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{name}: {errors}"
    shutil.rmtree(tmp_path / "cache")  # the sources are fetched again by the recorded query, found by pseudonym
    assert export_cli.main([*argv, "--out", str(tmp_path / "again")]) == 0  # the same objects again
    assert len(_instances(pacs)) == before + 6
    assert pd.read_csv(tmp_path / "again" / "send-summary.csv")["status"].eq("verified").all()
    assert sorted(p.read_bytes() for p in (tmp_path / "again").glob("*.dcm")) == sorted(
        p.read_bytes() for p in (tmp_path / "export").glob("*.dcm")
    )


def test_a_targeted_pull_takes_only_the_listed_studies_and_records_none_of_them(
    pacs: Pacs, seeded: Seeded, logged_in: Path, tmp_path: Path
):
    study = str(pydicom.dcmread(seeded.good[0], stop_before_pixels=True).StudyInstanceUID)
    listed = tmp_path / "studies.txt"
    listed.write_text(f"# the wrist follow-ups\n{study}\n{study}\n")
    frame = read_manifest(pacs.source + QUERY, pacs_cache=tmp_path / "cache", pacs_studies=listed)
    in_study = [
        p for p in seeded.in_range if str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) == study
    ]
    assert len(frame) == len(in_study) == 3
    assert study not in frame.attrs["source"] and frame.attrs["source"].endswith("(a targeted pull of 1 studies)")
    listed.write_text("PATIENT-42\n")
    with pytest.raises(ManifestError, match=r"entries \[1\] are not StudyInstanceUIDs"):
        read_manifest(pacs.source + QUERY, pacs_cache=tmp_path / "cache", pacs_studies=listed)


def _uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _referenced_source(ds: pydicom.Dataset) -> str:
    if "SourceImageSequence" in ds:
        return str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID)
    series = ds.ReferencedSeriesSequence[0]
    return str(series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID)


def test_wrong_password_names_http_401_and_never_the_password(pacs: Pacs, tmp_path: Path, monkeypatch):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password-x9\n")
    wrong.chmod(0o600)
    monkeypatch.setenv("DENSECAM_DICOMWEB_USER", pacs.user)
    monkeypatch.setenv("DENSECAM_DICOMWEB_PASSWORD_FILE", str(wrong))
    monkeypatch.setenv("DENSECAM_PSEUDONYM_KEY", str(create_key(tmp_path / "k" / "key")))
    with pytest.raises(ManifestError, match="HTTP 401") as caught:
        read_manifest(pacs.source + QUERY, pacs_cache=tmp_path / "cache")
    assert "not-the-password-x9" not in str(caught.value) and pacs.url.split("/dicom-web")[0] in str(caught.value)
    wrong.chmod(0o644)
    with pytest.raises(ManifestError, match="chmod 600"):
        read_manifest(pacs.source + QUERY, pacs_cache=tmp_path / "cache")


def test_identifying_filters_and_credentials_in_the_url_exit_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """The command line's refusals (the address rules themselves: tests/data/test_dicomweb_address.py)."""
    server = "dicomweb+http://127.0.0.1:9/dicom-web"  # never contacted
    for source, message in [
        (f"{server}?PatientID=123&Modality=CR", "identifies a patient"),
        (server.replace("http://", "http://densecam:s3cret-pw@") + QUERY, "holds credentials"),
    ]:
        argv = [source, "--pacs-cache", str(tmp_path / "c"), "--store", str(tmp_path / "s")]
        assert explain_cli.main(argv) == 2
        said = capsys.readouterr().err
        assert message in said and "Traceback" not in said and "s3cret-pw" not in said
        assert not (tmp_path / "s").exists() and not (tmp_path / "c").exists()


def test_a_server_that_answers_503_twice_is_retried_and_broken_answers_are_error_rows(
    pacs: Pacs, seeded: Seeded, logged_in: Path, tmp_path: Path
):
    header = {p.name: pydicom.dcmread(p, stop_before_pixels=True) for p in seeded.in_range}
    busy, cut = header["RG3_UNCR.dcm"].SOPInstanceUID, header["RG3_J2KI.dcm"].SOPInstanceUID
    swapped = header["truncated_j2k.dcm"].SOPInstanceUID  # answered with RG3_UNCR, of the same series
    unlisted_study = header["RG1_J2KR.dcm"].StudyInstanceUID  # its instance listing is not JSON

    def fault(method: str, path: str, seen: int) -> str | None:
        if f"/studies/{unlisted_study}/instances?" in path:
            return "notjson"
        if path.endswith(f"/instances/{busy}"):
            return "503" if seen <= 2 else None
        if path.endswith(f"/instances/{cut}"):
            return "cut"
        if path.endswith(f"/instances/{swapped}"):
            return "swap:" + path.replace(swapped, busy)
        return None

    upstream = pacs.url.split("/dicom-web")[0]
    with faulty_proxy(upstream, fault) as (proxy, counts):
        frame = read_manifest(f"dicomweb+{proxy}/dicom-web{QUERY}", pacs_cache=tmp_path / "cache")
    reasons = sorted(str(r) for r in frame["source_error"])
    assert reasons == [
        "<NA>",  # busy: 503, 503, then pulled
        "WADO-RS answered a multipart body cut short (no closing boundary)",
        "WADO-RS answered another instance than the one asked for",
        "the instances of this study are unknown: QIDO-RS answered something that is not JSON",
    ]
    busy_path = next(p for p in counts if p.endswith(f"/instances/{busy}"))
    assert counts[busy_path] == 3
    assert frame.attrs["pacs"] == {"pulled": 1, "cached": 0, "failed": 2}
    assert not any(str(header[n].SOPInstanceUID) in " ".join(reasons) for n in header)


def test_a_server_that_is_down_stops_before_any_work_naming_it(tmp_path: Path, monkeypatch):
    from tests.support.orthanc import free_port

    monkeypatch.setenv("DENSECAM_PSEUDONYM_KEY", str(create_key(tmp_path / "k" / "key")))
    port = free_port()
    with pytest.raises(ManifestError, match=rf"127\.0\.0\.1:{port} cannot be used: .*connection"):
        read_manifest(f"dicomweb+http://127.0.0.1:{port}/dicom-web{QUERY}", pacs_cache=tmp_path / "cache")


def test_a_cache_folder_holding_other_files_is_refused(tmp_path: Path, logged_in: Path, pacs: Pacs):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "notes.txt").write_text("mine")
    with pytest.raises(ManifestError, match="already holds other files"):
        read_manifest(pacs.source + QUERY, pacs_cache=tmp_path / "cache")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ManifestError, match="not writable|not a folder"):
        read_manifest(pacs.source + QUERY, pacs_cache=tmp_path / "file" / "cache")


def test_a_capped_server_is_split_by_date_and_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    studies = spread_studies(tmp_path / "spread", count=7)
    with running_orthanc(tmp_path / "capped", limit_find=2) as capped:
        for path in studies:
            capped.upload(path)
        for name, value in capped.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DENSECAM_PSEUDONYM_KEY", str(create_key(tmp_path / "k" / "key")))
        answer = capped.session().get(f"{capped.url}/studies", params={"StudyDate": IN_RANGE}, timeout=30).json()
        assert len(answer) < 7  # the server does cut a find short, saying nothing
        frame = read_manifest(capped.source + QUERY, pacs_cache=tmp_path / "cache")
    assert len(frame) == 7  # nothing lost
    err = capsys.readouterr().err
    assert "cut a find at" in err and "split the date range" in err


def test_reports_are_never_pulled_even_unfiltered(pacs: Pacs, seeded: Seeded, logged_in: Path, tmp_path: Path):
    frame = read_manifest(f"{pacs.source}?StudyDate={IN_RANGE}", pacs_cache=tmp_path / "cache")  # the SR is in range
    assert len(frame) == len(seeded.in_range) and set(frame["modality"]) == {"CR"}


def test_a_server_that_ignores_offset_is_refused_and_one_that_stays_busy_gives_a_sanitised_reason(
    pacs: Pacs, seeded: Seeded, logged_in: Path, tmp_path: Path
):
    from densecam_core.data.sources.dicomweb.address import parse_address
    from densecam_core.data.sources.dicomweb.connection import DicomwebRequestError, open_session
    from densecam_core.data.sources.dicomweb.credentials import credentials_from_environment
    from densecam_core.data.sources.dicomweb.query import list_instances

    upstream = pacs.url.split("/dicom-web")[0]
    no_offset = lambda method, path, seen: "swap:" + re.sub(r"&?offset=\d+", "", path)  # noqa: E731
    with faulty_proxy(upstream, no_offset) as (proxy, _):
        address = parse_address(f"dicomweb+{proxy}/dicom-web?StudyDate={IN_RANGE}")
        with (
            open_session(credentials_from_environment()) as session,
            pytest.raises(DicomwebRequestError, match="repeated"),
        ):
            list_instances(session, address, str, page=1)
    busy = _uid(seeded.good[0])
    always = lambda method, path, seen: "503" if path.endswith(f"/instances/{busy}") else None  # noqa: E731
    with faulty_proxy(upstream, always) as (proxy, _):
        frame = read_manifest(f"dicomweb+{proxy}/dicom-web{QUERY}", pacs_cache=tmp_path / "cache")
    reasons = [r for r in frame["source_error"] if isinstance(r, str)]
    assert reasons == ["WADO-RS answered HTTP 503 after 4 tries"]


def test_an_object_the_study_refuses_is_reported_per_object_and_the_command_fails(
    pacs: Pacs, seeded: Seeded, logged_in: Path, tmp_path: Path
):
    store = tmp_path / "store"
    run_id = explain(pacs.source + QUERY, store, str(logged_in), pacs_cache=tmp_path / "cache")
    other_study = "1.2.826.0.1.3680043.8.498.1"

    def wrong(method: str, path: str, seen: int) -> str | None:  # every object posted to another study
        return "swap:" + re.sub(r"/studies/[0-9.]+$", f"/studies/{other_study}", path) if method == "POST" else None

    upstream = pacs.url.split("/dicom-web")[0]
    with faulty_proxy(upstream, wrong) as (proxy, _):
        argv = [
            str(store),
            "--run",
            run_id,
            "--no-progress",
            "--send",
            f"dicomweb+{proxy}/dicom-web",
            "--out",
            str(tmp_path / "out"),
        ]
        assert export_cli.main(argv) == 1
    sent = pd.read_csv(tmp_path / "out" / "send-summary.csv")
    assert len(sent) == 6 and (sent["status"] == "failed").all()
    assert sent["reason"].str.contains("HTTP 409").all()


def test_tls_with_a_private_authority_and_a_client_certificate_and_netrc_credentials(
    pacs: Pacs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Through a TLS gateway that trusts only client certificates of its own authority (Debian's Orthanc 1.10
    crashes on its own HTTPS connections, so the gateway terminates TLS in front of it), logging in with
    ~/.netrc."""
    certificates = make_certificates(tmp_path / "tls")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine 127.0.0.1 login {pacs.user} password {pacs.password}\n")
    (home / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))  # no DENSECAM_DICOMWEB_* credentials: ~/.netrc is read
    monkeypatch.setenv("DENSECAM_PSEUDONYM_KEY", str(create_key(tmp_path / "k" / "key")))
    upstream = pacs.url.split("/dicom-web")[0]
    with faulty_proxy(upstream, lambda *_: None, tls=server_context(certificates)) as (gateway, counts):
        query = f"dicomweb+{gateway}/dicom-web{QUERY}"
        assert query.startswith("dicomweb+https://")
        with pytest.raises(ManifestError, match="cannot be used: .*certificate"):  # the gateway is not trusted yet
            read_manifest(query, pacs_cache=tmp_path / "cache")
        monkeypatch.setenv("DENSECAM_DICOMWEB_CA_BUNDLE", str(certificates.ca))
        with pytest.raises(ManifestError, match="cannot be used"):  # trusted, but this client has no certificate
            read_manifest(query, pacs_cache=tmp_path / "cache")
        assert not counts  # no request got through
        monkeypatch.setenv("DENSECAM_DICOMWEB_CLIENT_CERT", str(certificates.client_cert))
        monkeypatch.setenv("DENSECAM_DICOMWEB_CLIENT_KEY", str(certificates.client_key))
        frame = read_manifest(query, pacs_cache=tmp_path / "cache")
    assert frame.attrs["pacs"] == {"pulled": 6, "cached": 0, "failed": 0}


def test_an_instance_that_cannot_be_pulled_is_an_error_row_with_its_reason_in_the_run(
    pacs: Pacs, seeded: Seeded, logged_in: Path, tmp_path: Path
):
    busy = _uid(seeded.good[0])
    upstream = pacs.url.split("/dicom-web")[0]
    always = lambda method, path, seen: "503" if path.endswith(f"/instances/{busy}") else None  # noqa: E731
    with faulty_proxy(upstream, always) as (proxy, _):
        run_id = explain(
            f"dicomweb+{proxy}/dicom-web{QUERY}", tmp_path / "store", str(logged_in), pacs_cache=tmp_path / "cache"
        )
    index = open_store(str(tmp_path / "store")).run(run_id).index
    assert "source_error" not in index.columns  # the reason became the row's error, not a column
    errors = index.loc[index["status"] == "error", "error"].tolist()
    assert errors.count("WADO-RS answered HTTP 503 after 4 tries") == 1 and len(errors) == 4  # + the 3 broken files
