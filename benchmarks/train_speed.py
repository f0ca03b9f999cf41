"""Time per optimizer step of ``train eerg`` (SmolLM2-135M, p-tuning prefix 128, batch 16, no video) against a raw
transformers + PEFT prefix-tuning forward+backward+AdamW step of the very same batches, in one run on one machine.

For each engine setting below, ``--steps`` batches (plus a warm-up one) spread evenly over one epoch of the first
``--samples`` MELD train samples (read from ``--data-root``, default ``../shared/data``; the test split is never read),
in the order ``train eerg`` draws them, are each run as one optimizer step of EERG's differentiable core
(``StageModel``: the examples ``train eerg`` builds, the frozen LLM, the prefix, autocast as Accelerate applies it,
AdamW) and as one raw transformers + PEFT step on the same token ids: ``PeftModel(PrefixTuningConfig(128))`` with
``labels`` on the answer tokens, as a user of raw transformers + PEFT would train it, same precision. ratio = raw
seconds / ours (>= 0.9 is the target: the SDK adds no more than 10%). The whole ``train eerg`` loop (retrieval,
validation, checkpoints, metrics) is timed by the README's "Does training help?" run.

Settings: ``before`` (random batches, fp32: the engine before length grouping and the bf16 default),
``grouped`` (length-grouped batches, fp32), ``grouped+bf16`` (the defaults now, on a CPU with native bf16) and
``grouped+bf16+cap`` (plus ``--max-prompt-tokens``). It prints the projected steps per hour (target: >= 300 steps
of batch 16 in 60 minutes) and a profile of one step of the default setting: forward / backward / optimizer split
and the operators taking most CPU time.

Run: ``.venv/bin/python benchmarks/train_speed.py [--steps 4] [--threads 2] [--max-prompt-tokens 256]``
on a quiet machine (other jobs distort every number).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import meld_parser, read_meld

PRE_SEQ_LEN = 128
BATCH = 16


def chosen_batches(samples: list[Any], setting: dict[str, Any], steps: int) -> list[list[Any]]:
    """``steps + 1`` batches (the first is a warm-up) evenly spaced over one epoch in the order ``run_stage`` uses
    (``epoch_order``, seed 0): a length-grouped epoch sorts each mega-batch longest first, so its first batches alone
    would be the slowest ones, not typical ones."""
    from elmd_sdk.models.llm import load_llm
    from elmd_sdk.trainers.examples import PromptConfig, build_examples
    from elmd_sdk.trainers.stage import epoch_order

    _, tokenizer = load_llm(None)
    prompt = PromptConfig(use_video=False, max_prompt_tokens=setting["cap"])
    examples = build_examples(samples, [None] * len(samples), tokenizer, prompt, with_response=True, video_tokens=0)
    lengths = [sum(len(p) for p in e.pieces) + len(e.target) for e in examples]
    order = epoch_order(lengths, BATCH, 0, 0, setting["grouped"]).tolist()
    count = len(order) // BATCH
    positions = [round(i * (count - 1) / steps) for i in range(steps + 1)]
    return [[examples[i] for i in order[k * BATCH : (k + 1) * BATCH]] for k in positions]


def our_steps(batches: list[list[Any]], bf16: bool, profiler: Any = None) -> list[tuple[float, float, float]]:
    """(forward, backward, optimizer) seconds of each optimizer step of EERG's differentiable core as ``run_stage``
    runs it: ``StageModel`` (the frozen LLM in the mixed-precision dtype, the text-started prefix 128) forward under
    autocast, the answer-token loss, backward, AdamW; the warm-up step dropped. ``profiler`` (a torch.profiler
    context) wraps the last step."""
    from elmd_sdk.models.llm import load_llm
    from elmd_sdk.models.prefix import PrefixConfig, attach_prefix
    from elmd_sdk.models.prefix_init import prefix_from_tokens
    from elmd_sdk.trainers.stage_model import StageModel

    llm, _ = load_llm(None, dtype=torch.bfloat16 if bf16 else torch.float32)
    llm.requires_grad_(False)
    first = batches[0][0]
    prefix = prefix_from_tokens(llm, [t for p in first.pieces for t in p], PrefixConfig.for_model(llm, PRE_SEQ_LEN))
    attach_prefix(llm, prefix)
    model = StageModel(llm, None).train()
    optimizer = torch.optim.AdamW(prefix.parameters(), lr=2e-2)
    phases = []
    for k, rows in enumerate(batches):
        last = profiler is not None and k == len(batches) - 1
        with profiler if last else contextlib.nullcontext():
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                nll = model([e.pieces for e in rows], [None] * len(rows), [e.target for e in rows])  # (B,)
            t1 = time.perf_counter()
            (nll.sum() / sum(len(e.target) for e in rows)).backward()
            t2 = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad()
            t3 = time.perf_counter()
        phases.append((t1 - t0, t2 - t1, t3 - t2))
    return phases[1:]


def raw_steps(batches: list[list[Any]], bf16: bool) -> list[float]:
    """Seconds per raw transformers + PEFT prefix-tuning step on ``batches`` (warm-up step dropped)."""
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from elmd_sdk.models.gguf_cache import ensure_gguf_cache
    from elmd_sdk.paths import default_llm_gguf

    dtype = torch.bfloat16 if bf16 else torch.float32
    base = AutoModelForCausalLM.from_pretrained(ensure_gguf_cache(default_llm_gguf()), dtype=dtype)
    model = get_peft_model(base, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=PRE_SEQ_LEN))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    model.train()
    times = []
    for examples in batches:
        batch = [[*(t for p in e.pieces for t in p), *e.target] for e in examples]
        length = max(len(row) for row in batch)
        ids = torch.zeros(len(batch), length, dtype=torch.long)  # (B, T), left padding
        mask = torch.zeros(len(batch), length, dtype=torch.long)
        labels = torch.full((len(batch), length), -100)
        for i, (row, example) in enumerate(zip(batch, examples, strict=True)):
            ids[i, length - len(row) :] = torch.tensor(row)
            mask[i, length - len(row) :] = 1
            labels[i, length - len(example.target) :] = ids[i, length - len(example.target) :]
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return times[1:]


@torch.no_grad()
def start_losses(samples: list[Any], n: int = 64) -> dict[str, float]:
    """Answer loss (nats per token) of the first ``n`` samples before any training: the base LLM, a random N(0, 1)
    prefix (ChatGLM2's start) and a prefix from the LLM's keys/values of the prompt's opening tokens (the default)."""
    from elmd_sdk.models.llm import load_llm
    from elmd_sdk.models.prefix import PrefixConfig, PrefixEncoder, attach_prefix, detach_prefix
    from elmd_sdk.models.prefix_init import prefix_from_tokens
    from elmd_sdk.trainers.examples import PromptConfig, build_examples
    from elmd_sdk.trainers.stage_model import StageModel

    llm, tokenizer = load_llm(None, dtype=torch.float32)
    llm.requires_grad_(False)
    examples = build_examples(
        samples[:n], [None] * n, tokenizer, PromptConfig(use_video=False), with_response=True, video_tokens=0
    )
    model = StageModel(llm, None).eval()

    def loss() -> float:
        nll = torch.cat([model([e.pieces], [None], [e.target]) for e in examples])  # (n,)
        return float(nll.sum()) / sum(len(e.target) for e in examples)

    config = PrefixConfig.for_model(llm, PRE_SEQ_LEN)
    out = {"base LLM": loss()}
    torch.manual_seed(0)
    for name, prefix in (
        ("random prefix", PrefixEncoder(config)),
        ("text prefix", prefix_from_tokens(llm, [t for p in examples[0].pieces for t in p], config)),
    ):
        attach_prefix(llm, prefix.eval())
        out[name] = loss()
        detach_prefix(llm)
    return out


def profile_step(samples: list[Any]) -> None:
    """Forward / backward / optimizer split of two default-setting steps (spread over an epoch, as timed above), and
    the top operators of the last one by CPU time."""
    from torch.profiler import ProfilerActivity, profile

    batches = chosen_batches(samples, {"grouped": True, "cap": None}, 2)
    prof = profile(activities=[ProfilerActivity.CPU])
    steps = our_steps(batches, bf16=True, profiler=prof)
    phases = {name: [step[i] for step in steps] for i, name in enumerate(("forward", "backward", "optimizer"))}
    total = sum(statistics.mean(v) for v in phases.values())
    print("profile of one grouped+bf16 step (mean of 2):")
    for name, values in phases.items():
        print(f"  {name:9s} {statistics.mean(values):6.2f} s  {100 * statistics.mean(values) / total:5.1f}%")
    print("  top operators by self CPU time (torch.profiler, one step):")
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)
    print("\n".join("    " + line for line in table.splitlines()))


