"""What a PE file says about itself: digests, imports, version resource, Authenticode.

Runs on any OS (pefile and asn1crypto); on Windows, catalog signatures would come from
WinVerifyTrust in addition. The Authenticode digest is computed with pefile alone: SHA-256 of
the file without the optional header's CheckSum, the security directory entry and the
certificate table (its VirtualAddress is a file offset), everything after the table included,
as signify and osslsigncode compute it. QLOG's ``AuthenticodeHash`` is this digest, reported
for signed files.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import pefile
from asn1crypto import cms, core, tsp, x509  # noqa: F401  (tsp: TSTInfo for cms)

SPC_INDIRECT_DATA = "1.3.6.1.4.1.311.2.1.4"
NESTED_SIGNATURE = "1.3.6.1.4.1.311.2.4.1"
# Where Authenticode keeps its signing time (it carries no signingTime of its own): an RFC 3161
# token in Microsoft's unsigned attribute, or a legacy PKCS #9 countersignature.
RFC3161_TIMESTAMP = "1.3.6.1.4.1.311.3.3.1"
COUNTER_SIGNATURE = "1.2.840.113549.1.9.6"
_SECURITY = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_SECURITY"]
_VERSION_KEYS = {"OriginalFilename": "original_file_name", "CompanyName": "company",
                 "ProductName": "product", "FileVersion": "file_version",
                 "FileDescription": "description", "InternalName": "internal_name"}


class PEError(ValueError):
    """Not a PE file, or one pefile cannot parse."""


@dataclass
class Signature:
    subject: str
    issuer: str
    thumbprint: str              # SHA-1 of the signer certificate, upper-case hex
    serial: str
    digest_algorithm: str
    signed_digest: str           # the Authenticode digest the signer signed, upper-case hex
    timestamp: str | None = None  # when it was signed (ISO 8601 UTC), from its countersignature
    nested: bool = False
    not_before: str | None = None  # the signer certificate's validity (ISO 8601 UTC)
    not_after: str | None = None
    # The countersignatures that date it (RFC 3161 or legacy): their signer, validity and time.
    timestamp_signatures: list["Signature"] = field(default_factory=list)
    # Set by verify(): the signer's signature over its attributes checks out, the attributes
    # name the signed content's digest, and the certificate chains to a trusted root.
    verified: bool | None = None
    problem: str | None = None


@dataclass
class PEFacts:
    md5: str
    sha1: str
    sha256: str
    imphash: str                 # upper case, as QLOG and Sysmon print it; "" without imports
    authenticode_sha256: str     # computed from the file
    signatures: list[Signature] = field(default_factory=list)
    # The Authenticode digest in every algorithm a signature used (sha1 for old signatures).
    authenticode_digests: dict[str, str] = field(default_factory=dict)
    original_file_name: str | None = None
    company: str | None = None
    product: str | None = None
    file_version: str | None = None
    description: str | None = None
    internal_name: str | None = None
    # Windows' own verdict when it was asked (sensor_windows/wintrust.py, live hosts only):
    # its ``Signed`` wording, and the catalog that signs a file without a signature of its own.
    system_status: str | None = None
    catalog: str | None = None

    @property
    def signed(self) -> bool:
        return bool(self.signatures) or self.catalog is not None

    @property
    def status(self) -> str:
        """QLOG's ``Signed`` wording: Windows' verdict where there is one."""
        if self.system_status is not None:
            return self.system_status
        if not self.signatures:
            return "Not signed"
        if not self.digest_matches:
            return "Invalid digest"
        primary = self.signatures[0]
        if primary.verified is None:
            return "Signed, not verified"
        return "Signature valid" if primary.verified else f"Signature invalid: {primary.problem}"

    @property
    def digest_matches(self) -> bool | None:
        """Does the file still hash to what its (primary) signer signed? None if unsigned."""
        if not self.signatures:
            return None
        primary = self.signatures[0]
        return primary.signed_digest == self.authenticode_digests.get(primary.digest_algorithm)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["signed"] = self.signed
        out["digest_matches"] = self.digest_matches
        out["status"] = self.status
        return out


def _ranges_to_hash(pe: pefile.PE, size: int) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """The file ranges Authenticode hashes, and the certificate table (offset, size)."""
    checksum = pe.OPTIONAL_HEADER.get_file_offset() + 64
    if len(pe.OPTIONAL_HEADER.DATA_DIRECTORY) <= _SECURITY:
        # Fewer data directories than the security one (NumberOfRvaAndSizes < 5): no entry to
        # leave out and no certificate table, so nothing can be signed.
        return [(0, checksum), (checksum + 4, size)], (0, 0)
    directory = pe.OPTIONAL_HEADER.DATA_DIRECTORY[_SECURITY]
    entry = directory.get_file_offset()
    table, table_size = directory.VirtualAddress, directory.Size
    ranges = [(0, checksum), (checksum + 4, entry)]
    if table and table_size and table + table_size <= size:
        ranges += [(entry + 8, table), (table + table_size, size)]
    else:
        ranges.append((entry + 8, size))
        table, table_size = 0, 0
    return ranges, (table, table_size)


def _digest(data: bytes, ranges: list[tuple[int, int]], algorithm: str) -> str:
    h = hashlib.new(algorithm)
    view = memoryview(data)
    for start, end in ranges:
        h.update(view[start:end])
    return h.hexdigest().upper()


def _version_info(pe: pefile.PE) -> dict[str, str]:
    found: dict[str, str] = {}
    for info in getattr(pe, "FileInfo", None) or []:
        for entry in info:
            for table in getattr(entry, "StringTable", []) or []:
                for key, value in table.entries.items():
                    name = _VERSION_KEYS.get(key.decode("utf-8", "replace"))
                    if name and name not in found:
                        found[name] = value.decode("utf-8", "replace")
    return found


_SHORT = {"common_name": "CN", "organization_name": "O", "organizational_unit_name": "OU",
          "locality_name": "L", "state_or_province_name": "S", "country_name": "C",
          "email_address": "E", "serial_number": "SERIALNUMBER"}


def dotnet_name(name: x509.Name) -> str:
    """A distinguished name as Windows (.NET) prints it, most specific first:
    ``CN=Microsoft Windows, O=Microsoft Corporation, L=Redmond, S=Washington, C=US``."""
    parts = []
    for rdn in reversed(list(name.chosen)):
        for attribute in rdn:
            key = attribute["type"].native
            parts.append(f"{_SHORT.get(key, attribute['type'].dotted)}={attribute['value'].native}")
    return ", ".join(parts)


class _DigestInfo(core.Sequence):
    _fields = [("digest_algorithm", cms.DigestAlgorithm), ("digest", core.OctetString)]


class _SpcIndirectDataContent(core.Sequence):
    _fields = [("data", core.Any), ("message_digest", _DigestInfo)]


def _signatures(signed_data: cms.SignedData, nested: bool = False,
                roots: list[Any] | None = None) -> list[Signature]:
    content = signed_data["encap_content_info"]
    if content["content_type"].dotted != SPC_INDIRECT_DATA:
        return []
    indirect = content["content"].parse(_SpcIndirectDataContent)
    digest_info = indirect["message_digest"]
    certificates = [c.chosen for c in signed_data["certificates"]
                    if isinstance(c.chosen, x509.Certificate)]
    out = []
    for signer in signed_data["signer_infos"]:
        sid = signer["sid"].chosen
        cert = _find_certificate(signer["sid"], certificates)
        stamps = _timestamps(signer, certificates)
        out.append(Signature(
            **_signer_identity(sid, cert),
            digest_algorithm=digest_info["digest_algorithm"]["algorithm"].native,
            signed_digest=digest_info["digest"].native.hex().upper(),
            timestamp=stamps[0].timestamp if stamps else None, nested=nested,
            timestamp_signatures=stamps))
        if roots is not None:
            # Checked as of now. Windows checks a timestamped signature as of its countersigned
            # time, but only after verifying the countersignature; this verifier does not verify
            # countersignatures yet, and a time it took on trust could revive an expired
            # certificate. (Live Windows hosts get WinVerifyTrust's verdict instead.)
            out[-1].problem = _verify(signer, cert, certificates, indirect, roots,
                                      _dt.datetime.now(_dt.timezone.utc))
            out[-1].verified = out[-1].problem is None
        for attribute in signer["unsigned_attrs"] or []:
            if attribute["type"].dotted == NESTED_SIGNATURE:
                for value in attribute["values"]:
                    inner = cms.ContentInfo.load(value.dump())
                    out += _signatures(inner["content"], nested=True, roots=roots)
    return out


def _find_certificate(sid: Any, certificates: list[x509.Certificate]) -> x509.Certificate | None:
    sid = sid.chosen
    if not isinstance(sid, cms.IssuerAndSerialNumber):
        return None
    return next((c for c in certificates if c.serial_number == sid["serial_number"].native
                 and c.issuer == sid["issuer"]), None)


def _iso(moment: Any) -> str:
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _signer_identity(sid: Any, cert: x509.Certificate | None) -> dict[str, Any]:
    """Subject, issuer, thumbprint, serial and validity of a signer (from its certificate when
    the signature carries it, else what its identifier says)."""
    by_name = isinstance(sid, cms.IssuerAndSerialNumber)
    return {"subject": dotnet_name(cert.subject) if cert else "",
            "issuer": dotnet_name(cert.issuer) if cert else dotnet_name(sid["issuer"])
            if by_name else "",
            "thumbprint": hashlib.sha1(cert.dump()).hexdigest().upper() if cert else "",
            "serial": f"{sid['serial_number'].native:X}" if by_name else "",
            "not_before": _iso(cert.not_valid_before) if cert else None,
            "not_after": _iso(cert.not_valid_after) if cert else None}


def _timestamps(signer: cms.SignerInfo, certificates: list[x509.Certificate]) -> list[Signature]:
    """The countersignatures in ``signer``'s unsigned attributes, each with its time: the
    RFC 3161 token's genTime, or the legacy countersignature's signingTime. An unreadable one
    is skipped (the signature itself stands)."""
    out = []
    for attribute in signer["unsigned_attrs"] or []:
        kind = attribute["type"].dotted
        if kind not in (RFC3161_TIMESTAMP, COUNTER_SIGNATURE):
            continue
        for value in attribute["values"]:
            try:
                if kind == RFC3161_TIMESTAMP:
                    out += _rfc3161(cms.ContentInfo.load(value.dump()))
                else:
                    out += [_countersignature(counter, certificates)
                            for counter in (value if isinstance(value, cms.SignerInfos)
                                            else [value])]
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
    return out


def _rfc3161(token: cms.ContentInfo) -> list[Signature]:
    signed = token["content"]
    info = signed["encap_content_info"]["content"].parsed
    imprint = info["message_imprint"]
    certificates = [c.chosen for c in signed["certificates"]
                    if isinstance(c.chosen, x509.Certificate)]
    return [Signature(**_signer_identity(tsa["sid"].chosen,
                                         _find_certificate(tsa["sid"], certificates)),
                      digest_algorithm=tsa["digest_algorithm"]["algorithm"].native,
                      signed_digest=imprint["hashed_message"].native.hex().upper(),
                      timestamp=_iso(info["gen_time"].native))
            for tsa in signed["signer_infos"]]


def _countersignature(counter: cms.SignerInfo,
                      certificates: list[x509.Certificate]) -> Signature:
    attributes = {a["type"].native: a["values"][0].native for a in counter["signed_attrs"]}
    time = attributes.get("signing_time")
    digest = attributes.get("message_digest")
    return Signature(**_signer_identity(counter["sid"].chosen,
                                        _find_certificate(counter["sid"], certificates)),
                     digest_algorithm=counter["digest_algorithm"]["algorithm"].native,
                     signed_digest=digest.hex().upper() if isinstance(digest, bytes) else "",
                     timestamp=_iso(time) if time is not None else None)


def _verify(signer: cms.SignerInfo, cert: x509.Certificate | None,
            embedded: list[x509.Certificate], indirect: Any, roots: list[Any],
            at: _dt.datetime) -> str | None:
    """Why the signer's signature is not valid at ``at``, or None when it is."""
    from cryptography import x509 as cx509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    if cert is None:
        return "the signer's certificate is not in the signature"
    algorithm = signer["digest_algorithm"]["algorithm"].native
    attrs = signer["signed_attrs"]
    digest = next((a["values"][0].native for a in attrs or []
                   if a["type"].native == "message_digest"), None)
    # PKCS#7 (not CMS): the content is hashed without its own tag and length.
    if digest != hashlib.new(algorithm, indirect.contents).digest():
        return "the signed attributes do not match the signed content"
    signed = b"\x31" + attrs.dump()[1:]  # the attributes are signed as a SET OF
    chosen = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha384": hashes.SHA384(),
              "sha512": hashes.SHA512()}.get(algorithm)
    if chosen is None:
        return f"unsupported digest algorithm {algorithm}"
    leaf = cx509.load_der_x509_certificate(cert.dump())
    key = leaf.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signer["signature"].native, signed, padding.PKCS1v15(), chosen)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signer["signature"].native, signed, ec.ECDSA(chosen))
        else:
            return "unsupported key type"
    except InvalidSignature:
        return "the signature over the signed attributes is wrong"
    return _chain_problem(leaf, [cx509.load_der_x509_certificate(c.dump()) for c in embedded],
                          roots, at)


