"""PE facts against independent peers: pefile's own values, osslsigncode, Microsoft's shim."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess

import pefile
import pytest

from sensor_windows.pe import PEError, inspect, inspect_file
from tests.conftest import require, run_cli

import pip  # noqa: E402  (its vendored distlib ships real Windows launchers)

LAUNCHERS = sorted(glob.glob(os.path.join(os.path.dirname(pip.__file__), "_vendor", "distlib",
                                          "*.exe")))
SHIM = "/usr/lib/shim/shimx64.efi.signed"


def test_launchers_are_present() -> None:
    assert len(LAUNCHERS) >= 4, "pip ships distlib's Windows launchers"


@pytest.mark.parametrize("path", LAUNCHERS, ids=[os.path.basename(p) for p in LAUNCHERS])
def test_imphash_version_and_digests_equal_pefiles_own_values(path: str) -> None:
    facts = inspect_file(path)
    independent = pefile.PE(path)
    assert facts.imphash == independent.get_imphash().upper()
    original = None
    for info in getattr(independent, "FileInfo", []) or []:
        for entry in info:
            for table in getattr(entry, "StringTable", []) or []:
                original = original or table.entries.get(b"OriginalFilename")
    assert facts.original_file_name == (original.decode() if original else None)
    data = open(path, "rb").read()
    assert facts.sha256 == hashlib.sha256(data).hexdigest().upper()
    assert facts.md5 == hashlib.md5(data).hexdigest().upper()
    assert not facts.signed and facts.digest_matches is None


def _fresh(path):
    path.mkdir()
    return path


def _throwaway_ca_and_signer(tmp) -> tuple[str, str, str]:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    (tmp / "ca.ext").write_text("basicConstraints=critical,CA:TRUE\n"
                                "keyUsage=critical,keyCertSign,cRLSign\n")
    (tmp / "cs.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                                "extendedKeyUsage=codeSigning\n")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=ttpsensor test CA", "-keyout", str(tmp / "ca.key"), "-out", str(tmp / "ca.crt"),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj",
            "/O=ttpsensor/CN=ttpsensor test signer", "-keyout", str(tmp / "cs.key"),
            "-out", str(tmp / "cs.csr"))
    openssl("x509", "-req", "-in", str(tmp / "cs.csr"), "-CA", str(tmp / "ca.crt"), "-CAkey",
            str(tmp / "ca.key"), "-CAcreateserial", "-days", "2", "-extfile",
            str(tmp / "cs.ext"), "-out", str(tmp / "cs.crt"))
    return str(tmp / "ca.crt"), str(tmp / "cs.crt"), str(tmp / "cs.key")


def test_authenticode_against_osslsigncode(tmp_path) -> None:
    require(shutil.which("osslsigncode") is not None, "osslsigncode is needed")
    launcher = next(p for p in LAUNCHERS if os.path.basename(p) == "t64.exe")
    ca, cert, key = _throwaway_ca_and_signer(tmp_path)
    signed = tmp_path / "signed.exe"
    subprocess.run(["osslsigncode", "sign", "-certs", cert, "-ac", ca, "-key", key, "-h",
                    "sha256", "-n", "ttpsensor test", "-in", launcher, "-out", str(signed)],
                   check=True, capture_output=True)
    verify = subprocess.run(["osslsigncode", "verify", "-CAfile", ca, "-in", str(signed)],
                            capture_output=True, text=True)
    assert "Signature verification: ok" in verify.stdout
    calculated = re.search(r"Calculated message digest\s*:\s*([0-9A-Fa-f]+)", verify.stdout)
    facts = inspect_file(str(signed))
    assert facts.signed and facts.digest_matches is True
    assert facts.status == "Signed, not verified"
    from sensor_windows.pe import load_roots
    assert inspect_file(str(signed), load_roots(ca)).status == "Signature valid"
    other_ca, _, _ = _throwaway_ca_and_signer(_fresh(tmp_path / "other"))
    # Another CA, even one of the same name, does not make it valid.
    untrusted = inspect_file(str(signed), load_roots(other_ca))
    assert untrusted.status.startswith("Signature invalid")
    assert facts.authenticode_sha256 == calculated.group(1).upper()
    # Signing does not change the Authenticode digest of the unsigned file.
    assert facts.authenticode_sha256 == inspect_file(launcher).authenticode_sha256
    [signature] = facts.signatures
    assert signature.subject == "CN=ttpsensor test signer, O=ttpsensor"
    assert signature.issuer == "CN=ttpsensor test CA"
    signer_der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"],
                                capture_output=True, check=True).stdout
    assert signature.thumbprint == hashlib.sha1(signer_der).hexdigest().upper()
    # One flipped byte in the code: the digest no longer matches what was signed.
    data = bytearray(signed.read_bytes())
    pe = pefile.PE(data=bytes(data))
    code = pe.sections[0].PointerToRawData + 16
    data[code] ^= 0xFF
    tampered = inspect(bytes(data), load_roots(ca))
    assert tampered.signed and tampered.digest_matches is False
    assert tampered.status == "Invalid digest"
    assert inspect_file(launcher).status == "Not signed"


def test_microsoft_signed_efi_binary_from_shim_signed() -> None:
    require(os.path.exists(SHIM), "shim-signed is needed (apt-get install shim-signed)")
    facts = inspect_file(SHIM)
    assert facts.signed and facts.digest_matches is True
    assert all("O=Microsoft Corporation" in s.subject for s in facts.signatures)
    assert any("Microsoft Corporation UEFI CA 2011" in s.issuer for s in facts.signatures)


def test_pe_command(tmp_path) -> None:
    launcher = LAUNCHERS[0]
    not_pe = tmp_path / "x.exe"
    not_pe.write_bytes(b"MZ but not really")
    result = run_cli("pe", "--json", launcher, str(not_pe))
    assert result.returncode == 1 and "not a PE file" in result.stderr
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["path"] == launcher and row["signed"] is False
    with pytest.raises(PEError):
        inspect(b"garbage")


def test_a_pe_compiled_with_chosen_imports_and_version_resource(tmp_path) -> None:
    """mingw-w64 builds a PE whose imports and version strings the test chose; we read back
    exactly those, and the imphash pefile computes independently."""
    gcc, windres = "x86_64-w64-mingw32-gcc", "x86_64-w64-mingw32-windres"
    require(shutil.which(gcc) is not None and shutil.which(windres) is not None,
            "mingw-w64 is needed (apt-get install gcc-mingw-w64-x86-64)")
    (tmp_path / "probe.c").write_text(
        "#include <windows.h>\n"
        "int main(void) {\n"
        "  MessageBoxA(NULL, \"ttpsensor\", \"probe\", MB_OK);\n"
        "  return (int)GetTickCount() + (int)GetCurrentProcessId();\n"
        "}\n")
    (tmp_path / "probe.rc").write_text(
        "1 VERSIONINFO\n FILEVERSION 4,3,2,1\n PRODUCTVERSION 4,3,2,1\nBEGIN\n"
        " BLOCK \"StringFileInfo\"\n BEGIN\n  BLOCK \"040904b0\"\n  BEGIN\n"
        "   VALUE \"CompanyName\", \"TTP Sensor Test Corp\"\n"
        "   VALUE \"ProductName\", \"Probe Product\"\n"
        "   VALUE \"FileVersion\", \"4.3.2.1\"\n"
        "   VALUE \"OriginalFilename\", \"PROBE-ORIGINAL.EXE\"\n"
        "  END\n END\n BLOCK \"VarFileInfo\"\n BEGIN\n  VALUE \"Translation\", 0x409, 1200\n"
        " END\nEND\n")
    subprocess.run([windres, str(tmp_path / "probe.rc"), "-O", "coff", "-o",
                    str(tmp_path / "probe.res")], check=True, capture_output=True)
    subprocess.run([gcc, "-O1", "-o", str(tmp_path / "probe.exe"), str(tmp_path / "probe.c"),
                    str(tmp_path / "probe.res"), "-luser32"], check=True, capture_output=True)
    facts = inspect_file(str(tmp_path / "probe.exe"))
    assert facts.original_file_name == "PROBE-ORIGINAL.EXE"
    assert facts.company == "TTP Sensor Test Corp" and facts.product == "Probe Product"
    assert facts.file_version == "4.3.2.1"
    independent = pefile.PE(str(tmp_path / "probe.exe"))
    assert facts.imphash == independent.get_imphash().upper() != ""
    imported = {(entry.dll.decode().lower(), imp.name.decode())
                for entry in independent.DIRECTORY_ENTRY_IMPORT for imp in entry.imports
                if imp.name}
    assert ("user32.dll", "MessageBoxA") in imported
    assert ("kernel32.dll", "GetTickCount") in imported


class _TimestampAuthority:
    """A local RFC 3161 responder: HTTP POSTs of timestamp queries answered by ``openssl ts
    -reply`` with a TSA certificate of the test's CA (timeStamping, critical)."""

    def __init__(self, tmp, ca: str, ca_key: str) -> None:
        import http.server
        import threading

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj",
                "/O=ttpsensor/CN=ttpsensor test TSA",
                "-keyout", str(tmp / "tsa.key"), "-out", str(tmp / "tsa.csr"))
        (tmp / "tsa.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                                     "extendedKeyUsage=critical,timeStamping\n")
        openssl("x509", "-req", "-in", str(tmp / "tsa.csr"), "-CA", ca, "-CAkey", ca_key,
                "-CAcreateserial", "-days", "2", "-extfile", str(tmp / "tsa.ext"),
                "-out", str(tmp / "tsa.crt"))
        (tmp / "tsa.cnf").write_text(f"""[ tsa ]
default_tsa = here
[ here ]
serial = {tmp}/tsa.serial
crypto_device = builtin
signer_cert = {tmp}/tsa.crt
certs = {ca}
signer_key = {tmp}/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha1, sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
""")
        self.requests = 0
        authority = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                query = tmp / "query.tsq"
                query.write_bytes(self.rfile.read(int(self.headers["Content-Length"])))
                reply = tmp / "reply.tsr"
                subprocess.run(["openssl", "ts", "-reply", "-config", str(tmp / "tsa.cnf"),
                                "-queryfile", str(query), "-out", str(reply)],
                               check=True, capture_output=True)
                body = reply.read_bytes()
                authority.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_signing_time_from_an_rfc3161_timestamp_of_a_local_authority(tmp_path) -> None:
    import datetime as dt
    require(shutil.which("osslsigncode") is not None, "osslsigncode is needed")
    launcher = next(p for p in LAUNCHERS if os.path.basename(p) == "t64.exe")
    ca, cert, key = _throwaway_ca_and_signer(tmp_path)
    authority = _TimestampAuthority(tmp_path, ca, str(tmp_path / "ca.key"))
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    signed = tmp_path / "timestamped.exe"
    try:
        subprocess.run(["osslsigncode", "sign", "-certs", cert, "-key", key, "-h", "sha256",
                        "-ts", authority.url, "-in", launcher, "-out", str(signed)],
                       check=True, capture_output=True)
    finally:
        authority.close()
    after = dt.datetime.now(dt.timezone.utc)
    assert authority.requests == 1
    result = run_cli("pe", "--json", str(signed))
    assert result.returncode == 0, result.stderr
    [signature] = json.loads(result.stdout)["signatures"]
    signed_at = dt.datetime.fromisoformat(signature["timestamp"].replace("Z", "+00:00"))
    assert before <= signed_at <= after
    [stamp] = signature["timestamp_signatures"]
    assert stamp["subject"] == "CN=ttpsensor test TSA, O=ttpsensor"
    assert stamp["issuer"] == "CN=ttpsensor test CA"
    assert stamp["timestamp"] == signature["timestamp"]
    tsa_der = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "tsa.crt"), "-outform",
                              "DER"], capture_output=True, check=True).stdout
    assert stamp["thumbprint"] == hashlib.sha1(tsa_der).hexdigest().upper()
    # The peer: osslsigncode reads the same time out of the same signature.
    verify = subprocess.run(["osslsigncode", "verify", "-CAfile", ca, "-TSA-CAfile", ca,
                             "-in", str(signed)], capture_output=True, text=True)
    theirs = re.search(r"Timestamp time:\s*(.+)", verify.stdout)
    assert theirs is not None, verify.stdout
    assert dt.datetime.strptime(theirs.group(1).strip(), "%b %d %H:%M:%S %Y %Z").replace(
        tzinfo=dt.timezone.utc) == signed_at
    # The signer certificate's validity, as openssl reads it.
    not_after = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-enddate"],
                               capture_output=True, text=True, check=True).stdout
    assert dt.datetime.strptime(not_after.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z") \
        .strftime("%Y-%m-%dT%H:%M:%SZ") == signature["not_after"]
    # Valid (as of now: the countersignature itself is not verified, so its time is not
    # trusted to judge the certificate's validity).
    from sensor_windows.pe import load_roots
    assert inspect_file(str(signed), load_roots(ca)).status == "Signature valid"
    # Through the Windows enrichment into QLOG's form: the Signatures entry as QLOG has it.
    replay = tmp_path / "replay.jsonl"
    replay.write_text("\n".join(json.dumps(line) for line in [
        {"devices": {"\\Device\\HarddiskVolume3": "C:"}},
        {"file": {"path": "C:\\t\\timestamped.exe", "local": str(signed)}},
        {"etw": ["1", {"EventHeader": {"ProcessId": "4", "TimeStamp": "132853256180867746",
                                       "EventDescriptor": {"Id": 1, "Version": 0}},
                       "ProcessID": "8", "ParentProcessID": "4",
                       "ImageName": "\\Device\\HarddiskVolume3\\t\\timestamped.exe"}]},
    ]) + "\n")
    rendered = run_cli("windows", "replay", "--format", "qlog", str(replay))
    assert rendered.returncode == 0, rendered.stderr
    [qlog_signature] = json.loads(rendered.stdout)["Signatures"]
    assert list(qlog_signature) == ["Subject", "Issuer", "NotBefore", "NotAfter",
                                    "DigestAlgorithmName", "Thumbprint", "TimestampSignatures"]
    assert qlog_signature["DigestAlgorithmName"] == "SHA256"
    [qlog_stamp] = qlog_signature["TimestampSignatures"]
    assert qlog_stamp["Subject"] == "CN=ttpsensor test TSA, O=ttpsensor"
    assert qlog_stamp["Timestamp"] == signature["timestamp"]


def test_signing_time_of_the_microsoft_signed_shim() -> None:
    require(os.path.exists(SHIM), "shim-signed is needed (apt-get install shim-signed)")
    result = run_cli("pe", "--json", SHIM)
    assert result.returncode == 0, result.stderr
    for signature in json.loads(result.stdout)["signatures"]:
        [stamp] = signature["timestamp_signatures"]
        assert stamp["subject"].startswith("CN=Microsoft Time-Stamp Service,")
        assert stamp["issuer"].startswith("CN=Microsoft Time-Stamp PCA 2010,")
        assert signature["timestamp"] == stamp["timestamp"]
        signed_at, valid_from, valid_to = (signature[k] for k in ("timestamp", "not_before",
                                                                   "not_after"))
        assert valid_from <= signed_at <= valid_to     # ISO 8601 UTC text sorts as time


def test_a_pe_with_fewer_data_directories_than_the_security_one() -> None:
    launcher = next(p for p in LAUNCHERS if os.path.basename(p) == "t64.exe")
    data = bytearray(open(launcher, "rb").read())
    header = pefile.PE(data=bytes(data)).OPTIONAL_HEADER.get_file_offset()
    data[header + 108:header + 112] = (4).to_bytes(4, "little")  # PE32+ NumberOfRvaAndSizes
    facts = inspect(bytes(data))      # it raised IndexError
    assert not facts.signed and facts.status == "Not signed"
    checksum = header + 64
    assert facts.authenticode_sha256 == hashlib.sha256(
        bytes(data[:checksum]) + bytes(data[checksum + 4:])).hexdigest().upper()


def _pki(tmp, *, leaf_eku: str | None = "codeSigning", leaf_days: tuple[int, int] = (-1, 2),
         middle_is_ca: bool = True, impostor: bool = False):
    """root -> middle -> leaf, built with cryptography (any dates and extensions), written as
    PEM: (root, chain file for osslsigncode's -ac, leaf, leaf key)."""
    import datetime as dt

    from cryptography import x509 as cx509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    now = dt.datetime.now(dt.timezone.utc)

    def name(text: str) -> cx509.Name:
        return cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, text)])

    def make(subject: str, key, issuer: str, issuer_key, ca: bool, days=(-1, 30), eku=None):
        builder = (cx509.CertificateBuilder().subject_name(name(subject))
                   .issuer_name(name(issuer)).public_key(key.public_key())
                   .serial_number(cx509.random_serial_number())
                   .not_valid_before(now + dt.timedelta(days=days[0]))
                   .not_valid_after(now + dt.timedelta(days=days[1]))
                   .add_extension(cx509.BasicConstraints(ca=ca, path_length=None), True))
        if eku is not None:
            builder = builder.add_extension(cx509.ExtendedKeyUsage(
                [getattr(ExtendedKeyUsageOID, {"codeSigning": "CODE_SIGNING",
                                               "serverAuth": "SERVER_AUTH"}[eku])]), False)
        return builder.sign(issuer_key, hashes.SHA256())

    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("root", "middle", "leaf",
                                                                "impostor")}
    root = make("test root", keys["root"], "test root", keys["root"], True)
    middle = make("test middle", keys["middle"], "test root", keys["root"], middle_is_ca)
    leaf = make("test signer", keys["leaf"], "test middle", keys["middle"], False,
                leaf_days, leaf_eku)
    chain = [middle]
    if impostor:   # another certificate named like the middle, listed first
        chain.insert(0, make("test middle", keys["impostor"], "test root", keys["root"], True))

    def pem(path, *certs) -> str:
        path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
        return str(path)
    key_path = tmp / "leaf.key"
    key_path.write_bytes(keys["leaf"].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return (pem(tmp / "root.pem", root), pem(tmp / "chain.pem", *chain),
            pem(tmp / "leaf.pem", leaf), str(key_path))


@pytest.mark.parametrize("case, expected", [
    ({}, "Signature valid"),
    ({"leaf_eku": None}, "Signature valid"),                  # says nothing of its purpose
    ({"impostor": True}, "Signature valid"),                  # the issuer proven by signature
    ({"leaf_eku": "serverAuth"}, "Signature invalid: the signer's certificate is not for "
                                 "code signing"),
    ({"middle_is_ca": False}, "Signature invalid: a certificate in the chain is not a CA"),
    ({"leaf_days": (-10, -1)}, "Signature invalid: CN=test signer is not valid at"),
])
def test_chain_rules_of_the_pure_python_verifier(tmp_path, case, expected) -> None:
    require(shutil.which("osslsigncode") is not None, "osslsigncode is needed")
    from sensor_windows.pe import load_roots
    root, chain, leaf, key = _pki(tmp_path, **case)
    launcher = next(p for p in LAUNCHERS if os.path.basename(p) == "t64.exe")
    signed = tmp_path / "signed.exe"
    subprocess.run(["osslsigncode", "sign", "-certs", leaf, "-ac", chain, "-key", key, "-h",
                    "sha256", "-in", launcher, "-out", str(signed)], check=True,
                   capture_output=True)
    status = inspect_file(str(signed), load_roots(root)).status
    assert status.startswith(expected), status
