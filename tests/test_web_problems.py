"""swapd.web.problems: OpenAI/Anthropic error bodies and unknown-model messages."""

from __future__ import annotations

import json

import pytest

from swapd.errors import (
    BadRequest,
    ConfigError,
    ConfigProblem,
    ModelNotFound,
    ModelUnavailable,
    PayloadTooLarge,
    QueueFull,
    StartFailed,
    SwapdError,
    Unauthorized,
    UpstreamUnreachable,
)
from swapd.web.problems import (
    anthropic_error,
    close_matches,
    error_for,
    openai_error,
    unknown_model_message,
)


@pytest.mark.parametrize(
    ("status", "type_", "code"),
    [
        (400, "invalid_request_error", "bad_request"),
        (401, "authentication_error", "unauthorized"),
        (403, "authentication_error", "forbidden"),
        (404, "invalid_request_error", "not_found"),
        (405, "invalid_request_error", "invalid_request"),
        (409, "invalid_request_error", "conflict"),
        (413, "invalid_request_error", "payload_too_large"),
        (418, "invalid_request_error", "invalid_request"),
        (429, "rate_limit_error", "rate_limit_exceeded"),
        (500, "server_error", "internal_error"),
        (501, "server_error", "internal_error"),
        (502, "server_error", "bad_gateway"),
        (503, "server_error", "service_unavailable"),
        (504, "server_error", "gateway_timeout"),
        (599, "server_error", "internal_error"),
    ],
)
def test_openai_defaults(status: int, type_: str, code: str) -> None:
    assert openai_error(status, "boom") == {
        "src": "swapd",
        "error": {"message": "boom", "type": type_, "param": None, "code": code},
    }


def test_openai_overrides() -> None:
    body = openai_error(400, "bad", code="model_missing", type_="custom", param="model")
    assert body["error"] == {
        "message": "bad",
        "type": "custom",
        "param": "model",
        "code": "model_missing",
    }
    json.dumps(body)  # serialisable


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (409, "invalid_request_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "api_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_types(status: int, type_: str) -> None:
    assert anthropic_error(status, "nope") == {
        "type": "error",
        "error": {"type": type_, "message": "nope"},
    }


@pytest.mark.parametrize(
    ("exc", "status", "type_", "code", "anthropic_type", "headers"),
    [
        (
            BadRequest("missing model"),
            400,
            "invalid_request_error",
            "bad_request",
            "invalid_request_error",
            [],
        ),
        (
            Unauthorized("no key"),
            401,
            "authentication_error",
            "unauthorized",
            "authentication_error",
            [],
        ),
        (
            ModelNotFound("model 'x' not found"),
            404,
            "invalid_request_error",
            "model_not_found",
            "not_found_error",
            [],
        ),
        (
            PayloadTooLarge("too big"),
            413,
            "invalid_request_error",
            "payload_too_large",
            "request_too_large",
            [],
        ),
        (
            QueueFull("queue full", retry_after=7),
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
            "rate_limit_error",
            [("Retry-After", "7")],
        ),
        (
            QueueFull("queue full"),
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
            "rate_limit_error",
            [("Retry-After", "1")],
        ),
        (
            ModelUnavailable("stopping", retry_after=3),
            503,
            "service_unavailable",
            "service_unavailable",
            "overloaded_error",
            [("Retry-After", "3")],
        ),
        (
            StartFailed("m", "exited", phase="spawn", exit="exit code 1"),
            502,
            "server_error",
            "bad_gateway",
            "api_error",
            [],
        ),
        (
            UpstreamUnreachable("connection refused"),
            502,
            "server_error",
            "bad_gateway",
            "api_error",
            [],
        ),
        (SwapdError("internal"), 500, "server_error", "internal_error", "api_error", []),
    ],
)
def test_error_for(
    exc: SwapdError,
    status: int,
    type_: str,
    code: str,
    anthropic_type: str,
    headers: list[tuple[str, str]],
) -> None:
    got_status, body, got_headers = error_for(exc, anthropic=False)
    assert (got_status, got_headers) == (status, headers)
    assert body == {
        "src": "swapd",
        "error": {"message": str(exc), "type": type_, "param": None, "code": code},
    }

    got_status, body, got_headers = error_for(exc, anthropic=True)
    assert (got_status, got_headers) == (status, headers)
    assert body == {"type": "error", "error": {"type": anthropic_type, "message": str(exc)}}


def test_error_for_empty_message_and_config_error() -> None:
    _, body, _ = error_for(UpstreamUnreachable(), anthropic=False)
    assert body["error"]["message"] == "bad gateway"
    problem = ConfigProblem("config.yaml", 3, 5, "models.x.cmd", "cmd is empty")
    status, body, _ = error_for(ConfigError([problem]), anthropic=False)
    assert status == 500
    assert body["error"]["message"] == "config.yaml:3:5: models.x.cmd: cmd is empty"
    assert "Traceback" not in json.dumps(body)


@pytest.mark.parametrize(
    ("name", "candidates", "expected"),
    [
        ("llama3", ["llama-3", "llama3.1", "qwen", "mistral"], ["llama-3", "llama3.1"]),
        ("Qwen", ["qwen", "qwen2", "llama"], ["qwen", "qwen2"]),
        ("gpt-4", ["llama", "qwen"], []),
        ("x", [], []),
        ("model", ["model1", "model2", "model3", "model4"], ["model1", "model2", "model3"]),
    ],
)
def test_close_matches(name: str, candidates: list[str], expected: list[str]) -> None:
    assert close_matches(name, iter(candidates)) == expected


@pytest.mark.parametrize(
    ("name", "candidates", "expected"),
    [
        (
            "llama3",
            ["qwen", "llama3.1", "llama-3"],
            "model 'llama3' not found; did you mean: llama-3, llama3.1?",
        ),
        ("x", ["c", "a", "b", "a"], "model 'x' not found; available models: a, b, c"),
        ("x", [], "model 'x' not found; no models are configured"),
        (
            "zzz",
            [f"m{i:02d}" for i in range(25)],
            "model 'zzz' not found; available models: "
            + ", ".join(f"m{i:02d}" for i in range(20))
            + ", …",
        ),
    ],
)
def test_unknown_model_message(name: str, candidates: list[str], expected: str) -> None:
    assert unknown_model_message(name, candidates) == expected


def test_unknown_model_message_truncates_a_huge_name() -> None:
    message = unknown_model_message("a" * 100_000, ["b"])
    assert len(message) < 300
    assert message.startswith("model '" + "a" * 200 + "…' not found")
