/* The split path of sensor_linux/audit/records.py's parse(), and the typing of an EXECVE
 * record's arguments, in C: the two narrow steps of the audit hot path that pay for
 * hand-written code (docs/audit.md has the figures).
 *
 * split_record(line, types) gives what parse()'s pure-Python fast path computes before it
 * makes the Record, or None where that path declines the line (the general parser takes it):
 *
 *     (rtype, sec, msec, serial, plain, parts)
 *
 * - line is "type=NAME msg=audit(SEC.MSEC:SERIAL): BODY", split at its first two spaces;
 *   ``types`` maps b"type=NAME" to the record number (records.SPLIT_TYPES);
 * - the stamp has 1-11, 1-3 and 1-20 decimal digits (records._STAMP);
 * - ``plain`` is BODY without trailing CR and LF, with auditd's ENRICHED separator \x1d
 *   read as a space;
 * - ``parts`` are its key=value fields, taken only if records._PLAIN matches the whole body:
 *   fields one or more spaces apart, a key [A-Za-z][A-Za-z0-9_-]* with an optional [digits]
 *   and neither "subj" nor "SADDR", a value either "quoted" or bare, neither holding a space,
 *   a byte from \t to \r, \x1d, ' or {, and a bare one not starting with a quote. The
 *   parts of a body seen before are the same tuple (the last 4,096 bodies are remembered, as
 *   the Python twin's lru_cache does).
 *
 * typed_execve(parts, other) gives what records.typed_execve_python gives for an EXECVE
 * record's parts: [(name, value)], an argument "aN" or "aN[i]" decoded from its "quoted",
 * hex, (null) or ? form, every other part typed by ``other``; None where an argument is in
 * none of those forms (the caller raises the line's parse error).
 *
 * The pure-Python path stays, for platforms without a compiler and as the reference: the tests
 * compare the two on every corpus line and on fuzzed ones (tests/test_audit_split.py).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Bodies of at most REMEMBER_BODY bytes -> their parts, up to REMEMBERED_BODIES of them (as
 * the pure-Python path's lru_cache of 4,096). Made at import; with kept_names (below), the
 * module's only state. */
#define REMEMBER_BODY 4096
#define REMEMBERED_BODIES 4096
static PyObject *remembered;

/* Character classes, one table look-up a byte (filled at import). */
enum { LETTER = 1, KEY = 2, VALUE_STOP = 4 };
static unsigned char classes[256];

static void fill_classes(void) {
    int c;
    for (c = 0; c < 256; c++) {
        int letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        classes[c] = (unsigned char)((letter ? LETTER : 0) |
            ((letter || (c >= '0' && c <= '9') || c == '_' || c == '-') ? KEY : 0) |
            /* A byte no plain value holds (the separator \x1d is a space by then). */
            ((c == ' ' || (c >= '\t' && c <= '\r') || c == 0x1d || c == '\'' || c == '{')
             ? VALUE_STOP : 0));
    }
}

#define IS(c, class) (classes[(unsigned char)(c)] & (class))

/* Digits from *pos up to ``end`` (at least one, at most ``most``); a Python int, or NULL
 * without an exception when they are not there. */
static PyObject *read_number(const char *s, Py_ssize_t *pos, Py_ssize_t end, int most) {
    char digits[24];
    unsigned long long value = 0;
    Py_ssize_t start = *pos, i = start;
    while (i < end && s[i] >= '0' && s[i] <= '9' && i - start < most)
        value = value * 10 + (unsigned long long)(s[i++] - '0');
    if (i == start || (i < end && s[i] >= '0' && s[i] <= '9'))
        return NULL;  /* none, or more than ``most`` */
    *pos = i;
    if (i - start <= 19)  /* below 10**19: the value did not wrap */
        return PyLong_FromUnsignedLongLong(value);
    memcpy(digits, s + start, (size_t)(i - start));
    digits[i - start] = '\0';
    return PyLong_FromString(digits, NULL, 10);
}

/* The stamp token "msg=audit(SEC.MSEC:SERIAL):" filling s[start:end] exactly. Returns 1 with
 * the three numbers set, 0 when it is not one, -1 on an error. */
