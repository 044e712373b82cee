"""The operator's settings: `$LLMASOS_HOME/config.toml`, overridden by `LLMASOS_*` variables, overridden
by command-line flags, over the defaults. `load_settings` is the one function that computes them, and
it records where each value came from (`llmasos config show` prints both).

The file is read with `tomllib` and validated with pydantic into frozen, typed sections. A mistake is
a `ConfigurationError` naming the key, where it was set (the file and its line, the variable, or the
flag) and what is allowed: an unknown key is never ignored, since a misspelt one would silently do
nothing. The format, with a full example, is in docs/config.md.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from llmasos.config import EngineConfig, llmasos_home
from llmasos.errors import ConfigurationError, InvalidRequestError

CONFIG_FILE_NAME = "config.toml"
ENV_PREFIX = "LLMASOS_"


def origin_problem(origin: str) -> str | None:
    """Why `origin` is not a web origin a CORS setting can name (`*` or scheme://host[:port]), or None."""
    scheme, _, rest = origin.partition("://")
    if origin == "*" or (scheme in ("http", "https") and rest and "/" not in rest):
        return None
    return (
        f"{origin!r} is not an origin; write it as scheme://host[:port] (e.g. http://localhost:3000, "
        "no path) or * for every origin"
    )


# ---- sizes and durations, as people write them ------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str, what: str = "memory size") -> int:
    """'2GiB' -> 2147483648, '1.5G' -> 1500000000, '512MiB', '1000000' (bytes)."""
    match = _SIZE.match(text)
    unit = (match.group(2) or "").lower().removesuffix("b") if match else None
    if match is None or unit not in _UNITS:
        raise InvalidRequestError(f"{what} {text!r} is not valid; write it like 2GiB, 1.5G, 512MiB or bytes")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise InvalidRequestError(f"{what} {text!r} must be more than zero")
    return size


# A number of seconds, or a Go duration as Ollama takes it: "5m", "1h30m", "300ms", "-1".
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
DURATION_HELP = "write seconds (300), a duration like '5m' or '1h30m', 0 (unload when idle) or -1 (forever)"


def parse_duration(value: float | str, what: str = "keep_alive") -> float:
    """Seconds of a duration; negative means forever. InvalidRequestError if it is not one."""
    if isinstance(value, bool):
        raise InvalidRequestError(f"{what}: {value!r} is not a duration; {DURATION_HELP}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidRequestError(f"{what}: {value!r} is not a duration; {DURATION_HELP}")
        return float(value)
    text = value.strip()
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    try:
        return sign * float(body) if math.isfinite(float(body)) else _bad_duration(value, what)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        _bad_duration(value, what)
    seconds = sign * sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    return seconds if math.isfinite(seconds) else _bad_duration(value, what)


def _bad_duration(value: Any, what: str) -> float:
    raise InvalidRequestError(f"{what}: {value!r} is not a duration; {DURATION_HELP}")


def _size(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_size(value, "size")
        except InvalidRequestError as err:
            raise ValueError(err.message) from None
    return value


def _duration(value: Any) -> Any:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            return parse_duration(value, "duration")
        except InvalidRequestError as err:
            raise ValueError(err.message) from None
    return value


Size = Annotated[int, BeforeValidator(_size), Field(gt=0)]
Duration = Annotated[float, BeforeValidator(_duration)]
ModelName = Annotated[str, Field(min_length=1, max_length=200)]

# ---- the sections ------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    """`[server]`: how `llmasos serve` listens and whom it serves."""

    host: str = "127.0.0.1"  # loopback: nothing outside this machine reaches the server by default
    port: int = Field(8080, ge=1, le=65535)
    allow_anonymous: bool = False  # serve keyless requests as the 'anonymous' batch app
    anonymous_app: str | None = None  # serve requests without an LLMasOS key as this app
    access_log: bool = False  # one line a request in $LLMASOS_HOME/logs/access.log
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    max_body_size: Size = 8 * 2**20  # largest request body accepted
    trusted_hosts: tuple[str, ...] = ()  # Host names keyless requests may use besides loopback
    cors_origins: tuple[str, ...] = ()  # web origins allowed to call the API from a browser (off)
    # Steps of niceness the HTTP threads (event loop, request pool) run below the kernel's thread and its
    # OpenMP workers (api/thread_priority.py); 0: the same. Niced, a thread competing with them for a
    # core gets little of it, and every request waits for it at each hand-off: at 10 a busy server
    # answered a stream's headers 43-69 ms after its request against 11-17 ms at 0, and at 32 streams
    # served 0.74x the engine alone's tokens against 0.86x (benchmarks/abuse.py, server_load.py, one
    # machine, back to back). At 0 every attack of abuse.py still kept the calm app within 1.5x (30 MB
    # bodies, the HTTP side's worst, at 1.45x): raise it where HTTP work must yield.
    http_niceness: int = Field(0, ge=0, le=19)
    # Requests one app may start a minute, and at once after a pause, unless the app sets its own
    # (api/request_rate.py); 0: no limit. 20 a second: the benchmark's calm app, two clients streaming back
    # to back, starts about 13 a second on an idle machine; its disconnect storm started 57.
    requests_per_minute: int = Field(1200, ge=0)
    request_burst: int = Field(40, ge=0)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            if (problem := origin_problem(origin)) is not None:
                raise ValueError(problem)
        return origins


class EngineSettings(_Section):
    """`[engine]`: how every engine is sized and placed (None: the engine's own default)."""

    context_length: int | None = Field(None, ge=16)  # at most this many tokens a sequence
    kv_cache_bytes: Size | None = None  # the KV pool of each loaded model
    prefix_cache_bytes: Size | None = None  # KV kept cached for reuse while no sequence holds it
    threads: int | None = Field(None, ge=0)  # compute threads; 0: one per core
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")


class ModelOverride(_Section):
    """`[models."NAME"]`: one model's own settings."""

    keep_alive: Duration | None = None
    context_length: int | None = Field(None, ge=16)
    preload: bool = False  # load at `llmasos serve` start, as --preload NAME does


class ModelsSettings(_Section):
    """`[models]`: residency. Tables under it (`[models."NAME"]`) are per-model overrides."""

    memory_budget: Size | None = None  # weights + KV of all loaded models; None: 80% of free memory
    # Seconds an idle model stays loaded (negative: forever; 0: unloaded as soon as it is idle).
    # Ollama's default, which its clients expect.
    keep_alive: Duration = 300.0
    per_model: dict[ModelName, ModelOverride] = Field(default_factory=dict)


class KernelSettings(_Section):
    """`[kernel]`: how the kernel treats its processes (kernel/backpressure.py)."""

    # Output tokens a stream's reader may leave untaken before its process waits for it (not computed).
    output_buffer_tokens: int = Field(512, ge=2)
    # Seconds a waiting process's reader may take nothing before the process is ended (and its KV freed).
    reader_timeout: Duration = Field(120.0, gt=0)


class RouterSettings(_Section):
    """`[router]`: the model that decides close calls between destinations (None: the default)."""

    decider: ModelName | None = None


class Settings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    # `[services]`: service name -> the model it runs on when the caller names none.
    services: dict[ModelName, ModelName] = Field(default_factory=dict)
    router: RouterSettings = Field(default_factory=RouterSettings)
    kernel: KernelSettings = Field(default_factory=KernelSettings)

    # ---- derived values ------------------------------------------------------------------------

    def engine_config(self, base: EngineConfig | None = None, model: str | None = None) -> EngineConfig:
        """`base` with what the settings set (and `model`'s own context length, if it has one)."""
        config = base or EngineConfig()
        engine, changes = self.engine, {}
        if engine.device != "auto":
            changes["device"] = engine.device
        if engine.kv_cache_bytes is not None:
            changes["kv_cache_bytes"] = engine.kv_cache_bytes
        if engine.prefix_cache_bytes is not None:
            changes["prefix_cache_bytes"] = engine.prefix_cache_bytes
        if engine.threads is not None:
            changes["num_threads"] = engine.threads
        override = self.models.per_model.get(model) if model else None
        context = override.context_length if override and override.context_length else engine.context_length
        if context is not None:
            changes["max_context_length"] = context
        return replace(config, **changes) if changes else config

    def model_keep_alive(self) -> dict[str, float]:
        """Models with a keep-alive of their own."""
        return {n: m.keep_alive for n, m in self.models.per_model.items() if m.keep_alive is not None}

    def preloaded(self) -> tuple[str, ...]:
        return tuple(n for n, m in self.models.per_model.items() if m.preload)


# ---- where each value came from ----------------------------------------------------------------

#: The keys an `LLMASOS_*` variable or a flag may set: `section.key` for every scalar of the sections.
SCALAR_SECTIONS: dict[str, type[_Section]] = {
    "server": ServerSettings,
    "engine": EngineSettings,
    "models": ModelsSettings,
    "router": RouterSettings,
    "kernel": KernelSettings,
}


def scalar_keys() -> list[str]:
    return [
        f"{section}.{key}"
        for section, cls in SCALAR_SECTIONS.items()
        for key in cls.model_fields
        if key != "per_model"
    ]


def env_name(key: str) -> str:
    """`engine.kv_cache_bytes` -> `LLMASOS_ENGINE_KV_CACHE_BYTES`."""
    return ENV_PREFIX + key.replace(".", "_").upper()


@dataclass(frozen=True)
class EffectiveSettings:
    """The settings in force, and for every key set anywhere: where its value came from."""

    settings: Settings
    sources: dict[str, str]  # dotted key -> "default", "file PATH:LINE", "env NAME", "flag --NAME"
    path: Path  # the config file read (it may not exist)

    def rows(self) -> list[tuple[str, Any, str]]:
        """(key, value, source) for every setting, the defaults included; for `llmasos config show`."""
        flat = _flatten(self.settings.model_dump(mode="json"))
        return [(key, value, self.sources.get(key, "default")) for key, value in flat.items()]


def config_path() -> Path:
    return llmasos_home() / CONFIG_FILE_NAME


def load_settings(
    flags: Mapping[str, tuple[Any, str]] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> EffectiveSettings:
    """The effective settings: `flags` (dotted key -> (value, flag name), a None value meaning not
    given) over `LLMASOS_*` variables over the file over the defaults. ConfigurationError if any
    layer holds an unknown key or a bad value."""
    path = path or config_path()
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    _read_file(path, merged, sources)
    for key in scalar_keys():
        if (text := environ.get(env_name(key))) is not None:
            _set(merged, key, _env_value(key, text))
            sources[key] = f"env {env_name(key)}"
    for key, (value, flag) in (flags or {}).items():
        if value is not None:
            _set(merged, key, value)
            sources[key] = f"flag {flag}"
    return EffectiveSettings(_validate(merged, sources, path), sources, path)


def _read_file(path: Path, merged: dict, sources: dict[str, str]) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigurationError(f"cannot read {path}: {err}; fix or remove the file") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigurationError(f"{path} is not valid TOML: {err}; see docs/config.md") from None
    lines = text.splitlines()
    for section, table in raw.items():
        if section not in (*SCALAR_SECTIONS, "services"):
            _unknown(f"[{section}]", section, [*SCALAR_SECTIONS, "services"], path, _line(lines, section))
        if not isinstance(table, dict):
            raise ConfigurationError(
                f"{section} in {path} line {_line(lines, section)} must be a table ([{section}]), not a value"
            )
        for key, value in table.items():
            dotted = f"{section}.{key}"
            if section == "models" and isinstance(value, dict):  # [models."NAME"]
                # The name may hold dots (qwen2.5-...): set it as one key, not a dotted path.
                merged.setdefault("models", {}).setdefault("per_model", {})[key] = value
                for sub in value:
                    sources[f"models.per_model.{key}.{sub}"] = _where(path, lines, f"models.{key}", sub)
                continue
            fields = SCALAR_SECTIONS[section].model_fields if section != "services" else None
            if fields is not None and (key not in fields or key == "per_model"):
                known = [f for f in fields if f != "per_model"]
                _unknown(dotted, key, known, path, _line(lines, key, section))
            _set(merged, dotted, value)
            sources[dotted] = _where(path, lines, section, key)


def _env_value(key: str, text: str) -> Any:
    """A variable's text as the field expects it: lists are comma-separated; the rest pydantic
    converts from text (numbers, booleans) or takes as is (sizes, durations, names)."""
    if key == "server.trusted_hosts":
        return tuple(h.strip() for h in text.split(",") if h.strip())
    return text


def _validate(merged: dict, sources: dict[str, str], path: Path) -> Settings:
    try:
        return Settings.model_validate(merged)
    except ValidationError as err:
        problems = []
        for error in err.errors():
            key = ".".join(str(p) for p in error["loc"] if not isinstance(p, int))
            where = _source_of(key, sources)
            shown = key.replace("models.per_model.", "models.")
            value = error.get("input")
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{shown} = {value!r} ({where}): {message}")
        raise ConfigurationError(
            "bad setting: " + "; ".join(problems) + "; see docs/config.md for what each key takes"
        ) from None


def _source_of(key: str, sources: dict[str, str]) -> str:
    while key:
        if key in sources:
            return sources[key]
        key = key.rpartition(".")[0]
    return "default"


def _unknown(shown: str, key: str, known: list[str], path: Path, line: int | None) -> None:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    at = f" line {line}" if line else ""
    raise ConfigurationError(
        f"unknown key {shown} in {path}{at}; {hint}the keys allowed there are: {', '.join(known)}"
    )


def _where(path: Path, lines: list[str], section: str, key: str) -> str:
    line = _line(lines, key, section)
    return f"file {path}:{line}" if line else f"file {path}"


def _line(lines: list[str], key: str, section: str | None = None) -> int | None:
    """The line that sets `key` (in `[section]` when given): a best effort, since tomllib keeps none."""
    current = None
    key_pattern = re.compile(rf"^\s*(\"{re.escape(key)}\"|{re.escape(key)})\s*=")
    header = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+")
    for number, line in enumerate(lines, 1):
        if match := header.match(line):
            current = match.group(1).replace('"', "").replace(" ", "")
            if section is None and current.split(".")[0] == key:
                return number
            continue
        wanted = (section or "").replace('"', "")
        if (section is None or current == wanted) and key_pattern.match(line):
            return number
    return None


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
