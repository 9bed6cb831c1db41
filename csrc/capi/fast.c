/*
 * fast.c - rseq_py._fast: the CPython C-API fast path of the hottest
 * methods (counter inc/add/sub/value, freelist push/pop).
 *
 * Why it exists: a cffi API-mode call costs ~100-250 ns (argument tuple,
 * GIL release and re-acquire, errno save); the operation itself costs a few
 * ns.  A METH_FASTCALL method on the object's own type costs ~20 ns.
 *
 * What it is not: a second copy of the core.  This module is compiled
 * alone; it calls the functions of rseq_py._native (the cffi extension,
 * which owns the one registration state) through addresses handed over by
 * link().  It never validates or raises by itself: any call that is not
 * plainly valid (an argument that is not an exact int in range, keywords it
 * does not know, a closed object, a freelist needing its slow path) is
 * passed, unchanged, to the Python method `_<name>_slow`, which checks it,
 * raises the documented exception, or runs the slow path through cffi with
 * the GIL released.  So both paths share every test.
 *
 * The GIL stays held here: these calls never block (counter adds are one
 * section or one atomic add; freelist calls try the section only).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "../rseq_py.h"

typedef int (*counter_add_fn)(rseq_py_counter *, uint32_t, int64_t);
typedef int64_t (*counter_value_fn)(const rseq_py_counter *, uint32_t);
typedef int (*fl_try_push_fn)(rseq_py_freelist *, int64_t);
typedef int (*fl_try_pop_fn)(rseq_py_freelist *, int64_t *);

static counter_add_fn counter_add;
static counter_value_fn counter_value;
static fl_try_push_fn fl_try_push;
static fl_try_pop_fn fl_try_pop;

/* ---- Core: the C descriptor a Python object is bound to ------------------- */

typedef struct {
    PyObject_HEAD
    void *ptr;       /* rseq_py_counter * or rseq_py_freelist *; NULL: unbound or closed */
    uint64_t n;      /* counters (size) for a counter */
    PyObject *keep;  /* the owning cffi object: keeps ptr's memory alive */
} Core;

static PyObject *core_bind(Core *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_bind(address, n, keep)");
        return NULL;
    }
    void *ptr = PyLong_AsVoidPtr(args[0]);
    unsigned long long n = PyLong_AsUnsignedLongLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    Py_INCREF(args[2]);
    Py_XSETREF(self->keep, args[2]);
    self->n = n;
    self->ptr = ptr;
    Py_RETURN_NONE;
}

static PyObject *core_unbind(Core *self, PyObject *unused)
{
    (void)unused;
    self->ptr = NULL;
    Py_CLEAR(self->keep);
    Py_RETURN_NONE;
}

static void core_dealloc(Core *self)
{
    self->ptr = NULL;
    Py_CLEAR(self->keep);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef core_methods[] = {
    {"_bind", (PyCFunction)(void (*)(void))core_bind, METH_FASTCALL,
     "_bind($self, address, n, keep, /)\n--\n\n"
     "Bind to a C descriptor: (address, n, owning cffi object)."},
    {"_unbind", (PyCFunction)core_unbind, METH_NOARGS,
     "_unbind($self, /)\n--\n\nForget the C descriptor (close)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rseq_py._fast.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "A C descriptor bound to a Python object (internal).",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_methods = core_methods,
};

/* ---- argument decoding: succeed only when plainly valid ------------------- */

static PyObject *str_index, *str_delta, *str_handle;
static PyObject *slow_inc, *slow_add, *slow_sub, *slow_value, *slow_push, *slow_pop;

/* An exact int in int64, else 0 (let the slow path explain). */
static inline int exact_i64(PyObject *o, int64_t *out)
{
    if (!PyLong_CheckExact(o))
        return 0;
#if PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)o)) {
        *out = PyUnstable_Long_CompactValue((PyLongObject *)o);
        return 1;
    }
#else
    /* Up to 3.11 an int is sign-and-size plus 30-bit digits: read the one- and
     * two-digit ones (|v| < 2**60, all everyday values) directly. */
    Py_ssize_t size = Py_SIZE(o);
    const digit *d = ((PyLongObject *)o)->ob_digit;
    if (size >= -1 && size <= 1) {
        *out = size * (int64_t)d[0];
        return 1;
    }
    if (size == 2 || size == -2) {
        int64_t v = (int64_t)d[0] | (int64_t)d[1] << PyLong_SHIFT;
        *out = size < 0 ? -v : v;
        return 1;
    }
#endif
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = v;
    return 1;
}

static inline int exact_index(PyObject *o, uint64_t n, uint32_t *out)
{
    int64_t v;
    if (!exact_i64(o, &v) || v < 0 || (uint64_t)v >= n)
        return 0;
    *out = (uint32_t)v;
    return 1;
}

/* Place positional and keyword arguments into slots[names...]; 0 when an
 * argument is missing, unknown or given twice. */
static int place(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **names,
                 int nnames, int required, PyObject **slots)
{
    if (nargs > nnames)
        return 0;
    for (int i = 0; i < nnames; i++)
        slots[i] = i < nargs ? args[i] : NULL;
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nkw; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            int i = 0;
            while (i < nnames && key != names[i] && PyUnicode_Compare(key, names[i]) != 0)
                i++;
            if (i == nnames || slots[i] != NULL)
                return 0;
            slots[i] = args[nargs + k];
        }
    }
    for (int i = 0; i < required; i++)
        if (slots[i] == NULL)
            return 0;
    return 1;
}

