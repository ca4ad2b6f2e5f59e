# TOPKSAE_MPI (AUTO / ON / OFF): the MPI engine of latent-sharded training. The sharded algorithm
# itself (src/dist/, src/train/sharded_*.cpp) is in the main library and talks to an abstract
# dist::Collectives; the MPI implementation of it lives in the separate static library
# topksae_mpi (src/mpi/), which the topksae command and the tests link. Without MPI the same
# library holds a stub whose make_mpi_collectives() throws a clear Error, so the build and every
# single-process run are unchanged and a sharded launch stops with the reason.
set(TOPKSAE_HAS_MPI OFF)
if(NOT TOPKSAE_MPI STREQUAL "OFF")
  enable_language(C)  # FindMPI's C component probes with the C compiler
  find_package(MPI COMPONENTS C QUIET)
  if(MPI_C_FOUND)
    set(TOPKSAE_HAS_MPI ON)
  elseif(TOPKSAE_MPI STREQUAL "ON")
    message(FATAL_ERROR "TOPKSAE_MPI=ON but MPI was not found (tools/setup.sh installs libopenmpi-dev openmpi-bin)")
  endif()
endif()
message(STATUS "topksae: MPI ${TOPKSAE_HAS_MPI}")

if(TOPKSAE_HAS_MPI)
  add_library(topksae_mpi STATIC ${PROJECT_SOURCE_DIR}/src/mpi/mpi_collectives.cpp)
  target_link_libraries(topksae_mpi PUBLIC topksae MPI::MPI_C)
  # The C API from C++: without these, OpenMPI's and MPICH's mpi.h pull in their deprecated C++
  # bindings, which need a library we do not link.
  target_compile_definitions(topksae_mpi PUBLIC TOPKSAE_HAS_MPI=1 PRIVATE OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
  # mpiexec for the tests: as root (CI) OpenMPI wants --allow-run-as-root; --oversubscribe lets
  # 3 ranks run on 2 cores.
  set(TOPKSAE_MPIEXEC "${MPIEXEC_EXECUTABLE}" CACHE INTERNAL "")
else()
  add_library(topksae_mpi STATIC ${PROJECT_SOURCE_DIR}/src/mpi/no_mpi.cpp)
  target_link_libraries(topksae_mpi PUBLIC topksae)
endif()
target_include_directories(topksae_mpi PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_compile_options(topksae_mpi PRIVATE -Wall -Wextra)
