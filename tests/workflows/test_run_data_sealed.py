"""A workflow run's data (inputs, step results, large results in blob files, the run's output) is
sealed under its app's data key: readable through the runner, never in the clear on disk, and
unreadable once the app's key is shredded."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmasos.data.app_data import delete_app_data
from llmasos.errors import DecryptionError
from llmasos.security import master_key
from llmasos.workflows import RunStore, parse
from tests.helpers.workflows import Calls, make_runner

CANARY = "wombat-canary-9931"


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(master_key.ENV_VAR, raising=False)


def test_run_data_is_sealed_and_shredded_with_the_app(llmasos_home: Path) -> None:
    runner, app = make_runner(Calls())
    spec = {
        "name": "t",
        "inputs": {"text": {"type": "string"}},
        "steps": {
            "shout": {"kind": "function", "name": "upper", "input": {"text": "{{ inputs.text }}"}},
        },
        "output": {"loud": "{{ steps.shout.output.text }}"},
    }
    try:
        text = (CANARY + " ") * 4000  # 76 kB: the step's result goes to a blob file
        run_id = runner.submit(app, parse(spec), {"text": text})
        done = runner.wait(run_id, 20)
        assert done["status"] == "succeeded", done
        assert done["output"] == {"loud": text.upper()}
        assert RunStore().run(run_id)["inputs"] == {"text": text}
        assert any((llmasos_home / "workflow-blobs").iterdir())
        on_disk = [p for p in llmasos_home.rglob("*") if p.is_file()]
        for needle in (CANARY.encode(), CANARY.upper().encode()):
            assert [p.name for p in on_disk if needle in p.read_bytes()] == []
        delete_app_data(app.identity)
        with pytest.raises(DecryptionError, match="data key was destroyed"):
            RunStore().run(run_id)
    finally:
        runner.close()
