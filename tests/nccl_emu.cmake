# The NCCL engine (tests/mpi/nccl_collectives_test.cpp) under mpirun. In the CUDA emulation's build
# it runs with R = 2 and R = 3, each rank on its own emulated device (CUDA_EMU_DEVICES=3; NCCL
# emulated over MPI, tests/cuda_emu/nccl/): a CPU check of the engine's logic, never a GPU run.
# With a real NCCL the executable is built for tools/gpu_check.sh (R = 1 on the GPU) but no ctest
# entry is added: this machine has no GPU.
if(TOPKSAE_HAS_NCCL)
  add_executable(nccl_collectives_test ${CMAKE_CURRENT_SOURCE_DIR}/mpi/nccl_collectives_test.cpp)
  target_link_libraries(nccl_collectives_test PRIVATE topksae_mpi)
  target_include_directories(nccl_collectives_test PRIVATE ${PROJECT_SOURCE_DIR}/src)
  if(TOPKSAE_CUDA_EMU)
    foreach(np 2 3)
      add_test(NAME nccl_emu_np${np}
               COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} $<TARGET_FILE:nccl_collectives_test>)
      set_tests_properties(nccl_emu_np${np} PROPERTIES TIMEOUT 60 ENVIRONMENT
                           "${TOPKSAE_MPI_TEST_ENV};CUDA_EMU_DEVICES=3")
    endforeach()
    add_test(NAME nccl_emu_remote_error
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:nccl_collectives_test> --remote-error)
    set_tests_properties(nccl_emu_remote_error PROPERTIES TIMEOUT 60 ENVIRONMENT
                         "${TOPKSAE_MPI_TEST_ENV};CUDA_EMU_DEVICES=2;CUDA_EMU_NCCL_REMOTE_ERROR=1")
  endif()
endif()
