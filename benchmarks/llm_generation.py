"""ELMDChatModel against raw transformers ``generate``, and the weight precisions, on the embedded default LLM.

Sections (``--sections``; wrapper, cold and precision by default; kernels on request), each measured in one run:

``wrapper`` (same model object, prompt and settings: greedy, same ``max_new_tokens``): time to first token (TTFT) and
tokens/s of ``chat.stream`` and ``chat.invoke`` as ratios of raw ``model.generate`` (chat template + tokenization
included on both sides; ratio >= 1 means the wrapper is as fast; target >= 0.9). With ``--device cuda`` the same on
the GPU.

``cold`` (CPU, Linux): cold start with a warm cache: a fresh interpreter that loads the chat model and streams the first
token (target < 3 s), next to the same for raw ``load_llm`` + ``generate``; peak resident memory of one chat turn in
a fresh process (target < 1.5 GB), next to the raw baseline's; ``elmd-sdk chat`` in a pseudo-terminal: time from the
command's start to its prompt (target < 1.5 s) and to the first token of a first turn typed at once.

``precision``: one row per setting of ``--settings`` (``float32``, ``bfloat16``, ``float16``, ``int8``, ``int4``;
int8/int4 are weight-only, computing in bfloat16 on the CPU: :mod:`elmd_sdk.models.quantize`), the embedded default
bundle loaded at each (``ELMDChain.default(dtype=..., quantize=...)``, greedy), against float32 in the same run:
decode tokens/s of ``chat.stream`` on the prompt above as a ratio of float32's (interleaved rounds; wall clock and
per CPU-second), TTFT, the bytes of the LLM's weights, peak RSS of a fresh process (Linux) that loads the chain and
answers one turn, and its RSS after that turn once freed memory is handed back (on CUDA: the GPU memory the loaded
model holds instead of both RSS), and over ``--prompts`` MELD dev samples (the closed-set chain, greedy,
``--reply-tokens`` reply tokens): the share of float32's reply tokens reproduced before the first differing one,
the share of identical replies, and the share of samples given the same emotion as float32 (goal: >= 1.5x float32's
decode speed with >= 95% emotion agreement). MELD dev is read from ``--data-root`` (default ``../shared/data`` next
to the repository: ``meld/dev_sent_emo.csv``; never the test split); the samples are drawn with ``--seed``.

How the CPU kernels were chosen, before this benchmark (embedded SmolLM2-135M, one thread, greedy decoding of 32
tokens; tokens per CPU-second as a ratio of float32's; how many of float32's first 32 tokens were reproduced; every
linear layer quantized, the output layer too, which elmd-sdk then chose to keep in bfloat16):

==========================================================  =====  ======
int8 / int4 weight-only on CPU, candidates                  speed  tokens
==========================================================  =====  ======
torch ``_weight_int8pack_mm``, bfloat16 activations (used)  1.38x  32/32
torch ``_weight_int8pack_mm``, float32 activations          0.23x  32/32
torch ``_weight_int4pack_mm_for_cpu``, group 32 (used)      2.11x   7/32
torchao 0.18 ``Int8WeightOnlyConfig``, bfloat16             0.48x  32/32
torchao 0.18 prototype CPU int4 (same kernel), group 64     1.92x   6/32
torchao 0.18 ``Int8DynamicActivationInt8WeightConfig``      0.75x  17/32
torch.ao ``quantize_dynamic`` int8 (deprecated; not w-only) 1.91x   0/32
bfloat16, no quantization                                   1.02x  32/32
==========================================================  =====  ======

The torchao and dynamic-quantization rows come from a one-off script (torchao is no dependency). The ``kernels``
section measures the kernels alone, on the default LLM's 576 x 1536 matrix-vector product: dense, int8 and int4 with
float32, bfloat16 and float16 activations (first run, one thread: int8 47 us, int4 46 us, dense bfloat16 128 us;
554 / 1473 us with float32 activations and 1347 / 2393 us with float16 ones: hence bfloat16 activations whenever
the CPU quantizes).

Run: ``.venv/bin/python benchmarks/llm_generation.py [--sections wrapper,cold,precision] [--max-new-tokens 64]
[--repeats 5] [--cold-runs 3] [--prompts 200] [--reply-tokens 32] [--settings float32,bfloat16,float16,int8,int4]
[--threads N] [--device cuda]`` (the chat measurement needs the dev install's ``pexpect``); on a machine shared
with other jobs, ``--threads 1`` avoids OpenMP spin-waiting that slows every contender alike by an order of magnitude.
The first run converts the GGUF into the safetensors cache (``ELMD_SDK_HOME``); that time is printed separately.
The machine load average is printed at start and end: numbers on a busy machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from _common import dev_subset, meld_parser, read_meld  # also sets HF_HUB_OFFLINE and TOKENIZERS_PARALLELISM

SYSTEM = "You are a warm, attentive friend. Answer in one or two sentences, matching the speaker's feelings."
USER = (
    "Dialogue so far:\n"
    "Monica: I can't believe you finally did it!\n"
    "Chandler: Yeah, I signed the papers this morning. No more spreadsheets.\n"
    "Monica: So what are you going to do now?\n"
    "Utterance: Chandler: Honestly? I have no idea, and it is kind of terrifying.\n"
    "Reply as Monica."
)
TURNS = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]

# Child programs: the clock starts before any import, so interpreter start-up is the only part not counted.
COLD_CHAT = """
import time; t0 = time.perf_counter()
from elmd_sdk.models.chat_model import ELMDChatModel
t1 = time.perf_counter()
chat = ELMDChatModel.load(do_sample=False, max_new_tokens=8)
t2 = time.perf_counter()
stream = chat.stream([("system", {system!r}), ("human", {user!r})])
for chunk in stream:
    if chunk.content:
        break
