"""Image folders for reading FID on the built-in set: real held-out images, and the same
images degraded by known amounts, to score against the real training images with `fid`.

Usage: python experiments/reference/fid_degradations.py DATASET_DIR OUT_DIR [COUNT]
DATASET_DIR is the synthetic set (e.g. data/synthetic-coco-seed2014, made by the first run of
any binary); writes OUT_DIR/{train,val,val-24px,val-blur,val-noise}/ with COUNT images each
(default 500). Needs pillow and numpy. Seeded: the noise comes from numpy seed 0.
"""
import os
import sys

import numpy as np
from PIL import Image, ImageFilter


def main():
    dataset, out = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    rng = np.random.default_rng(0)
    sources = {
        split: sorted(os.listdir(os.path.join(dataset, f"{split}2014")))[:count]
        for split in ("train", "val")
    }
    variants = {
        "train": ("train", lambda im: im),
        "val": ("val", lambda im: im),
        # Down to a quarter of the side and back: detail lost, layout kept.
        "val-24px": ("val", lambda im: im.resize((24, 24), Image.BILINEAR).resize(im.size, Image.BILINEAR)),
        "val-blur": ("val", lambda im: im.filter(ImageFilter.GaussianBlur(2))),
        "val-noise": ("val", lambda im: Image.fromarray(np.clip(np.asarray(im, dtype=np.float64) + rng.normal(0, 24, (im.size[1], im.size[0], 3)), 0, 255).astype(np.uint8))),
    }
    for name, (split, change) in variants.items():
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        for file in sources[split]:
            image = Image.open(os.path.join(dataset, f"{split}2014", file)).convert("RGB")
            change(image).save(os.path.join(folder, os.path.splitext(file)[0] + ".png"))
    print(f"{count} images per folder in {out}")


if __name__ == "__main__":
    main()
