// The Python module of the C++ CPU kernels (native.py builds every source here into it):
//   quant_gemm.cpp         4-bit and int8 weight GEMMs (quant_gemm.h: what the forward step shares)
//   group_gemm.cpp         the 8-bit grouped GEMM (formats of more than 4 bits, as the file stores them)
//                          and Q6_K blocks at their 6 bits
//   forward_step.cpp       a whole step of the Llama family (decode tokens, prompt chunks) in one call, over
//                          the layers' weights held as a StepWeights (forward_step.h)
//   decode_attention.cpp   one query per sequence over the paged KV cache
//   prefill_attention.cpp  causal attention of prompt chunks over the paged KV cache
//   argmax.cpp             greedy sampling's argmax of each row of the logits
//   copy_blocks.cpp        KV blocks between pools (suspend to host memory and back)
//   simd.h                 AVX2 helpers they share; row_vectors.h the GEMMs' row-per-lane vectors
#include <torch/extension.h>

#include "forward_step.h"
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
  m.def("q8g_linear", &q8g_linear, release(), "y = x W^T (+ bias) with 8-bit grouped weights w = d q + m per 16 inputs",
        py::arg("x"), py::arg("q"), py::arg("d"), py::arg("m"), py::arg("bias") = py::none());
  m.def("q6k_linear", &q6k_linear, release(), "y = x W^T (+ bias) with Q6_K blocks at 6 bits, w = dsup sc (q - 32)",
        py::arg("x"), py::arg("q"), py::arg("sc"), py::arg("dsup"), py::arg("bias") = py::none());
  m.def("q8_linear", &q8_linear, release(), "y = x W^T with per-row int8 weights (AVX2, integer activations)");
  m.def("decode_attention", &decode_attention, release(), "one-token-per-sequence attention over a paged KV cache");
  m.def("prefill_attention", &prefill_attention, release(),
        "causal attention of packed prompt chunks over a paged KV cache (prefill_attention.cpp)");
  m.def("swiglu", &swiglu_rows, release(), "silu(gate) * up for rows (n, 2 * inter), as the forward step computes it");
  m.def("argmax_rows", &argmax_rows, release(), "torch.argmax(logits, dim=-1) of contiguous float32 rows (AVX2)");
  m.def("copy_blocks", &copy_blocks, release(), "copy KV blocks between pools (layers, 2, blocks, ...) by id, streaming stores");
  py::class_<StepWeights>(m, "StepWeights", "a model's layer weights as forward_step reads them")
      .def(py::init<std::vector<at::Tensor>>(), py::arg("tensors"))
      .def("__len__", [](const StepWeights& w) { return w.layers().size(); });
  m.def("forward_step", &forward_step, release(), "one step of the Llama family over a paged KV cache",
        py::arg("hidden"), py::arg("positions"), py::arg("slot_mapping"), py::arg("kv_slots"), py::arg("kv_cache"),
        py::arg("rope_cos"), py::arg("rope_sin"), py::arg("layers"), py::arg("final_norm"), py::arg("num_heads"),
        py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("eps"), py::arg("query_start") = py::none(),
        py::arg("context_lens") = py::none());
}
