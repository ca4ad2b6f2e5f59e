// Model::load, apart from model.cpp so that a program that never loads a directory does not link
// the file readers.
#include "topksae/api.h"
#include "topksae/sae_dir.h"

namespace topksae {

std::shared_ptr<const Model> Model::load(const std::filesystem::path& dir, const ModelOptions& opts) {
  return from_sae(load_sae_dir(dir), opts);
}

}  // namespace topksae
