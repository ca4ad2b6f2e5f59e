# With TOPKSAE_CUDA_EMU (cmake/cuda_emu.cmake): the emulation's own tests (tests/cuda_emu/test_*.cpp
# and the kernels they launch, tests/cuda_emu/*.cu) join topksae_tests.
if(TOPKSAE_CUDA_EMU)
  file(GLOB emu_tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/cuda_emu/test_*.cpp)
  file(GLOB emu_test_cu CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/cuda_emu/*.cu)
  topksae_cuda_emu_rewrite(emu_test_kernels ${emu_test_cu})
  target_sources(topksae_tests PRIVATE ${emu_tests} ${emu_test_kernels})
endif()
