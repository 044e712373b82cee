"""Request bodies of the OpenAI-compatible endpoints and of the OS endpoints.

Unknown fields are ignored (the README lists those OpenAI defines that are accepted only for
compatibility); fields we read are strictly typed, so `"max_tokens": "10"` is rejected (422)
rather than guessed at.
Every number is bounded to what the engine can take (a 2^70 seed once wedged the kernel's tick),
every list and string has a length bound, and every text is valid Unicode: a request whose body
holds a lone surrogate (`"a\\ud800b"`, which JSON can spell) or nests deeper than `MAX_DEPTH` is
refused with 400, naming the field, before any work starts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmasos.api.openai_fields import refuse_unsupported
from llmasos.errors import InvalidRequestError
from llmasos.kernel.admission import invalid_unicode_at
from llmasos.security.apps import PRIORITY_CLASSES

PriorityName = Literal[PRIORITY_CLASSES]  # type: ignore[valid-type]
#: More than this many choices per request is refused: each is a process competing for the engine.
MAX_CHOICES = 8
#: A bound on what clients may ask for; the kernel further clamps it to the model's context window.
MAX_TOKENS_LIMIT = 1_000_000
#: Seeds are 64-bit, as OpenAI's; a choice's seed is `seed + index`, which stays within torch's range.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
#: Characters in one text field. The body limit (8 MiB by default) bounds the whole request anyway;
#: this keeps one field from taking all of it and names the field when it does.
MAX_TEXT_CHARS = 4_000_000
#: Messages in one chat; parts in one message; prompts in one completion request (each is n processes).
MAX_MESSAGES = 4096
MAX_CONTENT_PARTS = 256
MAX_PROMPTS = 64
#: Texts in one embeddings request (OpenAI's own limit).
MAX_EMBEDDING_INPUTS = 2048
#: Stop strings (OpenAI allows 4; local servers' clients often send a few more) and their length.
MAX_STOPS = 16
MAX_STOP_CHARS = 256
#: Names and identifiers: models, users, functions, tool calls, apps, capabilities.
MAX_NAME_CHARS = 256
#: Nesting of free-form JSON (service input and params, function parameter schemas).
MAX_DEPTH = 32

Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
#: logit_bias: token ids as JSON spells object keys (decimal strings) -> a bias from -100 to 100.
LogitBias = Annotated[
    dict[Annotated[str, Field(pattern=r"^[0-9]{1,10}$")], Annotated[float, Field(ge=-100, le=100)]],
    Field(max_length=1024),
]
TopLogprobs = Annotated[int, Field(ge=0, le=20)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


class _RequestBody(_Body):
    """A whole request body: its raw JSON is checked for invalid Unicode and depth before the fields
    are validated, so the answer names the JSON path, free-form fields (`Any`) included."""

    @model_validator(mode="before")
    @classmethod
    def _valid_text_and_depth(cls, data: Any) -> Any:
        # InvalidRequestError is not a ValueError, so pydantic lets it through to the error mapper,
        # which answers 400 with the message (pydantic's own "unable to parse raw data as a unicode
        # string" would be a 422 that does not say what is wrong).
        check_json_value(data, "")
        return data


def _null_means_default(cls: type[BaseModel], data: Any) -> Any:
    """OpenAI's optional fields take `null` as "not given" (`"stream": null`, `"n": null`): drop
    such keys so the field's default applies, instead of a 422 for a value clients really send."""
    if not isinstance(data, dict):
        return data
    fields = cls.model_fields
    return {k: v for k, v in data.items() if v is not None or k not in fields or fields[k].default is None}


def check_json_value(value: Any, path: str, depth: int = 0) -> None:
    """InvalidRequestError naming the path of the first string with a lone surrogate (in keys too),
    or of a value nested deeper than MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise InvalidRequestError(f"{path or 'the body'} nests deeper than {MAX_DEPTH} levels; flatten it")
    if isinstance(value, str):
        at = invalid_unicode_at(value)
        if at is not None:
            raise InvalidRequestError(
                f"{path or 'the body'} is not valid Unicode: character {at} is a lone surrogate "
                f"(U+{ord(value[at]):04X}); send text as valid UTF-8"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str):
                check_json_value(key, f"a key in {path or 'the body'}", depth + 1)
            check_json_value(item, where, depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json_value(item, f"{path}.{index}" if path else str(index), depth + 1)


class TextPart(_Body):
    type: Literal["text"]
    text: Text


class ImageURLPart(_Body):
    """Parsed so that it can be refused clearly (`api.content_parts`): no model here has vision."""

    type: Literal["image_url", "input_image", "input_audio", "file"]


class FunctionCall(_Body):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    arguments: Text  # JSON text, as OpenAI sends it


class ToolCall(_Body):
    id: Name
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]  # function: legacy
    content: (
        Text
        | Annotated[
            list[Annotated[TextPart | ImageURLPart, Field(discriminator="type")]],
            Field(max_length=MAX_CONTENT_PARTS),
        ]
        | None
    ) = None
    name: Name | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=128)] | None = None  # an assistant's calls
    tool_call_id: Name | None = None  # a tool turn: which call this is the result of
    function_call: FunctionCall | None = None  # an assistant's call, in the legacy spelling

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content if isinstance(part, TextPart))
        return self.content or ""


class StreamOptions(_Body):
    include_usage: bool = False


class _SamplingFields(_RequestBody):
    model: Annotated[str, Field(min_length=1, max_length=200)]
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0, le=MAX_TOKENS_LIMIT)] | None = None  # an extension local servers accept
    repetition_penalty: Annotated[float, Field(ge=0.01, le=10)] | None = (
        None  # as top_k; `llmasos run` sends it
    )
    seed: Annotated[int, Field(ge=SEED_MIN, le=SEED_MAX)] | None = None
    stop: (
        Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
        | Annotated[
            list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]],
            Field(max_length=MAX_STOPS),
        ]
        | None
    ) = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Name | None = None
    priority: PriorityName | None = None  # only lower than the app's own class  # type: ignore[valid-type]
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    # An extension, as Ollama's: seconds (or "10m") the model stays loaded after this request; -1 forever.
    keep_alive: float | Annotated[str, Field(max_length=64)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return _null_means_default(cls, data)


class FunctionDef(_Body):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: Annotated[str, Field(max_length=8192)] = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolDef(_Body):
    type: Literal["function"]
    function: FunctionDef


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: dict[str, Name]  # {"name": ...}


class JsonSchemaFormat(_Body):
    """OpenAI's `response_format.json_schema`; the schema is checked in `api/response_format.py`."""

    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)
    name: Annotated[str, Field(min_length=1, max_length=64)] = "response"
    description: Annotated[str, Field(max_length=8192)] | None = None
    json_schema: dict[str, Any] | bool | None = Field(None, alias="schema")
    strict: bool | None = None  # accepted: the output always keeps to the schema, strict or not


