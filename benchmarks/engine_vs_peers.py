"""LLMasOS against its peers: llama.cpp (as shipped and re-quantized) and Hugging Face transformers.

The entry point: the benchmark lives in `benchmarks/peers/` (`peers/cli.py` says what it measures).

    .venv/bin/python benchmarks/engine_vs_peers.py [--threads 2] [--quick] [--only llmasos,llamacpp]
                                                   [--requant Q8_0] [--engine-option FIELD=VALUE]
                                                   [--rounds N] [--json out.json]
"""

from peers.cli import main

if __name__ == "__main__":
    main()
