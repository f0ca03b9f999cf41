"""On a CUDA GPU (``scripts/gpu_check.sh`` runs these on a lent machine): bfloat16/float16 loading, bitsandbytes
int8/int4 loading, batched decoding, and 50 EERG steps on MELD. Skipped, with the reason, where torch sees no GPU.

MELD is read from ``$ELMD_MELD_DIR`` (default ``../shared/data/meld`` next to the repository; the train split only).
"""

from __future__ import annotations

import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from arch_fakes import save_chatglm2
from llm_fakes import save_tiny_llm, tiny_llm
from tolerances import BFLOAT16_LOGITS, INT8_LOGITS

from elmd_sdk.models.llm import load_llm

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: run scripts/gpu_check.sh on one"),
]
MELD = Path(os.environ.get("ELMD_MELD_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "meld"))
PROMPTS = ["hello there", "The dog passed away this morning. I am so sad", "I got the job!", "x"]


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids.to(next(model.parameters()).device)).logits.float().cpu()  # (b, T, vocab)


@pytest.fixture(scope="module")
def llm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llm(tmp_path_factory.mktemp("gpu") / "llm", initializer_range=0.2)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_loads_on_cuda_and_stays_close(llm_folder: Path, dtype: str) -> None:
    ids = torch.randint(0, 300, (2, 9))
    reference = _logits(load_llm(llm_folder)[0], ids)
    model, _ = load_llm(llm_folder, dtype=dtype, device="cuda")
    assert model.device.type == "cuda" and model.dtype == getattr(torch, dtype)
    assert (_logits(model, ids) - reference).abs().max() <= BFLOAT16_LOGITS * reference.abs().max()


@pytest.mark.skipif(
    torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is None,
    reason="bitsandbytes not installed: pip install 'elmd-sdk[gpu]'",
)
@pytest.mark.parametrize(("quantize", "tolerance"), [("int8", INT8_LOGITS), ("int4", BFLOAT16_LOGITS)])
def test_bitsandbytes_model_is_the_float_model_with_its_dequantized_weights(
    tmp_path: Path, llm_folder: Path, quantize: str, tolerance: float
) -> None:
    """bitsandbytes changes the linear weights and, for LLM.int8(), rounds the activations to int8 too: the float32
    model given bitsandbytes' de-quantized weights agrees within bfloat16 rounding (NF4) or the int8 bound."""
    import bitsandbytes as bnb

    chatglm2, _ = save_chatglm2(tmp_path / "chatglm2")  # the ChatGLM2 loader passes the config on too
    for folder in (llm_folder, chatglm2):
        model, _ = load_llm(folder, quantize=quantize, device="cuda")
        twin, _ = load_llm(folder, device="cuda")
        replaced = 0
        for name, module in model.named_modules():
            if isinstance(module, bnb.nn.Linear4bit):
                weight = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            elif isinstance(module, bnb.nn.Linear8bitLt):
                weight = module.weight.data.float() * module.weight.SCB.float()[:, None] / 127  # row scales
            else:
                continue
            with torch.no_grad():
                twin.get_submodule(name).weight.copy_(weight.float())
            replaced += 1
        assert replaced == (14 if folder == llm_folder else 12)  # 2 layers x (7 Llama or 6 GLM projections)
        ids = torch.randint(0, 300, (2, 9))
        expected = _logits(twin, ids)
        assert (_logits(model, ids) - expected).abs().max() <= tolerance * expected.abs().max()


def test_batched_decoding_on_cuda_equals_solo_calls() -> None:
    from elmd_sdk.models.chat_model import ELMDChatModel

    model, tokenizer = tiny_llm()
    chat = ELMDChatModel(hf_model=model.to("cuda"), tokenizer=tokenizer, do_sample=False, max_new_tokens=24)
    solo = [str(chat.invoke(prompt).content) for prompt in PROMPTS]
    with chat.batched(max_batch=8), ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = [str(reply.content) for reply in pool.map(chat.invoke, PROMPTS)]
    assert together == solo


@pytest.mark.skipif(not (MELD / "train_sent_emo.csv").is_file(), reason=f"MELD train not found in {MELD}")
def test_fifty_eerg_steps_on_meld_write_a_bundle(tmp_path: Path) -> None:
    """One epoch over the first 400 MELD train samples at batch 8: 50 optimizer steps, then the bundle."""
    from typer.testing import CliRunner

    from elmd_sdk.bundle import load_bundle
    from elmd_sdk.cli.main import build_app
    from elmd_sdk.data import prepare_corpus, write_jsonl
    from elmd_sdk.trainers.metrics_log import METRICS_FILE, read_metrics

    data = tmp_path / "meld_train.jsonl"
    write_jsonl(data, prepare_corpus("meld", MELD / "train_sent_emo.csv", max_history=4).samples[:400])
    out = tmp_path / "eerg"
    arguments = ["train", "eerg", "--data", str(data), "--out", str(out), "--no-retrieval", "--no-video"]
    trained = CliRunner().invoke(build_app(), [*arguments, "--epochs", "1", "--batch-size", "8"])
    assert trained.exit_code == 0, trained.output
    steps = [r["step"] for r in read_metrics(out / METRICS_FILE) if r["kind"] == "train"]
    assert steps[-1] == 50
    manifest, paths = load_bundle(out)
    assert paths.prefix is not None and manifest.pre_seq_len is not None
