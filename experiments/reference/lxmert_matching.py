"""Reference check: can Hugging Face's LxmertForPreTraining learn cross-modality matching on the
synthetic set's box features at the size and budget pretrain-lxmert uses?

Usage (from the repository root, after `cargo run --release --bin pretrain-lxmert` and
`lxmert-features boxes` + `lxmert-features convert --tsv data/synthetic-boxes.tsv
--out data/boxes.safetensors`):

    python experiments/reference/lxmert_matching.py EPOCHS LR X_LAYERS [mlm|no] [DATA_DIR]

Matching only unless the fourth argument is `mlm` (then masked-LM labels are also passed;
masking is applied to every caption, labels only on matched pairs, so [MASK] does not leak the
answer). Needs torch and transformers (measured with torch 2.15, transformers 5.23).
Seeded: torch and random seed 0, masks per epoch from random.Random(epoch)."""
import json, math, random, sys, time
import numpy as np
import torch
from safetensors.numpy import load_file
from tokenizers import Tokenizer
from transformers import LxmertConfig, LxmertForPreTraining

root = sys.argv[5] + "/synthetic-coco-seed2014/annotations" if len(sys.argv) > 5 else "data/synthetic-coco-seed2014/annotations"
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 12
lr = float(sys.argv[2]) if len(sys.argv) > 2 else 1e-3
x_layers = int(sys.argv[3]) if len(sys.argv) > 3 else 1
mlm = len(sys.argv) > 4 and sys.argv[4] == "mlm"
torch.manual_seed(0)
random.seed(0)
tok = Tokenizer.from_file("runs/lxmert-pretraining/tokenizer.json")
feats = load_file(sys.argv[5] + "/boxes.safetensors" if len(sys.argv) > 5 else "data/boxes.safetensors")
row = {int(i): k for k, i in enumerate(feats["image_ids"])}


def load(split):
    caps = {}
    for a in json.load(open(f"{root}/captions_{split}2014.json"))["annotations"]:
        caps.setdefault(a["image_id"], []).append(tok.encode(a["caption"]).ids)
    return sorted(caps.items())


train, val = load("train"), load("val")
cfg = LxmertConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_attention_heads=4,
                   intermediate_size=256, l_layers=2, r_layers=1, x_layers=x_layers,
                   visual_feat_dim=48, visual_pos_dim=4, task_mask_lm=mlm,
                   task_obj_predict=False, task_qa=False, task_matched=True)
model = LxmertForPreTraining(cfg)
opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
steps = epochs * math.ceil(len(train) / 32)
warm = int(0.1 * steps)
sched = torch.optim.lr_scheduler.LambdaLR(
    opt, lambda s: s / max(1, warm) if s < warm else max(0.0, (steps - s) / (steps - warm)))


def batch(data, idx, rng):
    ids, labels = [], []
    for i in idx:
        swap = rng.random() < 0.5
        src = (i + rng.randrange(1, len(data))) % len(data) if swap else i
        c = data[src][1][rng.randrange(len(data[src][1]))]
        ids.append(c)
        labels.append(0 if swap else 1)
    n = max(map(len, ids))
    t = torch.zeros(len(ids), n, dtype=torch.long)
    m = torch.zeros(len(ids), n, dtype=torch.long)
    for b, c in enumerate(ids):
        t[b, : len(c)] = torch.tensor(c)
        m[b, : len(c)] = 1
    r = [row[data[i][0]] for i in idx]
    f = torch.from_numpy(feats["features"][r])
    bx = torch.from_numpy(feats["boxes"][r])
    nb = torch.from_numpy(feats["num_boxes"][r])
    vm = (torch.arange(f.shape[1])[None] < nb[:, None]).float()
    lm = torch.full_like(t, -100)
    if mlm:
        for b in range(len(ids)):
            for j in range(len(ids[b])):
                if t[b, j] >= 5 and rng.random() < 0.15:
                    lm[b, j] = t[b, j] if labels[b] == 1 else -100
                    u = rng.random()
                    if u < 0.8:
                        t[b, j] = tok.token_to_id("[MASK]")
                    elif u < 0.9:
                        t[b, j] = rng.randrange(5, tok.get_vocab_size())
    extra = dict(masked_lm_labels=lm) if mlm else {}
    return dict(**extra, input_ids=t, attention_mask=m, visual_feats=f, visual_pos=bx,
                visual_attention_mask=vm, matched_label=torch.tensor(labels))


for epoch in range(epochs):
    start = time.time()
    model.train()
    order = list(range(len(train)))
    random.shuffle(order)
    rng = random.Random(epoch)
    total = 0.0
    for s in range(0, len(order), 32):
        out = model(**batch(train, order[s:s + 32], rng))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sched.step()
        total += out.loss.item()
    model.eval()
    rng = random.Random(1234)
    correct = n = 0
    with torch.no_grad():
        for s in range(0, len(val), 64):
            b = batch(val, list(range(s, min(s + 64, len(val)))), rng)
            logits = model(**{k: v for k, v in b.items() if k not in ("matched_label", "masked_lm_labels")}).cross_relationship_score
            correct += (logits.argmax(-1) == b["matched_label"]).sum().item()
            n += len(logits)
    print(f"epoch {epoch + 1}: train loss {total / math.ceil(len(order) / 32):.4f}, "
          f"held-out matching accuracy {correct / n:.3f} ({time.time() - start:.1f}s)", flush=True)
