"""Conversation memory on LoCoMo (../shared/data/locomo-dev): one conversation replayed into one
server-side conversation on a model with a small window (default 2,048 tokens), then its questions
(categories 1-4) asked two ways with the same model in the same run:

- memory: a response chained to the replay (`previous_response_id`; each question forks its own
  thread, so questions do not see one another), whose context the system assembles (core facts,
  running summary, recent turns, BM25-recalled older turns);
- last turns: a plain chat call given only the most recent turns that fit the same window;
- with `--before-ref REF`, also memory as it was at git revision REF: the same replayed conversation
  and the same chained question, the context assembled by REF's `services/memory.py` (loaded from
  git, swapped in for that one call), for a before/after of the context's layout in one sitting.

Scores: token F1 (SQuAD's normalisation) and containment (the normalised answer appears in the
reply), averaged per category. Also: errors during the replay (must be 0), and the context
assembly's cost per turn (ms, from each response's own explain record).

The replay adds each turn as a conversation item (speaker and session date in its text), with no
answer per turn; every `--page-every` turns it pages the memory (`services.responses.page`: the
summary of turns that fell out of the window is written in the background at the batch priority
class, and waited for), and ends with one response to the last turn, which the questions chain to.
A long run can be cut in pieces (`--skip`, `--questions`, `--out`), joined with `--report`.

    LLMASOS_HOME=/tmp/lh-bench python benchmarks/conversation_memory.py --data ../shared/data/locomo-dev \
        [--model qwen2.5-coder-1.5b-instruct] [--per-category 5] [--before-ref aff7fb8] [--out rows.jsonl]
    python benchmarks/conversation_memory.py --report rows.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import string
import subprocess
import sys
import time
import types
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from retrieval_locomo import CATEGORIES, DEFAULT_DATA, turns_of  # noqa: E402

#: The answer's form, as LoCoMo's own evaluation asks for it (a short phrase in the conversation's
#: words; a date worked out from the message's date), the same for every arm: token F1 and
#: containment both reward an answer that is the phrase and nothing around it.
INSTRUCTIONS = (
    "Answer the question from what was said in this conversation, with a short phrase only: a name, "
    "a date, a place, a number or a short list, in the conversation's own words where possible, not a "
    "sentence. For when something happened, give the date, worked out from the date of the message "
    "that tells it."
)

#: Seconds a replay or a question waits for the background summary: a summary of a 1.5B model on a
#: loaded 2-core machine has taken over 15 minutes, and a run that gives up measures nothing.
SUMMARY_WAIT = 3600


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


def all_words(reply: str, answer: str) -> float:
    """Whether every word of the answer is in the reply, in any order: containment that a date
    written another way ("May 7, 2023" for "7 May 2023") or a list in another order still meets."""
    return float(not Counter(normalise(answer)) - Counter(normalise(reply)))


#: The scores of a reply against the reference answer, by their name in the table.
SCORES = {"F1": token_f1, "cont.": contains, "words": all_words}


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


def memory_module_at(ref: str) -> types.ModuleType:
    """`llmasos/services/memory.py` as it was at git revision `ref`, loaded as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{ref}:llmasos/services/memory.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f"memory_at_{ref}")
    sys.modules[module.__name__] = module  # its dataclasses look their module up there
    exec(compile(source, f"{ref}:llmasos/services/memory.py", "exec"), module.__dict__)
    return module


@contextlib.contextmanager
def assembled_by(module: types.ModuleType | None) -> Iterator[None]:
    """Responses assembled by `module`'s `assemble` inside the block (None: today's)."""
    from llmasos.services import responses as flow

    if module is None:
        yield
        return
    today = flow.assemble
    flow.assemble = module.assemble
    try:
        yield
    finally:
        flow.assemble = today


def ask_with_memory(syscalls, app, model: str, last: str, question: str, max_out: int) -> tuple[str, dict]:
    from llmasos.services import summaries

    body, explain = respond(
        syscalls, app, model, question, previous_response_id=last, max_output_tokens=max_out, temperature=0
    )
    summaries.wait_idle(SUMMARY_WAIT)  # a summary the answer asked for is in place before the next call
    return "".join(p["text"] for item in body["output"] for p in item["content"]), explain


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


