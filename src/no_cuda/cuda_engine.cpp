// The CUDA inference engine of a build without the CUDA backend (-DTOPKSAE_CUDA=OFF or no nvcc):
// loading a model with ModelOptions::device = Device::cuda says why it cannot. With the backend
// the engine is src/api/cuda_engine.cpp.
#include "api/engine.h"

namespace topksae::detail {

std::unique_ptr<Engine> make_cuda_engine(const Sae&, const ModelOptions&) {
  throw Error(concat("CUDA inference backend not available in this build: ", cuda_unavailable_reason()));
}

}  // namespace topksae::detail
