"""Files a user names on the command line (the pseudonym key, a labels file) as hostile input: a FIFO never
blocks, a huge file is refused in linear time, a typo never silently starts a second key, and names that
could not be selected later are refused where the file can still be fixed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from densecam_core.data.pseudonyms import KEY_ENV, PseudonymKeyError, create_key, load_identifiers
from densecam_core.model.labels import LabelError, read_labels


@pytest.mark.timeout(30)
def test_a_fifo_as_the_pseudonym_key_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "key")
    with pytest.raises(PseudonymKeyError, match="not a regular file"):
        load_identifiers(tmp_path / "key")


def test_the_key_variable_naming_a_missing_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, str(tmp_path / "typo.key"))
    with pytest.raises(PseudonymKeyError, match=rf"named by \${KEY_ENV}\) does not exist"):
        load_identifiers()
    assert not (tmp_path / "typo.key").exists(), "no second key is created"


def test_the_default_keys_folder_is_private_whatever_the_umask(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    old = os.umask(0)
    try:
        identifiers = load_identifiers()
    finally:
        os.umask(old)
    key = Path(str(identifiers.key_path))
    assert identifiers.created and stat.S_IMODE(key.stat().st_mode) == 0o600
    for folder in (key.parent, key.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_an_existing_key_reads_as_before(tmp_path):
    path = create_key(tmp_path / "k")
    assert load_identifiers(path).key == bytes.fromhex(path.read_text().strip())


@pytest.mark.timeout(30)
def test_a_fifo_as_the_labels_file_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "labels.txt")
    with pytest.raises(LabelError, match="not a regular file"):
        read_labels(tmp_path / "labels.txt")


def test_a_million_labels_are_refused(tmp_path):
    """The audit's 10^6-line file ran past 300 s (a quadratic duplicate check; the suite's timeout would stop a
    hang); the count is compared with the classifier's first, and a file past the cap is never read."""
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"class{i}\n" for i in range(10**6)))
    with pytest.raises(LabelError, match="classifier has 14 outputs but the labels name 1000000 classes"):
        read_labels(path, expected=14)
    path.write_text("x" * (17 * 1024 * 1024))
    with pytest.raises(LabelError, match="larger than 16 MB"):
        read_labels(path)


def test_repeated_names_are_found_in_one_pass(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"class{i}\n" for i in range(10**5)) + "class7\n")
    with pytest.raises(LabelError, match=r"names \['class7'\] more than once"):
        read_labels(path)


def test_a_class_name_with_a_comma_is_refused_when_the_labels_are_read(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("Effusion\nPleural thickening, left\n")
    with pytest.raises(LabelError, match="comma.*`target_names`.*rename them"):
        read_labels(path)
