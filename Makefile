# The two entry points of the README. Both are idempotent on a fresh Debian 12 machine as root.
.PHONY: run test bench

# Set up and run the Linux sensor with its embedded defaults (stdout, ECS JSON lines).
run:
	packaging/dev/bootstrap.sh run
	.venv/bin/ttpsensor run

# Set up and run the whole test suite (tests/run.sh starts and stops the services tests need).
test:
	packaging/dev/bootstrap.sh test
	tests/run.sh

bench:
	packaging/dev/bootstrap.sh run
	.venv/bin/ttpsensor bench encode
	.venv/bin/ttpsensor bench filehash
