"""The config loader: defaults, validation messages, macros and llama-swap compatibility.

Covers reference section 13.8 (llama-swap's config tests) rule by rule, plus swapd's
stricter checks. Every error test asserts the message *and* where it points (line and
setting path), because a message without a place is half an error.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from swapd.config import DEFAULT_GROUP, Config, ConfigError, load_config, parse_config
from swapd.core.routing import Router
from swapd.errors import ConfigProblem

CONFIGS = Path(__file__).parent / "configs"
ENV = {"HOME": "/home/tester", "SWAPD_TEST_KEY": "sk-from-env", "SWAPD_TEST_PEER_KEY": "sk-peer"}


def load(text: str, environ: dict[str, str] | None = None, *, strict: bool = False) -> Config:
    return parse_config(
        textwrap.dedent(text), file="test.yaml", environ=environ or ENV, strict=strict
    )


def problems(
    text: str, environ: dict[str, str] | None = None, *, strict: bool = False
) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load(text, environ, strict=strict)
    return list(info.value.problems)


def one_problem(text: str, environ: dict[str, str] | None = None) -> ConfigProblem:
    found = problems(text, environ)
    assert len(found) == 1, found
    return found[0]


# --- defaults ----------------------------------------------------------------------------


def test_defaults_of_root_model_and_default_group() -> None:
    config = load(
        """
        models:
          model1:
            cmd: server --port ${PORT}
          model3:
            cmd: server --port ${PORT}
        """
    )
    assert config.health_check_timeout == 120
    assert config.start_port == 5800
    assert config.log_level == "info"
    assert config.log_time_format == ""
    assert config.log_to_stdout == "proxy"
    assert config.capture_buffer == 5
    assert config.metrics_max_in_memory == 1000
    assert config.sleep_request_timeout == 10
    assert config.wake_request_timeout == 10
    default = config.groups[DEFAULT_GROUP]
    assert (default.swap, default.exclusive, default.persistent) == (True, True, False)
    assert default.members == ("model1", "model3")
    model = config.models["model1"]
    assert model.proxy == "http://localhost:5800"
    assert model.check_endpoint == "/health"
    assert model.ttl == 0
    assert model.concurrency_limit == 0
    assert model.effective_concurrency_limit == 10
    assert model.send_loading_state is False
    assert model.argv == ("server", "--port", "5800")
    assert config.models["model3"].port == 5801
    assert config.warnings == ()


def test_empty_file_is_a_valid_config_with_no_models() -> None:
    config = load("")
    assert dict(config.models) == {}
    assert config.groups[DEFAULT_GROUP].members == ()


def test_empty_values_mean_defaults() -> None:
    config = load(
        """
        healthCheckTimeout:
        models:
          m:
            cmd: x --port ${PORT}
            aliases:
            ttl:
        """
    )
    assert config.health_check_timeout == 120
    assert config.models["m"].aliases == ()


# --- ports -------------------------------------------------------------------------------


def test_ports_are_assigned_in_sorted_id_order_only_to_models_using_them() -> None:
    config = load(
        """
        startPort: 9000
        models:
          model2: {cmd: "s --port ${PORT}"}
          model1: {cmd: "s --port ${PORT}"}
          fixed:
            cmd: s --port 7000
            proxy: http://127.0.0.1:7000
          author/model:F16: {cmd: "s --port ${PORT}"}
        """
    )
    assert config.models["author/model:F16"].port == 9000
    assert config.models["model1"].port == 9001
    assert config.models["model2"].port == 9002
    assert config.models["fixed"].port is None
    assert config.models["fixed"].proxy == "http://127.0.0.1:7000"


def test_default_proxy_with_a_fixed_port_cmd_is_the_port_error() -> None:
    problem = one_problem(
        """
        models:
          model1:
            cmd: server --port 8080
        """
    )
    assert problem.message == (
        "proxy uses ${PORT} but cmd does not - ${PORT} is only available when used in cmd"
    )
    assert problem.path == "models.model1.proxy"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abcd", "expected a whole number, found 'abcd'"),
        ("-99", "must be at least 1, found -99"),
        ("0", "must be at least 1, found 0"),
        ('"5800"', "expected a whole number, found '5800'"),
    ],
)
def test_bad_start_port(value: str, message: str) -> None:
    problem = one_problem(f"startPort: {value}\n")
    assert problem.message == message
    assert (problem.line, problem.path) == (1, "startPort")


def test_custom_start_port_and_port_inside_a_macro() -> None:
    config = load(
        """
        startPort: 1000
        macros:
          serve: "server --port ${PORT}"
        models:
          m:
            cmd: ${serve} --x
        """
    )
    assert config.models["m"].port == 1000
    assert config.models["m"].argv == ("server", "--port", "1000", "--x")


# --- macros (reference 2.6) --------------------------------------------------------------


def test_macro_replacement_and_model_override() -> None:
    config = load(
        """
        macros:
          svr-path: "path/to/server"
          argOne: "--arg1"
        models:
          model1:
            macros:
              argOne: "--override"
            cmd: ${svr-path} ${argOne} --port ${PORT} --model ${MODEL_ID}
            proxy: "http://127.0.0.1:${PORT}"
            checkEndpoint: "/${argOne}"
            filters:
              stripParams: "${argOne}, x"
        """
    )
    model = config.models["model1"]
    assert model.cmd == "path/to/server --override --port 5800 --model model1"
    assert model.proxy == "http://127.0.0.1:5800"
    assert model.check_endpoint == "/--override"
    assert model.filters.strip_params == "--override, x"
    # the global macro's own text is kept as written
    assert config.macros["argOne"] == "--arg1"


@pytest.mark.parametrize("field", ["cmd", "cmdStop", "proxy", "checkEndpoint", "stripParams"])
def test_unknown_macro_in_each_field(field: str) -> None:
    settings = {
        "cmd": "cmd: s --port ${PORT} ${unknownMacro}",
        "cmdStop": "cmdStop: kill ${unknownMacro}",
        "proxy": "proxy: http://h:${unknownMacro}",
        "checkEndpoint": "checkEndpoint: /${unknownMacro}",
        "stripParams": "filters: {stripParams: '${unknownMacro}'}",
    }
    lines = ["models:", "  model1:"]
    if field != "cmd":
        lines.append("    " + settings["cmd"].replace(" ${unknownMacro}", ""))
    lines.append("    " + settings[field])
    problem = one_problem("\n".join(lines) + "\n")
    shown = "filters.stripParams" if field == "stripParams" else field
    assert problem.message == f"unknown macro '${{unknownMacro}}' found in model1.{shown}"
    assert problem.line == len(lines)


def test_port_left_over_in_check_endpoint() -> None:
    problem = one_problem(
        """
        models:
          m:
            cmd: s --port ${PORT}
            checkEndpoint: /health/${PORT}
        """
    )
    assert problem.message == "macro '${PORT}' should have been substituted in m.checkEndpoint"


def test_pid_only_in_cmd_stop() -> None:
    config = load(
        """
        models:
          m:
            cmd: s --port ${PORT}
            cmdStop: kill -TERM ${PID}
        """
    )
    assert config.models["m"].stop_argv == ("kill", "-TERM", "${PID}")
    problem = one_problem(
        """
        models:
          m:
            cmd: s --port ${PORT} --pid ${PID}
        """
    )
    assert problem.message == "${PID} is only available in cmdStop"


@pytest.mark.parametrize("name", ["PORT", "MODEL_ID", "PID"])
def test_reserved_macro_names(name: str) -> None:
    problem = one_problem(f"macros:\n  {name}: 1\n")
    assert problem.message == f"macro name '{name}' is reserved"
    assert (problem.line, problem.path) == (2, f"macros.{name}")
    problem = one_problem(
        f"models:\n  m:\n    cmd: s --port ${{PORT}}\n    macros:\n      {name}: x\n"
    )
    assert problem.message == f"macro name '{name}' is reserved"
    assert problem.path == f"models.m.macros.{name}"


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (
            "'" + "a" * 64 + "': x",
            "macro name '" + "a" * 64 + "' exceeds maximum length of 63 characters",
        ),
        (
            "'bad name': x",
            "macro name 'bad name' contains invalid characters, must match pattern ^[a-zA-Z0-9_-]+$",
        ),
        ("loop: 'a ${loop}'", "macro 'loop' contains self-reference"),
        (
            "list: [1, 2]",
            "macro 'list' has invalid type list, must be a scalar type (string, int, float, or bool)",
        ),
        (
            "map: {a: 1}",
            "macro 'map' has invalid type map, must be a scalar type (string, int, float, or bool)",
        ),
        (
            "nothing: null",
            "macro 'nothing' has invalid type null, must be a scalar type (string, int, float, or bool)",
        ),
    ],
)
def test_macro_definition_errors(definition: str, message: str) -> None:
    assert one_problem(f"macros:\n  {definition}\n").message == message


def test_macro_inside_a_comment_line_is_not_expanded() -> None:
    config = load(
        """
        models:
          m:
            cmd: |
              server --port ${PORT}
              # ${notAMacro} in a comment line is neither expanded nor an error
              --flag
        """
    )
    assert config.models["m"].argv == ("server", "--port", "5800", "--flag")


def test_model_id_in_cmd_and_in_global_macros() -> None:
    config = load(
        """
        macros:
          with-id: "--alias ${MODEL_ID}"
        models:
          author/model:F16:
            cmd: s --port ${PORT} --name ${MODEL_ID} ${with-id}
        """
    )
    assert config.models["author/model:F16"].argv[-4:] == (
        "--name",
        "author/model:F16",
        "--alias",
        "author/model:F16",
    )
    assert config.macros["with-id"] == "--alias ${MODEL_ID}"


def test_macro_in_macro_chains_are_lifo() -> None:
    config = load(
        """
        macros:
          base: "/opt"
          path: "${base}/bin"
          full: "${path}/server --id ${MODEL_ID}"
        models:
          m:
            cmd: ${full} --port ${PORT}
        """
    )
    assert config.models["m"].argv == ("/opt/bin/server", "--id", "m", "--port", "5800")


def test_model_override_feeds_a_global_macro() -> None:
    config = load(
        """
        macros:
          value: "value-global"
          use: "--v ${value}"
        models:
          m:
            macros:
              value: "value-model-level"
            cmd: s ${use} --port ${PORT}
        """
    )
    assert config.models["m"].argv == ("s", "--v", "value-model-level", "--port", "5800")


def test_reference_to_a_later_macro_is_unknown() -> None:
    problem = one_problem(
        """
        macros:
          early: "${late}"
          late: "x"
        models:
          m:
            cmd: s ${early} --port ${PORT}
        """
    )
    assert problem.message == "unknown macro '${late}' found in m.cmd"


def test_macro_values_render_like_go() -> None:
    config = load(
        """
        macros:
          f: 1.0
          big: 1000000.0
          b: true
          i: 42
        models:
          m:
            cmd: s ${f} ${big} ${b} ${i} --port ${PORT}
        """
    )
    assert config.models["m"].argv[1:5] == ("1", "1e+06", "true", "42")


def test_typed_metadata() -> None:
    config = load(
        """
        startPort: 10001
        macros:
          ctx: 16384
          temp: 0.7
          flag: true
          who: "someone"
        models:
          m:
            cmd: s --port ${PORT}
            metadata:
              port: ${PORT}
              temperature: ${temp}
              enabled: ${flag}
              owner: ${who}
              context: ${ctx}
              quoted: "${ctx}"
              note: "port ${PORT} temp ${temp}"
              nested:
                list: [1, "${temp}", "id ${MODEL_ID}", {deep: "${ctx}"}]
        """
    )
    meta = config.models["m"].metadata
    assert meta["port"] == 10001
    assert meta["temperature"] == 0.7
    assert meta["enabled"] is True
    assert meta["owner"] == "someone"
    assert meta["context"] == 16384
    assert meta["quoted"] == 16384  # exactly "${ctx}": the macro's type wins, as in llama-swap
    assert meta["note"] == "port 10001 temp 0.7"
    assert meta["nested"] == {"list": [1, 0.7, "id m", {"deep": 16384}]}


def test_metadata_model_macro_beats_global_and_unknown_is_reported() -> None:
    config = load(
        """
        macros: {x: global}
        models:
          m:
            cmd: s --port ${PORT}
            macros: {x: model}
            metadata: {v: "${x}"}
        """
    )
    assert config.models["m"].metadata["v"] == "model"
    problem = one_problem(
        """
        models:
          m:
            cmd: s --port ${PORT}
            metadata:
              v: "${nope}"
        """
    )
    assert (problem.message, problem.path, problem.line) == (
        "unknown macro '${nope}'",
        "models.m.metadata.v",
        6,
    )


def test_macros_expand_in_env_and_set_params_with_types() -> None:
    config = load(
        """
        macros: {gpu: 1, max: 4096}
        models:
          m:
            cmd: s --port ${PORT}
            env: ["CUDA_VISIBLE_DEVICES=${gpu}"]
            filters:
              setParams: {max_tokens: "${max}", label: "m=${MODEL_ID}"}
        """
    )
    model = config.models["m"]
    assert model.env == ("CUDA_VISIBLE_DEVICES=1",)
    assert dict(model.filters.set_params) == {"max_tokens": 4096, "label": "m=m"}


# --- env macros --------------------------------------------------------------------------


def test_env_macros_everywhere() -> None:
    env = {"BIN": "/usr/bin/server", "HOST": "10.0.0.5", "KEY": "sk-env", "N": "3", "P": "top_k"}
    config = load(
        """
        startPort: ${env.N}00
        apiKeys: ["${env.KEY}"]
        macros:
          bin: ${env.BIN}
        models:
          m:
            macros: {host: "${env.HOST}"}
            cmd: ${bin} --port ${PORT}
            cmdStop: kill ${env.N}
            proxy: http://${host}:${PORT}
            checkEndpoint: /h${env.N}
            filters: {stripParams: "${env.P}"}
            metadata:
              n: ${env.N}
              s: "${env.N}"
        """,
        env,
    )
    model = config.models["m"]
    assert config.start_port == 300
    assert config.api_keys == ("sk-env",)
    assert model.argv == ("/usr/bin/server", "--port", "300")
    assert model.proxy == "http://10.0.0.5:300"
    assert model.cmd_stop == "kill 3"
    assert model.check_endpoint == "/h3"
    assert model.filters.stripped_keys() == ("top_k",)
    assert dict(model.metadata) == {"n": 3, "s": "3"}


def test_missing_env_var_names_it_and_its_place() -> None:
    problem = one_problem("models:\n  m:\n    cmd: ${env.NOT_THERE_AT_ALL} --port ${PORT}\n", {})
    assert problem.message == "environment variable 'NOT_THERE_AT_ALL' is not set"
    assert (problem.line, problem.path) == (3, "models.m.cmd")


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\0b"])
def test_env_values_with_newlines_are_rejected(value: str) -> None:
    problem = one_problem("apiKeys: ['${env.BAD}']\n", {"BAD": value})
    assert "newlines" in problem.message


def test_quotes_and_backslashes_survive_in_env_values() -> None:
    value = 'say "hi" C:\\path\\'
    config = load(
        """
        models:
          m:
            cmd: s --port ${PORT}
            description: "${env.V}"
            name: ${env.V}
        """,
        {"V": value},
    )
    assert config.models["m"].description == value
    assert config.models["m"].name == value


def test_env_macros_in_comments_are_ignored() -> None:
    config = load(
        """
        # ${env.UNSET_ONE} in a full-line comment
        models:
            # ${env.UNSET_TWO} indented comment
          m:
            cmd: s --port ${PORT}  # ${env.UNSET_THREE} inline comment
        """,
        {},
    )
    assert config.models["m"].argv == ("s", "--port", "5800")


def test_peer_settings_from_env_and_global_macros() -> None:
    config = load(
        """
        macros:
          MAX_TOKENS: 4096
          strip: "top_k"
        peers:
          p:
            proxy: https://example.invalid/api
            apiKey: ${env.PEER_KEY}
            models: [a]
            filters:
              stripParams: "${strip}, ${env.EXTRA}"
              setParams:
                max_tokens: "${MAX_TOKENS}"
        """,
        {"PEER_KEY": "sk-peer", "EXTRA": "min_p"},
    )
    peer = config.peers["p"]
    assert peer.api_key == "sk-peer"
    assert peer.filters.stripped_keys() == ("min_p", "top_k")
    assert dict(peer.filters.set_params) == {"max_tokens": 4096}


@pytest.mark.parametrize(
    ("setting", "path"),
    [
        ("apiKey: '${nope}'", "peers.p.apiKey"),
        ("filters: {setParams: {a: '${nope}'}}", "peers.p.filters.setParams.a"),
        ("filters: {stripParams: '${nope}'}", "peers.p.filters.stripParams"),
    ],
)
def test_unknown_macro_in_peer_settings(setting: str, path: str) -> None:
    problem = one_problem(f"peers:\n  p:\n    proxy: http://h\n    models: [a]\n    {setting}\n")
    assert problem.message == "unknown macro '${nope}'"
    assert problem.path == path


# --- validation messages -----------------------------------------------------------------


def test_model_without_cmd() -> None:
    problem = one_problem("models:\n  m:\n    ttl: 5\n")
    assert problem.message == "missing required setting 'cmd'"
    assert (problem.line, problem.path) == (2, "models.m")


def test_model_with_empty_cmd() -> None:
    problem = one_problem(
        "models:\n  m:\n    cmd: |\n      # only a comment\n    proxy: http://h:1\n"
    )
    assert problem.message == "cmd is empty: it must name the command to run"


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [("ttll", "ttl"), ("checkendpoint", "checkEndpoint"), ("CMD", "cmd"), ("aliasses", "aliases")],
)
def test_unknown_key_suggests_the_closest(key: str, suggestion: str) -> None:
    # A warning (llama-swap ignores unknown keys); --strict makes it an error.
    found = problems(f"models:\n  m:\n    cmd: s --port ${{PORT}}\n    {key}: 1\n", strict=True)
    assert found[0].message == f"unknown setting '{key}' ignored (did you mean '{suggestion}'?)"
    assert (found[0].line, found[0].path) == (4, f"models.m.{key}")


def test_unknown_root_key_without_a_close_match_lists_known_keys() -> None:
    problem = problems("zzzzqqq: 1\n", strict=True)[0]
    assert problem.message.startswith(
        "unknown setting 'zzzzqqq' ignored; known settings: allowedHosts,"
    )


def test_group_members_must_be_model_ids() -> None:
    found = problems(
        """
        models:
          a: {cmd: "s --port ${PORT}", aliases: [alias-a]}
          b: {cmd: "s --port ${PORT}"}
        groups:
          g1:
            members: [a, ghost, a]
          g2:
            members: [alias-a, b]
          g3:
            members: [b]
        """,
        strict=True,  # members that are not model IDs are warnings otherwise
    )
    messages = [(p.line, p.path, p.message) for p in found]
    assert messages == [
        (7, "groups.g1.members[1]", "'ghost' is not a model ID; ignored (see models:)"),
        (7, "groups.g1.members[2]", "duplicate model member a found in group: g1"),
        (9, "groups.g2.members[0]", "'alias-a' is an alias of 'a', not a model ID; ignored"),
        (11, "groups.g3.members[0]", "model member b is used in multiple groups: g2 and g3"),
    ]


def test_groups_and_the_default_group() -> None:
    config = load(
        """
        models:
          m1: {cmd: "s --port ${PORT}"}
          m2: {cmd: "s --port ${PORT}"}
          m3: {cmd: "s --port ${PORT}"}
          m5: {cmd: "s --port ${PORT}"}
        groups:
          G1: {members: [m1, m2]}
          forever: {persistent: true, swap: false, exclusive: false, members: [m3]}
        """
    )
    assert config.groups["G1"].members == ("m1", "m2")
    assert config.groups[DEFAULT_GROUP].members == ("m5",)
    assert config.group_of("m5") == DEFAULT_GROUP
    assert config.group_of("m3") == "forever"
    assert config.groups["forever"].persistent is True


def test_aliases_unique_and_never_model_ids() -> None:
    found = problems(
        """
        models:
          model: {cmd: "s --port ${PORT}", aliases: [m1]}
          other: {cmd: "s --port ${PORT}", aliases: [m1, model, ""]}
        """
    )
    assert [p.message for p in found] == [
        "duplicate alias m1 found in model: other (also in model)",
        "alias 'model' is also a model ID; a model ID always wins",
        "an alias must not be empty",
    ]


def test_find_by_id_and_alias() -> None:
    config = load(
        """
        models:
          model1: {cmd: "s --port ${PORT}", aliases: [m1, model-one]}
        """
    )
    router = Router(config)  # the one place names are resolved
    assert router.resolve_local("model1") == "model1"
    assert router.resolve_local("model-one") == "model1"
    assert router.resolve_local("nope") is None


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (
            "logToStdout: everything\n",
            "logToStdout",
            "'everything' is not valid; expected one of: proxy, upstream, both, none",
        ),
        (
            "logToStdout: Proxy\n",
            "logToStdout",
            "'Proxy' is not valid; expected one of: proxy, upstream, both, none",
        ),
        (
            "logLevel: verbose\n",
            "logLevel",
            "'verbose' is not valid; expected one of: debug, info, warn, error",
        ),
        (
            "logTimeFormat: iso\n",
            "logTimeFormat",
            "'iso' is not valid; expected one of: '', ansic, unixdate, rubydate, rfc822, rfc822z, rfc850, rfc1123, rfc1123z, rfc3339, rfc3339nano, kitchen, stamp, stampmilli, stampmicro, stampnano",
        ),
        ("apiKeys: ['']\n", "apiKeys[0]", "empty api key found in apiKeys"),
        (
            "apiKeys: [ok, 'has space']\n",
            "apiKeys[1]",
            "api key cannot contain spaces: `has space`",
        ),
        (
            "includeAliasesInList: yes\n",
            "includeAliasesInList",
            "expected true or false, found 'yes' (YAML 1.1 booleans are not accepted)",
        ),
        ("sendLoadingState: 'true'\n", "sendLoadingState", "expected true or false, found 'true'"),
        ("peers:\n  p: {models: [a]}\n", "peers.p", "missing required setting 'proxy'"),
        ("peers:\n  p: {proxy: 'http://h'}\n", "peers.p", "missing required setting 'models'"),
        (
            "peers:\n  p: {proxy: 'http://h', models: []}\n",
            "peers.p.models",
            "peer models can not be empty",
        ),
        (
            "peers:\n  p: {proxy: '://invalid', models: [a]}\n",
            "peers.p.proxy",
            "invalid peer proxy URL (://invalid): the scheme must be http or https",
        ),
        (
            "models:\n  m: {cmd: 's', proxy: 'localhost:8080'}\n",
            "models.m.proxy",
            "invalid proxy URL 'localhost:8080': the scheme must be http or https",
        ),
        (
            "models:\n  m: {cmd: 's', proxy: 'http://h:99999'}\n",
            "models.m.proxy",
            "invalid proxy URL 'http://h:99999': Port out of range 0-65535",
        ),
        (
            "models:\n  m: {cmd: 's --port ${PORT}', env: [NOEQUALS]}\n",
            "models.m.env[0]",
            "env entry 'NOEQUALS' must look like NAME=value",
        ),
        ("models: [a, b]\n", "models", "expected a mapping, found a list"),
        (
            "models:\n  m: just-a-string\n",
            "models.m",
            "expected a mapping of settings, found 'just-a-string'",
        ),
        (
            "groups:\n  (default): {members: []}\n",
            "groups['(default)']",
            "the group name (default) is reserved",
        ),
    ],
)
def test_validation_messages(text: str, path: str, message: str) -> None:
    problem = one_problem(text)
    assert (problem.path, problem.message) == (path, message)
    assert problem.line >= 1
    assert problem.file == "test.yaml"


def test_health_check_timeout_is_raised_to_15_with_a_warning() -> None:
    config = load("healthCheckTimeout: 5\n")
    assert config.health_check_timeout == 15
    assert config.warnings == (
        "test.yaml:1: healthCheckTimeout: 5 is below the minimum 15; using 15",
    )


def test_all_errors_in_a_file_are_reported_at_once() -> None:
    found = problems(
        """
        startPort: -1
        logToStdout: loud
        models:
          a:
            ttl: soon
          b:
            cmd: s --port ${PORT}
            ttll: 5
        apiKeys: ["bad key"]
        """,
        strict=True,  # ttll is a warning otherwise
    )
    assert [(p.line, p.path) for p in found] == [
        (2, "startPort"),
        (3, "logToStdout"),
        (5, "models.a"),
        (6, "models.a.ttl"),
        (9, "models.b.ttll"),
        (10, "apiKeys[0]"),
    ]
    rendered = str(ConfigError(found))
    assert rendered.startswith("6 problems in the configuration:")
    assert "test.yaml:6:5: models.a.ttl: expected a whole number, found 'soon'" in rendered


# --- strict YAML -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("models: {}\nmodels: {}\n", 2, "Duplicate key 'models'"),
        ("startPort: !!int 5\n", 1, "tags"),
        ("models:\n  m:\n   cmd: x\n  bad indent\n", 5, "invalid YAML"),
    ],
)
def test_strict_yaml_errors_have_lines(text: str, line: int, fragment: str) -> None:
    problem = one_problem(text)
    assert problem.line == line
    assert fragment in problem.message


def test_flow_style_is_accepted() -> None:
    config = load(
        """
        models:
          m: {cmd: "s --port ${PORT}", aliases: [a, b], filters: {setParams: {k: [1, {x: y}]}}}
        """
    )
    assert config.models["m"].aliases == ("a", "b")
    assert dict(config.models["m"].filters.set_params) == {"k": [1, {"x": "y"}]}


def test_yaml_11_words_stay_strings_where_any_value_is_allowed() -> None:
    config = load(
        """
        models:
          m:
            cmd: s --port ${PORT}
            metadata: {answer: yes, octal: 0755, version: "1.0", n: 1.0}
        """
    )
    assert dict(config.models["m"].metadata) == {
        "answer": "yes",
        "octal": 755,
        "version": "1.0",
        "n": 1.0,
    }


# --- filters, sendLoadingState, sleep/wake -----------------------------------------------


@pytest.mark.parametrize("key", ["stripParams", "strip_params"])
def test_strip_params_cleaned_sorted_and_model_protected(key: str) -> None:
    config = load(
        f"""
        models:
          m:
            cmd: s --port ${{PORT}}
            filters:
              {key}: "temperature, model, top_p, ,temperature,  a"
              setParams: {{top_p: 0.9, stop: ["x"], model: other, temperature: 0.1}}
        """
    )
    filters = config.models["m"].filters
    assert filters.stripped_keys() == ("a", "temperature", "top_p")
    assert [k for k, _ in filters.set_items()] == ["stop", "temperature", "top_p"]


def test_both_spellings_of_a_setting_is_an_error() -> None:
    problem = one_problem(
        "models:\n  m:\n    cmd: s --port ${PORT}\n    filters:\n"
        "      stripParams: a\n      strip_params: b\n"
    )
    assert problem.message == "'strip_params' and 'stripParams' are the same setting; keep one"


def test_send_loading_state_inherits_or_overrides() -> None:
    config = load(
        """
        sendLoadingState: true
        models:
          inherit: {cmd: "s --port ${PORT}"}
          off: {cmd: "s --port ${PORT}", sendLoadingState: false}
        """
    )
    assert config.models["inherit"].send_loading_state is True
    assert config.models["off"].send_loading_state is False


def test_sleep_wake_configuration() -> None:
    config = load(
        """
        sleepRequestTimeout: 15
        wakeRequestTimeout: 20
        macros: {SLEEP_LEVEL: 2}
        models:
          m:
            cmd: vllm --port ${PORT}
            sleepMode: enable
            sleepEndpoints:
              - endpoint: /sleep?level=${SLEEP_LEVEL}&port=${PORT}
                timeout: 30
            wakeEndpoints:
              - {endpoint: /wake_up, method: post}
              - endpoint: /collective_rpc
                body: '{"model_id": "${MODEL_ID}", "port": ${PORT}}'
                timeout: 45
              - {endpoint: /reset_prefix_cache, method: PUT}
        """
    )
    model = config.models["m"]
    assert model.sleep_enabled
    assert config.sleep_request_timeout == 15
    assert config.wake_request_timeout == 20
    sleep = model.sleep_endpoints[0]
    assert (sleep.endpoint, sleep.method, sleep.timeout) == ("/sleep?level=2&port=5800", "POST", 30)
    assert [w.endpoint for w in model.wake_endpoints] == [
        "/wake_up",
        "/collective_rpc",
        "/reset_prefix_cache",
    ]
    assert model.wake_endpoints[0].method == "POST"
    assert model.wake_endpoints[0].timeout == 0  # inherits wakeRequestTimeout
    assert model.wake_endpoints[1].body == '{"model_id": "m", "port": 5800}'
    assert model.wake_endpoints[2].method == "PUT"


def test_sleep_enabled_without_sleep_mode_when_both_lists_given() -> None:
    config = load(
        """
        models:
          m:
            cmd: s --port ${PORT}
            sleepEndpoints: [{endpoint: /sleep}]
            wakeEndpoints: [{endpoint: /wake_up}]
          off:
            cmd: s --port ${PORT}
            sleepMode: disable
            sleepEndpoints: [{endpoint: /sleep}]
            wakeEndpoints: [{endpoint: /wake_up}]
        """
    )
    assert config.models["m"].sleep_enabled
    assert not config.models["off"].sleep_enabled


@pytest.mark.parametrize(
    ("settings", "path", "message"),
    [
        (
            "sleepEndpoints: [{endpoint: /s}]",
            "models.m.sleepEndpoints",
            "wakeEndpoints required when sleepEndpoints is configured",
        ),
        (
            "wakeEndpoints: [{endpoint: /w}]",
            "models.m.wakeEndpoints",
            "sleepEndpoints required when wakeEndpoints is configured",
        ),
        (
            "sleepMode: enable",
            "models.m.sleepMode",
            "sleepMode: enable needs both sleepEndpoints and wakeEndpoints",
        ),
        (
            "sleepMode: sometimes",
            "models.m.sleepMode",
            "'sometimes' is not valid; expected one of: enable, disable",
        ),
        (
            "sleepEndpoints: [{endpoint: /s, method: DELETE}]\n    wakeEndpoints: [{endpoint: /w}]",
            "models.m.sleepEndpoints[0].method",
            "'DELETE' is not valid; expected one of: GET, POST, PUT, PATCH",
        ),
        (
            "sleepEndpoints: [{endpoint: /s, timeout: -1}]\n    wakeEndpoints: [{endpoint: /w}]",
            "models.m.sleepEndpoints[0].timeout",
            "must be at least 0, found -1",
        ),
        (
            "sleepEndpoints: [{endpoint: ''}]\n    wakeEndpoints: [{endpoint: /w}]",
            "models.m.sleepEndpoints[0].endpoint",
            "sleepEndpoints[0]: endpoint path is required",
        ),
        (
            "sleepEndpoints: [{endpoint: '/s?x=${nope}'}]\n    wakeEndpoints: [{endpoint: /w}]",
            "models.m.sleepEndpoints[0].endpoint",
            "unknown macro '${nope}' found in m.sleepEndpoints.endpoint",
        ),
    ],
)
def test_sleep_wake_errors(settings: str, path: str, message: str) -> None:
    problem = one_problem(f"models:\n  m:\n    cmd: s --port ${{PORT}}\n    {settings}\n")
    assert (problem.path, problem.message) == (path, message)


def test_sleep_timeouts_are_raised_to_one() -> None:
    config = load("sleepRequestTimeout: 0\nwakeRequestTimeout: -3\n")
    assert (config.sleep_request_timeout, config.wake_request_timeout) == (1, 1)
    assert len(config.warnings) == 2


# --- hooks, legacy keys, whole files -----------------------------------------------------


def test_preload_is_trimmed_resolved_and_unknown_names_warned() -> None:
    config = load(
        """
        models:
          m1: {cmd: "s --port ${PORT}", aliases: [one]}
          m2: {cmd: "s --port ${PORT}"}
        hooks:
          on_startup:
            preload: [" one ", "", m2, ghost, m1]
        """
    )
    assert config.hooks.on_startup.preload == ("m1", "m2")
    assert config.warnings == (
        "test.yaml:7: hooks.onStartup.preload[3]: 'ghost' is not a model; not preloaded",
    )


def test_long_macro_values_are_allowed() -> None:
    # llama-swap v209 removed the 1024-character limit
    config = load("macros:\n  long: '" + "x" * 5000 + "'\n")
    assert len(str(config.macros["long"])) == 5000


def test_legacy_profiles_are_an_error_and_log_requests_warns() -> None:
    # llama-swap v241 gave profiles a new meaning; the legacy list form is a load error there.
    problem = one_problem("profiles:\n  p: [a, b]\n")
    assert (problem.line, problem.path) == (2, "profiles.p")
    assert problem.message == (
        "profile must be a mapping with description and pins; "
        "the legacy list syntax is no longer supported"
    )
    config = load("logRequests: true\n")
    assert config.warnings == (
        "test.yaml:1: logRequests: logRequests is deprecated and has no effect",
    )


def test_llama_swap_style_file_loads_unchanged() -> None:
    config = load_config(CONFIGS / "llama-swap-style.yaml", environ=ENV)
    assert config.warnings == ()
    llama = config.models["llama"]
    assert llama.argv == (
        "/opt/llama.cpp/build/bin/llama-server",
        "--port",
        "10005",
        "--model",
        "/home/tester/models/llama-8B-Q4_K_M.gguf",
        "--ctx-size",
        "16384",
        "--temp",
        "0.7",
    )
    assert llama.proxy == "http://127.0.0.1:8999"
    assert llama.aliases == ("gpt-4o-mini", "gpt-3.5-turbo")
    assert llama.metadata["port"] == 10005
    assert llama.metadata["temperature"] == 0.7
    assert llama.metadata["note"] == "llama on port 10005, temp=0.7, ctx=16384"
    assert llama.metadata["nested"] == {
        "quoted": "1",
        "number": 2,
        "mixed": [0.7, False, "model: llama"],
    }
    assert llama.filters.stripped_keys() == ("temperature", "top_k", "top_p")
    assert config.models["docker-llama"].stop_argv == ("docker", "stop", "docker-llama")
    assert config.models["docker-llama"].argv[:3] == ("docker", "run", "--name")
    assert config.models["legacy-filters"].filters.stripped_keys() == ("n_probs",)
    assert config.api_keys == ("sk-first-key", "sk-from-env")
    assert config.hooks.on_startup.preload == ("llama",)
    assert config.groups["forever"].persistent
    assert config.groups[DEFAULT_GROUP].members == ()
    assert config.peers["openrouter"].api_key == "sk-peer"
    assert config.peers["openrouter"].filters.set_params == {
        "provider": {"data_collection": "deny", "zdr": True}
    }
    assert config.capture_buffer == 15
    assert config.send_loading_state is True
    assert config.models["qwen-unlisted"].send_loading_state is True
    assert config.models["llama"].send_loading_state is False


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (Path(__file__).parent.parent / "examples").glob("*.yaml"))
)
def test_every_example_loads(name: str) -> None:
    config = load_config(Path(__file__).parent.parent / "examples" / name)
    assert config.models
    assert config.warnings == ()


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read the file" in str(info.value)
    assert str(tmp_path / "missing.yaml") in str(info.value)
