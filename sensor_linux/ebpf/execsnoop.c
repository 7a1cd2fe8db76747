// ttpsensor exec probes (BCC). The facts of an exec are read from the kernel at the exec:
// no struct type is used, every member is read at an offset computed from the running kernel's
// BTF (offsets.py passes them as OFF_* macros), because BCC has no CO-RE and the header tree it
// compiles against need not match the running kernel.
//
// Limits come from the Python loader as macros: ARGV_SIZE (power of two, >= 4096), DATA_SIZE
// (power of two, room for two paths, a file name and ARGV_SIZE), PATH_BYTES, PATH_DEPTH,
// PENDING_MAX, RINGBUF_PAGES, EARLY_WAKE_BYTES, PARENTS_MAX, NR_CPUS.

#define FLAG_TRUNC_ARGS     1     // the argument area was longer than ARGV_SIZE
#define FLAG_EXECVEAT       4
#define FLAG_ARG_FAULT      8     // a chunk of the argument area could not be read (fault_mask)
#define FLAG_CREATOR_KNOWN  16    // `creator` is the process that forked this one
#define FLAG_EXE_TRUNC      32    // the executable's path did not fit PATH_DEPTH/PATH_BYTES
#define FLAG_CWD_TRUNC      64    // the same for the working directory
#define FLAG_FACT_FAULT     128   // a kernel read failed: facts of this record are unreliable
#define FLAG_NO_EXE         256   // the new image has no file (never for a real exec)
#define FLAG_NAME_TRUNC     512   // a failed exec's file name was longer than NAME_BYTES
#define FLAG_FAILED         1024  // a failed exec (retval < 0), reported at syscall exit
#define FLAG_NO_ENTRY       2048  // no execve/execveat entry was seen: the kernel's own exec
                                  // (usermode helper), or one that began before we attached
#define FLAG_UNAUDITED      4096  // the exec'ing task has no audit context: syscall audit
                                  // records nothing of it (OFF_TASK_AUDIT_CONTEXT kernels only)

#define CHUNK 4096               // argument area read in chunks: a fault loses one chunk only
#define NAME_BYTES 4096          // a failed exec's file name (PATH_MAX)
#define COMPONENT_BYTES 256      // one path component (NAME_MAX + 1)
#define DATA_MASK (DATA_SIZE - 1)

struct exec_event {
    u64 ktime;          // bpf_ktime_get_ns() at the exec
    u64 cgroup_id;      // cgroup v2 id of the process
    u64 task_start;     // task_struct.start_time (CLOCK_MONOTONIC ns): when the exec'ing
                        // task was created (after de_thread, its thread group leader's)
    u64 ino;            // the executable as the kernel opened it: inode number,
    s64 size;           // size,
    s64 mtime_sec;      // modification and change times,
    s64 ctime_sec;
    u32 mtime_nsec;
    u32 ctime_nsec;
    u32 dev;            // and device (kernel dev_t: major << 20 | minor)
    u32 nlink;          // 0 when the file was deleted
    u32 pid;            // tgid after the exec
    u32 tid;            // thread that called execve
    u32 ppid;           // real parent's tgid at the exec (what audit reports)
    u32 creator;        // tgid of the process that forked this one (FLAG_CREATOR_KNOWN)
    u32 ids[8];         // uid, gid, suid, sgid, euid, egid, fsuid, fsgid (struct cred order)
    u32 loginuid;
    u32 sessionid;
    s32 retval;         // 0 on success, -errno on failure
    u32 argc;           // arguments the new image received (linux_binprm.argc)
    u32 flags;
    u32 fault_mask;     // bit i: argument chunk i could not be read
    u32 exe_size;       // bytes of data[]: executable path components, leaf first,
    u32 cwd_size;       // then the working directory's components,
    u32 name_size;      // then (failed execs) the file name as passed,
    u32 args_size;      // then the argument area, NUL-separated, as the new image has it
    char comm[16];
    char tty[32];
    char data[DATA_SIZE];
};

// Scratch space per CPU: the event plus an overflow area, so that a read of up to 2 * CHUNK
// bytes at any offset below DATA_SIZE stays inside the map value, which the verifier needs to
// see. A plain array indexed by CPU (per-CPU map values are limited to 32 KiB); tracepoint
// programs run with migration disabled, so a CPU's slot is not shared while in use.
struct scratch {
    u32 cursor;         // write position in event.data, kept in map memory (see walk_path)
    u32 unused;
    struct exec_event event;
    char overflow[2 * CHUNK];
};

