"""A loading model's log is not flooded by swapd's fast health probes (issue #24).

The demo upstream logs every request; polling every 10-50 ms made a model that loads for
1.5 s print dozens of ``GET /health 503`` lines. ``health.ProbeLog`` shows the first of
each run and one line counting the rest."""

from __future__ import annotations

import httpx
import pytest
import trio

from swapd.config import parse_config
from swapd.supervise.health import ProbeLog
from swapd.testing import open_swapd, upstream_cmd

# leaving the log stream early leaves httpx's body generators to the garbage collector
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def probe_log(check: str = "/health") -> tuple[ProbeLog, list[tuple[str, str]]]:
    config = parse_config(
        f"models:\n  m:\n    cmd: server --port ${{PORT}}\n    proxy: http://127.0.0.1:${{PORT}}\n"
        f"    checkEndpoint: {check}\n"
    )
    shown: list[tuple[str, str]] = []
    return ProbeLog(config.models["m"], lambda stream, line: shown.append((stream, line))), shown


def test_probe_lines_are_folded_per_run_while_probing_and_nothing_else_is() -> None:
    log, shown = probe_log()
    log.line("stdout", "GET /health 503")  # not probing yet: passed on as is
    with log.probing():
        log.line("stdout", "loading weights")
        for _ in range(5):
            log.line("stdout", "GET /health 503")
        log.line("stderr", "warming up")
        log.line("stdout", 'INFO: 127.0.0.1:5501 - "GET /health HTTP/1.1" 503 Service Unavailable')
        log.line("stdout", 'INFO: 127.0.0.1:5502 - "GET /health HTTP/1.1" 503 Service Unavailable')
        log.line("stdout", "GET /healthz 503")  # another path: not ours
        log.line("stdout", "GET /health 503")
        log.line("stdout", "GET /health 200")
    log.line("stdout", "GET /health 200")  # after probing: a client's request, shown
    assert shown == [
        ("stdout", "GET /health 503"),
        ("stdout", "loading weights"),
        ("stdout", "GET /health 503"),
        ("stdout", "… 4 more health checks (GET /health) answered 503 (swapd folded these lines)"),
        ("stderr", "warming up"),
        ("stdout", 'INFO: 127.0.0.1:5501 - "GET /health HTTP/1.1" 503 Service Unavailable'),
        ("stdout", "… 1 more health checks (GET /health) answered 503 (swapd folded these lines)"),
        ("stdout", "GET /healthz 503"),
        ("stdout", "GET /health 503"),
        ("stdout", "GET /health 200"),
        ("stdout", "GET /health 200"),
    ]


def test_the_count_is_flushed_when_probing_ends_and_disabled_checks_fold_nothing() -> None:
    log, shown = probe_log()
    with log.probing():
        for _ in range(3):
            log.line("stdout", "GET /health 503")
    assert [line for _, line in shown] == [
        "GET /health 503",
        "… 2 more health checks (GET /health) answered 503 (swapd folded these lines)",
    ]
    log, shown = probe_log("none")
    with log.probing():
        for _ in range(3):
            log.line("stdout", "GET / 503")
    assert len(shown) == 3


async def test_a_loading_model_logs_a_few_health_lines_not_dozens() -> None:
    cmd = upstream_cmd("--model", "m", "--loading-delay", "1.5", silent=False)
    config = f"models:\n  m:\n    cmd: {cmd}\n    proxy: http://127.0.0.1:${{PORT}}\n"
    with trio.fail_after(30):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
        ):
            assert (await client.post("/api/models/load/m")).status_code == 200
            async with client.stream("GET", "/logs/stream/m") as stream:
                received = ""
                async for chunk in stream.aiter_text():
                    received += chunk
                    if "GET /health 200" in received:
                        break
    lines = received.splitlines()
    assert sum("GET /health 503" in line for line in lines) == 1, lines
    [folded] = [line for line in lines if "more health checks" in line]
    assert int(folded.split()[1]) >= 5  # 1.5 s of polling every 10-50 ms
    assert folded.endswith("answered 503 (swapd folded these lines)")
    assert lines.index(folded) < lines.index("GET /health 200")
