"""The peers benchmark's arithmetic: combining rounds and taking ratios (the engines' runs are the
benchmark's own business; these are what turns them into the printed figures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.peers import cli, figures, machine, ratios, report, workers
from benchmarks.peers.trace import Trace
from benchmarks.peers.workload import Workload


def _round(ours: float, same: float, faster: float, transformers: float, note: str) -> dict:
    return {
        "llmasos": {"b32": {"tok_s": ours, "tokens_first": [1, 2, 3]}, "notes": [note]},
        "llamacpp:Q4_1": {"b32": {"tok_s": same}, "notes": []},
        "llamacpp:Q8_0": {"b32": {"tok_s": faster}, "notes": []},
        "transformers": {"b32": {"tok_s": transformers}, "notes": []},
    }


def test_rounds_merge_to_medians_with_notes_pooled_and_token_ids_kept() -> None:
    rounds = [
        _round(300, 150, 200, 100, "slow"),
        _round(420, 160, 260, 140, "fast"),
        _round(390, 170, 250, 150, "slow"),
    ]
    merged = ratios.merge_rounds(rounds)
    assert merged["llmasos"]["b32"]["tok_s"] == 390
    assert merged["llamacpp:Q8_0"]["b32"]["tok_s"] == 250
    assert merged["llmasos"]["notes"] == ["slow", "fast"]
    assert merged["llmasos"]["b32"]["tokens_first"] == [1, 2, 3]


def test_counts_stay_whole_numbers() -> None:
    rounds = [
        {"llmasos": {"context_tokens": 2050, "ms": 1.0}},
        {"llmasos": {"context_tokens": 2052, "ms": 2.0}},
    ]
    merged = ratios.merge_rounds(rounds)["llmasos"]
    assert merged["context_tokens"] == 2050 and merged["ms"] == 1.5


def test_a_figure_missing_from_one_round_takes_the_others() -> None:
    rounds = [{"llmasos": {"prefill": {"tok_s": 400}}}, {"llmasos": {"notes": ["prefill failed"]}}]
    merged = ratios.merge_rounds(rounds)
    assert merged["llmasos"]["prefill"]["tok_s"] == 400
    assert merged["llmasos"]["notes"] == ["prefill failed"]


def test_one_round_is_reported_as_it_ran() -> None:
    only = _round(300, 150, 200, 100, "x")
    assert ratios.merge_rounds([only]) is only


def test_ratios_are_taken_within_each_round_then_combined() -> None:
    wl = Workload(batch_sizes=(32,))
    rounds = [_round(300, 150, 200, 100, ""), _round(420, 160, 260, 140, ""), _round(390, 170, 250, 150, "")]
    per_round = [ratios.summarize(r, wl, "llamacpp:Q4_1") for r in rounds]
    medians, ranges = ratios.ratio_medians(per_round)
    # Against the faster llama.cpp file: 300/200, 420/260, 390/250 (not the ratio of the medians).
    assert medians["b32_vs_llamacpp"] == pytest.approx(390 / 250)
    assert ranges["b32_vs_llamacpp"] == pytest.approx((300 / 200, 420 / 260))
    assert medians["b32_vs_same_file"] == pytest.approx(390 / 170)  # of 2.0, 2.625, 2.29
    assert medians["b32_vs_transformers"] == pytest.approx(3.0)
    assert medians["prefill_vs_llamacpp"] is None and "prefill_vs_llamacpp" not in ranges


def test_the_report_names_the_cpu_and_its_vector_extensions() -> None:
    line = machine.cpu_description()
    assert "logical CPUs" in line
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo here")
    lines = cpuinfo.read_text().splitlines()
    flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    for flag in ("avx2", "avx512_vnni", "avx512_bf16"):
        assert (flag in line.split(", ")) == (flag in flags), (flag, line)


def test_the_floors_are_judged_on_the_same_file_and_then_against_the_faster_one(capsys) -> None:
    """Issue 3 measures llama.cpp on LLMasOS's own GGUF file: 400 ÷ 150 passes its 32-sequence floor of 2
    there, while against the faster file (400 ÷ 250) the same floor fails, and the report says both."""
    wl = Workload(batch_sizes=(32,))
    results = _round(400, 150, 250, 100, "")
    summary = ratios.summarize(results, wl, "llamacpp:Q4_1")
    args = cli.parse_args([])
    args.model_path, args.machine, args.notes, args.same_file = "m.Q4_1.gguf", "a CPU", [], "llamacpp:Q4_1"
    report.print_report(results, summary, wl, args)
    printed = capsys.readouterr().out
    verdicts = printed.split("floors (goal), llama.cpp on the same GGUF file (Q4_1)")[1]
    issue, faster = (part.splitlines() for part in verdicts.split("faster file"))
    b32 = [line for line in issue if "32-concurrent ÷ llama.cpp" in line]
    assert len(b32) == 1 and "2.67" in b32[0] and b32[0].endswith("PASS")
    b32 = [line for line in faster if "32-concurrent ÷ llama.cpp" in line]
    assert len(b32) == 1 and "1.60" in b32[0] and b32[0].endswith("FAIL")
    assert any("32-concurrent ÷ transformers" in line and line.endswith("PASS") for line in issue)


def test_single_stream_tokens_come_from_the_same_prompt_whichever_repeat_was_faster() -> None:
    class Peer:
        def __init__(self) -> None:
            self.runs = 0

        def run(self, prompts: list[list[int]], new_tokens: int):
            self.runs += 1
            trace = Trace(0.0)
            step = 1.0 / self.runs  # the second repeat runs twice as fast
            for i in range(3):
                trace.record(step * (i + 1), {0: prompts[0][0] + i})
            return trace

    wl = Workload(repeats=2)
    figure = figures.fig_single_stream(Peer(), {"single-0": [10], "single-1": [20]}, wl)
    assert figure["tok_s"] == pytest.approx(2.0)  # the faster repeat's rate (1 token per 0.5 s)
    assert figure["tokens"] == [10, 11, 12]  # the first prompt's tokens


def test_the_entry_point_that_workers_run_parses_the_command_line() -> None:
    """Workers are this script again with `--worker`: it must start from outside the package's folder."""
    done = subprocess.run(
        [sys.executable, str(workers.ENTRY_POINT), "--help"],
        capture_output=True,
        text=True,
        cwd=Path(workers.ENTRY_POINT).anchor,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--rounds" in done.stdout and "--engine-option" in done.stdout


def test_model_takes_a_gguf_path_without_pulling_anything(tmp_path: Path) -> None:
    model = tmp_path / "other-model.Q4_K_M.gguf"
    model.write_bytes(b"GGUF")
    args = cli.parse_args(["--model", str(model)])
    assert cli.fetch_model(args) == model and args.model_path == str(model)
    assert cli.parse_args([]).model == "default"


def test_model_by_an_unknown_name_is_refused_by_the_library() -> None:
    from llmasos.errors import LLMasOSError

    with pytest.raises(LLMasOSError):
        cli.fetch_model(cli.parse_args(["--model", "no-such-model-here"]))


def test_each_engine_gets_the_range_of_its_figures_over_the_rounds(capsys) -> None:
    rounds = [
        {"llmasos": {"single": {"tok_s": v}, "load_s": w, "load_cold_s": c}}
        for v, w, c in ((30.0, 1.0, 3.0), (36.0, 1.4, 2.0), (33.0, 1.2, 9.0))
    ]
    merged = ratios.merge_rounds(rounds)
    ratios.add_ranges(merged, rounds)
    llmasos = merged["llmasos"]
    assert llmasos["single"]["tok_s"] == 33.0 and llmasos["load_cold_s"] == 3.0
    want = {"single.tok_s": (30.0, 36.0), "load_s": (1.0, 1.4), "load_cold_s": (2.0, 9.0)}
    assert llmasos["ranges"] == want
    assert report.cell(merged, "llmasos", ("single", "tok_s"), ".0f") == "33 (30-36)"
    one = {"llmasos": {"single": {"tok_s": 30.0}}}
    ratios.add_ranges(one, [one])  # one round: no range to print
    assert report.cell(one, "llmasos", ("single", "tok_s"), ".0f") == "30"


def test_a_cold_load_drops_the_files_pages_and_skips_missing_ones(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"x" * 8192)
    assert workers.drop_pages(model, tmp_path / "absent.int4.pt") == 1


def test_repeats_is_the_number_of_rounds() -> None:
    assert cli.parse_args(["--repeats", "3", "--quick"]).rounds == 3


def test_a_long_file_name_in_a_header_keeps_its_end_and_a_space_before_it() -> None:
    label = "llama.cpp qwen2.5-coder-1.5b-instruct-q4_k_m"
    cells = [report.fit_column("LLMasOS", 22), report.fit_column(label, 22), report.fit_column("÷ q4_k_m", 9)]
    assert [len(cell) for cell in cells] == [22, 22, 9]
    assert all(cell.startswith(" ") for cell in cells)
    assert cells[1].endswith("instruct-q4_k_m") and cells[1].strip().startswith("…")
    assert cells[0].strip() == "LLMasOS" and cells[2].strip() == "÷ q4_k_m"
