# The NCCL engine (tests/mpi/nccl_collectives_test.cpp) and the latent-sharded CUDA step
# (tests/mpi/cuda_sharded_equivalence.cpp, cli_sharded_cuda_test.py) under mpirun. In the CUDA
# emulation's build they run with R = 2 and R = 3, each rank on its own emulated device
# (CUDA_EMU_DEVICES=3; NCCL emulated over MPI, tests/cuda_emu/nccl/): a CPU check of the logic,
# never a GPU run.
# With a real NCCL the executable is built for tools/gpu_check.sh (R = 1 on the GPU) but no ctest
# entry is added: this machine has no GPU.
if(TOPKSAE_HAS_NCCL)
  add_executable(nccl_collectives_test ${CMAKE_CURRENT_SOURCE_DIR}/mpi/nccl_collectives_test.cpp)
  target_link_libraries(nccl_collectives_test PRIVATE topksae_mpi)
  target_include_directories(nccl_collectives_test PRIVATE ${PROJECT_SOURCE_DIR}/src)
  # The sharded CUDA step's equivalence (tests/mpi/cuda_sharded_equivalence.cpp).
  if(TOPKSAE_HAS_CUDA OR TOPKSAE_CUDA_EMU)
    add_executable(cuda_sharded_equivalence ${CMAKE_CURRENT_SOURCE_DIR}/mpi/cuda_sharded_equivalence.cpp)
    target_link_libraries(cuda_sharded_equivalence PRIVATE topksae_mpi)
    target_include_directories(cuda_sharded_equivalence PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/kernels)
  endif()
  if(TOPKSAE_CUDA_EMU)
    foreach(np 2 3)
      add_test(NAME nccl_emu_np${np}
               COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} $<TARGET_FILE:nccl_collectives_test>)
      set_tests_properties(nccl_emu_np${np} PROPERTIES TIMEOUT 60 ENVIRONMENT
                           "${TOPKSAE_MPI_TEST_ENV};CUDA_EMU_DEVICES=3")
      # The latent-sharded CUDA step against the unsharded one (and the CPU's), R = 2 and 3 (uneven).
      # Under the sanitizers (CI step 20) R = 3 only, the odd shard sizes: about 40 s there.
      if(TOPKSAE_SANITIZE AND np EQUAL 2)
        continue()
      endif()
      add_test(NAME nccl_emu_sharded_np${np}
               COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} $<TARGET_FILE:cuda_sharded_equivalence>
                       ${CMAKE_CURRENT_BINARY_DIR}/nccl_emu_sharded)
      set_tests_properties(nccl_emu_sharded_np${np} PROPERTIES TIMEOUT 120 ENVIRONMENT
                           "${TOPKSAE_MPI_TEST_ENV};CUDA_EMU_DEVICES=3"
                           FAIL_REGULAR_EXPRESSION "cuda_emu: HAZARD")  # the stream-order check
    endforeach()
    # The command end to end: mpirun -np 2 / 3 topksae train --device cuda against one process, and
    # a cuda checkpoint set resumed on the CPU (tests/mpi/cli_sharded_cuda_test.py). Not under the
    # sanitizers (about 70 s there, CI step 20): the step's kernels get ASan through the test above.
    if(TARGET topksae_cli AND TOPKSAE_MPI_PYTHON3 AND NOT TOPKSAE_SANITIZE)
      topksae_mpi_cli_test(nccl_emu_cli_sharded cli_sharded_cuda_test.py 120)
    endif()
    add_test(NAME nccl_emu_remote_error
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:nccl_collectives_test> --remote-error)
    set_tests_properties(nccl_emu_remote_error PROPERTIES TIMEOUT 60 ENVIRONMENT
                         "${TOPKSAE_MPI_TEST_ENV};CUDA_EMU_DEVICES=2;CUDA_EMU_NCCL_REMOTE_ERROR=1")
  endif()
endif()
