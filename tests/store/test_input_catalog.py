"""The input cache's catalog: one read instead of one per segment, and never a wrong or outside answer."""

from __future__ import annotations

import io
import uuid
import warnings
from collections.abc import Iterator

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from densecam_core import fileio
from densecam_core.data.geometry import Geometry
from densecam_core.data.preprocess import ModelInput
from densecam_core.store.inputs import catalog as input_catalog
from densecam_core.store.inputs.cache import CacheDamageWarning, InputCache
from densecam_core.store.inputs.catalog import CatalogWarning
from densecam_core.store.inputs.identity import SourceIdentity
from densecam_core.store.inputs.verify import remove, verify_input_caches
from densecam_core.store.layout import CATALOG_JSON

SIZE = 8


def fake_input(seed: int) -> tuple[SourceIdentity, ModelInput]:
    """An identity and a model input whose pixels say which image they are."""
    pixels = np.full((1, SIZE, SIZE), seed % 251, np.uint8)
    return SourceIdentity(f"/images/{seed}.png", 1000 + seed, f"stamp-{seed}"), ModelInput(
        pixels, Geometry(40 + seed, 30 + seed, SIZE)
    )


def fill(cache: InputCache, segments: int, per_segment: int = 3, first: int = 0) -> list[SourceIdentity]:
    identities = []
    for s in range(segments):
        entries = [fake_input(first + s * per_segment + i) for i in range(per_segment)]
        cache.write(entries)
        identities += [identity for identity, _ in entries]
    return identities


@pytest.fixture
def store() -> Iterator[str]:
    """A store on fsspec's memory filesystem: every read goes through ``fs.open``, which the tests count."""
    url = f"memory://catalog-{uuid.uuid4().hex}/store"
    yield url
    fs, root = fileio.filesystem(url)
    fs.rm(root.rsplit("/", 1)[0], recursive=True)


def counting_opens(cache: InputCache, monkeypatch) -> list[str]:
    opened: list[str] = []
    real = cache.fs.open

    def spy(path, *args, **kwargs):
        opened.append(str(path).rsplit("/", 1)[-1])
        return real(path, *args, **kwargs)

    monkeypatch.setattr(cache.fs, "open", spy)
    return opened


def segment_reads(opened: list[str]) -> list[str]:
    return [name for name in opened if name.startswith("segment-")]


def test_first_lookup_reads_the_catalog_and_no_catalogued_segment(store, monkeypatch):
    identities = fill(InputCache(store, SIZE, "stretch"), segments=6)
    assert InputCache(store, SIZE, "stretch").write_catalog() == 6
    fresh = InputCache(store, SIZE, "stretch")
    opened = counting_opens(fresh, monkeypatch)
    hits = fresh.lookup(identities)
    assert sorted(hits) == list(range(18))
    assert segment_reads(opened) == [] and any(name.startswith("catalog-") for name in opened)
    inputs = fresh.read(hits)  # the pixels come from the segments, at the rows the catalog gave
    assert [int(inputs[i].pixels[0, 0, 0]) for i in range(18)] == list(range(18))
    assert (inputs[4].geometry.orig_height, inputs[4].geometry.orig_width) == (44, 34)


def test_segments_committed_after_the_catalog_are_read_and_found(store, monkeypatch):
    cache = InputCache(store, SIZE, "stretch")
    identities = fill(cache, segments=3)
    cache.write_catalog()
    identities += fill(cache, segments=2, first=100)
    fresh = InputCache(store, SIZE, "stretch", read_threads=4)
    opened = counting_opens(fresh, monkeypatch)
    assert sorted(fresh.lookup(identities)) == list(range(15))
    assert len(segment_reads(opened)) == 2  # only the two the catalog does not cover


def test_lookups_equal_the_segment_by_segment_view(store):
    cache = InputCache(store, SIZE, "stretch")
    identities = [*fill(cache, segments=5), SourceIdentity("/images/none.png", 1, "x")]
    changed = SourceIdentity(identities[2].path, identities[2].size, "a new stamp")
    serial = InputCache(store, SIZE, "stretch", read_threads=1).lookup([*identities, changed])
    cache.write_catalog()
    catalogued = InputCache(store, SIZE, "stretch").lookup([*identities, changed])
    assert catalogued == serial and sorted(serial) == list(range(15))


