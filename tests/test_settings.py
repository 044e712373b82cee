"""config.toml, LLMASOS_* variables and flags: which wins, where each value came from, and the errors a
mistake in any of them gets (naming the key, the file and line or the variable, and what is allowed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmasos.config import EngineConfig
from llmasos.errors import ConfigurationError, InvalidRequestError
from llmasos.settings import config_path, env_name, load_settings, parse_duration
from tests.helpers.cli import run_cli

FULL = """\
[server]
host = "127.0.0.1"
port = 9000
access_log = true
max_body_size = "4MiB"

[engine]
context_length = 2048
kv_cache_bytes = "256MiB"
threads = 2
device = "cpu"

[models]
memory_budget = "6GiB"
keep_alive = "10m"

[models."qwen2.5-coder-1.5b-instruct"]
keep_alive = -1
context_length = 4096
preload = true

[services]
summarize = "qwen2.5-coder-1.5b-instruct"

[router]
decider = "smollm2-135m-instruct"
"""


def write_config(text: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_a_file_keep_todays_behaviour() -> None:
    effective = load_settings(environ={})
    settings = effective.settings
    assert settings.server.port == 8080 and settings.server.host == "127.0.0.1"
    assert settings.models.keep_alive == 300.0  # what was hard-coded before
    assert settings.engine_config(EngineConfig()) == EngineConfig()  # nothing changes the engine
    assert effective.sources == {} and all(source == "default" for _, _, source in effective.rows())


def test_the_file_sets_every_section_with_units_and_per_model_tables() -> None:
    path = write_config(FULL)
    effective = load_settings(environ={})
    s = effective.settings
    assert (s.server.port, s.server.access_log, s.server.max_body_size) == (9000, True, 4 * 2**20)
    assert s.models.memory_budget == 6 * 2**30 and s.models.keep_alive == 600.0
    assert s.model_keep_alive() == {"qwen2.5-coder-1.5b-instruct": -1.0}
    assert s.preloaded() == ("qwen2.5-coder-1.5b-instruct",)
    assert s.services == {"summarize": "qwen2.5-coder-1.5b-instruct"}
    assert s.router.decider == "smollm2-135m-instruct"
    engine = s.engine_config(EngineConfig())
    assert (engine.kv_cache_bytes, engine.num_threads, engine.device) == (256 * 2**20, 2, "cpu")
    assert engine.max_context_length == 2048
    assert s.engine_config(EngineConfig(), "qwen2.5-coder-1.5b-instruct").max_context_length == 4096
    assert effective.sources["server.port"] == f"file {path}:3"
    assert effective.sources["models.per_model.qwen2.5-coder-1.5b-instruct.keep_alive"] == f"file {path}:18"


def test_flags_beat_the_environment_which_beats_the_file() -> None:
    write_config("[server]\nport = 9000\nhost = '127.0.0.2'\n[models]\nkeep_alive = 60\n")
    environ = {env_name("server.port"): "9100", env_name("models.keep_alive"): "2m"}
    assert env_name("server.port") == "LLMASOS_SERVER_PORT"
    effective = load_settings(
        {"server.port": (9200, "--port"), "server.host": (None, "--host")}, environ=environ
    )
    s = effective.settings
    assert s.server.port == 9200 and effective.sources["server.port"] == "flag --port"
    assert (
        s.models.keep_alive == 120.0
        and effective.sources["models.keep_alive"] == "env LLMASOS_MODELS_KEEP_ALIVE"
    )
    assert s.server.host == "127.0.0.2"  # a flag not given leaves the file's value
    without_flag = load_settings(environ=environ).settings
    assert without_flag.server.port == 9100


def test_an_unknown_key_names_the_file_the_line_and_the_allowed_keys() -> None:
    path = write_config("[engine]\n\ntreads = 2\n")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ={})
    message = caught.value.message
    assert f"engine.treads in {path} line 3" in message and "did you mean 'threads'" in message
    assert "context_length, kv_cache_bytes, prefix_cache_bytes, threads, device" in message


def test_an_unknown_section_and_an_unknown_per_model_key_are_refused() -> None:
    write_config("[sever]\nport = 1\n")
    with pytest.raises(ConfigurationError, match=r"\[sever\].*line 1.*did you mean 'server'"):
        load_settings(environ={})
    write_config('[models."tiny"]\ncolour = 1\n')
    with pytest.raises(ConfigurationError, match=r"models.tiny.colour = 1 \(file .*:2\)"):
        load_settings(environ={})


@pytest.mark.parametrize(
    ("text", "key", "what"),
    [
        ("[server]\nport = 0\n", "server.port = 0", "greater than or equal to 1"),
        ("[models]\nkeep_alive = 'five minutes'\n", "models.keep_alive", "not a duration"),
        ("[engine]\nkv_cache_bytes = 'lots'\n", "engine.kv_cache_bytes", "write it like 2GiB"),
        ("[engine]\ndevice = 'tpu'\n", "engine.device", "pattern"),
        ("[server]\naccess_log = 'yes please'\n", "server.access_log", "boolean"),
        ("[services]\nsummarize = 3\n", "services.summarize", "string"),
    ],
)
def test_a_bad_value_names_the_key_its_line_and_what_is_allowed(text: str, key: str, what: str) -> None:
    path = write_config(text)
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ={})
    assert key in caught.value.message and what in caught.value.message
    assert f"file {path}:2" in caught.value.message


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="env LLMASOS_ENGINE_THREADS"):
        load_settings(environ={"LLMASOS_ENGINE_THREADS": "many"})


def test_a_file_that_is_not_toml_says_where() -> None:
    path = write_config("[server\nport = 1\n")
    with pytest.raises(ConfigurationError, match=f"{path} is not valid TOML.*line 1"):
        load_settings(environ={})


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(300, 300.0), ("5m", 300.0), ("1h30m", 5400.0), ("300ms", 0.3), ("-1", -1.0), ("0", 0.0), (-1, -1.0)],
)
def test_durations(value, seconds) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["soon", "5 m", "", "1e400", "9" * 400 + "h", float("inf"), True])
def test_what_is_not_a_duration_says_how_to_write_one(value) -> None:
    with pytest.raises(InvalidRequestError, match=r"keep_alive: .* is not a duration; write seconds"):
        parse_duration(value)


def test_config_show_prints_values_and_where_they_came_from(monkeypatch, capsys) -> None:
    path = write_config(FULL)
    monkeypatch.setenv("LLMASOS_ENGINE_THREADS", "3")
    code, out, _ = run_cli(monkeypatch, capsys, "config", "show", "--json")
    assert code == 0
    shown = {row["key"]: (row["value"], row["source"]) for row in json.loads(out)["settings"]}
    assert shown["engine.threads"] == (3, "env LLMASOS_ENGINE_THREADS")
    assert shown["server.port"] == (9000, f"file {path}:3")
    assert shown["server.log_level"] == ("info", "default")
    assert shown["models.qwen2.5-coder-1.5b-instruct.preload"] == (True, f"file {path}:20")
    write_config("[engine]\ntreads = 2\n")
    code, out, err = run_cli(monkeypatch, capsys, "config", "show")
    assert code == 1 and "unknown key engine.treads" in err and "line 2" in err
