"""The RSS breakdown's reading of /proc/<pid>/smaps: each mapping summed into the right row."""

from __future__ import annotations

from pathlib import Path

from benchmarks.peers.rss import KnownRegion, breakdown, classify, read_smaps, reset_peak_rss

SMAPS = """\
55d0a0000000-55d0a4000000 rw-p 00000000 00:00 0                          [heap]
Size:              65536 kB
Rss:               40000 kB
Shared_Clean:          0 kB
7f0000000000-7f0002000000 rw-s 00000000 00:01 1234                       /dev/zero (deleted)
Size:              32768 kB
Rss:                8192 kB
Shared_Clean:          0 kB
7f0010000000-7f0014000000 r-xp 00000000 fe:00 42     /venv/site-packages/torch/lib/libtorch_cpu.so
Size:              65536 kB
Rss:               30000 kB
Shared_Clean:      29000 kB
7f0020000000-7f0020800000 rw-p 00000000 00:00 0
Size:               8192 kB
Rss:                  64 kB
Shared_Clean:          0 kB
7f0030000000-7f0031000000 rw-p 00000000 00:00 0
Size:              16384 kB
Rss:               12000 kB
Shared_Clean:          0 kB
"""


def test_mappings_are_summed_by_kind_and_known_tensors_are_found_by_address(tmp_path: Path) -> None:
    smaps = tmp_path / "smaps"
    smaps.write_text(SMAPS)
    mappings = read_smaps(str(smaps))
    assert [m.rss_kb for m in mappings] == [40000, 8192, 30000, 64, 12000]
    kv_pool = KnownRegion("KV pool", 0x7F0000000000, 32 * 2**20)  # the shared anonymous map
    rows = [classify(m, [kv_pool], ("/models/m.gguf",)) for m in mappings]
    assert rows == [
        "anon: C heap (brk: malloc's main arena)",
        "anon: KV pool",
        "file: torch (.so and data)",
        "anon: thread stacks (8 MiB maps)",
        "anon: other (malloc arenas, large mmaps: torch tensors, Rust heap)",
    ]
    assert mappings[2].shared_clean_kb == 29000


def test_breakdown_of_this_process_adds_up_to_its_rss() -> None:
    rows = breakdown([], ())
    total_kb = sum(row["rss"] for row in rows.values())
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    rss_kb = int(status["VmRSS"].split()[0])
    assert abs(total_kb - rss_kb) <= max(2048, rss_kb // 20)  # the two reads are moments apart


def test_the_peak_is_reset_to_this_moment_so_a_stage_reads_its_own_peak() -> None:
    import mmap

    def status_kb(field: str) -> int:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field))
        return int(line.split()[1])

    pages = mmap.mmap(-1, 64 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    pages.write(b"x" * (64 << 20))  # 64 MB resident, then given back: the high-water mark keeps them
    pages.close()
    assert status_kb("VmHWM") - status_kb("VmRSS") >= 60 << 10
    assert reset_peak_rss()
    assert status_kb("VmHWM") - status_kb("VmRSS") < 8 << 10
