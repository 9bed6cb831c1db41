"""The installed package is typed (PEP 561): ``mypy --strict`` passes on it, and
the stubs of its two compiled modules declare exactly what the built modules
hold, with the types cffi and the C code give them."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import rseq_py
from rseq_py import _fast, _native
from rseq_py._native import ffi, lib
from rseq_py.counter import PerCpuCounter
from rseq_py.freelist import PerCpuFreelist
from support import ARM64_HARNESS, IN_CI

PKG = Path(rseq_py.__file__).resolve().parent


def stub_of(module: Any) -> ast.Module:
    """The .pyi installed next to a compiled module, parsed."""
    path = Path(module.__file__).parent / (module.__name__.rpartition(".")[2] + ".pyi")
    assert path.is_file(), f"{module.__name__} has no stub installed next to it ({path})"
    return ast.parse(path.read_text(), str(path))


def classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}


def functions(body: list[ast.stmt]) -> dict[str, list[ast.FunctionDef]]:
    """Every def by name (overloads give several)."""
    out: dict[str, list[ast.FunctionDef]] = {}
    for n in body:
        if isinstance(n, ast.FunctionDef):
            out.setdefault(n.name, []).append(n)
    return out


def attributes(body: list[ast.stmt]) -> dict[str, str]:
    """Annotated names (``x: T``) and their annotation, as written."""
    return {n.target.id: ast.unparse(n.annotation) for n in body
            if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}


def params(fn: ast.FunctionDef) -> list[tuple[str, str, Any]]:
    """(name, kind, default) of each parameter, as inspect names kinds."""
    a = fn.args
    positional = [(p, "POSITIONAL_ONLY") for p in a.posonlyargs]
    positional += [(p, "POSITIONAL_OR_KEYWORD") for p in a.args]
    defaults = [inspect.Parameter.empty] * (len(positional) - len(a.defaults))
    defaults += [ast.literal_eval(d) for d in a.defaults]
    out = [(p.arg, kind, d) for (p, kind), d in zip(positional, defaults)]
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", inspect.Parameter.empty))
    out += [(p.arg, "KEYWORD_ONLY",
             inspect.Parameter.empty if d is None else ast.literal_eval(d))
            for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", inspect.Parameter.empty))
    return out


def runtime_params(obj: Any) -> list[tuple[str, str, Any]]:
    try:
        sig = inspect.signature(obj)
    except ValueError:
        pytest.fail(f"{obj!r} has no signature (a C method needs a text signature in its "
                    f"docstring)")
    return [(p.name, p.kind.name, p.default) for p in sig.parameters.values()]


# ---- (a) mypy --strict on the installed package ------------------------------

def test_mypy_strict_passes_on_the_installed_package(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        # the arm64 harness runs Debian's python3, which has no mypy
        if IN_CI and not ARM64_HARNESS:
            pytest.fail("mypy is not installed: CI must run the typing check (it is in the "
                        "'test' extra)")
        pytest.skip("mypy is not installed")
    for name in ("py.typed", "_native.pyi", "_fast.pyi"):
        assert (PKG / name).is_file(), f"the installed package has no {name} ({PKG})"
    # From /, with no MYPYPATH, mypy can only find the package where pip put it,
    # and it checks an installed package only if py.typed marks it typed.
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    cmd = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
           "-p", "rseq_py"]
    proc = subprocess.run(cmd, cwd="/", env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} (rseq_py from {PKG}) exited {proc.returncode}:\n"
        f"{proc.stdout}{proc.stderr}")


# ---- (b) _native.pyi against the cffi extension --------------------------------

NATIVE = stub_of(_native)
NATIVE_CLASSES = classes(NATIVE)


def native_class(role: str) -> ast.ClassDef:
    """The stub's class of ``ffi`` or ``lib``."""
    annotation = attributes(NATIVE.body).get(role)
    assert annotation in NATIVE_CLASSES, f"_native.pyi: {role} is not annotated with its class"
    return NATIVE_CLASSES[annotation]


