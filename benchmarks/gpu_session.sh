#!/usr/bin/env bash
# The GPU runbook in one command of at most 9 minutes, installs included. From the repository
# root of a clone, on a machine with one CUDA GPU:
#
#   bash benchmarks/gpu_session.sh            # GPT: CUDA tests, layerdrop/tokendrop, vs DeepSpeed,
#                                             # then the GPT equal-quality frontier
#   bash benchmarks/gpu_session.sh bert       # optional second command: the BERT + PLD workload
#
# Stages run in priority order against the deadline (benchmarks/gpu_runbook.py holds them, with
# their estimates); $OUT (default runs/gpu-session) gets summary.md, summary.json and
# results.tgz after every stage, and the stages' plain files. Extra arguments go to the runbook
# (e.g. --only gpt-frontier). Environment: PY (the interpreter with CUDA torch, default python3),
# BUDGET_S (default 540), LEANTRAIN_DATA_ROOT (the folder holding tokenizers/gpt2/; the BERT
# plan's files too). Wheels in .whl/ (if any) are installed first into /tmp/leantrain-site, for
# a machine without network: benchmarks/gpu_carry.py makes them, with the data in .carry/data.
set -uo pipefail
START=$SECONDS
BUDGET_S=${BUDGET_S:-540}
OUT=${OUT:-runs/gpu-session}
PY=${PY:-python3}
PLAN=gpt
case "${1:-}" in gpt | bert) PLAN=$1; shift ;; esac
ROOT=$(pwd)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/leantrain-site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/leantrain-site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -z "${LEANTRAIN_DATA_ROOT:-}" ] && [ -d .carry/data ]; then
    export LEANTRAIN_DATA_ROOT="$ROOT/.carry/data"
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/gpu_runbook.py --plan "$PLAN" --out "$OUT" --python "$PY" \
    --deadline-s $((BUDGET_S - (SECONDS - START))) "$@"