def test_catalog_is_only_rewritten_when_segments_were_added(store):
    cache = InputCache(store, SIZE, "stretch")
    fill(cache, segments=2)
    assert cache.write_catalog() == 2
    fs, root = fileio.filesystem(cache.url)
    first = fileio.read_json(fs, fileio.join(root, CATALOG_JSON))
    assert InputCache(store, SIZE, "stretch").write_catalog() == 2
    assert fileio.read_json(fs, fileio.join(root, CATALOG_JSON)) == first  # nothing new: not rewritten
    fill(cache, segments=1, first=50)
    assert InputCache(store, SIZE, "stretch").write_catalog() == 3
    catalogs = [p for p in fs.ls(root, detail=False) if p.rsplit("/", 1)[-1].startswith("catalog-")]
    assert len(catalogs) == 1  # the replaced one is deleted
    assert fileio.read_json(fs, fileio.join(root, CATALOG_JSON))["segments"] == 3


def test_a_deleted_segment_is_not_a_hit_although_the_catalog_lists_it(store):
    cache = InputCache(store, SIZE, "stretch")
    identities = fill(cache, segments=3)
    cache.write_catalog()
    reader = InputCache(store, SIZE, "stretch")
    entry = reader.lookup(identities[:1])[0]
    cache.fs.rm(entry.segment)
    assert sorted(InputCache(store, SIZE, "stretch").lookup(identities)) == list(range(3, 9))
    # a process that listed the folder before the deletion finds out when it reads: those images are
    # left out (decoded again), named in a warning, and never looked up again
    with pytest.warns(CacheDamageWarning, match=entry.segment.rsplit("/", 1)[-1]):
        assert sorted(reader.read(reader.lookup(identities))) == list(range(3, 9))
    assert sorted(reader.lookup(identities)) == list(range(3, 9))


def test_listing_is_repeated_only_for_unknown_images_and_not_more_often_than_asked(store, monkeypatch):
    cache = InputCache(store, SIZE, "stretch")
    first = fill(cache, segments=2)
    reader = InputCache(store, SIZE, "stretch", refresh_seconds=3600)
    listings = []
    real_ls = reader.fs.ls
    monkeypatch.setattr(reader.fs, "ls", lambda *a, **k: listings.append(a) or real_ls(*a, **k))
    assert sorted(reader.lookup(first)) == list(range(6)) and len(listings) == 1
    assert sorted(reader.lookup(first[:3])) == list(range(3)) and len(listings) == 1  # all known: no listing
    later = fill(cache, segments=1, first=20)
    assert reader.lookup(later) == {} and len(listings) == 1  # unknown, but listed less than an hour ago
    reader.refresh_seconds = 0
    assert sorted(reader.lookup(later)) == [0, 1, 2] and len(listings) == 2
    # a writer knows its own segments without listing
    own = fill(cache, segments=1, first=30)
    assert sorted(cache.lookup(own)) == [0, 1, 2] and len(listings) == 2  # (one filesystem object: same spy)


@pytest.mark.parametrize("damage", ["garbage", "flipped byte", "pointer"])
def test_damaged_catalog_is_named_and_the_segments_are_read(store, monkeypatch, damage):
    cache = InputCache(store, SIZE, "stretch")
    identities = fill(cache, segments=4)
    cache.write_catalog()
    fs, root = cache.fs, cache.root
    name = fileio.read_json(fs, fileio.join(root, CATALOG_JSON))["file"]
    path = fileio.join(root, name)
    data = bytearray(fs.cat_file(path))
    if damage == "garbage":
        fs.pipe_file(path, b"not parquet at all")
    elif damage == "flipped byte":  # inside the first data page: its CRC or its zstd frame fails
        data[len(b"PAR1") + 40] ^= 0xFF
        fs.pipe_file(path, bytes(data))
    else:
        fs.pipe_file(fileio.join(root, CATALOG_JSON), b"[1, 2")
    fresh = InputCache(store, SIZE, "stretch")
    opened = counting_opens(fresh, monkeypatch)
    with pytest.warns(CatalogWarning, match=CATALOG_JSON if damage == "pointer" else name):
        hits = fresh.lookup(identities)
    assert sorted(hits) == list(range(12)) and len(segment_reads(opened)) == 4


