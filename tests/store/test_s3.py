"""The job against a real S3-compatible server (moto, on 127.0.0.1): images, manifest and store under s3://,
a complete run, a killed-and-resumed run equal to a clean one, and reads by densecam and by DuckDB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from densecam_core import generate_mura, open_store, read_manifest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BUCKET = "densecam-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with a synthetic tree uploaded, and this process pointed at it."""
    import fsspec
    from moto import server as moto_server  # here, not at the top: the fast loop collects this module only

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
    )
    fsspec.filesystem("s3").invalidate_cache()
    shared: dict = {"server": server}
    try:
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir(BUCKET)
        local = tmp_path_factory.mktemp("s3tree")
        generate_mura(local, images=16, seed=6, min_side=48, max_side=96)
        manifest = read_manifest(local)
        urls = []
        for path in manifest["path"]:
            relative = Path(path).relative_to(local).as_posix()
            fs.put_file(path, f"{BUCKET}/xrays/{relative}")
            urls.append(f"s3://{BUCKET}/xrays/{relative}")
        with fs.open(f"{BUCKET}/manifest.csv", "wb") as handle:
            pd.DataFrame({"path": urls, "hospital": "north"}).to_csv(handle, index=False)
        shared.update(
            fs=fs, manifest=f"s3://{BUCKET}/manifest.csv", local=local, env={**os.environ, "PYTHONPATH": str(REPO)}
        )
        yield shared
    finally:
        shared["server"].stop()  # the one running now (a test may have restarted it)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def job_args(manifest: str, store: str, *extra: str) -> list[str]:
    return [
        manifest,
        "--store",
        store,
        "--size",
        "64",
        "--batch-size",
        "2",
        "--shard-size",
        "2",
        "--workers",
        "1",
        "--methods",
        "gradcam",
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def clean_runs(s3, tmp_path_factory) -> dict[str, str]:
    """The job on the bucket and on a local copy of the same images, then the evaluation on the bucket: the
    runs the other tests compare with."""
    import ray

    from jobs.cli.evaluate import main as evaluate
    from jobs.cli.explain import main

    scratch = tmp_path_factory.mktemp("s3-clean")
    store, local = f"s3://{BUCKET}/store-a", str(scratch / "local-store")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # its workers inherit the S3 settings
    try:
        assert main(job_args(s3["manifest"], store)) == 0
        assert main(job_args(str(s3["local"]), local)) == 0  # the same images, locally
        # the evaluation job on the bucket: inputs from the cache there, metrics parts and table written there
        scoring = ["--metrics", "deletion,stability", "--steps", "2", "--sample", "4", "--workers", "1"]
        assert evaluate([store, "--run", "latest", *scoring, "--no-progress"]) == 0
    finally:
        ray.shutdown()
    return {"store": store, "local": local}


def test_job_on_s3_completes_and_reads_back(s3, clean_runs):
    import duckdb
    import fsspec

    store = clean_runs["store"]
    run = open_store(store).run("latest")
    index = run.index
    assert len(index) == 16 and (index["status"] == "ok").all() and index["image_id"].str.startswith("s3://").all()
    assert (index["hospital"] == "north").all()
    local = open_store(clean_runs["local"]).run("latest")
    assert run.run_id == local.run_id  # same model and settings: the same run id, whatever the storage
    rows = index["row"].tolist()
    assert np.allclose(run.maps("gradcam", 2, rows=rows), local.maps("gradcam", 2, rows=rows), atol=1e-5)
    assert s3["fs"].glob(f"{BUCKET}/store-a/inputs/*/segment-*.parquet")  # the input cache lives in the bucket too
    (pointer,) = s3["fs"].glob(f"{BUCKET}/store-a/inputs/*/_catalog.json")  # and its catalog, one PUT each
    assert json.loads(s3["fs"].cat_file(pointer))["rows"] == 16
    with pytest.raises(Exception, match="allow_remote=True"):
        run.overlay(index["image_id"][0])
    assert run.overlay(index["image_id"][0], allow_remote=True).shape[2] == 3
    connection = duckdb.connect()
    connection.register_filesystem(fsspec.filesystem("s3"))
    count, mean = connection.sql(
        f"SELECT count(*), avg(prob) FROM read_parquet('{store}/runs/*/index/*.parquet', union_by_name=true)"
    ).fetchall()[0]
    assert count == 16 and mean == pytest.approx(float(index["prob"].mean()), rel=1e-6)
    scores = run.metrics()
    assert scores["image_id"].nunique() == 4 and set(scores["metric"]) == {
        "deletion_auc",
        "stability_r",
        "stability_max_change",
    }
    (scored,) = connection.sql(
        f"SELECT count(DISTINCT image_id) FROM read_parquet('{store}/runs/*/metrics/family=*/part-*.parquet', "
        "hive_partitioning=true) WHERE family = 'stability'"
    ).fetchall()[0]
    assert scored == 4 and s3["fs"].exists(f"{BUCKET}/store-a/runs/{run.run_id}/metrics/_summary.csv")


def test_job_on_s3_killed_and_resumed_equals_a_clean_run(s3, clean_runs):
    command = [sys.executable, "-m", "jobs.cli.explain"]
    resumed, clean = f"s3://{BUCKET}/store-resumed", clean_runs["store"]
    process = subprocess.Popen(
        command + job_args(s3["manifest"], resumed),
        cwd=REPO,
        env=s3["env"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    parts: list[str] = []
    while time.time() < deadline and process.poll() is None:
        s3["fs"].invalidate_cache()
        parts = s3["fs"].glob(f"{BUCKET}/store-resumed/runs/*/index/part-*.parquet")
        if len(parts) >= 2:
            break
        time.sleep(0.3)
    assert process.poll() is None, "the job ended before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    s3["fs"].invalidate_cache()
    at_kill = len(s3["fs"].glob(f"{BUCKET}/store-resumed/runs/*/index/part-*.parquet"))
    assert 2 <= at_kill < 8
    done = subprocess.run(
        command + job_args(s3["manifest"], resumed),
        cwd=REPO,
        env=s3["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = open_store(resumed).run("latest"), open_store(clean).run("latest")  # the clean run: one job, no kill
    columns = ["image_id", "row", "status", "logit"]
    assert a.index[columns].equals(b.index[columns]) and len(a.index) == 16
    rows = a.index["row"].tolist()
    for method, block in (("cam", None), ("gradcam", 1), ("gradcam", 4)):
        assert np.array_equal(a.maps(method, block, rows=rows), b.maps(method, block, rows=rows))


def test_server_going_away_mid_job_fails_shards_and_a_rerun_completes(s3):
    """The S3 server stops after the first shard and comes back a few seconds later on the same port."""
    import threading

    import ray

    from jobs.explain.job import ExplainConfig, run_explain

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    port = int(endpoint.rsplit(":", 1)[1])
    store = f"s3://{BUCKET}/store-outage"
    outage: dict = {}

    def stop_once(state, result):
        if outage:
            return
        outage["server"] = s3["server"]
        s3["server"].stop()  # every request now fails: connection refused

        def restart() -> None:
            from moto.server import ThreadedMotoServer

            time.sleep(4)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
            server.start()  # moto keeps its buckets in this process: the data is still there
            s3["server"] = server

        threading.Thread(target=restart, daemon=True).start()

    config = ExplainConfig(
        manifest=s3["manifest"],
        store=store,
        size=64,
        batch_size=2,
        shard_size=2,
        workers=1,
        methods=("gradcam",),
        progress=False,
        retries=1,
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        first = run_explain(config, hook=stop_once)
        assert outage  # the server did go away mid-job
        # either the S3 client's own retries outlasted the outage and every shard landed, or shards failed:
        # then they were retried by the driver (and possibly given up), never committed half-written
        assert first.shard_attempts_failed > 0 or first.shards_done == first.shards_total
        time.sleep(5)  # the server is back
        second = run_explain(config)
    finally:
        ray.shutdown()
    assert not second.shards_failed
    index = open_store(store).run("latest").index
    assert len(index) == 16 and index["image_id"].is_unique and (index["status"] == "ok").all()
