"""LogHub: named logs, subscribers, logToStdout wiring, levels, Go time layouts (10.2, 5.12)."""

from __future__ import annotations

import datetime as dt
import logging
import re

import pytest
import trio
import trio.testing

from swapd.config.model import LOG_TIME_FORMATS, LogLevel, LogToStdout
from swapd.observe.logs import (
    LOG_RING_BYTES,
    HubHandler,
    LogHub,
    format_go_time,
)

MST = dt.timezone(dt.timedelta(hours=-7), "MST")
# Go's reference time, with a fractional second.
REF = dt.datetime(2006, 1, 2, 15, 4, 5, 123456, tzinfo=MST)


class Captured:
    """An injectable stdout."""

    def __init__(self) -> None:
        self.data = b""

    def __call__(self, chunk: bytes) -> None:
        self.data += chunk


def make_hub(
    mode: LogToStdout = LogToStdout.PROXY,
    *,
    level: LogLevel = LogLevel.INFO,
    time_format: str = "",
) -> tuple[LogHub, Captured]:
    out = Captured()
    hub = LogHub(
        ["m1", "org/m2"],
        log_level=level,
        log_time_format=time_format,
        log_to_stdout=mode,
        stdout=out,
        now=lambda: REF,
    )
    return hub, out


# -- Go time layouts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("ansic", "Mon Jan  2 15:04:05 2006"),
        ("unixdate", "Mon Jan  2 15:04:05 MST 2006"),
        ("rubydate", "Mon Jan 02 15:04:05 -0700 2006"),
        ("rfc822", "02 Jan 06 15:04 MST"),
        ("rfc822z", "02 Jan 06 15:04 -0700"),
        ("rfc850", "Monday, 02-Jan-06 15:04:05 MST"),
        ("rfc1123", "Mon, 02 Jan 2006 15:04:05 MST"),
        ("rfc1123z", "Mon, 02 Jan 2006 15:04:05 -0700"),
        ("rfc3339", "2006-01-02T15:04:05-07:00"),
        ("rfc3339nano", "2006-01-02T15:04:05.123456-07:00"),
        ("kitchen", "3:04PM"),
        ("stamp", "Jan  2 15:04:05"),
        ("stampmilli", "Jan  2 15:04:05.123"),
        ("stampmicro", "Jan  2 15:04:05.123456"),
        ("stampnano", "Jan  2 15:04:05.123456000"),
        ("", ""),
        ("RFC3339", "2006-01-02T15:04:05-07:00"),
    ],
)
def test_go_layouts_at_reference_time(layout: str, expected: str) -> None:
    assert format_go_time(layout, REF) == expected


def test_every_configurable_layout_is_implemented() -> None:
    for name in LOG_TIME_FORMATS:
        format_go_time(name, REF)


@pytest.mark.parametrize(
    ("layout", "when", "expected"),
    [
        ("rfc3339", dt.datetime(2024, 12, 25, 0, 0, 0, tzinfo=dt.UTC), "2024-12-25T00:00:00Z"),
        ("rfc3339nano", dt.datetime(2024, 12, 25, 0, 0, 0, tzinfo=dt.UTC), "2024-12-25T00:00:00Z"),
        (
            "rfc3339nano",
            dt.datetime(2024, 12, 25, 0, 0, 0, 500000, tzinfo=dt.UTC),
            "2024-12-25T00:00:00.5Z",
        ),
        (
            "rfc1123",
            dt.datetime(2024, 12, 25, 9, 8, 7, tzinfo=dt.UTC),
            "Wed, 25 Dec 2024 09:08:07 UTC",
        ),
        (
            "unixdate",
            dt.datetime(
                2024, 3, 12, 9, 8, 7, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))
            ),
            "Tue Mar 12 09:08:07 +0530 2024",
        ),
        (
            "rfc3339",
            dt.datetime(
                2024, 3, 12, 9, 8, 7, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))
            ),
            "2024-03-12T09:08:07+05:30",
        ),
        ("kitchen", dt.datetime(2024, 1, 1, 0, 5, tzinfo=dt.UTC), "12:05AM"),
        ("kitchen", dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC), "12:00PM"),
        ("kitchen", dt.datetime(2024, 1, 1, 23, 59, tzinfo=dt.UTC), "11:59PM"),
        ("stamp", dt.datetime(2024, 12, 12, 1, 2, 3, tzinfo=dt.UTC), "Dec 12 01:02:03"),
    ],
)
def test_go_layouts_edge_cases(layout: str, when: dt.datetime, expected: str) -> None:
    assert format_go_time(layout, when) == expected


def test_unknown_layout() -> None:
    with pytest.raises(KeyError):
        format_go_time("iso", REF)
    with pytest.raises(ValueError, match="logTimeFormat"):
        LogHub(log_time_format="iso")


# -- message format and levels -----------------------------------------------------------


