"""How densecam logs in to a DICOMweb server: secrets come from files readable by their owner alone, named
by environment variables (never from the URL, the command line, the store, Ray's runtime environment, task
arguments or a log), else from ``~/.netrc``."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from densecam_core import fileio
from densecam_core.data.errors import ManifestError

TOKEN_FILE = "DENSECAM_DICOMWEB_TOKEN_FILE"
USER = "DENSECAM_DICOMWEB_USER"
PASSWORD_FILE = "DENSECAM_DICOMWEB_PASSWORD_FILE"
CA_BUNDLE = "DENSECAM_DICOMWEB_CA_BUNDLE"
CLIENT_CERT = "DENSECAM_DICOMWEB_CLIENT_CERT"
CLIENT_KEY = "DENSECAM_DICOMWEB_CLIENT_KEY"
HOW = (
    f"set {TOKEN_FILE} (a Bearer token), or {USER} with {PASSWORD_FILE}, each file readable by its owner alone "
    "(chmod 600), or add the server to ~/.netrc"
)
MAX_SECRET_BYTES = 16384


class CredentialsError(ManifestError):
    """A credential file cannot be used; raised before anything is sent."""


@dataclass(frozen=True, repr=False)
class Credentials:
    """What a session sends: a Bearer token or a user and password (None: ``~/.netrc`` if it names the host)."""

    token: str | None = None
    user: str | None = None
    password: str | None = None
    ca_bundle: str | None = None
    client_cert: tuple[str, str] | str | None = None

    def __repr__(self) -> str:  # never print a secret, whoever logs this object
        kind = "token" if self.token else "user and password" if self.user else "netrc or none"
        return f"Credentials({kind})"

    @property
    def described(self) -> str:
        if self.token:
            return f"the Bearer token of ${TOKEN_FILE}"
        if self.user:
            return f"the user of ${USER} and the password of ${PASSWORD_FILE}"
        return "~/.netrc or no credentials"


def credentials_from_environment(environ: dict[str, str] | None = None) -> Credentials:
    """The credentials the environment names; a named file that is missing, empty or readable by others is
    refused with what to do."""
    env = dict(os.environ if environ is None else environ)
    tls = {
        "ca_bundle": _path(env, CA_BUNDLE),
        "client_cert": _client_cert(env),
    }
    if env.get(TOKEN_FILE):
        return Credentials(token=_secret(env[TOKEN_FILE], TOKEN_FILE), **tls)  # type: ignore[arg-type]
    if env.get(USER) or env.get(PASSWORD_FILE):
        if not (env.get(USER) and env.get(PASSWORD_FILE)):
            raise CredentialsError(f"set both {USER} and {PASSWORD_FILE} (or neither); {HOW}")
        return Credentials(user=env[USER], password=_secret(env[PASSWORD_FILE], PASSWORD_FILE), **tls)  # type: ignore[arg-type]
    return Credentials(**tls)  # type: ignore[arg-type]


def _secret(path_text: str, variable: str) -> str:
    path = Path(path_text).expanduser()
    try:
        info = path.stat()
    except OSError:
        raise CredentialsError(f"${variable} names {str(path)!r}, which does not exist; {HOW}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) or info.st_uid != os.getuid():
        raise CredentialsError(
            f"${variable} names {str(path)!r}, which others can read or which you do not own; "
            f"make it yours alone: chmod 600 {path}"
        )
    try:
        text = fileio.read_regular_file(path, max_bytes=MAX_SECRET_BYTES).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(
            f"${variable} names {str(path)!r}, which cannot be read as text ({type(exc).__name__})"
        ) from None
    if not text:
        raise CredentialsError(f"${variable} names {str(path)!r}, which is empty")
    return text


def _path(env: dict[str, str], variable: str) -> str | None:
    text = env.get(variable)
    if not text:
        return None
    if not Path(text).expanduser().is_file():
        raise CredentialsError(f"${variable} names {text!r}, which is not a file")
    return str(Path(text).expanduser())


def _client_cert(env: dict[str, str]) -> tuple[str, str] | str | None:
    cert = _path(env, CLIENT_CERT)
    if cert is None:
        return None
    key = env.get(CLIENT_KEY)
    if key:
        _secret(key, CLIENT_KEY)  # a private key: owner-only like the others
        return (cert, str(Path(key).expanduser()))
    return cert