class ResponseFormat(_Body):
    """`{"type": "text" | "json_object" | "json_schema", ...}`; json_object may carry a `schema`
    (as vLLM and Together accept it)."""

    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    object_schema: dict[str, Any] | None = Field(None, alias="schema")


class ChatCompletionRequest(_SamplingFields):
    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            refuse_unsupported("chat", data)
        return data

    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    response_format: ResponseFormat | None = None
    tools: Annotated[list[ToolDef], Field(max_length=64)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None  # absent or null: true, as OpenAI's default
    functions: Annotated[list[FunctionDef], Field(max_length=64)] | None = None  # legacy tools
    function_call: Literal["none", "auto"] | dict[str, Name] | None = None  # legacy tool_choice
    logprobs: bool | None = None
    top_logprobs: TopLogprobs | None = None  # needs logprobs: true


class CompletionRequest(_SamplingFields):
    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            refuse_unsupported("completions", data)
        return data

    prompt: Text | Annotated[list[Text], Field(max_length=MAX_PROMPTS)]
    response_format: ResponseFormat | None = None
    logprobs: TopLogprobs | None = None  # the legacy shape: how many alternatives per token
    echo: bool = False  # the prompt before the completion, in `text`
    suffix: Text | None = None  # text after the completion (fill-in-the-middle)


class EmbeddingRequest(_RequestBody):
    model: Annotated[str, Field(min_length=1, max_length=200)]
    input: Text | Annotated[list[Text], Field(max_length=MAX_EMBEDDING_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"  # base64: little-endian float32 bytes
    user: Name | None = None
    dimensions: Annotated[int, Field(ge=1, le=65536)] | None = None  # truncate, then renormalize

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, data: Any) -> Any:
        return _null_means_default(cls, data)


class AppCreateRequest(_RequestBody):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    priority: PriorityName = "normal"  # type: ignore[valid-type]
    weight: Annotated[float, Field(gt=0, le=1000)] = 1.0
    tokens_per_minute: Annotated[int, Field(ge=0, le=10**12)] = 0
    max_concurrent: Annotated[int, Field(ge=0, le=100_000)] = 16
    max_queued: Annotated[int, Field(ge=0, le=100_000)] = 64
    requests_per_minute: Annotated[int, Field(ge=0, le=10**9)] = 0  # 0: the server's default
    request_burst: Annotated[int, Field(ge=0, le=10**9)] = 0
    capabilities: Annotated[list[Name], Field(max_length=256)] | None = None
    share_prefix_cache: bool = False
    audit_content: bool = False
    # personal data: a mode for every direction, or {direction: mode} (llmasos/privacy/policy.py)
    pii: str | dict[str, str] | None = None


class AppUpdateRequest(_RequestBody):
    """`PATCH /os/apps/{name}`: the fields given change, the others stay."""

    priority: PriorityName | None = None  # type: ignore[valid-type]
    weight: Annotated[float, Field(gt=0, le=1000)] | None = None
    tokens_per_minute: Annotated[int, Field(ge=0, le=10**12)] | None = None
    max_concurrent: Annotated[int, Field(ge=0, le=100_000)] | None = None
    max_queued: Annotated[int, Field(ge=0, le=100_000)] | None = None
    requests_per_minute: Annotated[int, Field(ge=0, le=10**9)] | None = None
    request_burst: Annotated[int, Field(ge=0, le=10**9)] | None = None


class ServiceCallRequest(_RequestBody):
    input: Any
    params: Annotated[dict[str, Any], Field(max_length=64)] = Field(default_factory=dict)
    model: Annotated[str, Field(min_length=1, max_length=200)] = "default"


class AskRequest(_RequestBody):
    request: Annotated[str, Field(min_length=1, max_length=20_000)]
    file_base64: str | None = None  # an image or a WAV recording sent with the request
    model: Annotated[str, Field(min_length=1, max_length=200)] = "default"
    use_model_for_close_calls: bool = True


class VoiceRequest(_RequestBody):
    audio_base64: Annotated[str, Field(min_length=1)]  # a WAV recording of the question
    model: Annotated[str, Field(min_length=1, max_length=200)] = "default"
