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


def _enricher(clock: Clock, hasher: FileHasher | None = None):  # noqa: ANN202
    from sensor_linux.enrich import Enricher
    return Enricher(looks=RecentLooks(seconds=1.0, clock=clock), live=False,
                    hasher=hasher if hasher is not None else FileHasher())


def _facts(path: str, ident: FileIdentity, pid: int, uid: int = 0,
           gid: int = 0):  # noqa: ANN202
    from sensor_linux.procfs import ProcessFacts
    return ProcessFacts(pid=pid, executable=path, args=[path, str(pid)], cwd="/",
                        start_time=1_700_000_000.0 + pid, uids=(uid, uid, uid, uid),
                        gids=(gid, gid, gid, gid), login_uid=1000, session=3,
                        image_identity=ident, exe_deleted=ident.nlink == 0)


def _built_anew(enricher, facts) -> dict:  # noqa: ANN001
    """The process map as it is built without the kept part (what the kept one must equal)."""
    from sensor_linux.enrich import Enricher
    fresh = Enricher(looks=RecentLooks(seconds=1.0, clock=enricher.looks.now), live=False,
                     hasher=enricher.hasher, packages=enricher.packages,
                     users=enricher.users, host=enricher.host)
    return fresh.process_map(facts)


def test_the_id_and_image_part_of_an_exec_is_kept_while_its_look_answers(tmp_path) -> None:
    """An exec of a known file version by the same ids reuses the part of the process map
    that does not change (names, image, package), and only while the look at the file
    answers: equal to what building it anew gives, each time."""
    path = str(tmp_path / "tool")
    with open(path, "wb") as f:
        f.write(b"one")
    first = _identity(path)
    clock = Clock()
    enricher = _enricher(clock)
    one = enricher.process_map(_facts(path, first, pid=4001))
    two = enricher.process_map(_facts(path, first, pid=4002))
    assert one["hash"] is two["hash"]                # the kept part, shared
    assert two == _built_anew(enricher, _facts(path, first, pid=4002))
    assert (two["pid"], two["args"]) == (4002, [path, "4002"])   # the exec's own facts
    other_user = enricher.process_map(_facts(path, first, uid=1, pid=4003))
    assert other_user["real_user"]["id"] == "1"      # other ids: another part
    other_group = enricher.process_map(_facts(path, first, gid=1, pid=4003))
    assert other_group["group"]["id"] == "1"
    os.unlink(path)
    with open(path, "wb") as f:                      # replaced at its path
        f.write(b"two")
    clock.now += 0.5
    assert enricher.process_map(_facts(path, first, pid=4004))["on_disk"] is True  # window
    clock.now += 0.6                                 # the look no longer answers
    gone = enricher.process_map(_facts(path, first, pid=4005))
    assert gone["on_disk"] is False
    assert gone == _built_anew(enricher, _facts(path, first, pid=4005))


def test_a_part_is_not_kept_for_an_image_not_hashed_or_not_at_its_path(tmp_path) -> None:
    """An image that could not be hashed (here: over the size limit) is tried again at every
    exec, and one that is not the file at its path has no look to vouch for it."""
    path = str(tmp_path / "tool")
    with open(path, "wb") as f:
        f.write(b"more than one byte")
    ident = _identity(path)
    hasher = FileHasher(max_file_bytes=1)
    enricher = _enricher(Clock(), hasher)
    for pid in (4001, 4002):
        assert "hash" not in enricher.process_map(_facts(path, ident, pid=pid))
    assert hasher.errors == 2                        # tried at each exec
    elsewhere = FileIdentity(ident.dev, ident.ino + 1, *ident[2:])  # not the file at the path
    enricher = _enricher(Clock())
    for pid in (4003, 4004):
        assert enricher.process_map(_facts(path, elsewhere, pid=pid))["on_disk"] is False
    assert not enricher._stable                      # nothing kept


def test_a_build_pass_looks_at_each_path_once_and_the_next_pass_looks_again(
        tmp_path, monkeypatch) -> None:
    """identity_at: without a pass every exec stats its path; within a pass the first look
    answers for the pass's other execs of the path (a file changed in between is seen at the
    next pass), found or not; an inode the exec did not touch is still no answer."""
    from sensor_linux import image

    path = tmp_path / "tool"
    path.write_bytes(b"one")
    st = os.stat(path)
    inodes = frozenset({(st.st_dev, st.st_ino)})
    stats: list[bytes] = []
    real_stat = os.stat

    def counted(target, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if isinstance(target, bytes):  # identity_at's (the test's own take text)
            stats.append(target)
        return real_stat(target, *args, **kwargs)

    monkeypatch.setattr(image.os, "stat", counted)
    looks = RecentLooks(clock=Clock())
    raw = str(path).encode()
    first = looks.identity_at(raw, inodes)
    assert first is not None and first.key == _identity(str(path)).key
    assert looks.identity_at(raw, inodes) == first and len(stats) == 2  # no pass: each
    looks.new_pass()
    assert [looks.identity_at(raw, inodes) for _ in range(3)] == [first] * 3
    assert len(stats) == 3 and looks.shared == 2
    assert looks.identity_at(raw, frozenset({(st.st_dev, st.st_ino + 1)})) is None
    with open(path, "r+b") as f:        # rewritten in place: the inode stays
        f.write(b"two!")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert looks.identity_at(raw, inodes) == first     # the pass's look still answers
    looks.new_pass()
    second = looks.identity_at(raw, inodes)
    assert second is not None and second.key != first.key
    assert second.key == _identity(str(path)).key and len(stats) == 4
    missing = str(tmp_path / "gone").encode()
    assert looks.identity_at(missing, inodes) is None
    assert looks.identity_at(missing, inodes) is None and len(stats) == 5  # None shared too
