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
    "percent, while road repairs are cut. Several residents spoke against the cuts, saying that potholes "
    "on Main Street already damage cars. The mayor promised to review the road budget in the spring."
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
