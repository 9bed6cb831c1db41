/*
 * rseq_capi_demo.c - a third-party CPython extension using rseq_py's C API,
 * built by tests/test_c_api.py against rseq_py.get_include() only.
 *
 * It links nothing of rseq_py: at import it takes the addresses of the
 * functions it needs from rseq_py.c_api() and gives each pointer the type of
 * the header's prototype (__typeof__ names the function without referencing
 * its symbol).  The objects come from Python as PerCpuCounter.c_address /
 * PerCpuFreelist.c_address; the caller keeps them alive during each call.
 *
 * The workers are plain pthreads, run with the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include <rseq_py.h>

static __typeof__(&rseq_py_counter_add) counter_add;
static __typeof__(&rseq_py_counter_value) counter_value;
static __typeof__(&rseq_py_freelist_push) freelist_push;
static __typeof__(&rseq_py_freelist_pop) freelist_pop;
static __typeof__(&rseq_py_current_cpu) current_cpu;

#define MAX_THREADS 256

/* ---- counter: threads * iters adds of delta -------------------------------- */

struct add_job {
    rseq_py_counter *c;
    uint32_t index;
    int64_t delta;
    uint64_t iters;
    uint64_t errors;
};

static void *add_worker(void *arg)
{
    struct add_job *j = arg;
    for (uint64_t i = 0; i < j->iters; i++)
        if (counter_add(j->c, j->index, j->delta) != 0)
            j->errors++;
    return NULL;
}

/* counter_add_threads(address, index, delta, threads, iters) -> errors */
static PyObject *demo_counter_add_threads(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *addr;
    unsigned int index, threads;
    long long delta;
    unsigned long long iters;
    if (!PyArg_ParseTuple(args, "OILIK", &addr, &index, &delta, &threads, &iters))
        return NULL;
    rseq_py_counter *c = PyLong_AsVoidPtr(addr);
    if (c == NULL)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "NULL counter");
    if (threads < 1 || threads > MAX_THREADS)
        return PyErr_Format(PyExc_ValueError, "threads must be 1..%d", MAX_THREADS);
    struct add_job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    unsigned int started = 0;
    int err = 0;
    uint64_t errors = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; started < threads; started++) {
        jobs[started] = (struct add_job){c, index, (int64_t)delta, iters, 0};
        if ((err = pthread_create(&tids[started], NULL, add_worker, &jobs[started])) != 0)
            break;
    }
    for (unsigned int t = 0; t < started; t++) {
        pthread_join(tids[t], NULL);
        errors += jobs[t].errors;
    }
    Py_END_ALLOW_THREADS
    if (err != 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromUnsignedLongLong(errors);
}

/* counter_value(address, index) -> int, read through the C API */
static PyObject *demo_counter_value(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *addr;
    unsigned int index;
    if (!PyArg_ParseTuple(args, "OI", &addr, &index))
        return NULL;
    rseq_py_counter *c = PyLong_AsVoidPtr(addr);
    if (c == NULL)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "NULL counter");
    return PyLong_FromLongLong(counter_value(c, index));
}

/* ---- freelist: each thread pushes iters distinct handles, pops every other -- */

struct fl_job {
    rseq_py_freelist *fl;
    int64_t first;       /* this thread pushes first .. first + iters - 1 */
    uint64_t iters;
    int64_t *held;       /* what it popped (room for iters / 2 + 1) */
    uint64_t nheld, empty_pops, full_pushes;
};

static void *fl_worker(void *arg)
{
    struct fl_job *j = arg;
    for (uint64_t i = 0; i < j->iters; i++) {
        if (freelist_push(j->fl, j->first + (int64_t)i) != 0)
            j->full_pushes++;
        if (i % 2 == 1) {
            int64_t h;
            if (freelist_pop(j->fl, &h) == 0)
                j->held[j->nheld++] = h;
            else
                j->empty_pops++;
        }
    }
    return NULL;
}

/* freelist_threads(address, threads, iters, base) -> (held, empty_pops, full_pushes)
 * Thread t pushes base + t*iters + i for i in range(iters) and pops after every
 * second push; `held` is every handle popped, by all threads. */
