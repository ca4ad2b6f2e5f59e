# Latent-sharded training under MPI (tests/mpi/sharded_equivalence.cpp): R = 2 and R = 3 (uneven
# shards) against the single-process step. The environment lets OpenMPI run as root (CI does) and
# put 3 ranks on 2 cores; other MPIs ignore it. Without MPI the tests are reported as skipped.
add_executable(sharded_equivalence ${CMAKE_CURRENT_SOURCE_DIR}/mpi/sharded_equivalence.cpp)
target_link_libraries(sharded_equivalence PRIVATE topksae_mpi)
target_include_directories(sharded_equivalence PRIVATE ${PROJECT_SOURCE_DIR}/src)
set(TOPKSAE_MPI_TEST_ENV OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
                         OMPI_MCA_rmaps_base_oversubscribe=1)
# Under the sanitizers, LeakSanitizer reports OpenMPI's allocations in its plugins, which
# MPI_Finalize unloads before the report (so no suppression can name them): leak checking is off
# for these tests only; ASan's memory errors and UBSan stay on.
# The command's runs see no emulated GPU in the CUDA emulation's build (CUDA_EMU_DEVICES=0; other
# builds ignore it): their resumes pass --device auto, which would take the emulated GPU, with one
# rank per GPU. The sharded cuda runs are tests/nccl_emu.cmake's (their script sets the devices).
set(TOPKSAE_MPI_CLI_ENV CUDA_EMU_DEVICES=0)
if(TOPKSAE_SANITIZE)
  list(APPEND TOPKSAE_MPI_TEST_ENV ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1)
  list(APPEND TOPKSAE_MPI_CLI_ENV ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1)
endif()
foreach(np 2 3)
  if(TOPKSAE_HAS_MPI)
    add_test(NAME mpi_sharded_np${np}
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${np} $<TARGET_FILE:sharded_equivalence>
                     ${CMAKE_CURRENT_BINARY_DIR}/mpi_sharded)
  else()
    add_test(NAME mpi_sharded_np${np}
             COMMAND sh -c "echo 'skipped: built without MPI (TOPKSAE_MPI=OFF or no MPI found)'; exit 77")
    set_tests_properties(mpi_sharded_np${np} PROPERTIES SKIP_RETURN_CODE 77)
  endif()
  set_tests_properties(mpi_sharded_np${np} PROPERTIES TIMEOUT 120 ENVIRONMENT "${TOPKSAE_MPI_TEST_ENV}")
endforeach()

# The command end to end under mpirun: tests/mpi/<script> <topksae> <mpiexec> <scratch dir>; a skip
# (exit 77) with the reason in a build without MPI.
function(topksae_mpi_cli_test name script timeout)
  if(TOPKSAE_HAS_MPI)
    add_test(NAME ${name}
             COMMAND ${TOPKSAE_MPI_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/mpi/${script}
                     $<TARGET_FILE:topksae_cli> ${MPIEXEC_EXECUTABLE} ${CMAKE_CURRENT_BINARY_DIR}/${name})
  else()
    add_test(NAME ${name}
             COMMAND sh -c "echo 'skipped: built without MPI (TOPKSAE_MPI=OFF or no MPI found)'; exit 77")
    set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${timeout} ENVIRONMENT "${TOPKSAE_MPI_CLI_ENV}")
endfunction()

find_program(TOPKSAE_MPI_PYTHON3 python3)
if(TARGET topksae_cli AND TOPKSAE_MPI_PYTHON3)
  topksae_mpi_cli_test(mpi_cli_sharded cli_sharded_test.py 300)
  # A stalled rank (SIGSTOP) and Ctrl-C of mpirun.
  topksae_mpi_cli_test(mpi_cli_faults cli_faults_test.py 120)
endif()
