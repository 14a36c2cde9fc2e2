"""Management routes: listings, health, version, load and unload.

- ``GET /v1/models``, ``GET /models``: OpenAI-style list of local models (``unlisted``
  hidden; aliases too with ``includeAliasesInList``) and peers' models, sorted by ID,
  each with its ``status`` (the model's state); metadata under ``meta.llamaswap``.
- ``GET /running``: models with a process, with state, command (secrets redacted:
  ``redact.py``), proxy and TTL; also a persistent or preloaded model swapd gave up
  restarting (``"state": "failed"``); with memory budgets, each model's footprint and each
  device's budget and use (``add_memory_fields``); always each model's ``rss``, the host
  memory of its process group in bytes (``add_resident_fields``).
- While a model loads, its entries in both listings carry ``progress`` (stage, fraction,
  ETA: ``add_progress_fields``; docs/load-progress.md).
- ``POST /api/models/load/<model>``: start a model now; answers once it is ready.
- ``POST /api/models/sleep/<model>``: put an idle ready model to sleep (``sleepMode``);
  409 if it has no sleep mode, is not ready, or is busy. ``POST /api/models/wake/<model>``
  wakes it (or starts it); answers once it is ready.
- ``POST /api/models/unload/<model>``, ``POST /api/models/unload``, ``GET /unload``:
  stop one or all models now (in-flight requests are cut off).
- ``GET /health`` (no auth), ``GET /api/version``, ``GET /`` → ``/ui/``.
"""

from __future__ import annotations

import time
from typing import Any

import trio
from quart import Quart, Response, redirect, request
from werkzeug.wrappers.response import Response as Redirect

from swapd import __version__
from swapd.config.model import ModelConfig, Selector, SelectorStrategy
from swapd.core.capabilities import SHADOWED_METADATA, capability_fields
from swapd.core.states import RUNNING, ModelState
from swapd.errors import ModelNotFound
from swapd.observe.footprint import group_resident_bytes
from swapd.supervise.memory_report import device_report
from swapd.supervise.supervisor import Supervisor
from swapd.web import scopes
from swapd.web.app import Services, json_response
from swapd.web.redact import redact_command
from swapd.web.scope_filters import view_of

__all__ = ["register", "model_list"]


def model_list(services: Services) -> list[dict[str, Any]]:
    config = services.config
    created = int(time.time())
    states = {s.model: s.state for s in services.supervisor.statistics()}
    records: list[dict[str, Any]] = []
    for model_id, model in config.models.items():
        if model.unlisted:
            continue
        record: dict[str, Any] = {
            "id": model_id,
            "object": "model",
            "created": created,
            "owned_by": "swapd",
            "status": states.get(model_id, ModelState.STOPPED).value,
        }
        if model.name.strip():
            record["name"] = model.name.strip()
        if model.description.strip():
            record["description"] = model.description.strip()
        _add_capabilities(record, model)
        _add_footprint_meta(record, services.supervisor, model_id)
        add_progress_fields(services, model_id, record)
        records.append(record)
        if config.include_aliases_in_list:
            records.extend(
                {**record, "id": alias.strip()} for alias in model.aliases if alias.strip()
            )
    for peer_id, peer in config.peers.items():
        records.extend(
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "swapd",
                "name": f"{peer_id}: {name}",
                "status": "remote",
                "meta": {"llamaswap": {"peerID": peer_id}},
            }
            for name in peer.models
        )
    for selector_id, selector in config.selectors.items():
        if not selector.unlisted:
            records.append(_selector_record(services, selector_id, selector, created, states))
    listed = {r["id"] for r in records}
    for pin, target in services.router.pins().items():  # the active profile's names
        if target and pin not in listed and services.router.resolve(pin) is not None:
            target_id = services.router.resolve_local(target)
            state = states.get(target_id, ModelState.STOPPED).value if target_id else "remote"
            records.append(
                {
                    "id": pin,
                    "object": "model",
                    "created": created,
                    "owned_by": "swapd",
                    "status": state,
                    "meta": {"llamaswap": {"type": "profile"}},
                }
            )
    records.sort(key=lambda r: r["id"])
    return records


