"""Apps of one latency-sensitive class through the real kernel on the tiny model: one app's many
streams cannot take the batch that another app's tokens wait for.

Reproduction (issue 20, `benchmarks/abuse.py --attackers-class same`): with the attacking apps in the
calm app's class (interactive), 16 never-read streams held 16 of the engine's slots beside the calm
app's 2, so every step the calm app's tokens waited for was a batch of 18.
"""

from __future__ import annotations

import pytest

from llmasos.engine.engine import LLMEngine
from llmasos.engine.sampling import SamplingParams
from llmasos.kernel.kernel import Kernel, KernelConfig
from llmasos.kernel.process import ProcessState
from llmasos.kernel.residency import ResidencyManager
from llmasos.kernel.syscalls import Syscalls
from llmasos.security.apps import App, AppRegistry
from tests.helpers.engines import config_with, random_prompts
from tests.kernel.sim import FakeClock

TICK_SECONDS = 0.01  # the fake clock's time per engine step


def tiny_kernel(tiny_loaded) -> tuple[FakeClock, LLMEngine, Kernel, Syscalls]:
    """A kernel on the tiny model with room for 32 sequences, on a fake clock."""
    clock = FakeClock()
    config = config_with(tiny_loaded, num_blocks=1024, max_num_seqs=32)
    engine = LLMEngine(tiny_loaded, config)
    residency = ResidencyManager(1 << 40, lambda name: (engine, 1), lambda name: 1)
    kernel = Kernel(residency, KernelConfig(engine=config), clock=lambda: clock.now)
    return clock, engine, kernel, Syscalls(kernel, AppRegistry())


def test_an_app_with_16_streams_holds_no_more_of_the_batch_than_one_with_2(tiny_loaded) -> None:
    clock, _, kernel, sys = tiny_kernel(tiny_loaded)
    flood, calm = App("flood", priority="interactive"), App("calm", priority="interactive")

    def tick() -> dict[str, int]:
        kernel.tick()
        clock.advance(TICK_SECONDS)
        running = [p for p in kernel.live.values() if p.state is ProcessState.RUNNING]
        return {app: sum(p.app == app for p in running) for app in ("flood", "calm")}

    long = SamplingParams(max_tokens=200, temperature=0, ignore_eos=True)
    for prompt in random_prompts([12] * 16, seed=5):
        sys.generate(flood, "tiny", prompt, long)
    assert [tick() for _ in range(3)][-1]["flood"] == 16  # alone in its class, it may take every slot

    def computed(app: str) -> int:
        return kernel.counters.snapshot()["apps"].get(app, {}).get("tokens_computed", 0)

    before = {app: computed(app) for app in ("flood", "calm")}
    held = []
    for round_ in range(3):  # two clients streaming back to back, pausing 30 ms between requests
        chat = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
        chats = [sys.generate(calm, "tiny", p, chat) for p in random_prompts([12, 12], seed=round_)]
        while not all(c.is_terminal for c in chats):
            held.append(tick())
        held += [tick() for _ in range(3)]
    assert max(h["flood"] for h in held) <= 2
    gained = {app: computed(app) - n for app, n in before.items()}
    assert gained["flood"] <= gained["calm"] * 1.25  # it had steps of its own in the calm app's pauses

    clock.advance(0.25)  # the calm app has been quiet longer than the latency hold
    assert tick()["flood"] == 16


def test_an_app_whose_tokens_attend_to_long_contexts_is_charged_their_work(tiny_loaded) -> None:
    """Fair share counts what tokens cost (engine/work_cost.py), not how many: an app of the calm
    app's class whose streams are deep in their context (each of its tokens reads far more keys and
    values) gets fewer of its tokens computed beside the calm app than it would by count, and its
    virtual time moves by what the engine said its tokens cost. (Before, by count, it kept pace: 96
    tokens to the calm app's 96 here.)"""
    clock, engine, kernel, sys = tiny_kernel(tiny_loaded)
    deep, calm = App("deep", priority="interactive"), App("calm", priority="interactive")
    assert engine.work_cost.decode(150) > 3 * engine.work_cost.decode(12)  # the tiny model's figures

    charged: dict[str, float] = {"deep": 0.0, "calm": 0.0}
    step = engine.step

    def step_and_note(request_ids=None):
        out = step(request_ids)
        for request_id in out.num_computed_tokens:
            charged[kernel.table[int(request_id)].app] += out.work_of(request_id)
        return out

    engine.step = step_and_note
    long = SamplingParams(max_tokens=80, temperature=0, ignore_eos=True)
    deep_streams = [sys.generate(deep, "tiny", p, long) for p in random_prompts([150, 150], seed=7)]
    while any(p.tokens_out == 0 for p in deep_streams):  # prefilled, alone
        kernel.tick()
        clock.advance(TICK_SECONDS)
    vtime = kernel._policies["tiny"].clock.vtime
    start = {app: (vtime(app), charged[app]) for app in charged}
    out_before = sum(p.tokens_out for p in deep_streams)
    calm_out = 0
    for round_ in range(4):
        chat = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
        chats = [sys.generate(calm, "tiny", p, chat) for p in random_prompts([12, 12], seed=round_)]
        while not all(c.is_terminal for c in chats):
            kernel.tick()
            clock.advance(TICK_SECONDS)
        calm_out += sum(c.tokens_out for c in chats)
    deep_out = sum(p.tokens_out for p in deep_streams) - out_before
    assert 0 < deep_out < calm_out / 2  # by count it kept pace (the test above: within 1.25x)
    # The policy's clock moved by the engine's figures (weight 1); the calm app's also jumped to the
    # floor when it became active, as any newcomer's does.
    assert vtime("deep") - start["deep"][0] == pytest.approx(charged["deep"] - start["deep"][1])
