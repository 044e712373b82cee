// The Python module of the C++ CPU kernels (native.py builds every source here into it):
//   quant_gemm.cpp         4-bit and int8 weight GEMMs (quant_gemm.h: what the decode step shares)
//   decode_step.cpp        a whole decode step of the Llama family in one call
//   decode_attention.cpp   one query per sequence over the paged KV cache
//   prefill_attention.cpp  causal attention of prompt chunks over the paged KV cache
//   copy_blocks.cpp        KV blocks between pools (suspend to host memory and back)
//   simd.h                 AVX2 helpers they share
#include <torch/extension.h>

#include "kernels.h"
#include "quant_gemm.h"

// Every kernel runs without the GIL: they touch no Python object, and a decode step holds the CPU
// for milliseconds, in which a server's event loop (or any other Python thread) must go on running.
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using release = py::call_guard<py::gil_scoped_release>;
  using namespace llmasos;
  m.def("q4_linear", &q4_linear, release(), "y = x W^T (+ bias) with 4-bit weights and integer group constants (AVX2)");
  m.attr("Q4_INT_MAX") = kQ4IntMax;
  m.attr("ACTIVATION_MAX") = static_cast<int>(kActMax);
  m.def("round_activations", &round_activations, release(), "x rounded to 15-bit integers with one scale per token, as the GEMMs see it");
  m.def("q8_linear", &q8_linear, release(), "y = x W^T with per-row int8 weights (AVX2, integer activations)");
  m.def("decode_attention", &decode_attention, release(), "one-token-per-sequence attention over a paged KV cache");
  m.def("prefill_attention", &prefill_attention, release(),
        "causal attention of packed prompt chunks over a paged KV cache (prefill_attention.cpp)");
  m.def("swiglu", &swiglu_rows, release(), "silu(gate) * up for rows (n, 2 * inter), as the decode step computes it");
  m.def("copy_blocks", &copy_blocks, release(), "copy KV blocks between pools (layers, 2, blocks, ...) by id, streaming stores");
  m.def("decode_step", &decode_step, release(), "one decode step of the Llama family over a paged KV cache");
}
