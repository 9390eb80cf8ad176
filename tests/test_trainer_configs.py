"""Every trainer/*.yaml parses through ``medvl``'s CLI and builds the trainer it says, on the CPU where it can.

* Each YAML goes through the CLI's parser (``--print_config``) exactly as given: every key it
  sets comes out with its value, so none is misspelt or of the wrong type.
* The GPU configurations are built with ``accelerator: cpu`` (the strategy, the number of
  processes and of nodes are the YAML's), and the multi-node one inside the environment
  its launchers create: torchrun's variables and SLURM's, with the numbers of
  ``trainer/multi_node.sbatch``; Lightning's own check of those numbers against
  ``devices`` and ``num_nodes`` (run at launch) must pass, and must fail for a mismatch.
* ``trainer/fsdp.yaml`` cannot be built on the CPU (Lightning refuses FSDP without a GPU,
  as the file says): its strategy is built alone, from the YAML, with the parser's type
  for ``Trainer(strategy=...)``, and must carry the wrap and checkpointing policies.

tests/models/test_ddp_fit.py runs ``medvl fit`` under DDP and under torchrun.
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path

import lightning as L
import pytest
import yaml
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy

from medvl.cli import _lightning_cli
from medvl.layers import Block

REPO = Path(__file__).resolve().parents[1]
TRAINERS = sorted(p.stem for p in (REPO / "trainer").glob("*.yaml"))
SBATCH = REPO / "trainer" / "multi_node.sbatch"


def _args(trainer: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["--trainer", str(REPO / "trainer" / f"{trainer}.yaml"),
            "--model", "medvl.models.ContrastivePretraining",
            "--model.vision_encoder", "test_vit_tiny_patch8", "--model.text_encoder", "test_text_tiny",
            "--data", "medvl.datamodules.SyntheticCXR", "--data.root", str(tmp_path / "absent"),
            "--data.img_size", "32", *extra]


def _build(trainer: str, tmp_path: Path, *extra: str) -> L.Trainer:
    args = _args(trainer, tmp_path, "--trainer.accelerator", "cpu", *extra,
                 "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path))
    return _lightning_cli(args, run=False).trainer


def _yaml(trainer: str) -> dict:
    return yaml.safe_load((REPO / "trainer" / f"{trainer}.yaml").read_text())


@pytest.fixture
def clean_env():
    """The process environment as it was: the launcher variables set here and what Lightning sets from them go."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith(("SLURM_", "TORCHELASTIC_", "GROUP_"))] + [
            "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"]:
        os.environ.pop(key, None)
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


def test_the_trainer_configs_are_the_documented_ones():
    assert TRAINERS == ["cpu", "ddp", "fsdp", "gpu", "multi_node"]
    readme = (REPO / "README.md").read_text()
    for name in TRAINERS:
        lines = (REPO / "trainer" / f"{name}.yaml").read_text().splitlines()
        header = "\n".join(line for line in lines[:next(i for i, x in enumerate(lines) if not x.startswith("#"))])
        assert re.search(r"medvl(\.cli)? fit", header), f"trainer/{name}.yaml does not start with how to launch it"
        assert f"trainer/{name}.yaml" in readme, f"README.md does not mention trainer/{name}.yaml"


