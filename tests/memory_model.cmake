# The per-rank memory model: `strand train --dry-run` predictions against measured peak memory of
# 2-step training runs at 1-4 ranks (within 20%), and the dry run's usage and config errors.
# Skips (exit 77) in sanitizer builds.
strand_add_script_test(NAME memory_model COMMAND bash ${STRAND_TEST_DIR}/memory/test_memory_model.sh
  LABELS memory TIMEOUT 300)
