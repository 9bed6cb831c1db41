"""Stub of ``rseq_py._native``, the cffi extension (API mode, out of line).

``lib`` holds the functions and constants of the binding section of
``csrc/rseq_py.h`` (the cdef of rseq_py/_build.py); tests/test_typing.py
checks this file against the built module.  cffi converts C integers and
enums to ``int`` and ``double`` to ``float``; everything else (pointers,
arrays, structs) is a cdata, typed below by what it points to.

``ffi`` is typed for the C types the package allocates and casts, not as
cffi's general ``FFI``: ``new`` takes only the declarations listed, so that
each returns a cdata whose fields and items are typed.
"""

from typing import (Callable, Final, Iterator, Literal, SupportsIndex, TypeVar, final, overload,
                    type_check_only)

from _typeshed import ReadableBuffer

@type_check_only
class CData:
    """A pointer held by cffi: ``rseq_py_counter *``, ``rseq_py_freelist *``,
    ``void *`` (any cdata converts to it), or a function's address.
    Compared with ``ffi.NULL``; otherwise only passed back to ``lib``."""

@type_check_only
class CInt(CData):
    """A C integer made by ``ffi.cast``: ``int()`` reads it."""

    def __int__(self) -> int: ...

@type_check_only
class CharPtr(CData):
    """``char *`` or ``char[]``: ``ffi.string`` reads it up to its NUL."""

@type_check_only
class Int64Array(CData):
    """``int64_t[]`` (``ffi.new``, or a slice of one), passed as ``int64_t *``."""

    @overload
    def __getitem__(self, index: SupportsIndex, /) -> int: ...
    @overload
    def __getitem__(self, index: slice, /) -> Int64Array: ...
    def __setitem__(self, index: SupportsIndex, value: int, /) -> None: ...
    def __iter__(self) -> Iterator[int]: ...
    def __len__(self) -> int: ...

@type_check_only
class DoublePtr(CData):
    """``double *``: an out-parameter, read as ``p[0]``."""

    def __getitem__(self, index: SupportsIndex, /) -> float: ...
    def __setitem__(self, index: SupportsIndex, value: float, /) -> None: ...

@type_check_only
class InfoPtr(CData):
    """``struct rseq_py_info *``."""

    backend: int
    registrar: int
    arch: CharPtr
    feature_size: int
    kernel_feature_size: int
    area_size: int
    has_node_id: int
    has_mm_cid: int
    cpu_slots: int
    signature: int
    glibc_rseq_offset: int
    glibc_rseq_size: int
    reason: CharPtr

@type_check_only
class StatsPtr(CData):
    """``struct rseq_py_stats *``."""

    escapes: int
    exhausted: int
    slow_path_adds: int
    self_registrations: int
    self_unregistrations: int
    self_registration_failures: int
    self_registrations_live: int
    owner_takeovers: int
    moves_recovered: int

@type_check_only
class StressConfigPtr(CData):
    """``struct rseq_py_stress_config *``."""

    threads: int
    ops_per_thread: int
    variant: int
    inject_loops: int
    signal_interval_us: int
    handler_adds: int

@type_check_only
class StressResultPtr(CData):
    """``struct rseq_py_stress_result *``."""

    expected: int
    observed: int
    aborts: int
    signals: int
    escapes: int
    exhausted: int
    handler_adds: int
    elapsed_ns: int
    error: int

@type_check_only
class FlStressConfigPtr(CData):
    """``struct rseq_py_fl_stress_config *``."""

    threads: int
    ops_per_thread: int
    variant: int
    inject_loops: int
    signal_interval_us: int
    handles: int
    max_batch: int
    max_held: int
    external: int

@type_check_only
class FlStressResultPtr(CData):
    """``struct rseq_py_fl_stress_result *``."""

    pops: int
    pushes: int
    empty_pops: int
    duplicates: int
    missing: int
    unexpected: int
    full_pushes: int
    aborts: int
    signals: int
    escapes: int
    exhausted: int
    elapsed_ns: int
    error: int

_C = TypeVar("_C", bound=CData)