static PyObject *slow(PyObject *self, PyObject *name, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    /* args[-1] is writable scratch space under PY_VECTORCALL_ARGUMENTS_OFFSET
     * only for callers that say so; build a fresh vector to stay simple. */
    Py_ssize_t total = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[8];
    PyObject **v = total + 1 <= 8 ? small : PyMem_Malloc((size_t)(total + 1) * sizeof *v);
    if (v == NULL)
        return PyErr_NoMemory();
    v[0] = self;
    for (Py_ssize_t i = 0; i < total; i++)
        v[i + 1] = args[i];
    PyObject *r = PyObject_VectorcallMethod(name, v, (size_t)(nargs + 1), kwnames);
    if (v != small)
        PyMem_Free(v);
    return r;
}

/* ---- counters ------------------------------------------------------------ */

#define SLOW(name) slow((PyObject *)self, slow_##name, args, nargs, kwnames)

static PyObject *counter_inc(Core *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    uint32_t index = 0;
    if (self->ptr == NULL || kwnames != NULL || nargs > 1 ||
        (nargs == 1 && !exact_index(args[0], self->n, &index)))
        return SLOW(inc);
    counter_add(self->ptr, index, 1);
    Py_RETURN_NONE;
}

static PyObject *counter_add_sub(Core *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames, int negate)
{
    PyObject *names[2] = {str_delta, str_index}, *a[2];
    int64_t delta;
    uint32_t index = 0;
    if (kwnames == NULL && (nargs == 1 || nargs == 2)) { /* the common call: no keywords */
        a[0] = args[0];
        a[1] = nargs == 2 ? args[1] : NULL;
    } else if (!place(args, nargs, kwnames, names, 2, 1, a)) {
        return negate ? SLOW(sub) : SLOW(add);
    }
    if (self->ptr == NULL ||
        !exact_i64(a[0], &delta) || (a[1] != NULL && !exact_index(a[1], self->n, &index)) ||
        (negate && delta == INT64_MIN))
        return negate ? SLOW(sub) : SLOW(add);
    counter_add(self->ptr, index, negate ? -delta : delta);
    Py_RETURN_NONE;
}

static PyObject *counter_add_m(Core *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    return counter_add_sub(self, args, nargs, kwnames, 0);
}

static PyObject *counter_sub_m(Core *self, PyObject *const *args, Py_ssize_t nargs,
                               PyObject *kwnames)
{
    return counter_add_sub(self, args, nargs, kwnames, 1);
}

static PyObject *counter_value_m(Core *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    uint32_t index = 0;
    if (self->ptr == NULL || kwnames != NULL || nargs > 1 ||
        (nargs == 1 && !exact_index(args[0], self->n, &index)))
        return SLOW(value);
    return PyLong_FromLongLong(counter_value(self->ptr, index));
}

#define FASTCALL(f) (PyCFunction)(void (*)(void))(f), METH_FASTCALL | METH_KEYWORDS

