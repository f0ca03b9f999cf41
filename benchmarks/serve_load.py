"""Load test of ``elmd-sdk serve`` on loopback, with the in-process chain as the baseline of the same run.

1. Baseline: the in-process ``ELMDChain`` (embedded default bundle, or ``--bundle``) answers ``--requests``
   utterances one after another (greedy, ``max_new_tokens=--max-tokens``): completion tokens/s. The chain is then
   freed, so it does not compete with the server for the CPU.
2. ``elmd-sdk serve`` starts as a subprocess on a free loopback port (``--max-concurrency`` >= the clients); the
   official ``openai`` client streams (``stream_options.include_usage``, temperature 0, fixed ``max_tokens``):
   a. one client, the baseline's requests: tokens/s and its ratio to the in-process chain (target >= 0.9);
   b. ``--burst-clients`` threads sending ``--burst-requests`` requests each back to back: aggregate tokens/s
      and its ratio to one client (target >= 2);
   c. ``--clients`` streaming clients for ``--duration`` s: requests served, failed (an exception, a non-200
      status, no emotion in the first chunk or no usage; target 0) and lost (still running 60 s after the end;
      target 0), p50/p99 time to the first content delta, p50 total latency.
   Then SIGTERM: the server should exit with status 0 within ``--stop-timeout`` s.
Completion tokens are the server's ``usage.completion_tokens`` and, in-process, ``ELMDResult.usage["output_tokens"]``.

    .venv/bin/python benchmarks/serve_load.py [--bundle DIR] [--clients 8] [--duration 120] [--max-tokens 48]
        [--threads N] [--json OUT]

On a machine shared with other jobs, ``--threads 1`` avoids OpenMP spin-waiting (the server inherits it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import percentile  # also sets HF_HUB_OFFLINE and TOKENIZERS_PARALLELISM

UTTERANCES = [
    "I finally got the job I've been chasing for two years!",
    "My dog died this morning and the house feels so empty.",
    "Someone keyed my car in the parking lot and nobody saw anything.",
    "Wait, you're telling me Ross and Rachel got married in Vegas?",
    "I have to give a speech in front of the whole company tomorrow.",
    "Can you pass me the salt, please?",
    "He ate my sandwich again, the one with my name on it.",
    "The milk in the fridge smells like something died in it.",
]


@dataclass
class Outcome:
    """One request: completion tokens, seconds to the first content delta and in all, the error if it failed."""

    text: str = ""
    tokens: int = 0
    ttft: float = float("nan")
    total: float = float("nan")
    error: str | None = None


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the embedded default bundle)")
    p.add_argument("--clients", type=int, default=8, help="parallel streaming clients of the load run")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of the load run")
    p.add_argument("--max-tokens", type=int, default=48, help="max_tokens of every request")
    p.add_argument("--requests", type=int, default=8, help="sequential requests of the baseline and of one client")
    p.add_argument("--burst-clients", type=int, default=8, help="concurrent clients of the throughput part")
    p.add_argument("--burst-requests", type=int, default=3, help="requests per client of the throughput part")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads here and in the server")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for /health")
    p.add_argument("--stop-timeout", type=float, default=30.0, help="seconds the server may take to exit on SIGTERM")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args()


def machine() -> dict[str, Any]:
    """Cores, CPU model, torch threads and load average."""
    import torch

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }


def announce() -> tuple[str, dict[str, Any]]:
    """Print the command line and the machine (:func:`machine`) a benchmark runs with, and return both."""
    command = shlex.join([sys.executable, *sys.argv])
    host = machine()
    print(f"command: {command}")
    print(f"machine: {host['cores']} cores, {host['cpu_model']}, torch threads {host['torch_threads']}, "
          f"load average {host['load_average']}", flush=True)  # fmt: skip
    return command, host


Row = tuple[str, str, str, bool | None]  # figure, value, target, met (None: no target)


def print_rows(rows: list[Row], value_width: int, target_width: int) -> None:
    """The results table: each figure, its value, its target and whether the target was met."""
    print(f"{'figure':52s} {'value':>{value_width}s}  {'target':{target_width}s} result")
    for name, value, target, met in rows:
        result = "" if met is None else "met" if met else "MISSED"
        print(f"{name:52s} {value:>{value_width}s}  {target:{target_width}s} {result}")


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The command-line settings, JSON-ready."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def baseline(args: argparse.Namespace) -> dict[str, Any]:
    """The in-process chain answering the utterances in turn: completion tokens/s (the chain is freed after)."""
    from elmd_sdk.chains import ELMDChain

    chain = ELMDChain.from_bundle(args.bundle) if args.bundle else ELMDChain.default()
    settings = {"max_new_tokens": args.max_tokens, "temperature": 0.0, "do_sample": False}
    chain.invoke({"utterance": UTTERANCES[0]}, **settings)  # warm-up
    tokens, wall, replies = 0, 0.0, []
    for i in range(args.requests):
        started = time.perf_counter()
        result = chain.invoke({"utterance": UTTERANCES[i % len(UTTERANCES)]}, **settings)
        wall += time.perf_counter() - started
        tokens += result.usage["output_tokens"]
        replies.append(result.response)
    del chain, result
    gc.collect()
    return {"tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall, "replies": replies}


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    args: argparse.Namespace, port: int, log: Any, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``elmd-sdk serve`` (with ``extra`` options) and wait for /health; returns the process and the served
    model id."""
    import httpx

    concurrency = max(args.clients, args.burst_clients)
    command = [sys.executable, "-m", "elmd_sdk.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--max-concurrency", str(concurrency)] + (["--bundle", str(args.bundle)] if args.bundle else [])
    command += list(extra)
    print(f"server: {shlex.join(command)}", flush=True)
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before /health answered")
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0)
            if health.status_code == 200 and health.json().get("status") == "ok":
                return proc, str(health.json()["model"])
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"/health did not answer within {args.start_timeout} s")


