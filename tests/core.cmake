# Core: process grid and halo exchange, whole-model gradients across ranks, end-to-end training.
strand_add_mpi_test(NAME test_dist SOURCES ${STRAND_TEST_DIR}/unit/test_dist.c RANKS 1 2 3 4)
# The distributed linear scan's exchange against the sequential recurrence (both layouts and directions).
strand_add_mpi_test(NAME test_scan SOURCES ${STRAND_TEST_DIR}/unit/test_scan.c RANKS 1 2 3 4)
# ScaLAPACK singular values and orthogonal QR on BLACS grids (1x1, 2x1, 3x1, 2x2 and every smaller shape) against LAPACK.
strand_add_mpi_test(NAME test_dense SOURCES ${STRAND_TEST_DIR}/unit/test_dense.c RANKS 1 2 3 4)
strand_add_mpi_test(NAME test_model SOURCES ${STRAND_TEST_DIR}/unit/test_model.c RANKS 1 2 3 4)
add_executable(test_train ${STRAND_TEST_DIR}/unit/test_train.c)
target_link_libraries(test_train PRIVATE strandlib)
target_include_directories(test_train PRIVATE ${STRAND_TEST_DIR}/unit)
foreach(n 1 2 3 4)
  add_test(NAME train_sharding_np${n} COMMAND ${STRAND_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} ${n}
           $<TARGET_FILE:test_train> sharding ${STRAND_DATA_DIR}/lambda_phage_NC_001416.fa.gz)
  add_test(NAME train_nan_np${n} COMMAND ${STRAND_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} ${n}
           $<TARGET_FILE:test_train> nan ${STRAND_DATA_DIR}/lambda_phage_NC_001416.fa.gz)
  add_test(NAME loader_np${n} COMMAND ${STRAND_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} ${n}
           $<TARGET_FILE:test_train> loader ${STRAND_DATA_DIR}/lambda_phage_NC_001416.fa.gz)
  set_tests_properties(train_sharding_np${n} train_nan_np${n} loader_np${n} PROPERTIES ENVIRONMENT "${STRAND_TEST_ENV}"
                       TIMEOUT 600 LABELS mpi)
endforeach()
add_test(NAME train_learning_np2 COMMAND ${STRAND_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:test_train> learning)
set_tests_properties(train_learning_np2 PROPERTIES ENVIRONMENT "${STRAND_TEST_ENV}" TIMEOUT 600 LABELS mpi)
strand_add_script_test(NAME train_errors_np2 COMMAND bash ${STRAND_TEST_DIR}/cli/test_train_errors.sh TIMEOUT 900)
# Long range: hyena and s4d learn a copy 96 tokens back across the rank boundary; conv cannot.
add_executable(test_long_range ${STRAND_TEST_DIR}/unit/test_long_range.c)
target_link_libraries(test_long_range PRIVATE strandlib)
target_include_directories(test_long_range PRIVATE ${STRAND_TEST_DIR}/unit)
add_test(NAME long_range_np2 COMMAND ${STRAND_MPIEXEC} ${MPIEXEC_NUMPROC_FLAG} 2 $<TARGET_FILE:test_long_range> hyena s4d)
set_tests_properties(long_range_np2 PROPERTIES ENVIRONMENT "${STRAND_TEST_ENV}" TIMEOUT 600 LABELS "mpi;learning;slow")
# strand bench rnn / bench scan: their JSON fields, and the scan's bytes per rank independent of L.
strand_add_script_test(NAME bench_scan COMMAND bash ${STRAND_TEST_DIR}/cli/test_bench_scan.sh TIMEOUT 300)
strand_add_script_test(NAME eval_checkpoint COMMAND bash ${STRAND_TEST_DIR}/cli/test_eval.sh TIMEOUT 300)
# Ranks given different configurations or dataset contents are refused with the first difference.
strand_add_script_test(NAME train_rank_consistency COMMAND bash ${STRAND_TEST_DIR}/cli/test_rank_consistency.sh TIMEOUT 600)
# One job per run.dir (an flock on <run.dir>/.lock); a stale lock of a killed job does not block.
strand_add_script_test(NAME train_run_lock COMMAND bash ${STRAND_TEST_DIR}/cli/test_run_lock.sh TIMEOUT 600)
# Preemption signals: a second signal keeps exit 75; a signal during the final validation preempts.
strand_add_script_test(NAME train_signals COMMAND bash ${STRAND_TEST_DIR}/cli/test_signals.sh TIMEOUT 600)
# Run-directory write failures name the reason and leave no temporary file.
strand_add_script_test(NAME train_write_errors COMMAND bash ${STRAND_TEST_DIR}/cli/test_write_errors.sh TIMEOUT 600)
# Every error is one line; NUL bytes in config files and inverted min/max pairs are refused.
strand_add_script_test(NAME train_error_text COMMAND bash ${STRAND_TEST_DIR}/cli/test_error_text.sh TIMEOUT 300)
# The recurrent mixers' long-range promises: ornn stays orthogonal through training and carries the
# gradient over 4096 positions; an rnn at spectral radius 0.9 loses it.
strand_add_mpi_test(NAME test_recurrent SOURCES ${STRAND_TEST_DIR}/unit/test_recurrent.c RANKS 1 2 LABELS recurrent)
# Recall across ranks: lstm and gru recall a base 258 positions back across the rank boundary at
# SP = 2; a conv model of the same size cannot (plain rnn reported). About 2.5 minutes: float only.
strand_add_mpi_test(NAME test_recall_learning SOURCES ${STRAND_TEST_DIR}/unit/test_recall_learning.c
                    ${STRAND_TEST_DIR}/unit/learning_util.c RANKS 2 TIMEOUT 600 LABELS "recurrent;learning;slow")
# Selective recall across ranks: one mamba block recalls the base after a marker, in noise, across
# the rank boundary at SP = 2; one s4d block (linear time-invariant) cannot. Float only.
strand_add_mpi_test(NAME test_scan_learning SOURCES ${STRAND_TEST_DIR}/unit/test_scan_learning.c
                    ${STRAND_TEST_DIR}/unit/learning_util.c RANKS 2 TIMEOUT 600 LABELS "scan;learning;slow")
# Parity at D = 64 across ranks through the loss mask: two dilated blocks (dilations 1 and 128)
# reach accuracy > 0.99; two kernel-4 convs of the same depth stay at chance. Float only.
strand_add_mpi_test(NAME test_parity_learning SOURCES ${STRAND_TEST_DIR}/unit/test_parity_learning.c
                    ${STRAND_TEST_DIR}/unit/learning_util.c RANKS 2 TIMEOUT 600 LABELS "learning;slow")
