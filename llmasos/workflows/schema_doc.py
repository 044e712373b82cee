"""Write the published JSON Schema of a workflow: `python -m llmasos.workflows.schema_doc [PATH]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llmasos.workflows.spec import json_schema

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "docs" / "workflow.schema.json"


def main(path: Path = DEFAULT_PATH) -> None:
    path.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH)