static int read_stamp(const char *s, Py_ssize_t start, Py_ssize_t end, PyObject *out[3]) {
    static const char open[] = "msg=audit(";
    static const char seps[3] = {'.', ':', ')'};
    static const int most[3] = {11, 3, 20};
    Py_ssize_t pos = start;
    int i;
    if (end - start < (Py_ssize_t)sizeof(open) - 1 || memcmp(s + start, open, sizeof(open) - 1))
        return 0;
    pos += sizeof(open) - 1;
    for (i = 0; i < 3; i++) {
        out[i] = read_number(s, &pos, end, most[i]);
        if (out[i] == NULL || pos >= end || s[pos] != seps[i]) {
            int failed = PyErr_Occurred() != NULL;
            while (i >= 0) {
                Py_XDECREF(out[i]);
                out[i--] = NULL;
            }
            return failed ? -1 : 0;
        }
        pos++;
    }
    if (pos + 1 != end || s[pos] != ':') {
        Py_CLEAR(out[0]);
        Py_CLEAR(out[1]);
        Py_CLEAR(out[2]);
        return 0;
    }
    return 1;
}

/* One field from body[*pos]: its end, or -1 if it is not a plain field. */
static Py_ssize_t field_end(const unsigned char *b, Py_ssize_t pos, Py_ssize_t end) {
    Py_ssize_t key = pos;
    if (pos >= end || !IS(b[pos], LETTER))
        return -1;
    pos++;
    while (pos < end && IS(b[pos], KEY))
        pos++;
    if (pos < end && b[pos] == '=' &&
        ((pos - key == 4 && memcmp(b + key, "subj", 4) == 0) ||
         (pos - key == 5 && memcmp(b + key, "SADDR", 5) == 0)))
        return -1;  /* "subj=" and "SADDR=" are read specially by the general parser */
    if (pos < end && b[pos] == '[') {
        Py_ssize_t digits = ++pos;
        while (pos < end && b[pos] >= '0' && b[pos] <= '9')
            pos++;
        if (pos == digits || pos >= end || b[pos] != ']')
            return -1;
        pos++;
    }
    if (pos >= end || b[pos] != '=')
        return -1;
    pos++;
    if (pos < end && b[pos] == '"') {
        pos++;
        while (pos < end && b[pos] != '"' && !IS(b[pos], VALUE_STOP))
            pos++;
        if (pos >= end || b[pos] != '"')
            return -1;
        pos++;
    } else {
        while (pos < end && !IS(b[pos], VALUE_STOP))
            pos++;
    }
    if (pos < end && b[pos] != ' ')
        return -1;  /* a value running into a byte no plain value holds */
    return pos;
}

/* The fields of body[0:end] (\x1d already a space), or Py_None (new reference) when the
 * body is not plain. */
