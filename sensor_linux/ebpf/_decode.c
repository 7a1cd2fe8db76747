/* The eBPF source's record decoding (sensor_linux/ebpf/probes.py: decode_python), in C: every
 * exec's record passes through it, and in Python it was half of what the sensor spends beside
 * its pipeline (docs/ebpf.md has the figures).
 *
 * decode(data, record_type, identity_type) gives what decode_python gives for a ring-buffer
 * record, made by calling the two types with their fields in order (ExecRecord, FileIdentity),
 * or None where it leaves the record to decode_python: a record shorter than its head, a
 * ``data`` that is not bytes, arguments the probes could not read (a fault mask), file times
 * past what 64 bits of nanoseconds hold. The record is struct exec_event of execsnoop.c, its
 * head as probes._HEAD reads it (native byte order, no padding: HEAD_SIZE bytes), then the
 * executable's and the working directory's path components (leaf first, each NUL-ended),
 * the file name a failed exec passed, and the argument area (NUL-separated).
 *
 * The pure-Python twin stays as the reference, and runs where this is not built: the tests
 * compare the two on recorded streams and on mutated records (tests/test_ebpf_decode.py).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <sys/sysmacros.h>

/* Where each field of the head is (struct exec_event in execsnoop.c; probes._HEAD). */
enum {
    KTIME = 0, CGROUP_ID = 8, TASK_START = 16, INO = 24, SIZE = 32, MTIME_SEC = 40,
    CTIME_SEC = 48, MTIME_NSEC = 56, CTIME_NSEC = 60, DEV = 64, NLINK = 68, PID = 72, TID = 76,
    PPID = 80, CREATOR = 84, UID = 88, GID = 92, SUID = 96, SGID = 100, EUID = 104, EGID = 108,
    FSUID = 112, FSGID = 116, LOGIN_UID = 120, SESSION = 124, RETVAL = 128, ARGC = 132,
    FLAGS = 136, FAULT_MASK = 140, EXE_SIZE = 144, CWD_SIZE = 148, NAME_SIZE = 152,
    ARGS_SIZE = 156, COMM = 160, TTY = 176, HEAD_SIZE = 208
};
/* probes.FLAG_* */
enum {
    TRUNC_ARGS = 1, ARG_FAULT = 8, CREATOR_KNOWN = 16, EXE_TRUNC = 32, CWD_TRUNC = 64,
    FACT_FAULT = 128, NO_EXE = 256, FAILED = 1024
};
#define NSEC_MASK ((1u << 30) - 1)
/* Seconds whose nanoseconds (and up to 2**30 more) fit in a signed 64-bit number. */
#define SECONDS_HELD 9000000000LL

static uint64_t u64_at(const char *s, Py_ssize_t at) {
    uint64_t v;
    memcpy(&v, s + at, sizeof v);
    return v;
}

static int64_t s64_at(const char *s, Py_ssize_t at) {
    int64_t v;
    memcpy(&v, s + at, sizeof v);
    return v;
}

static uint32_t u32_at(const char *s, Py_ssize_t at) {
    uint32_t v;
    memcpy(&v, s + at, sizeof v);
    return v;
}

/* Bytes up to the first NUL (all of them without one): ``x.split(b"\0", 1)[0]``. */
static PyObject *before_nul(const char *s, Py_ssize_t n) {
    const char *nul = memchr(s, 0, (size_t)n);
    return PyBytes_FromStringAndSize(s, nul != NULL ? nul - s : n);
}

/* Path components leaf first, each NUL-ended (what follows the last NUL is not one), as an
 * absolute path: probes._join_components. */
static PyObject *joined_path(const char *s, Py_ssize_t n) {
    Py_ssize_t end = n, i, at;
    PyObject *out;
    char *o;
    while (end > 0 && s[end - 1] != 0)
        end--;  /* text after the last NUL is not a component */
    if (end == 0)
        return PyBytes_FromStringAndSize("/", 1);
    /* Each component's bytes and a "/" for its NUL: as long as the components. */
    out = PyBytes_FromStringAndSize(NULL, end);
    if (out == NULL)
        return NULL;
    o = PyBytes_AS_STRING(out);
    /* Written from the end of the blob (the root side) to its start (the leaf). */
    at = 0;
    i = end - 1;  /* the NUL ending the last component */
    while (i >= 0) {
        Py_ssize_t stop = i, start = i;
        while (start > 0 && s[start - 1] != 0)
            start--;
        o[at++] = '/';
        memcpy(o + at, s + start, (size_t)(stop - start));
        at += stop - start;
        i = start - 1;
    }
    return out;
}

