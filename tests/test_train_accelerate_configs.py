"""The shipped accelerate configurations parse with Accelerate's own loader and describe the paper's setup (four GPUs,
global batch 16, bf16); they say what was run here and what was not. Sharding engines are refused up front."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from elmd_sdk.errors import InputError
from elmd_sdk.trainers.train_config import TrainConfig, make_accelerator

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "accelerate"
PAPER_BATCH = 16  # paper 4.3, REP and EERG


@pytest.mark.parametrize(
    ("name", "machines", "processes"), [("eerg_chatglm2_4gpu", 1, 4), ("eerg_chatglm2_2x4gpu", 2, 8)]
)
def test_the_shipped_configs_run_the_papers_batch_data_parallel_in_bf16(
    name: str, machines: int, processes: int
) -> None:
    path = CONFIGS / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert config.distributed_type == DistributedType.MULTI_GPU and config.mixed_precision == "bf16"
    assert (config.num_machines, config.num_processes) == (machines, processes)
    assert PAPER_BATCH % config.num_processes == 0  # --batch-size 16 splits evenly (the loop refuses otherwise)
    text = path.read_text(encoding="utf-8")
    assert "--batch-size 16" in text and "NOT run" in text and "tests/test_multiprocess.py" in text
    assert f"configs/accelerate/{name}.yaml" in (CONFIGS.parent.parent / "README.md").read_text(encoding="utf-8")


def test_deepspeed_and_fsdp_are_refused_before_training(monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate import Accelerator

    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType.DEEPSPEED))
    with pytest.raises(InputError, match="DEEPSPEED is not supported: training runs data-parallel") as error:
        make_accelerator(TrainConfig(mixed_precision="no"))
    assert error.value.field == "distributed_type"
