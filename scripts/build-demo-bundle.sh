#!/usr/bin/env bash
# Rebuild the demo model bundle that `make run` serves, with our own pipeline end to end on CPU:
# demo data from real textures -> DenseDINO pretraining -> fine-tuned hybrid head -> ONNX bundle.
# Usage: scripts/build-demo-bundle.sh [BUNDLE_DIR]   (a few minutes on 2 cores)
set -euo pipefail
bundle=${1:-demo/bundle}
work=${DEMO_WORK_DIR:-runs/demo}
bin=${VENV:-.venv}/bin
arch=${DEMO_ARCH:-vit_pico_patch8}
size=${DEMO_SIZE:-64}

rm -rf "$work" && mkdir -p "$work"
"$bin/train-pipeline" demo-data --out "$work/data" --seed 7 --count 240 --labeled-count 120 --image-size 128
"$bin/train-pipeline" pretrain --data "$work/data/unlabeled" --out "$work/pretrain" --arch "$arch" \
    --global-size "$size" --local-size 32 --local-crops 2 --points 4 --batch-size 32 --steps 300 \
    --objective densedino --device cpu --seed 7
"$bin/train-pipeline" finetune --backbone "$work/pretrain" --data "$work/data/labeled" --out "$work/finetune" \
    --image-size "$size" --steps 300 --batch-size 16 --device cpu --seed 7
"$bin/train-pipeline" evaluate --model "$work/finetune" --data "$work/data/labeled" --out "$work/eval"
rm -rf "$bundle"
"$bin/train-pipeline" export --model "$work/finetune" --out "$bundle"
"$bin/train-pipeline" evaluate --model "$bundle" --data "$work/data/labeled" --out "$work/eval-bundle"
echo "demo bundle written to $bundle"
