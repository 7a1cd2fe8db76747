# Shortcuts for developers who have make; the README's commands need only bash.
.PHONY: run test bench packages

run:
	bash packaging/dev/bootstrap.sh run

test:
	bash packaging/dev/bootstrap.sh test

bench:
	bash packaging/dev/bootstrap.sh setup
	.venv/bin/ttpsensor bench encode
	.venv/bin/ttpsensor bench filehash

# The .deb, .rpm and .msi into dist/ (packaging/README.md explains them).
packages:
	bash packaging/dev/bootstrap.sh setup
	bash packaging/build.sh
