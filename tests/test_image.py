"""Is the image still at its path: RecentLooks and image_facts on real files, with a clock the
test moves (a look answers for one file version, for its window only)."""

from __future__ import annotations

import os

from common.filehash import FileHasher, file_key
from sensor_linux.image import FileIdentity, RecentLooks, image_facts


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _identity(path: str) -> FileIdentity:
    st = os.stat(path)
    return FileIdentity(*file_key(st), st.st_nlink)


def test_a_look_answers_for_its_file_version_within_its_window_only(tmp_path) -> None:
    path = str(tmp_path / "tool")
    with open(path, "wb") as f:
        f.write(b"one")
    first = _identity(path)
    clock = Clock()
    looks = RecentLooks(seconds=1.0, clock=clock)
    assert looks.still_there(path.encode(), first) is True
    os.unlink(path)                      # gone: a new look would see it
    clock.now += 0.5
    assert looks.still_there(path.encode(), first) is True   # within the window: reused
    assert looks.reused == 1
    clock.now += 0.6
    assert looks.still_there(path.encode(), first) is False  # the window ended: looked again
    with open(path, "wb") as f:          # another file at the path: another version
        f.write(b"two")
    second = _identity(path)
    assert second.key != first.key
    assert looks.still_there(path.encode(), second) is True
    assert looks.still_there(path.encode(), first) is False  # the old version is gone
    assert looks.reused == 1


def test_looks_are_bounded_and_the_oldest_goes_first(tmp_path) -> None:
    paths = []
    for name in "abc":
        paths.append(str(tmp_path / name))
        with open(paths[-1], "wb") as f:
            f.write(name.encode())
    ids = [_identity(p) for p in paths]
    looks = RecentLooks(max_entries=2, clock=Clock())
    for path, ident in zip(paths, ids):
        assert looks.still_there(path.encode(), ident)
    os.unlink(paths[0])
    assert looks.still_there(paths[0].encode(), ids[0]) is False  # evicted: looked again
    assert looks.still_there(paths[2].encode(), ids[2]) is True and looks.reused == 1


def test_image_facts_on_disk_for_a_present_image_and_never_for_a_deleted_one(tmp_path) -> None:
    """A deleted image (link count 0) is not on disk whatever was seen; a present one is,
    on a first look and on one reused."""
    path = str(tmp_path / "tool")
    with open(path, "wb") as f:
        f.write(b"#!/bin/sh\n")
    ident = _identity(path)
    deleted = FileIdentity(*ident.key, nlink=0)
    hasher = FileHasher()
    looks = RecentLooks(clock=Clock())
    for how in (RecentLooks(clock=Clock()), looks, looks):
        present = image_facts(path.encode(), ident, hasher, how)
        assert present.on_disk is True and present.digests == hasher.digests(path)
        assert image_facts(path.encode(), deleted, hasher, how).on_disk is False
    assert looks.reused == 1
