"""Constrained decoding: logits processors that let a model produce only what a grammar accepts.

The grammar engine is llguidance (the one llama.cpp and vLLM use): it walks a grammar over the
model's own byte-level vocabulary and gives, at every step, the set of tokens that keep the output
a prefix of some accepted string; once the output is complete and nothing may follow, only the
end-of-sequence tokens remain. Two grammars are offered:

- `Grammar.json_schema(schema, tokenizer, max_tokens)`: compact JSON of a schema in the subset of
  `llmasos.engine.json_schema`, bounded so that the value always completes within `max_tokens`;
- `Grammar.json_object(tokenizer, max_tokens)`: any JSON object (`response_format` json_object),
  bounded likewise;
- `Grammar.choice(options, tokenizer)`: exactly one of the given strings.

`grammar.processor()` makes a fresh `ConstrainedLogits` for one request, to put in
`SamplingParams.logits_processors`. Its parser state is a cache of what the output token ids
imply, rebuilt from them when they do not match (after a preemption that recomputes, or when one
processor serves several sequences), so suspend/resume in any mode keeps the constraint.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import llguidance

from llmasos.engine.json_object import json_object_grammar
from llmasos.engine.json_schema import fit_to_budget, grammar_text
from llmasos.engine.schema_bounds import Bounds
from llmasos.errors import InvalidRequestError, InvalidSchemaError
from llmasos.model.tokenizer import Tokenizer

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)
#: Parser states a processor keeps (one per sequence it serves, least recently used dropped).
MAX_STATES = 16

_tokenizers: weakref.WeakKeyDictionary[Tokenizer, llguidance.LLTokenizer] = weakref.WeakKeyDictionary()
_tokenizers_lock = threading.Lock()


def grammar_tokenizer(tokenizer: Tokenizer) -> llguidance.LLTokenizer:
    """llguidance's view of a model's vocabulary (built once per tokenizer: ~0.5 s for 49k tokens)."""
    with _tokenizers_lock:
        found = _tokenizers.get(tokenizer)
        if found is None:
            found = llguidance.LLTokenizer(
                tokenizer.backend.to_str(),
                n_vocab=tokenizer.vocab_size,
                eos_token=sorted(tokenizer.stop_token_ids),
            )
            _tokenizers[tokenizer] = found
        return found


@dataclass(frozen=True)
class Grammar:
    """A grammar compiled for one tokenizer; `processor()` makes a logits processor per request."""

    text: str  # llguidance's grammar (JSON) text
    tokenizer: llguidance.LLTokenizer
    max_tokens: int  # tokens the longest accepted output takes at most, end token included
    schema: dict | None = None  # the bounded JSON schema, for json_schema grammars
    bounds: Bounds | None = None
    # The model's tokenizer it was built for: llguidance's does not pickle, so a copy sent to another
    # process (a cluster node) rebuilds it from this one.
    source: Tokenizer | None = field(default=None, compare=False, repr=False)

    def __reduce__(self) -> tuple:
        if self.source is None:
            raise TypeError("a grammar built without its model tokenizer cannot go to another process")
        return (_rebuilt, (self.text, self.source, self.max_tokens, self.schema, self.bounds))

    @classmethod
    def json_schema(cls, schema: object, tokenizer: Tokenizer, max_tokens: int) -> Grammar:
        """Compact JSON valid under `schema`, always complete within `max_tokens` (end included)."""
        _check_budget(max_tokens)
        # Every token is at least one byte, so a value of at most max_tokens - 1 bytes always ends in time.
        bounded, bounds = fit_to_budget(schema, max_tokens - 1)
        text = grammar_text(bounded)
        grammar = cls(
            text, grammar_tokenizer(tokenizer), bounds.worst_case_bytes + 1, bounded, bounds, tokenizer
        )
        grammar._check()
        return grammar

    @classmethod
    def json_object(cls, tokenizer: Tokenizer, max_tokens: int) -> Grammar:
        """Any compact JSON object (nesting, members and strings bounded), complete within `max_tokens`."""
        _check_budget(max_tokens)
        text, worst_case = json_object_grammar(max_tokens - 1)
        lark = llguidance.LLMatcher.grammar_from_lark(text)
        grammar = cls(lark, grammar_tokenizer(tokenizer), worst_case + 1, source=tokenizer)
        grammar._check()
        return grammar

    @classmethod
    def choice(cls, options: list[str], tokenizer: Tokenizer) -> Grammar:
        """Exactly one of `options` (non-empty strings), then the end of the sequence."""
        if not isinstance(options, list | tuple) or not options:
            raise InvalidRequestError("give at least one option (a non-empty list of strings)")
        if not all(isinstance(o, str) and o for o in options):
            raise InvalidRequestError(f"every option must be a non-empty string, got {options!r}")
        # Lark string literals take JSON escapes; the alternatives are plain terminals.
        lark = "start: " + " | ".join(json.dumps(o, ensure_ascii=False) for o in dict.fromkeys(options))
        text = llguidance.LLMatcher.grammar_from_lark(lark)
        longest = max(len(o.encode()) for o in options)
        grammar = cls(text, grammar_tokenizer(tokenizer), longest + 1, source=tokenizer)
        grammar._check()
        return grammar

    def _check(self) -> None:
        error = llguidance.LLMatcher.validate_grammar(self.text, self.tokenizer)
        if error and not error.startswith("WARNING"):
            raise InvalidSchemaError(f"the grammar could not be compiled: {error}")

    def processor(self) -> ConstrainedLogits:
        return ConstrainedLogits(self)

    def matcher(self) -> llguidance.LLMatcher:
        """A fresh parser at the start of the grammar."""
        matcher = llguidance.LLMatcher(self.tokenizer, self.text, log_level=0)
        if matcher.is_error():
            raise InvalidSchemaError(f"the grammar could not be compiled: {matcher.get_error()}")
        return matcher


def _rebuilt(
    text: str, source: Tokenizer, max_tokens: int, schema: dict | None, bounds: Bounds | None
) -> Grammar:
    return Grammar(text, grammar_tokenizer(source), max_tokens, schema, bounds, source)


def _check_budget(max_tokens: object) -> None:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2:
        raise InvalidRequestError(f"max_tokens for a JSON value must be an integer >= 2, got {max_tokens!r}")


class ConstrainedLogits:
    """fn(output_token_ids, logits_row) -> logits_row that masks every token the grammar forbids.

    Keeps one parser per distinct output it has seen (a small LRU), advanced by the tokens that
    were appended since; any output it has no parser for is replayed from a fresh one.
    """

    def __init__(self, grammar: Grammar) -> None:
        self.grammar = grammar
        self._states: list[tuple[list[int], llguidance.LLMatcher]] = []
        self.num_replays = 0  # parsers rebuilt from scratch (first use, preemption, other sequences)
        self.failed = False  # a parser reached an error state (never expected; logged once)
        self._end_tokens = frozenset(grammar.tokenizer.eos_tokens)

    def __getstate__(self) -> dict:
        # Parsers do not pickle: a copy (a request sent to a cluster node, or moved to another when
        # its node died) replays them from the output ids it is given, as after a preemption.
        return {**self.__dict__, "_states": []}

    def __call__(self, output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        # Imported here (loaded already: the engine calls this): grammars are built by the HTTP
        # layer and function calling, which a starting server imports before it loads torch.
        import torch

        matcher = self._matcher_for(output_ids)
        vocab = self.grammar.tokenizer.vocab_size
        if matcher.is_error():
            # Cannot happen for tokens this processor allowed; if it does, end the sequence (the
            # caller sees an incomplete value) rather than fail the whole engine step.
            if not self.failed:
                logger.error("constrained decoding lost its parse; ending the sequence")
                logger.debug("parser state: %s", matcher.get_error())  # holds output text
            self.failed = True
            allowed = torch.zeros(vocab, dtype=torch.bool)
            allowed[self.grammar.tokenizer.eos_tokens] = True
        else:
            bias = torch.frombuffer(bytearray(matcher.compute_logit_bias()), dtype=torch.uint8)
            allowed = bias != 0
        if logits.shape[-1] != vocab:  # the model's rows may be padded past the tokenizer's vocabulary
            padded = torch.zeros(logits.shape[-1], dtype=torch.bool)
            padded[: min(vocab, logits.shape[-1])] = allowed[: logits.shape[-1]]
            allowed = padded
        return torch.where(allowed.to(logits.device), logits, float("-inf"))

    def _matcher_for(self, output_ids: list[int]) -> llguidance.LLMatcher:
        best = None
        for index, (consumed, _) in enumerate(self._states):
            n = len(consumed)
            if n <= len(output_ids) and output_ids[:n] == consumed and (best is None or n > best[1]):
                best = (index, n)
        if best is None:
            self.num_replays += 1
            consumed, matcher = [], self.grammar.matcher()
        else:
            consumed, matcher = self._states.pop(best[0])
        new = output_ids[len(consumed) :]
        for token in new:
            # End tokens after a complete value (ignore_eos) leave the value as it is.
            if not (matcher.is_stopped() and token in self._end_tokens):
                matcher.consume_token(token)
        consumed = consumed + new
        self._states.append((consumed, matcher))
        if len(self._states) > MAX_STATES:
            self._states.pop(0)
        return matcher
