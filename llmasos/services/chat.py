"""chat: the model's reply to a message or a conversation."""

from __future__ import annotations

from typing import Any, ClassVar

from llmasos.errors import InvalidRequestError
from llmasos.model.chat_template import validate_messages
from llmasos.services.base import Call, Service, Session, common_params

MESSAGE = {
    "type": "object",
    "properties": {
        "role": {"enum": ["system", "user", "assistant", "tool"]},
        "content": {"type": "string"},
    },
    "required": ["role", "content"],
}


class Chat(Service):
    name = "chat"
    description = "Talk with the model: a reply to a message or to a whole conversation."
    version = "1.0"
    examples: ClassVar[tuple[str, ...]] = (
        "Hello!",
        "How was your day?",
        "Give me some advice on learning the guitar",
        "Can you recommend a good book?",
        "I feel bored, what should I do?",
    )
    # A string is one user message; a list is the conversation so far.
    input_schema: ClassVar[dict] = {
        "anyOf": [{"type": "string", "minLength": 1}, {"type": "array", "items": MESSAGE}]
    }
    params_schema: ClassVar[dict] = common_params(
        512, system={"type": "string", "description": "a system prompt put before the conversation"}
    )
    output_schema: ClassVar[dict] = {"type": "string", "description": "the assistant's reply"}

    def check_input(self, input: Any) -> None:
        if isinstance(input, str):
            if not input:
                raise InvalidRequestError("bad input for service chat: the message is empty")
            return
        if not isinstance(input, list):
            raise InvalidRequestError(
                f"bad input for service chat: give a message (string) or a list of messages, "
                f"got {type(input).__name__}"
            )
        validate_messages(input)

    def _run(self, session: Session, input: Any, params: dict) -> tuple[Any, dict]:
        messages = [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        if params.get("system"):
            messages = [{"role": "system", "content": params["system"]}, *messages]
        call = Call(messages, params["max_tokens"], params["temperature"], seed=params.get("seed"))
        done = session.chat(call)
        return done.text.strip(), {"finish_reason": done.finish_reason}