print(time.perf_counter() - t0, t1 - t0, t2 - t1, flush=True)
stream.close()
"""
COLD_RAW = """
import time; t0 = time.perf_counter()
import torch
from transformers.generation.streamers import BaseStreamer
from elmd_sdk.models.llm import load_llm
class First(BaseStreamer):
    calls = 0
    def put(self, value):
        self.calls += 1
        if self.calls == 2:
            print(time.perf_counter() - t0, flush=True)
    def end(self):
        pass
model, tokenizer = load_llm()
ids = tokenizer.apply_chat_template({turns!r}, add_generation_prompt=True, return_tensors="pt")["input_ids"]
model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False, streamer=First())
"""
# A child's peak RSS: Linux's VmHWM of its own memory. (getrusage's ru_maxrss is no use here: it keeps the parent's
# peak across the fork and exec that start the child, so every child reported at least the benchmark's own memory.)
PEAK_MIB = "int(next(line for line in open('/proc/self/status') if line.startswith('VmHWM')).split()[1]) / 1024"
RSS_CHAT = """
from elmd_sdk.models.chat_model import ELMDChatModel
chat = ELMDChatModel.load(do_sample=False, max_new_tokens={n})
chat.invoke([("system", {system!r}), ("human", {user!r})])
print({peak}, flush=True)
"""
RSS_RAW = """
import torch
from elmd_sdk.models.llm import load_llm
model, tokenizer = load_llm()
ids = tokenizer.apply_chat_template({turns!r}, add_generation_prompt=True, return_tensors="pt")["input_ids"]
model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens={n}, do_sample=False)
print({peak}, flush=True)
"""


def _numbers(program: str) -> list[float]:
    """Run a child interpreter and return the numbers it prints."""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child failed:\n{out.stderr[-2000:]}")
    return [float(word) for word in out.stdout.split()]


@dataclass(frozen=True)
class Turn:
    """One timed reply: wall-clock TTFT and total, process CPU seconds (all threads), new tokens."""

    ttft: float
    wall: float
    cpu: float
    tokens: int


def _raw_turn(model: Any, tokenizer: Any, n: int) -> Turn:
    """Raw baseline: chat template + tokenization + ``generate``."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class FirstToken(BaseStreamer):
        """Records when the first generated token arrives (``generate`` puts the prompt first)."""

        def __init__(self) -> None:
            self.calls, self.at = 0, 0.0

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls == 2:
                self.at = time.perf_counter()

        def end(self) -> None:
            pass

    first = FirstToken()
    t0, c0 = time.perf_counter(), time.process_time()
    ids = tokenizer.apply_chat_template(TURNS, add_generation_prompt=True, return_tensors="pt")["input_ids"]
    ids = ids.to(model.device)
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, streamer=first
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Turn(first.at - t0, wall, cpu, int(out.shape[1] - ids.shape[1]))


