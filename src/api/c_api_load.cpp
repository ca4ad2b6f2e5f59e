// topksae_model_load, apart from c_api.cpp so that only programs that load directories link the
// file readers.
#include "api/c_api_internal.h"

using namespace topksae;
using namespace topksae::c_api;

extern "C" topksae_status topksae_model_load(const char* dir, topksae_device device, topksae_model** out) {
  return topksae_model_load_ex(dir, device, 0, nullptr, out);
}

extern "C" topksae_status topksae_model_load_ex(const char* dir, topksae_device device, int cuda_device,
                                                const char* cuda_precision, topksae_model** out) {
  return fence([&] {
    require(out != nullptr, "topksae_model_load: out is a null pointer");
    *out = nullptr;
    require(dir != nullptr, "topksae_model_load: dir is a null pointer");
    ModelOptions opts;
    opts.device = to_device(device);
    opts.cuda_device = cuda_device;
    if (cuda_precision) opts.cuda_precision = cuda_precision;
    auto m = std::make_unique<topksae_model>();
    m->model = Model::load(dir, opts);
    *out = m.release();
  });
}