def test_catalog_cannot_lead_outside_the_cache_folder(store, monkeypatch):
    cache = InputCache(store, SIZE, "stretch")
    identities = fill(cache, segments=2)
    fs, root = cache.fs, cache.root
    outside = f"{root.rsplit('/', 3)[0]}/elsewhere/segment-{'0' * 32}.parquet"
    fs.pipe_file(outside, b"secret")
    fileio.write_json_atomic(fs, fileio.join(root, CATALOG_JSON), {"file": "../../elsewhere/x.parquet"})
    with pytest.warns(CatalogWarning, match="not a catalog file"):
        assert sorted(InputCache(store, SIZE, "stretch").lookup(identities)) == list(range(6))
    # a well-formed catalog whose rows name segments outside the folder, or never committed
    stranger = SourceIdentity("/images/stranger.png", 5, "s")
    rows = pa.table(
        {
            "segment": ["../../elsewhere/" + outside.rsplit("/", 1)[-1], f"segment-{'1' * 32}.parquet"],
            "row": pa.array([0, 0], pa.int32()),
            "path": [stranger.path, stranger.path],
            "file_size": pa.array([5, 5], pa.int64()),
            "file_stamp": ["s", "s"],
            "orig_height": pa.array([9, 9], pa.int32()),
            "orig_width": pa.array([9, 9], pa.int32()),
            "channels": pa.array([1, 1], pa.int8()),
        }
    )
    input_catalog.write_catalog(fs, root, rows)
    fresh = InputCache(store, SIZE, "stretch")
    opened = counting_opens(fresh, monkeypatch)
    assert fresh.lookup([stranger]) == {}
    assert sorted(fresh.lookup(identities)) == list(range(6))
    assert "elsewhere" not in " ".join(opened) and len(segment_reads(opened)) == 2


def test_catalog_with_wrong_rows_is_caught_when_pixels_are_read(store):
    cache = InputCache(store, SIZE, "stretch")
    identities = fill(cache, segments=2)
    fs, root = cache.fs, cache.root
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False) if "/segment-" in p)
    table = pa.concat_tables(input_catalog.read_segments(fs, root, names)[0])
    swapped = table.set_column(1, "row", pa.array(np.roll(table["row"].to_numpy(), 1), pa.int32()))
    input_catalog.write_catalog(fs, root, swapped)
    fresh = InputCache(store, SIZE, "stretch")
    hits = fresh.lookup(identities)
    with pytest.warns(CacheDamageWarning, match="where the catalog catalog-[0-9a-f]+.parquet promised"):
        assert fresh.read(hits) == {}  # never another image's pixels: every one is decoded again
    assert set(fresh.damaged) == set(names)
    # densecam verify --inputs names the catalog, not the (sound) segments, and --repair removes it
    (report,) = verify_input_caches(store)
    assert [d.file for d in report.damages] == [CATALOG_JSON] and "which it does not" in report.damages[0].what
    remove(store, report.damages[0])
    assert sorted(
        InputCache(store, SIZE, "stretch").read(InputCache(store, SIZE, "stretch").lookup(identities))
    ) == list(range(6))


def test_a_catalog_written_but_never_switched_in_is_ignored(store, monkeypatch):
    cache = InputCache(store, SIZE, "stretch")
    identities = fill(cache, segments=2)
    cache.write_catalog()
    identities += fill(cache, segments=2, first=10)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio, "write_json_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        InputCache(store, SIZE, "stretch").write_catalog()
    monkeypatch.undo()
    fresh = InputCache(store, SIZE, "stretch")
    opened = counting_opens(fresh, monkeypatch)
    assert sorted(fresh.lookup(identities)) == list(range(12))
    assert len(segment_reads(opened)) == 2  # the old catalog plus the two segments it lacks


def test_reader_follows_a_catalog_replaced_while_it_reads(store, monkeypatch):
    cache = InputCache(store, SIZE, "stretch")
    identities = fill(cache, segments=2)
    cache.write_catalog()
    identities += fill(cache, segments=1, first=10)
    real_read_json = fileio.read_json
    calls = []

    def racing(fs, path):  # a driver switches in a new catalog just after the reader read the pointer
        pointer = real_read_json(fs, path)
        if not calls:
            calls.append(path)
            before = len(opened)
            InputCache(store, SIZE, "stretch").write_catalog()  # deletes the file `pointer` names
            del opened[before:]  # the writer's reads (the filesystem object is shared), not the reader's
        return pointer

    monkeypatch.setattr(input_catalog.fileio, "read_json", racing)
    fresh = InputCache(store, SIZE, "stretch")
    opened = counting_opens(fresh, monkeypatch)
    assert sorted(fresh.lookup(identities)) == list(range(9))
    assert calls and segment_reads(opened) == []  # the second pointer's catalog covered all three