CODE_SIGNING = "1.3.6.1.5.5.7.3.3"
ANY_EXTENDED_KEY_USAGE = "2.5.29.37.0"


def _chain_problem(leaf: Any, embedded: list[Any], roots: list[Any],
                   at: _dt.datetime) -> str | None:
    """Why ``leaf`` does not chain to one of ``roots`` as a code-signing certificate valid at
    ``at``, or None. Issuers are found by name and
    proven by signature (a same-named impostor is skipped), must be CAs allowed to sign
    certificates, and every certificate must be valid at ``at``; the leaf must be meant for
    code signing when it says what it is meant for."""
    from cryptography import x509 as cx509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    try:
        usage = leaf.extensions.get_extension_for_class(cx509.ExtendedKeyUsage).value
        purposes = {p.dotted_string for p in usage}
        if not purposes & {CODE_SIGNING, ANY_EXTENDED_KEY_USAGE}:
            return "the signer's certificate is not for code signing"
    except cx509.ExtensionNotFound:
        pass
    trusted = {r.fingerprint(hashes.SHA256()) for r in roots}
    pool = embedded + list(roots)
    current = leaf
    for _ in range(8):  # walk up to a trusted root
        if not current.not_valid_before_utc <= at <= current.not_valid_after_utc:
            return f"{current.subject.rfc4514_string()} is not valid at {_iso(at)}"
        if current.fingerprint(hashes.SHA256()) in trusted:
            return None
        issuer = None
        for candidate in pool:
            if candidate.subject != current.issuer or candidate == current:
                continue
            try:
                current.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature):
                continue  # the same name, another key: not this certificate's issuer
            issuer = candidate
            break
        if issuer is None:
            return "the certificate chain does not reach a trusted root"
        if issuer.fingerprint(hashes.SHA256()) not in trusted and not _may_issue(issuer):
            return "a certificate in the chain is not a CA"
        current = issuer
    return "the certificate chain is too long"


