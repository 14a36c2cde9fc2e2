"""The configuration model: frozen attrs classes, one per YAML mapping.

This module is the single source of truth for the config file: every key, its YAML
spelling, its legacy spellings, its default, its bounds and its documentation live on
the field (see :func:`setting`). The loader (``shape.py``), the cattrs converter
(``structure.py``) and the JSON schema (``schema.py``) are all derived from it, so they
cannot drift apart.

Rules:
- values are immutable once loaded; change them with ``attrs.evolve``;
- fields marked ``derived`` are not YAML keys: the loader computes them (ports, argv);
- no I/O and no third-party imports besides attrs.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "DEFAULT_GROUP",
    "ApiKey",
    "KeyRole",
    "Capabilities",
    "Compat",
    "Modality",
    "Profile",
    "Selector",
    "SelectorStrategy",
    "Timeouts",
    "Upstream",
    "Config",
    "Endpoint",
    "Filters",
    "GroupConfig",
    "Hooks",
    "HttpMethod",
    "KvCacheConfig",
    "KvCacheModelConfig",
    "WarmConfig",
    "LogLevel",
    "LogToStdout",
    "MacroValue",
    "MatrixConfig",
    "MemoryConfig",
    "ModelConfig",
    "PeerConfig",
    "RoutingConfig",
    "SleepMode",
    "StartupHooks",
    "StoreConfig",
    "setting",
]

#: The implicit group every model without an explicit group belongs to.
DEFAULT_GROUP = "(default)"

#: Go time layouts llama-swap accepts for ``logTimeFormat`` (lower-case names).
LOG_TIME_FORMATS = (
    "",
    "ansic",
    "unixdate",
    "rubydate",
    "rfc822",
    "rfc822z",
    "rfc850",
    "rfc1123",
    "rfc1123z",
    "rfc3339",
    "rfc3339nano",
    "kitchen",
    "stamp",
    "stampmilli",
    "stampmicro",
    "stampnano",
)

MacroValue = str | int | float | bool


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class LogToStdout(enum.StrEnum):
    PROXY = "proxy"
    UPSTREAM = "upstream"
    BOTH = "both"
    NONE = "none"


class SleepMode(enum.StrEnum):
    ENABLE = "enable"
    DISABLE = "disable"


class HttpMethod(enum.StrEnum):
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"


def setting(
    default: Any = attrs.NOTHING,
    *,
    key: str,
    doc: str,
    factory: Any = None,
    aliases: tuple[str, ...] = (),
    minimum: int | None = None,
    clamp: bool = False,
    casefold: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """Declare one config key.

    ``key`` is the YAML spelling and ``aliases`` the legacy spellings also accepted
    (llama-swap's ``on_startup``, ``strip_params``). A field with neither ``default`` nor
    ``factory`` is required. ``minimum`` is an error bound, or with ``clamp=True`` a
    floor that out-of-range values are raised to with a warning (what llama-swap does
    for ``healthCheckTimeout``). ``casefold`` makes choice matching case-insensitive.
    """
    metadata = {
        "key": key,
        "doc": doc,
        "aliases": aliases,
        "minimum": minimum,
        "clamp": clamp,
        "casefold": casefold,
        "choices": choices,
    }
    if factory is not None:
        return attrs.field(factory=factory, metadata=metadata)
    return attrs.field(default=default, metadata=metadata)


def derived(default: Any = None, *, factory: Any = None) -> Any:
    """A field the loader computes; never read from YAML, never in the schema."""
    if factory is not None:
        return attrs.field(factory=factory, metadata={"derived": True})
    return attrs.field(default=default, metadata={"derived": True})


@attrs.frozen(kw_only=True)
class Endpoint:
    """One HTTP call of a sleep or wake sequence."""

    endpoint: str = setting(key="endpoint", doc="Path (or URL) called on the model's proxy.")
    method: HttpMethod = setting(
        HttpMethod.POST, key="method", casefold=True, doc="GET, POST, PUT or PATCH."
    )
    body: str = setting("", key="body", doc="Request body; sent as application/json.")
    timeout: int = setting(
        0,
        key="timeout",
        minimum=0,
        doc="Seconds this call may take; 0 uses sleepRequestTimeout/wakeRequestTimeout.",
    )


@attrs.frozen(kw_only=True)
class Filters:
    """Request-body rewriting applied before forwarding (models and peers)."""

    strip_params: str = setting(
        "",
        key="stripParams",
        aliases=("strip_params",),
        doc="Comma-separated body keys to remove. `model` is never removed.",
    )
    set_params: Mapping[str, Any] = setting(
        key="setParams",
        factory=dict,
        doc="Body keys to set or override (any JSON value). `model` is never set.",
    )
    set_params_by_id: Mapping[str, Mapping[str, Any]] = setting(
        key="setParamsByID",
        factory=dict,
        doc="Per requested name: body keys set after setParams. Each key (macros expanded) "
        "other than the model's ID becomes an alias of the model.",
    )

    def stripped_keys(self) -> tuple[str, ...]:
        """``stripParams`` cleaned: trimmed, de-duplicated, sorted, without ``model``."""
        keys = {part.strip() for part in self.strip_params.split(",")}
        return tuple(sorted(k for k in keys if k and k != "model"))

    def set_items(self, requested: str | None = None) -> tuple[tuple[str, Any], ...]:
        """``setParams`` in key order, without ``model``; then, when the ``requested`` name
        has a ``setParamsByID`` entry, its keys in order (applied later, so they win)."""
        items = sorted((k, v) for k, v in self.set_params.items() if k != "model")
        by_id = self.set_params_by_id.get(requested or "", {})
        items.extend(sorted((k, v) for k, v in by_id.items() if k != "model"))
        return tuple(items)


# --- llama-swap v250 settings (see docs/compatibility.md) ---------------------------------


class Modality(enum.StrEnum):
    TEXT = "text"
    AUDIO = "audio"
    IMAGE = "image"


class SelectorStrategy(enum.StrEnum):
    WARM = "warm"
    PIN = "pin"
    SPILLOVER = "spillover"


@attrs.frozen(kw_only=True)
class Timeouts:
    """Seconds for the HTTP exchange with an upstream; 0 turns one off."""

    connect: int = setting(
        30,
        key="connect",
        minimum=0,
        doc="Connecting to the upstream (the TLS handshake included); taken when the "
        "upstream's connection pool is made.",
    )
    keepalive: int = setting(
        30, key="keepalive", minimum=0, doc="TCP keep-alive period (not applied by swapd)."
    )
    response_header: int = setting(
        0,
        key="responseHeader",
        minimum=0,
        doc="Waiting for the response headers after the request was sent; peers default to 60.",
    )
    tls_handshake: int = setting(
        10, key="tlsHandshake", minimum=0, doc="The TLS handshake (swapd: part of connect)."
    )
    expect_continue: int = setting(
        1, key="expectContinue", minimum=0, doc="Waiting for 100-continue (not applied by swapd)."
    )
    idle_conn: int = setting(
        90,
        key="idleConn",
        minimum=0,
        doc="Idle pooled connection lifetime (not applied: swapd keeps them until the "
        "upstream closes them).",
    )


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a model can do, shown in /v1/models the way OpenRouter lists models."""

    inputs: tuple[Modality, ...] = setting(
        key="in", factory=tuple, doc="Input modalities: text, audio, image."
    )
    outputs: tuple[Modality, ...] = setting(
        key="out", factory=tuple, doc="Output modalities: text, audio, image."
    )
    tools: bool = setting(False, key="tools", doc="Function calling.")
    reranker: bool = setting(False, key="reranker", doc="A reranking model.")
    context: int = setting(0, key="context", minimum=0, doc="Context length in tokens; 0: unset.")

    @property
    def configured(self) -> bool:
        return bool(self.inputs or self.outputs or self.tools or self.reranker or self.context)


@attrs.frozen(kw_only=True)
class Compat:
    """Workarounds for particular upstreams."""

    ignore_websockets: bool = setting(
        False,
        key="ignoreWebsockets",
        doc="WebSockets through /upstream/ bypass the scheduler: they cannot start the "
        "model (409 while it is not ready) and do not keep it loaded.",
    )


@attrs.frozen(kw_only=True)
class Upstream:
    """The ``/upstream/<model>/...`` passthrough."""

    ignore_paths: tuple[str, ...] = setting(
        key="ignorePaths",
        factory=tuple,
        doc="Regular expressions for paths (after /upstream/<model>) that never load a "
        "model: a match on a model that is not ready answers 409. Empty: static assets "
        "(js, json, css, png, gif, jpg, jpeg, ico, txt).",
    )


@attrs.frozen(kw_only=True)
class Performance:
    disabled: bool = setting(False, key="disabled", doc="Turn system sampling off.")
    every: str = setting("5s", key="every", doc="Sampling period, a Go duration (at least 5s).")


@attrs.frozen(kw_only=True)
class UiActivity:
    session_id: tuple[str, ...] = setting(
        key="session_id", factory=tuple, doc="Request headers shown as a session column."
    )


@attrs.frozen(kw_only=True)
class Ui:
    activity: UiActivity = setting(key="activity", factory=UiActivity, doc="The activity view.")


@attrs.frozen(kw_only=True)
class Profile:
    """A named set of pins: while active, a request for a pin's name goes to its target."""

    description: str = setting("", key="description", doc="Shown in /api/profiles.")
    pins: Mapping[str, str | None] = setting(
        key="pins",
        factory=dict,
        doc="Requested name → model, alias, peer model or selector; empty disables the name.",
    )


@attrs.frozen(kw_only=True)
class SelectorSettings:
    spillover: int = setting(
        1, key="spillover", minimum=1, doc="Requests a spillover target takes before the next."
    )


@attrs.frozen(kw_only=True)
class Selector:
    """A virtual model ID that picks one of its targets per request."""

    strategy: SelectorStrategy = setting(key="strategy", doc="pin, warm or spillover.")
    targets: tuple[str, ...] = setting(key="targets", factory=tuple, doc="Models, in order.")
    name: str = setting("", key="name", doc="Display name.")
    description: str = setting("", key="description", doc="Description.")
    unlisted: bool = setting(False, key="unlisted", doc="Hide from /v1/models.")
    metadata: Mapping[str, Any] = setting(key="metadata", factory=dict, doc="Free-form values.")
    settings: SelectorSettings = setting(
        key="settings", factory=SelectorSettings, doc="Strategy settings."
    )


# --- KV-cache keeping across swaps (docs/kvcache.md) -------------------------------------


@attrs.frozen(kw_only=True)
class KvCacheModelConfig:
    """Whether, and how long, swapd saves and restores one model's llama-server slots."""

    enabled: bool = setting(
        False,
        key="enabled",
        doc="Save the model's slots before it is stopped and restore them when it starts "
        "again with the same command line; its `cmd` needs `--slot-save-path ${KV_CACHE_DIR}`.",
    )
    save_timeout: int = setting(
        5,
        key="saveTimeout",
        minimum=1,
        doc="Seconds all saves may take before the stop goes on without them.",
    )
    restore_timeout: int = setting(
        5,
        key="restoreTimeout",
        minimum=1,
        doc="Seconds all restores may take before the first request goes on without them.",
    )


# --- Keeping a model warm (docs/load-progress.md) ------------------------------------------


@attrs.frozen(kw_only=True)
class WarmConfig:
    """When swapd loads a model again by itself, so its next user does not wait."""

    after_ttl: bool = setting(
        False,
        key="afterTtl",
        doc="After the model's `ttl` unloads it, load it again (a fresh process) as soon as "
        "no model has requests in flight or waiting and none is loading.",
    )
    on_ui_open: bool = setting(
        False,
        key="onUiOpen",
        doc="Load the model when the web UI is opened (GET /ui/), if nothing is busy.",
    )


@attrs.frozen(kw_only=True)
class KvCacheConfig:
    """Where saved slots live and how much disk they may fill (docs/kvcache.md)."""

    dir: str = setting(
        "",
        key="dir",
        doc="Directory of saved slots, given to `cmd` as `${KV_CACHE_DIR}`; empty: "
        "`$XDG_CACHE_HOME/swapd/kvcache` (`~/.cache/swapd/kvcache`).",
    )
    budget: str = setting(
        "2GiB",
        key="budget",
        doc="Disk the saved slots may fill (`2GiB`, `500MB`); least recently used ones are "
        "deleted beyond it.",
    )


@attrs.frozen(kw_only=True)
class ModelConfig:
    """One model swapd can start. The mapping key in ``models`` is its ID."""

    cmd: str = setting(
        key="cmd",
        doc="Command that starts the inference server. Lines starting with # are comments; "
        "a trailing backslash continues a line; POSIX quoting; no shell.",
    )
    cmd_stop: str = setting(
        "",
        key="cmdStop",
        doc="Command run to stop the server instead of SIGTERM; ${PID} is the server's PID.",
    )
    proxy: str = setting(
        "http://localhost:${PORT}",
        key="proxy",
        doc="Base URL requests are forwarded to.",
    )
    aliases: tuple[str, ...] = setting(
        key="aliases", factory=tuple, doc="Other names this model answers to (globally unique)."
    )
    env: tuple[str, ...] = setting(
        key="env", factory=tuple, doc="NAME=value entries added to the server's environment."
    )
    check_endpoint: str = setting(
        "/health",
        key="checkEndpoint",
        doc="Path polled until it answers 200 before the model is ready; `none` disables.",
    )
    ttl: int = setting(
        -1,
        key="ttl",
        doc="Unload after this many idle seconds; 0 never unloads; -1 inherits globalTTL. "
        "Loaded configs hold the resolved value.",
    )
    unlisted: bool = setting(False, key="unlisted", doc="Hide from /v1/models.")
    use_model_name: str = setting(
        "", key="useModelName", doc="Model name written into requests sent upstream."
    )
    concurrency_limit: int = setting(
        0,
        key="concurrencyLimit",
        doc="Requests served at once; more wait in a bounded queue. 0 means the default, 10.",
    )
    name: str = setting("", key="name", doc="Display name shown in listings.")
    description: str = setting("", key="description", doc="Description shown in listings.")
    send_loading_state: bool | None = setting(
        None,
        key="sendLoadingState",
        doc="Stream loading progress to waiting chat clients; unset inherits the global value.",
    )
    metadata: Mapping[str, Any] = setting(
        key="metadata",
        factory=dict,
        doc="Free-form values shown in /v1/models under meta.llamaswap (macros keep types).",
    )
    sleep_mode: SleepMode | None = setting(
        None,
        key="sleepMode",
        casefold=True,
        doc="`enable` puts the model to sleep instead of stopping it when swapped out; "
        "unset enables it when both endpoint lists are given.",
    )
    sleep_endpoints: tuple[Endpoint, ...] = setting(
        key="sleepEndpoints", factory=tuple, doc="HTTP calls that put the server to sleep."
    )
    wake_endpoints: tuple[Endpoint, ...] = setting(
        key="wakeEndpoints", factory=tuple, doc="HTTP calls that wake the server up."
    )
    filters: Filters = setting(
        key="filters", factory=Filters, doc="Request-body rewriting for this model."
    )
    macros: Mapping[str, MacroValue] = setting(
        key="macros", factory=dict, doc="Model-level macros; override global macros of the name."
    )
    # llama-swap v250 settings
    unload_timeout: int = setting(
        0,
        key="unloadTimeout",
        doc="Seconds a stop of this model waits after SIGTERM (or cmdStop) before SIGKILL; "
        "0 inherits the global unloadTimeout. Loaded configs hold the resolved value.",
    )
    timeouts: Timeouts = setting(
        key="timeouts", factory=Timeouts, doc="Timeouts of the HTTP exchange with the upstream."
    )
    capabilities: Capabilities = setting(
        key="capabilities", factory=Capabilities, doc="What the model can do (/v1/models)."
    )
    compat: Compat = setting(key="compat", factory=Compat, doc="Workarounds.")

    # Memory-aware admission (docs/memory.md).
    footprint: Mapping[str, str] = setting(
        key="footprint",
        factory=dict,
        doc="Memory this model holds per device (`ram`, `gpu0`, ...) as sizes, e.g. "
        "`{gpu0: 9GiB, ram: 2GiB}`; omitted: estimated, then measured.",
    )
    footprint_learn: bool = setting(
        True,
        key="footprintLearn",
        doc="Replace the declared or estimated footprint by the peak measured while the model "
        "runs; false trusts `footprint` as written.",
    )

    # KV-cache keeping across swaps (docs/kvcache.md).
    kv_cache: KvCacheModelConfig = setting(
        key="kvCache",
        factory=KvCacheModelConfig,
        doc="Save and restore llama-server's slots across swaps (swapd's own).",
    )
    # Loading again without a request (swapd's own; docs/load-progress.md).
    warm: WarmConfig = setting(
        key="warm",
        factory=WarmConfig,
        doc="Load the model again after its TTL unload, or when the UI opens (swapd's own).",
    )

    # Computed by the loader.
    port: int | None = derived()
    argv: tuple[str, ...] = derived(factory=tuple)
    stop_argv: tuple[str, ...] = derived(factory=tuple)

    @property
    def sleep_enabled(self) -> bool:
        if self.sleep_mode is SleepMode.DISABLE:
            return False
        return bool(self.sleep_endpoints) and bool(self.wake_endpoints)

    @property
    def effective_concurrency_limit(self) -> int:
        return self.concurrency_limit if self.concurrency_limit > 0 else 10

    @property
    def health_check_disabled(self) -> bool:
        return self.check_endpoint.strip() == "none"


@attrs.frozen(kw_only=True)
class GroupConfig:
    """A set of models with a shared swapping rule."""

    swap: bool = setting(True, key="swap", doc="Only one member runs at a time.")
    exclusive: bool = setting(
        True, key="exclusive", doc="Loading a member stops the other non-persistent groups."
    )
    persistent: bool = setting(
        False, key="persistent", doc="Never stopped because another group is exclusive."
    )
    members: tuple[str, ...] = setting(
        key="members", factory=tuple, doc="Model IDs (not aliases) in this group."
    )


@attrs.frozen(kw_only=True)
class MatrixConfig:
    """llama-swap's matrix: named sets of models that may run together (docs/routing.md)."""

    vars: Mapping[str, str] = setting(
        key="vars",
        factory=dict,
        doc="Short names for model IDs (not aliases) used in `sets` and `evict_costs`; "
        "keys: letters, digits, `-` and `.`, at most 32.",
    )
    evict_costs: Mapping[str, int] = setting(
        key="evict_costs",
        factory=dict,
        doc="What stopping a model costs the solver (a positive integer; default 1), by var "
        "or model ID.",
    )
    sets: Mapping[str, str] = setting(
        key="sets",
        factory=dict,
        doc="Named expressions over vars and model IDs: `&` together, `|` either, `( )`, "
        "`+set` inlines another set. Order breaks ties.",
    )


@attrs.frozen(kw_only=True)
class RouterSettings:
    groups: Mapping[str, GroupConfig] = setting(
        key="groups", factory=dict, doc="Swap groups by ID (used with `use: group`)."
    )
    matrix: MatrixConfig | None = setting(
        None, key="matrix", doc="The matrix (used with `use: matrix`)."
    )


@attrs.frozen(kw_only=True)
class RouterConfig:
    use: str = setting(
        "group", key="use", doc="`group` (swap groups) or `matrix` (the matrix solver)."
    )
    settings: RouterSettings = setting(
        key="settings", factory=RouterSettings, doc="Each router's settings."
    )


@attrs.frozen(kw_only=True)
class FifoSettings:
    priority: Mapping[str, int] = setting(
        key="priority",
        factory=dict,
        doc="Queue priority by model ID or alias (default 0): higher is served first, equal "
        "ones in arrival order.",
    )


@attrs.frozen(kw_only=True)
class SchedulerSettings:
    fifo: FifoSettings = setting(key="fifo", factory=FifoSettings, doc="The fifo scheduler.")


@attrs.frozen(kw_only=True)
class SchedulerConfig:
    use: str = setting("fifo", key="use", doc="`fifo`, the only scheduler.")
    settings: SchedulerSettings = setting(
        key="settings", factory=SchedulerSettings, doc="Each scheduler's settings."
    )


@attrs.frozen(kw_only=True)
class RoutingConfig:
    """llama-swap v250's home of the router (groups or matrix) and the scheduler."""

    router: RouterConfig = setting(
        key="router", factory=RouterConfig, doc="What may run together (docs/routing.md)."
    )
    scheduler: SchedulerConfig = setting(
        key="scheduler", factory=SchedulerConfig, doc="The order waiting requests are served in."
    )


@attrs.frozen(kw_only=True)
class PeerConfig:
    """A remote OpenAI-compatible server that serves models this machine lacks."""

    proxy: str = setting(key="proxy", doc="Base URL; the request path is appended.")
    api_key: str = setting(
        "", key="apiKey", doc="Sent as `Authorization: Bearer` and `x-api-key` when set."
    )
    models: tuple[str, ...] = setting(key="models", doc="Model names served by the peer.")
    filters: Filters = setting(
        key="filters", factory=Filters, doc="Request-body rewriting for this peer."
    )
    timeouts: Timeouts = setting(
        key="timeouts",
        factory=lambda: Timeouts(response_header=60),
        doc="Timeouts of the HTTP exchange with the peer (responseHeader defaults to 60).",
    )


@attrs.frozen(kw_only=True)
class StartupHooks:
    preload: tuple[str, ...] = setting(
        key="preload", factory=tuple, doc="Models started in the background at startup."
    )


@attrs.frozen(kw_only=True)
class Hooks:
    on_startup: StartupHooks = setting(
        key="onStartup",
        aliases=("on_startup",),
        factory=StartupHooks,
        doc="Actions run when swapd starts or reloads its config.",
    )


@attrs.frozen(kw_only=True)
class MemoryConfig:
    """Memory budgets per device for memory-aware admission (docs/memory.md)."""

    budgets: Mapping[str, str] = setting(
        key="budgets",
        factory=dict,
        doc="How much of each device (`ram`, `gpu0`, ...) loaded models may fill: a size "
        "(`22GiB`, `512MiB`, `4GB`) or a share of its capacity (`80%`). A device without a "
        "budget is not limited.",
    )


@attrs.frozen(kw_only=True)
class StoreConfig:
    """Where the activity history is kept (llama-swap's ``store``) and for how long."""

    path: str | None = setting(
        None,
        key="path",
        doc="SQLite file for the request and model-load history; `:memory:` keeps it in "
        "memory. Unset: `$STATE_DIRECTORY/activity.db` under systemd, else "
        "`$XDG_STATE_HOME/swapd/activity.db` (`~/.local/state/swapd/activity.db`). "
        "A file swapd cannot use is logged and replaced by memory; read at start only.",
    )
    max_rows: int = setting(
        100_000,
        key="maxRows",
        minimum=0,
        doc="Newest requests (and loads) a file store keeps; 0: no limit. A store in "
        "memory keeps `metricsMaxInMemory` rows instead.",
    )
    max_age_days: int = setting(
        30,
        key="maxAgeDays",
        minimum=0,
        doc="Rows older than this many days are deleted; 0: kept until `maxRows` drops them.",
    )


class KeyRole(enum.StrEnum):
    """What an API key may do besides inference (docs/keys.md)."""

    INFERENCE = "inference"
    OBSERVER = "observer"
    ADMIN = "admin"


@attrs.frozen(kw_only=True)
class ApiKey:
    """One named API key with its scope and limits (swapd's own ``keys`` section)."""

    name: str = setting(key="name", doc="Shown in activity rows, logs and metrics; never secret.")
    secret: str = setting("", key="secret", doc="The key itself, inline or as `${env.NAME}`.")
    secret_file: str = setting(
        "", key="secretFile", doc="A file holding the key (surrounding whitespace ignored)."
    )
    sha256: str = setting(
        "", key="sha256", doc="The key's SHA-256 as 64 hex digits (configs in git hold no secret)."
    )
    models: tuple[str, ...] = setting(
        key="models",
        factory=lambda: ("*",),
        doc="Model IDs, aliases, peer names, `<peer>/<model>` and glob patterns the key may "
        "use; default all.",
    )
    role: KeyRole = setting(
        KeyRole.INFERENCE,
        key="role",
        doc="`inference` (model routes), `observer` (plus read-only metrics, activity, "
        "events, logs) or `admin` (everything).",
    )
    max_concurrent: int = setting(
        0, key="maxConcurrent", minimum=0, doc="Requests in flight at once; 0: no limit."
    )
    requests_per_minute: int = setting(
        0, key="requestsPerMinute", minimum=0, doc="Requests started per minute; 0: no limit."
    )
    daily_tokens: int = setting(
        0,
        key="dailyTokens",
        minimum=0,
        doc="Tokens (prompt + completion) per UTC day; 0: no limit.",
    )
    #: SHA-256 of the secret, hex (computed by the loader from whichever form was given).
    digest: str = derived("")


@attrs.frozen(kw_only=True)
class Config:
    """A whole, validated configuration."""

    health_check_timeout: int = setting(
        120,
        key="healthCheckTimeout",
        minimum=15,
        clamp=True,
        doc="Seconds a model may take to become healthy; values below 15 are raised to 15.",
    )
    sleep_request_timeout: int = setting(
        10,
        key="sleepRequestTimeout",
        minimum=1,
        clamp=True,
        doc="Default seconds for one sleep call; values below 1 are raised to 1.",
    )
    wake_request_timeout: int = setting(
        10,
        key="wakeRequestTimeout",
        minimum=1,
        clamp=True,
        doc="Default seconds for one wake call; values below 1 are raised to 1.",
    )
    log_level: LogLevel = setting(
        LogLevel.INFO, key="logLevel", casefold=True, doc="debug, info, warn or error."
    )
    log_time_format: str = setting(
        "",
        key="logTimeFormat",
        casefold=True,
        choices=LOG_TIME_FORMATS,
        doc="Timestamp layout for swapd's log lines (Go layout names); empty: none.",
    )
    log_to_stdout: LogToStdout = setting(
        LogToStdout.PROXY, key="logToStdout", doc="proxy, upstream, both or none."
    )
    log_requests: bool = setting(False, key="logRequests", doc="Deprecated; ignored.")
    metrics_max_in_memory: int = setting(
        1000,
        key="metricsMaxInMemory",
        doc="Token-metrics records kept, and the activity rows of a store in memory; "
        "0 or less means 1000.",
    )
    capture_buffer: int = setting(
        5, key="captureBuffer", doc="MiB kept for request/response captures; 0 disables."
    )
    start_port: int = setting(
        5800, key="startPort", minimum=1, doc="First port handed out through ${PORT}."
    )
    send_loading_state: bool = setting(
        False, key="sendLoadingState", doc="Default for the per-model sendLoadingState."
    )
    max_swap_wait: int = setting(
        10,
        key="maxSwapWait",
        minimum=0,
        doc="Seconds a request for another model waits while a loaded, ready model keeps "
        "admitting newer requests (the clock starts when that model is ready, never during "
        "a load); then it serves only what joined its load or came earlier, drains and is "
        "swapped out.",
    )
    max_queued_requests: int = setting(
        256,
        key="maxQueuedRequests",
        minimum=1,
        doc="Requests that may wait for one model; more are refused with 429 and Retry-After.",
    )
    include_aliases_in_list: bool = setting(
        False, key="includeAliasesInList", doc="List aliases as models in /v1/models."
    )
    api_keys: tuple[str, ...] = setting(
        key="apiKeys", factory=tuple, doc="Keys clients must present; empty: no auth."
    )
    keys: tuple[ApiKey, ...] = setting(
        key="keys",
        factory=tuple,
        doc="Named API keys with model scopes, roles and limits (swapd's own; docs/keys.md). "
        "`apiKeys` entries stay full-access keys.",
    )
    # swapd's own (not llama-swap's): the DNS-rebinding guard and the stalled-reader cut.
    allowed_hosts: tuple[str, ...] = setting(
        key="allowedHosts",
        factory=tuple,
        doc="Host names a request to a loopback listener may carry besides localhost, "
        "IP addresses and this machine's name (DNS-rebinding guard); `*` allows any.",
    )
    send_timeout: int = setting(
        60,
        key="sendTimeout",
        minimum=0,
        doc="Seconds a response may wait on a client that reads nothing before the request "
        "is cut and its model freed; 0: wait forever.",
    )
    macros: Mapping[str, MacroValue] = setting(
        key="macros", factory=dict, doc="Reusable ${name} snippets, expanded in order."
    )
    models: Mapping[str, ModelConfig] = setting(key="models", factory=dict, doc="Models by ID.")
    groups: Mapping[str, GroupConfig] = setting(
        key="groups",
        factory=dict,
        doc="Swap groups by ID (legacy home of `routing.router.settings.groups`).",
    )
    matrix: MatrixConfig | None = setting(
        None,
        key="matrix",
        doc="Legacy home of `routing.router.settings.matrix`; not together with `groups`.",
    )
    routing: RoutingConfig = setting(
        key="routing",
        factory=RoutingConfig,
        doc="Router (groups or matrix) and scheduler; not together with top-level "
        "`groups`/`matrix` (docs/routing.md).",
    )
    hooks: Hooks = setting(key="hooks", factory=Hooks, doc="Lifecycle hooks.")
    peers: Mapping[str, PeerConfig] = setting(
        key="peers", factory=dict, doc="Remote servers by ID."
    )
    store: StoreConfig = setting(
        key="store", factory=StoreConfig, doc="The activity history (requests, model loads)."
    )
    memory: MemoryConfig = setting(
        key="memory", factory=MemoryConfig, doc="Memory budgets (swapd's own; docs/memory.md)."
    )
    # llama-swap v250 settings, grouped so other additions merge cleanly
    global_ttl: int = setting(
        0, key="globalTTL", minimum=0, doc="Idle TTL (s) of models whose ttl is -1; 0: never."
    )
    unload_timeout: int = setting(
        0,
        key="unloadTimeout",
        minimum=0,
        doc="Seconds a model's stop waits after SIGTERM (or cmdStop) before SIGKILL; "
        "0: swapd's stop grace, 10 s (llama-swap's default).",
    )
    upstream: Upstream = setting(
        key="upstream", factory=Upstream, doc="The /upstream/<model>/ passthrough."
    )
    profiles: Mapping[str, Profile] = setting(
        key="profiles",
        factory=dict,
        doc="Named pin sets; at most one is active (PUT /api/profiles/active).",
    )
    selectors: Mapping[str, Selector] = setting(
        key="selectors", factory=dict, doc="Virtual model IDs that pick a target per request."
    )
    performance: Performance = setting(
        key="performance", factory=Performance, doc="System and GPU sampling for /api/performance."
    )
    ui: Ui = setting(key="ui", factory=Ui, doc="Web UI settings (not active yet).")
    kv_cache: KvCacheConfig = setting(
        key="kvCache",
        factory=KvCacheConfig,
        doc="Saved llama-server slots: directory and disk budget (swapd's own; docs/kvcache.md).",
    )

    # Computed by the loader.
    source: str = derived("")
    #: The matrix that decides eviction (``routing.router.use: matrix`` or a top-level
    #: ``matrix``); None when groups decide. ``groups`` then holds every model in
    #: ``(default)``.
    active_matrix: MatrixConfig | None = derived()
    warnings: tuple[str, ...] = derived(factory=tuple)
    #: Loaded with ``--strict`` (warnings were errors); a reload keeps the same rule.
    strict: bool = derived(False)
    #: Loaded with ``--config-dir``: the directory, and the ``--config`` file merged first.
    config_dir: str = derived("")
    config_file: str = derived("")

    def group_of(self, model_id: str) -> str:
        """The ID of the group ``model_id`` belongs to (``(default)`` if none)."""
        for group_id, group in self.groups.items():
            if model_id in group.members:
                return group_id
        return DEFAULT_GROUP
