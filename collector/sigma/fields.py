"""The Sigma process-creation taxonomy over our event schema (docs/schema.md).

Each Sigma field is a function of an event giving the value a rule compares (text, a number,
or None when the event has no such value). Text that was not UTF-8 is compared in percent
form, as it is shown. Fields not listed here are reported when a rule that uses them loads.
"""

from __future__ import annotations

from typing import Any, Callable

from collector.store import display_text

Value = Any
FieldFunction = Callable[[dict[str, Any]], Value]


def _text(value: Any) -> Any:
    """Text as the console shows it (percent form, arguments joined); numbers as they are."""
    return display_text(value) if isinstance(value, (bytes, str, list)) else value


def _get(event: dict[str, Any], *path: str) -> Any:
    value: Any = event
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return _text(value)


def _command_line(process: tuple[str, ...]) -> FieldFunction:
    """The command line. On Linux, where the kernel gives an argument vector, the arguments
    joined by single spaces, as Sysmon for Linux reports it and Linux rules are written (our
    own ``command_line`` quotes them for reading); on Windows the command line itself."""
    def value(event: dict[str, Any]) -> Any:
        args = _get(event, *process, "args")
        return args if args is not None else _get(event, *process, "command_line")
    return value


def _user(process: tuple[str, ...]) -> FieldFunction:
    """DOMAIN\\user on Windows (as Sysmon writes it), the name on Linux."""
    def value(event: dict[str, Any]) -> Any:
        name = _get(event, *process, "user", "name")
        domain = _get(event, *process, "user", "domain")
        return f"{domain}\\{name}" if domain and name else name
    return value


def _hashes(event: dict[str, Any]) -> Any:
    """Sysmon's Hashes: "SHA1=…,MD5=…,SHA256=…,IMPHASH=…" (upper-case hex)."""
    parts = []
    for name, path in (("SHA1", ("hash", "sha1")), ("MD5", ("hash", "md5")),
                       ("SHA256", ("hash", "sha256")), ("IMPHASH", ("pe", "imphash"))):
        value = _get(event, "process", *path)
        if value:
            parts.append(f"{name}={str(value).upper()}")
    return ",".join(parts) or None


def _path(*path: str) -> FieldFunction:
    return lambda event: _get(event, *path)


P, PARENT = ("process",), ("process", "parent")
FIELDS: dict[str, FieldFunction] = {
    "Image": _path("process", "executable"),
    "OriginalFileName": _path("process", "pe", "original_file_name"),
    "CommandLine": _command_line(P),
    "CurrentDirectory": _path("process", "working_directory"),
    "User": _user(P),
    "IntegrityLevel": _path("process", "integrity_level"),
    "Hashes": _hashes,
    "ProcessId": _path("process", "pid"),
    "Product": _path("process", "pe", "product"),
    "Company": _path("process", "pe", "company"),
    "Description": _path("process", "pe", "description"),
    "FileVersion": _path("process", "pe", "file_version"),
    "ParentImage": _path("process", "parent", "executable"),
    "ParentCommandLine": _command_line(PARENT),
    "ParentProcessId": _path("process", "parent", "pid"),
    "ParentUser": _user(PARENT),
}
