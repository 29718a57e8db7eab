"""Builds the modules listed in scripts/compiled.txt into C extensions with mypyc.

    python scripts/build_compiled.py              # in place (incremental; up to 4 compilers)
    python scripts/build_compiled.py --check      # exit 0 when a C compiler and Python.h are here
    python scripts/build_compiled.py --clean      # remove the built extensions
    python scripts/build_compiled.py --wheel DIR  # the compiled wheel into DIR (prints its path)

In place from nothing, with gcc, the build is profile-guided (the comment above PROFILE_OFF).

Run by `make compiled`, `make pure` and `make wheel`. In place it drives setuptools'
build_ext itself rather than through setup(), so the project's pyproject.toml is never
parsed. The wheel is built through setup.py (setuptools' build_wheel hook, which pip calls
too), which asks `wheel_setup()` here for the same extensions when SCALE0_COMPILED=1. The
extensions share one library, node/compiled__mypyc*.so; C sources, objects and built
extensions go to build/mypyc, shared by both builds: an extension whose C did not change is
not compiled again by either.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from setuptools import Extension

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "scripts" / "compiled.txt"
GROUP = "node.compiled"  # the shared library: node/compiled__mypyc<suffix>
BUILD = ROOT / "build" / "mypyc"
OPT_IN = "SCALE0_COMPILED"  # =1: setup.py builds the compiled wheel (a plain build is pure)


def listed() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in LIST.read_text().splitlines())
    return [line for line in lines if line]


def missing_toolchain() -> str | None:
    """Why no extension can be built here, or None when one can."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return "no C compiler"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        return "no Python headers (Python.h)"
    return None


def built_files() -> list[Path]:
    """Every extension file in the packages that hold compiled modules."""
    found: set[Path] = set()  # a name may end with several suffixes (.cpython-311-....so, .so)
    for package in sorted({Path(p).parts[0] for p in listed()} | {"node", "cache"}):
        for suffix in EXTENSION_SUFFIXES:  # subpackages too (node/worker)
            found.update((ROOT / package).rglob(f"*{suffix}"))
    return sorted(found)


def clean() -> None:
    for path in built_files():
        path.unlink()
    shutil.rmtree(BUILD, ignore_errors=True)


JOBS = max(1, min(4, os.cpu_count() or 1))


def compile_in_parallel(jobs: int) -> None:
    """Let the compiler build one extension's C files `jobs` at a time.

    build_ext --parallel runs extensions side by side, but nearly all the C is in the one
    shared library; multi_file mode splits it into a file per module, and this compiles
    those files concurrently (each object is independent; linking stays serial).
    """
    from concurrent.futures import ThreadPoolExecutor
    from distutils.ccompiler import CCompiler

    serial = CCompiler.compile

    def compile(self: CCompiler, sources: list[str], *args: object, **kwargs: object) -> list[str]:
        if len(sources) < 2 or jobs < 2:
            return serial(self, sources, *args, **kwargs)
        with ThreadPoolExecutor(jobs) as pool:
            parts = pool.map(lambda src: serial(self, [src], *args, **kwargs), sources)
            return [obj for objects in parts for obj in objects]

    CCompiler.compile = compile


def extensions() -> list[Extension]:
    """The listed modules as mypyc extensions sharing the GROUP library, with the compiler set
    to build their C files in parallel. Works from ROOT: mypyc names each module by its path
    from there (in its C, and in a compiled module's tracebacks: node/http.py)."""
    os.chdir(ROOT)
    import setuptools  # noqa: F401  (before mypyc.build, so that it makes setuptools Extensions)
    from mypyc.build import mypycify

    # C sources named from ROOT too: setup.py's egg_info lists them, then drops what is
    # under build/ (an absolute path would stay in scale0.egg-info/SOURCES.txt for good).
    c_dir = BUILD.relative_to(ROOT) / "c"
    built = mypycify(
        listed(), opt_level="3", group_name=GROUP, target_dir=str(c_dir), multi_file=True
    )
    for extension in built:  # mypyc writes the group's headers under its package
        extension.include_dirs.append(str(c_dir / GROUP.partition(".")[0]))
    compile_in_parallel(JOBS)
    return built


