# Allocation fault injection: every allocation of small train, eval, grad and sample runs fails in
# turn on one rank, at 2 ranks (rank 0, then rank 1) and 3 ranks (rank 2); each run must stop
# agreed, in bounded time, without partial files. Files go to /dev/shm: the runs fsync their
# checkpoints, and a disk would make the hundreds of runs slow.
add_executable(test_faults ${STRAND_TEST_DIR}/unit/test_faults.c)
target_link_libraries(test_faults PRIVATE strandlib)
target_include_directories(test_faults PRIVATE ${STRAND_TEST_DIR}/unit)
set(STRAND_FAULTS_TMP /tmp)
if(EXISTS /dev/shm)
  set(STRAND_FAULTS_TMP /dev/shm)
endif()
foreach(run "2;0" "2;1" "3;2")
  list(GET run 0 n)
  list(GET run 1 rank)
  add_test(NAME faults_alloc_np${n}_rank${rank} COMMAND ${STRAND_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} ${n}
           $<TARGET_FILE:test_faults> ${rank} ${STRAND_DATA_DIR}/lambda_phage_NC_001416.fa.gz)
  set_tests_properties(faults_alloc_np${n}_rank${rank} PROPERTIES
    ENVIRONMENT "${STRAND_TEST_ENV};TMPDIR=${STRAND_FAULTS_TMP}" TIMEOUT 900 LABELS mpi)
endforeach()
