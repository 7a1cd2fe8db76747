// ttpsensor exec probes (BCC). Tracepoints and helpers only: no kernel struct is read by
// offset, because the kernel headers on the build host need not match the running kernel.
// Limits come from the Python loader as macros: MAX_ARGS, ARGV_SIZE (power of two),
// PENDING_MAX, RINGBUF_PAGES, PARENTS_MAX, NR_CPUS.

#define FLAG_TRUNC_ARGS    1   // more arguments than MAX_ARGS (argc holds the real count)
#define FLAG_TRUNC_BYTES   2   // the arguments did not fit in ARGV_SIZE bytes
#define FLAG_EXECVEAT      4
#define FLAG_ARG_FAULT     8   // an argument could not be read (page not resident)
#define FLAG_PPID_FROM_FORK 16 // ppid comes from a fork this program saw
#define COUNT_ARGC_MAX     2048  // arguments counted; bounded by the verifier's jump history (8192)

struct exec_event {
    u64 ktime;          // bpf_ktime_get_ns() at the exec
    u32 pid;            // tgid after the exec
    u32 tid;            // thread that called execve
    u32 ppid;           // creator's tgid, from sched_process_fork (0 when unknown)
    u32 uid;            // real uid and gid (bpf_get_current_uid_gid)
    u32 gid;
    s32 retval;         // 0 on success, -errno on failure
    u32 argc;           // arguments the caller passed (counted up to COUNT_ARGC_MAX)
    u32 args_count;     // arguments copied
    u32 args_size;      // bytes copied into args, NUL separated
    u32 flags;
    u32 filename_size;
    char comm[16];
    char filename[256];
    char args[ARGV_SIZE];
};

// Scratch space per CPU: twice ARGV_SIZE so that a read at any offset below ARGV_SIZE of up to
// ARGV_SIZE bytes stays inside the buffer, which is what the verifier needs to see. A plain
// array indexed by CPU, because per-CPU map values are limited to 32 KiB; tracepoint programs
// run with migration disabled, so a CPU's slot is not shared while in use.
struct scratch {
    struct exec_event event;
    char overflow[ARGV_SIZE];
};

BPF_ARRAY(scratch_space, struct scratch, NR_CPUS);
BPF_HASH(pending, u32, struct exec_event, PENDING_MAX);
BPF_TABLE("lru_hash", u32, u32, parents, PARENTS_MAX);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
// [0] ring buffer outputs that failed, [1] execs dropped because `pending` was full,
// [2] execs whose pending entry was missing at exec/exit (started before we attached)
BPF_PERCPU_ARRAY(drops, u64, 3);

static __always_inline void count_drop(int which) {
    u64 *counter = drops.lookup(&which);
    if (counter)
        __sync_fetch_and_add(counter, 1);
}

static __always_inline int on_enter(const char *filename, const char *const *argv, u32 flags) {
    u32 cpu = bpf_get_smp_processor_id();
    struct scratch *s = scratch_space.lookup(&cpu);
    if (!s)
        return 0;
    struct exec_event *e = &s->event;
    u64 id = bpf_get_current_pid_tgid();
    u64 ugid = bpf_get_current_uid_gid();
    e->ktime = 0;
    e->tid = (u32)id;
    e->pid = id >> 32;
    e->uid = (u32)ugid;
    e->gid = ugid >> 32;
    e->retval = 0;
    e->flags = flags;
    u32 *ppid = parents.lookup(&e->pid);
    e->ppid = ppid ? *ppid : 0;
    if (ppid)
        e->flags |= FLAG_PPID_FROM_FORK;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    int n = bpf_probe_read_user_str(&e->filename, sizeof(e->filename), filename);
    e->filename_size = n > 0 ? n : 0;

    // The verifier walks bounded loops iteration by iteration, carrying every distinct state
    // into the next one. So: count the arguments first (one path in, one loop), then copy
    // with a loop whose only branches leave it; the rest is arithmetic. An argument that
    // cannot be read becomes "" and counts as a fault (len <= 0 -> 1 byte, the NUL written
    // in advance).
    u32 counted = 0;
#pragma clang loop unroll(disable)
    for (int k = 0; k < COUNT_ARGC_MAX; k++) {
        const char *arg = 0;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[k]) != 0 || !arg)
            break;
        counted = k + 1;
    }
    // `counted` is a different constant on each exit of that loop; read back from map memory
    // (which the verifier does not track) it is one unknown value, so the copy loop below is
    // verified once, not once per exit.
    e->argc = counted;
    u32 argc = *(volatile u32 *)&e->argc;
    u32 off = 0;
    u32 count = 0;
    u32 faults = 0;
