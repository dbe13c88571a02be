# The SLURM job-script test: a real single-node SLURM runs jobs/train.sbatch end to end.
# Skips (exit 77) without SLURM, without root, and in sanitizer builds; "slow" keeps it to the
# float variant of tests/run.sh.
strand_add_script_test(NAME slurm_train_sbatch
  COMMAND bash ${STRAND_TEST_DIR}/slurm/test_slurm.sh
  LABELS slow slurm
  TIMEOUT 600)