@final
@type_check_only
class _FFI:
    NULL: Final[CData]

    @overload
    def new(self, cdecl: Literal["struct rseq_py_info *"]) -> InfoPtr: ...
    @overload
    def new(self, cdecl: Literal["struct rseq_py_stats *"]) -> StatsPtr: ...
    @overload
    def new(self, cdecl: Literal["struct rseq_py_stress_config *"]) -> StressConfigPtr: ...
    @overload
    def new(self, cdecl: Literal["struct rseq_py_stress_result *"]) -> StressResultPtr: ...
    @overload
    def new(self, cdecl: Literal["struct rseq_py_fl_stress_config *"]) -> FlStressConfigPtr: ...
    @overload
    def new(self, cdecl: Literal["struct rseq_py_fl_stress_result *"]) -> FlStressResultPtr: ...
    @overload
    def new(
        self, cdecl: Literal["int64_t[]"], init: int | list[int] | tuple[int, ...]
    ) -> Int64Array: ...
    @overload
    def new(self, cdecl: Literal["char[]"], init: int | bytes) -> CharPtr: ...
    @overload
    def new(self, cdecl: Literal["double *"], init: float = ...) -> DoublePtr: ...
    def cast(self, cdecl: Literal["uintptr_t"], value: CData, /) -> CInt: ...
    def addressof(self, library: _Lib, name: str, /) -> CData: ...
    def gc(self, cdata: _C, destructor: Callable[[_C], object], size: int = 0) -> _C: ...
    def from_buffer(
        self, python_buffer: ReadableBuffer, /, require_writable: bool = False
    ) -> CharPtr: ...
    def string(self, cdata: CharPtr, maxlen: int = -1) -> bytes: ...

