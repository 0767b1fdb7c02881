#!/usr/bin/env bash
# One command for the whole test suite: installs what it needs, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/system-packages.sh test
exec .venv/bin/python -m pytest "$@"
