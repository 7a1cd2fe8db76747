"""`pki init` writes keys only where nobody else can read or redirect them, and never twice."""

from __future__ import annotations

import os
import stat

import pytest

from common import pki
from tests.conftest import require, run_cli


def test_keys_are_new_files_0600_and_a_second_init_is_refused(tmp_path) -> None:
    directory = tmp_path / "pki"
    issued = pki.init(str(directory), ["sensor-a"])
    for files in issued.values():
        assert stat.S_IMODE(os.stat(files.key).st_mode) == 0o600
    ca_before = (directory / "ca.key").read_bytes()
    done = run_cli("pki", "init", str(directory))
    assert done.returncode == 1 and "holds a CA already" in done.stderr
    assert "Traceback" not in done.stderr
    assert (directory / "ca.key").read_bytes() == ca_before


def test_a_planted_file_or_link_is_never_written_through(tmp_path) -> None:
    directory = tmp_path / "pki"
    directory.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (directory / "collector.key").symlink_to(victim)
    with pytest.raises(pki.PkiError, match="collector.key exists already"):
        pki.init(str(directory), ["sensor-a"])
    assert victim.read_text() == "precious"
    planted = tmp_path / "pki2"
    planted.mkdir(mode=0o700)
    (planted / "sensor-a.key").write_text("")           # someone's file, opened already
    (planted / "sensor-a.key").chmod(0o644)
    with pytest.raises(pki.PkiError, match="sensor-a.key exists already"):
        pki.init(str(planted), ["sensor-a"])
    assert (planted / "sensor-a.key").read_text() == ""


def test_a_directory_of_another_user_or_open_to_others_is_refused(tmp_path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    done = run_cli("pki", "init", str(shared))
    assert done.returncode == 1 and "writable by group or others" in done.stderr
    assert not list(shared.iterdir())
    require(os.geteuid() == 0, "root is needed to give a directory to another user")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(pki.PkiError, match="belongs to uid 65534"):
        pki.init(str(theirs), ["sensor-a"])
    assert not list(theirs.iterdir())