// What sys_enter_execve(at) leaves for its exit or for sched_process_exec: where the caller's
// file name is (read only if the exec fails; the caller's memory is unchanged until then) and
// whether it was execveat.
struct pending_exec {
    u64 filename;
    u32 flags;
};

BPF_ARRAY(scratch_space, struct scratch, NR_CPUS);
BPF_HASH(pending, u32, struct pending_exec, PENDING_MAX);
BPF_TABLE("lru_hash", u32, u32, parents, PARENTS_MAX);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
// [0] ring buffer outputs that failed, [1] failed execs not reportable because `pending` was
// full at their entry
BPF_PERCPU_ARRAY(drops, u64, 2);
// [0] bytes put in the ring, as its producer position counts them; [1] bytes the loader has
// taken out, written after each read: what the ring holds is their difference (BCC 0.26 has
// no ringbuf_query). It decides when the loader is woken early (wake_flags).
BPF_ARRAY(ring_bytes, u64, 2);

// The self-check (probes.py): the loader puts its own tgid here while it runs its check child,
// and the record of that child's exec is also kept in check_record, so the check never depends
// on room in the ring buffer (a small one on a busy machine may drop it).
BPF_ARRAY(check_parent, u32, 1);
BPF_ARRAY(check_record, struct exec_event, 1);

static __always_inline void count_drop(int which) {
    u64 *counter = drops.lookup(&which);
    if (counter)
        __sync_fetch_and_add(counter, 1);
}

static __always_inline void *read_ptr(void *base, u32 offset, u32 *flags) {
    void *value = 0;
    if (bpf_probe_read_kernel(&value, sizeof(value), base + offset) != 0)
        *flags |= FLAG_FACT_FAULT;
    return value;
}

static __always_inline u32 read_u32(void *base, u32 offset, u32 *flags) {
    u32 value = 0;
    if (bpf_probe_read_kernel(&value, sizeof(value), base + offset) != 0)
        *flags |= FLAG_FACT_FAULT;
    return value;
}

// The components of a path, leaf first, NUL-terminated, into data[] from e->cursor on, as
// d_path() walks them: up the dentries, across mounts, until the process's root. Returns the
// bytes written. The cursor lives in map memory, which the verifier does not track, so every
// iteration starts from one state instead of one per way the previous one ended.
static __always_inline u32 walk_path(struct exec_event *e, u32 *cursor, void *dentry,
                                     void *vfsmnt, void *root_dentry, void *root_mnt,
                                     u32 trunc_flag) {
    u32 start = *cursor;
    void *mnt = vfsmnt - OFF_MOUNT_MNT;  // container_of(vfsmnt, struct mount, mnt)
    u32 flags = 0;
    int done = 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < PATH_DEPTH; i++) {
        if (dentry == root_dentry && vfsmnt == root_mnt) {
            done = 1;
            break;
        }
        void *mnt_root = read_ptr(vfsmnt, OFF_VFSMOUNT_ROOT, &flags);
        void *parent = read_ptr(dentry, OFF_DENTRY_PARENT, &flags);
        if (flags & FLAG_FACT_FAULT)
            break;
        if (dentry == mnt_root || dentry == parent) {
            void *mnt_parent = read_ptr(mnt, OFF_MOUNT_PARENT, &flags);
            if (mnt_parent == mnt || mnt_parent == 0) {
                done = 1;  // the namespace's root, or a mount attached nowhere (memfd, pipe)
                break;
            }
            dentry = read_ptr(mnt, OFF_MOUNT_MOUNTPOINT, &flags);
            mnt = mnt_parent;
            vfsmnt = mnt + OFF_MOUNT_MNT;
            continue;
        }
        u32 off = *(volatile u32 *)cursor;
        if (off - start >= PATH_BYTES)
            break;
        void *name = read_ptr(dentry, OFF_DENTRY_NAME, &flags);
        int n = bpf_probe_read_kernel_str(&e->data[off & DATA_MASK], COMPONENT_BYTES, name);
        if (n <= 0) {
            flags |= FLAG_FACT_FAULT;
            break;
        }
        *cursor = off + n;
        dentry = parent;
    }
    e->flags |= flags;
    if (!done)
        e->flags |= trunc_flag;
    return *cursor - start;
}

