# Mixer conformance: one program walks the mixer registry and checks every mixer under each of its
# test_configs, in every layout it accepts: SP = N against SP = 1, finite differences (double
# build), recompute/offload bit-identity (or their refusal with carried state), step mode against
# the forward, carried state through a checkpoint and reset, and the memory plan. A mixer added to
# the registry is covered without a new test. See tests/conformance/test_mixers.c.
strand_add_mpi_test(NAME test_mixers SOURCES ${STRAND_TEST_DIR}/conformance/test_mixers.c RANKS 1 2 3 4
                    LABELS conformance TIMEOUT 600)
target_include_directories(test_mixers PRIVATE ${STRAND_TEST_DIR}/unit)
