# Checkpoints: the HDF5 format and its refusals at 1-4 ranks (resharding on sub-communicators),
# and end-to-end resume through the strand binary (bit-exact continuation, resharding, kill -9
# during a write, SIGUSR1 preemption, refused checkpoints).
strand_add_mpi_test(NAME test_ckpt SOURCES ${STRAND_TEST_DIR}/unit/test_ckpt.c RANKS 1 2 3 4 ARGS unit TIMEOUT 300)
strand_add_script_test(NAME train_resume COMMAND bash ${STRAND_TEST_DIR}/cli/test_resume.sh TIMEOUT 600)
# Hardening: a file one node does not see (private mounts on rank 1) and a full disk during a
# checkpoint write end with one error line instead of a hang; earlier checkpoints stay intact.
strand_add_script_test(NAME node_files_np2 COMMAND bash ${STRAND_TEST_DIR}/cli/test_node_files.sh TIMEOUT 400)
strand_add_script_test(NAME full_disk_np2 COMMAND bash ${STRAND_TEST_DIR}/cli/test_full_disk.sh TIMEOUT 300)
# Corruption sweep: hundreds of damaged copies of a dataset and of a checkpoint are each refused
# with a reason or give the undamaged result.
strand_add_test(NAME test_corruption SOURCES ${STRAND_TEST_DIR}/unit/test_corruption.c
                ARGS ${STRAND_DATA_DIR}/lambda_phage_NC_001416.fa.gz LABELS unit TIMEOUT 300)