def _selector_record(
    services: Services,
    selector_id: str,
    selector: Selector,
    created: int,
    states: dict[str, ModelState],
) -> dict[str, Any]:
    """A selector's listing: loaded when a local target is (for ``pin``, the first one)."""
    targets = (
        selector.targets[:1] if selector.strategy is SelectorStrategy.PIN else selector.targets
    )
    local = [services.router.resolve_local(t) for t in targets]
    loaded = any(
        states.get(m) in (ModelState.READY, ModelState.STARTING) for m in local if m is not None
    )
    meta: dict[str, Any] = {
        **selector.metadata,
        "type": "selector",
        "strategy": selector.strategy.value,
        "targets": list(selector.targets),
    }
    if selector.strategy is SelectorStrategy.SPILLOVER:
        meta["spillover"] = selector.settings.spillover
    record: dict[str, Any] = {
        "id": selector_id,
        "object": "model",
        "created": created,
        "owned_by": "swapd",
        "status": ModelState.READY.value if loaded else ModelState.STOPPED.value,
        "meta": {"llamaswap": meta},
    }
    if selector.name.strip():
        record["name"] = selector.name.strip()
    if selector.description.strip():
        record["description"] = selector.description.strip()
    return record


def _add_capabilities(record: dict[str, Any], model: ModelConfig) -> None:
    """``capabilities`` fields, and ``meta`` (user metadata; ``n_ctx`` with a context)."""
    fields = capability_fields(model.capabilities)
    record.update(fields)
    metadata = dict(model.metadata)
    if fields:
        for key in SHADOWED_METADATA:
            metadata.pop(key, None)
    meta: dict[str, Any] = {"llamaswap": metadata} if metadata else {}
    if model.capabilities.context > 0:
        meta["n_ctx"] = model.capabilities.context
    if meta:
        record["meta"] = meta


def add_progress_fields(services: Services, model_id: str, entry: dict[str, Any]) -> None:
    """While ``model_id`` loads: ``progress`` on its listing entry, the ``loadProgress``
    event's fields without ``model`` (docs/load-progress.md); otherwise nothing."""
    reading = None if services.progress is None else services.progress.current(model_id)
    if reading is not None:
        fields = reading.as_json()
        del fields["model"]
        entry["progress"] = fields


async def add_memory_fields(supervisor: Supervisor, body: dict[str, Any]) -> None:
    """With ``memory.budgets``: each running model's ``footprint`` (bytes per device and
    its source: declared, learned or estimate; null when nothing is known) and, under
    ``memory``, each device's budget, what swapd's models hold by their footprints, what
    is left of the budget, and the device's own total/used/free (docs/memory.md)."""
    if not supervisor.budgets:
        return
    for entry in body["running"]:
        entry["footprint"] = footprint_json(supervisor, entry["model"])
    devices = await supervisor.device_memory()
    report = device_report(supervisor.budgets, supervisor.memory_held(), devices)
    body["memory"] = {"devices": report}


def footprint_json(supervisor: Supervisor, model_id: str) -> dict[str, Any] | None:
    """``{"bytes": {device: n}, "source": "declared" | "learned" | "estimate"}`` as
    admission counts ``model_id`` now; None without budgets, or when nothing is known."""
    if not supervisor.budgets:
        return None
    try:
        footprint = supervisor.footprint(model_id)
    except KeyError:  # a model the supervisor does not have (yet): mid-reload
        return None
    if footprint is None:
        return None
    return {"bytes": dict(footprint.bytes_on), "source": footprint.source.value}


def _add_footprint_meta(record: dict[str, Any], supervisor: Supervisor, model_id: str) -> None:
    """With budgets: the model's footprint under ``meta.swapd.footprint`` (swapd's own
    key next to llama-swap's ``meta.llamaswap``)."""
    footprint = footprint_json(supervisor, model_id)
    if footprint is not None:
        record.setdefault("meta", {}).setdefault("swapd", {})["footprint"] = footprint


async def resident_sizes(supervisor: Supervisor) -> dict[str, int]:
    """Host memory (PSS, else RSS) of each running model's whole process group, by model."""
    groups = {
        s.model: s.pid for s in supervisor.statistics() if s.pid is not None and s.state in RUNNING
    }

    def measure() -> dict[str, int]:  # /proc reads block: run in a worker thread
        return {model: group_resident_bytes(pgid) for model, pgid in groups.items()}

    return await trio.to_thread.run_sync(measure) if groups else {}


async def add_resident_fields(supervisor: Supervisor, body: dict[str, Any]) -> None:
    """Each running model's ``rss`` (bytes; null while it has no process group)."""
    sizes = await resident_sizes(supervisor)
    for entry in body["running"]:
        entry["rss"] = sizes.get(entry["model"])


