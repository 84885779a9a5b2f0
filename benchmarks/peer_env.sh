#!/usr/bin/env bash
# The peers' throwaway environment for benchmarks/peer_check.py and the black-box speed
# benchmark: llrnet (editable) plus torchattacks, foolbox 3 and pyautoattack. Never a
# dependency of llrnet. Usage: bash benchmarks/peer_env.sh [VENV]  (default .venv-peers)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-peers}
PYTHON=${PYTHON:-python3}
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade "pip>=24"
"$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
"$VENV/bin/python" -m pip install -q -e . "foolbox==3.3.4" "pyautoattack>=0.2,<0.3" \
    "setuptools<81"
# torchattacks 3.5.1 pins requests~=2.25.1, which llrnet's requests>=2.31 excludes; it
# runs with the newer requests (it uses it only to download its own model zoo).
"$VENV/bin/python" -m pip install -q --no-deps "torchattacks==3.5.1"
"$VENV/bin/python" -c "import torchattacks, foolbox, pyautoattack, llrnet; print('peers ready:', torchattacks.__version__, foolbox.__version__)"
