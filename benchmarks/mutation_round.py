"""A hand-written mutation round over the newest code (issue #27, point 2): how many realistic small bugs do the tests
notice?

Each mutation below is one small edit a developer could plausibly make (an off-by-one at a limit, a swapped operator,
a dropped call, a flipped sign, a wrong default). The script copies the repository's source and tests into a temporary
folder laid out as the installed package (``elmd_sdk/`` with ``chains/``, ``retrievers/`` and ``trainers/`` inside),
applies one mutation at a time to the copy, runs the named test files there with pytest (``-x``: the first failure is
enough) and puts the file back byte for byte (checked by SHA-256) before the next one, also on Ctrl-C. The working
tree is never written to, so it can run while others edit it. A mutation whose text is no longer in the source (the
code changed since it was written) is reported as stale and not counted.

A mutation is caught when the tests fail (or hang past ``--timeout``: reported apart); it survives when they pass.
Before the mutations of a module run, its test files must pass unmutated, else its mutations are skipped.

    .venv/bin/python benchmarks/mutation_round.py                  # every module (about 20 minutes on 2 cores)
    .venv/bin/python benchmarks/mutation_round.py --only serve     # modules whose name contains "serve"
    .venv/bin/python benchmarks/mutation_round.py --check          # only check that every mutation still applies
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    module: str  # the row of the table
    path: str  # the file, relative to the repository root
    old: str  # text that must occur exactly once in the file
    new: str
    why: str
    tests: tuple[str, ...] = ()  # test files to run instead of the module's


TESTS: dict[str, tuple[str, ...]] = {
    "evaluate/bootstrap.py": ("tests/test_eval_bootstrap.py",),
    "serve/app.py": ("tests/test_serve_api.py",),
    "serve/mapping.py": ("tests/test_serve_mapping.py",),
    "chains/chain.py": ("tests/test_chain_core.py", "tests/test_chain_closed_set.py"),
    "chains/input.py": ("tests/test_chain_core.py", "tests/test_chain_input_errors.py", "tests/test_input_values.py"),
    "chains/context.py": ("tests/test_chain_core.py", "tests/test_history_bound.py"),
    "chains/reply.py": ("tests/test_chain_core.py", "tests/test_chain_closed_set.py"),
    "answer/reading.py": ("tests/test_chain_parser.py", "tests/test_chain_closed_set.py"),
    "answer/result.py": ("tests/test_chain_parser.py", "tests/test_chain_closed_set.py"),
    "models/batching.py": ("tests/test_batching.py",),
    "models/closed_set.py": ("tests/test_chain_closed_set.py",),
    "models/peft_adapter.py": ("tests/test_peft_adapter.py",),
    "trainers/emotion_eval.py": ("tests/test_train_examples.py",),
    "io.py": ("tests/test_atomic_writes.py", "tests/test_atomic_folders.py"),
}

BOOTSTRAP, APP, MAPPING = "elmd_sdk/evaluate/bootstrap.py", "elmd_sdk/serve/app.py", "elmd_sdk/serve/mapping.py"
CHAIN, READING, RESULT = "chains/chain.py", "elmd_sdk/answer/reading.py", "elmd_sdk/answer/result.py"
INPUT, CONTEXT, REPLY = "chains/input.py", "chains/context.py", "chains/reply.py"
BATCHING = "elmd_sdk/models/batching.py"
CLOSED, PEFT, EVAL, IO = (
    "elmd_sdk/models/closed_set.py",
    "elmd_sdk/models/peft_adapter.py",
    "trainers/emotion_eval.py",
    "elmd_sdk/io.py",
)

MUTATIONS: list[Mutation] = [
    # -- evaluate/bootstrap.py --------------------------------------------------------------------------------------
    Mutation("evaluate/bootstrap.py", BOOTSTRAP, "(interval[0] > 0 or interval[1] < 0)",
             "(interval[0] > 0 and interval[1] < 0)", "excludes_zero with and for or"),
    Mutation("evaluate/bootstrap.py", BOOTSTRAP, "percentile_interval(values - theirs[1][key])",
             "percentile_interval(theirs[1][key] - values)", "the paired difference's interval flipped"),
    Mutation("evaluate/bootstrap.py", BOOTSTRAP, "else ours_full - theirs_full,", "else theirs_full - ours_full,",
             "the full-sample difference flipped"),
    Mutation("evaluate/bootstrap.py", BOOTSTRAP, "(interval[0] > 0 or", "(interval[0] >= 0 or",
             "an interval starting at 0 said to exclude it"),
    Mutation("evaluate/bootstrap.py", BOOTSTRAP, "if resamples < 1:", "if resamples < 2:",
             "off by one: a single resample refused"),
    Mutation("evaluate/bootstrap.py", BOOTSTRAP, "return full, {key: v[1:] for", "return full, {key: v for",
             "the full-sample row counted as a resample"),
    Mutation("evaluate/bootstrap.py", BOOTSTRAP, "[(100 - CONFIDENCE) / 2, (100 + CONFIDENCE) / 2]",
             "[(100 - CONFIDENCE), (100 + CONFIDENCE) / 2]", "the lower percentile at 5 instead of 2.5"),
    Mutation("evaluate/bootstrap.py", BOOTSTRAP, "else paired_differences(values, full)",
             "else paired_differences(full, values)", "Table 3 rows compared as full minus row"),
    # -- serve/app.py -------------------------------------------------------------------------------------------
    Mutation("serve/app.py", APP, 'yield "data: [DONE]\\n\\n"', 'yield "data: [DONE]\\n"',
             "[DONE] followed by one newline instead of a blank line"),
    Mutation("serve/app.py", APP, 'return scheme.lower() == "bearer" and hmac', "return hmac",
             "the right key accepted under any scheme (Basic)"),
    Mutation("serve/app.py", APP, "if max(declared, read) <= limit:", "if max(declared, read) < limit:",
             "a body declared at exactly the limit refused"),
    Mutation("serve/app.py", APP, "                if read <= limit:\n", "                if read < limit:\n",
             "a body of exactly the limit refused once read"),
    Mutation("serve/app.py", APP, "if self.inside >= self.limit:", "if self.inside > self.limit:",
             "one request more than the limit admitted"),
    Mutation("serve/app.py", APP, "        request_scope.close()  # the place is free before",
             "        pass  # the place is free before", "the place freed only after [DONE] is sent"),
    Mutation("serve/app.py", APP, "        await _shielded_close(stream)\n        request_scope.close()\n\n\n",
             "        await _shielded_close(stream)\n\n\n", "a client that goes away keeps its place"),
    Mutation("serve/app.py", APP, "        except BaseException:\n            request_scope.close()\n            raise",
             "        except BaseException:\n            raise", "a refused request keeps its place"),
    Mutation("serve/app.py", APP, "json.dumps(data, ensure_ascii=False)", "json.dumps(data, ensure_ascii=True)",
             "events written as ASCII escapes"),
    Mutation("serve/app.py", APP, 'if delta["content"] or len(delta) > 1:', 'if delta["content"]:',
             "the opening event (emotion, empty text) dropped"),
    Mutation("serve/app.py", APP, "compare_digest(given.strip().encode()",
             "compare_digest(given.strip().lower().encode()", "the key compared case-insensitively"),
    # -- serve/mapping.py ---------------------------------------------------------------------------------------
    Mutation("serve/mapping.py", MAPPING, "len(request.messages) > config.max_messages",
             "len(request.messages) >= config.max_messages", "the message-count limit checked with >="),
    Mutation("serve/mapping.py", MAPPING, "len(text) > config.max_message_chars",
             "len(text) >= config.max_message_chars", "a message of exactly the limit refused"),
    Mutation("serve/mapping.py", MAPPING, "len(content) > config.max_video_bytes",
             "len(content) >= config.max_video_bytes", "an upload of exactly the limit refused"),
    Mutation("serve/mapping.py", MAPPING, "config.max_video_bytes * 4 // 3 + 4", "config.max_video_bytes * 4 // 3",
             "the base64 pre-check without its padding slack"),
    Mutation("serve/mapping.py", MAPPING, "given.end <= given.start", "given.end < given.start",
             "an empty video range accepted"),
    Mutation("serve/mapping.py", MAPPING, "    if request.stop:\n", "    if request.stop is not None:\n",
             "an empty stop list passed on"),
    Mutation("serve/mapping.py", MAPPING, "if request.temperature is not None:", "if request.temperature:",
             "temperature 0 dropped as if absent"),
    Mutation("serve/mapping.py", MAPPING, "request.background if request.background is not None else",
             "request.background if request.background else", "an empty background field loses to the system text"),
    Mutation("serve/mapping.py", MAPPING, "            if text.strip():\n", "            if text:\n",
             "blank system messages joined into the background"),
    # -- chains/chain.py ----------------------------------------------------------------------------------------
    Mutation("chains/reply.py", REPLY, "kept = tuple(label for label in given if label in chain_wide)",
             "kept = given", "an input's allowed_emotions widening the chain-wide set"),
    Mutation("chains/chain.py", CHAIN,
             "own = [t.text for t in history if t.speaker == words.assistant_name] if self.copy_guard_own_replies",
             "own = [t.text for t in turn.history if t.speaker == words.assistant_name] if self.copy_guard_own_replies",
             "the copy guard over every earlier reply, not only those the prompt holds"),
    Mutation("chains/chain.py", CHAIN, 'or turn.emotion is not None or allowed is not None',
             "or turn.emotion is not None", "a free-mode chain ignoring allowed_emotions"),
    Mutation("chains/input.py", INPUT, "(count - 1 - index) % 2 == 0", "index % 2 == 0",
             "string history alternating from the oldest turn"),
    Mutation("chains/context.py", CONTEXT, "return count_tokens(chat_model, newest(n), with_video) <= budget",
             "return count_tokens(chat_model, newest(n), with_video) < budget",
             "history that fits exactly is cut"),
    Mutation("chains/context.py", CONTEXT, "if bare > budget:", "if bare >= budget:",
             "an utterance that fits exactly refused"),
    Mutation("chains/reply.py", REPLY, 'merged["stop"] = [*options.get("stop", []), *extra]',
             'merged["stop"] = extra', "a caller's stop strings replacing the chain's"),
    Mutation("chains/reply.py", REPLY, "merged = {**options, **kwargs}", "merged = {**kwargs, **options}",
             "the chain's options winning over the caller's"),
    Mutation("chains/input.py", INPUT, "background=background.strip() if background and background.strip() else None",
             "background=background if background else None", "a blank background kept"),
    Mutation("chains/chain.py", CHAIN, "[*demonstration, turn.utterance.text, *own]", "[*demonstration, *own]",
             "the copy guard forgetting the utterance"),
    Mutation("chains/input.py", INPUT, "video.end <= video.start", "video.end < video.start",
             "an empty video range accepted"),
    Mutation("chains/context.py", CONTEXT, "return (len(history) if guess is None else guess), len(history)\n",
             "return (len(history) if guess is None else guess), len(history) - 1\n",
             "the search never keeps the whole history"),
    # -- elmd_sdk/answer/ ------------------------------------------------------------------------------------------
    Mutation("answer/reading.py", READING,
             "            if self.done:\n                break\n        yield from self.finish()",
             "            pass\n        yield from self.finish()", "the reader keeps pulling after the reply ended"),
    Mutation("answer/reading.py", READING,
             "            if self.done:\n                break\n        for chunk in self.finish():",
             "            pass\n        for chunk in self.finish():", "the async reader keeps pulling"),
    Mutation("answer/reading.py", READING, 'finish_reason=self._finish_reason or "stop"',
             'finish_reason=self._finish_reason or "length"', "a reply cut by the parser reported as length"),
    Mutation("answer/reading.py", READING,
             "chunks = [replace(chunks[0], usage=add_usage(chunks[0].usage, self._usage)), *chunks[1:]]\n"
             "            self._usage = None",
             "chunks = [replace(chunks[0], usage=add_usage(chunks[0].usage, self._usage)), *chunks[1:]]",
             "token counts sent twice"),
    Mutation("answer/reading.py", READING, 'if self._closed is not False else None', "if self._closed else None",
             "an undecided reader ignoring the chosen emotion"),
    Mutation("answer/result.py", RESULT, "response=self.response + other.response",
             "response=other.response + self.response", "chunks added in the wrong order"),
    Mutation("answer/reading.py", READING, "_SPEAKER_LINE, _NOTE_INLINE, _BLANK_LINE)", "_SPEAKER_LINE, _BLANK_LINE)",
             "a note after the reply kept in it"),
    Mutation("answer/result.py", RESULT, "        return a if b is None else b\n", "        return b\n",
             "a chunk without token counts wipes the counts so far"),
    # Left out as equivalent: feeding text after the reply ended (``if self.done or not piece`` without ``done``)
    # finds the same stop again and emits nothing.
    # -- models/batching.py -------------------------------------------------------------------------------------
    Mutation("models/batching.py", BATCHING, "        finally:\n            sequence.cancelled = True",
             "        finally:\n            pass", "a stream closed by its client never cancelled in the engine"),
    Mutation("models/batching.py", BATCHING, "                if sequence.cancelled:\n                    continue",
             "                if sequence.cancelled:\n                    pass", "the step ignoring cancellation"),
    Mutation("models/batching.py", BATCHING, "len(self._batch.rows) < self._capacity(",
             "len(self._batch.rows) <= self._capacity(", "one sequence more than max_batch admitted"),
    Mutation("models/batching.py", BATCHING,
             '        self._fail_all(ElmdError("the batch engine was closed before this reply ended"))',
             "        pass", "closing the engine leaves replies waiting forever"),
    Mutation("models/batching.py", BATCHING, "if max_batch < 1:", "if max_batch < 0:", "max_batch 0 accepted"),
    Mutation("models/batching.py", BATCHING, "positions = batch.mask.sum(dim=1, keepdim=True) + torch.arange(width)",
             "positions = batch.mask.shape[1] + torch.arange(width).expand(batch.mask.shape[0], width)",
             "positions counted over the padding"),
    Mutation("models/batching.py", BATCHING, "    return F.pad(mask, (extra, 0))", "    return F.pad(mask, (0, extra))",
             "the mask padded on the right of a left-padded cache"),
    # Left out as equivalent: a sequence cancelled while waiting that joins anyway (``_admit`` without its check)
    # leaves at the next step before any forward pass runs for it.
    # -- models/closed_set.py -----------------------------------------------------------------------------------
    Mutation("models/closed_set.py", CLOSED, "scores = scores - torch.tensor(choice.log_prior)",
             "scores = scores + torch.tensor(choice.log_prior)", "the prior multiplied instead of divided"),
    Mutation("models/closed_set.py", CLOSED, 'scores = scores.masked_fill(~allowed, float("-inf"))',
             "scores = scores", "labels not allowed keep their probability"),
    Mutation("models/closed_set.py", CLOSED, "    if choice.force is not None:\n        return choice.force",
             "    if choice.force is not None and not do_sample:\n        return choice.force",
             "a forced emotion ignored when sampling"),
    Mutation("models/closed_set.py", CLOSED, "return choice.labels[int(probs.argmax())]",
             "return choice.labels[int(probs.argmin())]", "greedy takes the least likely label"),
    Mutation("models/closed_set.py", CLOSED, "    if n < 1:\n", "    if n < 2:\n", "copy guard n = 1 refused"),
    Mutation("models/closed_set.py", CLOSED, 'text.strip().replace("\\u2019", "\'"), ', "",
             "the straight-apostrophe form of r' not banned"),
    Mutation("models/closed_set.py", CLOSED, "if size > 1)", "if size > 0)", "single tokens banned"),
    # -- models/peft_adapter.py ---------------------------------------------------------------------------------
    Mutation("models/peft_adapter.py", PEFT, "kv[:, :, 0].reshape(p, layers * heads, d), p)",
             "kv[:, :, 0].reshape(p, layers * heads, d), p - 1)", "keys turned to position p - 1"),
    Mutation("models/peft_adapter.py", PEFT, "torch.stack([keys, kv[:, :, 1]], dim=2)",
             "torch.stack([kv[:, :, 1], keys], dim=2)", "keys and values swapped"),
    Mutation("models/peft_adapter.py", PEFT, "prefix_projection=False,", "prefix_projection=True,",
             "the saved rows said to need the MLP"),
    Mutation("models/peft_adapter.py", PEFT, "inference_mode=True,", "inference_mode=False,",
             "the adapter written as trainable"),
    Mutation("models/peft_adapter.py", PEFT, "token_dim=heads * d,", "token_dim=d,", "a wrong token_dim"),
    Mutation("models/peft_adapter.py", PEFT, "base_model_name_or_path=base_model_name_or_path,",
             "base_model_name_or_path=None,", "the base model's name dropped"),
    Mutation("models/peft_adapter.py", PEFT, ".view(p, layers, 2, heads, d)", ".view(p, 2, layers, heads, d)",
             "the prefix rows read in the wrong layout"),
    # -- trainers/emotion_eval.py -------------------------------------------------------------------------------
    Mutation("trainers/emotion_eval.py", EVAL, "sorted(set(gold) | set(predicted))", "sorted(set(gold))",
             "macro-F1 over the gold labels only"),
    Mutation("trainers/emotion_eval.py", EVAL,
             'return scores["emotion_accuracy"] / 100, scores["emotion_macro_f1"] / 100',
             'return scores["emotion_macro_f1"] / 100, scores["emotion_accuracy"] / 100', "the pair returned swapped"),
    Mutation("trainers/emotion_eval.py", EVAL, "return max(range(len(self.scores)), key=self.scores.__getitem__)",
             "return min(range(len(self.scores)), key=self.scores.__getitem__)", "the least likely label predicted"),
    Mutation("trainers/emotion_eval.py", EVAL, "example.label, -scores[-1],", "example.label, scores[-1],",
             "the validation loss with the wrong sign"),
    Mutation("trainers/emotion_eval.py", EVAL, "tuple(scores[:-1])", "tuple(scores[1:])",
             "label scores shifted by one candidate"),
    Mutation("trainers/emotion_eval.py", EVAL, "len(example.target)))", "len(example.pieces[0])))",
             "the prompt's tokens counted instead of the answer's"),
    # -- io.py --------------------------------------------------------------------------------------------------
    Mutation("io.py", IO, "    os.replace(new, target)\n    fsync_folder(Path(target).parent)\n",
             "    os.replace(new, target)\n", "replace_folder without the folder fsync"),
    Mutation("io.py", IO, "        fsync_folder(path.parent)  # the rename itself", "        pass  # the rename itself",
             "atomic_open without the folder fsync"),
    Mutation("io.py", IO, "            os.fsync(fh.fileno())\n", "", "atomic_open without the file fsync"),
    Mutation("io.py", IO, "            fh.flush()\n", "", "fsync before the buffer is flushed"),
    Mutation("io.py", IO, "if aside and not target.exists():", "if aside:",
             "an old folder left aside put back over a complete one"),
    Mutation("io.py", IO, "        os.chmod(tmp, _umask_mode())\n", "", "written files keep mkstemp's private mode"),
    Mutation("io.py", IO, "    shutil.rmtree(old, ignore_errors=True)\n\n\ndef fsync_folder", "\n\ndef fsync_folder",
             "the replaced folder left behind"),
]  # fmt: skip


def _copy_tree(source: Path, work: Path) -> Path:
    """Copy the package and tests from ``source`` into ``work`` in the installed layout; the folder for PYTHONPATH."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = work / "pkg" / "elmd_sdk"
    shutil.copytree(source / "elmd_sdk", package, ignore=ignore)
    for sub in ("chains", "retrievers", "trainers"):
        shutil.copytree(source / sub, package / sub, ignore=ignore)
    shutil.copytree(source / "tests", work / "tests", ignore=ignore)
    for name in ("README.md", "pyproject.toml"):
        shutil.copy2(source / name, work / name)
    return work / "pkg"