def test_message_format_without_timestamp() -> None:
    hub, out = make_hub()
    hub.log(LogLevel.INFO, "<m1> Health check passed")
    assert hub.history("proxy") == b"[INFO] <m1> Health check passed\n"
    assert out.data == hub.history("proxy")


def test_message_format_with_timestamp() -> None:
    hub, _ = make_hub(time_format="rfc3339")
    hub.log(LogLevel.WARN, "careful")
    line = hub.history("proxy").decode()
    assert line == "2006-01-02T15:04:05-07:00 [WARN] careful\n"
    stamp = line.split(" ", 1)[0]
    assert dt.datetime.fromisoformat(stamp) == REF.replace(microsecond=0)


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        (LogLevel.DEBUG, ["DEBUG", "INFO", "WARN", "ERROR"]),
        (LogLevel.INFO, ["INFO", "WARN", "ERROR"]),
        (LogLevel.WARN, ["WARN", "ERROR"]),
        (LogLevel.ERROR, ["ERROR"]),
    ],
)
def test_level_filtering(level: LogLevel, shown: list[str]) -> None:
    hub, _ = make_hub(level=level)
    for each in LogLevel:
        hub.log(each, "x")
        hub.log(each, "y", target="upstream")
    assert re.findall(r"\[(\w+)\] x", hub.history("proxy").decode()) == shown
    assert re.findall(r"\[(\w+)\] y", hub.history("upstream").decode()) == shown


def test_raw_model_output_is_never_filtered() -> None:
    hub, _ = make_hub(level=LogLevel.ERROR)
    hub.write_model_line("m1", "stdout", "debug: loading tensors")
    assert hub.history("m1") == b"debug: loading tensors\n"
    assert hub.history("upstream") == b"debug: loading tensors\n"


# -- names, history, clear ---------------------------------------------------------------


def test_model_lines_go_to_model_and_upstream_raw() -> None:
    hub, _ = make_hub(LogToStdout.NONE)
    hub.write_model_line("m1", "stdout", "one")
    hub.write_model_line("org/m2", "stderr", b"two\n")
    hub.write_model_line("m1", "stderr", "three")
    assert hub.history("m1") == b"one\nthree\n"
    assert hub.history("org/m2") == b"two\n"
    assert hub.history("upstream") == b"one\ntwo\nthree\n"
    assert hub.history("proxy") == b""


def test_unknown_names() -> None:
    hub, _ = make_hub()
    with pytest.raises(KeyError):
        hub.history("nope")
    with pytest.raises(KeyError):
        hub.write_model_line("nope", "stdout", "x")
    with pytest.raises(KeyError), hub.subscribe("nope"):
        pass
    with pytest.raises(KeyError):
        hub.clear_model("nope")


def test_add_model_and_empty_name_is_mux() -> None:
    hub, _ = make_hub()
    hub.add_model("m3")
    hub.add_model("m3")
    assert hub.model_ids == ("m1", "org/m2", "m3")
    hub.log(LogLevel.INFO, "hi")
    assert hub.history("") == hub.history("mux") == b"[INFO] hi\n"


def test_history_is_a_copy() -> None:
    hub, _ = make_hub()
    hub.log(LogLevel.INFO, "abc")
    snap = bytearray(hub.history("proxy"))
    snap[:] = b"mutated"
    assert hub.history("proxy") == b"[INFO] abc\n"


def test_clear_model_releases_history_only_for_that_model() -> None:
    hub, _ = make_hub()
    hub.write_model_line("m1", "stdout", "before")
    hub.write_model_line("org/m2", "stdout", "other")
    hub.clear_model("m1")
    assert hub.history("m1") == b""
    assert hub.history("org/m2") == b"other\n"
    assert hub.history("upstream") == b"before\nother\n"
    hub.write_model_line("m1", "stdout", "after")
    assert hub.history("m1") == b"after\n"


def test_rings_are_100_kib() -> None:
    hub, _ = make_hub(LogToStdout.BOTH)
    hub.write_model_line("m1", "stdout", b"x" * 200_000 + b"\n")
    for name in ("m1", "upstream", "mux"):
        assert len(hub.history(name)) == LOG_RING_BYTES == 102_400


def test_from_config() -> None:
    from swapd.config.model import Config

    cfg = Config(log_level=LogLevel.WARN, log_time_format="kitchen", log_to_stdout=LogToStdout.BOTH)
    out = Captured()
    hub = LogHub.from_config(cfg, stdout=out, now=lambda: REF)
    hub.log(LogLevel.INFO, "hidden")
    hub.log(LogLevel.ERROR, "shown")
    assert out.data == b"3:04PM [ERROR] shown\n"