@final
@type_check_only
class _Lib:
    # ---- backend and registration
    RSEQ_PY_BACKEND_FALLBACK: Final[int]
    RSEQ_PY_BACKEND_RSEQ: Final[int]
    RSEQ_PY_REGISTRAR_NONE: Final[int]
    RSEQ_PY_REGISTRAR_GLIBC: Final[int]
    RSEQ_PY_REGISTRAR_SELF: Final[int]
    RSEQ_PY_REQUEST_AUTO: Final[int]
    RSEQ_PY_REQUEST_FALLBACK: Final[int]
    RSEQ_PY_REQUEST_RSEQ: Final[int]
    def rseq_py_init(self, request: int, /) -> int: ...
    def rseq_py_get_info(self, out: InfoPtr, /) -> None: ...
    def rseq_py_current_cpu(self, /) -> int: ...
    def rseq_py_current_mm_cid(self, /) -> int: ...
    def rseq_py_current_numa_node(self, /) -> int: ...
    def rseq_py_get_stats(self, out: StatsPtr, /) -> None: ...

    # ---- per-CPU counters
    RSEQ_PY_COUNTER_MAX: Final[int]
    def rseq_py_counter_new(self, ncounters: int, /) -> CData: ...
    def rseq_py_counter_free(self, c: CData, /) -> None: ...
    def rseq_py_counter_size(self, c: CData, /) -> int: ...
    def rseq_py_counter_cpu_slots(self, c: CData, /) -> int: ...
    def rseq_py_counter_add(self, c: CData, index: int, delta: int, /) -> int: ...
    def rseq_py_counter_value(self, c: CData, index: int, /) -> int: ...
    def rseq_py_counter_values(self, c: CData, out: Int64Array, /) -> None: ...
    def rseq_py_counter_per_cpu(self, c: CData, index: int, out: Int64Array, /) -> None: ...
    def rseq_py_counter_reset(self, c: CData, index: int, /) -> int: ...

    # ---- shared segments
    RSEQ_PY_SEGMENT_MAGIC: Final[int]
    RSEQ_PY_SEGMENT_VERSION: Final[int]
    RSEQ_PY_SEGMENT_READY: Final[int]
    RSEQ_PY_SEGMENT_HEADER: Final[int]
    RSEQ_PY_KIND_COUNTER: Final[int]
    RSEQ_PY_KIND_FREELIST: Final[int]
    RSEQ_PY_ARCH_OTHER: Final[int]
    RSEQ_PY_ARCH_X86_64: Final[int]
    RSEQ_PY_ARCH_AARCH64: Final[int]
    RSEQ_PY_SEG_OK: Final[int]
    RSEQ_PY_SEG_TRUNCATED: Final[int]
    RSEQ_PY_SEG_FOREIGN: Final[int]
    RSEQ_PY_SEG_VERSION: Final[int]
    RSEQ_PY_SEG_KIND: Final[int]
    RSEQ_PY_SEG_ARCH: Final[int]
    RSEQ_PY_SEG_WORD_SIZE: Final[int]
    RSEQ_PY_SEG_CPU_SLOTS: Final[int]
    RSEQ_PY_SEG_INCOMPLETE: Final[int]
    RSEQ_PY_SEG_GEOMETRY: Final[int]
    def rseq_py_segment_check(
        self, mem: CData, size: int, kind: int, why: CharPtr, whylen: int, /
    ) -> int: ...
    def rseq_py_counter_shared_size(self, ncounters: int, /) -> int: ...
    def rseq_py_counter_create_at(self, mem: CData, size: int, ncounters: int, /) -> CData: ...
    def rseq_py_counter_attach_at(self, mem: CData, size: int, /) -> CData: ...

    # ---- per-CPU freelists
    RSEQ_PY_FREELIST_MAX: Final[int]
    RSEQ_PY_FREELIST_PER_CPU_MAX: Final[int]
    def rseq_py_freelist_new(self, capacity: int, per_cpu: int, /) -> CData: ...
    def rseq_py_freelist_free(self, fl: CData, /) -> None: ...
    def rseq_py_freelist_capacity(self, fl: CData, /) -> int: ...
    def rseq_py_freelist_per_cpu(self, fl: CData, /) -> int: ...
    def rseq_py_freelist_uses_sections(self, fl: CData, /) -> int: ...
    def rseq_py_freelist_robust(self, fl: CData, /) -> int: ...
    def rseq_py_freelist_shared_size(self, capacity: int, per_cpu: int, /) -> int: ...
    def rseq_py_freelist_create_at(
        self, mem: CData, size: int, capacity: int, per_cpu: int, /
    ) -> CData: ...
    def rseq_py_freelist_attach_at(self, mem: CData, size: int, /) -> CData: ...
    def rseq_py_freelist_check(self, fl: CData, why: CharPtr, whylen: int, /) -> int: ...
    def rseq_py_freelist_len(self, fl: CData, /) -> int: ...
    def rseq_py_freelist_push(self, fl: CData, handle: int, /) -> int: ...
    def rseq_py_freelist_pop(self, fl: CData, out: Int64Array, /) -> int: ...
    def rseq_py_freelist_pop_value(self, fl: CData, /) -> int: ...
    def rseq_py_freelist_was_empty(self, /) -> int: ...
    def rseq_py_freelist_try_push(self, fl: CData, handle: int, /) -> int: ...
    def rseq_py_freelist_try_pop(self, fl: CData, out: Int64Array, /) -> int: ...
    def rseq_py_freelist_push_many(self, fl: CData, src: Int64Array, n: int, /) -> int: ...
    def rseq_py_freelist_pop_many(self, fl: CData, dst: Int64Array, n: int, /) -> int: ...
    def rseq_py_freelist_drain(self, fl: CData, dst: Int64Array, /) -> int: ...
    RSEQ_PY_CRASH_OWNING_STACK: Final[int]
    RSEQ_PY_CRASH_SPILL_JOURNALED: Final[int]
    RSEQ_PY_CRASH_SPILL_STACK_COMMITTED: Final[int]
    RSEQ_PY_CRASH_REFILL_JOURNALED: Final[int]
    RSEQ_PY_CRASH_REFILL_STACK_COMMITTED: Final[int]
    def rseq_py_freelist_test_crash(self, fl: CData, point: int, /) -> None: ...

    # ---- stress driver
    RSEQ_PY_VARIANT_RSEQ: Final[int]
    RSEQ_PY_VARIANT_RSEQ_INJECT: Final[int]
    RSEQ_PY_VARIANT_ATOMIC: Final[int]
    RSEQ_PY_VARIANT_UNPROTECTED: Final[int]
    def rseq_py_counter_stress(
        self, c: CData, cfg: StressConfigPtr, r: StressResultPtr, /
    ) -> int: ...
    def rseq_py_freelist_stress(
        self, fl: CData, cfg: FlStressConfigPtr, r: FlStressResultPtr, /
    ) -> int: ...

    # ---- C-level threaded benchmark
    RSEQ_PY_BENCH_RSEQ: Final[int]
    RSEQ_PY_BENCH_PERCPU_ATOMIC: Final[int]
    RSEQ_PY_BENCH_SHARED_ATOMIC: Final[int]
    RSEQ_PY_BENCH_MUTEX: Final[int]
    def rseq_py_counter_bench(
        self, mode: int, threads: int, ops_per_thread: int, ns_per_op: DoublePtr,
        total_mops: DoublePtr, /
    ) -> int: ...
    RSEQ_PY_FL_BENCH_RSEQ: Final[int]
    RSEQ_PY_FL_BENCH_PERCPU_LOCK: Final[int]
    RSEQ_PY_FL_BENCH_MUTEX: Final[int]
    def rseq_py_freelist_bench(
        self, mode: int, threads: int, ops_per_thread: int, batch: int, ns_per_op: DoublePtr,
        total_mops: DoublePtr, /
    ) -> int: ...

ffi: _FFI
lib: _Lib
