#!/usr/bin/env bash
# Everything a lent GPU machine should check and time, in stages that each fit one device call.
#
# Here, once:  python benchmarks/gpu_carry.py        (stages .carry/data and .whl)
# There, from the repository root, carrying [".carry", ".whl"], one call per line:
#   bash benchmarks/gpu_session.sh check bench       # GPU tests, layerdrop, tokendrop
#   bash benchmarks/gpu_session.sh vs-ds             # vs_deepspeed (builds DeepSpeed's op first)
#   bash benchmarks/gpu_session.sh ttq-gpt           # time to quality: GPT, curriculum + random-LTD
#   bash benchmarks/gpu_session.sh ttq-bert          # PreLN BERT MLM with PLD, then GLUE
#   bash benchmarks/gpu_session.sh ttq-vit           # ViT on CIFAR-10 with random-LTD
# Each stage writes <stage>.log (and <stage>.tgz of its JSON / results) under $OUT, and its
# table last; the machine has no network, so only carried wheels are installed.
set -uo pipefail

OUT=${OUT:-runs/gpu-session}
PY=${PY:-python3}  # the image's python3 holds PyTorch
mkdir -p "$OUT"
ROOT=$(pwd)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export LEANTRAIN_DATA_ROOT="$ROOT/.carry/data" LEANTRAIN_SHARED_DATA="$ROOT/.carry/data"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}  # DeepSpeed's JIT ops: Hopper only

if [ -d .whl ] && [ ! -e /tmp/site/.done ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    touch /tmp/site/.done
fi
export PYTHONPATH="$ROOT/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

stage_check() {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
    $PY -c "import torch, transformers, triton, leantrain, pydantic; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'triton', triton.__version__, 'pydantic', \
pydantic.__version__, torch.cuda.get_device_name())"
    # the image has pytest-xdist; torch and transformers there are older than CI's
    $PY -m pytest -q -p no:cacheprovider -n 8 -rs tests/gpu tests/unit tests/surgery
}

stage_bench() {
    local dir="$OUT/bench"
    mkdir -p "$dir"
    $PY benchmarks/layerdrop.py --device cuda --dtype bf16 --json "$dir/layerdrop-eager.json"
    $PY benchmarks/layerdrop.py --device cuda --dtype bf16 --compile-blocks \
        --json "$dir/layerdrop-compiled.json"
    for kernels in torch triton; do
        LEANTRAIN_RANDOM_LTD_KERNELS=$kernels $PY benchmarks/tokendrop.py --device cuda \
            --dtype bf16 --json "$dir/tokendrop-eager-$kernels.json"
        LEANTRAIN_RANDOM_LTD_KERNELS=$kernels $PY benchmarks/tokendrop.py --device cuda \
            --dtype bf16 --compile-blocks --json "$dir/tokendrop-compiled-$kernels.json"
    done
}

stage_vs_ds() {
    mkdir -p "$OUT/vs-ds"
    $PY benchmarks/vs_deepspeed.py --device cuda --dtype bf16 --json "$OUT/vs-ds/vs_deepspeed.json"
}

stage_ttq() {
    $PY benchmarks/time_to_quality.py --scale gpu --workloads "$1" --out "$OUT/ttq-$1"
}

STAGES="check bench vs-ds ttq-gpt ttq-bert ttq-vit"
for stage in "$@"; do
    case " $STAGES " in *" $stage "*) ;; *) echo "unknown stage '$stage'; choose from: $STAGES"; exit 2 ;; esac
done

failed=0
for stage in "$@"; do
    log="$OUT/$stage.log"
    echo "== $stage · commit $commit · $(date -u +%FT%TZ)" | tee "$log"
    start=$SECONDS
    case $stage in
        check) stage_check ;;
        bench) stage_bench ;;
        vs-ds) stage_vs_ds ;;
        ttq-*) stage_ttq "${stage#ttq-}" ;;
    esac 2>&1 | tee -a "$log"
    status=${PIPESTATUS[0]}
    [ "$status" -eq 0 ] || failed=1
    echo "== $stage: exit $status after $((SECONDS - start)) s" | tee -a "$log"
    if [ -d "$OUT/$stage" ]; then  # each stage's files in one archive: $OUT returns 8 files at most
        tar czf "$OUT/$stage.tgz" -C "$OUT" "$stage" && rm -rf "${OUT:?}/$stage"
    fi
done
exit $failed
