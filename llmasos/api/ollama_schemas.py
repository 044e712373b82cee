"""Request bodies of the Ollama API (/api/*), with Ollama's field names, and what they mean here.

Every field Ollama's clients send is either honoured, refused with a 400 naming it, or listed in
`COMPATIBILITY_ONLY_OPTIONS` / the README as accepted for compatibility: nothing is silently dropped
that the README does not list.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmasos.errors import InvalidRequestError
from llmasos.settings import parse_duration

#: Ollama's "forever" and "until the context is full" values of num_predict.
UNBOUNDED_NUM_PREDICT = (-1, -2)
#: A bound on num_ctx (accepted, not used: the model's own window applies; see the README).
MAX_NUM_CTX = 1 << 20

#: Load-time options of Ollama's runner that have no meaning in this engine (one CPU/GPU engine per
#: model, sized by the server): accepted with any value so that clients' presets keep working.
COMPATIBILITY_ONLY_OPTIONS = frozenset(
    {
        "numa",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "embedding_only",
        "num_thread",
        "num_keep",
    }
)
#: Sampling options the engine does not implement: accepted only at the value that disables them.
NEUTRAL_ONLY_OPTIONS: dict[str, Any] = {
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "mirostat": 0,
    "tfs_z": 1,
    "typical_p": 1,
    "min_p": 0,
    "repeat_last_n": 64,
    "penalize_newline": False,
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class Options(BaseModel):
    """`options`: the sampling fields the engine honours; see the module docstring for the rest."""

    model_config = ConfigDict(extra="allow", strict=True)

    num_predict: int | None = None
    temperature: Annotated[float, Field(ge=0, le=100)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    seed: int | None = None
    stop: list[Annotated[str, Field(min_length=1)]] | None = None
    repeat_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    num_ctx: Annotated[int, Field(ge=1, le=MAX_NUM_CTX)] | None = None

    @field_validator("num_predict")
    @classmethod
    def _num_predict(cls, value: int | None) -> int | None:
        if value is not None and value < 1 and value not in UNBOUNDED_NUM_PREDICT:
            raise ValueError("must be a positive number of tokens, or -1 / -2 for the model's default")
        return value

    def check_extras(self) -> None:
        """Refuse an option the engine cannot honour (InvalidRequestError naming `options.NAME`)."""
        for name, value in (self.model_extra or {}).items():
            if name in COMPATIBILITY_ONLY_OPTIONS:
                continue
            if name in NEUTRAL_ONLY_OPTIONS:
                if value is not None and value != NEUTRAL_ONLY_OPTIONS[name]:
                    raise InvalidRequestError(
                        f"options.{name}: not supported by this engine; leave it out or set it to "
                        f"{NEUTRAL_ONLY_OPTIONS[name]!r}"
                    )
                continue
            raise InvalidRequestError(
                f"options.{name}: unknown option; supported: num_predict, temperature, top_p, top_k, "
                "seed, stop, repeat_penalty, num_ctx (see the README's Ollama section)"
            )

    def sampling_fields(self) -> dict[str, Any]:
        """The options under the names `kernel.sampling_request.sampling_params` takes."""
        self.check_extras()
        fields: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "stop": self.stop,
            "repetition_penalty": self.repeat_penalty,
        }
        if self.num_predict is not None and self.num_predict not in UNBOUNDED_NUM_PREDICT:
            fields["max_tokens"] = self.num_predict
        return fields


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Seconds of `keep_alive` (seconds, or a Go duration such as "5m", "1h30m", "300ms"; negative:
    forever), or None when absent; InvalidRequestError if bad."""
    return None if value is None else parse_duration(value, "keep_alive")


Format = Literal["", "json"] | dict[str, Any] | None


class _GenerationBody(_Body):
    model: Annotated[str, Field(min_length=1, max_length=200)]
    stream: bool | None = True  # Ollama streams unless told not to (null too)
    options: Options = Field(default_factory=Options)
    format: Format = None
    keep_alive: float | str | None = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @property
    def streams(self) -> bool:
        return self.stream is not False

    def format_schema(self) -> dict[str, Any] | None:
        """The JSON schema the answer must follow: `"json"` is any object; None for free text."""
        if self.format is None or self.format == "":
            return None
        return {"type": "object"} if self.format == "json" else self.format

    def check_unsupported(self) -> None:
        keep_alive_seconds(self.keep_alive)  # validated; see the README for what it does here
        if self.think not in (None, False):
            raise InvalidRequestError("think: this server's models do not think aloud; leave it out")
        if self.logprobs or self.top_logprobs:
            raise InvalidRequestError("logprobs: not supported on the Ollama routes yet; leave it out")


class ToolFunction(_Body):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class Tool(_Body):
    type: Literal["function"] = "function"
    function: ToolFunction


class ToolCallFunction(_Body):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(_Body):
    function: ToolCallFunction


class Message(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class ChatRequest(_GenerationBody):
    messages: list[Message] = Field(default_factory=list)
    tools: list[Tool] | None = None


class GenerateRequest(_GenerationBody):
    prompt: str = ""
    system: str | None = None
    template: str | None = None
    raw: bool = False
    suffix: str | None = None
    context: list[int] | None = None
    images: list[str] | None = None

    def check_unsupported(self) -> None:
        super().check_unsupported()
        if self.template:
            raise InvalidRequestError(
                "template: custom prompt templates are not supported; the model's own chat template "
                'is used, or send "raw": true with a prompt you formatted yourself'
            )
        if self.suffix:
            raise InvalidRequestError("suffix: fill-in-the-middle is not supported; leave it out")
        if self.context:
            raise InvalidRequestError(
                "context: token history is not supported (responses carry none); use /api/chat with "
                "the earlier messages instead"
            )
        if self.images:
            raise InvalidRequestError("images: this server's models have no vision; leave them out")


class EmbedRequest(_Body):
    model: Annotated[str, Field(min_length=1, max_length=200)]
    input: str | list[str]
    truncate: bool = True
    dimensions: Annotated[int, Field(ge=1)] | None = None
    options: dict[str, Any] | None = None  # no option changes an embedding; accepted, unused
    keep_alive: float | str | None = None


class EmbeddingsRequest(_Body):
    model: Annotated[str, Field(min_length=1, max_length=200)]
    prompt: str
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class ModelRequest(_Body):
    """/api/show and /api/pull: Ollama's clients send `model`; older ones `name`."""

    model: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    name: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    stream: bool | None = True
    insecure: bool = False
    verbose: bool = False

    def model_name(self) -> str:
        name = self.model or self.name
        if name is None:
            raise InvalidRequestError("model: give the model's name")
        return name
