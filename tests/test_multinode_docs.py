"""docs/multinode.md and its two files: the accelerate config file is one accelerate accepts, the SLURM script
runs (against stand-ins for scontrol, srun and accelerate) and launches every node with its own machine rank, and
every `accelerate launch` and `torchrun` command of the page parses, the recipe's flags included."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from mvssl_hub.train.config import parse_config

from conftest import load_recipe

pytest.importorskip("accelerate")
ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
pretrain = load_recipe("pretrain", "multinode_docs_pretrain")


def recipe_config(script: str, args: list[str]):
    assert script == "recipes/pretrain.py" and (ROOT / script).is_file()
    return parse_config(pretrain.PretrainConfig, args)  # the preset it names is read, every flag checked


def accelerate_args(argv: list[str]):
    from accelerate.commands.launch import launch_command_parser

    return launch_command_parser().parse_args(argv)


def test_the_accelerate_config_file_is_one_accelerate_accepts() -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    path = DOCS / "accelerate_multinode.yaml"
    raw = yaml.safe_load(path.read_text())
    config = ClusterConfig.from_yaml_file(str(path))  # refuses a key accelerate does not know
    assert config.distributed_type == "MULTI_GPU" and config.num_machines == raw["num_machines"] == 2
    assert config.num_processes % config.num_machines == 0 and config.rdzv_backend == "static"
    assert (config.main_process_ip, config.main_process_port) == ("10.0.0.1", 29500)


STANDINS = {
    "scontrol": "#!/bin/sh\nprintf 'node-a\\nnode-b\\n'\n",  # `scontrol show hostnames $SLURM_JOB_NODELIST`
    "srun": "#!/bin/bash\nwhile [[ $1 == -* ]]; do shift; done\n"  # one task per node, each with its SLURM_NODEID
            "for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i \"$@\" || exit; done\n",
    "accelerate": "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$CAPTURE/node$SLURM_NODEID.args\"\n",
}


def test_the_slurm_script_launches_one_accelerate_per_node_with_its_machine_rank(tmp_path: Path) -> None:
    script = DOCS / "slurm_multinode.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "#SBATCH --ntasks-per-node=1" in script.read_text()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in STANDINS.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CAPTURE": str(tmp_path), "SLURM_JOB_NODELIST": "node-[a-b]",
           "SLURM_JOB_NAME": "mvssl-pretrain", "SLURM_NNODES": "2", "SLURM_CPUS_PER_TASK": "32",
           "RUN_DIR": str(tmp_path / "run")}
    done = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["machine 0: node-a", "machine 1: node-b"]
    for rank in (0, 1):
        argv = (tmp_path / f"node{rank}.args").read_text().splitlines()
        assert argv[0] == "launch"
        args = accelerate_args(argv[1:])
        assert (args.num_machines, args.machine_rank, args.num_processes) == (2, rank, 16)
        assert (args.main_process_ip, args.main_process_port) == ("node-a", 29500)
        assert Path(ROOT / args.config_file) == DOCS / "accelerate_multinode.yaml"
        cfg = recipe_config(args.training_script, args.training_script_args)
        assert cfg.resume and cfg.output_dir == str(tmp_path / "run") and cfg.batch_size % 16 == 0


def commands(prefix: str) -> list[list[str]]:
    text = (DOCS / "multinode.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.startswith(prefix)]


def test_every_accelerate_launch_of_the_page_parses() -> None:
    found = commands("accelerate launch")
    assert len(found) == 3
    for argv in found:
        args = accelerate_args(argv[2:])
        if args.config_file:
            assert (ROOT / args.config_file).is_file()
        else:
            assert args.multi_gpu and args.num_machines == 2 and args.main_process_ip == "10.0.0.1"
        assert args.machine_rank in (0, 1)
        recipe_config(args.training_script, args.training_script_args)


def test_the_torchrun_command_is_the_accelerate_one() -> None:
    from torch.distributed.run import get_args_parser

    (argv,) = commands("torchrun")
    args = get_args_parser().parse_args(argv[1:])
    plain = accelerate_args(commands("accelerate launch --multi_gpu")[0][2:])
    assert (args.nnodes, args.node_rank) == (str(plain.num_machines), plain.machine_rank)
    assert int(args.nproc_per_node) * plain.num_machines == plain.num_processes
    assert (args.master_addr, args.master_port) == (plain.main_process_ip, plain.main_process_port)
    assert (args.training_script, args.training_script_args) == (plain.training_script, plain.training_script_args)
    recipe_config(args.training_script, args.training_script_args)


def test_the_page_links_files_that_exist() -> None:
    text = (DOCS / "multinode.md").read_text()
    for target in re.findall(r"\]\(([^)#:]+)\)", text):
        assert (DOCS / target).is_file(), target
    tests = re.findall(r"`(tests/[\w/]+\.py)", text)
    assert len(tests) >= 3 and all((ROOT / t).is_file() for t in tests), tests