def main() -> None:
    p = meld_parser(__doc__)
    p.add_argument("--steps", type=int, default=4, help="measured steps per setting (after one warm-up step)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all cores)")
    p.add_argument("--max-prompt-tokens", type=int, default=256, help="the cap of the last setting")
    p.add_argument("--samples", type=int, default=800, help="MELD train samples the runs draw batches from")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    samples = read_meld(args.data_root, "train")[: args.samples]
    print(
        f"machine: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, native bf16: {bf16}; load {os.getloadavg()[0]:.2f}"
    )
    print(f"data: first {len(samples)} samples of MELD train; batch {BATCH}, prefix {PRE_SEQ_LEN}, no video/retrieval")
    settings = [
        {"name": "before", "grouped": False, "precision": "no", "cap": None},
        {"name": "grouped", "grouped": True, "precision": "no", "cap": None},
    ]
    if bf16:
        settings.append({"name": "grouped+bf16", "grouped": True, "precision": "bf16", "cap": None})
        settings.append(
            {"name": "grouped+bf16+cap", "grouped": True, "precision": "bf16", "cap": args.max_prompt_tokens}
        )
    results = []
    print(f"{'setting':18s} {'ours s/step':>12s} {'raw s/step':>11s} {'ratio':>6s} {'steps/h':>8s}")
    for setting in settings:
        batches = chosen_batches(samples, setting, args.steps)
        bf16 = setting["precision"] == "bf16"
        ours, raw = [sum(step) for step in our_steps(batches, bf16)], raw_steps(batches, bf16)
        row = {**setting, "ours_s": statistics.mean(ours), "raw_s": statistics.mean(raw), "ours": ours, "raw": raw}
        row["ratio"] = row["raw_s"] / row["ours_s"]
        row["steps_per_hour"] = 3600 / row["ours_s"]
        results.append(row)
        print(
            f"{setting['name']:18s} {row['ours_s']:12.2f} {row['raw_s']:11.2f} {row['ratio']:6.2f} "
            f"{row['steps_per_hour']:8.0f}",
            flush=True,
        )
    default = results[2] if bf16 else results[1]
    before = results[0]
    print(
        f"speed-up of the defaults over 'before': {before['ours_s'] / default['ours_s']:.2f}x; "
        f"300 steps of batch 16 take {300 * default['ours_s'] / 60:.0f} min (target < 60)"
    )
    print("answer loss before training, first 64 samples (nats/token, float32):")
    for name, value in start_losses(samples).items():
        print(f"  {name:14s} {value:.3f}")
    profile_step(samples)
    print(f"load at end {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
