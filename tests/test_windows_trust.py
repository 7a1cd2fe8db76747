"""Windows' signature verdict (sensor_windows/wintrust.py) against a stand-in wintrust.dll that
answers as Windows does: embedded signatures first, then a catalog found by the file's hash."""

from __future__ import annotations

import ctypes
import json
import shutil
import threading

from sensor_windows import wintrust
from sensor_windows.pe import inspect_file
from tests.test_pe import LAUNCHERS

CATALOG = "C:\\Windows\\System32\\CatRoot\\{F750E6C3-38EE-11D1-85E5-00C04FC295EE}\\x.cat"
CERT_E_UNTRUSTEDROOT = 0x800B0109


class StandInWinTrust:
    """wintrust.dll's calls. ``embedded``: path -> WinVerifyTrust's answer for the file
    itself; ``catalogs``: Authenticode SHA-256 (hex) -> (catalog path, its verdict)."""

    def __init__(self, embedded: dict[str, int], catalogs: dict[str, tuple[str, int]],
                 digests: dict[str, str]) -> None:
        self.embedded, self.catalogs, self.digests = embedded, catalogs, digests
        self.calls: list[tuple] = []
        self.open_contexts = 0

    def WinVerifyTrust(self, _hwnd, action, data) -> int:
        action, data = action._obj, data._obj
        assert bytes(action) == wintrust.GENERIC_VERIFY_V2.bytes_le
        assert data.cbStruct == ctypes.sizeof(wintrust.WINTRUST_DATA)
        assert data.dwUIChoice == wintrust.WTD_UI_NONE
        assert data.dwProvFlags & wintrust.WTD_CACHE_ONLY_URL_RETRIEVAL  # no network
        self.calls.append(("verify", data.dwUnionChoice, data.dwStateAction))
        if data.dwStateAction == wintrust.WTD_STATEACTION_CLOSE:
            return 0
        if data.dwUnionChoice == wintrust.WTD_CHOICE_FILE:
            info = data.pFile.contents
            assert info.cbStruct == ctypes.sizeof(wintrust.WINTRUST_FILE_INFO)
            return self.embedded.get(info.pcwszFilePath, wintrust.TRUST_E_NOSIGNATURE)
        info = data.pCatalog.contents
        assert info.cbStruct == ctypes.sizeof(wintrust.WINTRUST_CATALOG_INFO)
        digest = bytes(ctypes.cast(info.pbCalculatedFileHash,
                                   ctypes.POINTER(ctypes.c_ubyte * info.cbCalculatedFileHash)
                                   ).contents).hex().upper()
        assert info.pcwszMemberTag == digest        # the member tag is the hash in hex
        assert info.hCatAdmin
        path, verdict = self.catalogs[digest]
        assert info.pcwszCatalogFilePath == path
        self.calls.append(("member", info.pcwszMemberFilePath))
        return verdict

    def CryptCATAdminAcquireContext2(self, admin, _subsystem, algorithm, _policy, _flags) -> int:
        assert algorithm == "SHA256"
        admin._obj.value = 77
        self.open_contexts += 1
        return 1

    def CryptCATAdminCalcHashFromFileHandle2(self, admin, handle, size, buffer, _flags) -> int:
        digest = bytes.fromhex(self.digests[handle])
        assert size._obj.value >= len(digest)
        ctypes.memmove(buffer, digest, len(digest))
        size._obj.value = len(digest)
        return 1

    def CryptCATAdminEnumCatalogFromHash(self, admin, digest, size, _flags, _previous) -> int:
        found = bytes(digest)[:size].hex().upper() in self.catalogs
        if found:
            self.open_contexts += 1
        return 5 if found else 0

    def CryptCATCatalogInfoFromContext(self, catalog, info, _flags) -> int:
        assert info._obj.cbStruct == ctypes.sizeof(wintrust.CATALOG_INFO)
        info._obj.wszCatalogFile = next(iter(self.catalogs.values()))[0]
        return 1

    def CryptCATAdminReleaseCatalogContext(self, _admin, _catalog, _flags) -> int:
        self.open_contexts -= 1
        return 1

    def CryptCATAdminReleaseContext(self, _admin, _flags) -> int:
        self.open_contexts -= 1
        return 1


def _trust(api: StandInWinTrust) -> wintrust.WinTrust:
    return wintrust.WinTrust(api, open_file=lambda path: (path, lambda: None))


