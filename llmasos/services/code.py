"""code: write code for a task, or explain a piece of code."""

from __future__ import annotations

from typing import Any, ClassVar

from llmasos.services.base import Call, Service, Session, common_params, text_schema

TASKS = {
    "write": ("You are an expert programmer. Reply with the code in one fenced block, then at most "
              "two sentences.", "Write {language} code for this task:\n\n{input}"),
    "explain": ("You are an expert programmer who explains code clearly and briefly.",
                "Explain what this {language} code does:\n\n{input}"),
}  # fmt: skip


class Code(Service):
    name = "code"
    description = "Write code for a task described in words, or explain what a piece of code does."
    version = "1.0"
    examples: ClassVar[tuple[str, ...]] = (
        "Write a function that sorts a list",
        "Implement a class for a bank account in Java",
        "What does this snippet do?",
        "Debug my script, it throws an error",
        "Write a SQL query that counts the users",
    )
    input_schema: ClassVar[dict] = text_schema("the task (write) or the code (explain)")
    params_schema: ClassVar[dict] = common_params(
        512,
        task={"enum": list(TASKS), "default": "write", "description": "write code or explain it"},
        language={"type": "string", "minLength": 1, "maxLength": 40, "default": "Python"},
    )
    output_schema: ClassVar[dict] = {
        "type": "string",
        "description": "the code (in a fenced block) or the explanation",
    }

    def _run(self, session: Session, input: str, params: dict) -> tuple[Any, dict]:
        system, user = TASKS[params["task"]]
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": user.format(language=params["language"], input=input)},
        ]
        call = Call(messages, params["max_tokens"], params["temperature"], seed=params.get("seed"))
        done = session.chat(call)
        details = {
            "task": params["task"],
            "language": params["language"],
            "finish_reason": done.finish_reason,
        }
        if params["task"] == "write":
            details["code"] = _fenced(done.text)
        return done.text.strip(), details


def _fenced(text: str) -> str | None:
    """The first fenced code block's body, if the answer has one."""
    parts = text.split("```")
    if len(parts) < 3:
        return None
    body = parts[1]
    first, _, rest = body.partition("\n")
    return (rest if first.strip().isidentifier() or not first.strip() else body).strip("\n")
