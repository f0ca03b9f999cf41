"""A chatbot that lives with its own replies: the bot takes one speaker's place in real MELD dialogues.

In each dialogue the speaker with the most turns is the bot; everyone else's turns since the bot last spoke are
the user's turn (joined, as one message of a chat app). The bot answers every user turn, and its own earlier
replies, not MELD's lines, are its history. Dialogues with at least ``--min-bot-turns`` bot turns are used, the
first ``--dialogues`` of them in file order, from the ``--splits`` in turn: MELD dev holds only 27 dialogues with 5
bot turns, so the default fills up to 50 from MELD train (the embedded default's retrieval corpus is its own, not
MELD, so neither split is seen by it). For each decoding mode (greedy; the bundle's sampling with a fixed seed)
one run prints, over all bot turns:

- self-repetition: replies sharing a run of 6 words with an earlier bot reply of the conversation
  (:mod:`elmd_sdk.metrics.conversation`); echo: sharing one with a user turn; distinct-2 over each conversation
  (mean); template leaks; asides ("(smiles)", "[smiling]", "*smiling*"); replies ended mid-sentence; replies cut
  at the token limit;
- the reply emotion against the user's gold emotion (contradictions: a happy user answered with anger, disgust,
  sadness or fear; a sad, fearful or angry user answered with happiness), and against MELD's gold emotion of the
  line the bot replaced (accuracy, macro-F1), with the majority class of those lines as the baseline;
- the share of turns given a demonstration R, and relevance: the cosine of the user turn and the reply under the
  plain sentence encoder (all-MiniLM-L6-v2), with the share of replies off the point (below 0.1);
- seconds per turn (p50 and p95), first turn and later turns;
- three whole conversations (the first three dialogues, in the first system and mode).

Each mode runs with the chain's default settings and, as baselines in the same run, without the copy guard over
the bot's own earlier replies (``copy_guard_own_replies=False``) and without the sentence-end soft limit and the ban
on parentheses (``--systems`` picks others: ``history N`` keeps at most N history turns in the prompt).

Each finished dialogue is appended to ``--out``/turns_<mode>.jsonl, so a killed run goes on where it stopped.
Reads ``../shared/data/meld/{dev,train}_sent_emo.csv`` under ``--data-root`` (the test split is never read)::

    .venv/bin/python benchmarks/conversation.py --out conversation --dialogues 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from _common import meld_csv, meld_parser, percentile

MODES = ("greedy", "sampled")
SYSTEMS: dict[str, dict[str, dict[str, Any]]] = {  # what each system changes: chain settings, chat model settings
    "default": {},
    "no own-reply guard": {"chain": {"copy_guard_own_replies": False}},  # the copy guard over r' and u only
    "no sentence/aside rules": {"model": {"soft_max_new_tokens": None, "no_parentheses": False}},
    "nearest demonstration": {"chain": {"demonstration_min_topic": None}},  # R = the nearest pair (the paper's)
    "topic 0.4": {"chain": {"demonstration_min_topic": 0.4}},
    "topic 0.5": {"chain": {"demonstration_min_topic": 0.5}},
    "emotion drawn": {"model": {"sample_emotion": True}},  # sampled mode: the emotion drawn from its probabilities
    "history 2": {"chain": {"max_history_turns": 2}},
    "history 4": {"chain": {"max_history_turns": 4}},
    "history 8": {"chain": {"max_history_turns": 8}},
}
OFF_THE_POINT = 0.1  # a reply this far in topic from the user turn: below the corpus's random pairs' median (0.11)
DEFAULT_SYSTEMS = "default,no own-reply guard,no sentence/aside rules"


def parse_args() -> argparse.Namespace:
    p = meld_parser(__doc__)
    p.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the embedded one)")
    p.add_argument("--dialogues", type=int, default=50, help="MELD dev dialogues to hold")
    p.add_argument("--min-bot-turns", type=int, default=5, help="bot turns a dialogue needs to be used")
    p.add_argument("--splits", default="dev,train", help="MELD splits to take dialogues from, in this order")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated decoding modes (of: {', '.join(MODES)})")
    p.add_argument(
        "--systems", default=DEFAULT_SYSTEMS, help=f"comma-separated chain settings (of: {', '.join(SYSTEMS)})"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled mode (each turn: seed + turn number)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", type=Path, required=True, help="folder for turns_<mode>.jsonl (resumed when present)")
    return p.parse_args()


def conversations(data_root: Path, splits: list[str], count: int, min_bot_turns: int) -> list[dict[str, Any]]:
    """Up to ``count`` MELD dialogues of ``splits`` as {dialogue_id ("dev/dia4"), bot, turns: [{user, user_emotion,
    gold, gold_emotion}]}."""
    from elmd_sdk.data.build import join_sentences, merge_turns, predominant_emotion
    from elmd_sdk.data.labels import builtin_label_map
    from elmd_sdk.data.meld import load_meld

    labels = builtin_label_map("meld")
    chosen = []
    dialogues = [(split, d) for split in splits for d in load_meld(meld_csv(data_root, split))]
    for split, dialogue in dialogues:
        emotions = [labels.resolve(s.label, drop_unmapped=True, field="Emotion") for s in dialogue.sentences]
        merged = [turn for turn, _video in merge_turns(dialogue.sentences, emotions)]
        counts: dict[str, int] = {}
        for turn in merged[1:]:  # a bot turn needs a user turn before it
            counts[turn.speaker] = counts.get(turn.speaker, 0) + 1
        if not counts:
            continue
        bot = max(counts, key=lambda name: counts[name])
        turns, pending = [], []
        for turn in merged:
            if turn.speaker != bot:
                pending.append(turn)
            elif pending:
                turns.append(
                    {
                        "user": join_sentences([t.text for t in pending]),
                        "user_emotion": predominant_emotion([t.emotion for t in pending]),
                        "gold": turn.text,
                        "gold_emotion": turn.emotion,
                    }
                )
                pending = []
        if len(turns) >= min_bot_turns:
            chosen.append({"dialogue_id": f"{split}/{dialogue.dialogue_id}", "bot": bot, "turns": turns})
        if len(chosen) == count:
            break
    return chosen


def hold(chain: Any, dialogue: dict[str, Any], options: dict[str, Any], seed: int | None) -> list[dict[str, Any]]:
    """The bot's replies to each user turn of ``dialogue``, its own replies kept as its history."""
    history: list[dict[str, str]] = []
    replies = []
    for number, turn in enumerate(dialogue["turns"]):
        call = dict(options) if seed is None else {**options, "seed": seed + number}
        start = time.perf_counter()
        result = chain.invoke({"utterance": turn["user"], "history": list(history)}, **call)
        seconds = time.perf_counter() - start
        history += [{"role": "user", "content": turn["user"]}, {"role": "assistant", "content": result.response}]
        replies.append(
            {
                **turn,
                "reply": result.response,
                "emotion": result.emotion,
                "finish_reason": result.finish_reason,
                "demonstration": None if result.demonstration is None else result.demonstration.metadata["utterance"],
                "seconds": seconds,
            }
        )
    return replies


