# TOPKSAE_NCCL (AUTO / ON / OFF): the NCCL engine of latent-sharded GPU training
# (src/mpi/nccl_collectives.cpp, dist::DeviceCollectives). Like the MPI engine it lives in the
# separate static library topksae_mpi (cmake/mpi.cmake), so the installed topksae library has no
# NCCL dependency. It needs CUDA (or the CUDA emulation, whose NCCL runs over MPI:
# tests/cuda_emu/nccl/) and MPI (NCCL is bootstrapped over MPI). Without it topksae_mpi holds a stub
# whose make_nccl_collectives() throws a clear Error.
set(TOPKSAE_NCCL AUTO CACHE STRING "NCCL for latent-sharded GPU training: AUTO (on with CUDA and MPI when NCCL is found), ON, OFF")
set_property(CACHE TOPKSAE_NCCL PROPERTY STRINGS AUTO ON OFF)
set(TOPKSAE_HAS_NCCL OFF)
set(_topksae_nccl_why "TOPKSAE_NCCL=OFF")
if(NOT TOPKSAE_NCCL STREQUAL "OFF")
  if(NOT TOPKSAE_HAS_MPI)
    set(_topksae_nccl_why "no MPI (NCCL is bootstrapped over MPI)")
  elseif(TOPKSAE_CUDA_EMU)
    set(TOPKSAE_HAS_NCCL ON)  # the emulation's NCCL, over MPI
  elseif(NOT TOPKSAE_HAS_CUDA)
    set(_topksae_nccl_why "no CUDA")
  else()
    # Debian's libnccl-dev puts it in /usr; NVIDIA's CUDA installs may ship it in the toolkit.
    find_path(TOPKSAE_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV NCCL_HOME PATH_SUFFIXES include)
    find_library(TOPKSAE_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib
                 ${CUDAToolkit_TARGET_DIR}/lib ENV NCCL_HOME PATH_SUFFIXES lib lib64)
    if(TOPKSAE_NCCL_INCLUDE_DIR AND TOPKSAE_NCCL_LIBRARY)
      set(TOPKSAE_HAS_NCCL ON)
    else()
      set(_topksae_nccl_why "nccl.h or libnccl not found (libnccl-dev; or set NCCL_HOME)")
    endif()
  endif()
  if(NOT TOPKSAE_HAS_NCCL AND TOPKSAE_NCCL STREQUAL "ON")
    message(FATAL_ERROR "TOPKSAE_NCCL=ON but: ${_topksae_nccl_why}")
  endif()
endif()
if(TOPKSAE_HAS_NCCL)
  message(STATUS "topksae: NCCL ON")
  target_sources(topksae_mpi PRIVATE ${PROJECT_SOURCE_DIR}/src/mpi/nccl_collectives.cpp)
  target_compile_definitions(topksae_mpi PUBLIC TOPKSAE_HAS_NCCL=1)
  if(TOPKSAE_CUDA_EMU)
    target_sources(topksae_mpi PRIVATE ${PROJECT_SOURCE_DIR}/tests/cuda_emu/nccl/nccl.cpp)
  else()
    target_include_directories(topksae_mpi PUBLIC ${TOPKSAE_NCCL_INCLUDE_DIR})
    target_link_libraries(topksae_mpi PUBLIC ${TOPKSAE_NCCL_LIBRARY})
  endif()
else()
  message(STATUS "topksae: NCCL OFF (${_topksae_nccl_why})")
  target_sources(topksae_mpi PRIVATE ${PROJECT_SOURCE_DIR}/src/mpi/no_nccl.cpp)
endif()
