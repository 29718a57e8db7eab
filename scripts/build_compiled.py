"""Builds the modules listed in scripts/compiled.txt into C extensions with mypyc, in place.

    python scripts/build_compiled.py           # build (incremental; a compiler per core, up to 4)
    python scripts/build_compiled.py --check   # exit 0 when a C compiler and Python.h are here
    python scripts/build_compiled.py --clean   # remove the built extensions

Run by `make compiled` and `make pure`. It drives setuptools' build_ext itself rather than
through setup(), so the project's pyproject.toml (which an older setuptools may reject) is
never parsed. The extensions share one library, node/compiled__mypyc*.so; C sources and
objects go to build/mypyc.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "scripts" / "compiled.txt"
GROUP = "node.compiled"  # the shared library: node/compiled__mypyc<suffix>
BUILD = ROOT / "build" / "mypyc"


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
        for suffix in EXTENSION_SUFFIXES:
            found.update((ROOT / package).glob(f"*{suffix}"))
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


def build() -> None:
    os.chdir(ROOT)
    modules = listed()
    keep = {ROOT / m for m in modules}
    for path in built_files():
        source = path.parent / f"{path.name.split('.')[0]}.py"
        if source.is_file() and source not in keep:
            path.unlink()  # its module left the list
    import setuptools  # before mypyc.build, so that it makes setuptools Extensions
    from mypyc.build import mypycify

    extensions = mypycify(
        modules, opt_level="3", group_name=GROUP, target_dir=str(BUILD / "c"), multi_file=True
    )
    for extension in extensions:  # mypyc writes the group's headers under its package
        extension.include_dirs.append(str(BUILD / "c" / GROUP.partition(".")[0]))
    compile_in_parallel(JOBS)
    dist = setuptools.Distribution(
        {
            "name": "scale0-compiled",
            "ext_modules": extensions,
            "script_name": "scripts/build_compiled.py",
            "script_args": [
                "--quiet", "build_ext", "--inplace", "--parallel", str(JOBS),
                "--build-temp", str(BUILD / "temp"), "--build-lib", str(BUILD / "lib"),
            ],
        }
    )
    dist.parse_command_line()
    dist.run_commands()
    # build_ext leaves an extension whose C did not change (a shim) with its old time; the
    # import-time check compares each .py with its extension, so every one is marked new.
    for module in modules:
        for suffix in EXTENSION_SUFFIXES:
            built = (ROOT / module).with_suffix(suffix)
            if built.is_file():
                os.utime(built)


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        reason = missing_toolchain()
        if reason:
            print(reason)
        return 1 if reason else 0
    if argv == ["--clean"]:
        clean()
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    build()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
