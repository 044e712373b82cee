"""Request bodies of the OpenAI-compatible endpoints and of the OS endpoints.

Unknown fields are ignored (clients send many we do not use: `logprobs`, `presence_penalty`, ...);
fields we read are strictly typed, so `"max_tokens": "10"` is rejected (422) rather than guessed at.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmasos.security.apps import PRIORITY_CLASSES

PriorityName = Literal[PRIORITY_CLASSES]  # type: ignore[valid-type]
#: More than this many choices per request is refused: each is a process competing for the engine.
MAX_CHOICES = 8
#: A bound on what clients may ask for; the kernel further clamps it to the model's context window.
MAX_TOKENS_LIMIT = 1_000_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class FunctionCall(_Body):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(_Body):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant turn that called functions
    tool_call_id: str | None = None  # a tool turn: which call this is the result of

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Body):
    include_usage: bool = False


class _SamplingFields(_Body):
    model: Annotated[str, Field(min_length=1, max_length=200)]
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None  # an extension many local servers accept
    repetition_penalty: Annotated[float, Field(gt=0, le=10)] | None = None  # as top_k; `llmasos run` sends it
    seed: int | None = None
    stop: Annotated[str, Field(min_length=1)] | list[Annotated[str, Field(min_length=1)]] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    priority: PriorityName | None = None  # only lower than the app's own class  # type: ignore[valid-type]


class FunctionDef(_Body):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolDef(_Body):
    type: Literal["function"]
    function: FunctionDef


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: dict[str, str]  # {"name": ...}


class ChatCompletionRequest(_SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    tools: Annotated[list[ToolDef], Field(max_length=64)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None


class CompletionRequest(_SamplingFields):
    prompt: str | list[str]


class EmbeddingRequest(_Body):
    model: Annotated[str, Field(min_length=1, max_length=200)]
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"  # base64: little-endian float32 bytes
    user: str | None = None


class AppCreateRequest(_Body):
    name: str
    priority: PriorityName = "normal"  # type: ignore[valid-type]
    weight: Annotated[float, Field(gt=0, le=1000)] = 1.0
    tokens_per_minute: Annotated[int, Field(ge=0)] = 0
    max_concurrent: Annotated[int, Field(ge=0)] = 16
    max_queued: Annotated[int, Field(ge=0)] = 64
    capabilities: list[str] | None = None
    share_prefix_cache: bool = False
    audit_content: bool = False


class ServiceCallRequest(_Body):
    input: Any
    params: dict[str, Any] = Field(default_factory=dict)
    model: str = "default"


class AskRequest(_Body):
    request: Annotated[str, Field(min_length=1, max_length=20_000)]
    file_base64: str | None = None  # an image or a WAV recording sent with the request
    model: str = "default"
    use_model_for_close_calls: bool = True


class VoiceRequest(_Body):
    audio_base64: Annotated[str, Field(min_length=1)]  # a WAV recording of the question
    model: str = "default"
