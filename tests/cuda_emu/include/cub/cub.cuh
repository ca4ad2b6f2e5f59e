// CUDA emulation (tests/cuda_emu/README.md): the CUB device-wide algorithms this project uses.
#pragma once
#include "cub/device/device_radix_sort.cuh"
#include "cub/device/device_scan.cuh"