def replay(syscalls, app, model: str, turns: list[dict], args, state: dict) -> None:
    """The turns into one conversation as items (no answer per turn), its memory paged every
    `--page-every` turns (summaries written by the background summarizer, waited for); then one
    response to the last turn, for the questions to chain to. Goes on from where `state` (the
    conversation, the turns replayed, assembly ms per paging, errors, seconds) stands, and records
    each step in it (and in `--state`), so a replay cut short can be resumed or ended early."""
    from llmasos.errors import LLMasOSError
    from llmasos.services import responses as flow
    from llmasos.services import summaries

    lines = [_line(t) for t in turns]
    state.setdefault("conversation_id", syscalls.create_conversation(app)["id"])
    conversation = state["conversation_id"]
    for start in range(state["replayed"], len(lines) - 1, args.page_every):
        began = time.perf_counter()
        upto = min(start + args.page_every, len(lines) - 1)
        try:
            for batch in range(start, upto, 20):
                items = [{"role": "user", "content": line} for line in lines[batch : min(batch + 20, upto)]]
                syscalls.add_conversation_items(app, conversation, items)
            started = time.perf_counter()
            flow.page(syscalls, app, model, conversation, args.max_output)
            state["costs"].append(1000 * (time.perf_counter() - started))
            summaries.wait_idle(SUMMARY_WAIT)
        except LLMasOSError as err:
            state["errors"] += 1
            print(f"error at turn {upto}: {err}", file=sys.stderr)
        state["replayed"] = upto
        state["replay_s"] += time.perf_counter() - began
        _record(args, state)
        print(f"  replayed {upto}/{len(turns)} turns at {time.strftime('%H:%M:%S')}", file=sys.stderr)
    began = time.perf_counter()
    body, explain = respond(
        syscalls,
        app,
        model,
        lines[-1],
        conversation=conversation,
        max_output_tokens=args.max_output,
        temperature=0,
    )
    state["costs"].append(explain["assembly_ms"])
    state["last"] = body["id"]
    _record(args, state)  # before the wait: a run cut short in it goes on without answering again
    summaries.wait_idle(SUMMARY_WAIT)
    state["replay_s"] += time.perf_counter() - began
    _record(args, state)


def _record(args, state: dict) -> None:
    if args.state:
        args.state.write_text(json.dumps(state))


def replayed(syscalls, app, model: str, turns: list[dict], args) -> dict:
    """The replay's state (last response id, assembly ms, errors, seconds): replayed now, or taken
    from `--state` as an earlier run on the same home left it (the conversation and its responses
    are kept there) and finished if it was cut short, so the questions can be asked again without
    replaying. `--turns` equal to the turns a cut-short replay reached ends it there."""
    key = {"model": model, "conversation": args.conversation, "window": args.window}
    state = key | {"replayed": 0, "costs": [], "errors": 0, "replay_s": 0.0}
    if args.state and args.state.exists():
        state = json.loads(args.state.read_text())
        if {k: state.get(k) for k in key} != key:
            raise SystemExit(f"{args.state} records another replay: {state}")
        if state["replayed"] > len(turns) - 1 or (state.get("last") and state["replayed"] != len(turns) - 1):
            raise SystemExit(f"{args.state} holds {state['replayed'] + 1} turns, not {len(turns)}")
        print(f"going on from the replay recorded in {args.state}", file=sys.stderr)
    if not state.get("last"):
        replay(syscalls, app, model, turns, args, state)
    else:  # a summary the replay's end asked for is written before the questions, as after a replay
        from llmasos.services import responses as flow
        from llmasos.services import summaries

        flow.page(syscalls, app, model, state["conversation_id"], args.max_output)
        summaries.wait_idle(SUMMARY_WAIT)
    return state


def _line(turn: dict) -> str:
    return f"{turn['speaker']} ({turn['date']}): {turn['text']}"


def select_questions(qa: list[dict], replayed: set[str], args: argparse.Namespace) -> list[dict]:
    """The questions of categories 1-4 whose evidence was replayed: all of them, or `--per-category`
    of each category (the first ones, in the data's order), in an order shuffled by `--shuffle SEED`
    if given, then `--skip` and `--questions`."""
    eligible = [
        q
        for q in qa
        if q.get("category") in CATEGORIES
        and q.get("evidence")
        and all(e in replayed for e in q["evidence"])
        and "answer" in q
    ]
    if args.per_category:
        taken = Counter()
        balanced = []
        for q in eligible:
            if taken[q["category"]] < args.per_category:
                taken[q["category"]] += 1
                balanced.append(q)
        eligible = balanced
    if args.shuffle is not None:  # a run cut short is then a sample of the whole conversation
        random.Random(args.shuffle).shuffle(eligible)
    eligible = eligible[args.skip :]
    return eligible[: args.questions] if args.questions else eligible


def ask_all(
    syscalls,
    app,
    model: str,
    last: str,
    lines: list[str],
    questions: list[dict],
    args,
    before: types.ModuleType | None = None,
) -> list[dict]:
    """Each question with memory (chained to the replay), with memory as at `--before-ref` if given,
    and with the last turns only; one row each."""
    rows = []
    for number, q in enumerate(questions, 1):
        answer = str(q["answer"])
        with_memory, explain = ask_with_memory(syscalls, app, model, last, q["question"], args.max_output)
        without = last_turns_only(syscalls, app, model, lines, q["question"], args.window, args.max_output)
        row = {
            "model": model,
            "conversation": args.conversation,
            "question": q["question"],
            "answer": answer,
            "category": CATEGORIES[q["category"]],
            "assembly_ms": explain["assembly_ms"],
            "instructions": INSTRUCTIONS,
            "memory": with_memory,
            "last_turns": without,
            "memory_f1": token_f1(with_memory, answer),
            "last_turns_f1": token_f1(without, answer),
            "memory_contains": contains(with_memory, answer),
            "last_turns_contains": contains(without, answer),
        }
        if before is not None:
            with assembled_by(before):
                earlier, _ = ask_with_memory(syscalls, app, model, last, q["question"], args.max_output)
            row |= {
                "before_ref": args.before_ref,
                "before": earlier,
                "before_f1": token_f1(earlier, answer),
                "before_contains": contains(earlier, answer),
            }
        rows.append(row)
        if args.out:  # row by row, so that a run cut short keeps what it measured
            with args.out.open("a") as out:
                out.write(json.dumps(row) + "\n")
        print(f"  question {number}/{len(questions)}", file=sys.stderr)
    return rows


