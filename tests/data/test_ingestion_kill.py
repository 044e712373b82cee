"""Ingestion survives `kill -9`: a child process runs what `llmasos serve` runs for documents (the
upload's and the attachment's writes, then the background `Ingestor`, resumed on start as the
server's startup does) and prints each file id once both writes have returned, as the HTTP answer
would acknowledge them. It is SIGKILLed at random points, restarted on the same home, killed again;
after every kill, every acknowledged file is there, and every file is either completed with all its
chunks searchable or in progress with none (never half ingested shown as complete); a last resume
completes them all."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from llmasos.data.app_data import app_data
from llmasos.data.ingest import Ingestor
from llmasos.data.search import SearchOptions, search
from llmasos.data.vector_stores import create_store
from tests.helpers.fake_embedder import HashingEmbedder

OWNER = "name:durable"
KILLS = 2  # each a fresh child (about 1 s of the suite), then a last resume in this process
PARAGRAPHS = 60  # two 8-token paragraphs per 16-token chunk: 30 chunks a file, in batches of 16

CHILD = f"""
import sys, time
import llmasos.data.ingest as ingest
from llmasos.data.app_data import app_data
from llmasos.data.files import create_file
from llmasos.data.ingest import Ingestor
from llmasos.data.vector_stores import attach_files
from llmasos.data.chunking import ChunkingStrategy
from tests.helpers.fake_embedder import HashingEmbedder

ingest.EMBED_BATCH = 16  # several batches (and progress writes) a file, so kills land mid-file


class SlowEmbedder(HashingEmbedder):
    def embed(self, texts):
        time.sleep(0.001 * len(texts))  # a model's pace, so that files queue up behind each other
        return super().embed(texts)


embedder = SlowEmbedder()
ingestor = Ingestor(lambda: embedder)
data, store_id, first = app_data({OWNER!r}), sys.argv[1], int(sys.argv[2])
ingestor.resume()  # as the server's startup does
for n in range(first, first + 1000):
    text = f"# Document {{n}}\\n\\n" + "\\n\\n".join(
        f"Paragraph {{p}} of document {{n}} mentions marker{{n}}x." for p in range({PARAGRAPHS})
    )
    file = create_file(data, f"doc{{n}}.md", text.encode())
    attach_files(data, store_id, [file["id"]], None, ChunkingStrategy(16, 0))
    ingestor.submit({OWNER!r}, store_id, file["id"])
    print("acked", n, file["id"], flush=True)
"""


def _run_until_killed(env: dict, store_id: str, first: int, rng: random.Random) -> dict[str, int]:
    """Start the child, let it acknowledge a random number of files, wait a random moment, kill -9;
    the files it acknowledged (id -> number)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, store_id, str(first)], env=env, stdout=subprocess.PIPE, text=True
    )
    acked, wanted = {}, rng.randint(2, 6)
    deadline = time.monotonic() + 60
    while len(acked) < wanted and time.monotonic() < deadline:
        line = child.stdout.readline()
        if line.startswith("acked"):
            _, n, file_id = line.split()
            acked[file_id] = int(n)
    time.sleep(rng.uniform(0, 0.3))
    os.kill(child.pid, signal.SIGKILL)
    for line in child.stdout.read().splitlines():  # written before the kill, not yet read
        if line.startswith("acked"):
            _, n, file_id = line.split()
            acked[file_id] = int(n)
    child.wait()
    assert acked, "the child acknowledged nothing before it was killed"
    return acked


def _check_nothing_half_ingested(store_id: str, acked: dict[str, int], seed: int) -> dict[str, str]:
    """Every acknowledged file is there; each is completed with all its chunks, and found, or in
    progress with none. Each file's status."""
    data = app_data(OWNER)
    rows = data.db.execute(
        "SELECT sf.file_id, sf.status, sf.chunks_total, (SELECT count(*) FROM chunks c WHERE "
        "c.store_id = sf.store_id AND c.file_id = sf.file_id) AS stored FROM store_files sf "
        "WHERE sf.store_id = ?",
        (store_id,),
    )
    status = {r["file_id"]: r["status"] for r in rows}
    chunks = {r["file_id"]: r["chunks_total"] for r in rows}
    assert set(acked) <= set(status), f"seed {seed}: acknowledged files lost: {set(acked) - set(status)}"
    for row in rows:
        if row["status"] == "completed":
            assert row["stored"] == row["chunks_total"] > 0, f"seed {seed}: {dict(row)}"
        else:
            assert row["status"] == "in_progress" and row["stored"] == 0, f"seed {seed}: {dict(row)}"
    for file_id, n in acked.items():
        hits = search(data, store_id, f"marker{n}x", None, SearchOptions(max_results=50, mode="bm25"))
        found = {h.file_id for h in hits}
        assert found == ({file_id} if status[file_id] == "completed" else set()), f"seed {seed}: {n}"
        if status[file_id] == "completed":
            assert len(hits) == chunks[file_id] == PARAGRAPHS // 2
    return status


def test_kill_9_during_ingestion_loses_no_acknowledged_file_and_shows_none_half_done(
    llmasos_home: Path,
) -> None:
    env = {**os.environ, "LLMASOS_HOME": str(llmasos_home), "PYTHONPATH": str(Path(__file__).parents[2])}
    store_id = create_store(app_data(OWNER), "durable", None)["id"]
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    acked: dict[str, int] = {}
    states = []
    for kill in range(KILLS):
        # Each child numbers its documents from its own thousand: a child killed after writing a
        # file but before acknowledging it leaves that file (rightly) in the store, so the next
        # child must not reuse its number, whose marker would then be found in two files.
        acked |= _run_until_killed(env, store_id, 1 + 1000 * kill, rng)
        states.append(_check_nothing_half_ingested(store_id, acked, seed))
    assert any(s == "in_progress" for state in states for s in state.values()), (
        f"seed {seed}: no kill landed while a file was being ingested"
    )
    ingestor = Ingestor(HashingEmbedder)  # the last restart: everything left in progress completes
    assert ingestor.resume() == sum(s == "in_progress" for s in states[-1].values())
    deadline = time.monotonic() + 60
    while app_data(OWNER).db.execute("SELECT 1 FROM store_files WHERE status = 'in_progress'"):
        assert time.monotonic() < deadline, f"seed {seed}: resumed ingestion did not finish"
        time.sleep(0.05)
    ingestor.close()
    final = _check_nothing_half_ingested(store_id, acked, seed)
    assert set(final.values()) == {"completed"}, f"seed {seed}: {final}"
