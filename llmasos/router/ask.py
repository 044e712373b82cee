"""`ask` and `voice`: a plain-language request routed and run, and the spoken loop around it.

`ask` checks the file sent with a request (its WAV or image header, against the tools' limits)
before anything is routed, then runs the route: each step through the kernel's system calls
(checked and audited), the text of one step feeding the next, and one plain answer at the end.
`voice` is speech -> text -> `ask` -> answer -> speech, the audio returned to the caller.
"""

from __future__ import annotations

import base64
import dataclasses
import threading
from dataclasses import dataclass
from typing import Any

from llmasos.errors import InvalidRequestError
from llmasos.router.router import IntentRouter, Route, Step
from llmasos.security.apps import App
from llmasos.tools.media import open_image, read_wav_header, sniff_kind
from llmasos.tools.registry import ToolContext, default_registry
from llmasos.tools.transcribe import MAX_DURATION_S as MAX_RECORDING_S

_ROUTER: IntentRouter | None = None
_ROUTER_LOCK = threading.Lock()


def shared_router() -> IntentRouter:
    """One router per process: building it embeds every destination's texts once."""
    global _ROUTER
    with _ROUTER_LOCK:
        if _ROUTER is None:
            from llmasos.tools.embed import load_embedder

            embedder = load_embedder()
            _ROUTER = IntentRouter(lambda texts: embedder.embed(texts)[0])
        return _ROUTER


@dataclass
class Answer:
    route: Route
    answer: str  # what to tell the user
    steps: list[dict]  # each step's name and full output
    usage: dict

    def to_dict(self) -> dict:
        return {
            "route": self.route.to_dict(),
            "answer": self.answer,
            "steps": self.steps,
            "usage": self.usage,
        }


def tool_answer(name: str, output: dict) -> str:
    """A tool's result as a sentence for the user."""
    if name in ("ocr", "transcribe"):
        return output.get("text", "")
    if name == "calculator":
        return f"{output['normalized']} = {output['text']}"
    if name == "clock":
        return f"It is {output['time']} on {output['weekday']}, {output['date']} ({output['timezone']})."
    if name == "knowledge":
        triples = output.get("triples") or []
        if output.get("operation") == "add":
            return "Noted." if output.get("changed") else "I already knew that."
        if not triples:
            return "I have no facts about that."
        return "; ".join(f"{t['subject']} {t['relation']} {t['object']}" for t in triples)
    if name == "speak":
        where = f"to {output['path']}" if "path" in output else "as a WAV in this step's audio_base64"
        return f"Spoken {where} ({output['duration_s']:.1f} s)."
    if name == "embed":
        vectors = output.get("vectors") or output.get("embeddings") or []
        return f"{len(vectors)} embedding(s) of {len(vectors[0]) if vectors else 0} dimensions."
    return str(output)


def run_route(
    route: Route,
    syscalls: Any,
    app: App,
    *,
    attachment: bytes | None = None,
    model: str = "default",
    context: ToolContext | None = None,
) -> Answer:
    """Run `route`'s steps in order for `app`; `attachment` is the file a perception step reads."""
    context = context or ToolContext(app)
    text: str | None = None
    answer = ""
    steps: list[dict] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    for step in route.steps:
        if step.kind == "tool":
            output = _run_tool(step, syscalls, app, context, attachment)
            answer = tool_answer(step.name, output)
            text = answer
            steps.append({"step": step.name, "output": output})
        else:
            result = _run_service(step, syscalls, app, route.request, text, model)
            for key in usage:
                usage[key] += int(result.usage.get(key, 0))
            answer = result.output if isinstance(result.output, str) else _json(result.output)
            text = answer
            steps.append({"step": step.name, "output": result.output, "details": result.details})
    return Answer(route, answer, steps, usage)


def _run_tool(step: Step, syscalls: Any, app: App, context: ToolContext, attachment: bytes | None) -> dict:
    if step.name in ("ocr", "transcribe"):
        if attachment is None:
            raise InvalidRequestError(f"{step.name!r} needs a file: send the image or audio with the request")
        key = "image_base64" if step.name == "ocr" else "audio_base64"
        args = {key: base64.b64encode(attachment).decode("ascii")}
    else:
        args = dict(step.input or {})
    registry = default_registry()
    context = dataclasses.replace(context, syscalls=syscalls)  # `kv` writes through its system calls
    result = syscalls.invoke(app, "tool", step.name, lambda: registry.call(step.name, args, context))
    return result.output


def _run_service(step: Step, syscalls: Any, app: App, request: str, text: str | None, model: str):
    from llmasos.services import get_service

    service = get_service(step.name)
    service_input = step.input
    if service_input is None:  # after a perception step: work on its text
        service_input = {"question": request, "context": text or ""} if step.name == "qa" else (text or "")
    return syscalls.invoke(
        app,
        "service",
        service.name,
        lambda: service.run(syscalls, app, service_input, dict(step.params), model=model),
    )


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def ask(
    syscalls: Any,
    app: App,
    request: str,
    *,
    attachment: bytes | None = None,
    model: str = "default",
    context: ToolContext | None = None,
    use_model_for_close_calls: bool = True,
) -> Answer:
    """Route `request` (with an optional file) and run the route."""
    from llmasos.router.decider import model_decider

    attachment_kind = checked_kind(attachment) if attachment is not None else None
    # The decider's model: the request's when it names one, else `[router] decider`, else the default.
    decider = syscalls.decider_model(model)
    decide = model_decider(syscalls, app, decider) if use_model_for_close_calls else None
    route = shared_router().route(request, attachment_kind, decide=decide, allows=app.allows)
    return run_route(route, syscalls, app, attachment=attachment, model=model, context=context)


def checked_kind(data: bytes) -> str:
    """ "audio" or "image", once the file's header is within what `transcribe` or `ocr` takes:
    a bad file is refused before routing spends any work on the request."""
    kind = sniff_kind(data)
    if kind == "audio":
        read_wav_header(data, max_duration_s=MAX_RECORDING_S)
    else:
        open_image(data)
    return kind


@dataclass
class VoiceReply:
    transcript: str
    answer: Answer
    audio: bytes  # WAV


def voice(
    syscalls: Any, app: App, wav: bytes, *, model: str = "default", context: ToolContext | None = None
) -> VoiceReply:
    """The voice loop: transcribe the question, route and answer it, speak the answer."""
    read_wav_header(wav, max_duration_s=MAX_RECORDING_S)  # refused before any tool runs
    context = context or ToolContext(app)
    registry = default_registry()
    heard = syscalls.invoke(
        app,
        "tool",
        "transcribe",
        lambda: registry.call("transcribe", {"audio_base64": base64.b64encode(wav).decode("ascii")}, context),
    ).output["text"]
    if not heard.strip():
        raise InvalidRequestError("no speech was recognized in the recording; speak clearly and closer")
    answer = ask(syscalls, app, heard, model=model, context=context)
    spoken = syscalls.invoke(
        app,
        "tool",
        "speak",
        lambda: registry.call("speak", {"text": answer.answer[:4000] or "I have no answer."}, context),
    ).output
    return VoiceReply(heard, answer, base64.b64decode(spoken["audio_base64"]))