def _may_issue(cert: Any) -> bool:
    """A CA certificate (basicConstraints CA) whose key may sign certificates."""
    from cryptography import x509 as cx509
    try:
        if not cert.extensions.get_extension_for_class(cx509.BasicConstraints).value.ca:
            return False
    except cx509.ExtensionNotFound:
        return False
    try:
        return bool(cert.extensions.get_extension_for_class(cx509.KeyUsage).value
                    .key_cert_sign)
    except cx509.ExtensionNotFound:
        return True


def load_roots(path: str) -> list[Any]:
    """Trusted root certificates from a PEM file (``--ca-file``)."""
    from cryptography import x509 as cx509
    with open(path, "rb") as f:
        return cx509.load_pem_x509_certificates(f.read())


def _certificate_table(data: bytes, table: int, size: int,
                       roots: list[Any] | None = None) -> list[Signature]:
    """WIN_CERTIFICATE entries (8-byte aligned): length u32, revision u16, type u16, PKCS#7."""
    out: list[Signature] = []
    offset, end = table, table + size
    while offset + 8 <= end:
        length = int.from_bytes(data[offset:offset + 4], "little")
        kind = int.from_bytes(data[offset + 6:offset + 8], "little")
        if length < 8 or offset + length > end:
            break
        if kind == 2:  # WIN_CERT_TYPE_PKCS_SIGNED_DATA
            try:
                info = cms.ContentInfo.load(data[offset + 8:offset + length])
                out += _signatures(info["content"], roots=roots)
            except (ValueError, TypeError, KeyError):
                pass  # an unreadable signature is no signature
        offset += (length + 7) & ~7
    return out


