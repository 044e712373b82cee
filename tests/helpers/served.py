"""Real `llmasos serve` and `llmasos` processes, started as a user starts them from a shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]

# Runs `llmasos ARGS` and, on the way out, writes the names of every module the process imported to
# the file given first: what a CLI process loaded is then a fact a test can check.
_RECORDING_MAIN = """
import atexit, json, sys
record_to, sys.argv = sys.argv[1], ["llmasos", *sys.argv[2:]]
atexit.register(lambda: open(record_to, "w").write(json.dumps(sorted(sys.modules))))
from llmasos.cli.main import main
main()
"""


def environment(home: Path) -> dict[str, str]:
    """This environment with `home` as LLMASOS_HOME and this checkout's sources first on the path."""
    return {**os.environ, "LLMASOS_HOME": str(home), "PYTHONPATH": str(REPO)}


@dataclass
class Served:
    """A `llmasos serve` process."""

    process: subprocess.Popen
    url: str
    home: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()  # as Ctrl-C does: uvicorn shuts down, `serve` cleans up
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_serve(home: Path, port: int, *args: str, timeout: float = 180.0) -> Served:
    """`llmasos serve --port PORT ARGS` under `home`, once it answers /healthz and has recorded itself."""
    log = home.parent / f"serve-{port}-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmasos.cli.main", "serve", "--port", str(port), *args],
            env=environment(home),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    served = Served(process, f"http://127.0.0.1:{port}", home, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llmasos serve exited with {process.returncode}:\n{served.output()}")
        if (home / "server.json").exists():
            try:
                if httpx.get(served.url + "/healthz", timeout=2).json().get("status") == "ok":
                    return served
            except (httpx.HTTPError, ValueError):
                pass
        time.sleep(0.2)
    served.stop()
    raise RuntimeError(f"llmasos serve did not start in {timeout:.0f} s:\n{served.output()}")


def run_llmasos(
    home: Path, *args: str, stdin: str = "", timeout: float = 300.0
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`llmasos ARGS` in its own process under `home`: (its result, the modules it imported)."""
    record = home.parent / f"modules-{time.monotonic_ns()}.json"
    result = subprocess.run(
        [sys.executable, "-c", _RECORDING_MAIN, str(record), *args],
        env=environment(home),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, json.loads(record.read_text())
