"""The C++ kernels' outputs on fixed inputs, for a test that compares two builds of them bit for bit.

    python -m tests.helpers.kernel_outputs TINY_GGUF OUT.pt    (with LLMASOS_NATIVE_ISA=avx2, say)

Covers every path whose instructions differ between the AVX2 and the AVX-512 VNNI builds: the 4-bit,
int8, 8-bit grouped and 6-bit Q6_K GEMMs at 1-8 tokens (in place) and in panels (with a one-block rest
and tiles of every width), and the whole C++ forward step of a tiny model (4-bit, and 4-bit mixed with
8-bit grouped projections, and with 6-bit Q6_K ones) over a prompt in chunks and a decode step of three
sequences.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from llmasos.model.group_linear import Int8GroupLinear
from llmasos.model.llama import LlamaModel
from llmasos.model.loader import load_model
from llmasos.model.q6k_linear import Q6KLinear
from llmasos.model.quant_linear import Int4Linear, Int8Linear
from tests.helpers.step_meta import chunk_meta, decode_meta
from tests.helpers.tiny_model import MIXED, Q6K_MIXED, write_tiny_gguf


def random_groups(out_features: int, in_features: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random 8-bit groups of 16 (q int8, d > 0, m of either sign), as group_linear takes them."""
    q = torch.randint(-128, 128, (out_features, in_features), dtype=torch.int8)
    d = torch.rand(out_features, in_features // 16) * 2e-3 + 1e-4
    return q, d, (torch.rand(out_features, in_features // 16) - 0.5) * 0.1


def kernel_outputs(tiny_gguf: Path) -> dict[str, torch.Tensor]:
    """Every output, by name, computed with the kernels this process loads."""
    outputs: dict[str, torch.Tensor] = {}
    torch.manual_seed(0)
    for shape in ((48, 64), (576, 1536)):
        weight = torch.randn(*shape) * 0.05
        int4 = Int4Linear(weight, None, max_quant_tokens=8, keep_dense=False)
        int8 = Int8Linear(weight, None, max_quant_tokens=8, keep_dense=False)
        groups = Int8GroupLinear.from_groups(*random_groups(*shape), torch.randn(shape[0]))
        for n in (1, 2, 3, 4, 5, 8, 9, 70):
            x = torch.randn(n, shape[1]) * 3
            outputs[f"int4 {shape} x{n}"] = int4(x)
            outputs[f"int8 {shape} x{n}"] = int8(x)
            outputs[f"int8 groups {shape} x{n}"] = groups(x)
    for shape in ((48, 256), (576, 1536)):  # Q6_K blocks at 6 bits: q, sc of either sign, dsup
        out_features, in_features = shape
        q = torch.randint(0, 64, shape, dtype=torch.uint8)
        sc = torch.randint(-128, 128, (out_features, in_features // 16), dtype=torch.int8)
        six_bit = Q6KLinear.from_blocks(q, sc, torch.rand(out_features, in_features // 256) * 1e-3, None)
        for n in (1, 2, 3, 4, 5, 8, 9, 70):
            outputs[f"q6k {shape} x{n}"] = six_bit(torch.randn(n, in_features) * 3)

    model = load_model(tiny_gguf).model.quantize("int4", keep_dense=False)
    outputs.update(_steps(model, "int4"))
    with tempfile.TemporaryDirectory() as folder:  # 4-bit projections beside 8-bit grouped ones
        mixed, _ = write_tiny_gguf(Path(folder) / "mixed.gguf", MIXED)
        outputs.update(_steps(load_model(mixed, packed_format="int4").model, "mixed"))
        q6k, _ = write_tiny_gguf(Path(folder) / "q6k.gguf", Q6K_MIXED)  # 6-bit ffn_down among them
        outputs.update(_steps(load_model(q6k, packed_format="int4").model, "q6k"))
    return outputs


def _steps(model: LlamaModel, name: str) -> dict[str, torch.Tensor]:
    """The C++ forward step over a prompt in chunks and a decode step of three sequences."""
    assert model.native_layers is not None, "the C++ forward step is not in use"
    outputs = {}
    torch.manual_seed(1)
    c = model.config
    cache = torch.zeros(c.num_layers, 2, 3 * 32, c.num_kv_heads, c.head_dim, dtype=torch.bfloat16)
    lengths = [23, 9, 2]
    done = {b: 0 for b in range(3)}
    prompts = [torch.randint(0, c.vocab_size, (n,)) for n in lengths]
    for step, sizes in enumerate(([16, 9, 2], [7, 0, 0])):  # chunks of prompts, then one prompt's tail
        seqs = [b for b in range(3) if sizes[b]]
        contexts = [b * 32 + torch.arange(done[b] + sizes[b]) for b in seqs]
        meta = chunk_meta(contexts, [sizes[b] for b in seqs])
        ids = torch.cat([prompts[b][done[b] : done[b] + sizes[b]] for b in seqs])
        positions = torch.cat([torch.arange(done[b], done[b] + sizes[b]) for b in seqs])
        outputs[f"{name} chunk step {step}"] = model(ids, positions, cache, meta)
        for b in seqs:
            done[b] += sizes[b]
    meta = decode_meta(lengths, 32)
    ids = torch.randint(0, c.vocab_size, (3,))
    outputs[f"{name} decode step"] = model(ids, torch.tensor(lengths), cache, meta)
    outputs[f"{name} cache"] = cache
    return outputs


if __name__ == "__main__":
    from llmasos.model.native import kernel_isa

    torch.set_num_threads(1)  # as the test suite runs
    torch.save({"isa": kernel_isa(), "outputs": kernel_outputs(Path(sys.argv[1]))}, sys.argv[2])
