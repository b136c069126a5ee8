#!/usr/bin/env bash
# The one test command: install what the tests need, then run the whole suite.
#   bash scripts/test.sh            (extra arguments go to pytest, e.g. -k browser)
# pytest's exit code 5 (no tests collected) counts as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install -q -r requirements-test.txt

if ! command -v chromium >/dev/null 2>&1; then  # the browser tests drive Debian's chromium
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi

set +e
python -m pytest -q tests "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$code"
