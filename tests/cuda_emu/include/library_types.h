// CUDA emulation (tests/cuda_emu/README.md): library_types.h lives in cuda_emu/base.h.
#pragma once
#include "cuda_emu/base.h"
