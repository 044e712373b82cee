"""Structured outputs through the clients users bring, unchanged, on the real default model.

Each client sends `response_format` its own way (openai's `parse`, LangChain's default
`with_structured_output`, instructor's JSON and JSON_SCHEMA modes, pydantic-ai's `NativeOutput`) and
parses the answer into the pydantic model itself; the checks assert that parsed object. The models
have nested and Optional fields, and `min_length` constraints that only the server's constrained
decoding can guarantee from a 135M model. Generations are greedy and end with the value (tens of
tokens).
"""

from __future__ import annotations

import instructor
import openai
import pytest
from pydantic import BaseModel, Field

PROMPT = "Alice is 30 years old and lives in Paris, France. Describe her as JSON."
# Bounds keep every value within max_tokens (a token may be one byte of a four-byte character), so
# a small budget means short strings; 512 leaves the names whole and still ends in a few dozen tokens.
MAX_TOKENS = 512


class City(BaseModel):
    name: str = Field(min_length=1, max_length=24)
    country: str | None = Field(default=None, max_length=24)


class Person(BaseModel):
    name: str = Field(min_length=1, max_length=24)
    age: int = Field(ge=0, le=130)
    city: City
    nickname: str | None = Field(default=None, max_length=16)


def _check(person: object) -> None:
    assert isinstance(person, Person)
    assert isinstance(person.city, City) and person.city.name  # nested, min_length held
    assert person.name and 0 <= person.age <= 130


@pytest.fixture(scope="module")
def client(compat_server) -> openai.OpenAI:
    key = compat_server.new_app_key("compat-structured")
    return openai.OpenAI(base_url=compat_server.openai_url, api_key=key, max_retries=0)


def test_openai_parse_returns_the_pydantic_object(client) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    reply = client.chat.completions.parse(
        model="default", messages=messages, response_format=Person, max_tokens=MAX_TOKENS, temperature=0
    )
    assert reply.choices[0].finish_reason == "stop"
    _check(reply.choices[0].message.parsed)
    with client.chat.completions.stream(  # the streamed helper parses the same way
        model="default", messages=messages, response_format=Person, max_tokens=MAX_TOKENS, temperature=0
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == reply.choices[0].message.parsed


def test_langchain_with_structured_output_default_method(compat_server, client) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="default",
        base_url=compat_server.openai_url,
        api_key=client.api_key,
        temperature=0,
        max_tokens=MAX_TOKENS,
        max_retries=0,
    )
    _check(llm.with_structured_output(Person).invoke(PROMPT))


def test_instructor_json_schema_mode(client) -> None:
    patched = instructor.from_openai(client, mode=instructor.Mode.JSON_SCHEMA)
    person = patched.chat.completions.create(
        model="default",
        response_model=Person,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        max_retries=0,
    )
    _check(person)


class Place(BaseModel):
    city: str = Field(min_length=1)


def test_instructor_json_mode(client) -> None:
    """JSON mode sends json_object (any object) and the schema only in the prompt: the server
    guarantees an object; its keys are the model's reading of the prompt, which asks for them
    (as OpenAI's JSON mode requires) with an example, for a 135M model."""
    patched = instructor.from_openai(client, mode=instructor.Mode.JSON)
    place = patched.chat.completions.create(
        model="default",
        response_model=Place,
        messages=[{"role": "user", "content": 'Alice lives in Paris. Answer like {"city": "Rome"}.'}],
        max_tokens=MAX_TOKENS,
        temperature=0,
        max_retries=0,
    )
    assert isinstance(place, Place) and place.city


def test_pydantic_ai_native_output(compat_server, client) -> None:
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(
        "default", provider=OpenAIProvider(base_url=compat_server.openai_url, api_key=client.api_key)
    )
    agent = Agent(model, output_type=NativeOutput(Person), retries=0)
    result = agent.run_sync(PROMPT, model_settings={"max_tokens": MAX_TOKENS, "temperature": 0})
    _check(result.output)
