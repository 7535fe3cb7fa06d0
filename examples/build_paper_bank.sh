#!/usr/bin/env bash
# Build the paper's task-vector bank: fine-tune a CLIP ViT-L/14 base on the six source databases (AVA, FLICKR-AES,
# TAD66K, PARA, KonIQ-10k, SPAQ) under `accelerate launch`, then collect the task vectors into one bank.
#
#   AVA_ROOT=/data/AVA_dataset FLICKR_AES_ROOT=/data/FLICKR-AES TAD66K_ROOT=/data/TAD66K PARA_ROOT=/data/PARA \
#   KONIQ10K_ROOT=/data/koniq10k SPAQ_ROOT=/data/SPAQ bash examples/build_paper_bank.sh
#
# Each root is the database folder as distributed (see `taskvec_aesthetics.data`). Re-running the script skips
# finished runs and resumes interrupted ones from their newest checkpoint.
#
# Optional variables:
#   WORK             output folder: base/, runs/<database>/, bank/            (default: paper_bank)
#   ENCODER          encoder of the base model                                (default: openai/clip-vit-large-patch14)
#   DATABASES        databases to fine-tune, in bank order                    (default: the six above)
#   ACCELERATE_ARGS  arguments of `accelerate launch`   (default: every GPU in bf16 when there are GPUs, else one
#                    CPU process: several CPU processes would each hold a full copy of the model)
#   TOP_BLOCKS       encoder blocks fine-tuned, from the top; the embeddings and the blocks below stay frozen, the
#                    bank leaves them out and personalization caches their output once per image (default: 4; set
#                    it to "all" to fine-tune every block, as the paper does)
#   FINETUNE_ARGS    extra arguments of `taskvec-aesthetics finetune`; the defaults are a starting point, not the
#                    paper's schedule
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${WORK:-paper_bank}"
ENCODER="${ENCODER:-openai/clip-vit-large-patch14}"
DATABASES="${DATABASES:-ava flickr-aes tad66k para koniq10k spaq}"
TOP_BLOCKS="${TOP_BLOCKS:-4}"
FINETUNE_ARGS="${FINETUNE_ARGS:---epochs 5 --batch-size 32 --checkpoint-every 1000}"

gpu_count() {
  python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0
}
if [[ -z "${ACCELERATE_ARGS:-}" ]]; then
  GPUS="$(gpu_count)"
  if (( GPUS > 0 )); then
    ACCELERATE_ARGS="--config_file ${HERE}/accelerate_config.yaml --num_processes ${GPUS}"
  else
    echo "no GPU found: fine-tuning in one CPU process (slow at this scale; set ACCELERATE_ARGS to override)" >&2
    ACCELERATE_ARGS="--cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no"
  fi
fi

root_of() {
  case "$1" in
    ava) echo "${AVA_ROOT:?set AVA_ROOT to the AVA folder}" ;;
    flickr-aes) echo "${FLICKR_AES_ROOT:?set FLICKR_AES_ROOT to the FLICKR-AES folder}" ;;
    tad66k) echo "${TAD66K_ROOT:?set TAD66K_ROOT to the TAD66K folder}" ;;
    para) echo "${PARA_ROOT:?set PARA_ROOT to the PARA folder}" ;;
    koniq10k) echo "${KONIQ10K_ROOT:?set KONIQ10K_ROOT to the KonIQ-10k folder}" ;;
    spaq) echo "${SPAQ_ROOT:?set SPAQ_ROOT to the SPAQ folder}" ;;
    *) echo "no root variable for database '$1'" >&2; return 1 ;;
  esac
}

# Check every root before hours of training start.
declare -A ROOTS
for db in ${DATABASES}; do
  ROOTS[$db]="$(root_of "$db")"
done

if [[ ! -f "${WORK}/base/config.json" ]]; then
  taskvec-aesthetics init-base --encoder "${ENCODER}" --output "${WORK}/base"
fi

FREEZE_ARGS=""
if [[ "${TOP_BLOCKS}" != "all" ]]; then
  # Count the encoder's blocks as the library sees them, on the meta device (no weights are read).
  NUM_BLOCKS="$(python -c "import sys, torch
from taskvec_aesthetics import AestheticConfig, AestheticModel
with torch.device('meta'):
    print(AestheticModel(AestheticConfig.from_pretrained(sys.argv[1])).adapter.num_blocks)" "${WORK}/base")"
  if ! [[ "${TOP_BLOCKS}" =~ ^[0-9]+$ ]] || (( TOP_BLOCKS < 1 )); then
    echo "TOP_BLOCKS must be a positive number of blocks or \"all\", received '${TOP_BLOCKS}'" >&2
    exit 2
  fi
  if (( TOP_BLOCKS < NUM_BLOCKS )); then
    FREEZE_ARGS="--freeze-prefix-blocks $(( NUM_BLOCKS - TOP_BLOCKS ))"
  fi
fi

runs=()
for db in ${DATABASES}; do
  run="${WORK}/runs/${db}"
  runs+=("${run}")
  if [[ -f "${run}/finetune_result.json" ]]; then
    echo "${db}: already fine-tuned (${run})"
    continue
  fi
  # shellcheck disable=SC2086  # the *_ARGS variables hold several arguments
  accelerate launch ${ACCELERATE_ARGS} -m taskvec_aesthetics.cli finetune \
    --database "${db}" --root "${ROOTS[$db]}" --base "${WORK}/base" --output "${run}" --resume ${FREEZE_ARGS} ${FINETUNE_ARGS}
done

taskvec-aesthetics build-bank "${runs[@]}" --base "${WORK}/base" --output "${WORK}/bank"
