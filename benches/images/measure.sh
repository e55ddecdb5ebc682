#!/usr/bin/env bash
# Sizes of the stack's images: on disk (what `docker image ls` shows) and
# compressed (`docker save | gzip`, close to what a registry stores and a
# pull transfers).
#
#   benches/images/measure.sh [IMAGE...]     # default: the stack's images
set -euo pipefail
images=("$@")
[ ${#images[@]} -gt 0 ] || images=(quiver:latest quiver-airflow:latest quiver-notebook:latest)
printf '| image | on disk | compressed |\n|---|---|---|\n'
for image in "${images[@]}"; do
  disk=$(docker image inspect --format '{{.Size}}' "$image")
  packed=$(docker save "$image" | gzip -6 | wc -c)
  printf '| `%s` | %d MB | %d MB |\n' "$image" $((disk / 1000000)) $((packed / 1000000))
done