#pragma clang loop unroll(disable)
    for (int i = 0; i < MAX_ARGS; i++) {
        const char *arg = 0;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) != 0 || !arg)
            break;
        if (off >= ARGV_SIZE)
            break;
        u32 pos = off & (ARGV_SIZE - 1);
        e->args[pos] = 0;
        int len = bpf_probe_read_user_str(&e->args[pos], ARGV_SIZE, arg);
        u32 failed = (u32)len >> 31;  // 1 when the read failed (len < 0), else 0
        // The empty asm hides `failed` from clang, which would otherwise turn the arithmetic
        // below back into a branch (and double the verifier's states on every iteration).
        asm volatile("" : "+r"(failed));
        faults |= failed;
        off += (u32)len * (1 - failed) + failed;  // a failed read counts as "" (1 byte)
        count = i + 1;
    }
    e->args_count = count;
    if (off > ARGV_SIZE) {
        // The last string ran into the overflow area: cut it at the limit.
        off = ARGV_SIZE;
        e->flags |= FLAG_TRUNC_BYTES;
    }
    if (argc > count)
        e->flags |= (off >= ARGV_SIZE) ? FLAG_TRUNC_BYTES : FLAG_TRUNC_ARGS;
    if (argc < count)
        argc = count;  // more than COUNT_ARGC_MAX: at least what was copied
    if (faults)
        e->flags |= FLAG_ARG_FAULT;
    e->args_size = off;
    e->argc = argc;
    if (pending.update(&e->tid, e) != 0)
        count_drop(1);
    return 0;
}

static __always_inline int emit(struct exec_event *e) {
    u32 size = offsetof(struct exec_event, args) + (e->args_size & (ARGV_SIZE * 2 - 1));
    if (size > sizeof(struct exec_event))
        size = sizeof(struct exec_event);
    if (events.ringbuf_output(e, size, 0) != 0)
        count_drop(0);
    return 0;
}

static __always_inline int on_exit(long ret) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct exec_event *e = pending.lookup(&tid);
    if (!e)
        return 0;  // success already reported at sched_process_exec, or not ours
    if (ret < 0) {
        e->retval = ret;
        e->ktime = bpf_ktime_get_ns();
        emit(e);
    }
    pending.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve) {
    return on_enter(args->filename, args->argv, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat) {
    return on_enter(args->filename, args->argv, FLAG_EXECVEAT);
}

TRACEPOINT_PROBE(syscalls, sys_exit_execve) {
    return on_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_execveat) {
    return on_exit(args->ret);
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 tid = args->old_pid;
    struct exec_event *e = pending.lookup(&tid);
    if (!e) {
        count_drop(2);
        return 0;
    }
    e->pid = args->pid;
    e->ktime = bpf_ktime_get_ns();
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    // The filename the kernel resolved (bprm->filename), replacing the one as passed.
    unsigned short loc = args->data_loc_filename & 0xFFFF;
    int n = bpf_probe_read_kernel_str(&e->filename, sizeof(e->filename), (void *)args + loc);
    if (n > 0)
        e->filename_size = n;
    emit(e);
    pending.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork) {
    u32 child = args->child_pid;
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    parents.update(&child, &parent);
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