LIB = native_class("lib")
FFI = native_class("ffi")


def cdata_classes() -> set[str]:
    """The stub's cdata types: CData and its subclasses."""
    names = {"CData"}
    grew = True
    while grew:
        grew = False
        for c in NATIVE_CLASSES.values():
            if c.name not in names and any(ast.unparse(b) in names for b in c.bases):
                names.add(c.name)
                grew = True
    return names


def allocated_types() -> dict[str, str]:
    """What ``ffi.new`` makes, by the C type pointed to: ``{"struct rseq_py_info":
    "InfoPtr", "int64_t": "Int64Array", ...}``, from the stub's overloads."""
    out = {}
    for fn in functions(FFI.body)["new"]:
        literal = fn.args.args[1].annotation
        assert isinstance(literal, ast.Subscript) and ast.unparse(literal.value) == "Literal", (
            f"_native.pyi: ffi.new overload at line {fn.lineno} takes no Literal declaration")
        cdecl = ast.literal_eval(literal.slice)
        out[ffi.typeof(cdecl).item.cname] = ast.unparse(fn.returns)
    return out


ALLOCATED = allocated_types()


def python_type(ctype: Any) -> str:
    """The stub's type for a value of this C type, as cffi converts it."""
    if ctype.kind == "void":
        return "None"
    if ctype.kind in ("primitive", "enum"):
        return "float" if ctype.cname in ("float", "double") else "int"
    if ctype.kind == "pointer":
        # A pointer to something the package allocates has that cdata's type;
        # any other (opaque objects, void *) is plain CData.
        return ALLOCATED.get(ctype.item.cname, "CData")
    return f"<no stub type for {ctype.kind} {ctype.cname}>"


def test_native_stub_declares_exactly_the_cdef() -> None:
    declared = set(functions(LIB.body)) | set(attributes(LIB.body))
    built = {n for n in dir(lib) if not n.startswith("__")}
    assert not built - declared, f"in the cdef but not in _native.pyi: {sorted(built - declared)}"
    assert not declared - built, f"in _native.pyi but not in the cdef: {sorted(declared - built)}"


def test_native_stub_constants_are_the_cdefs_ints() -> None:
    for name, annotation in attributes(LIB.body).items():
        value = getattr(lib, name)
        assert not callable(value), f"lib.{name} is a function, declared as {annotation}"
        assert type(value) is int and annotation == "Final[int]", (name, annotation, value)


def test_native_stub_functions_have_the_cdefs_signatures() -> None:
    for name, defs in functions(LIB.body).items():
        assert len(defs) == 1, f"lib.{name} is declared {len(defs)} times"
        fn, ctype = defs[0], ffi.typeof(getattr(lib, name))
        assert ctype.kind == "function", f"lib.{name} is a {ctype.kind}, declared as a function"
        a = fn.args
        # cffi's functions take positional arguments only.
        assert not (a.args or a.vararg or a.kwonlyargs or a.kwarg), (
            f"lib.{name}: every parameter must be positional-only (before '/')")
        got = [ast.unparse(p.annotation) if p.annotation else "?" for p in a.posonlyargs[1:]]
        want = [python_type(t) for t in ctype.args]
        assert got == want, f"lib.{name}{ctype.cname[len(ctype.result.cname):]}: " \
                            f"stub parameters {got}, C parameters {want}"
        assert ast.unparse(fn.returns) == python_type(ctype.result), (
            f"lib.{name}: stub returns {ast.unparse(fn.returns)}, C returns "
            f"{ctype.result.cname} ({python_type(ctype.result)})")


def test_native_stub_types_are_cdata() -> None:
    cdata = cdata_classes()
    for name in set(ALLOCATED.values()) | {"CData"}:
        assert name in cdata, f"_native.pyi: ffi.new returns {name}, not a CData class"


