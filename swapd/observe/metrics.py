"""Token metrics (reference section 8) and the Prometheus exposition of what the daemon measures.

Pure: no trio, no HTTP framework. The exposition text is written by ``prometheus_client``
(a custom collector over a snapshot, rendered from a private registry: nothing touches
its global registry). The proxy feeds a :class:`UsageTap` each response chunk as
it streams past and calls :meth:`UsageTap.finish` once the exchange is over; the record goes
into a :class:`MetricsStore` (which assigns ids) and, via :meth:`SwapdMetrics.observe_request`,
into the Prometheus counters and histograms rendered by :func:`render_prometheus`.

Deliberate differences from llama-swap (reference section 14, items 20-22):

* the store's ``records()`` is always a list (``[]`` when empty, never ``null``);
* a minimal record uses the same "unknown" markers as a parsed one (``cache_tokens`` and both
  rates -1, tokens 0) instead of mixing 0 and -1;
* a response with no body byte has ``duration_ms`` 0, not ~9.2e12;
* ``Content-Encoding: deflate`` is zlib-wrapped per RFC 9110; raw DEFLATE (what llama-swap
  expects) is still accepted, decided from the first two bytes;
* the body is never buffered whole: event streams keep only the usage-bearing events, JSON
  bodies are kept up to a cap, and decompression is incremental with bounded output steps.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import re
import time
import zlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import attrs
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric

__all__ = [
    "CounterFamily",
    "GaugeFamily",
    "Histogram",
    "HistogramFamily",
    "HistogramSeries",
    "Labels",
    "MetricFamily",
    "MetricsStatistics",
    "MetricsStore",
    "RATE_BUCKETS",
    "REQUEST_SECONDS_BUCKETS",
    "START_SECONDS_BUCKETS",
    "SwapdMetrics",
    "TokenMetrics",
    "decode_content",
    "UsageTap",
    "render_prometheus",
]

# --------------------------------------------------------------------------------------------
# Records


def _json_number(value: float) -> float | int:
    """Go's encoding/json writes 10.0 as ``10``; match it so records look like llama-swap's."""
    if math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _rfc3339(timestamp: float) -> str:
    """RFC 3339 in the local offset, fraction trimmed like Go's RFC3339Nano, ``Z`` for UTC."""
    when = dt.datetime.fromtimestamp(timestamp).astimezone()
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.microsecond:
        text += f".{when.microsecond:06d}".rstrip("0")
    offset = when.utcoffset() or dt.timedelta(0)
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}:{mins:02d}"


@attrs.frozen
class TokenMetrics:
    """One recorded exchange. -1 means "not reported by the upstream" for cache and rates.

    ``id`` is -1 until :meth:`MetricsStore.add` assigns the real one; ``timestamp`` is unix
    seconds (when the exchange ended).
    """

    id: int
    timestamp: float
    model: str
    cache_tokens: int = -1
    input_tokens: int = 0
    output_tokens: int = 0
    prompt_per_second: float = -1.0
    tokens_per_second: float = -1.0
    duration_ms: int = 0
    has_capture: bool = False
    # speculative decoding (llama.cpp timings.draft_n*, vLLM metrics.speculative_decoding);
    # activity rows only, not in the v193 record shape
    draft_tokens: int = -1
    draft_acc_tokens: int = -1

    def as_json(self) -> dict[str, Any]:
        """The llama-swap record shape (``/api/metrics``, the ``metrics`` event), key order kept."""
        return {
            "id": self.id,
            "timestamp": _rfc3339(self.timestamp),
            "model": self.model,
            "cache_tokens": self.cache_tokens,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "prompt_per_second": _json_number(self.prompt_per_second),
            "tokens_per_second": _json_number(self.tokens_per_second),
            "duration_ms": self.duration_ms,
            "has_capture": self.has_capture,
        }


# --------------------------------------------------------------------------------------------
# Incremental decoding

_STEP: Final = 64 * 1024  # most output one decompress call may produce: bounds bomb memory


class _DecodeError(Exception):
    pass