def request(client: Any, model: str, text: str, max_tokens: int) -> Outcome:
    """One streamed chat completion; any departure from the contract counts as a failure."""
    out = Outcome()
    started = time.perf_counter()
    try:
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": text}],
            stream=True,
            stream_options={"include_usage": True},
            temperature=0,
            max_tokens=max_tokens,
        )
        first, usage = True, None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            if first and not (delta.model_extra or {}).get("emotion"):
                out.error = "no emotion in the first chunk"
            first = False
            if delta.content and out.ttft != out.ttft:
                out.ttft = time.perf_counter() - started
            out.text += delta.content or ""
        out.total = time.perf_counter() - started
        if usage is None:
            out.error = out.error or "no usage chunk"
        else:
            out.tokens = usage.completion_tokens
    except Exception as error:  # every failure counts, whatever it is
        out.error = f"{type(error).__name__}: {error}"[:300]
    return out


def clients_run(
    base_url: str, model: str, n: int, max_tokens: int, *, requests: int = 0, seconds: float = 0.0
) -> tuple[list[Outcome], float, int]:
    """``n`` threads sending requests back to back, ``requests`` each or until ``seconds`` have passed.

    Returns the outcomes, the wall time until the last one finished and the requests still running (lost) 60 s
    after the deadline.
    """
    from openai import OpenAI

    outcomes: list[Outcome] = []
    started = time.perf_counter()
    deadline = started + seconds

    def client_loop(k: int) -> None:
        i = 0  # no retries: a 429 or a dropped connection must count as a failure, not be hidden
        with OpenAI(base_url=base_url, api_key="load-test", max_retries=0, timeout=600.0) as client:
            while (i < requests) if requests else (time.perf_counter() < deadline):
                outcomes.append(request(client, model, UTTERANCES[(k + i) % len(UTTERANCES)], max_tokens))
                i += 1

    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True) for k in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=None if requests else max(0.0, deadline + 60 - time.perf_counter()))
    return outcomes, time.perf_counter() - started, sum(thread.is_alive() for thread in threads)


