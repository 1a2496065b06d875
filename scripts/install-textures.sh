#!/usr/bin/env bash
# Debian's ufoai-textures gives `train-pipeline demo-data` its photographed metal, concrete, wood and
# stone surfaces; without it the demo data has only scikit-image's 3 (brick, gravel, grass). Install it
# where apt is there; elsewhere say what is missing and go on, since the demo data still works.
set -euo pipefail

ARCHIVE=${UFOAI_TEXTURE_ARCHIVE:-/usr/share/games/ufoai/base/0textures.pk3}
[ -f "$ARCHIVE" ] && exit 0

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

if command -v apt-get >/dev/null; then
    echo "installing Debian's ufoai-textures (about 330 MB) for the demo data's surfaces"
    if as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ufoai-textures >/dev/null; then
        exit 0
    fi
fi
echo "note: ufoai-textures is not installed (needs apt and root); demo data will use 3 surfaces only" >&2