class _Decoder:
    """Incremental Content-Encoding decoding: identity, gzip (members may be concatenated),
    deflate (zlib-wrapped per RFC 9110 or raw RFC 1951, told apart by the zlib header check).
    """

    def __init__(self, encoding: str) -> None:
        enc = encoding.strip().lower()
        self._kind: Literal["identity", "gzip", "deflate"]
        if enc in {"gzip", "x-gzip"}:
            self._kind = "gzip"
        elif enc == "deflate":
            self._kind = "deflate"
        else:  # the reference treats unknown encodings as plain; so do we
            self._kind = "identity"
        self._obj: Any = zlib.decompressobj(16 + zlib.MAX_WBITS) if self._kind == "gzip" else None
        self._head = b""  # deflate only: bytes held until the 2-byte zlib header can be checked
        self._seen_input = False

    def feed(self, data: bytes) -> Iterable[bytes]:
        """Yield decoded pieces of at most ``_STEP`` bytes each; raises :class:`_DecodeError`."""
        if self._kind == "identity":
            if data:
                yield data
            return
        if not data:
            return
        self._seen_input = True
        if self._obj is None:
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            self._obj = zlib.decompressobj(
                zlib.MAX_WBITS if _is_zlib_header(data[0], data[1]) else -zlib.MAX_WBITS
            )
        yield from self._run(data)

    def _run(self, data: bytes) -> Iterable[bytes]:
        try:
            while True:
                if self._obj.eof:
                    rest = self._obj.unused_data + data
                    if self._kind != "gzip" or not rest.strip(b"\0"):
                        return  # trailing bytes after a deflate stream, or gzip padding
                    self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)  # next gzip member
                    data = rest
                if not data:
                    return
                out = self._obj.decompress(data, _STEP)
                data = self._obj.unconsumed_tail
                if out:
                    yield out
        except zlib.error as exc:
            raise _DecodeError(str(exc)) from exc

    def close(self) -> Iterable[bytes]:
        """Flush; a truncated compressed body is a decode failure (as in the reference)."""
        if self._kind == "identity" or not self._seen_input:
            return
        if self._obj is None:
            raise _DecodeError("compressed body shorter than its header")
        try:
            tail = self._obj.flush()
        except zlib.error as exc:
            raise _DecodeError(str(exc)) from exc
        if tail:
            yield tail
        if not self._obj.eof:
            raise _DecodeError("compressed body is truncated")


def _is_zlib_header(cmf: int, flg: int) -> bool:
    """RFC 1950: method 8, window <= 32 KiB, check bits, and no preset dictionary."""
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and ((cmf << 8) | flg) % 31 == 0 and not flg & 0x20


def decode_content(data: bytes, encoding: str, limit: int) -> bytes | None:
    """``data`` decoded per its Content-Encoding; None if it is corrupt or decodes to more
    than ``limit`` bytes (a compression bomb must not fill memory)."""
    decoder = _Decoder(encoding)
    out = bytearray()
    try:
        for piece in itertools.chain(decoder.feed(data), decoder.close()):
            out += piece
            if len(out) > limit:
                return None
    except _DecodeError:
        return None
    return bytes(out)


# --------------------------------------------------------------------------------------------
# The tap


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


_WANTED: Final = (b'"usage"', b'"timings"', b'"metrics"')


