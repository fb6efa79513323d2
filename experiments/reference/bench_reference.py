"""PyTorch yardstick for `bench --against-pytorch`: one training step of each vislang family (and
DALL-E's key/value-cached generation) written as a PyTorch user would write it, at the shapes and
parameter counts the bench gives it.

The bench starts this script once per family and thread count, as a worker:

    python experiments/reference/bench_reference.py FAMILY THREADS CONFIG_JSON [DEVICE [PRECISION]]

FAMILY is classifier, lxmert, vqvae, dalle, generation, or matmul (one plain `size` x `size`
matrix product per step: the machine's empirical peak). CONFIG_JSON holds the shapes (see
each builder below), and optionally "warmup", the untimed steps before the worker is ready
(default 3). DEVICE is cpu (default), cuda or cuda:N; PRECISION is f32 (default), or
bf16 / f16 under torch.autocast (f16 with a GradScaler), as vislang's --precision. The worker
builds the model, runs the warm-up steps and prints one JSON line
`{"ready": true, "params": N, "device_name": ...}`; N counts parameters and buffers (the VQ-VAE
codebook), as vislang's `num_params` does. Then for every line `STEPS` on standard input it runs
STEPS timed steps and prints `{"examples_per_second": r, "peak_mib": m}`, where m is the peak
resident set grown during those steps (Linux counters, reset before each measurement), or on a
GPU the peak memory allocated. EOF ends it.

Seeded (torch.manual_seed(0)); inputs are random ids and pixels of the right shapes: the cost
of these models does not depend on the values. Needs only torch (measured with torch 2.15).
OpenMP keeps its defaults: the bench starts the worker with PyTorch's own environment, as a
PyTorch user runs it.
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------
# Shared blocks (the counterparts of src/nn)


class Attention(nn.Module):
    """Separate q/k/v/output projections, as vislang's MultiHeadAttention; PyTorch's fused SDPA."""

    def __init__(self, d, heads, d_context=None):
        super().__init__()
        d_context = d_context or d
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d_context, d), nn.Linear(d_context, d)
        self.output = nn.Linear(d, d)

    def split(self, x):
        b, s, d = x.shape
        return x.view(b, s, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x, context, mask=None, causal=False, cache=None):
        q, k, v = self.split(self.query(x)), self.split(self.key(context)), self.split(self.value(context))
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        b, h, s, dh = y.shape
        return self.output(y.transpose(1, 2).reshape(b, s, h * dh))


class FeedForward(nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.intermediate, self.output = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.output(F.gelu(self.intermediate(x)))


class Layer(nn.Module):
    """Post-LN (BERT, LXMERT) or pre-LN (GPT-2, DALL-E) transformer layer."""

    def __init__(self, d, heads, hidden, pre_norm=False, eps=1e-12):
        super().__init__()
        self.attention = Attention(d, heads)
        self.attention_norm, self.feed_forward_norm = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.feed_forward = FeedForward(d, hidden)
        self.pre_norm = pre_norm

    def forward(self, x, mask=None, causal=False, cache=None):
        if self.pre_norm:
            n = self.attention_norm(x)
            x = x + self.attention(n, n, mask, causal, cache)
            return x + self.feed_forward(self.feed_forward_norm(x))
        x = self.attention_norm(x + self.attention(x, x, mask))
        return self.feed_forward_norm(x + self.feed_forward(x))


class TextEmbeddings(nn.Module):
    def __init__(self, vocab, d, positions, segments=2):
        super().__init__()
        self.token, self.position, self.segment = nn.Embedding(vocab, d), nn.Embedding(positions, d), nn.Embedding(segments, d)
        self.norm = nn.LayerNorm(d, eps=1e-12)

    def forward(self, tokens, segments, positions):
        return self.norm(self.token(tokens) + self.position(positions) + self.segment(segments))


class VisualEmbeddings(nn.Module):
    def __init__(self, d_feature, d):
        super().__init__()
        self.feature, self.feature_norm = nn.Linear(d_feature, d), nn.LayerNorm(d, eps=1e-12)
        self.box_position, self.box_norm = nn.Linear(4, d), nn.LayerNorm(d, eps=1e-12)

    def forward(self, features, boxes):
        return (self.feature_norm(self.feature(features)) + self.box_norm(self.box_position(boxes))) / 2


class PatchEncoder(nn.Module):
    """Two stride-2 3x3 convolutions and a patchifying convolution, as src/nn/patch_encoder.rs."""

    def __init__(self, image_size, patch_size, stem, d_feature):
        super().__init__()
        rest = patch_size // 4
        self.stem1 = nn.Conv2d(3, stem, 3, 2, 1)
        self.stem2 = nn.Conv2d(stem, stem, 3, 2, 1)
        self.patchify = nn.Conv2d(stem, d_feature, rest, rest)
        g = image_size // patch_size
        cells = [(c / g, r / g, (c + 1) / g, (r + 1) / g) for r in range(g) for c in range(g)]
        self.register_buffer("boxes", torch.tensor(cells), persistent=False)

    def forward(self, images):
        x = self.patchify(F.gelu(self.stem2(F.gelu(self.stem1(images)))))
        features = x.flatten(2).transpose(1, 2)
        return features, self.boxes.expand(images.shape[0], -1, -1)


def key_padding_bias(padding):
    """[b, s] bool (True = pad) -> [b, 1, 1, s] additive mask SDPA broadcasts over heads/queries."""
    return torch.zeros(padding.shape, dtype=torch.float32).masked_fill(padding, float("-inf"))[:, None, None, :]


def random_padding(batch, seq, generator):
    """Caption lengths between half and all of `seq`, padding after them."""
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=generator)
    lengths[0] = seq
    return torch.arange(seq)[None, :] >= lengths[:, None]


# ---------------------------------------------------------------------------------------------
# Families


class Classifier(nn.Module):
    """`[CLS] img [SEP] text [SEP]` joint classifier (src/models/classifier/single_stream.rs)."""

    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.text = TextEmbeddings(c["vocab_size"], d, c["max_text_len"] + 3)
        self.patches = PatchEncoder(c["image_size"], c["patch_size"], c["stem_channels"], c["d_feature"])
        self.visual = VisualEmbeddings(c["d_feature"], d)
        self.layers = nn.ModuleList(Layer(d, c["n_heads"], c["d_hidden"]) for _ in range(c["n_layers"]))
        self.head = nn.Linear(d, c["n_labels"])
        self.cls_id, self.sep_id = 1, 2

    def forward(self, images, tokens, padding):
        b, s = tokens.shape
        zeros = torch.zeros(b, 1, dtype=torch.long)
        cls = self.text(zeros + self.cls_id, zeros, zeros)
        features, boxes = self.patches(images)
        visual = self.visual(features, boxes) + self.text.segment.weight[0]
        sep = self.text(zeros + self.sep_id, zeros, zeros + 1)
        positions = torch.arange(2, 2 + s).expand(b, s)
        text = self.text(tokens, torch.ones_like(tokens), positions)
        x = torch.cat([cls, visual, sep, text], 1)
        prefix = torch.zeros(b, x.shape[1] - s, dtype=torch.bool)
        mask = key_padding_bias(torch.cat([prefix, padding], 1))
        for layer in self.layers:
            x = layer(x, mask)
        return self.head(x[:, 0])


def classifier_workload(c, g):
    model = Classifier(c)
    b = c["batch_size"]
    images = torch.randn(b, 3, c["image_size"], c["image_size"], generator=g)
    tokens = torch.randint(5, c["vocab_size"], (b, c["text_len"]), generator=g)
    padding = random_padding(b, c["text_len"], g)
    labels = (torch.rand(b, c["n_labels"], generator=g) < 0.2).float()
    return model, lambda: F.binary_cross_entropy_with_logits(model(images, tokens, padding), labels), b


class CrossLayer(nn.Module):
    def __init__(self, d, heads, hidden):
        super().__init__()
        self.cross = Attention(d, heads)
        self.cross_norm = nn.LayerNorm(d, eps=1e-12)
        self.language, self.vision = Layer(d, heads, hidden), Layer(d, heads, hidden)

    def forward(self, lang, vis, lang_mask):
        lang_x = self.cross_norm(lang + self.cross(lang, vis))
        vis_x = self.cross_norm(vis + self.cross(vis, lang, lang_mask))
        return self.language(lang_x, lang_mask), self.vision(vis_x)


class LxmertPretraining(nn.Module):
    """LXMERT on pixels with masked LM, masked patch colours and matching (src/models/lxmert)."""

    def __init__(self, c):
        super().__init__()
        d, h, hid = c["d_model"], c["n_heads"], c["d_hidden"]
        self.patches = PatchEncoder(c["image_size"], c["patch_size"], c["stem_channels"], c["d_feature"])
        self.text = TextEmbeddings(c["vocab_size"], d, c["max_positions"])
        self.visual = VisualEmbeddings(c["d_feature"], d)
        self.language = nn.ModuleList(Layer(d, h, hid) for _ in range(c["n_language_layers"]))
        self.objects = nn.ModuleList(Layer(d, h, hid) for _ in range(c["n_object_layers"]))
        self.cross = nn.ModuleList(CrossLayer(d, h, hid) for _ in range(c["n_cross_layers"]))
        self.pooler = nn.Linear(d, d)
        self.lm_transform, self.lm_norm = nn.Linear(d, d), nn.LayerNorm(d, eps=1e-12)
        self.lm_bias = nn.Parameter(torch.zeros(c["vocab_size"]))
        self.obj_transform, self.obj_norm = nn.Linear(d, d), nn.LayerNorm(d, eps=1e-12)
        self.obj_feature = nn.Linear(d, c["d_region_target"])
        self.matching = nn.Linear(d, 2)
        self.grid = c["image_size"] // c["patch_size"]

    def forward(self, images, tokens, padding, token_targets, token_weights, region_masked, matched):
        b, s = tokens.shape
        features, boxes = self.patches(images)
        half = images.shape[-1] // self.grid // 2
        targets = F.avg_pool2d(images, half).view(b, 3, self.grid, 2, self.grid, 2)
        targets = targets.permute(0, 2, 4, 1, 3, 5).reshape(b, self.grid * self.grid, 12)
        features = features.masked_fill(region_masked[:, :, None], 0.0)
        lang_mask = key_padding_bias(padding)
        lang = self.text(tokens, torch.zeros_like(tokens), torch.arange(s).expand(b, s))
        vis = self.visual(features, boxes)
        for layer in self.language:
            lang = layer(lang, lang_mask)
        for layer in self.objects:
            vis = layer(vis)
        for layer in self.cross:
            lang, vis = layer(lang, vis, lang_mask)
        pooled = torch.tanh(self.pooler(lang[:, 0]))
        words = self.lm_norm(F.gelu(self.lm_transform(lang)))
        logits = words @ self.text.token.weight.t() + self.lm_bias
        lm = F.cross_entropy(logits.flatten(0, 1), token_targets.flatten(), reduction="none")
        lm = (lm * token_weights.flatten()).sum() / token_weights.sum().clamp_min(1)
        objects = self.obj_feature(self.obj_norm(F.gelu(self.obj_transform(vis))))
        weights = region_masked.float().flatten()
        regression = F.smooth_l1_loss(objects.flatten(0, 1), targets.flatten(0, 1), reduction="none").sum(1)
        regression = (regression * weights).sum() / weights.sum().clamp_min(1)
        return lm + regression + F.cross_entropy(self.matching(pooled), matched)


def lxmert_workload(c, g):
    model = LxmertPretraining(c)
    b, s = c["batch_size"], c["text_len"]
    images = torch.randn(b, 3, c["image_size"], c["image_size"], generator=g)
    tokens = torch.randint(5, c["vocab_size"], (b, s), generator=g)
    padding = random_padding(b, s, g)
    token_weights = ((torch.rand(b, s, generator=g) < 0.15) & ~padding).float()
    regions = (c["image_size"] // c["patch_size"]) ** 2
    region_masked = torch.rand(b, regions, generator=g) < 0.15
    matched = torch.randint(0, 2, (b,), generator=g)
    step = lambda: model(images, tokens, padding, tokens, token_weights, region_masked, matched)
    return model, step, b


class Residual(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.conv3, self.conv1 = nn.Conv2d(h, h, 3, padding=1), nn.Conv2d(h, h, 1)

    def forward(self, x):
        return x + self.conv1(F.relu(self.conv3(F.relu(x))))


class VqVae(nn.Module):
    """Paper-layout VQ-VAE with an EMA codebook and dead-code restarts (src/models/vqvae)."""

    def __init__(self, c):
        super().__init__()
        h, stages = c["hidden"], int(math.log2(c["downsample"]))
        self.down = nn.ModuleList(nn.Conv2d(3 if i == 0 else h, h, 4, 2, 1) for i in range(stages))
        self.mix = nn.Conv2d(h, h, 3, padding=1)
        self.enc_res = nn.Sequential(*[Residual(h) for _ in range(c["n_res_blocks"])])
        self.enc_out = nn.Conv2d(h, c["d_code"], 1)
        self.dec_in = nn.Conv2d(c["d_code"], h, 3, padding=1)
        self.dec_res = nn.Sequential(*[Residual(h) for _ in range(c["n_res_blocks"])])
        self.up = nn.ModuleList(nn.ConvTranspose2d(h, 3 if i + 1 == stages else h, 4, 2, 1) for i in range(stages))
        codebook = torch.randn(c["n_codes"], c["d_code"])
        self.register_buffer("codebook", codebook.clone())
        self.register_buffer("cluster_size", torch.ones(c["n_codes"]))
        self.register_buffer("embed_sum", codebook)

    def forward(self, images):
        x = images
        for conv in self.down:
            x = F.relu(conv(x))
        z = self.enc_out(F.relu(self.enc_res(self.mix(x))))
        b, d, gh, gw = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        codes = ((self.codebook ** 2).sum(1)[None] - 2 * flat.detach() @ self.codebook.t()).argmin(1)
        vectors = self.codebook[codes]
        commitment = 0.25 * (flat - vectors).pow(2).mean()
        quantized = flat + (vectors - flat).detach()
        x = F.relu(self.dec_res(self.dec_in(quantized.view(b, gh, gw, d).permute(0, 3, 1, 2))))
        for i, conv in enumerate(self.up):
            x = conv(x) if i + 1 == len(self.up) else F.relu(conv(x))
        return F.mse_loss(x, images) + commitment, flat.detach(), codes

    @torch.no_grad()
    def ema_update(self, z, codes, decay=0.99, eps=1e-5):
        z = z.float()  # under autocast the encoder's output is bf16/f16; the statistics stay f32
        k = self.codebook.shape[0]
        assignment = F.one_hot(codes, k).float()
        self.cluster_size.mul_(decay).add_(assignment.sum(0), alpha=1 - decay)
        self.embed_sum.mul_(decay).add_(assignment.t() @ z, alpha=1 - decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + eps) / (total + eps * k) * total
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        dead = self.cluster_size < 1.0
        seeds = z[torch.randint(0, z.shape[0], (k,))]
        self.codebook[dead] = seeds[dead]
        self.embed_sum[dead] = seeds[dead]
        self.cluster_size[dead] = 1.0


def vqvae_workload(c, g):
    model = VqVae(c)
    images = torch.rand(c["batch_size"], 3, c["image_size"], c["image_size"], generator=g) * 2 - 1
    pending = {}

    def step():
        loss, z, codes = model(images)
        pending["update"] = (z, codes)
        return loss

    def after_step():
        model.ema_update(*pending.pop("update"))

    return model, step, c["batch_size"], after_step


class Dalle(nn.Module):
    """Causal pre-LN decoder over [BOS] text image (src/models/dalle/model.rs)."""

    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.text_len, self.grid = c["text_len"], c["grid"]
        self.text_vocab, self.n_codes = c["text_vocab"], c["n_image_codes"]
        self.image_offset = self.text_vocab + self.text_len + 1
        self.vocab = self.image_offset + self.n_codes
        self.token = nn.Embedding(self.vocab, d)
        self.text_position = nn.Embedding(self.text_len + 1, d)
        self.image_row, self.image_column = nn.Embedding(self.grid[0], d), nn.Embedding(self.grid[1], d)
        self.layers = nn.ModuleList(Layer(d, c["n_heads"], c["d_hidden"], pre_norm=True, eps=1e-5) for _ in range(c["n_layers"]))
        self.final_norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, self.vocab)
        ids = torch.arange(self.vocab)
        n_image = self.grid[0] * self.grid[1]
        segment = torch.zeros(self.text_len + n_image, self.vocab)
        segment[: self.text_len, ids >= self.text_vocab + self.text_len] = -1e9
        segment[self.text_len :, ids < self.image_offset] = -1e9
        self.register_buffer("segment", segment, persistent=False)

    def positions(self):
        k = torch.arange(self.grid[0] * self.grid[1] - 1)
        image = self.image_row(k // self.grid[1]) + self.image_column(k % self.grid[1])
        return torch.cat([self.text_position.weight, image])

    def forward(self, tokens, start=0, caches=None):
        n = tokens.shape[1]
        x = self.token(tokens) + self.positions()[start : start + n]
        for i, layer in enumerate(self.layers):
            x = layer(x, causal=caches is None or start == 0, cache=None if caches is None else caches[i])
        return self.head(self.final_norm(x)) + self.segment[start : start + n]


def dalle_stream(model, b, g):
    text = torch.randint(0, model.text_vocab, (b, model.text_len), generator=g)
    image = torch.randint(0, model.n_codes, (b, model.grid[0] * model.grid[1]), generator=g) + model.image_offset
    bos = torch.full((b, 1), model.text_vocab + model.text_len)
    return torch.cat([bos, text, image[:, :-1]], 1), torch.cat([text, image], 1)


def dalle_workload(c, g):
    model = Dalle(c)
    inputs, targets = dalle_stream(model, c["batch_size"], g)

    def step():
        logp = F.log_softmax(model(inputs), -1).gather(2, targets[:, :, None])[:, :, 0]
        text, image = -logp[:, : model.text_len].mean(), -logp[:, model.text_len :].mean()
        return (text + 7 * image) / 8

    return model, step, c["batch_size"]


@torch.no_grad()
def generate(model, texts, top_k):
    b = texts.shape[0]
    bos = torch.full((b, 1), model.text_vocab + model.text_len)
    caches = [{} for _ in model.layers]
    logits = model(torch.cat([bos, texts], 1), 0, caches)
    position = texts.shape[1] + 1
    codes = []
    for step in range(model.grid[0] * model.grid[1]):
        last = logits[:, -1, model.image_offset :]
        values, indices = last.topk(top_k, -1)
        chosen = indices.gather(1, torch.multinomial(F.softmax(values, -1), 1))
        codes.append(chosen)
        if step + 1 == model.grid[0] * model.grid[1]:
            break
        logits = model(chosen + model.image_offset, position, caches)
        position += 1
    return torch.cat(codes, 1)


# ---------------------------------------------------------------------------------------------
# Worker protocol


def status_kib(field):
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measured(work):
    """Runs work() with the peak-RSS counter reset; returns (result, peak growth in MiB or None)."""
    before = status_kib("VmRSS:")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    result = work()
    peak = status_kib("VmHWM:")
    return result, ((peak - before) / 1024 if reset and peak and before else None)


def main():
    family, threads, config = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    # Optional: the device (cpu, cuda, cuda:N) and the precision of the products (f32, or bf16
    # and f16 autocast, f16 with a GradScaler), as vislang's --device and --precision.
    device = torch.device(sys.argv[4] if len(sys.argv) > 4 else "cpu")
    precision = sys.argv[5] if len(sys.argv) > 5 else "f32"
    torch.set_num_threads(threads)
    torch.set_default_device(device)
    torch.manual_seed(0)
    g = torch.Generator(device=device).manual_seed(0)
    low = {"f32": None, "bf16": torch.bfloat16, "f16": torch.float16}[precision]
    autocast = lambda: torch.autocast(device.type, dtype=low, enabled=low is not None)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    builders = {"classifier": classifier_workload, "lxmert": lxmert_workload, "vqvae": vqvae_workload, "dalle": dalle_workload}
    warmup = config.get("warmup", 3)
    if family == "matmul":
        n = config["size"]
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)

        def run(steps):
            for _ in range(steps):
                torch.mm(a, b)
            synchronize()

        model, per_step = nn.Module(), 1
        run(warmup)
    elif family == "generation":
        model = Dalle(config).eval()
        texts = torch.randint(0, model.text_vocab, (config["batch_size"], model.text_len), generator=g)

        def run(steps):
            with autocast():
                for _ in range(steps):
                    generate(model, texts, config["top_k"]).cpu()

        per_step = config["batch_size"]
        run(min(warmup, 1))
    else:
        built = builders[family](config, g)
        model, loss_of, per_step = built[:3]
        after_step = built[3] if len(built) > 3 else (lambda: None)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=config["weight_decay"], eps=1e-8)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "f16")
        clip = config.get("grad_clip")

        def run(steps):
            for _ in range(steps):
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    loss = loss_of()
                scaler.scale(loss).backward()
                if clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                scaler.step(optimizer)
                scaler.update()
                after_step()
                loss.item()

        run(warmup)
    params = sum(p.numel() for p in model.parameters()) + sum(b.numel() for _, b in model.named_buffers() if _ in dict(model.state_dict()))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(json.dumps({"ready": True, "params": params, "device_name": name}), flush=True)
    for line in sys.stdin:
        steps = int(line)
        synchronize()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        _, peak = measured(lambda: run(steps))
        synchronize()
        rate = steps * per_step / (time.perf_counter() - started)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**20
        print(json.dumps({"examples_per_second": rate, "peak_mib": peak}), flush=True)


if __name__ == "__main__":
    main()
