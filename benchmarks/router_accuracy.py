"""The intent router on its held-aside set (tests/router/routing_cases.py): accuracy and misroutes,
with embeddings alone and with the default model settling close calls.

    .venv/bin/python benchmarks/router_accuracy.py [--margins 0.04 0.08 0.12]

Needs the default model in the library (`llmasos models pull default`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmasos.kernel.boot import boot
from llmasos.router import IntentRouter
from llmasos.router.decider import model_decider
from llmasos.security.admin import ensure_admin
from llmasos.tools.embed import load_embedder
from tests.router.routing_cases import CASES


def evaluate(router: IntentRouter, label: str) -> None:
    start = time.perf_counter()
    misses = []
    decided_by_model = 0
    for case in CASES:
        route = router.route(case.request, case.attachment)
        decided_by_model += route.decided_by == "model"
        if route.target != case.target:
            misses.append(f"{case.target} -> {route.target} ({route.decided_by}): {case.request[:60]!r}")
    elapsed = time.perf_counter() - start
    ok = len(CASES) - len(misses)
    print(
        f"{label}: {ok}/{len(CASES)} = {ok / len(CASES):.3f}  ({decided_by_model} settled by the model, "
        f"{elapsed / len(CASES) * 1000:.0f} ms per request)"
    )
    for miss in misses:
        print(f"    {miss}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--margins", type=float, nargs="*", default=[0.04, 0.08, 0.12])
    args = parser.parse_args()
    embedder = load_embedder()

    def embed(texts: list[str]) -> list[list[float]]:
        return embedder.embed(texts)[0]

    router = IntentRouter(embed)
    evaluate(router, "embeddings only")
    syscalls = boot()
    syscalls.kernel.start()
    app, _ = ensure_admin(syscalls.apps)
    try:
        for margin in args.margins:
            evaluate(
                IntentRouter(
                    embed, catalog=router.catalog, decide=model_decider(syscalls, app), margin=margin
                ),
                f"with the model on close calls (margin {margin})",
            )
    finally:
        syscalls.kernel.stop()


if __name__ == "__main__":
    main()
