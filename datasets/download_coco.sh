#!/usr/bin/env bash
# Downloads and unpacks MSCOCO 2014 (images + captions/instances annotations) into the
# official layout that `classify --coco-root DIR` reads. About 20 GB of downloads.
set -euo pipefail
root="${1:?usage: bash datasets/download_coco.sh <coco-root>}"
mkdir -p "$root"
cd "$root"
for archive in train2014.zip val2014.zip; do
  [ -d "${archive%.zip}" ] && { echo "${archive%.zip}/ exists, skipping"; continue; }
  curl -fL --retry 3 -C - -o "$archive" "http://images.cocodataset.org/zips/$archive"
  unzip -q "$archive" && rm "$archive"
done
if [ ! -f annotations/instances_val2014.json ]; then
  curl -fL --retry 3 -C - -o annotations_trainval2014.zip \
    "http://images.cocodataset.org/annotations/annotations_trainval2014.zip"
  unzip -q annotations_trainval2014.zip && rm annotations_trainval2014.zip
fi
echo "MSCOCO 2014 is ready in $root"
