"""A corpus of config files written the way users write them (tests/configs/real-world/),
with their verdicts, warnings and resolved argv locked. Each file's header comment says
which habit it stands for; ``v250-everything.yaml`` uses every llama-swap v250 key swapd
reads, and ``check-config`` prints it resolved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from swapd.config import ConfigError, load_config

ROOT = Path(__file__).parent.parent
CORPUS = Path(__file__).parent / "configs" / "real-world"

# file → warnings (file name replaced by F), or the errors as (line, path, message)
WARNINGS: dict[str, list[str]] = {
    "anchors-template.yaml": [],
    "docker-compose-style.yaml": [
        "F:33: models.sglang-llama.port: unknown setting 'port' ignored: swapd gives each model a port through ${PORT} in cmd; for a fixed port write it in cmd and set 'proxy' to it",
        "F:34: models.sglang-llama.unloadAfter: unknown setting 'unloadAfter' ignored: did you mean 'ttl' (idle seconds before unloading)?",
    ],
    "homelab-llamacpp.yaml": [
        "F:21: models.qwen3-30b.recommended_use: 'recommended_use' is not a setting; ignored (notes shown in /v1/models go under 'metadata')",
        "F:41: models.gemma3-12b.tags: 'tags' is not a setting; ignored (notes shown in /v1/models go under 'metadata')",
        "F:62: groups.gpu.members[2]: 'llama-70b' is not a model ID; ignored (see models:)",
    ],
    "v250-everything.yaml": [
        "F:15: ui: 'ui' is accepted, not active yet in swapd",
    ],
    "windows-box.yaml": [
        "F:2: listen: unknown setting 'listen' ignored: the address is a command-line option: swapd --listen HOST:PORT",
        "F:3: health_check_timeout: unknown setting 'health_check_timeout' ignored: did you mean 'healthCheckTimeout'?",
        "F:11: models.mistral.tools: unknown setting 'tools' ignored: did you mean 'capabilities: {tools: true}'?",
        "F:13: models.broken-path.cmd: backslashes outside quotes are escapes and were dropped (the path became 'C:llama.cppllama-server.exe'): put Windows paths in quotes or use forward slashes",
    ],
}
ERRORS: dict[str, list[tuple[int, str, str]]] = {
    "rejected-v250-rules.yaml": [
        (
            4,
            "profiles.old-style",
            "profile must be a mapping with description and pins; the legacy list syntax is no longer supported",
        ),
        (8, "models.qwen.ttl", "model qwen: invalid TTL value -5"),
        (9, "models.qwen.env[0]", "model qwen env: unknown macro '${secret}'"),
        (
            10,
            "models.gemma.proxy",
            "proxy uses ${PORT} but cmd does not - ${PORT} is only available when used in cmd",
        ),
    ]
}
ARGV: dict[str, dict[str, list[str]]] = {
    "anchors-template.yaml": {
        "gpt-oss-120b": [
            "/usr/local/bin/llama-server",
            "--port",
            "5800",
            "--host",
            "127.0.0.1",
            "-m",
            "/models/gpt-oss-120b-mxfp4.gguf",
            "--ctx-size",
            "0",
            "--jinja",
        ],
        "nomic": [
            "/usr/local/bin/llama-server",
            "--port",
            "5801",
            "--host",
            "127.0.0.1",
            "--embeddings",
            "-m",
            "/models/nomic-embed.gguf",
        ],
        "qwen3-coder": [
            "/usr/local/bin/llama-server",
            "--port",
            "5802",
            "--host",
            "127.0.0.1",
            "-m",
            "/models/Qwen3-Coder-30B-A3B-Q8_0.gguf",
        ],
    },
    "docker-compose-style.yaml": {
        "embed": [
            "/bin/sh",
            "-c",
            "exec /usr/local/bin/llama-server --embeddings --port 9100 -m /models/nomic-embed-text-v1.5.Q8_0.gguf 2>&1",
        ],
        "sglang-llama": [
            "docker",
            "run",
            "--rm",
            "--name",
            "sglang-llama",
            "--gpus",
            "all",
            "--ipc=host",
            "-p",
            "30000:30000",
            "lmsysorg/sglang:latest",
            "python3",
            "-m",
            "sglang.launch_server",
            "--model-path",
            "meta-llama/Llama-3.1-8B-Instruct",
            "--host",
            "0.0.0.0",
            "--port",
            "30000",
        ],
        "vllm-qwen": [
            "docker",
            "run",
            "--rm",
            "--name",
            "vllm-qwen-9101",
            "--gpus",
            "all",
            "--ipc=host",
            "-v",
            "/home/me/.cache/huggingface:/root/.cache/huggingface",
            "-p",
            "9101:8000",
            "vllm/vllm-openai:latest",
            "--model",
            "Qwen/Qwen2.5-7B-Instruct",
            "--max-model-len",
            "8192",
        ],
    },
    "homelab-llamacpp.yaml": {
        "gemma3-12b": [
            "/opt/llama.cpp/build/bin/llama-server",
            "--host",
            "127.0.0.1",
            "--port",
            "10001",
            "--flash-attn",
            "on",
            "--model",
            "/srv/models/gemma-3-12b-it-Q4_K_M.gguf",
            "--mmproj",
            "/srv/models/mmproj-gemma3-12b-f16.gguf",
            "--ctx-size",
            "16384",
        ],
        "qwen3-30b": [
            "/opt/llama.cpp/build/bin/llama-server",
            "--host",
            "127.0.0.1",
            "--port",
            "10002",
            "--flash-attn",
            "on",
            "--model",
            "/srv/models/Qwen3-30B-A3B-Q4_K_M.gguf",
            "--ctx-size",
            "32768",
            "--n-cpu-moe",
            "12",
            "--jinja",
        ],
        "whisper": [
            "/opt/whisper.cpp/build/bin/whisper-server",
            "--host",
            "127.0.0.1",
            "--port",
            "10003",
            "-m",
            "/srv/models/ggml-large-v3-turbo.bin",
            "--request-path",
            "/v1/audio/transcriptions",
            "--inference-path",
            "",
        ],
    },
    "v250-everything.yaml": {
        "comfy": ["/opt/comfyui/run.sh", "--port", "12000"],
        "gemma-vision": [
            "/usr/bin/llama-server",
            "--port",
            "12001",
            "-m",
            "/models/gemma-3-4b.gguf",
            "--mmproj",
            "/models/mmproj.gguf",
        ],
        "gpt-oss": [
            "/usr/bin/llama-server",
            "--port",
            "12002",
            "-m",
            "/models/gpt-oss-20b.gguf",
            "--jinja",
        ],
    },
    "windows-box.yaml": {
        "broken-path": ["C:llama.cppllama-server.exe", "--port", "5800", "-m", "D:modelsqwen.gguf"],
        "mistral": [
            "C:/llama.cpp/llama-server.exe",
            "--port",
            "5801",
            "-m",
            "D:/models/Mistral-Small-24B.gguf",
        ],
        "phi4": [
            "C:\\llama.cpp\\llama-server.exe",
            "--port",
            "5802",
            "-m",
            "D:\\models\\phi-4-Q4_K_M.gguf",
            "-ngl",
            "99",
        ],
    },
}


def test_the_corpus_is_complete() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.yaml")) == sorted([*WARNINGS, *ERRORS])


@pytest.mark.parametrize("name", sorted(WARNINGS))
def test_accepted_files_load_with_their_warnings_and_argv(name: str) -> None:
    path = CORPUS / name
    config = load_config(path, environ={})
    assert [w.replace(str(path), "F") for w in config.warnings] == WARNINGS[name]
    assert {m: list(spec.argv) for m, spec in sorted(config.models.items())} == ARGV[name]


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_refused_files_name_every_problem(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CORPUS / name, environ={})
    assert [(p.line, p.path, p.message) for p in info.value.problems] == ERRORS[name]


@pytest.mark.parametrize("name", sorted(n for n, w in WARNINGS.items() if w))
def test_strict_refuses_files_with_warnings(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(CORPUS / name, environ={}, strict=True)
    assert len(info.value.problems) == len(WARNINGS[name])


def test_resolved_details_of_the_corpus() -> None:
    homelab = load_config(CORPUS / "homelab-llamacpp.yaml", environ={})
    assert homelab.models["qwen3-30b"].env == ("CUDA_VISIBLE_DEVICES=0",)
    assert homelab.models["gemma3-12b"].ttl == 900  # globalTTL inherited
    assert homelab.models["whisper"].ttl == 0
    assert homelab.groups["gpu"].members == ("qwen3-30b", "gemma3-12b")
    docker = load_config(CORPUS / "docker-compose-style.yaml", environ={})
    assert docker.models["vllm-qwen"].stop_argv == ("docker", "stop", "vllm-qwen-9101")
    assert docker.models["sglang-llama"].port is None  # fixed port, explicit proxy
    assert docker.models["sglang-llama"].proxy == "http://127.0.0.1:30000"
    anchors = load_config(CORPUS / "anchors-template.yaml", environ={})
    assert anchors.models["gpt-oss-120b"].ttl == 3600
    assert anchors.models["qwen3-coder"].env == (
        "GGML_VK_VISIBLE_DEVICES=0",
        "LLAMA_ARG_THREADS=16",
    )
    assert dict(anchors.models["nomic"].metadata) == {"host": "strix-halo"}


def test_every_v250_key_loads_resolved() -> None:
    config = load_config(CORPUS / "v250-everything.yaml", environ={})
    oss = config.models["gpt-oss"]
    assert (config.global_ttl, config.unload_timeout) == (600, 15)
    assert (oss.ttl, oss.unload_timeout) == (600, 30)
    assert config.models["gemma-vision"].unload_timeout == 15
    assert oss.name == "GPT-OSS (gpt-oss)"
    assert (oss.timeouts.connect, oss.timeouts.response_header) == (5, 300)
    assert oss.capabilities.tools and oss.capabilities.context == 131072
    assert oss.aliases == ("gpt-oss:high", "gpt-oss:low")
    assert config.upstream.ignore_paths == (r"\.(js|css|png|ico)$", "^/assets/")
    assert config.peers["openrouter"].timeouts.response_header == 60
    assert config.profiles["coding"].pins["llm-code"] == "gpt-oss:high"
    assert config.selectors["chat"].targets == ("gpt-oss", "gemma-vision")
    assert config.models["comfy"].compat.ignore_websockets


def test_check_config_prints_the_v250_file_resolved() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "swapd", "check-config", str(CORPUS / "v250-everything.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for line in (
        "    argv:   /usr/bin/llama-server --port 12002 -m /models/gpt-oss-20b.gguf --jinja",
        "    ttl:    600s",
        "    unloadTimeout: 30s",
        "    timeouts: connect=5 keepalive=30 response_header=300 tls_handshake=10 "
        "expect_continue=1 idle_conn=90",
        '    setParamsByID gpt-oss:high: {"chat_template_kwargs": {"reasoning_effort": "high"}}',
        "    aliases: gpt-oss:high, gpt-oss:low",
        "globalTTL: 600s",
        "unloadTimeout: 15s",
        r"upstream.ignorePaths: \.(js|css|png|ico)$, ^/assets/",
        "  peer openrouter timeouts: connect=10 keepalive=30 response_header=60 "
        "tls_handshake=10 expect_continue=1 idle_conn=90",
        "  coding: image-gen -> (disabled), llm-code -> gpt-oss:high, "
        "llm-plan -> openrouter/z-ai/glm-4.7",
        "  chat: warm over gpt-oss, gemma-vision",
    ):
        assert line in out.splitlines(), line
    assert '"context_length": 131072' in out
    assert "'performance' is accepted" not in result.stderr  # sampling is active
    assert "ui: 'ui' is accepted, not active yet in swapd" in result.stderr
