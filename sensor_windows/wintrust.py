"""Windows' own verdict on a file's signature: WinVerifyTrust, embedded or through a catalog.

Most of System32 (cmd.exe, notepad.exe, whoami.exe) carries no signature of its own: Windows
signs it in a catalog (``%SystemRoot%\\System32\\CatRoot``), found by the file's hash. The
pure-Python verifier of pe.py reads only embedded signatures and, without trusted roots, cannot
say "valid"; on a live host this module asks Windows, as QLOG and Sysinternals do:

1. WinVerifyTrust(WINTRUST_ACTION_GENERIC_VERIFY_V2) on the file: an embedded signature.
2. Without one (TRUST_E_NOSIGNATURE), CryptCATAdminCalcHashFromFileHandle2 hashes the file
   (for a PE, its Authenticode SHA-256, the same digest pe.py computes), and
   CryptCATAdminEnumCatalogFromHash finds a catalog listing that hash; WinVerifyTrust then
   checks the file as a member of that catalog (the member tag is the hash in upper-case hex).

For a catalog-signed file ``AuthenticodeHash`` is therefore the file's Authenticode SHA-256,
the member tag the catalog lists it under. No network is used for revocation (cached URL
retrieval only): a sensor must not stall on a CRL server.

ctypes only (no pywin32). The calls go through an injectable ``api`` object so that the logic
(what is called with what, how answers become verdicts) runs on Linux against a stand-in;
``load_api()`` returns the real DLLs on Windows. Nothing here has run on a Windows host yet.
"""

from __future__ import annotations

import ctypes
import uuid
from dataclasses import dataclass
from typing import Any, Callable

WTD_UI_NONE = 2
WTD_REVOKE_NONE = 0
WTD_CHOICE_FILE = 1
WTD_CHOICE_CATALOG = 2
WTD_STATEACTION_VERIFY = 1
WTD_STATEACTION_CLOSE = 2
WTD_CACHE_ONLY_URL_RETRIEVAL = 0x1000
TRUST_E_NOSIGNATURE = 0x800B0100
ERROR_SUCCESS = 0
MAX_PATH = 260
# WINTRUST_ACTION_GENERIC_VERIFY_V2 {00AAC56B-CD44-11d0-8CC2-00C04FC295EE}
GENERIC_VERIFY_V2 = uuid.UUID("00AAC56B-CD44-11d0-8CC2-00C04FC295EE")

# Windows' types by their width (ctypes.wintypes makes DWORD a C long: 8 bytes on Linux, where
# the tests lay these structures out).
DWORD, WORD, BYTE = ctypes.c_uint32, ctypes.c_uint16, ctypes.c_ubyte
HANDLE, LPCWSTR = ctypes.c_void_p, ctypes.c_wchar_p


class GUID(ctypes.Structure):
    _fields_ = [("Data1", DWORD), ("Data2", WORD), ("Data3", WORD),
                ("Data4", BYTE * 8)]

    @classmethod
    def of(cls, value: uuid.UUID) -> "GUID":
        raw = value.bytes_le
        return cls.from_buffer_copy(raw)


class WINTRUST_FILE_INFO(ctypes.Structure):
    _fields_ = [("cbStruct", DWORD), ("pcwszFilePath", LPCWSTR), ("hFile", HANDLE),
                ("pgKnownSubject", ctypes.POINTER(GUID))]


class WINTRUST_CATALOG_INFO(ctypes.Structure):
    _fields_ = [("cbStruct", DWORD), ("dwCatalogVersion", DWORD),
                ("pcwszCatalogFilePath", LPCWSTR), ("pcwszMemberTag", LPCWSTR),
                ("pcwszMemberFilePath", LPCWSTR), ("hMemberFile", HANDLE),
                ("pbCalculatedFileHash", ctypes.POINTER(BYTE)),
                ("cbCalculatedFileHash", DWORD), ("pcCatalogContext", ctypes.c_void_p),
                ("hCatAdmin", HANDLE)]