def print_table(rows: list[dict]) -> None:
    """Mean token F1, containment and all-words containment (percent) per category and over all,
    scored from the replies kept in the rows: memory beside last turns, and beside memory as at
    `--before-ref` when the rows have it."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["category"]].append(row)
        groups["all"].append(row)
    arms = [("memory", "memory"), ("last", "last_turns")]
    if all("before" in r for r in rows):
        arms.insert(1, (f"before {rows[0]['before_ref']}", "before"))
    print(
        f"{'category':12} {'n':>3}  "
        + "  ".join(f"{name + ' ' + score:>20}" for name, _ in arms for score in SCORES)
    )
    for group, members in sorted(groups.items(), key=lambda kv: kv[0] != "all"):
        cells = [
            100 * statistics.mean(score(r[key], r["answer"]) for r in members)
            for _, key in arms
            for score in SCORES.values()
        ]
        print(f"{group:12} {len(members):>3}  " + "  ".join(f"{cell:>20.1f}" for cell in cells))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--conversation", default="conv-26")
    parser.add_argument("--model", default="default")
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument(
        "--turns",
        type=int,
        default=0,
        help="replay the first N turns (0: all): N-1 as items, 1 answered",
    )
    parser.add_argument("--questions", type=int, default=0, help="at most N questions (0: all)")
    parser.add_argument("--per-category", type=int, default=0, help="the first N questions of each category")
    parser.add_argument("--shuffle", type=int, help="ask the questions in an order shuffled by this seed")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N selected questions")
    parser.add_argument("--page-every", type=int, default=40, help="page the memory every N turns")
    parser.add_argument("--max-output", type=int, default=24)
    parser.add_argument(
        "--before-ref", help="also ask with the context assembly of this git revision (before/after)"
    )
    parser.add_argument(
        "--state", type=Path, help="record the replay here, or reuse the one recorded (same home)"
    )
    parser.add_argument("--replay-only", action="store_true", help="replay (and record), ask nothing")
    parser.add_argument("--instructions", help="the answer's instructions (default: the short-phrase ones)")
    parser.add_argument("--out", type=Path, help="append one JSON line per question to this file")
    parser.add_argument(
        "--report", type=Path, nargs="+", help="only print the table of the JSON lines of earlier runs"
    )
    args = parser.parse_args()
    if args.instructions:  # every arm's, for a before/after of the prompt on one replay
        globals()["INSTRUCTIONS"] = args.instructions
    if args.report:
        rows = [json.loads(line) for path in args.report for line in path.read_text().splitlines()]
        for model, instructions in sorted({(r["model"], r.get("instructions", "")) for r in rows}):
            print(f"model {model}, instructions {instructions[:60]!r}...")
            print_table([r for r in rows if (r["model"], r.get("instructions", "")) == (model, instructions)])
        return

    record = json.loads((args.data / f"{args.conversation}.json").read_text())
    turns = turns_of(record.get("conversation", record))
    if args.turns:
        turns = turns[: args.turns]
    questions = select_questions(record.get("qa", []), {t["dia_id"] for t in turns}, args)

    before = memory_module_at(args.before_ref) if args.before_ref else None  # before a long replay
    syscalls, app = boot(args.window)
    model = syscalls.resolve_model(args.model)
    state = replayed(syscalls, app, model, turns, args)
    last, costs, errors, replay_s = state["last"], state["costs"], state["errors"], state["replay_s"]
    if args.replay_only:
        print(f"model {model}: {len(turns)} turns replayed in {replay_s:.0f} s, errors {errors}")
        syscalls.stop()
        return
    rows = ask_all(syscalls, app, model, last, [_line(t) for t in turns], questions, args, before)
    costs += [r["assembly_ms"] for r in rows]
    print(
        f"model {model}, window {args.window}, {args.conversation}: {len(turns)} turns replayed "
        f"in {replay_s:.0f} s, errors {errors}; {len(rows)} questions"
    )
    print(
        f"context assembly per paging/response: p50 {statistics.median(costs):.1f} ms, "
        f"max {max(costs):.1f} ms ({len(costs)})"
    )
    print_table(rows)
    syscalls.stop()


if __name__ == "__main__":
    main()
