"""The settings llama-swap added after v193, as the loader reads them (delta spec §2):
defaults, inheritance, the resolved values a loaded config holds, and every error with
its place. Their behaviour over HTTP is in ``test_v250_http.py``."""

from __future__ import annotations

import textwrap

import pytest

from swapd.config import Config, ConfigError, parse_config
from swapd.config.v250 import DEFAULT_IGNORE_PATHS
from swapd.errors import ConfigProblem


def load(text: str) -> Config:
    return parse_config(textwrap.dedent(text), file="t.yaml", environ={})


def problems(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(ConfigError) as info:
        load(text)
    found: list[ConfigProblem] = list(info.value.problems)
    return [(p.line, p.path, p.message) for p in found]


# --- globalTTL, ttl, unloadTimeout --------------------------------------------------------


def test_ttl_inherits_global_ttl_unless_set() -> None:
    config = load(
        """
        globalTTL: 300
        unloadTimeout: 20
        models:
          inherit: {cmd: "s --port ${PORT}"}
          minus-one: {cmd: "s --port ${PORT}", ttl: -1}
          never: {cmd: "s --port ${PORT}", ttl: 0, unloadTimeout: 3}
          own: {cmd: "s --port ${PORT}", ttl: 60}
        """
    )
    ttl = {m: spec.ttl for m, spec in config.models.items()}
    assert ttl == {"inherit": 300, "minus-one": 300, "never": 0, "own": 60}
    unload = {m: spec.unload_timeout for m, spec in config.models.items()}
    assert unload == {"inherit": 20, "minus-one": 20, "never": 3, "own": 20}
    assert config.global_ttl == 300


def test_without_global_ttl_models_never_unload_and_stops_use_the_daemon_grace() -> None:
    config = load('models:\n  m: {cmd: "s --port ${PORT}"}\n')
    assert config.models["m"].ttl == 0
    assert config.models["m"].unload_timeout == 0  # 0: swapd's stop grace (10 s by default)


def test_negative_ttl_and_timeouts_are_errors() -> None:
    assert problems(
        """
        globalTTL: -5
        unloadTimeout: -1
        models:
          a: {cmd: "s --port ${PORT}", ttl: -2, unloadTimeout: -3}
        """
    ) == [
        (2, "globalTTL", "must be at least 0, found -5"),
        (3, "unloadTimeout", "must be at least 0, found -1"),
        (5, "models.a.ttl", "model a: invalid TTL value -2"),
        (5, "models.a.unloadTimeout", "model a: invalid unloadTimeout value -3"),
    ]


# --- timeouts ------------------------------------------------------------------------------


def test_timeouts_defaults_for_models_and_peers() -> None:
    config = load(
        """
        models:
          m:
            cmd: s --port ${PORT}
            timeouts: {connect: 5, responseHeader: 120}
        peers:
          p: {proxy: "http://h:1", models: [x]}
          q: {proxy: "http://h:2", models: [y], timeouts: {connect: 2}}
          r: {proxy: "http://h:3", models: [z], timeouts: {responseHeader: 0}}
        """
    )
    model = config.models["m"].timeouts
    assert (model.connect, model.response_header, model.keepalive, model.idle_conn) == (
        5,
        120,
        30,
        90,
    )
    peers = {p: config.peers[p].timeouts for p in ("p", "q", "r")}
    assert [t.response_header for t in peers.values()] == [60, 60, 0]
    assert peers["q"].connect == 2
    assert problems("models:\n  m:\n    cmd: s --port ${PORT}\n    timeouts: {connect: -1}\n") == [
        (4, "models.m.timeouts.connect", "must be at least 0, found -1")
    ]


# --- capabilities --------------------------------------------------------------------------


def test_capabilities_are_typed_and_checked() -> None:
    config = load(
        """
        macros:
          ctx: 32768
        models:
          m:
            cmd: s --port ${PORT}
            capabilities: {in: [text, image], out: [text], tools: true, context: 8192}
        """
    )
    caps = config.models["m"].capabilities
    assert [m.value for m in caps.inputs] == ["text", "image"]
    assert caps.tools and caps.context == 8192 and caps.configured
    found = problems(
        """
        models:
          m:
            cmd: s --port ${PORT}
            capabilities:
              in: [text, video]
              context: -1
        """
    )
    assert found == [
        (
            6,
            "models.m.capabilities.in[1]",
            "'video' is not valid; expected one of: text, audio, image",
        ),
        (7, "models.m.capabilities.context", "must be at least 0, found -1"),
    ]


# --- filters.setParamsByID -------------------------------------------------------------------


def test_set_params_by_id_keys_expand_and_become_aliases() -> None:
    config = load(
        """
        macros:
          effort: high
        models:
          gpt-oss:
            cmd: s --port ${PORT}
            aliases: [oss]
            filters:
              setParams: {temperature: 1.0}
              setParamsByID:
                "${MODEL_ID}": {chat_template_kwargs: {reasoning_effort: medium}}
                "${MODEL_ID}:${effort}": {chat_template_kwargs: {reasoning_effort: "${effort}"}}
        """
    )
    model = config.models["gpt-oss"]
    assert model.aliases == ("oss", "gpt-oss:high")
    assert model.filters.set_items("gpt-oss:high") == (
        ("temperature", 1.0),
        ("chat_template_kwargs", {"reasoning_effort": "high"}),
    )
    assert model.filters.set_items("oss") == (("temperature", 1.0),)


def test_set_params_by_id_errors() -> None:
    found = problems(
        """
        models:
          a:
            cmd: s --port ${PORT}
            aliases: [shared]
          b:
            cmd: s --port ${PORT}
            filters:
              setParamsByID:
                a: {x: 1}
                shared: {x: 2}
                "b:${nope}": {x: 3}
        """
    )
    assert found == [
        (9, "models.b.filters.setParamsByID", "unknown macro '${nope}' found in model b filters.setParamsByID key"),
        (10, "models.b.filters.setParamsByID.a", "model b filters.setParamsByID: key 'a' conflicts with an existing model ID"),
        (11, "models.b.filters.setParamsByID.shared", "duplicate alias 'shared' in model b filters.setParamsByID, already used by model a"),
    ]  # fmt: skip


def test_set_params_by_id_keys_that_expand_alike_are_an_error() -> None:
    found = problems(
        """
        macros:
          v: x
        models:
          m:
            cmd: s --port ${PORT}
            filters:
              setParamsByID:
                "m:x": {a: 1}
                "m:${v}": {a: 2}
        """
    )
    assert [m for _, _, m in found] == [
        'model m filters.setParamsByID: keys "m:${v}" and another key resolve to the same '
        'value "m:x"'
    ]


# --- macros in every model value -------------------------------------------------------------


def test_macros_reach_names_aliases_and_use_model_name() -> None:
    config = load(
        """
        macros:
          family: qwen3
        models:
          coder:
            cmd: s --port ${PORT}
            name: "${family} ${MODEL_ID}"
            description: "port ${PORT}"
            aliases: ["${family}-${MODEL_ID}"]
            useModelName: "${family}:latest"
            env: ["TAG=${family}"]
        """
    )
    coder = config.models["coder"]
    assert coder.name == "qwen3 coder"
    assert coder.description == f"port {coder.port}"
    assert coder.aliases == ("qwen3-coder",)
    assert coder.use_model_name == "qwen3:latest"
    assert coder.env == ("TAG=qwen3",)
    found = problems('models:\n  m:\n    cmd: s --port ${PORT}\n    aliases: ["${oops}"]\n')
    assert found == [(4, "models.m.aliases[0]", "model m aliases: unknown macro '${oops}'")]


def test_global_macros_expand_in_peer_proxy() -> None:
    config = load(
        """
        macros:
          box: http://10.0.0.2:8080
        peers:
          p: {proxy: "${box}", models: [x]}
        """
    )
    assert config.peers["p"].proxy == "http://10.0.0.2:8080"


# --- upstream, compat, store/performance/ui ---------------------------------------------------


def test_upstream_ignore_paths_default_and_errors() -> None:
    assert load("").upstream.ignore_paths == DEFAULT_IGNORE_PATHS
    assert load("upstream:\n  ignorePaths: ['^/assets/']\n").upstream.ignore_paths == ("^/assets/",)
    (found,) = problems("upstream:\n  ignorePaths: ['(unclosed']\n")
    assert found[:2] == (2, "upstream.ignorePaths[0]")
    assert found[2].startswith('upstream.ignorePaths: invalid regular expression "(unclosed": ')


def test_keys_accepted_but_not_active_yet_warn() -> None:
    config = load(
        """
        store: {path: ./activity.db}
        performance: {disabled: true, every: 10s}
        ui:
          activity:
            session_id: [X-Session-ID]
        models:
          m:
            cmd: s --port ${PORT}
            compat: {ignoreWebsockets: true}
        """
    )
    assert config.store.path == "./activity.db"
    assert config.performance.every == "10s"
    assert config.ui.activity.session_id == ("X-Session-ID",)
    assert config.models["m"].compat.ignore_websockets is True
    assert config.warnings == (  # performance is active (tests/test_hardware.py)
        "t.yaml:4: ui: 'ui' is accepted, not active yet in swapd",
    )


# --- profiles and selectors -------------------------------------------------------------------


def test_profiles_pins_must_name_something_routable() -> None:
    config = load(
        """
        models:
          qwen: {cmd: "s --port ${PORT}", aliases: [q]}
        peers:
          cloud: {proxy: "http://h:1", models: [glm]}
        profiles:
          coding:
            description: Coding routing
            pins:
              llm-code: q
              llm-plan: cloud/glm
              image-gen: ~
        """
    )
    assert dict(config.profiles["coding"].pins) == {
        "llm-code": "q",
        "llm-plan": "cloud/glm",
        "image-gen": None,
    }
    found = problems(
        """
        models:
          qwen: {cmd: "s --port ${PORT}"}
        profiles:
          empty: {description: x}
          bad:
            pins: {llm: nowhere}
        """
    )
    assert found == [
        (5, "profiles.empty.pins", "profiles.empty.pins must contain at least one entry"),
        (7, "profiles.bad.pins.llm", 'profiles.bad.pins.llm references unknown model "nowhere"'),
    ]


def test_selectors_are_checked() -> None:
    config = load(
        """
        models:
          big: {cmd: "s --port ${PORT}"}
          small: {cmd: "s --port ${PORT}"}
        selectors:
          coder: {strategy: warm, targets: [big, small]}
        """
    )
    assert config.selectors["coder"].strategy.value == "warm"
    assert config.warnings == ()
    found = problems(
        """
        models:
          big: {cmd: "s --port ${PORT}"}
        peers:
          p: {proxy: "http://h:1", models: [far]}
        selectors:
          big: {strategy: pin, targets: [big]}
          s1: {strategy: warm, targets: [far, ghost]}
          s2: {strategy: spillover, targets: [s1]}
          s3: {strategy: sometimes, targets: [big]}
          p/far: {strategy: pin, targets: [big]}
        """
    )
    assert [(line, m) for line, _, m in found] == [
        (7, 'selectors.big: name conflicts with model ID "big"'),
        (8, 'selectors.s1.targets[0] "far" must resolve to a local model for strategy "warm"'),
        (8, 'selectors.s1.targets[1] references unknown model "ghost"'),
        (9, 'selectors.s2.targets[0] references selector "s1": selector chaining is not supported'),
        (10, "'sometimes' is not valid; expected one of: warm, pin, spillover"),
        (11, 'selectors.p/far: name conflicts with peer model "p/far"'),
    ]


def test_a_whole_value_macro_gives_numbers_and_booleans_their_type() -> None:
    config = load(
        """
        macros:
          base: 7000
          idle: 300
          hide: true
        startPort: ${base}
        healthCheckTimeout: ${idle}
        models:
          m:
            cmd: s --port ${PORT}
            ttl: ${idle}
            unlisted: ${hide}
            macros:
              idle: 60
          n:
            cmd: s --port ${PORT}
            ttl: ${idle}
        """
    )
    assert (config.start_port, config.health_check_timeout) == (7000, 300)
    assert config.models["m"].port == 7000
    assert (config.models["m"].ttl, config.models["m"].unlisted) == (60, True)  # model wins
    assert config.models["n"].ttl == 300
    found = problems(
        """
        macros:
          word: soon
          idle: 300
          low: 3
        startPort: ${nope}
        models:
          m:
            cmd: s --port ${PORT}
            ttl: ${word}
            unlisted: ${idle}
            capabilities:
              context: ${low}
          quoted:
            cmd: s --port ${PORT}
            timeouts:
              connect: "${low}"
        """
    )
    assert found == [
        (6, "startPort", "unknown macro '${nope}'"),
        (10, "models.m.ttl", "macro '${word}' is 'soon'; expected a whole number"),
        (11, "models.m.unlisted", "macro '${idle}' is 300; expected true or false"),
        (17, "models.quoted.timeouts.connect", "expected a whole number, found '${low}'"),
    ]
    # a quoted "${low}" is text, as for every number


def test_global_macros_reach_every_top_level_key() -> None:
    config = load(
        """
        macros:
          key: sk-abc
          gpu: big
        apiKeys: ["${key}"]
        store:
          path: /var/${gpu}/activity.db
        hooks:
          onStartup:
            preload: ["${gpu}"]
        models:
          big:
            cmd: s --port ${PORT}
        """
    )
    assert config.api_keys == ("sk-abc",)
    assert config.store.path == "/var/big/activity.db"
    assert config.hooks.on_startup.preload == ("big",)
    assert problems('apiKeys: ["${nokey}"]\n') == [(1, "apiKeys[0]", "unknown macro '${nokey}'")]


def test_spillover_targets_must_be_able_to_run_together() -> None:
    text = """
        models:
          a: {cmd: "s --port ${PORT}", aliases: [alias-a]}
          b: {cmd: "s --port ${PORT}"}
        GROUPS
        selectors:
          s: {strategy: spillover, targets: [a, b]}
          twice: {strategy: spillover, targets: [a, alias-a]}
        """
    found = problems(text.replace("GROUPS", ""))
    assert [m for _, _, m in found] == [
        "selectors.s.targets must all be in one group with swap: false "
        "(spillover runs them side by side)",
        "selectors.twice.targets resolve to the same model twice",
    ]
    ok = text.replace("GROUPS", "groups:\n          pair: {swap: false, members: [a, b]}")
    assert problems(ok) == [(9, "selectors.twice.targets", "selectors.twice.targets resolve to the same model twice")]  # fmt: skip
