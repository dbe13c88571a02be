# strand probe jacobian: step Jacobians against finite differences, the span Jacobian at SP = 1-3
# (uneven shards, spans across ranks, both layouts) against one rank's to 1e-10, ornn identity's
# singular values all 1, rnn identity's J = W^k; the CLI on trained checkpoints.
strand_add_mpi_test(NAME test_probe SOURCES ${STRAND_TEST_DIR}/unit/test_probe.c RANKS 1 2 3 LABELS probe)
strand_add_script_test(NAME probe_jacobian_cli COMMAND bash ${STRAND_TEST_DIR}/cli/test_probe_jacobian.sh
                       TIMEOUT 300 LABELS probe)
# strand probe gradient: g(k) at SP = 1-4 against one rank's, an identity rnn's decay per step, the
# exact receptive field of dilated stacks; the CLI with --csv and --plot on a trained checkpoint.
strand_add_mpi_test(NAME test_probe_gradient SOURCES ${STRAND_TEST_DIR}/unit/test_probe_gradient.c RANKS 1 2 3 4
                    LABELS probe)
strand_add_script_test(NAME probe_gradient_cli COMMAND bash ${STRAND_TEST_DIR}/cli/test_probe_gradient.sh
                       TIMEOUT 300 LABELS probe)
# jobs/experiments/long_range.sh on a slice: CSV, table, PNGs, the probe's fits, resume, refusals.
strand_add_script_test(NAME long_range_script COMMAND bash ${STRAND_TEST_DIR}/cli/test_long_range_script.sh
                       TIMEOUT 300 LABELS "probe;experiments")