static PyObject *split_body(const unsigned char *b, Py_ssize_t end) {
    PyObject *parts[64];
    PyObject **many = parts, *tuple = NULL;
    Py_ssize_t count = 0, room = 64, pos = 0, i;
    while (1) {
        Py_ssize_t stop;
        while (pos < end && b[pos] == ' ')
            pos++;
        if (pos >= end)
            break;
        stop = field_end(b, pos, end);
        if (stop < 0) {
            tuple = Py_None;
            Py_INCREF(tuple);
            goto done;
        }
        if (count == room) {
            PyObject **bigger = PyMem_Malloc(sizeof(PyObject *) * (size_t)room * 2);
            if (bigger == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            memcpy(bigger, many, sizeof(PyObject *) * (size_t)count);
            if (many != parts)
                PyMem_Free(many);
            many = bigger;
            room *= 2;
        }
        many[count] = PyBytes_FromStringAndSize((const char *)b + pos, stop - pos);
        if (many[count] == NULL)
            goto done;
        count++;
        pos = stop;
    }
    tuple = PyTuple_New(count);
    if (tuple != NULL) {
        for (i = 0; i < count; i++)
            PyTuple_SET_ITEM(tuple, i, many[i]);
        count = 0;  /* the tuple holds them now */
    }
done:
    for (i = 0; i < count; i++)
        Py_DECREF(many[i]);
    if (many != parts)
        PyMem_Free(many);
    return tuple;
}

static PyObject *split_record(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    const char *s;
    Py_ssize_t length, first, second, end, i;
    PyObject *name, *rtype, *stamp[3] = {NULL, NULL, NULL}, *plain = NULL, *parts = NULL;
    PyObject *result = NULL;
    int found;
    (void)module;
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "split_record(line: bytes, types: dict)");
        return NULL;
    }
    s = PyBytes_AS_STRING(args[0]);
    length = PyBytes_GET_SIZE(args[0]);
    for (first = 0; first < length && s[first] != ' '; first++)
        ;
    for (second = first + 1; second < length && s[second] != ' '; second++)
        ;
    if (first >= length || second >= length)
        Py_RETURN_NONE;
    name = PyBytes_FromStringAndSize(s, first);
    if (name == NULL)
        return NULL;
    rtype = PyDict_GetItemWithError(args[1], name);
    Py_DECREF(name);
    if (rtype == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    /* Held, not borrowed: the allocations below may run a garbage collection, and with it
     * code that could change the caller's dict. */
    Py_INCREF(rtype);
    found = read_stamp(s, first + 1, second, stamp);
    if (found <= 0) {
        Py_DECREF(rtype);
        if (found < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    end = length;
    while (end > second + 1 && (s[end - 1] == '\r' || s[end - 1] == '\n'))
        end--;
    if (memchr(s + second + 1, 0x1d, (size_t)(end - second - 1)) == NULL) {
        plain = PyBytes_FromStringAndSize(s + second + 1, end - second - 1);
    } else {
        /* Made with no text, then filled: only then is it an object of its own (a one-byte
         * bytes made from text is the interpreter's shared one, never to be changed). */
        plain = PyBytes_FromStringAndSize(NULL, end - second - 1);
        if (plain != NULL) {
            char *text = PyBytes_AS_STRING(plain);
            memcpy(text, s + second + 1, (size_t)(end - second - 1));
            for (i = 0; i < end - second - 1; i++)
                if (text[i] == 0x1d)
                    text[i] = ' ';
        }
    }
    if (plain == NULL)
        goto done;
    /* Most bodies of an exec's records repeat (PATH, CWD, BPRM_FCAPS, EOE's empty one): their
     * parts are looked up (and shared between records: no one changes a tuple of bytes). */
    parts = PyDict_GetItemWithError(remembered, plain);
    if (parts != NULL) {
        Py_INCREF(parts);
    } else {
        if (PyErr_Occurred())
            goto done;
        parts = split_body((const unsigned char *)PyBytes_AS_STRING(plain),
                           PyBytes_GET_SIZE(plain));
        if (parts == NULL)
            goto done;
        if (parts != Py_None && PyBytes_GET_SIZE(plain) <= REMEMBER_BODY) {
            if (PyDict_GET_SIZE(remembered) >= REMEMBERED_BODIES)
                PyDict_Clear(remembered);  /* a new generation: the common ones come back */
            if (PyDict_SetItem(remembered, plain, parts) < 0)
                goto done;
        }
    }
    if (parts == Py_None) {
        result = parts;
        parts = NULL;
        goto done;
    }
    result = PyTuple_Pack(6, rtype, stamp[0], stamp[1], stamp[2], plain, parts);
done:
    Py_DECREF(rtype);
    Py_XDECREF(stamp[0]);
    Py_XDECREF(stamp[1]);
    Py_XDECREF(stamp[2]);
    Py_XDECREF(plain);
    Py_XDECREF(parts);
    return result;
}

/* The name of an EXECVE key whose value is a whole encoded argument, "aN" or "aN[i]" (1-9
 * digits each; records._EXECVE_ARG without its "_len" form), as 1; else 0. */
static int whole_argument(const char *k, Py_ssize_t n) {
    Py_ssize_t pos = 1, digits;
    if (n < 2 || k[0] != 'a')
        return 0;
    while (pos < n && k[pos] >= '0' && k[pos] <= '9')
        pos++;
    if (pos == 1 || pos - 1 > 9)
        return 0;
    if (pos == n)
        return 1;
    if (k[pos] != '[')
        return 0;
    digits = ++pos;
    while (pos < n && k[pos] >= '0' && k[pos] <= '9')
        pos++;
    return pos > digits && pos - digits <= 9 && pos + 1 == n && k[pos] == ']';
}

static int hex_digit(unsigned char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* An argument's encoded forms (records._encoded): "quoted" printable ASCII but the quote,
 * pairs of hex digits, (null) or ?. A new reference, or NULL: with an exception set on an
 * error, without one when the value is none of these. */
static PyObject *encoded_argument(const unsigned char *v, Py_ssize_t n) {
    Py_ssize_t i;
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        for (i = 1; i < n - 1; i++)
            if (v[i] < '!' || v[i] > '~' || v[i] == '"')
                break;
        if (i == n - 1)
            return PyBytes_FromStringAndSize((const char *)v + 1, n - 2);
    }
    if (n >= 2 && n % 2 == 0) {
        for (i = 0; i < n; i++)
            if (hex_digit(v[i]) < 0)
                break;
        if (i == n) {
            /* Made with no text, then filled: a new object even for one byte (see
             * split_record on the interpreter's shared one-byte objects). */
            PyObject *out = PyBytes_FromStringAndSize(NULL, n / 2);
            if (out != NULL) {
                unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
                for (i = 0; i < n; i += 2)
                    o[i / 2] = (unsigned char)(hex_digit(v[i]) << 4 | hex_digit(v[i + 1]));
            }
            return out;
        }
    }
    if ((n == 6 && memcmp(v, "(null)", 6) == 0) || (n == 1 && v[0] == '?'))
        Py_RETURN_NONE;
    return NULL;
}

/* The name of a whole argument's key k[0:n] as text: "a0" to "a255" made once and kept (an
 * exec's names repeat), others made each time. A new reference. */
#define KEPT_NAMES 256
static PyObject *kept_names[KEPT_NAMES];

static PyObject *argument_name(const char *k, Py_ssize_t n) {
    int index = 0;
    Py_ssize_t i;
    if (n > 4 || (n > 2 && k[1] == '0'))  /* "aN[i]", past a255, or a leading zero */
        return PyUnicode_DecodeASCII(k, n, NULL);
    for (i = 1; i < n; i++)
        index = index * 10 + (k[i] - '0');
    if (index >= KEPT_NAMES)
        return PyUnicode_DecodeASCII(k, n, NULL);
    if (kept_names[index] == NULL)
        kept_names[index] = PyUnicode_DecodeASCII(k, n, NULL);
    if (kept_names[index] == NULL)
        return NULL;
    Py_INCREF(kept_names[index]);
    return kept_names[index];
}

/* typed_execve(parts, other): records.typed_execve_python's list of (name, value) for an
 * EXECVE record's plain parts; ``other(part)`` types a part that is not a whole argument (argc,
 * aN_len), its exceptions passed on. None when an argument is in none of the encoded forms
 * (the caller raises the parse error): at that part, after the parts before it, as the
 * Python twin raises. */
static PyObject *typed_execve(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *parts, *other, *out;
    Py_ssize_t i, count;
    (void)module;
    if (nargs != 2 || !PyTuple_Check(args[0]) || !PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "typed_execve(parts: tuple, other: callable)");
        return NULL;
    }
    parts = args[0];
    other = args[1];
    count = PyTuple_GET_SIZE(parts);
    out = PyList_New(count);
    if (out == NULL)
        return NULL;
    for (i = 0; i < count; i++) {
        PyObject *part = PyTuple_GET_ITEM(parts, i), *typed, *name, *value;
        const char *s;
        const char *eq;
        Py_ssize_t n, key;
        if (!PyBytes_Check(part)) {
            PyErr_SetString(PyExc_TypeError, "typed_execve: a part is not bytes");
            goto failed;
        }
        s = PyBytes_AS_STRING(part);
        n = PyBytes_GET_SIZE(part);
        eq = memchr(s, '=', (size_t)n);
        key = eq != NULL ? eq - s : n;
        if (!whole_argument(s, key)) {
            typed = PyObject_CallOneArg(other, part);
            if (typed == NULL)
                goto failed;
            PyList_SET_ITEM(out, i, typed);
            continue;
        }
        value = eq != NULL ? encoded_argument((const unsigned char *)eq + 1, n - key - 1)
                           : NULL;
        if (value == NULL) {
            if (PyErr_Occurred())
                goto failed;
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        name = argument_name(s, key);
        if (name == NULL) {
            Py_DECREF(value);
            goto failed;
        }
        typed = PyTuple_Pack(2, name, value);
        Py_DECREF(name);
        Py_DECREF(value);
        if (typed == NULL)
            goto failed;
        PyList_SET_ITEM(out, i, typed);
    }
    return out;
failed:
    Py_DECREF(out);  /* the items not set yet are NULL, which a list's deallocation skips */
    return NULL;
}

static PyMethodDef methods[] = {
    {"split_record", (PyCFunction)(void (*)(void))split_record, METH_FASTCALL,
     "split_record(line, types) -> (rtype, sec, msec, serial, plain, parts) or None: the split "
     "path of records.parse (see the module's source)."},
    {"typed_execve", (PyCFunction)(void (*)(void))typed_execve, METH_FASTCALL,
     "typed_execve(parts, other) -> [(name, value)] or None: records.typed_execve_python "
     "(see the module's source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_split", "The split path of audit record parsing and EXECVE typing, "
    "in C.", 0, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__split(void) {
    fill_classes();
    if (remembered == NULL && (remembered = PyDict_New()) == NULL)
        return NULL;
    return PyModule_Create(&module);
}