# How build_ext runs in both builds. It skips an extension built after all its C files, so
# the two share their folders: mypyc rewrites only a C file whose text changed.
BUILD_OPTIONS: dict[str, str | int] = {
    "build_lib": str(BUILD / "lib"), "build_temp": str(BUILD / "temp"), "parallel": JOBS,
}


# Profile-guided (gcc): a clean build compiles the extensions instrumented, runs
# scripts/pgo_train.py through them (a node, its workers and an origin on loopback, about
# 30,000 requests), and compiles them again with the counts: the hot paths laid out
# together, the cold ones apart. Measured (bench/bench_profile.md §37): about 4% more
# requests a second through a node to a Python-API worker, 3-9% less node CPU a miss at
# 1,000/s. An incremental build keeps the last clean build's counts (a changed function
# is compiled without them: -Wno-coverage-mismatch); `make pure` then `make compiled`
# counts anew. SCALE0_PGO=0, another compiler, or a failed training run: a plain build.
PROFILE_OFF = "SCALE0_PGO"
_GENERATE: Final = (["-fprofile-generate", "-fprofile-update=atomic"], ["-fprofile-generate"])
_USE: Final[tuple[list[str], list[str]]] = (
    ["-fprofile-use", "-fprofile-partial-training", "-Wno-missing-profile",
     "-Wno-coverage-mismatch"], [])
_PLAIN: Final[tuple[list[str], list[str]]] = ([], [])
INSTRUMENTED = BUILD / "instrumented"  # there while the extensions in place count


