"""Did a model server that died while starting run out of memory?

``classify(returncode, lines)`` looks at how the process ended and at its last output
lines, and answers an ``OutOfMemory`` (what gave it away, and the device when the output
names one) or None. Signatures:

- killed by SIGKILL, or exit code 137 (a shell's report of a child killed by SIGKILL):
  the kernel's OOM killer — host memory (``ram``), unless an output line says otherwise;
- llama.cpp: ``failed to allocate``, ``ggml_backend_cuda_buffer_type_alloc_buffer:
  allocating ... failed``, ``cudaMalloc failed: out of memory``, ``unable to allocate
  backend buffer``;
- vLLM / PyTorch: ``torch.OutOfMemoryError``, ``CUDA out of memory``;
- ROCm: ``hipErrorOutOfMemory``;
- generic CUDA: ``CUDA error: out of memory``.

A GPU line names its device when it says ``device N``, ``GPU N``, ``CUDAN`` or ``ROCmN``;
then the device is ``gpuN`` (also for later GPU lines that name none). A GPU line without
a number leaves ``device`` None (the caller picks the GPU the model uses); any other line
(``failed to allocate ... CPU``, a bare ``out of memory``) is ``ram``.

Pure: no I/O. Tested on recorded lines (tests/test_oom.py).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable

import attrs

from swapd.config.sizes import RAM

__all__ = ["OutOfMemory", "classify"]

#: Exit code of a shell whose child was killed by SIGKILL (128 + 9).
KILLED_EXIT_CODE = 128 + signal.SIGKILL

# Lines that are surely about GPU memory, and lines that may be about any memory.
_GPU_LINES = re.compile(
    r"cudaMalloc failed: out of memory"
    r"|ggml_backend_cuda_buffer_type_alloc_buffer: allocating .* failed"
    r"|torch\.(?:cuda\.)?OutOfMemoryError"
    r"|CUDA out of memory"
    r"|CUDA error: out of memory"
    r"|hipErrorOutOfMemory"
    r"|HIP (?:error: )?out of memory",
    re.IGNORECASE,
)
_ANY_LINES = re.compile(
    r"failed to allocate|unable to allocate backend buffer|out of memory", re.IGNORECASE
)
_HOST_HINT = re.compile(r"\bCPU\b|host buffer|\bRAM\b", re.IGNORECASE)
_DEVICE_NUMBER = re.compile(r"(?:\bdevice\s*|\bGPU\s*|\bCUDA|\bROCm|\bcuda:)(\d+)\b", re.IGNORECASE)


@attrs.frozen
class OutOfMemory:
    """An out-of-memory death at start: why we think so, and where."""

    evidence: str  # the output line, or "signal SIGKILL" / "exit code 137"
    device: str | None  # "ram", "gpuN", or None: some GPU, not named
    gpu: bool  # the evidence is about GPU memory


def classify(returncode: int | None, lines: Iterable[str]) -> OutOfMemory | None:
    """``returncode`` as trio reports it (negative: killed by that signal; None: unknown)
    and the last lines the process printed. The last matching line wins (llama.cpp prints
    the allocation failure first, then several lines of consequences)."""
    found: OutOfMemory | None = None
    for raw in lines:
        line = raw.strip()
        if _GPU_LINES.search(line):
            # A later line without a device number keeps the number an earlier one gave.
            earlier = found.device if found is not None and found.gpu else None
            found = OutOfMemory(evidence=line, device=_gpu_named(line) or earlier, gpu=True)
        elif _ANY_LINES.search(line) and (found is None or not found.gpu):
            host = _HOST_HINT.search(line) is not None
            device = RAM if host else _gpu_named(line)
            found = OutOfMemory(evidence=line, device=device, gpu=device not in (None, RAM))
    if found is not None:
        return found if found.device is not None or found.gpu else attrs.evolve(found, device=RAM)
    if returncode == -signal.SIGKILL:
        return OutOfMemory(evidence="signal SIGKILL", device=RAM, gpu=False)
    if returncode == KILLED_EXIT_CODE:
        return OutOfMemory(evidence=f"exit code {KILLED_EXIT_CODE}", device=RAM, gpu=False)
    return None


def _gpu_named(line: str) -> str | None:
    match = _DEVICE_NUMBER.search(line)
    return None if match is None else f"gpu{int(match.group(1))}"
