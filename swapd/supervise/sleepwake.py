"""Sleep and wake: the configured HTTP calls, in order, each with its own deadline.

The URL is the model's ``proxy`` resolved against the endpoint (RFC 3986: an absolute
path replaces the proxy's path). A call succeeds only with status 200; the first
failure raises ``SleepWakeFailed`` and the runner falls back to stopping (failed sleep)
or restarting (failed wake).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence

import httpx
import trio

from swapd.config.model import Endpoint

__all__ = ["SleepWakeFailed", "run_steps", "step_url"]


class SleepWakeFailed(Exception):
    """A sleep or wake call did not answer 200 in time."""


def step_url(proxy: str, endpoint: str) -> str:
    base = proxy if proxy.endswith("/") else proxy + "/"
    return urllib.parse.urljoin(base, endpoint)


async def run_steps(
    client: httpx.AsyncClient,
    proxy: str,
    steps: Sequence[Endpoint],
    *,
    default_timeout: float,
) -> None:
    for index, step in enumerate(steps):
        url = step_url(proxy, step.endpoint)
        seconds = step.timeout or default_timeout
        content = step.body.encode() if step.body else None
        headers = {"content-type": "application/json"} if content else {}
        try:
            with trio.fail_after(seconds):
                response = await client.request(
                    step.method.value,
                    url,
                    content=content,
                    headers=headers,
                    # the step's own deadline bounds everything; a loaded machine may
                    # need more than llama-swap's 0.5 s just to connect over loopback
                    timeout=httpx.Timeout(None, connect=min(5.0, seconds)),
                )
        except trio.TooSlowError:
            raise SleepWakeFailed(
                f"step {index + 1} ({step.method} {url}) timed out after {seconds}s"
            ) from None
        except httpx.HTTPError as exc:
            raise SleepWakeFailed(f"step {index + 1} ({step.method} {url}) failed: {exc}") from exc
        if response.status_code != 200:
            raise SleepWakeFailed(
                f"step {index + 1} ({step.method} {url}) answered {response.status_code}"
            )