def run_mode(chain: Any, dialogues: list[dict[str, Any]], run: str, seed: int, out: Path) -> list[list[dict]]:
    """Every dialogue's turns in ``run`` ("system/mode"), reading what ``out``/turns_<system>_<mode>.jsonl holds."""
    mode = run.split("/")[-1]
    path = out / f"turns_{run.replace('/', '_').replace(' ', '-')}.jsonl"
    done = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                done[record["dialogue_id"]] = record["turns"]
    options = {"do_sample": False} if mode == "greedy" else {}
    with path.open("a", encoding="utf-8") as sink:
        for number, dialogue in enumerate(dialogues, start=1):
            if dialogue["dialogue_id"] in done:
                continue
            turns = hold(chain, dialogue, options, None if mode == "greedy" else seed)
            sink.write(json.dumps({"dialogue_id": dialogue["dialogue_id"], "turns": turns}) + "\n")
            sink.flush()
            done[dialogue["dialogue_id"]] = turns
            seconds = sum(t["seconds"] for t in turns)
            print(f"[{run}] dialogue {number}/{len(dialogues)} ({len(turns)} bot turns, {seconds:.0f} s)", flush=True)
    return [done[d["dialogue_id"]] for d in dialogues]


def report(mode: str, dialogues: list[list[dict[str, Any]]], labels: list[str], language: str, topics: Any) -> None:
    """Print ``mode``'s metrics over every bot turn (``topics``: the sentence encoder of the relevance figures)."""
    from elmd_sdk.metrics.conversation import contradicts, ends_mid_sentence, has_aside, shares_run
    from elmd_sdk.metrics.emotion import emotion_scores
    from elmd_sdk.metrics.reply import distinct_n, leaks_template
    from elmd_sdk.metrics.tokenize import tokenize

    flags: dict[str, list[bool]] = {k: [] for k in ("repeat", "echo", "leak", "aside", "mid", "length", "contra")}
    distinct, first, later, pred, gold = [], [], [], [], []
    for turns in dialogues:
        said: list[list[str]] = []
        heard: list[list[str]] = []
        for number, turn in enumerate(turns):
            tokens = tokenize(turn["reply"], language)
            heard.append(tokenize(turn["user"], language))
            flags["repeat"].append(shares_run(tokens, said))
            flags["echo"].append(shares_run(tokens, heard))
            flags["leak"].append(leaks_template(turn["reply"]))
            flags["aside"].append(has_aside(turn["reply"]))
            flags["mid"].append(ends_mid_sentence(turn["reply"]))
            flags["length"].append(turn["finish_reason"] == "length")
            flags["contra"].append(contradicts(turn["user_emotion"], turn["emotion"]))
            said.append(tokens)
            (first if number == 0 else later).append(turn["seconds"])
            if turn["gold_emotion"] is not None:
                pred.append(turn["emotion"])
                gold.append(turn["gold_emotion"])
        distinct.append(distinct_n(said, 2))
    turns_count = len(flags["repeat"])
    print(f"\n== {mode}: {len(dialogues)} conversations, {turns_count} bot turns ==")
    names = {
        "repeat": "self-repetition (6-word run of an earlier bot reply)",
        "echo": "echo (6-word run of a user turn)",
        "leak": "template leaks",
        "aside": "asides (in parentheses, brackets, asterisks)",
        "mid": "replies ended mid-sentence",
        "length": "replies that reached the token limit",
        "contra": "emotion contradicting the user's gold emotion",
    }
    for key, name in names.items():
        hits = sum(flags[key])
        print(f"{name:<52} {hits:>4} / {turns_count}  ({100 * hits / turns_count:5.1f}%)")
    print(f"{'distinct-2 per conversation (mean)':<52} {statistics.mean(distinct):6.1f}")
    scores = emotion_scores(pred, gold, labels)
    majority = max(set(gold), key=gold.count)
    base = emotion_scores([majority] * len(gold), gold, labels)
    print(
        f"{'reply emotion vs the replaced line (acc / macro-F1)':<52} {scores['emotion_accuracy']:5.1f} / "
        f"{scores['emotion_macro_f1']:5.1f}   majority class '{majority}': {base['emotion_accuracy']:5.1f} / "
        f"{base['emotion_macro_f1']:5.1f}"
    )
    every = [turn for turns in dialogues for turn in turns]
    with_r = sum(turn.get("demonstration") is not None for turn in every)
    print(f"{'turns with a demonstration R':<52} {with_r:>4} / {turns_count}  ({100 * with_r / turns_count:5.1f}%)")
    users = topics.embed_sentences([turn["user"] for turn in every])  # (n, d)
    replies = topics.embed_sentences([turn["reply"] for turn in every])  # (n, d)
    relevance = (users * replies).sum(axis=1)  # (n,) cosine of the user turn and the reply
    off = int((relevance < OFF_THE_POINT).sum())
    print(f"{'relevance: cosine(user turn, reply), mean':<52} {relevance.mean():6.3f}")
    label = f"replies off the point (relevance < {OFF_THE_POINT})"
    print(f"{label:<52} {off:>4} / {turns_count}  ({100 * off / turns_count:5.1f}%)")
    for name, values in (("first turn", first), ("later turns", later)):
        label = f"seconds per {name} (p50 / p95)"
        print(f"{label:<52} {percentile(values, 50):5.2f} / {percentile(values, 95):5.2f}")


