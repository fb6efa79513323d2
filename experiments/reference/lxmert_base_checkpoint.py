"""Writes a base-size LXMERT in the layout unc-nlp/lxmert-base-uncased ships (config.json,
pytorch_model.bin, vocab.txt), randomly initialised (seeded), with reference outputs on a
seeded batch: a stand-in for the released weights, which cannot be downloaded here, at their
exact architecture (9/5/5 layers, 768 wide, 2048-d region features, 1600 object and 400
attribute labels, a 9500-answer QA head).

    pip install torch transformers safetensors
    python3 experiments/reference/lxmert_base_checkpoint.py /tmp/lxmert-base
    cargo run --release --bin export-lxmert -- --from /tmp/lxmert-base --out /tmp/lxmert-base-hf
    python3 experiments/reference/lxmert_export_roundtrip.py /tmp/lxmert-base-hf \
        --io /tmp/lxmert-base/io.safetensors

The vocabulary is BERT's layout (30,522 entries, [PAD] at 0, [UNK] [CLS] [SEP] [MASK] at
100-103) with placeholder words. Not needed by CI.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LxmertConfig, LxmertForPreTraining

SEED = 20261130


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    config = LxmertConfig(num_qa_labels=9500)
    model = LxmertForPreTraining(config).eval()
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    config.to_json_file(out / "config.json")
    vocab = [f"[unused{i}]" for i in range(config.vocab_size)]
    vocab[0], vocab[100], vocab[101], vocab[102], vocab[103] = (
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    )
    for i in range(1000, config.vocab_size):
        vocab[i] = f"word{i}"
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")

    batch, seq, regions = 2, 12, 36
    inputs = dict(
        input_ids=torch.randint(1000, config.vocab_size, (batch, seq)),
        attention_mask=torch.ones(batch, seq, dtype=torch.long),
        token_type_ids=torch.zeros(batch, seq, dtype=torch.long),
        visual_feats=torch.rand(batch, regions, config.visual_feat_dim),
        visual_pos=torch.rand(batch, regions, 4),
        visual_attention_mask=torch.ones(batch, regions, dtype=torch.long),
    )
    inputs["attention_mask"][1, 9:] = 0
    with torch.no_grad():
        encoder = model.lxmert(**inputs)
        heads = model(**inputs)
    io = {k: v.contiguous() for k, v in inputs.items()}
    io["language_output"] = encoder.language_output
    io["vision_output"] = encoder.vision_output
    io["pooled_output"] = encoder.pooled_output
    io["prediction_logits"] = heads.prediction_logits
    io["cross_relationship_score"] = heads.cross_relationship_score
    save_file({k: v.contiguous() for k, v in io.items()}, out / "io.safetensors")
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: {n:,} parameters")


if __name__ == "__main__":
    main()
