#!/usr/bin/env bash
# Run the whole test suite in the project's virtual environment (made by packaging/dev/bootstrap.sh).
# Services needed by tests are started here and stopped on exit (none yet for the core).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest "$@"
