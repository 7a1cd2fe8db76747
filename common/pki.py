"""A lab PKI for a test or small deployment: a CA, a collector certificate, sensor certificates.

Built with ``cryptography``. The collector accepts only clients whose certificate this CA
signed; a sensor's identity is its certificate's common name, and the host names it may send
events for are that name and the DNS names among its subject alternative names (``pki init
--sensor web-01=web-01.example.com``). Private keys are written 0600.
For production, use the organisation's own CA: the collector and forwarder only need PEM files.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.ownership import NEW_FILE, private_directory_problem

VALID_DAYS = 825


@dataclass(frozen=True)
class Issued:
    cert: str
    key: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ttpsensor lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class PkiError(OSError):
    """The PKI cannot be written where asked; the message says why."""


def _create(path: str, data: bytes, mode: int) -> None:
    """A new file, never an existing one and never through a link: a key must not end up in a
    file another user already holds open or can read."""
    try:
        fd = os.open(path, NEW_FILE, mode)
    except FileExistsError as exc:
        raise PkiError(exc.errno, f"{path} exists already: refusing to replace it (remove it "
                       "first, or choose another directory)") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_key(path: str, key: ec.EllipticCurvePrivateKey) -> None:
    _create(path, key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()), 0o600)


def _write_cert(path: str, cert: x509.Certificate) -> None:
    _create(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def make_ca(directory: str, name: str = "ttpsensor lab CA") -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    issued = Issued(os.path.join(directory, "ca.crt"), os.path.join(directory, "ca.key"))
    _write_cert(issued.cert, cert)
    _write_key(issued.key, key)
    return issued


def issue(ca: Issued, directory: str, name: str, *, server: bool,
          alt_names: list[str] | None = None) -> Issued:
    """A certificate for a collector (``server``) or a sensor (client)."""
    with open(ca.key, "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    with open(ca.cert, "rb") as f:
        ca_cert = x509.load_pem_x509_certificate(f.read())
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.timezone.utc)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(name))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - _dt.timedelta(minutes=5))
               .not_valid_after(now + _dt.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    sans: list[x509.GeneralName] = []
    for alt in alt_names or ([name] if server else []):
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(alt)))
        except ValueError:
            sans.append(x509.DNSName(alt))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    issued = Issued(os.path.join(directory, f"{name}.crt"),
                    os.path.join(directory, f"{name}.key"))
    _write_cert(issued.cert, cert)
    _write_key(issued.key, key)
    return issued


def sensor_spec(spec: str) -> tuple[str, list[str]]:
    """``NAME`` or ``NAME=HOST,HOST…``: a sensor's certificate name and the further host names
    it may send events for."""
    name, equals, hosts = spec.partition("=")
    extra = [h.strip() for h in hosts.split(",") if h.strip()]
    if not name.strip() or (equals and not extra):
        raise PkiError(22, f"{spec!r}: give a sensor as NAME or NAME=HOST,HOST")
    for host in extra:
        if not host.isascii() or any(c.isspace() for c in host):
            raise PkiError(22, f"{spec!r}: {host!r} is not a host name")
    return name.strip(), extra


def init(directory: str, sensors: list[str], collector: str = "collector",
         collector_names: list[str] | None = None) -> dict[str, Issued]:
    """A CA, one collector certificate and one certificate per sensor (each ``NAME`` or
    ``NAME=HOST,HOST…``, see :func:`sensor_spec`), in ``directory``: a directory of this user
    (or root) that nobody else can write to, holding no CA yet."""
    specs = [sensor_spec(sensor) for sensor in sensors]
    os.makedirs(directory, mode=0o700, exist_ok=True)
    problem = private_directory_problem(directory)
    if problem is not None:
        raise PkiError(1, f"{problem}: refusing to write keys there")
    if os.path.lexists(os.path.join(directory, "ca.key")):
        raise PkiError(17, f"{directory} holds a CA already (ca.key): a second 'pki init' "
                       "would replace it and orphan every certificate it signed")
    out = {"ca": make_ca(directory)}
    names = collector_names or ["localhost", "127.0.0.1", "::1"]
    out[collector] = issue(out["ca"], directory, collector, server=True, alt_names=names)
    for sensor, hosts in specs:
        out[sensor] = issue(out["ca"], directory, sensor, server=False, alt_names=hosts)
    return out