class _CHOICE(ctypes.Union):
    _fields_ = [("pFile", ctypes.POINTER(WINTRUST_FILE_INFO)),
                ("pCatalog", ctypes.POINTER(WINTRUST_CATALOG_INFO))]


class WINTRUST_DATA(ctypes.Structure):
    _anonymous_ = ("choice",)
    _fields_ = [("cbStruct", DWORD), ("pPolicyCallbackData", ctypes.c_void_p),
                ("pSIPClientData", ctypes.c_void_p), ("dwUIChoice", DWORD),
                ("fdwRevocationChecks", DWORD), ("dwUnionChoice", DWORD),
                ("choice", _CHOICE), ("dwStateAction", DWORD),
                ("hWVTStateData", HANDLE), ("pwszURLReference", ctypes.c_wchar_p),
                ("dwProvFlags", DWORD), ("dwUIContext", DWORD),
                ("pSignatureSettings", ctypes.c_void_p)]


class CATALOG_INFO(ctypes.Structure):
    _fields_ = [("cbStruct", DWORD), ("wszCatalogFile", ctypes.c_wchar * MAX_PATH)]


@dataclass
class Verdict:
    """Windows' answer for one file: ``valid``, and where the signature is (``catalog``: the
    catalog file of a catalog-signed file, None for an embedded signature), or why not."""

    valid: bool
    catalog: str | None = None
    code: int = ERROR_SUCCESS          # WinVerifyTrust's HRESULT, as an unsigned number

    @property
    def signed(self) -> bool:
        return self.code != TRUST_E_NOSIGNATURE

    @property
    def status(self) -> str:
        """QLOG's ``Signed`` wording."""
        if self.valid:
            return "Signature valid"
        if not self.signed:
            return "Not signed"
        return f"Signature invalid: WinVerifyTrust 0x{self.code:08X}"


def load_api() -> Any:  # pragma: no cover - Windows only
    """wintrust.dll (WinVerifyTrust and the catalog admin calls) with their signatures."""
    api = ctypes.WinDLL("wintrust", use_last_error=True)  # type: ignore[attr-defined]
    api.WinVerifyTrust.restype = ctypes.c_long
    api.WinVerifyTrust.argtypes = [ctypes.c_void_p, ctypes.POINTER(GUID),
                                   ctypes.POINTER(WINTRUST_DATA)]
    api.CryptCATAdminAcquireContext2.argtypes = [ctypes.POINTER(HANDLE), ctypes.c_void_p,
                                                 LPCWSTR, ctypes.c_void_p, DWORD]
    api.CryptCATAdminCalcHashFromFileHandle2.argtypes = [
        HANDLE, HANDLE, ctypes.POINTER(DWORD), ctypes.POINTER(BYTE), DWORD]
    api.CryptCATAdminEnumCatalogFromHash.restype = HANDLE
    api.CryptCATAdminEnumCatalogFromHash.argtypes = [
        HANDLE, ctypes.POINTER(BYTE), DWORD, DWORD, ctypes.POINTER(HANDLE)]
    api.CryptCATCatalogInfoFromContext.argtypes = [HANDLE, ctypes.POINTER(CATALOG_INFO),
                                                   DWORD]
    api.CryptCATAdminReleaseCatalogContext.argtypes = [HANDLE, HANDLE, DWORD]
    api.CryptCATAdminReleaseContext.argtypes = [HANDLE, DWORD]
    return api


def file_handle(path: str) -> tuple[Any, Callable[[], None]]:  # pragma: no cover - Windows
    """A Win32 handle of ``path`` opened for reading, and how to close it."""
    import msvcrt
    f = open(path, "rb")
    return msvcrt.get_osfhandle(f.fileno()), f.close  # type: ignore[attr-defined]