def _stream_turn(chat: Any) -> Turn:
    """``chat.stream``; TTFT is the time to the first non-empty chunk."""
    t0, c0 = time.perf_counter(), time.process_time()
    ttft, tokens = 0.0, 0
    for chunk in chat.stream([("system", SYSTEM), ("human", USER)]):
        if chunk.content and not ttft:
            ttft = time.perf_counter() - t0
        if chunk.usage_metadata:  # spread over the chunks, which add up (LangChain's AIMessageChunk addition)
            tokens += chunk.usage_metadata["output_tokens"]
    return Turn(ttft, time.perf_counter() - t0, time.process_time() - c0, tokens)


def _invoke_turn(chat: Any) -> Turn:
    """``chat.invoke``; no first token to time (TTFT is NaN)."""
    t0, c0 = time.perf_counter(), time.process_time()
    reply = chat.invoke([("system", SYSTEM), ("human", USER)])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Turn(float("nan"), wall, cpu, reply.usage_metadata["output_tokens"])


def _interleaved_runs(turns: dict[str, Callable[[], Turn]], repeats: int) -> dict[str, dict[str, float]]:
    """Run every contender once to warm up, then ``repeats`` interleaved rounds, rotating the order each round.

    Per contender: best (least disturbed by other processes) and median TTFT and tokens/s of wall-clock time, and
    the median tokens per CPU-second, which other processes on the machine barely change.
    """
    for run in turns.values():
        run()
    names = list(turns)
    samples: dict[str, list[Turn]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            samples[name].append(turns[name]())
    return {
        name: {
            "best_ttft": min(t.ttft for t in runs),
            "median_ttft": statistics.median(t.ttft for t in runs),
            "best_tps": max(t.tokens / t.wall for t in runs),
            "median_tps": statistics.median(t.tokens / t.wall for t in runs),
            "cpu_tps": statistics.median(t.tokens / t.cpu for t in runs),
            "tokens": statistics.median(t.tokens for t in runs),
        }
        for name, runs in samples.items()
    }


RSS_PRECISION = """
import ctypes, gc, os
from elmd_sdk.chains.chain import ELMDChain
chain = ELMDChain.default(dtype={dtype!r}, quantize={quantize!r}, use_video=False, do_sample=False, max_new_tokens={n})
chain.invoke({user!r})
peak = {peak}
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand what the load freed back to the system
with open("/proc/self/statm") as statm:
    now = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
print(peak, now, flush=True)
"""
SETTINGS = {  # row name -> (dtype, quantize)
    "float32": ("float32", "none"),
    "bfloat16": ("bfloat16", "none"),
    "float16": ("float16", "none"),
    "int8": ("auto", "int8"),
    "int4": ("auto", "int4"),
}


def parse_args() -> argparse.Namespace:
    """Command-line options (``--data-root``: where ``meld/dev_sent_emo.csv`` is, for the precision section)."""
    p = meld_parser(__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="wrapper,cold,precision", help="from wrapper, cold, precision, kernels")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cold-runs", type=int, default=3)
    p.add_argument("--prompts", type=int, default=200, help="MELD dev samples of the precision agreement")
    p.add_argument("--reply-tokens", type=int, default=32, help="reply length limit of the MELD dev answers")
    p.add_argument("--seed", type=int, default=0, help="seed drawing the MELD dev samples")
    p.add_argument("--max-history", type=int, default=4, help="history turns kept per MELD sample")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"precision rows, from {', '.join(SETTINGS)}")
    p.add_argument("--device", default=None, help="torch device of the wrapper and precision sections (cuda)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads here and in the children (default: torch's own)"
    )
    args = p.parse_args()
    args.sections = set(args.sections.split(","))
    args.settings = ["float32", *(name for name in args.settings.split(",") if name != "float32")]
    unknown = (args.sections - {"wrapper", "cold", "precision", "kernels"}) | (set(args.settings) - set(SETTINGS))
    if unknown:
        p.error(f"unknown section or setting: {', '.join(sorted(unknown))}")
    return args


