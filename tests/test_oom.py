"""The out-of-memory classifier (``swapd/core/oom.py``) on recorded server output."""

from __future__ import annotations

import signal

import pytest

from swapd.core.oom import OutOfMemory, classify

# Lines as llama.cpp, vLLM/PyTorch and ROCm print them when an allocation fails at start.
LLAMA_CUDA = [
    "load_tensors: offloading 48 repeating layers to GPU",
    "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 9216.00 MiB on device 1: "
    "cudaMalloc failed: out of memory",
    "alloc_tensor_range: failed to allocate CUDA1 buffer of size 9663676416",
    "llama_model_load: error loading model: unable to allocate CUDA1 buffer",
    "main: exiting due to model loading error",
]
LLAMA_CPU = [
    "ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 402653184",
    "llama_init_from_model: failed to initialize the context: failed to allocate compute buffers",
]
LLAMA_BACKEND = ["llama_kv_cache: unable to allocate backend buffer"]
VLLM = [
    "ERROR 06-11 10:32:41 engine.py:366] torch.OutOfMemoryError: CUDA out of memory. Tried "
    "to allocate 20.00 MiB. GPU 0 has a total capacity of 23.65 GiB of which 3.06 MiB is free.",
]
VLLM_NO_INDEX = ["RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"]
ROCM = [
    "ggml_cuda_compute_forward: hipErrorOutOfMemory on ROCm2",
    "HIP error: out of memory",
]
HARMLESS = [
    "srv    load_model: loading model 'qwen.gguf'",
    "main: server is listening on http://127.0.0.1:8080",
]


@pytest.mark.parametrize(
    ("lines", "device", "gpu", "evidence"),
    [
        (LLAMA_CUDA, "gpu1", True, LLAMA_CUDA[1]),  # the GPU line beats the later generic ones
        (LLAMA_CPU, "ram", False, LLAMA_CPU[1]),
        (LLAMA_BACKEND, "ram", False, LLAMA_BACKEND[0]),
        (VLLM, "gpu0", True, VLLM[0]),
        (VLLM_NO_INDEX, None, True, VLLM_NO_INDEX[0]),
        (ROCM, "gpu2", True, ROCM[1]),  # the device named by an earlier line
        ([ROCM[1]], None, True, ROCM[1]),
    ],
)
def test_recorded_lines_are_out_of_memory(
    lines: list[str], device: str | None, gpu: bool, evidence: str
) -> None:
    found = classify(1, HARMLESS + lines)
    assert found == OutOfMemory(evidence=evidence, device=device, gpu=gpu)


def test_the_oom_killer_is_host_memory() -> None:
    assert classify(-signal.SIGKILL, HARMLESS) == OutOfMemory("signal SIGKILL", "ram", False)
    assert classify(137, []) == OutOfMemory("exit code 137", "ram", False)


def test_a_line_says_more_than_the_signal() -> None:
    assert classify(-signal.SIGKILL, VLLM) == OutOfMemory(VLLM[0], "gpu0", True)


@pytest.mark.parametrize("returncode", [1, 0, -signal.SIGTERM, None, 139])
def test_other_deaths_are_not_out_of_memory(returncode: int | None) -> None:
    assert classify(returncode, [*HARMLESS, "error: unknown argument: --foo"]) is None
