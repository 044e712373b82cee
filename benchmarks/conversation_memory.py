"""Conversation memory on LoCoMo (../shared/data/locomo-dev): one conversation replayed into one
server-side conversation on a model with a small window (default 2,048 tokens), then its questions
(categories 1-4) asked two ways with the same model in the same run:

- memory: a response chained to the replay (`previous_response_id`; each question forks its own
  thread, so questions do not see one another), whose context the system assembles (core facts,
  running summary, recent turns, BM25-recalled older turns);
- last turns: a plain chat call given only the most recent turns that fit the same window.

Scores: token F1 (SQuAD's normalisation) and containment (the normalised answer appears in the
reply), averaged per category. Also: errors during the replay (must be 0), and the context
assembly's cost per turn (ms, from each response's own explain record).

The replay adds each turn as a conversation item (speaker and session date in its text) and makes a
response every `--respond-every` turns (that is what pages: summaries are requested then, and
written in the background at the batch priority class).

    LLMASOS_HOME=/tmp/lh-bench python benchmarks/conversation_memory.py [--turns 200] [--questions 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import string
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from retrieval_locomo import CATEGORIES, DEFAULT_DATA, turns_of  # noqa: E402

INSTRUCTIONS = "Answer the question in a few words, from what was said in this conversation."


def normalise(text: str) -> list[str]:
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return [w for w in text.split() if w not in ("a", "an", "the", "and")]


def token_f1(reply: str, answer: str) -> float:
    got, want = normalise(reply), normalise(answer)
    common = sum((Counter(got) & Counter(want)).values())
    if not common:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def contains(reply: str, answer: str) -> float:
    return float(" ".join(normalise(answer)) in " ".join(normalise(reply)))


def boot(window: int):
    import dataclasses

    from llmasos.kernel.boot import boot as boot_kernel
    from llmasos.kernel.kernel import KernelConfig
    from llmasos.security.admin import ensure_admin

    config = KernelConfig()
    config = dataclasses.replace(config, engine=dataclasses.replace(config.engine, max_context_length=window))
    syscalls = boot_kernel(config, audit=False, interface="bench")
    app, _ = ensure_admin(syscalls.apps)
    syscalls.kernel.start()
    return syscalls, app


def respond(syscalls, app, model: str, text: str, **fields) -> tuple[dict, dict]:
    from llmasos.services import responses as flow

    request = flow.ResponseRequest(model=model, input=text, instructions=INSTRUCTIONS, **fields)
    body, prepared = flow.respond(syscalls, app, request)
    return body, prepared.assembly.explain


def last_turns_only(
    syscalls, app, model: str, lines: list[str], question: str, window: int, max_out: int
) -> str:
    """The baseline: the newest turns that fit the window, then the question; no memory."""
    tokenizer = syscalls.tokenizer(app, model)
    kept: list[str] = []
    for line in reversed(lines):
        messages = _baseline_messages([line, *kept], question)
        if len(tokenizer.encode_chat(messages)) + max_out >= window:
            break
        kept.insert(0, line)
    from llmasos.kernel.sampling_request import sampling_params

    process = syscalls.chat(
        app,
        model,
        _baseline_messages(kept, question),
        sampling_params({"max_tokens": max_out, "temperature": 0}),
    )
    return "".join(e.text for e in syscalls.events(app, process.pid) if not e.finished)


def _baseline_messages(lines: list[str], question: str) -> list[dict]:
    return [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": "\n".join(lines)},
        {"role": "user", "content": question},
    ]


def replay(
    syscalls, app, model: str, turns: list[dict], every: int, max_out: int
) -> tuple[str, list[float], int]:
    """The turns into one conversation; (the last response's id, assembly ms per response, errors)."""
    from llmasos.errors import LLMasOSError
    from llmasos.services import summaries

    conversation = syscalls.create_conversation(app)["id"]
    costs, errors, last = [], 0, None
    for start in range(0, len(turns), every):
        chunk = turns[start : start + every]
        lines = [_line(t) for t in chunk]
        for batch in range(0, len(lines) - 1, 20):
            items = [
                {"role": "user", "content": line} for line in lines[batch : min(batch + 20, len(lines) - 1)]
            ]
            if items:
                syscalls.add_conversation_items(app, conversation, items)
        try:
            body, explain = respond(
                syscalls,
                app,
                model,
                lines[-1],
                conversation=conversation,
                max_output_tokens=max_out,
                temperature=0,
            )
            costs.append(explain["assembly_ms"])
            last = body["id"]
        except LLMasOSError as err:
            errors += 1
            print(f"error at turn {start + len(chunk)}: {err}", file=sys.stderr)
        summaries.wait_idle(600)
        print(f"  replayed {start + len(chunk)}/{len(turns)} turns", file=sys.stderr)
    return last, costs, errors


def _line(turn: dict) -> str:
    return f"{turn['speaker']} ({turn['date']}): {turn['text']}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--conversation", default="conv-26")
    parser.add_argument("--model", default="default")
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--turns", type=int, default=0, help="replay only the first N turns (0: all)")
    parser.add_argument(
        "--questions", type=int, default=20, help="at most N questions whose evidence was replayed"
    )
    parser.add_argument("--respond-every", type=int, default=10)
    parser.add_argument("--max-output", type=int, default=24)
    args = parser.parse_args()

    conversation = json.loads((args.data / f"{args.conversation}.json").read_text())
    conversation = conversation.get("conversation", conversation)
    turns = turns_of(conversation)
    if args.turns:
        turns = turns[: args.turns]
    replayed = {t["dia_id"] for t in turns}
    qa = json.loads((args.data / f"{args.conversation}.json").read_text()).get("qa", [])
    questions = [
        q
        for q in qa
        if q.get("category") in CATEGORIES
        and q.get("evidence")
        and all(e in replayed for e in q["evidence"])
        and "answer" in q
    ][: args.questions]

    syscalls, app = boot(args.window)
    model = syscalls.resolve_model(args.model)
    started = time.perf_counter()
    last, costs, errors = replay(syscalls, app, model, turns, args.respond_every, args.max_output)
    replay_s = time.perf_counter() - started
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    lines = [_line(t) for t in turns]
    for number, q in enumerate(questions, 1):
        answer = str(q["answer"])
        body, explain = respond(
            syscalls,
            app,
            model,
            q["question"],
            previous_response_id=last,
            max_output_tokens=args.max_output,
            temperature=0,
        )
        costs.append(explain["assembly_ms"])
        with_memory = "".join(p["text"] for item in body["output"] for p in item["content"])
        without = last_turns_only(syscalls, app, model, lines, q["question"], args.window, args.max_output)
        category = CATEGORIES[q["category"]]
        for label, reply in (("memory", with_memory), ("last-turns", without)):
            for group in (category, "all"):
                scores[group][f"{label}-f1"].append(token_f1(reply, answer))
                scores[group][f"{label}-contains"].append(contains(reply, answer))
        print(f"  question {number}/{len(questions)}", file=sys.stderr)

    print(
        f"model {model}, window {args.window}, {args.conversation}: {len(turns)} turns replayed "
        f"in {replay_s:.0f} s, errors {errors}"
    )
    print(
        f"context assembly per response: p50 {statistics.median(costs):.1f} ms, max {max(costs):.1f} ms "
        f"({len(costs)} responses)"
    )
    header = (
        f"{'category':12} {'n':>3}  {'memory F1':>9} {'last F1':>8}  {'memory cont.':>12} {'last cont.':>10}"
    )
    print(header)
    for group, values in sorted(scores.items(), key=lambda kv: kv[0] != "all"):
        n = len(values["memory-f1"])
        mean = {key: 100 * statistics.mean(v) for key, v in values.items()}
        print(
            f"{group:12} {n:>3}  {mean['memory-f1']:>9.1f} {mean['last-turns-f1']:>8.1f}  "
            f"{mean['memory-contains']:>12.1f} {mean['last-turns-contains']:>10.1f}"
        )
    syscalls.stop()


if __name__ == "__main__":
    main()