def inspect(data: bytes, roots: list[Any] | None = None) -> PEFacts:
    """Everything this module knows about the PE file ``data``; with ``roots`` (trusted CA
    certificates) the signatures are verified too."""
    try:
        pe = pefile.PE(data=data, fast_load=True)
        pe.parse_data_directories(directories=[
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"],
            pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_RESOURCE"]])
    except pefile.PEFormatError as exc:
        raise PEError(f"not a PE file: {exc}") from exc
    try:
        imphash = pe.get_imphash().upper()
    except pefile.PEFormatError:
        imphash = ""  # imports by an ordinal pefile cannot resolve
    ranges, (table, size) = _ranges_to_hash(pe, len(data))
    authenticode = _digest(data, ranges, "sha256")
    facts = PEFacts(md5=hashlib.md5(data).hexdigest().upper(),
                    sha1=hashlib.sha1(data).hexdigest().upper(),
                    sha256=hashlib.sha256(data).hexdigest().upper(),
                    imphash=imphash, authenticode_sha256=authenticode,
                    authenticode_digests={"sha256": authenticode}, **_version_info(pe))
    if size:
        facts.signatures = _certificate_table(data, table, size, roots)
        for algorithm in {s.digest_algorithm for s in facts.signatures}:
            if algorithm not in facts.authenticode_digests and \
                    algorithm in hashlib.algorithms_available:
                facts.authenticode_digests[algorithm] = _digest(data, ranges, algorithm)
    return facts


def inspect_file(path: str, roots: list[Any] | None = None) -> PEFacts:
    with open(path, "rb") as f:
        return inspect(f.read(), roots)
