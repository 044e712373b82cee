"""Where requests can go: every system service and tool, each with its description and a few
typical requests.

The router compares a request with these texts by sentence embedding. Descriptions alone are
written for programmers ("Evaluate arithmetic: + - * / ..."); users phrase requests differently
("how much is ..."), so each destination also carries example requests in users' words. They were
written from what each destination does, before the router's held-aside test set was run, and
must stay general: tuning them to that set would make its measured accuracy meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Destination:
    name: str
    kind: str  # "service" or "tool"
    description: str
    examples: tuple[str, ...]

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.description, *self.examples)


EXAMPLES: dict[str, tuple[str, ...]] = {
    "summarize": (
        "Summarize this text",
        "Give me a short summary of this report",
        "What are the main points of this document?",
        "Condense these notes into a few bullet points",
        "Make this long email shorter",
    ),
    "translate": (
        "Translate this into Italian",
        "What is this sentence in Japanese?",
        "Can you say this in English?",
        "Convert this paragraph from Dutch to English",
    ),
    "qa": (
        "Answer the question using this passage",
        "According to the document, what year did it happen?",
        "Given this context, who is the author?",
        "From the text below, find out where they live",
    ),
    "code": (
        "Write a function that sorts a list",
        "Implement a class for a bank account in Java",
        "What does this snippet do?",
        "Debug my script, it throws an error",
        "Write a SQL query that counts the users",
    ),
    "classify": (
        "Label this message as urgent or not urgent",
        "Is the sentiment of this tweet happy, sad or angry?",
        "Categorize this ticket: billing, technical or other",
        "Decide whether this comment is toxic",
    ),
    "extract": (
        "Extract the dates from this text",
        "Find the names and addresses mentioned here and return them as JSON",
        "Get the product, price and quantity from this order",
        "Parse this resume into fields",
    ),
    "chat": (
        "Hello!",
        "How was your day?",
        "Give me some advice on learning the guitar",
        "Can you recommend a good book?",
        "I feel bored, what should I do?",
    ),
    "calculator": (
        "What is 45 times 12?",
        "Calculate the square root of 144",
        "How much is 15 percent of 80?",
        "Add 1,250 and 3,400",
        "Divide 100 by 7",
    ),
    "clock": (
        "What time is it?",
        "What day of the week is it today?",
        "Tell me the current date",
        "What is the time in London now?",
    ),
    "knowledge": (
        "Remember that my sister lives in Berlin",
        "Note that the project deadline is Friday",
        "What do you know about Bob?",
        "Where does my sister live, as I told you before?",
        "Forget that Bob likes tea",
    ),
    "speak": (
        "Say this aloud",
        "Read this text to me with your voice",
        "Turn this sentence into speech",
        "Pronounce this word for me",
    ),
    "embed": (
        "Compute the vector embedding of this text",
        "Turn these sentences into embeddings for my search index",
        "Give me the sentence vector for this phrase",
    ),
    "ocr": (
        "What is written in this image?",
        "Read this scanned page",
        "Get the text from this screenshot",
        "What does this sign say?",
    ),
    "transcribe": (
        "What does this audio say?",
        "Turn this recording into text",
        "Write down what is spoken in this clip",
        "Transcribe this podcast episode",
    ),
}


def destinations() -> list[Destination]:
    """Every service and tool this system has, with routing examples where we wrote them."""
    from llmasos.services import list_services
    from llmasos.tools.registry import list_tools

    found = [Destination(s.name, "service", s.description, EXAMPLES.get(s.name, ())) for s in list_services()]
    found += [Destination(t.name, "tool", t.description, EXAMPLES.get(t.name, ())) for t in list_tools()]
    return found
