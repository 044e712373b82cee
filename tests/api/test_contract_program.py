"""The SDK's promise, run exactly as the issue writes it, in a fresh Python process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from llmasos.library.store import ModelStore

pytestmark = pytest.mark.real_model

TEXT = (
    "The city council met on Tuesday to approve next year's budget. Spending on parks rises by ten "
    "percent, while road repairs are cut by the same amount. Several residents spoke against the cuts, "
    "saying that potholes on Main Street already damage cars and that the bus route through the old "
    "town has been slowed by broken pavement for two winters. The council's finance chair answered "
    "that the parks had been neglected for a decade, that playgrounds in three neighbourhoods were "
    "closed for safety reasons, and that a state grant would pay for part of the road work if the city "
    "applied before March. A local business owner asked whether the new budget would raise property "
    "taxes; the chair said it would not, because the savings come from delaying the new city hall "
    "annex. After two hours of debate the budget passed six votes to three. The mayor promised to "
    "review the road budget in the spring, once the grant decision is known, and to publish a list of "
    "the streets that will be repaired first."
)
PROGRAM = "import llmasos; client = llmasos.Client(); print(client.call('summarize', text))"


def test_the_sdk_one_liner_summarizes_with_an_in_process_kernel(default_gguf_path, llmasos_home):
    ModelStore().pull(str(default_gguf_path), name="smollm2-135m-instruct", progress=False)
    result = subprocess.run(
        [sys.executable, "-c", f"text = {TEXT!r}\n{PROGRAM}"],
        env={**os.environ, "LLMASOS_HOME": str(llmasos_home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = result.stdout.strip()
    assert 20 < len(summary) < len(TEXT)
    assert any(word in summary.lower() for word in ("budget", "council", "road", "park"))
