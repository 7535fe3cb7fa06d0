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
#   ACCELERATE_ARGS  arguments of `accelerate launch`                         (default: the bf16 multi-GPU config)
#   FINETUNE_ARGS    extra arguments of `taskvec-aesthetics finetune`; the defaults are a starting point, not the
#                    paper's schedule
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${WORK:-paper_bank}"
ENCODER="${ENCODER:-openai/clip-vit-large-patch14}"
DATABASES="${DATABASES:-ava flickr-aes tad66k para koniq10k spaq}"
ACCELERATE_ARGS="${ACCELERATE_ARGS:---config_file ${HERE}/accelerate_config.yaml}"
FINETUNE_ARGS="${FINETUNE_ARGS:---epochs 5 --batch-size 32 --checkpoint-every 1000}"

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
    --database "${db}" --root "${ROOTS[$db]}" --base "${WORK}/base" --output "${run}" --resume ${FINETUNE_ARGS}
done

taskvec-aesthetics build-bank "${runs[@]}" --base "${WORK}/base" --output "${WORK}/bank"
