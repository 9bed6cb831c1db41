"""The C interface for other extensions: :func:`get_include` and :func:`c_api`.

A third-party C extension can operate on counters and freelists made in
Python, from its own threads, with or without the GIL, at C speed.

**Header.** ``rseq_py.get_include()`` is a directory holding ``rseq_py.h``,
the one public header (installed with the package as
``rseq_py/include/rseq_py.h``).  Put it on the include path::

    Extension("mymod", ["mymod.c"], include_dirs=[rseq_py.get_include()])

**No link to rseq_py.** The functions the header declares live in the
extension ``rseq_py._native``, which exports no C symbol (it is built with
``-fvisibility=hidden``; a Python extension's symbols are private to it in
any case).  An extension therefore links nothing of rseq_py and never calls
them by name: it takes their addresses at run time from ``rseq_py.c_api()``,
a ``dict`` mapping the name of every function declared in ``rseq_py.h``
(``"rseq_py_counter_add"``, ``"rseq_py_freelist_push"``, ...) to its address
as an ``int``.  The header still gives every pointer its exact type: GCC and
Clang's ``__typeof__(&rseq_py_counter_add)`` is a pointer to the declared
prototype, and naming a function inside ``__typeof__`` makes no reference
to its symbol.  Typically, in the module's init function::

    #include <rseq_py.h>
    static __typeof__(&rseq_py_counter_add) counter_add;

    PyObject *m = PyImport_ImportModule("rseq_py");        // initialises rseq
    PyObject *api = m ? PyObject_CallMethod(m, "c_api", NULL) : NULL;
    PyObject *a = api ? PyDict_GetItemString(api, "rseq_py_counter_add") : NULL;
    counter_add = a ? (__typeof__(counter_add))PyLong_AsVoidPtr(a) : NULL;

(``tests/capi_ext/rseq_capi_demo.c`` in the source tree is a complete
example.)  The addresses are those ``rseq_py`` itself calls (one backend and
registration state per process), valid for the life of the process: the
extension is never unloaded.  Importing ``rseq_py`` has already chosen the
backend (``rseq_py_init``), which the functions need.

**Objects.** ``PerCpuCounter.c_address`` and ``PerCpuFreelist.c_address``
are the addresses (``int``) of their ``rseq_py_counter *`` and
``rseq_py_freelist *``.  A pointer is valid while its Python object is alive
and not closed: hold a reference for as long as C code may use it (e.g.
across a call that releases the GIL) and do not ``close()`` it meanwhile.
Shared (``create`` / ``attach``) objects work the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from ._native import ffi, lib

__all__ = ["c_api", "get_include"]

HEADER = "rseq_py.h"


def get_include() -> str:
    """Directory containing ``rseq_py.h``, the public C header of rseq_py.

    Installed packages (wheels, ``pip install .``) carry it in
    ``rseq_py/include``; a package used from a source checkout (in-place or
    editable build) finds it in the checkout's ``csrc``.

    Raises:
        FileNotFoundError: this installation has no header.
    """
    pkg = Path(__file__).resolve().parent
    for d in (pkg / "include", pkg.parent / "csrc"):
        if (d / HEADER).is_file():
            return str(d)
    raise FileNotFoundError(f"{HEADER} is not installed with rseq_py ({pkg})")


def c_api() -> Dict[str, int]:
    """Addresses of the functions declared in ``rseq_py.h``, by name.

    A new dict each call: ``{"rseq_py_counter_add": <int address>, ...}``
    for every function of the header.  Cast each address to a pointer of
    the declared type (see this module's documentation); no linking against
    rseq_py is needed.  Valid for the life of the process.
    """
    return {
        name: int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))
        for name in dir(lib)
        if name.startswith("rseq_py_") and callable(getattr(lib, name))
    }
