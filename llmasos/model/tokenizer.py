"""Text <-> token ids for a model, built with the `tokenizers` library (no transformers at runtime).

Two sources:

- `Tokenizer.from_gguf`: a GGUF file has no `tokenizer.json`, only llama.cpp's `tokenizer.ggml.*`
  metadata. We rebuild the tokenizer it describes: byte-level BPE (`gpt2`, pre-tokenizer chosen by
  `tokenizer.ggml.pre`) or SentencePiece-style BPE with byte fallback (`llama`).
- `Tokenizer.from_hf_dir`: a Hugging Face model directory with `tokenizer.json`.

Tokens the file marks CONTROL (and the UNKNOWN token) become special added tokens, and USER_DEFINED
ones plain added tokens, so `<|im_start|>` in text is one id and special ids can be skipped on decode.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import gguf
import tokenizers
from tokenizers import AddedToken

from llmasos.errors import ModelFormatError, UnsupportedModelError
from llmasos.model.chat_template import ChatTemplate
from llmasos.model.gguf_vocab import (
    CONTROL,
    NORMAL,
    SUPPORTED_MODELS,
    UNKNOWN,
    USER_DEFINED,
    GGUFFields,
    byte_level_backend,
    sentencepiece_backend,
)

# Control tokens that end a turn in common chat formats. They stop generation alongside EOS, as in
# llama.cpp's end-of-generation set; only counted when the vocabulary has them as special tokens.
_END_OF_TURN_TOKENS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
)


class Tokenizer:
    """A model's tokenizer: encode/decode, special and stop tokens, and its chat template."""

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token_id: int | None,
        eos_token_id: int | None,
        chat_template: str | None = None,
        vocab_size: int | None = None,
        extra_stop_token_ids: Iterable[int] = (),
        add_bos_token: bool | None = None,
        add_eos_token: bool | None = None,
    ) -> None:
        """Wrap a ready `tokenizers.Tokenizer`.

        With `add_bos_token`/`add_eos_token` given, `encode` adds BOS/EOS itself (GGUF files say so
        in metadata). Left as None, the backend's post-processor decides (a `tokenizer.json`), and
        `add_bos_token` is read back from it so that `encode_chat` can avoid a second BOS.
        """
        self._backend = backend
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.vocab_size: int = vocab_size if vocab_size is not None else backend.get_vocab_size(True)
        self.special_token_ids: frozenset[int] = frozenset(
            index for index, token in backend.get_added_tokens_decoder().items() if token.special
        )
        stops = set(extra_stop_token_ids)
        if eos_token_id is not None:
            stops.add(eos_token_id)
        for name in _END_OF_TURN_TOKENS:
            index = backend.token_to_id(name)
            if index is not None and index in self.special_token_ids:
                stops.add(index)
        self.stop_token_ids: frozenset[int] = frozenset(stops)
        # Adding them ourselves rather than via a TemplateProcessing post-processor: its string
        # syntax cannot name a token containing ":".
        self._adds_specials = add_bos_token is not None or add_eos_token is not None
        if self._adds_specials:
            self.add_bos_token = bool(add_bos_token) and bos_token_id is not None
            self.add_eos_token = bool(add_eos_token) and eos_token_id is not None
        else:
            with_specials = backend.encode("a", add_special_tokens=True).ids
            self.add_bos_token = bos_token_id is not None and with_specials[:1] == [bos_token_id]
            self.add_eos_token = eos_token_id is not None and with_specials[-1:] == [eos_token_id]
        self.bos_token: str = self._token_text(bos_token_id)
        self.eos_token: str = self._token_text(eos_token_id)
        self._chat = ChatTemplate(chat_template, bos_token=self.bos_token, eos_token=self.eos_token)
        # Spellings of the special tokens, to spot them in untrusted message text (see encode_chat).
        self._special_texts = tuple(
            text for text in (backend.id_to_token(i) for i in sorted(self.special_token_ids)) if text
        )
        self._literal_backend: tokenizers.Tokenizer | None = None

    # ----------------------------------------------------------------------------- constructors

    @classmethod
    def from_gguf(cls, path_or_reader: str | os.PathLike[str] | gguf.GGUFReader) -> Tokenizer:
        """Build the tokenizer a GGUF file describes (`tokenizer.ggml.*` and `tokenizer.chat_template`)."""
        fields = GGUFFields(_open_gguf(path_or_reader))
        model = fields.require("tokenizer.ggml.model")
        tokens: list[str] = fields.require("tokenizer.ggml.tokens")
        types = _gguf_token_types(fields, tokens)
        add_bos = bool(fields.get("tokenizer.ggml.add_bos_token", model == "llama"))
        add_eos = bool(fields.get("tokenizer.ggml.add_eos_token", False))
        backend = _gguf_backend(fields, model, tokens, types)
        _add_marked_tokens(backend, tokens, types)
        return cls(
            backend,
            bos_token_id=fields.get("tokenizer.ggml.bos_token_id"),
            eos_token_id=fields.get("tokenizer.ggml.eos_token_id"),
            chat_template=fields.get("tokenizer.chat_template"),
            vocab_size=len(tokens),
            extra_stop_token_ids=_gguf_extra_stops(fields),
            add_bos_token=add_bos,
            add_eos_token=add_eos,
        )

    @classmethod
    def from_hf_dir(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load a Hugging Face model directory's tokenizer.

        Reads `tokenizer.json`, and if present `tokenizer_config.json` (BOS/EOS, template, added
        tokens), `chat_template.jinja` (overrides the config's template) and `generation_config.json`
        (extra EOS ids, which become stop ids).
        """
        directory = Path(path)
        tokenizer_file = directory / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise UnsupportedModelError(
                f"{directory} has no tokenizer.json; LLMasOS reads only the fast-tokenizer format"
            )
        try:
            backend = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # the Rust side raises plain Exception for malformed files
            raise ModelFormatError(f"{tokenizer_file} could not be read: {exc}") from exc
        config = _read_json(directory / "tokenizer_config.json")

        # Added tokens the config lists but tokenizer.json lacks (older exports).
        for entry in (config.get("added_tokens_decoder") or {}).values():
            content = entry.get("content")
            if content and backend.token_to_id(content) is None:
                token = AddedToken(content, special=bool(entry.get("special")), normalized=False)
                if entry.get("special"):
                    backend.add_special_tokens([token])
                else:
                    backend.add_tokens([token])

        def token_id(name: str) -> int | None:
            value = config.get(name)
            if isinstance(value, dict):
                value = value.get("content")
            return backend.token_to_id(value) if isinstance(value, str) else None

        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        jinja_file = directory / "chat_template.jinja"
        if jinja_file.is_file():
            template = jinja_file.read_text(encoding="utf-8")

        generation = _read_json(directory / "generation_config.json")
        eos_ids = generation.get("eos_token_id")
        extra_stops = [eos_ids] if isinstance(eos_ids, int) else list(eos_ids or [])
        return cls(
            backend,
            bos_token_id=token_id("bos_token"),
            eos_token_id=token_id("eos_token"),
            chat_template=template if isinstance(template, str) else None,
            extra_stop_token_ids=extra_stops,
        )

    # ----------------------------------------------------------------------------- encode/decode

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The underlying `tokenizers` object (e.g. to save it as tokenizer.json)."""
        return self._backend

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; with `add_special_tokens`, BOS/EOS only where the model adds them.

        Special tokens written in the text (e.g. ``<|im_start|>``) always become their single id.
        """
        ids = _ids(self._backend, text, add_special_tokens)
        if add_special_tokens and self._adds_specials:
            if self.add_bos_token and self.bos_token_id is not None:
                ids.insert(0, self.bos_token_id)
            if self.add_eos_token and self.eos_token_id is not None:
                ids.append(self.eos_token_id)
        return ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """Text of `ids`; special tokens are left out unless `skip_special_tokens` is False."""
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def id_to_token(self, index: int) -> str:
        """The vocabulary entry for `index` as the model spells it (e.g. ``Ġthe``); IndexError if none."""
        token = self._backend.id_to_token(index) if 0 <= index < self.vocab_size else None
        if token is None:
            raise IndexError(f"token id {index} is outside the vocabulary (size {self.vocab_size})")
        return token

    # ----------------------------------------------------------------------------- chat

    @property
    def has_chat_template(self) -> bool:
        """True when the model brought its own chat template (False: the plain fallback is used)."""
        return self._chat.is_model_template

    @property
    def chat_template(self) -> str | None:
        """The model's chat template source, if it has one."""
        return self._chat.source

    @property
    def has_tool_format(self) -> bool:
        """True when the model's template renders tools and tool calls itself (see chat_template)."""
        return self._chat.has_tool_format

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """Render `messages` to prompt text with the model's template; InvalidRequestError if malformed."""
        return self._chat.render(messages, add_generation_prompt=add_generation_prompt, tools=tools)

    def encode_chat(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[int]:
        """Prompt ids for `messages`: the rendered template, with BOS added once if the model uses one.

        Special-token spellings inside message contents (a user typing ``<|im_end|>``) are encoded as
        plain text, never as control tokens: otherwise any user could close their turn and write
        the system's or the assistant's.
        """
        if isinstance(messages, list) and any(
            isinstance(m, dict) and self._has_special_text(m.get("content")) for m in messages
        ):
            ids = self._encode_chat_literal(messages, add_generation_prompt, tools)
        else:
            text = self.apply_chat_template(
                messages, add_generation_prompt=add_generation_prompt, tools=tools
            )
            # The template writes its special tokens as text; encoding without the post-processor keeps
            # EOS off the end of a prompt and BOS from doubling when the template already wrote it.
            ids = self.encode(text, add_special_tokens=False)
        if self.add_bos_token and self.bos_token_id is not None and ids[:1] != [self.bos_token_id]:
            ids.insert(0, self.bos_token_id)
        return ids

    def _has_special_text(self, content: Any) -> bool:
        return isinstance(content, str) and any(text in content for text in self._special_texts)

    def _encode_chat_literal(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool, tools: list[dict[str, Any]] | None
    ) -> list[int]:
        """Render with a placeholder per content, then encode the template's text with special tokens
        and each content with special-token spellings read as text."""
        if self._literal_backend is None:
            literal = tokenizers.Tokenizer.from_str(self._backend.to_str())
            literal.encode_special_tokens = True
            self._literal_backend = literal
        marks = [f"\ue000{i}\ue001" for i in range(len(messages))]
        # Empty contents stay empty: templates test them (`{% if message.content %}`, as Qwen2.5's
        # does for an assistant turn of tool calls), and a mark would make them true.
        masked = [
            {**m, "content": marks[i]} if isinstance(m.get("content"), str) and m["content"] else m
            for i, m in enumerate(messages)
        ]
        text = self.apply_chat_template(masked, add_generation_prompt=add_generation_prompt, tools=tools)
        ids: list[int] = []
        pos = 0
        for mark, message in zip(marks, messages, strict=True):
            at = text.find(mark, pos)
            if at < 0:
                continue  # the template dropped or rewrote this content: nothing of it to encode
            ids += _ids(self._backend, text[pos:at], False)
            ids += _ids(self._literal_backend, message["content"], False)
            pos = at + len(mark)
        ids += _ids(self._backend, text[pos:], False)
        return ids

    # ----------------------------------------------------------------------------- helpers

    def _token_text(self, index: int | None) -> str:
        if index is None:
            return ""
        return self._backend.id_to_token(index) or ""

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, bos={self.bos_token!r}, eos={self.eos_token!r}, "
            f"chat_template={self.has_chat_template})"
        )


def _ids(backend: tokenizers.Tokenizer, text: str, add_special_tokens: bool) -> list[int]:
    """`backend.encode(text).ids`, through `encode_batch`, which releases the GIL while it runs:
    `encode` holds it, so a long prompt tokenized on any thread stalled the kernel's thread and
    every stream with it (a 470 KB text: 2 s in which another thread ran twice; 684 times with
    `encode_batch`, same ids)."""
    return backend.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{path} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _open_gguf(path_or_reader: str | os.PathLike[str] | gguf.GGUFReader) -> gguf.GGUFReader:
    """The reader itself, or a reader over the file at the path; ModelFormatError if there is none."""
    if isinstance(path_or_reader, gguf.GGUFReader):
        return path_or_reader
    path = Path(path_or_reader)
    if not path.is_file():
        raise ModelFormatError(f"no GGUF file at {path}")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise ModelFormatError(f"{path} is not a readable GGUF file: {exc}") from exc


def _gguf_token_types(fields: GGUFFields, tokens: list[str]) -> list[int]:
    """Each token's llama.cpp type (NORMAL, CONTROL, ...); all NORMAL where the file gives none."""
    types: list[int] = fields.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise ModelFormatError("tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length")
    return types


def _gguf_backend(
    fields: GGUFFields, model: str, tokens: list[str], types: list[int]
) -> tokenizers.Tokenizer:
    """The `tokenizers` pipeline of the file's tokenizer type (`tokenizer.ggml.model`)."""
    if model == "gpt2":
        return byte_level_backend(fields, tokens, types)
    if model == "llama":
        architecture = str(fields.get("general.architecture", ""))
        add_space_prefix = bool(fields.get("tokenizer.ggml.add_space_prefix", True))
        return sentencepiece_backend(fields, tokens, types, architecture, add_space_prefix)
    raise UnsupportedModelError(
        f"the model's tokenizer type is {model!r}, which LLMasOS does not support; "
        f"supported: {', '.join(SUPPORTED_MODELS)}"
    )


def _add_marked_tokens(backend: tokenizers.Tokenizer, tokens: list[str], types: list[int]) -> None:
    """CONTROL and UNKNOWN tokens as special added tokens, USER_DEFINED ones as plain added tokens.

    They keep their ids: they are already in the vocabulary. One whose spelling the vocabulary does not
    hold (Gemma's runs of spaces, respelled as "▁" runs there) is left to the model's own merges: added,
    it would get an id past the model's embeddings (Gemma's "    " became 262146 of 262144)."""
    vocab = backend.get_vocab()
    special = [
        AddedToken(tokens[i], special=True, normalized=False)
        for i, kind in enumerate(types)
        if kind in (CONTROL, UNKNOWN) and tokens[i] in vocab
    ]
    backend.add_special_tokens(special)
    backend.add_tokens(
        [
            AddedToken(tokens[i], special=False, normalized=False)
            for i, kind in enumerate(types)
            if kind == USER_DEFINED and tokens[i] in vocab
        ]
    )


def _gguf_extra_stops(fields: GGUFFields) -> list[int]:
    """End-of-turn and end-of-message ids the file names, which stop generation besides EOS."""
    return [
        fields.get(key)
        for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")
        if fields.get(key) is not None
    ]
