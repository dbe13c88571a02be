# The performance model's machine file: strand calibrate's formulas against hand-computed numbers,
# the JSON round trip and its refusals; the command itself on 2 ranks with --quick (seconds). The
# two script tests do not depend on the precision: they run once, in the float variant ("slow").
strand_add_mpi_test(NAME test_calibrate SOURCES ${STRAND_TEST_DIR}/unit/test_calibrate.c RANKS 1 LABELS perf)
strand_add_script_test(NAME calibrate_cli COMMAND bash ${STRAND_TEST_DIR}/cli/test_calibrate_cli.sh
                       TIMEOUT 120 LABELS "perf;slow")
# strand plan's formulas against hand-computed cases (counts, seconds, the ring's overlap, the grid
# and memory of a plan against the dry run's estimate, efficiency, where scaling stops).
strand_add_mpi_test(NAME test_plan SOURCES ${STRAND_TEST_DIR}/unit/test_plan.c RANKS 1 LABELS perf)
# jobs/scaling/sweep.sh: a 2-point strong mixer sweep and a 2-point weak training sweep, CSV, plots,
# resume and refusals (about 15 s).
strand_add_script_test(NAME scaling_script COMMAND bash ${STRAND_TEST_DIR}/cli/test_scaling_script.sh
                       TIMEOUT 300 LABELS "perf;slow")
# strand bench train: its JSON line (jq), the same losses at 1 and 2 ranks, --dump's files, a
# missing --config file refused with one error line (about 3 s; STRAND_TEST_TORCH=1 adds the check
# of tests/bench/torch_model.py's losses on the dump).
strand_add_script_test(NAME bench_train COMMAND bash ${STRAND_TEST_DIR}/cli/test_bench_train.sh
                       TIMEOUT 120 LABELS "perf;slow")
