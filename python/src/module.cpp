// topksae._core: the engine's Python module (the package topksae wraps it: python/topksae/).
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "bindings.h"
#include "topksae/api.h"
#include "topksae/device.h"

#ifndef TOPKSAE_VERSION
#error "TOPKSAE_VERSION must be defined (python/CMakeLists.txt passes the CMake project version)"
#endif

namespace nb = nanobind;

NB_MODULE(_core, m) {
  m.doc() = "topksae's engine (C++), bound with nanobind; use the package topksae, not this module.";
  m.attr("__version__") = TOPKSAE_VERSION;
  // Misuse (a bad argument, shape or device) is a ValueError; other engine errors stay RuntimeError
  // (nanobind's translation of std::runtime_error, which topksae::Error derives from).
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const topksae::InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  m.def("built_with_cuda", &topksae::built_with_cuda, "True when this build has the CUDA backend.");
  m.def("cuda_available", &topksae::cuda_available, "True when the CUDA backend can use a GPU here.");
  m.def("cuda_unavailable_reason", &topksae::cuda_unavailable_reason,
        "Why CUDA cannot be used here, or '' when it can.");
  topksae::py::bind_sae(m);
  topksae::py::bind_trainer(m);
}
