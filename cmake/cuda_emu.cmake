# TOPKSAE_CUDA_EMU: the CUDA build of topksae with CUDA itself emulated on the CPU, so the GPU tests
# (Cuda*) run on machines without a GPU (tests/cuda_emu/README.md). A test tool, never a backend:
# a result of this build never counts as "ran on a GPU". The library is the CUDA build's (src/
# minus src/no_cuda, plus src/*/cuda_*.cpp and kernels/*.cpp, TOPKSAE_HAS_CUDA=1), but each
# kernels/*.cu and kernels/train/*.cu is rewritten into C++ (tests/cuda_emu/rewrite_cu.py) and
# compiled with the emulation headers first on the include
# path; tests/cuda_emu/src/*.cpp replace cudart, cuBLAS and cuSPARSE.
option(TOPKSAE_CUDA_EMU "Build the CUDA backend against the CPU emulation of CUDA (tests only)" OFF)
if(TOPKSAE_CUDA_EMU)
  if(TOPKSAE_CUDA STREQUAL "ON")
    message(FATAL_ERROR "TOPKSAE_CUDA_EMU=ON replaces nvcc and the CUDA libraries: use it with TOPKSAE_CUDA=OFF")
  endif()
  set(TOPKSAE_CUDA OFF CACHE STRING "CUDA backend: AUTO (on when nvcc is found), ON, OFF" FORCE)
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  message(STATUS "topksae: CUDA emulation ON (tests/cuda_emu: kernels run on the CPU, for tests only)")
endif()

# out_var = the C++ files made from the given .cu files (rewrite_cu.py), with their compile options.
function(topksae_cuda_emu_rewrite out_var)
  set(emu ${PROJECT_SOURCE_DIR}/tests/cuda_emu)
  set(rewritten)
  foreach(cu ${ARGN})
    get_filename_component(name ${cu} NAME_WE)
    file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR} ${cu})
    set(out ${PROJECT_BINARY_DIR}/cuda_emu_kernels/${name}.cu.cpp)
    add_custom_command(OUTPUT ${out}
                       COMMAND Python3::Interpreter ${emu}/rewrite_cu.py ${cu} ${out}
                       DEPENDS ${cu} ${emu}/rewrite_cu.py
                       COMMENT "cuda_emu: rewriting ${rel}" VERBATIM)
    list(APPEND rewritten ${out})
  endforeach()
  # nvcc does not warn about `threadIdx.x < int` or `#pragma unroll`.
  set_source_files_properties(${rewritten} PROPERTIES COMPILE_OPTIONS
                              "-include;${emu}/include/cuda_emu/kernel.h;-Wno-sign-compare;-Wno-unknown-pragmas")
  set(${out_var} ${rewritten} PARENT_SCOPE)
endfunction()

# Turns target `tgt` (the library, made from the CPU build's sources) into the emulated CUDA build.
function(topksae_cuda_emu_target tgt)
  set(emu ${PROJECT_SOURCE_DIR}/tests/cuda_emu)
  get_target_property(srcs ${tgt} SOURCES)
  list(FILTER srcs EXCLUDE REGEX "/src/no_cuda/")
  file(GLOB kernel_cpp CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/*.cpp)
  file(GLOB kernel_cu CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/kernels/*.cu ${PROJECT_SOURCE_DIR}/kernels/train/*.cu)
  file(GLOB emu_src CONFIGURE_DEPENDS ${emu}/src/*.cpp)
  topksae_cuda_emu_rewrite(rewritten ${kernel_cu})
  # TOPKSAE_CUDA_HOST_SOURCES: src/*/cuda_*.cpp, the backend's host code (CMakeLists.txt).
  set_property(TARGET ${tgt} PROPERTY SOURCES ${srcs} ${TOPKSAE_CUDA_HOST_SOURCES} ${kernel_cpp} ${rewritten} ${emu_src})
  target_include_directories(${tgt} BEFORE PUBLIC $<BUILD_INTERFACE:${emu}/include>)
  target_compile_definitions(${tgt} PUBLIC TOPKSAE_HAS_CUDA=1 TOPKSAE_CUDA_EMU=1)
endfunction()