static PyMethodDef counter_methods[] = {
    {"inc", FASTCALL(counter_inc),
     "inc(index=0)\n--\n\nAdd 1 to counter ``index``.  Raises like :meth:`add`."},
    {"add", FASTCALL(counter_add_m),
     "add(delta, index=0)\n--\n\n"
     "Add ``delta`` (a signed 64-bit int) to counter ``index``, on this CPU's slot.\n\n"
     "Never lost and never applied twice, whatever the threads, CPUs, preemptions\n"
     "and signals: one rseq critical section (or one atomic add on the fallback\n"
     "backend).\n\n"
     "Raises:\n"
     "    TypeError: ``delta`` or ``index`` is not an int.\n"
     "    OverflowError: ``delta`` is outside the signed 64-bit range.\n"
     "    IndexError: ``index`` is not in ``range(size)``.\n"
     "    ValueError: the (shared) counter is closed."},
    {"sub", FASTCALL(counter_sub_m),
     "sub(delta, index=0)\n--\n\n"
     "Subtract ``delta``: the same as ``add(-delta, index)``, so ``-delta`` must fit int64.\n\n"
     "Raises:\n"
     "    TypeError, IndexError, ValueError: as :meth:`add`.\n"
     "    OverflowError: ``-delta`` is outside the signed 64-bit range."},
    {"value", FASTCALL(counter_value_m),
     "value(index=0)\n--\n\n"
     "The sum of counter ``index`` over all CPUs: every add that returned before\n"
     "the call is in, none that began after it; a concurrent one wholly in or out\n"
     "(approximate in time, never corrupt).\n\n"
     "Raises:\n"
     "    TypeError, IndexError, ValueError: as :meth:`add`."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CounterCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rseq_py._fast.CounterCore",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The fast methods of PerCpuCounter (internal).",
    .tp_methods = counter_methods,
};

/* ---- freelists ----------------------------------------------------------- */

static PyObject *fl_push(Core *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *names[1] = {str_handle}, *a[1];
    int64_t h;
    if (kwnames == NULL && nargs == 1)
        a[0] = args[0];
    else if (!place(args, nargs, kwnames, names, 1, 1, a))
        return SLOW(push);
    if (self->ptr == NULL || !exact_i64(a[0], &h) ||
        !fl_try_push(self->ptr, h))
        return SLOW(push);
    Py_RETURN_NONE;
}

static PyObject *fl_pop(Core *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int64_t h;
    if (self->ptr == NULL || nargs != 0 || kwnames != NULL || !fl_try_pop(self->ptr, &h))
        return SLOW(pop);
    return PyLong_FromLongLong(h);
}

static PyMethodDef fl_methods[] = {
    {"push", FASTCALL(fl_push),
     "push(handle)\n--\n\n"
     "Put ``handle`` (a signed 64-bit int) on this CPU's stack.\n\n"
     "Every handle pushed is popped or drained exactly once.\n\n"
     "Raises:\n"
     "    FreelistFull: the freelist provably held ``capacity`` handles (nothing changed).\n"
     "    TypeError, OverflowError: ``handle`` is not an int, or not in int64.\n"
     "    ValueError: the (shared) freelist is closed."},
    {"pop", FASTCALL(fl_pop),
     "pop()\n--\n\n"
     "Take a handle: this CPU's stack first, then the pool, then other CPUs'\n"
     "stacks.  Returns ``None`` only if the freelist held no handle at some\n"
     "instant during the call.\n\n"
     "Raises:\n"
     "    ValueError: the (shared) freelist is closed."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FreelistCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rseq_py._fast.FreelistCore",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The fast methods of PerCpuFreelist (internal).",
    .tp_methods = fl_methods,
};

/* ---- module ---------------------------------------------------------------- */

static PyObject *fast_link(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    (void)mod;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "link(counter_add, counter_value, freelist_try_push, freelist_try_pop)");
        return NULL;
    }
    void *p[4];
    for (int i = 0; i < 4; i++)
        if ((p[i] = PyLong_AsVoidPtr(args[i])) == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "link: NULL address");
            return NULL;
        }
    counter_add = (counter_add_fn)p[0];
    counter_value = (counter_value_fn)p[1];
    fl_try_push = (fl_try_push_fn)p[2];
    fl_try_pop = (fl_try_pop_fn)p[3];
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"link", (PyCFunction)(void (*)(void))fast_link, METH_FASTCALL,
     "link($module, counter_add, counter_value, freelist_try_push, freelist_try_pop, /)\n--\n\n"
     "Hand over the addresses of rseq_py._native's functions (done once, at import)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "rseq_py._fast",
    "CPython C-API fast path of rseq_py's hottest methods (internal).", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fast(void)
{
#define INTERN(var, s) if ((var = PyUnicode_InternFromString(s)) == NULL) return NULL
    INTERN(str_index, "index");
    INTERN(str_delta, "delta");
    INTERN(str_handle, "handle");
    INTERN(slow_inc, "_inc_slow");
    INTERN(slow_add, "_add_slow");
    INTERN(slow_sub, "_sub_slow");
    INTERN(slow_value, "_value_slow");
    INTERN(slow_push, "_push_slow");
    INTERN(slow_pop, "_pop_slow");
    CounterCoreType.tp_base = &CoreType;
    FreelistCoreType.tp_base = &CoreType;
    if (PyType_Ready(&CoreType) < 0 || PyType_Ready(&CounterCoreType) < 0 ||
        PyType_Ready(&FreelistCoreType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&CoreType);
    Py_INCREF(&CounterCoreType);
    Py_INCREF(&FreelistCoreType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0 ||
        PyModule_AddObject(m, "CounterCore", (PyObject *)&CounterCoreType) < 0 ||
        PyModule_AddObject(m, "FreelistCore", (PyObject *)&FreelistCoreType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