def main() -> None:
    args = parse_args()
    if args.threads:  # before torch is imported, so children inherit it too
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    print(f"cpus={os.cpu_count()} load average at start={os.getloadavg()}")
    import torch

    print(f"torch threads={torch.get_num_threads()} device={args.device or 'cpu'}")
    if "wrapper" in args.sections:
        wrapper_section(args)
    if "cold" in args.sections:
        cold_section(args)
    if "precision" in args.sections:
        precision_section(args)
    if "kernels" in args.sections:
        kernels_section()
    print(f"\nload average at end={os.getloadavg()}")


def wrapper_section(args: argparse.Namespace) -> None:
    """Throughput and TTFT of chat.stream and chat.invoke against raw generate, one model object."""
    from elmd_sdk.models.chat_model import ELMDChatModel
    from elmd_sdk.models.llm import load_llm

    t0 = time.perf_counter()
    model, tokenizer = load_llm(device=args.device)
    print(
        f"load_llm() in-process (includes the one-time GGUF conversion if the cache was cold): "
        f"{time.perf_counter() - t0:.2f} s"
    )
    chat = ELMDChatModel(hf_model=model, tokenizer=tokenizer, do_sample=False, max_new_tokens=args.max_new_tokens)
    n = args.max_new_tokens

    results = _interleaved_runs(
        {
            "raw generate": lambda: _raw_turn(model, tokenizer, n),
            "chat.stream": lambda: _stream_turn(chat),
            "chat.invoke": lambda: _invoke_turn(chat),
        },
        args.repeats,
    )
    raw = results["raw generate"]
    print(f"\nthroughput, greedy, max_new_tokens={n}, {args.repeats} interleaved rounds (best | median):")
    for name, r in results.items():
        print(
            f"  {name:13s} tokens={r['tokens']:.0f}  tokens/s={r['best_tps']:6.2f} | {r['median_tps']:6.2f}"
            f"  ratio={r['best_tps'] / raw['best_tps']:.3f} | {r['median_tps'] / raw['median_tps']:.3f}"
            f"  tokens/CPU-s={r['cpu_tps']:6.2f} ratio={r['cpu_tps'] / raw['cpu_tps']:.3f}"
        )
        if r["best_ttft"] == r["best_ttft"]:  # invoke has no first token to time (NaN)
            print(
                f"  {'':13s} TTFT={r['best_ttft'] * 1000:6.1f} | {r['median_ttft'] * 1000:6.1f} ms"
                f"  ratio raw/wrapper={raw['best_ttft'] / r['best_ttft']:.3f} | "
                f"{raw['median_ttft'] / r['median_ttft']:.3f}"
            )
    print("  target: every ratio >= 0.9")