def test_native_stub_structs_have_the_cdefs_fields() -> None:
    checked = 0
    for pointee, cls in ALLOCATED.items():
        ctype = ffi.typeof(pointee)
        if ctype.kind != "struct":
            continue
        assert cls in NATIVE_CLASSES, f"_native.pyi: no class {cls} for {pointee} *"
        got = attributes(NATIVE_CLASSES[cls].body)
        want = {f: python_type(field.type) for f, field in ctype.fields}
        assert got == want, f"{cls} ({pointee} *): stub fields {got}, C fields {want}"
        checked += 1
    assert checked >= 6  # info, stats and the four stress structs


def test_native_stub_allocations_work() -> None:
    """Every declaration ``ffi.new`` is typed for is one ffi knows, and makes the
    kind of cdata its class models."""
    for fn in functions(FFI.body)["new"]:
        cdecl = ast.literal_eval(fn.args.args[1].annotation.slice)
        made = ffi.new(cdecl, 4) if cdecl.endswith("[]") else ffi.new(cdecl)
        assert ffi.typeof(made) is ffi.typeof(cdecl)
    assert list(ffi.new("int64_t[]", [1, 2, 3])[1:3]) == [2, 3]
    assert ffi.new("double *", 1.5)[0] == 1.5
    assert ffi.string(ffi.new("char[]", b"rseq")) == b"rseq"
    assert isinstance(int(ffi.cast("uintptr_t", ffi.addressof(lib, "rseq_py_init"))), int)


# ---- (c) _fast.pyi against the C-API extension -----------------------------------

FAST = stub_of(_fast)
FAST_CLASSES = classes(FAST)


def test_fast_stub_declares_exactly_the_module() -> None:
    declared = set(FAST_CLASSES) | set(functions(FAST.body))
    built = {n for n in vars(_fast) if not n.startswith("__")}
    assert declared == built, (f"only in _fast.pyi: {sorted(declared - built)}; "
                               f"only in rseq_py._fast: {sorted(built - declared)}")


@pytest.mark.parametrize("name", sorted(FAST_CLASSES))
def test_fast_stub_classes_match(name: str) -> None:
    stub, cls = FAST_CLASSES[name], getattr(_fast, name)
    assert [ast.unparse(b) for b in stub.bases] == [
        b.__name__ for b in cls.__bases__ if b is not object], f"{name}: bases differ"
    declared = functions(stub.body)
    built = {n for n in vars(cls) if not (n.startswith("__") and n.endswith("__"))}
    assert set(declared) == built, (f"{name}: only in _fast.pyi: {sorted(set(declared) - built)}; "
                                    f"only in rseq_py._fast: {sorted(built - set(declared))}")
    for method, (fn,) in declared.items():
        got, want = params(fn)[1:], runtime_params(getattr(cls, method))
        if want and want[0][0] == "self":  # a text signature with $self
            want = want[1:]
        assert got == want, f"{name}.{method}: stub {got}, built {want}"


def test_fast_stub_functions_match() -> None:
    for name, (fn,) in functions(FAST.body).items():
        got, want = params(fn), runtime_params(getattr(_fast, name))
        assert got == want, f"{name}: stub {got}, built {want}"


@pytest.mark.parametrize("cls, base", [(PerCpuCounter, "CounterCore"),
                                       (PerCpuFreelist, "FreelistCore")])
def test_fast_methods_take_what_their_slow_paths_take(cls: type, base: str) -> None:
    """The C methods hand every call they do not finish to ``_<name>_slow``
    unchanged, so the stub's signature must be the slow path's."""
    assert getattr(_fast, base) in cls.__mro__
    for method, (fn,) in functions(FAST_CLASSES[base].body).items():
        slow = runtime_params(getattr(cls, f"_{method}_slow"))
        assert params(fn) == slow, f"{cls.__name__}.{method}: stub {params(fn)}, slow path {slow}"
