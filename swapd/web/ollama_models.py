"""What Ollama's model routes say about swapd's models: ``/api/tags``, ``/api/show``, ``/api/ps``.

Pure shaping of answers from swapd's config and the supervisor's statistics. swapd knows
its models by the config, not by files, so sizes are 0 and the digest is a stable hash of
the model's name; ``details`` stay empty unless the config's ``metadata`` gives them
(``metadata.capabilities``, a list such as ``[completion, tools, vision]``, is what
``/api/show`` reports; without it a model claims ``completion`` and ``tools``).

``expires_at`` (``/api/ps``) is when the model's TTL will unload it: far in the future for
a model that is never unloaded when idle (TTL 0, or ``keep_alive`` < 0).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from swapd.config.model import ModelConfig
from swapd.core.states import ModelState
from swapd.supervise.supervisor import ModelStatistics

__all__ = [
    "FOREVER",
    "LOADED",
    "digest",
    "expires_at",
    "ps_entry",
    "show_answer",
    "tag_entry",
    "timestamp",
]

FOREVER = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
# States in which the model's process holds it in memory (stopping ones are leaving).
LOADED = frozenset(
    {
        ModelState.STARTING,
        ModelState.READY,
        ModelState.SLEEP_PENDING,
        ModelState.ASLEEP,
        ModelState.WAKING,
    }
)
DEFAULT_CAPABILITIES = ("completion", "tools")


def timestamp(when: dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as Ollama writes times."""
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _details(spec: ModelConfig | None) -> dict[str, Any]:
    meta: Mapping[str, Any] = spec.metadata if spec is not None else {}

    def text(key: str) -> str:
        value = meta.get(key)
        return value if isinstance(value, str) else ""

    return {
        "parent_model": "",
        "format": text("format"),
        "family": text("family"),
        "families": None,
        "parameter_size": text("parameter_size"),
        "quantization_level": text("quantization_level"),
    }


def tag_entry(name: str, spec: ModelConfig | None, modified: dt.datetime) -> dict[str, Any]:
    """One model of ``/api/tags``; ``spec`` is None for a peer's model."""
    return {
        "name": name,
        "model": name,
        "modified_at": timestamp(modified),
        "size": 0,
        "digest": digest(name),
        "details": _details(spec),
    }


def show_answer(name: str, spec: ModelConfig | None, modified: dt.datetime) -> dict[str, Any]:
    """``/api/show`` for one model."""
    meta: Mapping[str, Any] = spec.metadata if spec is not None else {}
    listed = meta.get("capabilities")
    capabilities = (
        [c for c in listed if isinstance(c, str)]
        if isinstance(listed, list | tuple)
        else list(DEFAULT_CAPABILITIES)
    )
    display = spec.name.strip() if spec is not None and spec.name.strip() else name
    info: dict[str, Any] = {"general.name": display}
    if spec is not None and spec.description.strip():
        info["general.description"] = spec.description.strip()
    return {
        "modelfile": f"# {name} is served by swapd as its config says; there is no Modelfile.\n",
        "parameters": "",
        "template": "",
        "details": _details(spec),
        "model_info": info,
        "capabilities": capabilities,
        "modified_at": timestamp(modified),
    }


def expires_at(
    stat: ModelStatistics,
    configured_ttl: float,
    ttl: float,
    *,
    last_answer: float | None,
    now: float,
    wall: dt.datetime,
) -> dt.datetime:
    """When ``stat``'s model will be unloaded for being idle (``FOREVER`` if never).

    ``configured_ttl`` is the config's TTL (what ``stat.idle_deadline`` was computed with),
    ``ttl`` the one that applies (a keep-alive may change it), both in swapd's convention
    (0: never); ``now`` is the supervisor's clock, ``wall`` the same instant in UTC;
    ``last_answer`` is when an Ollama answer from this model last ended (supervisor clock)."""
    if ttl <= 0:
        return FOREVER
    if stat.idle_deadline is not None:
        idle_since = stat.idle_deadline - configured_ttl
    elif stat.in_flight == 0 and stat.waiting == 0 and last_answer is not None:
        idle_since = last_answer
    else:
        idle_since = now  # busy: the countdown starts once it is idle again
    return wall + dt.timedelta(seconds=max(idle_since + ttl - now, 0.0))


def ps_entry(name: str, spec: ModelConfig | None, expires: dt.datetime) -> dict[str, Any]:
    """One loaded model of ``/api/ps``."""
    return {
        "name": name,
        "model": name,
        "size": 0,
        "digest": digest(name),
        "details": _details(spec),
        "expires_at": timestamp(expires),
        "size_vram": 0,
    }