def register(app: Quart, services: Services) -> None:
    supervisor = services.supervisor

    def local_model(name: str) -> str:
        model_id = services.router.resolve_local(name)
        if model_id is None:
            raise ModelNotFound(f"model '{name}' not found")
        return model_id

    async def list_models() -> Response:
        records = scopes.in_scope(services, model_list(services))
        response = json_response(200, {"object": "list", "data": records})
        origin = request.headers.get("origin")
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"  # the answer differs by Origin: caches must know
        return response

    async def running() -> Response:
        stats = {s.model: s for s in supervisor.statistics()}
        view = view_of(services)  # a key limited to some models sees only those
        entries: list[dict[str, object]] = []
        for model_id, stat in sorted(stats.items()):
            if (stat.state not in RUNNING and not stat.gave_up) or not view.shows(model_id):
                continue
            spec = supervisor.runner(model_id).spec  # a model a reload removed may drain
            entries.append(
                {
                    "model": model_id,
                    # a kept model that crashed too often is listed as failed
                    "state": "failed" if stat.gave_up else stat.state.value,
                    "crashes": stat.crashes,
                    "lastError": stat.last_error,
                    "cmd": redact_command(spec.cmd, services.config),
                    "proxy": spec.proxy,
                    "ttl": spec.ttl,
                    "name": spec.name,
                    "description": spec.description,
                    "pid": stat.pid,
                    "inFlight": stat.in_flight,
                    "waiting": stat.waiting,
                }
            )
            add_progress_fields(services, model_id, entries[-1])
            if supervisor.kv_cache is not None and spec.kv_cache.enabled:
                entries[-1]["kvCache"] = supervisor.kv_cache.summary(model_id)
        body: dict[str, Any] = {"running": entries}
        await add_memory_fields(supervisor, body)
        await add_resident_fields(supervisor, body)
        return json_response(200, body)

    async def load(model: str) -> Response:
        model_id = local_model(model)
        await supervisor.load(model_id)
        return json_response(200, {"msg": "ok", "model": model_id, "state": "ready"})

    async def sleep(model: str) -> Response:
        model_id = local_model(model)
        await supervisor.sleep(model_id)
        state = supervisor.runner(model_id).state.value
        return json_response(200, {"msg": "ok", "model": model_id, "state": state})

    async def wake(model: str) -> Response:
        model_id = local_model(model)
        await supervisor.load(model_id)  # a request wakes an asleep model, or starts it
        return json_response(200, {"msg": "ok", "model": model_id, "state": "ready"})

    async def unload_one(model: str) -> Response:
        await supervisor.unload(local_model(model))
        return Response("OK", content_type="text/plain; charset=utf-8")

    async def unload_all_json() -> Response:
        await supervisor.unload()
        return json_response(200, {"msg": "ok"})

    async def unload_all_text() -> Response:
        await supervisor.unload()
        return Response("OK", content_type="text/plain; charset=utf-8")

    async def health() -> Response:
        return Response("OK", content_type="text/plain; charset=utf-8")

    async def version() -> Response:
        return json_response(
            200, {"version": __version__, "commit": "unknown", "build_date": "unknown"}
        )

    async def root() -> Redirect:
        return redirect("/ui/", 302)

    app.add_url_rule("/v1/models", "models", list_models, methods=["GET"])
    app.add_url_rule("/models", "models-short", list_models, methods=["GET"])
    app.add_url_rule("/running", "running", running, methods=["GET"])
    app.add_url_rule("/api/models/load/<path:model>", "load", load, methods=["POST"])
    app.add_url_rule("/api/models/unload/<path:model>", "unload-one", unload_one, methods=["POST"])
    app.add_url_rule("/api/models/sleep/<path:model>", "sleep", sleep, methods=["POST"])
    app.add_url_rule("/api/models/wake/<path:model>", "wake", wake, methods=["POST"])
    app.add_url_rule("/api/models/unload", "unload-all", unload_all_json, methods=["POST"])
    app.add_url_rule("/unload", "unload-all-text", unload_all_text, methods=["GET"])
    app.add_url_rule("/health", "health", health, methods=["GET"])
    app.add_url_rule("/wol-health", "wol-health", health, methods=["GET"])
    app.add_url_rule("/api/version", "version", version, methods=["GET"])
    app.add_url_rule("/", "root", root, methods=["GET"])
