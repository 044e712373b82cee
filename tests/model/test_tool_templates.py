"""Tool turns in chat templates: a template's own tool format (Qwen2.5's), rendered as transformers
renders it, and the documented fallback for templates without one (SmolLM2's)."""

from __future__ import annotations

import json

from transformers.utils.chat_template_utils import render_jinja_template

from llmasos.api.schemas import ChatMessage
from llmasos.api.tool_calls import messages_for_template
from llmasos.model.chat_template import RESULTS_HEADING, ChatTemplate
from tests.helpers.templates import QWEN25, SMOLLM2

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# A round trip as a client sends it: the question, the assistant's two calls, their two results.
ROUND_TRIP = [
    {"role": "user", "content": "Weather in Paris and Tokyo?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_2",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'},
    {"role": "tool", "tool_call_id": "call_2", "content": '{"temp": 25}'},
]


def _template_messages(messages: list[dict]) -> list[dict]:
    return messages_for_template([ChatMessage.model_validate(m) for m in messages])


def test_a_template_with_a_tool_format_renders_tools_calls_and_results_as_transformers_does():
    messages = _template_messages(ROUND_TRIP)
    ours = ChatTemplate(QWEN25).render(messages, tools=[WEATHER])
    (theirs,), _ = render_jinja_template(
        [messages], tools=[WEATHER], chat_template=QWEN25, add_generation_prompt=True
    )
    assert ours == theirs
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo"}}\n</tool_call>' in ours
    assert '<tool_response>\n{"temp": 25}\n</tool_response>' in ours
    assert json.dumps(WEATHER) in ours  # the tool definitions, in the template's system turn
    assert ChatTemplate(QWEN25).has_tool_format and not ChatTemplate(SMOLLM2).has_tool_format


def test_a_template_without_one_reads_results_as_context_and_sees_no_call_syntax_to_imitate():
    ours = ChatTemplate(SMOLLM2).render(_template_messages(ROUND_TRIP), tools=[WEATHER])
    assert ours == (
        "<|im_start|>system\nYou can call these functions:\n- get_weather: The current weather in a city"
        "<|im_end|>\n<|im_start|>user\nWeather in Paris and Tokyo?<|im_end|>\n"
        f"<|im_start|>system\n{RESULTS_HEADING}\n"
        '- get_weather {"city": "Paris"}: {"temp": 18}\n'
        '- get_weather {"city": "Tokyo"}: {"temp": 25}<|im_end|>\n'
        "<|im_start|>assistant\n"
    )
    assert "Calling" not in ours and "<|im_start|>tool" not in ours


def test_the_plain_fallback_folds_tool_turns_too_and_leaves_a_lone_tool_message_alone():
    ours = ChatTemplate(None).render(_template_messages(ROUND_TRIP))
    assert RESULTS_HEADING in ours and "Calling" not in ours
    lone = ChatTemplate(None).render([{"role": "tool", "content": "42"}], add_generation_prompt=False)
    assert lone == "Tool: 42"


def test_legacy_function_calls_and_results_become_tool_turns():
    legacy = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        },
        {"role": "function", "name": "get_weather", "content": '{"temp": 18}'},
    ]
    call, result = _template_messages(legacy)[1:]
    assert call["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
        }
    ]
    assert result == {
        "role": "tool",
        "content": '{"temp": 18}',
        "tool_call_id": "call_1",
        "name": "get_weather",
    }
    assert '<tool_response>\n{"temp": 18}\n</tool_response>' in ChatTemplate(QWEN25).render(
        _template_messages(legacy), tools=[WEATHER]
    )


def test_results_without_call_ids_answer_the_calls_in_order():
    # Ollama's messages carry no tool_call_id: the n-th result answers the n-th call.
    calls = [{"function": {"name": "get_weather", "arguments": {"city": c}}} for c in ("Paris", "Tokyo")]
    messages = [
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "content": "18", "name": "get_weather"},
        {"role": "tool", "content": "25", "name": "get_weather"},
    ]
    ours = ChatTemplate(SMOLLM2).render(messages)
    assert '- get_weather {"city": "Paris"}: 18\n- get_weather {"city": "Tokyo"}: 25<|im_end|>' in ours


def test_the_tokenizer_passes_tools_to_the_template_with_special_text_in_contents_kept_as_text(tmp_path):
    from llmasos.model.tokenizer import Tokenizer
    from tests.model.test_tokenizer import _custom_gpt2, _write_gguf

    tok = Tokenizer.from_gguf(_write_gguf(tmp_path / "q.gguf", _custom_gpt2(chat_template=QWEN25)))
    assert tok.has_tool_format
    messages = _template_messages(ROUND_TRIP)
    assert tok.decode(tok.encode_chat(messages, tools=[WEATHER]), skip_special_tokens=False) == (
        ChatTemplate(QWEN25).render(messages, tools=[WEATHER])
    )
    # A content that spells a special token takes the literal path: the tools are rendered there too.
    sneaky = [{**messages[0], "content": "Paris<|im_end|>"}, *messages[1:]]
    text = tok.decode(tok.encode_chat(sneaky, tools=[WEATHER]), skip_special_tokens=False)
    assert text == ChatTemplate(QWEN25).render(sneaky, tools=[WEATHER]) and "<tools>" in text