def cold_section(args: argparse.Namespace) -> None:
    """Cold start, peak memory and the chat command's start, each in fresh processes (CPU)."""
    n = args.max_new_tokens
    fill = {"system": SYSTEM, "user": USER, "turns": TURNS, "n": n, "peak": PEAK_MIB}
    cold_chat = [_numbers(COLD_CHAT.format(**fill)) for _ in range(args.cold_runs)]
    cold_raw = [_numbers(COLD_RAW.format(**fill))[0] for _ in range(args.cold_runs)]
    chat_s, raw_s = statistics.median(run[0] for run in cold_chat), statistics.median(cold_raw)
    print(f"\ncold start to first token, warm cache, fresh interpreter (median of {args.cold_runs}):")
    print(f"  ELMDChatModel.load + stream: {chat_s:.2f} s")
    for total, imports, load in cold_chat:
        first = total - imports - load
        print(f"    run: {total:.2f} s = import {imports:.2f} + load {load:.2f} + first token {first:.2f}")
    print(f"  raw load_llm + generate:     {raw_s:.2f} s  ratio raw/wrapper={raw_s / chat_s:.3f}")
    print("  target: wrapper < 3 s")

    rss_chat, rss_raw = _numbers(RSS_CHAT.format(**fill))[0], _numbers(RSS_RAW.format(**fill))[0]
    print(f"\npeak resident memory of one turn (max_new_tokens={n}), fresh process:")
    print(
        f"  ELMDChatModel: {rss_chat:.0f} MiB   raw load_llm + generate: {rss_raw:.0f} MiB   "
        f"ratio wrapper/raw={rss_chat / rss_raw:.3f}"
    )
    print("  target: wrapper < 1536 MiB")

    starts = [_chat_start() for _ in range(args.cold_runs)]
    prompt_s, first_s = statistics.median(s[0] for s in starts), statistics.median(s[1] for s in starts)
    print(f"\nelmd-sdk chat in a terminal, warm cache, first turn typed at the prompt (median of {args.cold_runs}):")
    print(f"  start to prompt: {prompt_s:.2f} s (target < 1.5 s)   start to first token of the reply: {first_s:.2f} s")
    print(f"  raw load_llm + generate to first token, same run: {raw_s:.2f} s")


@dataclass(frozen=True)
class Answer:
    """One MELD sample's closed-set answer at one precision: the emotion and the reply's token ids."""

    emotion: str | None
    tokens: tuple[int, ...]


def precision_section(args: argparse.Namespace) -> None:
    """One row per precision setting against float32: speed, TTFT, memory, token and emotion agreement."""
    import torch

    from elmd_sdk.chains.chain import ELMDChain
    from elmd_sdk.evaluate import sample_input

    samples = dev_subset(read_meld(args.data_root, "dev", max_history=args.max_history), args.prompts, args.seed)
    chains: dict[str, Any] = {}
    memory: dict[str, tuple[float, float, float]] = {}  # MiB: weights, peak RSS (GPU: allocated), RSS after the turn
    for name in args.settings:
        dtype, quantize = SETTINGS[name]
        allocated = torch.cuda.memory_allocated() if args.device == "cuda" else 0
        t0 = time.perf_counter()
        chains[name] = ELMDChain.default(
            dtype=dtype,
            quantize=quantize,
            device=args.device,
            use_video=False,
            do_sample=False,
            max_new_tokens=args.max_new_tokens,
        )
        weights = _weight_bytes(chains[name].chat_model.hf_model) / 2**20
        if args.device == "cuda":
            gpu = (torch.cuda.memory_allocated() - allocated) / 2**20
            memory[name] = (weights, gpu, gpu)
        else:
            fill = {"dtype": dtype, "quantize": quantize, "user": USER, "n": args.max_new_tokens, "peak": PEAK_MIB}
            peak, after = _numbers(RSS_PRECISION.format(**fill))
            memory[name] = (weights, peak, after)
        print(f"loaded {name} in {time.perf_counter() - t0:.1f} s")
    speed = _interleaved_runs(
        {name: partial(_stream_turn, chain.chat_model) for name, chain in chains.items()}, args.repeats
    )
    answers: dict[str, list[Answer]] = {}
    for name, chain in chains.items():
        t0 = time.perf_counter()
        tokenizer = chain.chat_model.tokenizer
        answers[name] = []
        for sample in samples:
            result = chain.invoke(sample_input(sample), max_new_tokens=args.reply_tokens)
            ids = tokenizer(result.response, add_special_tokens=False)["input_ids"]
            answers[name].append(Answer(result.emotion, tuple(ids)))
        print(f"answered {len(samples)} MELD dev samples with {name} in {time.perf_counter() - t0:.0f} s")
    _print_precision_table(args, speed, memory, answers)