static PyObject *demo_freelist_threads(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *addr;
    unsigned int threads;
    unsigned long long iters;
    long long base;
    if (!PyArg_ParseTuple(args, "OIKL", &addr, &threads, &iters, &base))
        return NULL;
    rseq_py_freelist *fl = PyLong_AsVoidPtr(addr);
    if (fl == NULL)
        return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "NULL freelist");
    if (threads < 1 || threads > MAX_THREADS)
        return PyErr_Format(PyExc_ValueError, "threads must be 1..%d", MAX_THREADS);
    struct fl_job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int64_t *held = malloc(sizeof(int64_t) * threads * (iters / 2 + 1));
    if (held == NULL)
        return PyErr_NoMemory();
    unsigned int started = 0;
    int err = 0;
    uint64_t empty = 0, full = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; started < threads; started++) {
        jobs[started] = (struct fl_job){fl, base + (int64_t)(started * iters), iters,
                                        held + started * (iters / 2 + 1), 0, 0, 0};
        if ((err = pthread_create(&tids[started], NULL, fl_worker, &jobs[started])) != 0)
            break;
    }
    for (unsigned int t = 0; t < started; t++) {
        pthread_join(tids[t], NULL);
        empty += jobs[t].empty_pops;
        full += jobs[t].full_pushes;
    }
    Py_END_ALLOW_THREADS
    PyObject *list = NULL;
    if (err != 0) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
    } else if ((list = PyList_New(0)) != NULL) {
        for (unsigned int t = 0; t < started && list != NULL; t++)
            for (uint64_t i = 0; i < jobs[t].nheld; i++) {
                PyObject *h = PyLong_FromLongLong(jobs[t].held[i]);
                if (h == NULL || PyList_Append(list, h) < 0) {
                    Py_XDECREF(h);
                    Py_CLEAR(list);
                    break;
                }
                Py_DECREF(h);
            }
    }
    free(held);
    if (list == NULL)
        return NULL;
    return Py_BuildValue("(NKK)", list, (unsigned long long)empty, (unsigned long long)full);
}

static PyObject *demo_current_cpu(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromLong(current_cpu());
}

static PyMethodDef methods[] = {
    {"counter_add_threads", demo_counter_add_threads, METH_VARARGS, NULL},
    {"counter_value", demo_counter_value, METH_VARARGS, NULL},
    {"freelist_threads", demo_freelist_threads, METH_VARARGS, NULL},
    {"current_cpu", demo_current_cpu, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "rseq_capi_demo", "rseq_py C API demo (tests).", -1, methods,
    NULL, NULL, NULL, NULL,
};

/* The address of `name` from rseq_py.c_api(), or NULL with an exception set. */
static void *lookup(PyObject *api, const char *name)
{
    PyObject *a = PyDict_GetItemString(api, name);
    if (a == NULL) {
        PyErr_Format(PyExc_ImportError, "rseq_py.c_api() has no %s", name);
        return NULL;
    }
    void *p = PyLong_AsVoidPtr(a);
    if (p == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_ImportError, "rseq_py.c_api(): NULL %s", name);
    return p;
}

PyMODINIT_FUNC PyInit_rseq_capi_demo(void)
{
    PyObject *rseq_py = PyImport_ImportModule("rseq_py"); /* chooses the backend */
    if (rseq_py == NULL)
        return NULL;
    PyObject *api = PyObject_CallMethod(rseq_py, "c_api", NULL);
    Py_DECREF(rseq_py);
    if (api == NULL)
        return NULL;
    if (!PyDict_Check(api)) {
        Py_DECREF(api);
        PyErr_SetString(PyExc_ImportError, "rseq_py.c_api() is not a dict");
        return NULL;
    }
#define LINK(var, name) \
    if ((var = (__typeof__(var))lookup(api, #name)) == NULL) { Py_DECREF(api); return NULL; }
    LINK(counter_add, rseq_py_counter_add)
    LINK(counter_value, rseq_py_counter_value)
    LINK(freelist_push, rseq_py_freelist_push)
    LINK(freelist_pop, rseq_py_freelist_pop)
    LINK(current_cpu, rseq_py_current_cpu)
#undef LINK
    Py_DECREF(api);
    return PyModule_Create(&module);
}
