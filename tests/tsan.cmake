# topksae_tsan_tests: the tests that run threads of our own (the prefetch thread of the data
# pipeline, the inference API called from several threads in C++ and through the C API), alone in
# one binary so that the ThreadSanitizer step (tools/test.d/25-tsan.sh) compiles three test files
# instead of every one. Not built by default (EXCLUDE_FROM_ALL) and not a ctest: that step runs it.
add_executable(topksae_tsan_tests EXCLUDE_FROM_ALL ${CMAKE_CURRENT_SOURCE_DIR}/test_data_sources.cpp
                                  ${CMAKE_CURRENT_SOURCE_DIR}/test_api_encode.cpp ${CMAKE_CURRENT_SOURCE_DIR}/test_api_c.cpp
                                  ${CMAKE_CURRENT_SOURCE_DIR}/test_collective_watchdog.cpp)
target_link_libraries(topksae_tsan_tests PRIVATE topksae::topksae GTest::gtest_main nlohmann_json::nlohmann_json)
target_include_directories(topksae_tsan_tests PRIVATE ${PROJECT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR})
target_compile_definitions(topksae_tsan_tests PRIVATE TOPKSAE_TEST_DIR="${CMAKE_CURRENT_SOURCE_DIR}"
                                                      TOPKSAE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