def _print_precision_table(
    args: argparse.Namespace,
    speed: dict[str, dict[str, float]],
    memory: dict[str, tuple[float, float, float]],
    answers: dict[str, list[Answer]],
) -> None:
    """The precision rows, each against float32."""
    base, reference = speed["float32"], answers["float32"]
    kind = "GPU MiB allocated by the model" if args.device == "cuda" else "MiB of RSS: peak (load + 1 turn), after"
    print(
        f"\nprecision against float32: decode speed on one prompt (max_new_tokens={args.max_new_tokens}, "
        f"{args.repeats} interleaved rounds, median), MiB of the LLM's weights, {kind}, and over {len(reference)} "
        f"MELD dev samples (closed-set chain, greedy, {args.reply_tokens} tokens): reply tokens kept, identical "
        f"replies, same emotion"
    )
    print(
        f"  {'setting':9s} {'tok/s':>7s} {'ratio':>6s} {'tok/CPU-s ratio':>16s} {'TTFT ms':>8s} {'weights':>8s} "
        f"{'peak':>6s} {'after':>6s} {'tokens':>7s} {'replies':>8s} {'emotion':>8s}"
    )
    for name, rows in answers.items():
        r = speed[name]
        kept = sum(_common_prefix(a.tokens, b.tokens) for a, b in zip(rows, reference, strict=True))
        total = sum(len(b.tokens) for b in reference)
        same_reply = sum(a.tokens == b.tokens for a, b in zip(rows, reference, strict=True)) / len(reference)
        same_emotion = sum(a.emotion == b.emotion for a, b in zip(rows, reference, strict=True)) / len(reference)
        ratio = r["median_tps"] / base["median_tps"]
        goal = "goal met" if ratio >= 1.5 and same_emotion >= 0.95 else "goal missed"
        print(
            f"  {name:9s} {r['median_tps']:7.2f} {ratio:5.2f}x {r['cpu_tps'] / base['cpu_tps']:15.2f}x "
            f"{r['median_ttft'] * 1000:8.1f} {memory[name][0]:8.0f} {memory[name][1]:6.0f} {memory[name][2]:6.0f} "
            f"{100 * kept / max(total, 1):6.1f}% "
            f"{100 * same_reply:7.1f}% {100 * same_emotion:7.1f}%  {goal if name != 'float32' else ''}"
        )
    print("  goal: >= 1.5x float32's decode speed with >= 95% emotion agreement")


def kernels_section(rows: int = 1536, columns: int = 576, calls: int = 2000) -> None:
    """Microseconds per matrix-vector product: dense against the int8 and int4 CPU kernels, per activation dtype."""
    import torch

    from elmd_sdk.models.quantize import Int4Linear, Int8Linear

    linear = torch.nn.Linear(columns, rows, bias=False)
    layers = {"dense": linear, "int8": Int8Linear(linear), "int4": Int4Linear(linear)}
    print(f"\nkernels: microseconds per ({columns},) x ({rows}, {columns}) product, {calls} calls (median of 3)")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = torch.randn(1, columns).to(dtype)  # (1, in)
        times = []
        for name, layer in layers.items():
            layer = layer.to(dtype) if name == "dense" else layer
            with torch.inference_mode():
                layer(x)
                runs = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        layer(x)
                    runs.append((time.perf_counter() - t0) / calls * 1e6)
            times.append(f"{name} {statistics.median(runs):7.1f}")
        print(f"  {str(dtype).removeprefix('torch.'):9s} activations: " + "   ".join(times))


def _weight_bytes(model: Any) -> int:
    """Bytes of a model's parameters and buffers, a tensor shared by two names (tied embeddings) counted once."""
    tensors = {t.data_ptr(): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _chat_start() -> tuple[float, float]:
    """Seconds from starting ``elmd-sdk chat`` to its prompt, and to the first character of the first reply."""
    import pexpect

    exe = os.path.join(os.path.dirname(sys.executable), "elmd-sdk")
    t0 = time.perf_counter()
    child = pexpect.spawn(exe, ["chat", "--max-new-tokens", "8"], encoding="utf-8", timeout=600)
    child.expect_exact("you> ")
    prompt = time.perf_counter() - t0
    child.sendline(USER)
    child.expect(r"bot \(\w+ [01]\.\d\d\): \S")
    first = time.perf_counter() - t0
    child.expect_exact("you> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    return prompt, first


if __name__ == "__main__":
    main()
