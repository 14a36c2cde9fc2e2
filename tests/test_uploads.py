"""Large multipart uploads pass through swapd without being held in its memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from swapd.testing import open_swapd, upstream_cmd
from swapd.testing.process import run_swapd
from swapd.testing.server import free_port_base

BOUNDARY = "swapd-test-boundary-7f3a"
MIB = 1024 * 1024


def form(model: str, size: int, *, model_first: bool = True) -> Iterator[bytes]:
    """A transcription form whose file part is ``size`` bytes, generated as it is sent."""
    model_part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
    ).encode()
    file_head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="talk.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    if model_first:
        yield model_part
    yield file_head
    block = bytes(range(256)) * 4096  # 1 MiB, no line starting with the boundary
    left = size
    while left:
        piece = block[: min(left, len(block))]
        left -= len(piece)
        yield piece
    yield b"\r\n"
    if not model_first:
        yield model_part
    yield f"--{BOUNDARY}--\r\n".encode()


HEADERS = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def config_text(base: int) -> str:
    return (
        f"startPort: {base + 1}\nmodels:\n  whisper:\n"
        f"    cmd: {upstream_cmd('--model', 'whisper')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
        "    useModelName: whisper-large-v3\n"
    )


@pytest.mark.parametrize("model_first", [True, False], ids=["model-first", "model-last"])
async def test_a_form_larger_than_the_head_is_forwarded_whole(model_first: bool) -> None:
    size = 3 * MIB + 17  # past the 1 MiB swapd reads before it must know the model

    async def body() -> AsyncIterator[bytes]:
        for piece in form("whisper", size, model_first=model_first):
            yield piece

    with trio.fail_after(60):
        async with (
            open_swapd(config_text(free_port_base())) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            reply = await client.post("/v1/audio/transcriptions", content=body(), headers=HEADERS)
    assert reply.status_code == 200, reply.text
    assert reply.json()["text"] == f"The length of the file is {size} bytes"
    assert reply.json()["model"] == "whisper-large-v3"  # rewritten in the streamed form


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def test_a_large_upload_does_not_grow_swapd(tmp_path: Path) -> None:
    config = tmp_path / "swapd.yaml"
    config.write_text(config_text(free_port_base()))
    with run_swapd(config) as swapd:
        url = swapd.url
        httpx.post(f"{url}/api/models/load/whisper", timeout=20).raise_for_status()
        # warm up the code path, then measure the peak over a 128 MiB upload
        small = httpx.post(
            f"{url}/v1/audio/transcriptions",
            content=form("whisper", 2 * MIB),
            headers=HEADERS,
            timeout=60,
        )
        assert small.status_code == 200
        before = status_kib(swapd.pid, "VmRSS")
        size = 128 * MIB
        reply = httpx.post(
            f"{url}/v1/audio/transcriptions",
            content=form("whisper", size),
            headers=HEADERS,
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["text"] == f"The length of the file is {size} bytes"
        peak = status_kib(swapd.pid, "VmHWM")
        # The whole body would be 131,072 KiB; a streamed one costs a few buffers.
        assert peak - before < 48 * 1024, f"swapd grew from {before} KiB to a peak of {peak} KiB"
