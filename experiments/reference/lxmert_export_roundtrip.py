"""Proves that `export-lxmert` writes folders Hugging Face loads: LxmertForPreTraining.from_pretrained
must find every parameter (no missing, unexpected or misshapen tensors) and, on the committed
fixture, reproduce the fixture's reference outputs.

    pip install torch transformers safetensors
    cargo run --release --bin export-lxmert -- --from tests/fixtures/lxmert --out /tmp/lxmert-export
    python3 experiments/reference/lxmert_export_roundtrip.py /tmp/lxmert-export \
        --io tests/fixtures/lxmert/lxmert-io.safetensors

The first command reads the fixture's PyTorch file (pytorch_model.bin) and writes it back in
Hugging Face's layout; a folder exported from a `pretrain-lxmert` run (`--run DIR`) is checked
the same way, without --io. Not needed by CI: tests/lxmert.rs checks the same round trip inside
vislang.
"""

import argparse
import sys

import torch
from safetensors.torch import load_file
from transformers import LxmertForPreTraining

TOLERANCE = 1e-4


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("--io", help="lxmert-io.safetensors of the fixture the folder came from")
    args = parser.parse_args()

    model, info = LxmertForPreTraining.from_pretrained(args.folder, output_loading_info=True)
    model.eval()
    problems = {k: v for k, v in info.items() if v}
    print("loading info:", problems or "every tensor found, none unexpected")
    if problems:
        sys.exit(1)

    if args.io:
        io = load_file(args.io)
        inputs = {
            k: io[k]
            for k in [
                "input_ids",
                "attention_mask",
                "token_type_ids",
                "visual_feats",
                "visual_pos",
                "visual_attention_mask",
            ]
        }
        with torch.no_grad():
            encoder = model.lxmert(**inputs)
            heads = model(**inputs)
        outputs = {
            "language_output": encoder.language_output,
            "vision_output": encoder.vision_output,
            "pooled_output": encoder.pooled_output,
            "prediction_logits": heads.prediction_logits,
            "cross_relationship_score": heads.cross_relationship_score,
        }
        worst = 0.0
        for name, value in outputs.items():
            diff = (value - io[name]).abs().max().item()
            worst = max(worst, diff)
            print(f"{name}: max |exported - reference| = {diff:.2e}")
        if worst > TOLERANCE:
            print(f"FAIL: {worst:.2e} > {TOLERANCE:.0e}")
            sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
