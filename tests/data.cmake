# Data pipeline: SHA-256, FASTA parsing, strand prep and the dataset reader, the prep/info CLI.
strand_add_test(NAME test_fasta SOURCES ${STRAND_TEST_DIR}/unit/test_fasta.c LABELS data)
strand_add_mpi_test(NAME test_dataset SOURCES ${STRAND_TEST_DIR}/unit/test_dataset.c RANKS 1 2 3 4 LABELS data
                    ARGS ${STRAND_TEST_DIR}/data/fixtures/old_strand_dataset.h5.gz)
strand_add_script_test(NAME test_prep_cli COMMAND bash ${STRAND_TEST_DIR}/data/test_prep_cli.sh LABELS data)
# strand prep --task: each synthetic task's tokens and loss mask as defined, read back with h5dump;
# a model trains on one at 2 ranks and reports the accuracy on the answer positions.
strand_add_script_test(NAME test_tasks_cli COMMAND bash ${STRAND_TEST_DIR}/data/test_tasks_cli.sh LABELS data TIMEOUT 600)
strand_add_test(NAME test_tokenizer SOURCES ${STRAND_TEST_DIR}/unit/test_tokenizer.c LABELS data ARGS ${STRAND_DATA_DIR}/lambda_phage_NC_001416.fa.gz)
# Tokenizers end to end (round trip of every genome in data/ for kmer:1..8 and bpe:256..8192,
# bits per base in training at 1 and 3 ranks, sampling, refusals); float only: its figures do
# not depend on the precision.
strand_add_script_test(NAME test_tokenizer_cli COMMAND bash ${STRAND_TEST_DIR}/data/test_tokenizer_cli.sh
                       LABELS "data;slow" TIMEOUT 900)