// Facts of the current task that audit's SYSCALL and CWD records carry too.
static __always_inline void *task_facts(struct exec_event *e) {
    void *task = (void *)bpf_get_current_task();
    u32 flags = 0;
    u64 id = bpf_get_current_pid_tgid();
    e->pid = id >> 32;
    e->cgroup_id = bpf_get_current_cgroup_id();
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    void *cred = read_ptr(task, OFF_TASK_CRED, &flags);
    if (bpf_probe_read_kernel(&e->ids, sizeof(e->ids), cred + OFF_CRED_UID) != 0)
        flags |= FLAG_FACT_FAULT;
    e->loginuid = read_u32(task, OFF_TASK_LOGINUID, &flags);
    e->sessionid = read_u32(task, OFF_TASK_SESSIONID, &flags);
    void *parent = read_ptr(task, OFF_TASK_REAL_PARENT, &flags);
    e->ppid = read_u32(parent, OFF_TASK_TGID, &flags);
    u32 *creator = parents.lookup(&e->pid);
    e->creator = creator ? *creator : 0;
    if (creator)
        e->flags |= FLAG_CREATOR_KNOWN;
    e->tty[0] = 0;
    void *signal = read_ptr(task, OFF_TASK_SIGNAL, &flags);
    void *tty = read_ptr(signal, OFF_SIGNAL_TTY, &flags);
    if (tty)
        bpf_probe_read_kernel_str(&e->tty, sizeof(e->tty), tty + OFF_TTY_NAME);
    if (bpf_probe_read_kernel(&e->task_start, sizeof(e->task_start),
                              task + OFF_TASK_START_TIME) != 0)
        flags |= FLAG_FACT_FAULT;
#ifdef OFF_TASK_AUDIT_CONTEXT
    // The kernel gives a task an audit context when it is created, and none when audit had
    // never been enabled on this boot yet or a task,never rule excluded it (audit_alloc).
    if (!read_ptr(task, OFF_TASK_AUDIT_CONTEXT, &flags))
        e->flags |= FLAG_UNAUDITED;
#endif
    e->flags |= flags;
    return task;
}

static __always_inline void *fs_root(void *task, void **root_mnt, void **pwd_dentry,
                                     void **pwd_mnt, u32 *flags) {
    void *fs = read_ptr(task, OFF_TASK_FS, flags);
    *root_mnt = read_ptr(fs, OFF_FS_ROOT + OFF_PATH_MNT, flags);
    *pwd_mnt = read_ptr(fs, OFF_FS_PWD + OFF_PATH_MNT, flags);
    *pwd_dentry = read_ptr(fs, OFF_FS_PWD + OFF_PATH_DENTRY, flags);
    return read_ptr(fs, OFF_FS_ROOT + OFF_PATH_DENTRY, flags);
}

static __always_inline void exe_facts(struct exec_event *e, void *task, u32 *cursor,
                                      void *root_dentry, void *root_mnt) {
    u32 flags = 0;
    void *mm = read_ptr(task, OFF_TASK_MM, &flags);
    void *file = mm ? read_ptr(mm, OFF_MM_EXE_FILE, &flags) : 0;
    if (!file) {
        e->flags |= FLAG_NO_EXE | flags;
        return;
    }
    void *inode = read_ptr(file, OFF_FILE_INODE, &flags);
    bpf_probe_read_kernel(&e->ino, sizeof(e->ino), inode + OFF_INODE_INO);
    bpf_probe_read_kernel(&e->size, sizeof(e->size), inode + OFF_INODE_SIZE);
    bpf_probe_read_kernel(&e->mtime_sec, sizeof(e->mtime_sec), inode + OFF_INODE_MTIME_SEC);
    bpf_probe_read_kernel(&e->ctime_sec, sizeof(e->ctime_sec), inode + OFF_INODE_CTIME_SEC);
    e->mtime_nsec = read_u32(inode, OFF_INODE_MTIME_NSEC, &flags);
    e->ctime_nsec = read_u32(inode, OFF_INODE_CTIME_NSEC, &flags);
    e->nlink = read_u32(inode, OFF_INODE_NLINK, &flags);
    void *sb = read_ptr(inode, OFF_INODE_SB, &flags);
    e->dev = read_u32(sb, OFF_SB_DEV, &flags);
    void *dentry = read_ptr(file, OFF_FILE_PATH + OFF_PATH_DENTRY, &flags);
    void *vfsmnt = read_ptr(file, OFF_FILE_PATH + OFF_PATH_MNT, &flags);
    e->flags |= flags;
    e->exe_size = walk_path(e, cursor, dentry, vfsmnt, root_dentry, root_mnt, FLAG_EXE_TRUNC);
}

