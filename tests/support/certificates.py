"""A private certificate authority for the TLS tests: a CA, a server certificate for 127.0.0.1 and a client
certificate, as PEM files (keys readable by their owner alone)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA's certificate: what a client trusts
    server: Path  # the server's key and certificate in one PEM (Orthanc's SslCertificate)
    client_cert: Path
    client_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _issue(subject: str, key, issuer: x509.Name, issuer_key, *, ca: bool = False, usage=None, ip: str | None = None):
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_certificates(folder: Path) -> Certificates:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, server_key, client_key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3))
    ca = _issue("densecam test CA", ca_key, _name("densecam test CA"), ca_key, ca=True)
    server = _issue("127.0.0.1", server_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH, ip="127.0.0.1")
    client = _issue("densecam", client_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    found = Certificates(folder / "ca.pem", folder / "server.pem", folder / "client.pem", folder / "client.key")
    found.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    found.server.write_bytes(_pem_key(server_key) + server.public_bytes(serialization.Encoding.PEM))
    found.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    found.client_key.write_bytes(_pem_key(client_key))
    for path in (found.server, found.client_key):
        path.chmod(0o600)
    return found


def server_context(certificates: Certificates, *, require_client: bool = True) -> ssl.SSLContext:
    """A server's TLS context: its certificate, and clients must present one of the same authority."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.server)
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certificates.ca)
    return context
