"""The held-aside routing set: plain-language requests and where each should go.

Written before the router was built or tuned (issue 6 asks for this), and not to be edited to fit
it: a misroute is reported, not hidden. `attachment` names the kind of file sent with the request.
Targets are a service name or a tool name; a chain is written "first>second".
"""

from __future__ import annotations

from typing import NamedTuple


class Case(NamedTuple):
    request: str
    target: str
    attachment: str | None = None  # "image" or "audio"


CASES: list[Case] = [
    # summarize
    Case(
        "Summarize this article for me: The city council met on Tuesday to discuss the new budget, "
        "which raises spending on parks and cuts road repairs.",
        "summarize",
    ),
    Case(
        "Give me the gist of the following meeting notes in two sentences: we agreed to ship in May, "
        "hire two engineers and move the office.",
        "summarize",
    ),
    Case(
        "TL;DR of this paragraph please: Solar panels convert sunlight into electricity using "
        "photovoltaic cells made of silicon.",
        "summarize",
    ),
    # translate
    Case("Translate this to French: where is the train station?", "translate"),
    Case("How do you say 'good morning, my friend' in Spanish?", "translate"),
    Case("Put this sentence into German: the weather is lovely today.", "translate"),
    # qa
    Case(
        "Based on this text, who signed the treaty? Text: In 1648 the Peace of Westphalia was signed "
        "by the Holy Roman Emperor and the kings of France and Sweden.",
        "qa",
    ),
    Case(
        "Here is a passage: 'Mount Everest is 8,849 metres tall.' Question: how tall is Everest "
        "according to the passage?",
        "qa",
    ),
    Case(
        "Read this and answer: the meeting moved from Monday to Thursday at 3pm. When is the meeting now?",
        "qa",
    ),
    # code
    Case("Write a Python function that checks whether a number is prime.", "code"),
    Case("Explain what this code does: for i in range(10): print(i * i)", "code"),
    Case("Can you fix the bug in this JavaScript: let x = [1,2,3]; x.map(v => v * 2", "code"),
    # classify
    Case(
        "Is this review positive or negative: 'The battery died after a day, total waste of money.'",
        "classify",
    ),
    Case("Classify this email as spam or not spam: 'You won a free cruise, click here now!'", "classify"),
    Case(
        "Which category fits this headline best, sports, politics or tech: 'New chip doubles battery life'",
        "classify",
    ),
    # extract
    Case(
        "Extract the name, date and total amount from this invoice: Invoice for Jane Doe, 3 March 2024, "
        "total due $412.50.",
        "extract",
    ),
    Case(
        "Pull out the email address and phone number from: contact Bob at bob@example.com or 555-0134.",
        "extract",
    ),
    Case(
        "Get the fields city and temperature as JSON from: 'It is 21 degrees in Lisbon right now.'", "extract"
    ),
    # chat
    Case("Hi there! How are you doing today?", "chat"),
    Case("Tell me a joke about penguins.", "chat"),
    Case("What should I cook for dinner tonight?", "chat"),
    # calculator
    Case("What is 17% of 2,340?", "calculator"),
    Case("Compute (12.5 * 4) - 7 / 2", "calculator"),
    Case("how much is 2 to the power of 10", "calculator"),
    # clock
    Case("What time is it right now?", "clock"),
    Case("What's today's date?", "clock"),
    Case("What time is it in Tokyo?", "clock"),
    # knowledge
    Case("Remember that Alice works at Acme Corp.", "knowledge"),
    Case("Who does Alice work for, according to what I told you?", "knowledge"),
    # speak
    Case("Read this sentence out loud: the quick brown fox jumps over the lazy dog.", "speak"),
    Case("Say 'welcome home' as audio.", "speak"),
    # embed
    Case("Give me the embedding vector of the sentence 'hello world'.", "embed"),
    # perception with attachments
    Case("What does this receipt say?", "ocr", "image"),
    Case("Read the text in this picture.", "ocr", "image"),
    Case("What is said in this recording?", "transcribe", "audio"),
    Case("Transcribe this voice memo.", "transcribe", "audio"),
]
