"""The kernel struct offsets the exec probes use, as compiler macros.

Every offset comes from the running kernel's BTF (:mod:`sensor_linux.ebpf.btf`); none from the
header tree BCC compiles against. Members that moved between kernel versions (inode timestamps)
are looked up under each name they have had. A member that cannot be found stops the load with
a message naming it: the probes never read at a guessed offset.
"""

from __future__ import annotations

from sensor_linux.ebpf.btf import Btf, BtfError

# (macro, struct, member path): read by execsnoop.c with bpf_probe_read_kernel.
REQUIRED: tuple[tuple[str, str, str], ...] = (
    ("OFF_TASK_MM", "task_struct", "mm"),
    ("OFF_TASK_FS", "task_struct", "fs"),
    ("OFF_TASK_CRED", "task_struct", "cred"),
    ("OFF_TASK_REAL_PARENT", "task_struct", "real_parent"),
    ("OFF_TASK_PID", "task_struct", "pid"),
    ("OFF_TASK_TGID", "task_struct", "tgid"),
    ("OFF_TASK_LOGINUID", "task_struct", "loginuid"),
    ("OFF_TASK_SESSIONID", "task_struct", "sessionid"),
    ("OFF_TASK_SIGNAL", "task_struct", "signal"),
    ("OFF_TASK_START_TIME", "task_struct", "start_time"),
    ("OFF_SIGNAL_TTY", "signal_struct", "tty"),
    ("OFF_TTY_NAME", "tty_struct", "name"),
    ("OFF_MM_ARG_START", "mm_struct", "arg_start"),
    ("OFF_MM_ARG_END", "mm_struct", "arg_end"),
    ("OFF_MM_EXE_FILE", "mm_struct", "exe_file"),
    ("OFF_FILE_PATH", "file", "f_path"),
    ("OFF_FILE_INODE", "file", "f_inode"),
    ("OFF_PATH_MNT", "path", "mnt"),
    ("OFF_PATH_DENTRY", "path", "dentry"),
    ("OFF_FS_ROOT", "fs_struct", "root"),
    ("OFF_FS_PWD", "fs_struct", "pwd"),
    ("OFF_DENTRY_PARENT", "dentry", "d_parent"),
    ("OFF_DENTRY_NAME_LEN", "dentry", "d_name.len"),
    ("OFF_DENTRY_NAME", "dentry", "d_name.name"),
    ("OFF_VFSMOUNT_ROOT", "vfsmount", "mnt_root"),
    ("OFF_MOUNT_PARENT", "mount", "mnt_parent"),
    ("OFF_MOUNT_MOUNTPOINT", "mount", "mnt_mountpoint"),
    ("OFF_MOUNT_MNT", "mount", "mnt"),
    ("OFF_INODE_INO", "inode", "i_ino"),
    ("OFF_INODE_SIZE", "inode", "i_size"),
    ("OFF_INODE_SB", "inode", "i_sb"),
    ("OFF_INODE_NLINK", "inode", "i_nlink"),
    ("OFF_SB_DEV", "super_block", "s_dev"),
    ("OFF_CRED_UID", "cred", "uid"),
    ("OFF_CRED_GID", "cred", "gid"),
    ("OFF_CRED_SUID", "cred", "suid"),
    ("OFF_CRED_SGID", "cred", "sgid"),
    ("OFF_CRED_EUID", "cred", "euid"),
    ("OFF_CRED_EGID", "cred", "egid"),
    ("OFF_CRED_FSUID", "cred", "fsuid"),
    ("OFF_CRED_FSGID", "cred", "fsgid"),
    ("OFF_BPRM_ARGC", "linux_binprm", "argc"),
)

# Members only some kernels have: (macro, struct, member path). task_struct.audit_context
# exists with CONFIG_AUDITSYSCALL; without it the probes cannot say whether audit records a
# task (and syscall audit does not exist there anyway).
OPTIONAL: tuple[tuple[str, str, str], ...] = (
    ("OFF_TASK_AUDIT_CONTEXT", "task_struct", "audit_context"),
)

# Inode times have had three layouts: timespec64 i_mtime/i_ctime (up to 6.5), i_mtime and
# __i_ctime (6.6), __i_mtime/__i_ctime (6.7-6.10), and split seconds and nanoseconds (6.11+).
# Each candidate is (seconds member, nanoseconds member), first match wins.
_TIMES = {
    "MTIME": (("i_mtime_sec", "i_mtime_nsec"), ("__i_mtime.tv_sec", "__i_mtime.tv_nsec"),
              ("i_mtime.tv_sec", "i_mtime.tv_nsec")),
    "CTIME": (("i_ctime_sec", "i_ctime_nsec"), ("__i_ctime.tv_sec", "__i_ctime.tv_nsec"),
              ("i_ctime.tv_sec", "i_ctime.tv_nsec")),
}

# Sizes the probes assume (they read these members into variables of this many bytes).
_SIZES = {"OFF_TASK_START_TIME": 8, "OFF_TASK_AUDIT_CONTEXT": 8,
          "OFF_TASK_PID": 4, "OFF_TASK_TGID": 4, "OFF_TASK_LOGINUID": 4, "OFF_TASK_SESSIONID": 4,
          "OFF_DENTRY_NAME_LEN": 4, "OFF_INODE_INO": 8, "OFF_INODE_SIZE": 8,
          "OFF_INODE_NLINK": 4, "OFF_SB_DEV": 4, "OFF_BPRM_ARGC": 4,
          "OFF_CRED_UID": 4, "OFF_CRED_EUID": 4, "OFF_CRED_GID": 4}


def kernel_offsets(btf: Btf) -> dict[str, int]:
    """``{macro: byte offset}`` for every member the probes read; :class:`BtfError` names the
    first one this kernel lacks or lays out differently than the probes expect."""
    out = {macro: _offset(btf, macro, struct_name, path)
           for macro, struct_name, path in REQUIRED}
    out.update({macro: _offset(btf, macro, struct_name, path)
                for macro, struct_name, path in OPTIONAL if btf.has_member(struct_name, path)})
    # The probes read the eight ids of struct cred in one go, in this order.
    ids = ("OFF_CRED_UID", "OFF_CRED_GID", "OFF_CRED_SUID", "OFF_CRED_SGID", "OFF_CRED_EUID",
           "OFF_CRED_EGID", "OFF_CRED_FSUID", "OFF_CRED_FSGID")
    if [out[k] - out["OFF_CRED_UID"] for k in ids] != list(range(0, 32, 4)):
        raise BtfError("struct cred does not hold uid, gid, suid, sgid, euid, egid, fsuid and "
                       "fsgid next to each other in this kernel")
    for name, candidates in _TIMES.items():
        for seconds, nanoseconds in candidates:
            if btf.has_member("inode", seconds) and btf.has_member("inode", nanoseconds):
                out[f"OFF_INODE_{name}_SEC"] = btf.member("inode", seconds).offset
                out[f"OFF_INODE_{name}_NSEC"] = btf.member("inode", nanoseconds).offset
                break
        else:
            raise BtfError(f"struct inode has none of the known {name.lower()} layouts")
    return out


def _offset(btf: Btf, macro: str, struct_name: str, path: str) -> int:
    member = btf.member(struct_name, path)
    want = _SIZES.get(macro)
    if want is not None and member.size != want:
        raise BtfError(f"{struct_name}.{path} is {member.size} bytes in this kernel, the "
                       f"probes read {want}")
    return member.offset


def cflags(offsets: dict[str, int]) -> list[str]:
    return [f"-D{macro}={value}" for macro, value in sorted(offsets.items())]
