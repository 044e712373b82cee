"""Third-party plugin packages written by a test: real wheels (with their `llmasos.plugins` entry
points) that pip installs, so plugins are found exactly as an installed package's would be."""

from __future__ import annotations

import base64
import hashlib
import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

from llmasos.programs import GROUP

#: A plugin with one service over the chat system call and one tool, written as its author would.
SHOUT_PLUGIN = '''
"""A plugin of the tests: `shout` (a service over the chat system call) and `reverse` (a tool)."""

from typing import ClassVar

from llmasos.services import Service
from llmasos.services.base import Call
from llmasos.tools import Tool, ToolResult


class Shout(Service):
    name = "shout"
    description = "Shout a message back in capital letters, with the model's exclamation after it."
    version = "0.1.0"
    examples: ClassVar[tuple[str, ...]] = (
        "Shout this at me",
        "Say this loudly in capital letters",
        "Yell this message",
    )
    input_schema: ClassVar[dict] = {"type": "string", "minLength": 1}
    params_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {"max_tokens": {"type": "integer", "minimum": 1, "maximum": 64, "default": 8}},
        "additionalProperties": False,
    }
    output_schema: ClassVar[dict] = {"type": "string"}

    def _run(self, session, input, params):
        done = session.chat(Call([{"role": "user", "content": f"Shout: {input}"}], params["max_tokens"]))
        return f"{input} {done.text}".upper(), {"finish_reason": done.finish_reason}


class Reverse(Tool):
    name = "reverse"
    description = "Reverse a text: its characters from the last to the first."
    examples: ClassVar[tuple[str, ...]] = (
        "Spell this backwards",
        "Reverse the letters of this word",
        "Write this string in reverse order",
    )
    parameters: ClassVar[dict] = {
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 40}},
        "required": ["text"],
        "additionalProperties": False,
    }
    result_schema: ClassVar[dict] = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    }

    def run(self, args, context):
        return ToolResult(self.name, {"text": args["text"][::-1]})


def register(registry):
    registry.register(Shout())
    registry.register(Reverse())
'''

BROKEN_PLUGIN = 'raise RuntimeError("this plugin is broken on purpose")\n'


def write_wheel(folder: Path, dist: str, version: str, module: str, source: str, entry_points: dict) -> Path:
    """A pure-Python wheel of one module (a package `module/__init__.py`) with `entry_points` in
    the plugin group."""
    stem = f"{dist.replace('-', '_')}-{version}"
    info = f"{stem}.dist-info"
    files = {
        f"{module}/__init__.py": source,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: llmasos-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        f"{info}/entry_points.txt": f"[{GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()),
    }
    record = [f"{path},sha256={_digest(text)},{len(text.encode())}" for path, text in files.items()]
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def _digest(text: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


def pip_install(wheels: list[Path], target: Path) -> None:
    """`pip install` the wheels (no dependencies, no index) into the folder `target`."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target)]
        + [str(w) for w in wheels],
        check=True,
        capture_output=True,
    )


def add_to_path(site: Path) -> None:
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()


def remove_from_path(site: Path, modules: tuple[str, ...]) -> None:
    sys.path.remove(str(site))
    for name in modules:
        sys.modules.pop(name, None)
    importlib.invalidate_caches()
