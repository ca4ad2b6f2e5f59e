// The pieces of the topksae._core module, one file each (module.cpp puts them together).
#pragma once
#include <nanobind/nanobind.h>

namespace topksae::py {
void bind_sae(nanobind::module_& m);      // sae_binding.cpp: topksae.SAE (inference)
void bind_trainer(nanobind::module_& m);  // trainer_binding.cpp: the live training run
}  // namespace topksae::py
