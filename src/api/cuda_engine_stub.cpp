// Placeholder for the CUDA inference engine until one built on the CUDA twins (ops_cuda.h) lands:
// that engine implements detail::Engine (api/engine.h) in kernels/ and this file is deleted.
#include "api/engine.h"

namespace topksae::detail {

std::unique_ptr<Engine> make_cuda_engine(const Sae&, int) {
  throw Error(concat("CUDA inference backend not available in this build: ",
                     built_with_cuda() ? std::string("the inference API has no CUDA engine yet (the CUDA twins of "
                                                     "the ops are not wired into it); use Device::cpu")
                                       : cuda_unavailable_reason()));
}

}  // namespace topksae::detail