/* The argument area's NUL-separated strings; a last empty one (after the final NUL) dropped
 * unless the area was cut (``truncated``): probes._strings. */
static PyObject *argument_list(const char *s, Py_ssize_t n, int truncated) {
    Py_ssize_t count = 1, i, start = 0, index = 0;
    PyObject *out;
    for (i = 0; i < n; i++)
        if (s[i] == 0)
            count++;
    if ((n == 0 || s[n - 1] == 0) && !truncated)
        count--;
    out = PyList_New(count);
    if (out == NULL)
        return NULL;
    for (i = 0; i <= n && index < count; i++) {
        if (i == n || s[i] == 0) {
            PyObject *item = PyBytes_FromStringAndSize(s + start, i - start);
            if (item == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            PyList_SET_ITEM(out, index++, item);
            start = i + 1;
        }
    }
    return out;
}

/* data[*pos:*pos + size] as bounds within the record (a slice past its end is shorter, or
 * empty), and *pos moved on by ``size`` as declared. */
static void piece(Py_ssize_t length, Py_ssize_t *pos, uint32_t size, Py_ssize_t *start,
                  Py_ssize_t *stop) {
    *start = *pos < length ? *pos : length;
    *stop = *pos + (Py_ssize_t)size < length ? *pos + (Py_ssize_t)size : length;
    *pos += (Py_ssize_t)size;
}

#define FIELDS 22  /* ExecRecord's, in their order */

static PyObject *decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    const char *s;
    Py_ssize_t length, pos = HEAD_SIZE, exe[2], cwd[2], name[2], area[2];
    PyObject *field[FIELDS] = {NULL}, *identity[6] = {NULL}, *result = NULL;
    uint32_t flags, fault_mask, dev;
    int64_t mtime_sec, ctime_sec;
    int failed, unreliable, i;
    (void)module;
    if (nargs != 3 || !PyCallable_Check(args[1]) || !PyCallable_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "decode(data: bytes, record_type: callable, identity_type: callable)");
        return NULL;
    }
    if (!PyBytes_Check(args[0]) || PyBytes_GET_SIZE(args[0]) < HEAD_SIZE)
        Py_RETURN_NONE;
    s = PyBytes_AS_STRING(args[0]);
    length = PyBytes_GET_SIZE(args[0]);
    flags = u32_at(s, FLAGS);
    fault_mask = u32_at(s, FAULT_MASK);
    failed = (flags & FAILED) != 0;
    unreliable = (flags & FACT_FAULT) != 0;
    mtime_sec = s64_at(s, MTIME_SEC);
    ctime_sec = s64_at(s, CTIME_SEC);
    if ((!failed && (flags & ARG_FAULT) && fault_mask) || mtime_sec > SECONDS_HELD ||
        mtime_sec < -SECONDS_HELD || ctime_sec > SECONDS_HELD || ctime_sec < -SECONDS_HELD)
        Py_RETURN_NONE;
    piece(length, &pos, u32_at(s, EXE_SIZE), &exe[0], &exe[1]);
    piece(length, &pos, u32_at(s, CWD_SIZE), &cwd[0], &cwd[1]);
    piece(length, &pos, u32_at(s, NAME_SIZE), &name[0], &name[1]);
    piece(length, &pos, u32_at(s, ARGS_SIZE), &area[0], &area[1]);

    field[0] = PyLong_FromUnsignedLongLong(u64_at(s, KTIME));
    field[1] = PyLong_FromUnsignedLong(u32_at(s, PID));
    field[2] = PyLong_FromUnsignedLong(u32_at(s, TID));
    field[3] = PyLong_FromUnsignedLong(u32_at(s, PPID));
    if (flags & CREATOR_KNOWN) {
        field[4] = PyLong_FromUnsignedLong(u32_at(s, CREATOR));
    } else {
        field[4] = Py_NewRef(Py_None);
    }
    /* uids and gids: real, effective, saved, filesystem (the head has struct cred's order) */
    field[5] = Py_BuildValue("(kkkk)", (unsigned long)u32_at(s, UID),
                             (unsigned long)u32_at(s, EUID), (unsigned long)u32_at(s, SUID),
                             (unsigned long)u32_at(s, FSUID));
    field[6] = Py_BuildValue("(kkkk)", (unsigned long)u32_at(s, GID),
                             (unsigned long)u32_at(s, EGID), (unsigned long)u32_at(s, SGID),
                             (unsigned long)u32_at(s, FSGID));
    field[7] = PyLong_FromUnsignedLong(u32_at(s, LOGIN_UID));
    field[8] = PyLong_FromUnsignedLong(u32_at(s, SESSION));
    field[9] = PyLong_FromLong((long)(int32_t)u32_at(s, RETVAL));
    field[10] = PyLong_FromUnsignedLong(u32_at(s, ARGC));
    if (!failed) {
        field[11] = argument_list(s + area[0], area[1] - area[0], (flags & TRUNC_ARGS) != 0);
    } else {
        field[11] = Py_NewRef(Py_None);
    }
    field[12] = PyLong_FromUnsignedLong(flags);
    field[13] = before_nul(s + COMM, TTY - COMM);
    field[14] = before_nul(s + TTY, HEAD_SIZE - TTY);  /* None when empty */
    if (field[14] != NULL && PyBytes_GET_SIZE(field[14]) == 0) {
        Py_DECREF(field[14]);
        field[14] = Py_NewRef(Py_None);
    }
    if (!failed && !(flags & (EXE_TRUNC | NO_EXE)) && !unreliable) {
        field[15] = joined_path(s + exe[0], exe[1] - exe[0]);
        dev = u32_at(s, DEV);
        identity[0] = PyLong_FromUnsignedLongLong(
            (unsigned long long)makedev(dev >> 20, dev & 0xFFFFF));
        identity[1] = PyLong_FromUnsignedLongLong(u64_at(s, INO));
        identity[2] = PyLong_FromLongLong(s64_at(s, SIZE));
        identity[3] = PyLong_FromLongLong(mtime_sec * 1000000000LL +
                                          (int64_t)(u32_at(s, MTIME_NSEC) & NSEC_MASK));
        identity[4] = PyLong_FromLongLong(ctime_sec * 1000000000LL +
                                          (int64_t)(u32_at(s, CTIME_NSEC) & NSEC_MASK));
        identity[5] = PyLong_FromUnsignedLong(u32_at(s, NLINK));
        for (i = 0; i < 6; i++)
            if (identity[i] == NULL)
                goto done;
        field[18] = PyObject_Vectorcall(args[2], identity, 6, NULL);
    } else {
        field[15] = Py_NewRef(Py_None);
        field[18] = Py_NewRef(Py_None);
    }
    if ((flags & CWD_TRUNC) || unreliable) {
        field[16] = Py_NewRef(Py_None);
    } else {
        field[16] = joined_path(s + cwd[0], cwd[1] - cwd[0]);
    }
    if (failed && u32_at(s, NAME_SIZE)) {
        field[17] = before_nul(s + name[0], name[1] - name[0]);
    } else {
        field[17] = Py_NewRef(Py_None);
    }
    field[19] = PyLong_FromUnsignedLongLong(u64_at(s, CGROUP_ID));
    field[20] = PyLong_FromLong(0);  /* arg_faults: the faulted records are Python's */
    field[21] = PyLong_FromUnsignedLongLong(u64_at(s, TASK_START));
    for (i = 0; i < FIELDS; i++)
        if (field[i] == NULL)
            goto done;
    result = PyObject_Vectorcall(args[1], field, FIELDS, NULL);
done:
    for (i = 0; i < FIELDS; i++)
        Py_XDECREF(field[i]);
    for (i = 0; i < 6; i++)
        Py_XDECREF(identity[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))decode, METH_FASTCALL,
     "decode(data, record_type, identity_type) -> record or None: probes.decode_python (see "
     "the module's source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_decode", "The eBPF exec record's decoding, in C.", 0, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__decode(void) {
    PyObject *made = PyModule_Create(&module);
    if (made != NULL && PyModule_AddIntConstant(made, "HEAD_SIZE", HEAD_SIZE) < 0) {
        Py_DECREF(made);
        return NULL;
    }
    return made;
}
