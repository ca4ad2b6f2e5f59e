# ctest: install this build into a temporary prefix, then configure, build and run tests/consumer
# against it with only find_package(topksae).
add_test(NAME ConsumerProject.FindPackageAndLink
         COMMAND ${CMAKE_COMMAND} -DBUILD_DIR=${PROJECT_BINARY_DIR} -DSOURCE_DIR=${CMAKE_CURRENT_SOURCE_DIR}/consumer
                 -DWORK_DIR=${PROJECT_BINARY_DIR}/consumer-test -DGENERATOR=${CMAKE_GENERATOR}
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/consumer/run_consumer_test.cmake)
set_tests_properties(ConsumerProject.FindPackageAndLink PROPERTIES TIMEOUT 300)