// The argument area of the new image (mm->arg_start..arg_end, what /proc/PID/cmdline shows),
// after #! processing, in CHUNK-sized reads.
static __always_inline void args_facts(struct exec_event *e, void *task, u32 *cursor) {
    u32 flags = 0;
    void *mm = read_ptr(task, OFF_TASK_MM, &flags);
    u64 start = 0, end = 0;
    if (mm) {
        bpf_probe_read_kernel(&start, sizeof(start), mm + OFF_MM_ARG_START);
        bpf_probe_read_kernel(&end, sizeof(end), mm + OFF_MM_ARG_END);
    }
    if (!mm || end < start) {
        e->flags |= FLAG_ARG_FAULT | flags;
        e->fault_mask = 1;
        return;
    }
    u64 len = end - start;
    if (len > ARGV_SIZE) {
        len = ARGV_SIZE;
        e->flags |= FLAG_TRUNC_ARGS;
    }
    u32 base = *cursor;
    u32 faults = 0;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < ARGV_SIZE / CHUNK; i++) {
        u32 done = i * CHUNK;
        if (done >= len)
            break;
        u64 chunk = len - done;
        if (chunk > CHUNK)
            chunk = CHUNK;
        // Hidden from clang, which would drop the mask as redundant; the verifier needs it
        // to see an unsigned bound.
        asm volatile("" : "+r"(chunk));
        chunk &= 2 * CHUNK - 1;
        u32 off = (base + done) & DATA_MASK;
        if (bpf_probe_read_user(&e->data[off], chunk, (void *)(start + done)) != 0)
            faults |= 1 << i;
    }
    e->args_size = len;
    *cursor = base + len;
    e->fault_mask = faults;
    if (faults)
        e->flags |= FLAG_ARG_FAULT;
    e->flags |= flags;
}

static __always_inline struct scratch *new_event(void) {
    u32 cpu = bpf_get_smp_processor_id();
    struct scratch *s = scratch_space.lookup(&cpu);
    if (!s)
        return 0;
    s->cursor = 0;
    struct exec_event *e = &s->event;
    e->ktime = bpf_ktime_get_ns();
    e->flags = 0;
    e->retval = 0;
    e->argc = 0;
    e->fault_mask = 0;
    e->exe_size = 0;
    e->cwd_size = 0;
    e->name_size = 0;
    e->args_size = 0;
    e->ino = 0;
    e->size = 0;
    e->mtime_sec = 0;
    e->ctime_sec = 0;
    e->mtime_nsec = 0;
    e->ctime_nsec = 0;
    e->dev = 0;
    e->nlink = 0;
    return s;
}

// Records gather in the ring without waking the loader, which reads it every GATHER_SECONDS
// (sensor_linux/batching.py); a wake-up costs it more than the records of a batch share.
// It is woken at once for an image with no link left (a deleted file, a memfd), whose digest
// can only be read through /proc/PID/exe while the process lives, and when the ring holds
// EARLY_WAKE_BYTES, so that a burst cannot fill it before the next read.
static __always_inline u64 wake_flags(struct exec_event *e, u64 *put, u64 *taken) {
    if (e->ino != 0 && e->nlink == 0)
        return BPF_RB_FORCE_WAKEUP;
    // Signed: a read may report its taking before the put of what it took is counted.
    if ((s64)(*put - *taken) >= EARLY_WAKE_BYTES)
        return BPF_RB_FORCE_WAKEUP;
    return BPF_RB_NO_WAKEUP;
}

static __always_inline void emit(struct exec_event *e, u32 used) {
    u32 size = offsetof(struct exec_event, data) + (used & DATA_MASK);
    if (size > sizeof(struct exec_event))
        size = sizeof(struct exec_event);
    int put_at = 0, taken_at = 1;
    u64 *put = ring_bytes.lookup(&put_at);
    u64 *taken = ring_bytes.lookup(&taken_at);
    // An array's slots always exist; without them the record would still go, waking.
    u64 flags = put && taken ? wake_flags(e, put, taken) : 0;
    if (events.ringbuf_output(e, size, flags) != 0) {
        count_drop(0);
        return;
    }
    // As the ring's producer position counts: an 8-byte header, 8-byte aligned.
    if (put)
        __sync_fetch_and_add(put, (size + 8 + 7) & ~7);
}

