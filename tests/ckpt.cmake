# Checkpoints: the HDF5 format and its refusals at 1-4 ranks (resharding on sub-communicators),
# and end-to-end resume through the strand binary (bit-exact continuation, resharding, kill -9
# during a write, SIGUSR1 preemption, refused checkpoints).
strand_add_mpi_test(NAME test_ckpt SOURCES ${STRAND_TEST_DIR}/unit/test_ckpt.c RANKS 1 2 3 4 ARGS unit TIMEOUT 300)
strand_add_script_test(NAME train_resume COMMAND bash ${STRAND_TEST_DIR}/cli/test_resume.sh TIMEOUT 600)