def test_local_cache_catalog_round_trip(tmp_path):
    """The same on a local folder, where pyarrow reads through its own filesystem."""
    cache = InputCache(str(tmp_path / "store"), SIZE, "pad")
    identities = fill(cache, segments=3)
    assert cache.write_catalog() == 3
    fresh = InputCache(str(tmp_path / "store"), SIZE, "pad")
    inputs = fresh.read(fresh.lookup(identities))
    assert [int(inputs[i].pixels[0, 0, 0]) for i in range(9)] == list(range(9))
    assert not fsspec.filesystem("file").glob(str(tmp_path / "store" / "inputs" / "*" / "_tmp-*"))


def test_a_segment_deleted_between_listing_and_reading_is_skipped_not_damage(store, monkeypatch):
    cache = InputCache(store, SIZE, "stretch")
    identities = fill(cache, segments=2)
    reader = InputCache(store, SIZE, "stretch")
    real_ls = reader.fs.ls
    gone = f"segment-{'2' * 32}.parquet"  # listed, then deleted before it is read (verify --repair)
    monkeypatch.setattr(reader.fs, "ls", lambda path, **k: [*real_ls(path, **k), f"{path}/{gone}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: nothing is damaged
        assert sorted(reader.lookup(identities)) == list(range(6))
    assert reader.damaged == {}


def test_catalog_of_other_column_types_is_named_and_the_segments_are_read(store):
    cache = InputCache(store, SIZE, "stretch")
    identities = fill(cache, segments=2)
    cache.write_catalog()
    fs, root = cache.fs, cache.root
    name = fileio.read_json(fs, fileio.join(root, CATALOG_JSON))["file"]
    table = pq.read_table(fileio.join(root, name), filesystem=fs)
    fs.pipe_file(fileio.join(root, name), parquet_bytes(table.set_column(1, "row", pa.array(["x"] * 6))))
    with pytest.warns(CatalogWarning, match="other types"):
        assert sorted(InputCache(store, SIZE, "stretch").lookup(identities)) == list(range(6))


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def test_a_flipped_byte_in_cached_pixels_is_caught_by_the_page_checksums(store):
    cache = InputCache(store, SIZE, "stretch")
    identities = fill(cache, segments=2, per_segment=20)  # 20 rows: two row groups of pixels
    fs, root = cache.fs, cache.root
    (victim,) = [p for p in fs.ls(root, detail=False) if p.endswith(".parquet")][:1]
    columns = pq.ParquetFile(io.BytesIO(fs.cat_file(victim))).metadata.row_group(1).column(6)
    assert columns.path_in_schema == "pixels" and columns.dictionary_page_offset is None  # no unchecked dictionary
    data = bytearray(fs.cat_file(victim))
    data[columns.data_page_offset + columns.total_compressed_size - 8] ^= 0x01  # inside the page's compressed data
    fs.pipe_file(victim, bytes(data))
    reader = InputCache(store, SIZE, "stretch")
    hits = reader.lookup(identities)
    assert len(hits) == 40  # the identity columns still read
    with pytest.warns(CacheDamageWarning, match=victim.rsplit("/", 1)[-1]):
        inputs = reader.read(hits)
    damaged = [p for p, e in hits.items() if e.segment == victim]
    assert len(damaged) == 20 and sorted(inputs) == sorted(set(range(40)) - set(damaged))
    assert all(int(inputs[p].pixels[0, 0, 0]) == p for p in inputs)  # the others, intact


def test_a_truncated_segment_is_named_and_its_images_are_not_hits(store):
    cache = InputCache(store, SIZE, "stretch")
    identities = fill(cache, segments=3)
    fs, root = cache.fs, cache.root
    victim = sorted(p for p in fs.ls(root, detail=False) if p.endswith(".parquet"))[1]
    fs.pipe_file(victim, fs.cat_file(victim)[:200])  # its identities cannot be read: which images it held is unknown
    reader = InputCache(store, SIZE, "stretch")
    with pytest.warns(CacheDamageWarning, match=victim.rsplit("/", 1)[-1]):
        hits = reader.lookup(identities)
    assert len(hits) == 6 and victim.rsplit("/", 1)[-1] in reader.damaged
    assert all(entry.segment != victim for entry in hits.values())
    assert sorted(reader.read(hits)) == sorted(hits)