def not_profile_guided() -> str | None:
    """Why this build cannot be profile-guided, or None when it can."""
    if os.environ.get(PROFILE_OFF) == "0":
        return f"{PROFILE_OFF}=0"
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    try:  # the compiler's own macros: clang defines __GNUC__ too, and __clang__
        macros = subprocess.run([cc, "-dM", "-E", "-"], input="", capture_output=True,
                                text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{cc}: {exc}"
    gcc = "#define __GNUC__ " in macros and "__clang__" not in macros
    return None if gcc else f"{cc} is not gcc"


def profiles() -> list[Path]:
    return sorted((BUILD / "temp").rglob("*.gcda"))


def build() -> None:
    os.chdir(ROOT)
    modules = listed()
    keep = {ROOT / m for m in modules}
    for path in built_files():
        source = path.parent / f"{path.name.split('.')[0]}.py"
        if source.is_file() and source not in keep:
            path.unlink()  # its module left the list
    built = extensions()
    why_not = not_profile_guided()
    interrupted = INSTRUMENTED.exists()  # a build stopped between its two compiles
    if why_not is not None:
        compile_all(built, _PLAIN, force=interrupted)
        INSTRUMENTED.unlink(missing_ok=True)
    elif profiles() and not interrupted:
        compile_all(built, _USE)
    else:
        for counts in profiles():
            counts.unlink()  # from another build of these sources: they would not merge
        INSTRUMENTED.touch()
        compile_all(built, _GENERATE, force=True)
        mark_fresh(modules)
        try:  # bounded inside too: each of its steps has a time limit
            trained = subprocess.run([sys.executable, str(ROOT / "scripts" / "pgo_train.py")],
                                     cwd=ROOT, check=False, timeout=600).returncode == 0
        except subprocess.TimeoutExpired:
            trained = False
        if not trained:
            print("profile training failed: compiled without a profile", file=sys.stderr)
            for counts in profiles():
                counts.unlink()
        compile_all(built, _USE if trained else _PLAIN, force=True)
        INSTRUMENTED.unlink()
    mark_fresh(modules)


def compile_all(built: list[Extension], flags: tuple[list[str], list[str]],
                force: bool = False) -> None:
    """setuptools' build_ext over `built`, in place, with `flags` (compiler, linker) added;
    `force` compiles every C file again, changed or not."""
    import setuptools

    compile_flags, link_flags = flags
    built = [copy.copy(extension) for extension in built]  # mypyc's flags stay as they were
    for extension in built:
        extension.extra_compile_args = [*extension.extra_compile_args, *compile_flags]
        extension.extra_link_args = [*extension.extra_link_args, *link_flags]
    dist = setuptools.Distribution(
        {
            "name": "scale0-compiled",
            "ext_modules": built,
            "script_name": "scripts/build_compiled.py",
            "script_args": [
                "--quiet", "build_ext", "--inplace", *(["--force"] if force else []),
                *(f"--{name.replace('_', '-')}={value}" for name, value in BUILD_OPTIONS.items()),
            ],
        }
    )
    dist.parse_command_line()
    dist.run_commands()


def mark_fresh(modules: list[str]) -> None:
    # build_ext leaves an extension whose C did not change (a shim) with its old time; the
    # import-time check compares each .py with its extension, so every one is marked new.
    for module in modules:
        for suffix in EXTENSION_SUFFIXES:
            built = (ROOT / module).with_suffix(suffix)
            if built.is_file():
                os.utime(built)


def prune_build_lib() -> None:
    """Leave in build/mypyc/lib only the listed modules' extensions and their shared library.

    A wheel ships all of its build_lib, and setuptools never empties one: a module that left
    the list, or a .py since deleted, would ship again. build_py copies the .py files anew;
    the extensions stay, so that build_ext can skip those whose C did not change.
    """
    lib = BUILD / "lib"
    keep = {m.removesuffix(".py") for m in listed()} | {GROUP.replace(".", "/") + "__mypyc"}
    for path in [p for p in lib.rglob("*") if p.is_file()]:
        name = path.relative_to(lib).as_posix()
        suffix = next((s for s in EXTENSION_SUFFIXES if name.endswith(s)), None)
        if suffix is None or name.removesuffix(suffix) not in keep:
            path.unlink()


def wheel_setup() -> dict[str, Any]:
    """setup()'s arguments for the compiled wheel (setup.py, when SCALE0_COMPILED=1)."""
    reason = missing_toolchain()
    if reason:
        raise SystemExit(f"{OPT_IN}=1: {reason}, so no compiled wheel can be built here")
    try:
        import mypyc  # noqa: F401
    except ImportError:
        raise SystemExit(f"{OPT_IN}=1 needs mypy and the project's dependencies in the "
                         "Python that builds: make wheel builds with the development venv's "
                         "(or pip wheel --no-build-isolation from such a Python)") from None
    prune_build_lib()
    return {"ext_modules": extensions(), "options": {"build": dict(BUILD_OPTIONS)}}


# The build backend's PEP 517 hook, as pip calls it (pip would first ask for the metadata
# too, which runs setup.py and so mypyc a second time: some 9 s for nothing).
WHEEL_HOOK = ("import sys; from setuptools import build_meta; "
              "print(build_meta.build_wheel(sys.argv[1]))")


def build_wheel(into: Path) -> int:
    """Build the compiled wheel into `into` and print its path.

    setup.py runs in this Python, not an isolated one: mypyc compiles against the types of
    the project's dependencies, which must be installed beside it (the development venv has
    them, and setuptools and mypy: the test extras), and only the mypy that wrote
    build/mypyc may reuse what is there. Its output is shown only when it fails.
    """
    reason = missing_toolchain()
    if reason:
        print(f"{reason}: no compiled wheel can be built here", file=sys.stderr)
        return 1
    into.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", WHEEL_HOOK, str(into)], cwd=ROOT,
                          env={**os.environ, OPT_IN: "1"}, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        return done.returncode
    print(into / done.stdout.splitlines()[-1])  # the hook answers the wheel's file name
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        reason = missing_toolchain()
        if reason:
            print(reason)
        return 1 if reason else 0
    if argv == ["--clean"]:
        clean()
        return 0
    if len(argv) == 2 and argv[0] == "--wheel":
        return build_wheel(Path(argv[1]).resolve())
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    build()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
