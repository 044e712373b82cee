"""The peers benchmark (`benchmarks/engine_vs_peers.py`): LLMasOS against llama.cpp and transformers.

- `cli`: the command line and the run (model, workers, rounds); its docstring says what is measured.
- `workload`: the sizes of every figure and the prompts every engine gets.
- `engines`: the engines compared, each turning prompts into a `trace.Trace`.
- `figures`: what is measured of one engine (or of the machine's memory bandwidth).
- `workers`: one engine per process, spawned by the parent.
- `ratios`: rounds combined and ratios LLMasOS ÷ peer.
- `report`: the printed table and the floors' verdicts.
- `machine`: the CPU the figures came from, and what is installed.

Modules import one another relatively, so the package works both as `peers` (the entry point puts
`benchmarks/` first on the path) and as `benchmarks.peers` (the tests).
"""