def show(dialogue: dict[str, Any], turns: list[dict[str, Any]]) -> None:
    """One whole conversation: the user's turns, the bot's replies with their emotion, MELD's line in brackets."""
    print(f"\n-- {dialogue['dialogue_id']} (the bot speaks for {dialogue['bot']}) --")
    for turn in turns:
        print(f"user ({turn['user_emotion']}): {turn['user']}")
        print(f"bot  ({turn['emotion']}): {turn['reply']}")
        print(f"     [MELD, {turn['gold_emotion']}: {turn['gold']}]")


def variant(chain: Any, changes: dict[str, dict[str, Any]]) -> Any:
    """``chain`` with a system's changes to its settings and to its chat model's."""
    model = chain.chat_model.model_copy(update=changes.get("model", {}))
    return chain.model_copy(update={**changes.get("chain", {}), "chat_model": model})


def main() -> None:
    args = parse_args()
    import torch

    from elmd_sdk.chains import ELMDChain

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    splits = args.splits.split(",")
    dialogues = conversations(args.data_root, splits, args.dialogues, args.min_bot_turns)
    turns = sum(len(d["turns"]) for d in dialogues)
    per_split = ", ".join(f"{sum(d['dialogue_id'].startswith(s + '/') for d in dialogues)} {s}" for s in splits)
    print(f"{len(dialogues)} MELD dialogues ({per_split}) with at least {args.min_bot_turns} bot turns: {turns} turns")
    chain = ELMDChain.from_bundle(args.bundle) if args.bundle else ELMDChain.default()
    runs = {
        f"{system}/{mode}": variant(chain, SYSTEMS[system])
        for system in args.systems.split(",")
        for mode in args.modes.split(",")
    }
    results = {run: run_mode(variant, dialogues, run, args.seed, args.out) for run, variant in runs.items()}
    from elmd_sdk.retrievers.encoder import ERMEncoder

    topics = ERMEncoder.plain()  # all-MiniLM-L6-v2, the sentence encoder the default ERM was built on
    for run, held in results.items():
        report(run, held, list(chain.labels), chain.language, topics)
    for dialogue, held in list(zip(dialogues, next(iter(results.values())), strict=True))[:3]:
        show(dialogue, held)


if __name__ == "__main__":
    main()