static __always_inline int on_enter(const char *filename, u32 flags) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct pending_exec p = {.filename = (u64)filename, .flags = flags};
    if (pending.update(&tid, &p) != 0)
        count_drop(1);
    return 0;
}

// A failed exec: the caller's own facts, its working directory and the name it passed.
static __always_inline int on_exit(long ret) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct pending_exec *p = pending.lookup(&tid);
    if (!p)
        return 0;  // success already reported at sched_process_exec, or not ours
    if (ret < 0) {
        struct scratch *s = new_event();
        if (s) {
            struct exec_event *e = &s->event;
            u32 *cursor = &s->cursor;
            u32 flags = 0;
            e->tid = tid;
            e->retval = ret;
            e->flags = p->flags | FLAG_FAILED;
            void *task = task_facts(e);
            void *root_mnt, *pwd_dentry, *pwd_mnt;
            void *root_dentry = fs_root(task, &root_mnt, &pwd_dentry, &pwd_mnt, &flags);
            e->cwd_size = walk_path(e, cursor, pwd_dentry, pwd_mnt, root_dentry, root_mnt,
                                    FLAG_CWD_TRUNC);
            u32 off = *(volatile u32 *)cursor;
            int n = bpf_probe_read_user_str(&e->data[off & DATA_MASK], NAME_BYTES,
                                            (void *)p->filename);
            if (n > 0) {
                e->name_size = n;
                if (n == NAME_BYTES)
                    e->flags |= FLAG_NAME_TRUNC;
            } else {
                e->flags |= FLAG_FACT_FAULT;
            }
            e->flags |= flags;
            emit(e, off + e->name_size);
        }
    }
    pending.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve) {
    return on_enter(args->filename, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat) {
    return on_enter(args->filename, FLAG_EXECVEAT);
}

TRACEPOINT_PROBE(syscalls, sys_exit_execve) {
    return on_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_execveat) {
    return on_exit(args->ret);
}

// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm): the new
// image is in place, current's mm, creds and exe_file are the ones it runs with.
RAW_TRACEPOINT_PROBE(sched_process_exec) {
    u32 old_pid = (u32)ctx->args[1];
    void *bprm = (void *)ctx->args[2];
    struct scratch *s = new_event();
    if (!s)
        return 0;
    struct exec_event *e = &s->event;
    u32 *cursor = &s->cursor;
    struct pending_exec *p = pending.lookup(&old_pid);
    if (p) {
        e->flags = p->flags;
        pending.delete(&old_pid);
    } else {
        e->flags |= FLAG_NO_ENTRY;
    }
    u32 flags = 0;
    e->tid = old_pid;
    e->argc = read_u32(bprm, OFF_BPRM_ARGC, &flags);
    void *task = task_facts(e);
    void *root_mnt, *pwd_dentry, *pwd_mnt;
    void *root_dentry = fs_root(task, &root_mnt, &pwd_dentry, &pwd_mnt, &flags);
    exe_facts(e, task, cursor, root_dentry, root_mnt);
    e->cwd_size = walk_path(e, cursor, pwd_dentry, pwd_mnt, root_dentry, root_mnt,
                            FLAG_CWD_TRUNC);
    args_facts(e, task, cursor);
    e->flags |= flags;
    u32 zero = 0;
    u32 *checker = check_parent.lookup(&zero);
    if (checker && *checker && *checker == e->ppid)
        check_record.update(&zero, e);
    emit(e, *(volatile u32 *)cursor);
    return 0;
}

// sched_process_fork(struct task_struct *parent, struct task_struct *child): remember who
// created each new process (threads are not processes and are left out).
RAW_TRACEPOINT_PROBE(sched_process_fork) {
    void *child = (void *)ctx->args[1];
    u32 flags = 0;
    u32 child_pid = read_u32(child, OFF_TASK_PID, &flags);
    u32 child_tgid = read_u32(child, OFF_TASK_TGID, &flags);
    if (flags || child_pid != child_tgid)
        return 0;
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    parents.update(&child_pid, &parent);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    if ((u32)id == (u32)(id >> 32)) {  // the process, not one of its threads
        u32 pid = id >> 32;
        parents.delete(&pid);
    }
    return 0;
}
