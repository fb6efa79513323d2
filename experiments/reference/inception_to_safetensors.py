"""Converts pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth, from
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth)
to safetensors under the same tensor names, for `--inception` of `fid` and `evaluate-dalle`.

vislang reads the .pth itself; the conversion is for those who keep weights as safetensors.
The checksum of the .pth is printed, so that a score computed from the converted file can be
traced back to the official one (FID outputs record the checksum of the file they read).

Usage: python experiments/reference/inception_to_safetensors.py IN.pth OUT.safetensors
Needs torch and safetensors.
"""
import hashlib
import sys

import torch
from safetensors.torch import save_file


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    source, target = sys.argv[1], sys.argv[2]
    with open(source, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    state = torch.load(source, map_location="cpu", weights_only=True)
    tensors = {
        name: tensor.contiguous()
        for name, tensor in state.items()
        if not name.endswith("num_batches_tracked")
    }
    save_file(tensors, target, metadata={"source_sha256": digest})
    official = digest.startswith("6726825d")
    print(f"{len(tensors)} tensors -> {target}; source sha256 {digest} ({'official' if official else 'NOT the official file'})")


if __name__ == "__main__":
    main()