def test_structures_have_their_x64_sizes() -> None:
    if ctypes.sizeof(ctypes.c_void_p) == 8:
        assert ctypes.sizeof(wintrust.WINTRUST_DATA) == 88
        assert ctypes.sizeof(wintrust.WINTRUST_FILE_INFO) == 32
        assert ctypes.sizeof(wintrust.WINTRUST_CATALOG_INFO) == 72
    wchar = ctypes.sizeof(ctypes.c_wchar)       # 2 on Windows, 4 on Linux
    assert ctypes.sizeof(wintrust.CATALOG_INFO) == 4 + wchar * wintrust.MAX_PATH


def test_embedded_signature_verdicts() -> None:
    api = StandInWinTrust({"C:\\a.exe": 0, "C:\\b.exe": CERT_E_UNTRUSTEDROOT}, {}, {})
    valid = _trust(api).verdict("C:\\a.exe")
    assert valid.valid and valid.catalog is None and valid.status == "Signature valid"
    invalid = _trust(api).verdict("C:\\b.exe")
    assert not invalid.valid and invalid.signed
    assert invalid.status == "Signature invalid: WinVerifyTrust 0x800B0109"
    # Every verification's state is closed again.
    verifies = [c for c in api.calls if c[0] == "verify"]
    assert [c[2] for c in verifies] == [1, 2, 1, 2]


def test_a_catalog_signed_file_is_found_by_its_authenticode_hash() -> None:
    digest = "AB" * 32
    api = StandInWinTrust({}, {digest: (CATALOG, 0)}, {"C:\\Windows\\System32\\cmd.exe": digest})
    verdict = _trust(api).verdict("C:\\Windows\\System32\\cmd.exe")
    assert verdict.valid and verdict.catalog == CATALOG and verdict.status == "Signature valid"
    assert ("member", "C:\\Windows\\System32\\cmd.exe") in api.calls
    assert api.open_contexts == 0          # admin and catalog contexts released


def test_neither_embedded_nor_in_a_catalog_is_not_signed() -> None:
    api = StandInWinTrust({}, {"CD" * 32: (CATALOG, 0)}, {"C:\\x.exe": "EF" * 32})
    verdict = _trust(api).verdict("C:\\x.exe")
    assert not verdict.valid and not verdict.signed and verdict.status == "Not signed"
    assert api.open_contexts == 0


def test_the_enricher_reports_windows_verdict_and_the_catalog(tmp_path) -> None:
    from common.render import line_renderer
    from common.sinks import TextOutput
    from sensor_windows.replay import ReplayWorld
    from sensor_windows.runner import WindowsWorld, run_sensor
    from tests.test_windows_session import ListSink, _start, fake_pywintrace
    shutil.copy(next(p for p in LAUNCHERS if p.endswith("t64.exe")), tmp_path / "cmd.exe")
    world = ReplayWorld(str(tmp_path))
    world.files = {"C:\\WINDOWS\\SYSTEM32\\CMD.EXE": "cmd.exe"}
    authenticode = inspect_file(str(tmp_path / "cmd.exe")).authenticode_sha256
    api = StandInWinTrust({}, {authenticode: (CATALOG, 0)},
                          {"C:\\Windows\\System32\\cmd.exe": authenticode})
    sink, stop = ListSink(), threading.Event()
    etw = fake_pywintrace([_start(9, 4, "\\Device\\HarddiskVolume2\\Windows\\System32\\cmd.exe")])
    worker = threading.Thread(target=run_sensor, args=(
        stop, TextOutput(sink, line_renderer("qlog")),
        {"name": "testpc", "os": {"type": "windows"}}),
        kwargs={"world": WindowsWorld(world, world, lambda: {"\\Device\\HarddiskVolume2": "C:"},
                                      _trust(api).verdict), "etw_module": etw})
    worker.start()
    assert etw.delivered.wait(10)
    stop.set()
    worker.join(30)
    [line] = sink.lines
    doc = json.loads(line)
    # An unsigned PE on disk that Windows vouches for through a catalog: signed, valid, and
    # its AuthenticodeHash the digest the catalog lists.
    assert doc["Signed"] == "Signature valid" and doc["AuthenticodeHash"] == authenticode
    assert doc["Signatures"] == []