# -- logToStdout wiring ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (LogToStdout.PROXY, b"[INFO] p1\n[INFO] p2\n"),
        (LogToStdout.UPSTREAM, b"u1\n[INFO] u2\n"),
        (LogToStdout.BOTH, b"[INFO] p1\nu1\n[INFO] p2\n[INFO] u2\n"),
        (LogToStdout.NONE, b""),
    ],
)
def test_log_to_stdout_wiring(mode: LogToStdout, expected: bytes) -> None:
    hub, out = make_hub(mode)
    hub.log(LogLevel.INFO, "p1")
    hub.write_model_line("m1", "stdout", "u1")
    hub.log(LogLevel.INFO, "p2")
    hub.log(LogLevel.INFO, "u2", target="upstream")
    assert out.data == expected
    assert hub.history("mux") == expected
    # The proxy and upstream logs keep their own histories in every mode.
    assert hub.history("proxy") == b"[INFO] p1\n[INFO] p2\n"
    assert hub.history("upstream") == b"u1\n[INFO] u2\n"
    assert hub.history("m1") == b"u1\n"


# -- subscribers -------------------------------------------------------------------------


async def test_two_subscribers_receive_in_order() -> None:
    hub, _ = make_hub()
    with hub.subscribe("proxy") as a, hub.subscribe("proxy") as b:
        for chunk in (b"1", b"2", b"3"):
            hub.write_proxy(chunk)
        assert [await a.receive() for _ in range(3)] == [b"1", b"2", b"3"]
        assert [await b.receive() for _ in range(3)] == [b"1", b"2", b"3"]
    assert hub.history("proxy") == b"123"


async def test_subscriber_sees_model_upstream_and_mux_chunks() -> None:
    hub, _ = make_hub(LogToStdout.UPSTREAM)
    with (
        hub.subscribe("org/m2") as model,
        hub.subscribe("upstream") as upstream,
        hub.subscribe("mux") as mux,
        hub.subscribe("proxy") as proxy,
    ):
        hub.write_model_line("org/m2", "stdout", "line")
        assert await model.receive() == b"line\n"
        assert await upstream.receive() == b"line\n"
        assert await mux.receive() == b"line\n"
        assert proxy.receive_nowait() is None


async def test_subscription_survives_clear_model() -> None:
    hub, _ = make_hub()
    with hub.subscribe("m1") as sub:
        hub.write_model_line("m1", "stdout", "a")
        hub.clear_model("m1")
        hub.write_model_line("m1", "stdout", "b")
        assert [await sub.receive(), await sub.receive()] == [b"a\n", b"b\n"]


async def test_slow_subscriber_drops_oldest_and_writer_never_blocks() -> None:
    hub, _ = make_hub()
    with hub.subscribe("proxy") as slow:
        for i in range(25):
            hub.write_proxy(f"{i},".encode())  # synchronous, never awaits: cannot block
        assert slow.dropped == 15
        got = [slow.receive_nowait() for _ in range(10)]
        assert got == [f"{i},".encode() for i in range(15, 25)]
        assert slow.receive_nowait() is None
    assert hub.history("proxy") == b"".join(f"{i},".encode() for i in range(25))


async def test_async_iteration_until_close() -> None:
    hub, _ = make_hub()
    received: list[bytes] = []

    async def reader(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with hub.subscribe("upstream", maxlen=100) as sub:
            task_status.started()
            received.extend([chunk async for chunk in sub])

    async with trio.open_nursery() as nursery:
        await nursery.start(reader)
        for i in range(5):
            hub.write_model_line("m1", "stdout", str(i))
            await trio.lowlevel.checkpoint()
        hub.close()
    assert received == [f"{i}\n".encode() for i in range(5)]


# -- logging handler ---------------------------------------------------------------------


def test_hub_handler_routes_records_by_level() -> None:
    hub, out = make_hub(level=LogLevel.INFO)
    logger = logging.getLogger("swapd.test_observe_logs")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = HubHandler(hub)
    logger.addHandler(handler)
    try:
        logger.debug("hidden %s", 1)
        logger.info("hello %s", "world")
        logger.warning("warned")
        logger.error("failed")
        logger.critical("fatal")
    finally:
        logger.removeHandler(handler)
    assert hub.history("proxy") == (
        b"[INFO] hello world\n[WARN] warned\n[ERROR] failed\n[ERROR] fatal\n"
    )
    assert out.data == hub.history("proxy")


def test_hub_handler_level_override() -> None:
    hub, _ = make_hub(level=LogLevel.DEBUG)
    handler = HubHandler(hub, LogLevel.ERROR)
    assert handler.level == logging.ERROR
    assert HubHandler(hub).level == logging.DEBUG


async def test_hub_handler_from_other_thread_uses_trio_token() -> None:
    hub, _ = make_hub()
    handler = HubHandler(hub, trio_token=trio.lowlevel.current_trio_token())
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "from thread", None, None)
    await trio.to_thread.run_sync(handler.emit, record)
    await trio.testing.wait_all_tasks_blocked()
    assert hub.history("proxy") == b"[INFO] from thread\n"


async def test_hub_handler_from_other_thread_without_token_drops() -> None:
    hub, _ = make_hub()
    handler = HubHandler(hub)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "lost", None, None)
    await trio.to_thread.run_sync(handler.emit, record)
    assert hub.history("proxy") == b""