def _copy_path(work: Path, path: str) -> Path:
    """Where a repository file lies in the copy."""
    first, _, rest = path.partition("/")
    if first == "elmd_sdk":
        return work / "pkg" / path
    if first in ("chains", "retrievers", "trainers"):
        return work / "pkg" / "elmd_sdk" / first / rest
    return work / path


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(work / "pkg"), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no cached bytecode: every run compiles the file as it is now
    return env


def _check_imports(work: Path) -> None:
    """Fail unless the copy, not the editable install, is what the tests import."""
    code = (
        "import elmd_sdk.chains.chain as c, elmd_sdk.io as i, elmd_sdk.trainers.emotion_eval as t; "
        "print(c.__file__, i.__file__, t.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(work), cwd=work, capture_output=True, text=True)
    files = out.stdout.split()
    if out.returncode or len(files) != 3 or not all(Path(f).is_relative_to(work) for f in files):
        raise SystemExit(f"the copy in {work} is not what Python imports: {out.stdout}{out.stderr}")


def _pytest(work: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float]:
    """Run ``tests`` in the copy: ("pass", "fail", "error" or "timeout", seconds)."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--rootdir", str(work),
               "-c", str(work / "pyproject.toml"), *tests]  # fmt: skip
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=work, env=_env(work), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - started
    outcome = {0: "pass", 1: "fail"}.get(done.returncode, "error")
    return outcome, time.monotonic() - started


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run_mutation(work: Path, mutation: Mutation, timeout: float) -> tuple[str, float]:
    """Apply ``mutation`` to the copy, run its tests, restore the file (checked): the outcome and seconds."""
    target = _copy_path(work, mutation.path)
    original = target.read_bytes()
    digest = hashlib.sha256(original).hexdigest()
    text = original.decode("utf-8")
    if text.count(mutation.old) != 1:
        return "stale", 0.0
    try:
        target.write_text(text.replace(mutation.old, mutation.new), encoding="utf-8")
        return _pytest(work, mutation.tests or TESTS[mutation.module], timeout)
    finally:
        target.write_bytes(original)
        if _sha256(target) != digest:
            raise SystemExit(f"could not restore {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="the repository to copy (default: this checkout)")
    parser.add_argument("--only", default="", help="run only the modules whose name contains this text")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before a test run counts as a hang")
    parser.add_argument("--check", action="store_true", help="only check that every mutation applies; run nothing")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = parser.parse_args()
    root = args.root.resolve()
    selected = [m for m in MUTATIONS if args.only in m.module]
    if args.check:
        stale = [m for m in selected if (root / m.path).read_text(encoding="utf-8").count(m.old) != 1]
        for m in stale:
            print(f"stale: {m.module}: {m.why}")
        print(f"{len(selected) - len(stale)} of {len(selected)} mutations apply")
        raise SystemExit(1 if stale else 0)

    work = Path(tempfile.mkdtemp(prefix="elmd-mutation-"))
    results: list[tuple[Mutation, str, float]] = []
    try:
        _copy_tree(root, work)
        _check_imports(work)
        print(f"copy of {root} in {work}", flush=True)
        modules = list(dict.fromkeys(m.module for m in selected))
        for module in modules:
            baseline, seconds = _pytest(work, TESTS[module], args.timeout)
            print(f"[{module}] baseline {baseline} ({seconds:.0f} s)", flush=True)
            for mutation in (m for m in selected if m.module == module):
                if baseline != "pass":
                    results.append((mutation, "skipped", 0.0))
                    continue
                outcome, seconds = _run_mutation(work, mutation, args.timeout)
                results.append((mutation, outcome, seconds))
                label = {"fail": "caught", "error": "caught (error)", "timeout": "caught (hang)",
                         "pass": "NOT CAUGHT"}.get(outcome, outcome)  # fmt: skip
                print(f"  {label:15} {seconds:5.0f} s  {mutation.why}", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: every file of the copy was restored; the working tree was never written to")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    _table(results)


def _table(results: list[tuple[Mutation, str, float]]) -> None:
    counted = [(m, outcome) for m, outcome, _ in results if outcome not in ("stale", "skipped")]
    print()
    print(f"{'module':28} {'caught':>6} {'total':>5}")
    for module in dict.fromkeys(m.module for m, _ in counted):
        rows = [outcome for m, outcome in counted if m.module == module]
        print(f"{module:28} {sum(o != 'pass' for o in rows):6} {len(rows):5}")
    caught = sum(outcome != "pass" for _, outcome in counted)
    share = 100 * caught / len(counted) if counted else 0.0
    print(f"{'all':28} {caught:6} {len(counted):5}   ({share:.0f}% caught)")
    for label in ("stale", "skipped"):
        if names := [m.why for m, outcome, _ in results if outcome == label]:
            print(f"{label} (not counted): " + "; ".join(names))
    if survivors := [f"{m.module}: {m.why}" for m, outcome in counted if outcome == "pass"]:
        print("not caught:\n  " + "\n  ".join(survivors))


if __name__ == "__main__":
    main()