def _usage_objects(event: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """The usage objects of one stream event: ``usage``, ``response.usage`` (Responses API
    ``response.completed``), ``message.usage`` (Anthropic ``message_start``)."""
    for holder in (event, event.get("response"), event.get("message")):
        if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
            yield holder["usage"]


class UsageTap:
    """Watches one response body go by and extracts its token usage (reference 8.1).

    Memory stays bounded whatever the body size: an event stream keeps only its last
    usage-bearing event (plus Anthropic's ``message_start`` usage) and one partial line of at
    most ``max_line`` bytes; a JSON body is kept up to ``max_json`` bytes, beyond which the
    tap gives up and the record is minimal.
    """

    def __init__(
        self,
        *,
        content_type: str | None,
        content_encoding: str | None,
        path: str,
        max_json: int = 4 * 1024 * 1024,
        max_line: int = 1024 * 1024,
    ) -> None:
        self._sse = "text/event-stream" in (content_type or "").lower()
        self._infill = path.startswith("/infill")
        self._decoder = _Decoder(content_encoding or "")
        self._max_json = max_json
        self._max_line = max_line
        self._failed = False  # decode error or over the JSON cap: minimal record
        self._body = bytearray()  # JSON: the body so far; SSE: the current partial line
        self._line_overflow = False  # SSE: the current line went past max_line; skip it
        # SSE, as llama-swap v250 reads a stream: usage fields gathered across events (a
        # later non-zero value wins, so Anthropic's message_start input and message_delta
        # output combine, as do Responses-API events), the last timings and metrics objects.
        self._usage: dict[str, Any] = {}
        self._timings: object = None
        self._vllm_metrics: object = None
        self._finished = False

    def feed(self, chunk: bytes) -> None:
        """Take the next raw (still encoded) body chunk."""
        if self._failed or not chunk:
            return
        try:
            for piece in self._decoder.feed(chunk):
                if not self._take(piece):
                    return  # over the JSON cap: stop decompressing too
        except _DecodeError:
            self._fail()

    def _fail(self) -> None:
        self._failed = True
        self._body = bytearray()

    def _take(self, data: bytes) -> bool:
        """Consume decoded bytes; False once the tap has given up."""
        if not self._sse:
            if len(self._body) + len(data) > self._max_json:
                self._fail()
                return False
            self._body += data
            return True
        # Only lines holding "usage" or "timings" are parsed. A chunk (relayed chunks hold
        # several events when the upstream is faster than the client) may complete the
        # line the last one left open, with a key split across the two, and may leave one
        # open itself; the whole lines in between are looked at only where a key occurs,
        # so the token deltas, nearly every line, are never split out.
        last = data.rfind(b"\n")
        if last < 0:
            self._append_line_part(data)
            return True
        start = 0
        if self._body or self._line_overflow:
            start = data.find(b"\n") + 1
            self._append_line_part(data[: start - 1])
            if not self._line_overflow:
                self._line(bytes(self._body))
            self._body.clear()
            self._line_overflow = False
        while start < last:
            hits = [at for key in _WANTED if (at := data.find(key, start, last)) >= 0]
            if not hits:
                break
            hit = min(hits)
            line_start = data.rfind(b"\n", start, hit) + 1 or start
            line_end = data.find(b"\n", hit)
            if line_end - line_start <= self._max_line:
                self._line(data[line_start:line_end])
            start = line_end + 1
        self._append_line_part(data[last + 1 :])
        return True

    def _append_line_part(self, part: bytes) -> None:
        if self._line_overflow:
            return
        if len(self._body) + len(part) > self._max_line:
            self._line_overflow = True
            self._body.clear()
        else:
            self._body += part

    def _line(self, line: bytes) -> None:
        line = line.strip()
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if not any(key in payload for key in _WANTED):
            return  # cheap filter: the token deltas never need a JSON parse
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        for usage in _usage_objects(obj):
            for key, value in usage.items():
                if value not in (0, None, {}, []):  # a later non-zero value overwrites
                    self._usage[key] = value
        if isinstance(obj.get("timings"), dict):
            self._timings = obj["timings"]
        if isinstance(obj.get("metrics"), dict):
            self._vllm_metrics = obj["metrics"]

    def finish(
        self,
        *,
        model: str,
        status: int,
        started: float,
        first_byte_at: float | None,
        ended: float,
        timestamp: float | None = None,
        has_capture: bool = False,
    ) -> TokenMetrics | None:
        """The record for this exchange (id -1), or None when ``status`` is not 200.

        ``started``, ``first_byte_at`` and ``ended`` share one clock (any: monotonic is fine);
        ``first_byte_at`` is None when no body byte arrived, which gives ``duration_ms`` 0.
        ``timestamp`` (unix seconds) defaults to now.
        """
        if self._finished:
            raise RuntimeError("UsageTap.finish() called twice")
        self._finished = True
        if status != 200:
            return None
        if first_byte_at is None:
            duration_ms = 0
        else:
            duration_ms = max(0, int((ended - max(first_byte_at, started)) * 1000))
        base = TokenMetrics(
            id=-1,
            timestamp=time.time() if timestamp is None else timestamp,
            model=model,
            duration_ms=duration_ms,
            has_capture=has_capture,
        )
        if not self._failed:
            try:
                for piece in self._decoder.close():
                    if not self._take(piece):
                        break
            except _DecodeError:
                self._fail()
        if self._failed:
            return base
        usage_src: object
        if self._sse:
            if self._body and not self._line_overflow:
                self._line(bytes(self._body))  # a last line without its newline
            usage_src, timings, vllm = self._usage or None, self._timings, self._vllm_metrics
        else:
            usage_src, timings, vllm = self._json_sources()
        self._body = bytearray()
        return _apply_vllm(_apply(base, usage_src, timings), vllm)

    def _json_sources(self) -> tuple[object, object, object]:
        try:
            obj = json.loads(self._body)
        except ValueError:
            return None, None, None
        if isinstance(obj, dict):
            return obj.get("usage"), obj.get("timings"), obj.get("metrics")
        if self._infill and isinstance(obj, list) and obj and isinstance(obj[-1], dict):
            return None, obj[-1].get("timings"), None
        return None, None, None


def _apply(base: TokenMetrics, usage: object, timings: object) -> TokenMetrics:
    """Fill ``base`` from OpenAI/Anthropic ``usage``, then llama.cpp ``timings`` (which win)."""
    changes: dict[str, Any] = {}

    def pick(src: Mapping[str, Any], *keys: str) -> float | None:
        for key in keys:
            if (value := _number(src.get(key))) is not None:
                return value
        return None

    if isinstance(usage, dict):
        if (v := pick(usage, "prompt_tokens", "input_tokens")) is not None:
            changes["input_tokens"] = int(v)
        if (v := pick(usage, "completion_tokens", "output_tokens")) is not None:
            changes["output_tokens"] = int(v)
        cached = pick(usage, "cache_read_input_tokens")
        for details_key in ("input_tokens_details", "prompt_tokens_details"):
            details = usage.get(details_key)
            if cached is None and isinstance(details, dict):
                cached = pick(details, "cached_tokens")
        if cached is not None:
            changes["cache_tokens"] = int(cached)
    if isinstance(timings, dict):
        if (v := pick(timings, "prompt_n")) is not None:
            changes["input_tokens"] = int(v)
        if (v := pick(timings, "predicted_n")) is not None:
            changes["output_tokens"] = int(v)
        if (v := pick(timings, "prompt_per_second")) is not None:
            changes["prompt_per_second"] = v
        if (v := pick(timings, "predicted_per_second")) is not None:
            changes["tokens_per_second"] = v
        spans = [pick(timings, "prompt_ms"), pick(timings, "predicted_ms")]
        if any(s is not None for s in spans):
            changes["duration_ms"] = int(sum(s for s in spans if s is not None))
        if (v := pick(timings, "cache_n")) is not None:
            changes["cache_tokens"] = int(v)
        drafted, accepted = pick(timings, "draft_n"), pick(timings, "draft_n_accepted")
        if drafted is not None:
            changes["draft_tokens"] = int(drafted)
        if accepted is not None:
            changes["draft_acc_tokens"] = int(accepted)
    return attrs.evolve(base, **changes)


def _apply_vllm(base: TokenMetrics, metrics: object) -> TokenMetrics:
    """vLLM's per-request ``metrics`` object: speeds from time to first token and mean
    inter-token latency, draft counts from ``speculative_decoding`` (both counts needed;
    vLLM sends them with ``--per-request-spec-decode-metrics``)."""
    if not isinstance(metrics, dict):
        return base
    changes: dict[str, Any] = {}
    ttft = _number(metrics.get("time_to_first_token_ms"))
    if ttft is not None and ttft > 0:
        fresh = base.input_tokens - max(base.cache_tokens, 0)
        changes["prompt_per_second"] = fresh / (ttft / 1000)
    itl = _number(metrics.get("mean_itl_ms"))
    if itl is not None and itl > 0:
        changes["tokens_per_second"] = 1000 / itl
    spec = metrics.get("speculative_decoding")
    if isinstance(spec, dict):
        drafted = _number(spec.get("num_draft_tokens"))
        accepted = _number(spec.get("num_accepted_draft_tokens"))
        if drafted is not None and accepted is not None:
            changes["draft_tokens"], changes["draft_acc_tokens"] = int(drafted), int(accepted)
    return attrs.evolve(base, **changes)


# --------------------------------------------------------------------------------------------
# The store


@attrs.frozen
class MetricsStatistics:
    """Aggregates over the retained records; the means skip records that lack the value."""

    records: int
    total_recorded: int
    input_tokens: int
    output_tokens: int
    mean_prompt_per_second: float | None
    mean_tokens_per_second: float | None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


class MetricsStore:
    """The last ``max_records`` records (reference 8.2); ids count from 0 for its lifetime."""

    def __init__(self, max_records: int) -> None:
        if max_records < 0:
            raise ValueError(f"max_records must be >= 0, not {max_records}")
        self._records: deque[TokenMetrics] = deque(maxlen=max_records)
        self._next_id = 0

    @property
    def next_id(self) -> int:
        """The id the next record added gets."""
        return self._next_id

    def add(self, record: TokenMetrics) -> TokenMetrics:
        """Store ``record`` under the next id (dropping the oldest beyond the cap); return it."""
        stored = attrs.evolve(record, id=self._next_id)
        self._next_id += 1
        self._records.append(stored)
        return stored

    def records(self) -> list[TokenMetrics]:
        """Oldest first; ``[]`` when empty (llama-swap answers ``null``)."""
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def statistics(self) -> MetricsStatistics:
        recs = self._records
        return MetricsStatistics(
            records=len(recs),
            total_recorded=self._next_id,
            input_tokens=sum(r.input_tokens for r in recs),
            output_tokens=sum(r.output_tokens for r in recs),
            mean_prompt_per_second=_mean(
                [r.prompt_per_second for r in recs if r.prompt_per_second >= 0]
            ),
            mean_tokens_per_second=_mean(
                [r.tokens_per_second for r in recs if r.tokens_per_second >= 0]
            ),
        )


# --------------------------------------------------------------------------------------------
# Prometheus text exposition (format 0.0.4)

Labels = tuple[tuple[str, str], ...]
"""Label pairs in render order."""

_METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


@attrs.frozen
class CounterFamily:
    """A counter; ``name`` is the base name, samples are rendered as ``<name>_total``."""

    name: str
    help: str
    samples: tuple[tuple[Labels, float], ...] = ()


@attrs.frozen
class GaugeFamily:
    name: str
    help: str
    samples: tuple[tuple[Labels, float], ...] = ()


@attrs.frozen
class HistogramSeries:
    """One labelled histogram: ``counts[i]`` observations <= ``buckets[i]`` (cumulative)."""

    labels: Labels
    counts: tuple[int, ...]
    sum: float
    count: int


@attrs.frozen
class HistogramFamily:
    name: str
    help: str
    buckets: tuple[float, ...]
    series: tuple[HistogramSeries, ...] = ()


MetricFamily = CounterFamily | GaugeFamily | HistogramFamily


class Histogram:
    """A fixed-bucket accumulator; :meth:`series` snapshots it for rendering."""

    def __init__(self, buckets: Sequence[float]) -> None:
        bounds = tuple(float(b) for b in buckets)
        if list(bounds) != sorted(set(bounds)) or any(math.isnan(b) for b in bounds):
            raise ValueError(f"buckets must be strictly increasing: {buckets!r}")
        self.buckets = tuple(b for b in bounds if b != math.inf)  # +Inf is implicit
        self._counts = [0] * len(self.buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count ``value``; NaN is ignored (it would poison ``_sum`` forever)."""
        if math.isnan(value):
            return
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self._counts[i] += 1
                break
        self.sum += value
        self.count += 1

    def series(self, labels: Labels = ()) -> HistogramSeries:
        cumulative: list[int] = []
        running = 0
        for n in self._counts:
            running += n
            cumulative.append(running)
        return HistogramSeries(labels, tuple(cumulative), self.sum, self.count)


def _check_labels(labels: Labels) -> None:
    for name, _ in labels:
        if not _LABEL_NAME.match(name) or name.startswith("__"):
            raise ValueError(f"invalid label name {name!r}")


def _bucket_bound(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class _Snapshot:
    """A prometheus_client custom collector over families already taken (no global
    registry, nothing registered anywhere but the private registry of one render)."""

    def __init__(self, families: Sequence[MetricFamily]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        for fam in self._families:
            yield _to_client(fam)


def _to_client(fam: MetricFamily) -> Metric:
    """One family as a prometheus_client metric (names and labels checked here:
    prometheus_client would accept names the 0.0.4 text format cannot carry). Samples are
    added one by one, so series of one family may carry different labels."""
    if not _METRIC_NAME.match(fam.name):
        raise ValueError(f"invalid metric name {fam.name!r}")
    if isinstance(fam, HistogramFamily):
        out = Metric(fam.name, fam.help, "histogram")
        for s in fam.series:
            _check_labels(s.labels)
            if len(s.counts) != len(fam.buckets):
                raise ValueError(f"{fam.name}: series has {len(s.counts)} buckets")
            series = dict(s.labels)
            for bound, n in (*zip(fam.buckets, s.counts, strict=True), (math.inf, s.count)):
                le = {**series, "le": _bucket_bound(bound)}
                out.add_sample(fam.name + "_bucket", le, float(n))
            out.add_sample(fam.name + "_count", series, float(s.count))
            out.add_sample(fam.name + "_sum", series, s.sum)
        return out
    counter = isinstance(fam, CounterFamily)
    out = Metric(fam.name, fam.help, "counter" if counter else "gauge")
    sample_name = fam.name + "_total" if counter else fam.name
    for labels, value in fam.samples:
        _check_labels(labels)
        out.add_sample(sample_name, dict(labels), value)
    return out


def render_prometheus(families: Iterable[MetricFamily]) -> str:
    """The text exposition format (``text/plain; version=0.0.4``), families in the given
    order, written by prometheus_client (``generate_latest``) from a private registry."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(list(families)))
    return generate_latest(registry).decode("utf-8")


# --------------------------------------------------------------------------------------------
# What the daemon exports

RATE_BUCKETS: Final = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
REQUEST_SECONDS_BUCKETS: Final = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
START_SECONDS_BUCKETS: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)


def _status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def _histogram(table: dict[str, Histogram], model: str, buckets: Sequence[float]) -> Histogram:
    """``table[model]``, created on first use."""
    hist = table.get(model)
    if hist is None:
        hist = table[model] = Histogram(buckets)
    return hist


class SwapdMetrics:
    """Accumulates the daemon's Prometheus metrics; :meth:`families` snapshots them.

    ``known_states`` (e.g. every ``ModelState`` value) makes ``swapd_model_state`` follow the
    enum convention fully: one series per (model, state), 1 for the current state and 0 for
    the rest, so a state change shows as a 1 -> 0 edge. Without it only the current state's
    series is exported.
    """

    def __init__(self, *, known_states: Sequence[str] = ()) -> None:
        self._known_states = tuple(known_states)
        self._requests: dict[tuple[str, str], int] = {}
        self._tokens_in: dict[str, int] = {}
        self._tokens_out: dict[str, int] = {}
        self._prompt_speed: dict[str, Histogram] = {}
        self._gen_speed: dict[str, Histogram] = {}
        self._duration: dict[str, Histogram] = {}
        self._starts: dict[str, Histogram] = {}
        self._crashes: dict[str, int] = {}
        self._queue: dict[str, int] = {}
        self._state: dict[str, str] = {}
        # KV-cache keeping (docs/kvcache.md): (model, action, outcome) -> count / bytes
        self._kv_operations: dict[tuple[str, str, str], int] = {}
        self._kv_bytes: dict[tuple[str, str], int] = {}

    def observe_kv_cache(self, model: str, action: str, ok: bool, size: int = 0) -> None:
        """One slot saved or restored (``ok``), or a save/restore that failed."""
        key = (model, action, "ok" if ok else "failed")
        self._kv_operations[key] = self._kv_operations.get(key, 0) + 1
        if ok:
            self._kv_bytes[(model, action)] = self._kv_bytes.get((model, action), 0) + size

    def observe_request(
        self, model: str, status: int, metrics: TokenMetrics | None, seconds: float
    ) -> None:
        """One finished request; ``metrics`` is the tap's record (None for non-200)."""
        key = (model, _status_class(status))
        self._requests[key] = self._requests.get(key, 0) + 1
        # get() before building: a Histogram is validated on creation, and this runs for
        # every forwarded request (setdefault would build one each time to throw away).
        _histogram(self._duration, model, REQUEST_SECONDS_BUCKETS).observe(seconds)
        if metrics is None:
            return
        self._tokens_in[model] = self._tokens_in.get(model, 0) + max(0, metrics.input_tokens)
        self._tokens_out[model] = self._tokens_out.get(model, 0) + max(0, metrics.output_tokens)
        if metrics.prompt_per_second > 0:
            _histogram(self._prompt_speed, model, RATE_BUCKETS).observe(metrics.prompt_per_second)
        if metrics.tokens_per_second > 0:
            _histogram(self._gen_speed, model, RATE_BUCKETS).observe(metrics.tokens_per_second)

    def observe_start(self, model: str, seconds: float) -> None:
        """A swap-in: the model was started and became ready after ``seconds``."""
        _histogram(self._starts, model, START_SECONDS_BUCKETS).observe(seconds)

    def observe_crash(self, model: str) -> None:
        """The upstream exited without being asked to (reference 3.7)."""
        self._crashes[model] = self._crashes.get(model, 0) + 1

    def set_state(self, model: str, state: str) -> None:
        self._state[model] = state

    def set_queue_depth(self, model: str, n: int) -> None:
        self._queue[model] = n

    def families(self) -> list[MetricFamily]:
        def by_model(values: Mapping[str, float]) -> tuple[tuple[Labels, float], ...]:
            return tuple(((("model", m),), float(v)) for m, v in sorted(values.items()))

        def hists(values: Mapping[str, Histogram]) -> tuple[HistogramSeries, ...]:
            return tuple(h.series((("model", m),)) for m, h in sorted(values.items()))

        states: list[tuple[Labels, float]] = []
        for model, current in sorted(self._state.items()):
            names = self._known_states if current in self._known_states else (current,)
            states.extend(
                ((("model", model), ("state", s)), 1.0 if s == current else 0.0) for s in names
            )
        return [
            CounterFamily(
                "swapd_requests",
                "Proxied requests by model and status class.",
                tuple(
                    ((("model", m), ("code", c)), float(n))
                    for (m, c), n in sorted(self._requests.items())
                ),
            ),
            CounterFamily(
                "swapd_input_tokens", "Prompt tokens reported.", by_model(self._tokens_in)
            ),
            CounterFamily(
                "swapd_output_tokens", "Generated tokens reported.", by_model(self._tokens_out)
            ),
            HistogramFamily(
                "swapd_prompt_tokens_per_second",
                "Prompt processing speed reported by the upstream.",
                RATE_BUCKETS,
                hists(self._prompt_speed),
            ),
            HistogramFamily(
                "swapd_generation_tokens_per_second",
                "Generation speed reported by the upstream.",
                RATE_BUCKETS,
                hists(self._gen_speed),
            ),
            HistogramFamily(
                "swapd_request_duration_seconds",
                "Time from request to the end of the response.",
                REQUEST_SECONDS_BUCKETS,
                hists(self._duration),
            ),
            CounterFamily(
                "swapd_swaps",
                "Model starts (swap-ins).",
                by_model({m: h.count for m, h in self._starts.items()}),
            ),
            HistogramFamily(
                "swapd_swap_duration_seconds",
                "Time from starting a model to it being ready.",
                START_SECONDS_BUCKETS,
                hists(self._starts),
            ),
            GaugeFamily(
                "swapd_queue_depth", "Requests waiting for a model.", by_model(self._queue)
            ),
            CounterFamily(
                "swapd_upstream_crashes", "Unexpected upstream exits.", by_model(self._crashes)
            ),
            GaugeFamily("swapd_model_state", "1 for the model's current state.", tuple(states)),
            CounterFamily(
                "swapd_kvcache_operations",
                "KV-cache slot saves and restores by model, action and outcome.",
                tuple(
                    ((("model", m), ("action", a), ("outcome", o)), float(n))
                    for (m, a, o), n in sorted(self._kv_operations.items())
                ),
            ),
            CounterFamily(
                "swapd_kvcache_bytes",
                "Bytes of KV cache saved and restored.",
                tuple(
                    ((("model", m), ("action", a)), float(n))
                    for (m, a), n in sorted(self._kv_bytes.items())
                ),
            ),
        ]


# --------------------------------------------------------------------------------------------
# System, GPU and per-model resident memory (llama-swap v250's ``llamaswap_*`` names)

_MIB: Final = 1024 * 1024


def resident_family(sizes: Mapping[str, int]) -> GaugeFamily:
    """``swapd_model_resident_bytes{model}``: host memory of each running model's process group."""
    return GaugeFamily(
        "swapd_model_resident_bytes",
        "Host memory (PSS, else RSS) held by each running model's process group.",
        tuple(((("model", m),), float(n)) for m, n in sorted(sizes.items())),
    )


def system_families(
    sample: Mapping[str, Any] | None, gpus: Sequence[Mapping[str, Any]]
) -> list[MetricFamily]:
    """The latest performance sample as llama-swap v250 exports it (empty before the first)."""
    if sample is None:
        return []

    def gauge(name: str, help_text: str, samples: Iterable[tuple[Labels, Any]]) -> GaugeFamily:
        kept = tuple((labels, float(v)) for labels, v in samples if v is not None)
        return GaugeFamily(name, help_text, kept)

    mb = _MIB
    families: list[MetricFamily] = [
        gauge(
            "llamaswap_cpu_util_percent",
            "CPU use per logical core since the previous sample.",
            [((("core", str(i)),), v) for i, v in enumerate(sample["cpu_util_per_core"])],
        ),
        *(
            gauge(f"llamaswap_{name}_bytes", help_text, [((), sample[field] * mb)])
            for name, help_text, field in (
                ("memory_total", "Host RAM.", "mem_total_mb"),
                ("memory_used", "Host RAM in use.", "mem_used_mb"),
                ("memory_free", "Host RAM available.", "mem_free_mb"),
                ("swap_total", "Swap space.", "swap_total_mb"),
                ("swap_used", "Swap in use.", "swap_used_mb"),
            )
        ),
        gauge(
            "llamaswap_load_average",
            "Load averages.",
            [((("interval", f"{n}m"),), sample[f"load_avg_{n}"]) for n in (1, 5, 15)],
        ),
        CounterFamily(
            "llamaswap_network_bytes",
            "Bytes through each network interface.",
            tuple(
                ((("interface", nic["name"]), ("direction", d)), float(nic[f"bytes_{d}"]))
                for nic in sample["net_io"]
                for d in ("recv", "sent")
            ),
        ),
    ]
    per_gpu = (
        ("llamaswap_gpu_temperature_celsius", "GPU temperature.", "temp_c", 1),
        ("llamaswap_gpu_vram_temperature_celsius", "GPU memory temperature.", "vram_temp_c", 1),
        ("llamaswap_gpu_util_percent", "GPU use.", "gpu_util_pct", 1),
        ("llamaswap_gpu_memory_util_percent", "GPU memory controller use.", "mem_util_pct", 1),
        ("llamaswap_gpu_memory_used_bytes", "GPU memory in use.", "mem_used_mb", mb),
        ("llamaswap_gpu_memory_total_bytes", "GPU memory.", "mem_total_mb", mb),
        ("llamaswap_gpu_fan_speed_percent", "GPU fan speed.", "fan_speed_pct", 1),
        ("llamaswap_gpu_power_draw_watts", "GPU power draw.", "power_draw_w", 1),
    )
    for name, help_text, field, scale in per_gpu:
        families.append(
            gauge(
                name,
                help_text,
                ((_gpu_labels(g), None if g[field] is None else g[field] * scale) for g in gpus),
            )
        )
    return families


def _gpu_labels(gpu: Mapping[str, Any]) -> Labels:
    labels: Labels = (("id", str(gpu["id"])), ("name", str(gpu["name"])))
    return (*labels, ("uuid", gpu["uuid"])) if gpu["uuid"] else labels