class WinTrust:
    """Verdicts from WinVerifyTrust, embedded signature first, then the catalogs."""

    def __init__(self, api: Any = None,
                 open_file: Callable[[str], tuple[Any, Callable[[], None]]] | None = None
                 ) -> None:
        self.api = api if api is not None else load_api()
        self.open_file = open_file or file_handle

    def verdict(self, path: str) -> Verdict:
        embedded = self._verify(path, WTD_CHOICE_FILE, WINTRUST_FILE_INFO(
            ctypes.sizeof(WINTRUST_FILE_INFO), path, None, None))
        if embedded != TRUST_E_NOSIGNATURE:
            return Verdict(embedded == ERROR_SUCCESS, None, embedded)
        found = self._catalog(path)
        if found is None:
            return Verdict(False, None, TRUST_E_NOSIGNATURE)
        catalog, tag, digest, admin, release = found
        try:
            info = WINTRUST_CATALOG_INFO(
                ctypes.sizeof(WINTRUST_CATALOG_INFO), 0, catalog, tag, path, None,
                ctypes.cast(digest, ctypes.POINTER(BYTE)), len(digest), None, admin)
            code = self._verify(path, WTD_CHOICE_CATALOG, info)
        finally:
            release()
        return Verdict(code == ERROR_SUCCESS, catalog, code)

    def _verify(self, path: str, choice: int, info: Any) -> int:
        data = WINTRUST_DATA(cbStruct=ctypes.sizeof(WINTRUST_DATA), dwUIChoice=WTD_UI_NONE,
                             fdwRevocationChecks=WTD_REVOKE_NONE, dwUnionChoice=choice,
                             dwStateAction=WTD_STATEACTION_VERIFY,
                             dwProvFlags=WTD_CACHE_ONLY_URL_RETRIEVAL)
        if choice == WTD_CHOICE_FILE:
            data.pFile = ctypes.pointer(info)
        else:
            data.pCatalog = ctypes.pointer(info)
        action = GUID.of(GENERIC_VERIFY_V2)
        code = self.api.WinVerifyTrust(None, ctypes.byref(action), ctypes.byref(data))
        data.dwStateAction = WTD_STATEACTION_CLOSE     # free what the verification held
        self.api.WinVerifyTrust(None, ctypes.byref(action), ctypes.byref(data))
        return code & 0xFFFFFFFF

    def _catalog(self, path: str) -> tuple[str, str, Any, Any, Callable[[], None]] | None:
        """The catalog that lists the file's hash: (catalog path, member tag, hash buffer,
        the admin context, release); None when no catalog has it."""
        admin = HANDLE()
        if not self.api.CryptCATAdminAcquireContext2(ctypes.byref(admin), None, "SHA256",
                                                     None, 0):
            return None
        handle, close = self.open_file(path)
        try:
            size = DWORD(64)
            digest = (BYTE * 64)()
            if not self.api.CryptCATAdminCalcHashFromFileHandle2(admin, handle,
                                                                 ctypes.byref(size), digest, 0):
                self.api.CryptCATAdminReleaseContext(admin, 0)
                return None
        finally:
            close()
        digest = (BYTE * size.value).from_buffer_copy(bytes(digest)[:size.value])
        catalog = self.api.CryptCATAdminEnumCatalogFromHash(admin, digest, size.value, 0, None)
        if not catalog:
            self.api.CryptCATAdminReleaseContext(admin, 0)
            return None
        info = CATALOG_INFO(cbStruct=ctypes.sizeof(CATALOG_INFO))
        if not self.api.CryptCATCatalogInfoFromContext(catalog, ctypes.byref(info), 0):
            self.api.CryptCATAdminReleaseCatalogContext(admin, catalog, 0)
            self.api.CryptCATAdminReleaseContext(admin, 0)
            return None
        tag = bytes(digest).hex().upper()

        def release() -> None:
            self.api.CryptCATAdminReleaseCatalogContext(admin, catalog, 0)
            self.api.CryptCATAdminReleaseContext(admin, 0)
        return info.wszCatalogFile, tag, digest, admin, release
