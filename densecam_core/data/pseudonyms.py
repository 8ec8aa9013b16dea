"""Pseudonyms for patient, study and instance identifiers: a keyed hash whose key never enters a store.

HMAC-SHA256 under a 256-bit key the user owns (a file, created on first use with owner-only
permissions): the same identifier gets the same pseudonym in every run and store made with that
key, so a group can join its stores, while someone holding only a store cannot recover an
identifier, nor test a guess, without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from densecam_core import fileio
from densecam_core.data.sources.locations import is_url

KEY_ENV = "DENSECAM_PSEUDONYM_KEY"
KEY_BYTES = 32
PREFIXES = {"patient": "p-", "study": "s-", "instance": "i-"}
MAX_KEY_FILE_BYTES = 4096  # a key file is 65 bytes; anything much larger is the wrong file
DIGEST_CHARS = 20  # 80 bits: no collision in any archive's lifetime of identifiers


class PseudonymKeyError(ValueError):
    """The key file cannot be used; raised before any work starts."""


def default_key_path() -> Path:
    """``$DENSECAM_PSEUDONYM_KEY``, else ``$XDG_CONFIG_HOME/densecam/pseudonym.key`` (``~/.config``)."""
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "densecam" / "pseudonym.key"


@dataclass(frozen=True)
class Identifiers:
    """How identifiers reach the index: pseudonymised under ``key``, or in clear (``key`` None)."""

    key: bytes | None
    key_path: str | None = None
    created: bool = False  # the key file was created for this use

    @property
    def mode(self) -> str:
        return "clear" if self.key is None else "pseudonymised"

    @property
    def key_id(self) -> str | None:
        """Names the key without revealing it: runs made with another key have another id."""
        if self.key is None:
            return None
        return hmac.new(self.key, b"densecam key id", hashlib.sha256).hexdigest()[:16]

    def __call__(self, kind: str, value: object) -> str | None:
        """The pseudonym of ``value`` as a ``kind`` identifier (patient, study, instance); None stays None."""
        if value is None:
            return None
        text = str(value).strip()
        if not text:
            return None
        if self.key is None:
            return text
        digest = hmac.new(self.key, f"{kind}\0{text}".encode(), hashlib.sha256).hexdigest()
        return PREFIXES[kind] + digest[:DIGEST_CHARS]

    def as_json(self) -> dict[str, str | None]:
        return {"identifiers": self.mode, "pseudonym_key_id": self.key_id}


def in_clear() -> Identifiers:
    return Identifiers(None)


def load_identifiers(key_path: str | os.PathLike | None = None, *, store: str | None = None) -> Identifiers:
    """The key at ``key_path``; without one, the default key, created on first use.

    A key path that was given but does not exist is refused (a typo must not silently start a second
    key and so a second set of pseudonyms); so is a key inside ``store``, which would then hold it."""
    explicit = key_path is not None or bool(os.environ.get(KEY_ENV))
    path = Path(key_path).expanduser() if key_path is not None else default_key_path()
    if store is not None and not is_url(store) and _inside(path, Path(store)):
        raise PseudonymKeyError(
            f"the pseudonym key {str(path)!r} lies inside the store {store!r}: anyone with the store could then "
            "reverse its pseudonyms; keep the key outside (the default is ~/.config/densecam/pseudonym.key)"
        )
    created = False
    if not path.exists():
        if explicit:
            named_by = "`pseudonym_key`" if key_path is not None else f"${KEY_ENV}"
            raise PseudonymKeyError(
                f"pseudonym key {str(path)!r} (named by {named_by}) does not exist; create one with "
                f"`densecam keygen {path}`, or name no key to use (and on first use create) the default key"
            )
        create_key(path)
        created = True
    return Identifiers(read_key(path), str(path), created)


def _private_folder(folder: Path) -> None:
    """Create ``folder`` (and missing parents) readable by its owner alone, whatever the umask: the folder
    of a key must not let others list or replace it. An existing folder is left as it is."""
    if folder.is_dir():
        return
    _private_folder(folder.parent)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        return
    os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def read_key(path: Path) -> bytes:
    try:
        text = fileio.read_regular_file(path, max_bytes=MAX_KEY_FILE_BYTES).decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PseudonymKeyError(
            f"pseudonym key {str(path)!r} cannot be read ({exc}); fix its permissions, or create a new key with "
            "`densecam keygen PATH` (pseudonyms under a new key differ from earlier ones)"
        ) from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < KEY_BYTES:
        raise PseudonymKeyError(
            f"pseudonym key {str(path)!r} is not a densecam key ({KEY_BYTES * 2} hex digits); "
            "create one with `densecam keygen PATH`"
        )
    return key


def create_key(path: str | os.PathLike) -> Path:
    """Write a new random key readable by its owner only; an existing file is never overwritten."""
    target = Path(path).expanduser()
    _private_folder(target.parent)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PseudonymKeyError(f"{str(target)!r} exists already; a key is never overwritten") from None
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(KEY_BYTES) + "\n")
    return target