def stop_server(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """SIGTERM, then wait: the exit status and whether it came in time (killed otherwise)."""
    started = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
        return {"exit_code": code, "in_time": True, "seconds": time.perf_counter() - started}
    except subprocess.TimeoutExpired:
        proc.kill()
        return {"exit_code": proc.wait(), "in_time": False, "seconds": time.perf_counter() - started}


def exit_text(code: int) -> str:
    """An exit status as text; a negative one names the signal that ended the process."""
    return str(code) if code >= 0 else f"{code} ({signal.Signals(-code).name})"


def summary(outcomes: list[Outcome], wall: float) -> dict[str, Any]:
    """Served and failed requests, tokens/s over ``wall``, latency percentiles, the first errors."""
    good = [o for o in outcomes if o.error is None]
    return {
        "served": len(good),
        "failed": len(outcomes) - len(good),
        "tokens": sum(o.tokens for o in good),
        "seconds": wall,
        "tokens_per_s": sum(o.tokens for o in good) / wall if wall else float("nan"),
        "ttft_p50": percentile([o.ttft for o in good], 50),
        "ttft_p99": percentile([o.ttft for o in good], 99),
        "total_p50": percentile([o.total for o in good], 50),
        "errors": sorted({o.error for o in outcomes if o.error})[:5],
    }


def main() -> None:
    args = parse_args()
    if args.threads:  # before torch is imported; the server inherits it
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    command, host = announce()

    base = baseline(args)
    print(f"baseline in-process: {base['tokens']} tokens in {base['seconds']:.2f} s", flush=True)

    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="serve_load_", suffix=".log", delete=False)  # noqa: SIM115
    proc, model = start_server(args, port, log)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        clients_run(base_url, model, 1, args.max_tokens, requests=1)  # warm-up
        one_out, _, _ = clients_run(base_url, model, 1, args.max_tokens, requests=args.requests)
        one = summary(one_out, sum(o.total for o in one_out if o.error is None))
        one["same_replies"] = sum(o.text == r for o, r in zip(one_out, base["replies"], strict=False))
        print(f"one client: {one['served']} served, {one['tokens']} tokens in {one['seconds']:.2f} s", flush=True)
        burst_out, burst_wall, _ = clients_run(
            base_url, model, args.burst_clients, args.max_tokens, requests=args.burst_requests
        )
        burst = summary(burst_out, burst_wall)
        print(f"{args.burst_clients} clients: {burst['served']} served in {burst_wall:.2f} s", flush=True)
        load_out, load_wall, lost = clients_run(base_url, model, args.clients, args.max_tokens, seconds=args.duration)
        load = summary(load_out, load_wall) | {"lost": lost}
    finally:
        stop = stop_server(proc, args.stop_timeout)
        log.close()
    server_log = Path(log.name).read_text(errors="replace")
    os.unlink(log.name)

    one_ratio = one["tokens_per_s"] / base["tokens_per_s"]
    burst_ratio = burst["tokens_per_s"] / one["tokens_per_s"]
    rows = [
        ("in-process chain tokens/s", f"{base['tokens_per_s']:.2f}", "(baseline)", None),
        ("one client tokens/s", f"{one['tokens_per_s']:.2f}", "", None),
        ("one client / in-process", f"{one_ratio:.3f}", ">= 0.9", one_ratio >= 0.9),
        ("one client replies equal to in-process (greedy)", f"{one['same_replies']}/{args.requests}", "", None),
        (f"{args.burst_clients} clients aggregate tokens/s", f"{burst['tokens_per_s']:.2f}", "", None),
        (f"{args.burst_clients} clients / one client", f"{burst_ratio:.3f}", ">= 2", burst_ratio >= 2),
        (f"{args.burst_clients} clients failed", str(burst["failed"]), "0", burst["failed"] == 0),
        (f"load: requests served ({args.clients} clients, {args.duration:g} s)", str(load["served"]), "", None),
        ("load: failed", str(load["failed"]), "0", load["failed"] == 0),
        ("load: lost (still running 60 s after the end)", str(lost), "0", lost == 0),
        ("load: aggregate tokens/s", f"{load['tokens_per_s']:.2f}", "", None),
        ("load: TTFT p50 / p99 (ms)", f"{load['ttft_p50'] * 1e3:.0f} / {load['ttft_p99'] * 1e3:.0f}", "", None),
        ("load: total latency p50 (ms)", f"{load['total_p50'] * 1e3:.0f}", "", None),
        ("SIGTERM exit code", exit_text(stop["exit_code"]), "0", stop["exit_code"] == 0),
        (f"SIGTERM exit within {args.stop_timeout:g} s", f"{stop['seconds']:.2f} s", "yes", stop["in_time"]),
    ]
    print(f"\nserve load test, greedy, max_tokens={args.max_tokens}, {args.requests} sequential requests")
    print_rows(rows, 14, 10)
    for part, data in (("one client", one), (f"{args.burst_clients} clients", burst), ("load", load)):
        for error in data["errors"]:
            print(f"  {part} error: {error}")
    if stop["exit_code"] != 0 or not stop["in_time"]:
        print(f"server log tail:\n{server_log[-3000:]}")
    print(f"load average at end={os.getloadavg()}")

    if args.json:
        data = {
            "command": command,
            "machine": host,
            "settings": settings_of(args),
            "baseline": base,
            "one_client": one | {"ratio_to_baseline": one_ratio},
            "burst": burst | {"ratio_to_one_client": burst_ratio},
            "load": load,
            "stop": stop,
            "table": [{"figure": n, "value": v, "target": t, "met": m} for n, v, t, m in rows],
        }
        from elmd_sdk.io import atomic_write_bytes

        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.json, json.dumps(data, indent=2, default=str).encode())
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
