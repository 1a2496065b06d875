#!/usr/bin/env bash
# Tiny demo pipeline whose outputs must not change under a refactor: demo data -> finetune and
# fit-normal on a random test_vit3 at 64 px -> export (of the finetune run) -> evaluate. Prints the
# sha256 of one image's probability map through the bundle (the service's predictor, as a PNG) and of
# the graph, the finetune weights, the runs' metrics and thresholds and the evaluation's metrics.
# Usage: scripts/pipeline-checksums.sh [WORK_DIR]
set -euo pipefail
work=${1:-runs/pipeline-checksums}
py=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 PYTHONPATH=${PYTHONPATH:-$PWD}
cli() { "$py" -m training.cli "$@"; }

rm -rf "$work" && mkdir -p "$work"
cli demo-data --out "$work/data" --seed 3 --count 4 --labeled-count 24 --image-size 128 --lines 2
cli finetune --backbone random:test_vit3 --data "$work/data/labeled" --out "$work/finetune" \
    --image-size 64 --steps 6 --batch-size 4 --device cpu --seed 3 --quiet
cli fit-normal --backbone random:test_vit3 --data "$work/data/labeled" --out "$work/fit-normal" \
    --image-size 64 --bank-size 256 --device cpu --seed 3 --quiet
cli export --model "$work/finetune" --out "$work/bundle"
cli evaluate --model "$work/bundle" --data "$work/data/labeled" --out "$work/eval" --quiet
image=$(ls "$work/data/labeled/images" | head -1)
"$py" - "$work/bundle" "$work/data/labeled/images/$image" "$work/map.png" <<'PY'
import sys

import numpy as np
from PIL import Image

from inspect_svc.bundle import load_bundle
from inspect_svc.engine.predictor import Predictor

bundle_dir, image_path, out = sys.argv[1:4]
predictor = Predictor(load_bundle(bundle_dir), providers=["CPUExecutionProvider"], intra_op_threads=1)
probs = predictor.predict(np.asarray(Image.open(image_path).convert("RGB")))
Image.fromarray(np.round(probs * 255).astype(np.uint8)).save(out)
PY
cd "$work"
sha256sum map.png bundle/model.onnx finetune/model.pt finetune/metrics.json finetune/threshold.json fit-normal/metrics.json fit-normal/threshold.json \
    eval/metrics.json