@pytest.mark.parametrize("trainer", TRAINERS)
def test_each_trainer_yaml_parses_as_given(trainer, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        _lightning_cli(_args(trainer, tmp_path, "--print_config"), run=False)
    assert done.value.code in (None, 0)
    parsed = yaml.safe_load(capsys.readouterr().out)["trainer"]
    for key, value in _yaml(trainer).items():
        if isinstance(value, dict):  # a class: its path and the arguments the file gives
            assert parsed[key]["class_path"] == value["class_path"]
            for arg, v in value.get("init_args", {}).items():
                assert parsed[key]["init_args"][arg] == v, f"{key}.init_args.{arg}"
        else:
            assert parsed[key] == value, key


def test_cpu_and_gpu_configs_build_one_process(tmp_path):
    cpu = _build("cpu", tmp_path)
    assert isinstance(cpu.strategy, SingleDeviceStrategy) and cpu.world_size == 1
    gpu = _build("gpu", tmp_path)  # on the CPU: the same trainer with bf16 autocast
    assert isinstance(gpu.strategy, SingleDeviceStrategy) and gpu.precision == "bf16-mixed"


def test_ddp_config_builds_ddp_with_the_distributed_sampler(tmp_path, clean_env):
    trainer = _build("ddp", tmp_path, "--trainer.devices", "2")  # -1 (every GPU) means nothing on the CPU
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.world_size == 2 and trainer.precision == "bf16-mixed"
    assert trainer._accelerator_connector.use_distributed_sampler
    assert type(trainer.strategy.cluster_environment).__name__ == "LightningEnvironment"  # Lightning starts the ranks


def _sbatch() -> dict[str, int]:
    text = SBATCH.read_text()
    numbers = {k: int(v) for k, v in re.findall(r"^#SBATCH --(nodes|ntasks-per-node)=(\d+)$", text, re.M)}
    assert set(numbers) == {"nodes", "ntasks-per-node"}, "the sbatch script sets --nodes and --ntasks-per-node"
    command = text.replace("\\\n", " ")  # continuation lines joined
    assert re.search(r"^srun .*medvl fit .*--trainer trainer/multi_node\.yaml", command, re.M)
    return numbers


def test_multi_node_config_matches_its_sbatch_script():
    body, numbers = _yaml("multi_node"), _sbatch()
    assert (body["num_nodes"], body["devices"]) == (numbers["nodes"], numbers["ntasks-per-node"])
    assert f"--nnodes {body['num_nodes']} --nproc_per_node {body['devices']}" in (
        REPO / "trainer" / "multi_node.yaml").read_text()  # the torchrun line in its header


def _slurm_env(env, nodes: int, per_node: int, procid: int) -> None:
    env.update({"SLURM_JOB_NAME": "medvl-fit", "SLURM_JOB_ID": "4242", "SLURM_NODELIST": "gpu[07-08]",
                "SLURM_NNODES": str(nodes), "SLURM_NTASKS": str(nodes * per_node),
                "SLURM_NTASKS_PER_NODE": str(per_node), "SLURM_PROCID": str(procid),
                "SLURM_LOCALID": str(procid % per_node), "SLURM_NODEID": str(procid // per_node)})


def test_multi_node_config_under_srun_takes_the_ranks_from_slurm(tmp_path, clean_env):
    numbers = _sbatch()
    nodes, per_node = numbers["nodes"], numbers["ntasks-per-node"]
    _slurm_env(clean_env, nodes, per_node, procid=per_node + 1)  # second task of the second machine
    trainer = _build("multi_node", tmp_path)
    env = trainer.strategy.cluster_environment
    assert type(env).__name__ == "SLURMEnvironment" and isinstance(trainer.strategy, DDPStrategy)
    assert (trainer.world_size, trainer.global_rank, trainer.local_rank, trainer.node_rank) == (
        nodes * per_node, per_node + 1, 1, 1)
    assert env.main_address == "gpu07"
    env.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)  # what launch checks

    _slurm_env(clean_env, nodes, per_node // 2, procid=0)  # an sbatch script with half the tasks per node
    trainer = _build("multi_node", tmp_path)
    with pytest.raises(ValueError, match="ntasks-per-node"):
        trainer.strategy.cluster_environment.validate_settings(num_devices=trainer.num_devices,
                                                                 num_nodes=trainer.num_nodes)


def test_multi_node_config_under_torchrun_takes_the_ranks_from_torchrun(tmp_path, clean_env):
    body = _yaml("multi_node")
    world = body["num_nodes"] * body["devices"]
    clean_env.update({"TORCHELASTIC_RUN_ID": "medvl", "WORLD_SIZE": str(world), "RANK": str(world - 1),
                      "LOCAL_RANK": str(body["devices"] - 1), "GROUP_RANK": str(body["num_nodes"] - 1),
                      "LOCAL_WORLD_SIZE": str(body["devices"]), "MASTER_ADDR": "node0", "MASTER_PORT": "29500"})
    trainer = _build("multi_node", tmp_path)
    env = trainer.strategy.cluster_environment
    assert type(env).__name__ == "TorchElasticEnvironment"
    assert (trainer.world_size, trainer.global_rank, trainer.node_rank) == (world, world - 1, body["num_nodes"] - 1)
    env.validate_settings(num_devices=trainer.num_devices, num_nodes=trainer.num_nodes)
    with pytest.raises(ValueError, match="does not match the world size"):
        env.validate_settings(num_devices=trainer.num_devices, num_nodes=1)


def test_fsdp_config_builds_its_strategy_and_is_gpu_only(tmp_path):
    spec = _yaml("fsdp")["strategy"]
    parser = LightningArgumentParser()
    parser.add_argument("--strategy", type=typing.get_type_hints(L.Trainer.__init__)["strategy"])
    strategy = parser.instantiate(parser.parse_object({"strategy": spec})).strategy
    assert type(strategy) is FSDPStrategy
    wrap = strategy.kwargs["auto_wrap_policy"]  # jsonargparse turned the YAML list into {Block}
    assert type(wrap).__name__ == "ModuleWrapPolicy" and set(wrap._module_classes) == {Block}
    checkpointed = strategy._activation_checkpointing_kwargs["auto_wrap_policy"]
    assert set(checkpointed._module_classes) == {Block}
    assert strategy.sharding_strategy.name == "FULL_SHARD" and strategy._state_dict_type == "full"
    assert strategy.kwargs["use_orig_params"] is True  # Lightning's default: per-parameter weight-decay groups
    assert _yaml("fsdp")["precision"] == "bf16-mixed"
    with pytest.raises(ValueError, match="requires a GPU accelerator"):  # the YAML says: GPU only
        _build("fsdp", tmp_path, "--trainer.devices", "2")
