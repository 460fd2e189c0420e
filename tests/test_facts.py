"""One home for each fact (issue 32, item 5): each fact is read from its home, and stating it a second time somewhere
else fails here; where the fact drives behaviour, the behaviour is checked too."""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
import torch

from promptiqa.models import build_model, load_model, read_checkpoint, save_checkpoint, unwrap, uses_prompt

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "promptiqa"


def _sources(exclude=()):
    """(path relative to the repository, text) of every module of the package but ``exclude``."""
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel not in exclude:
            yield rel, path.read_text(encoding="utf-8")


def _tokens(text, kind):
    """The ``kind`` tokens (tokenize.NUMBER, tokenize.STRING) of a module: code only, comments left out."""
    return [(t.start[0], t.string) for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == kind]


# ---------------------------------------------------------------- the model's kind, one unwrap


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return build_model("promptiqa", preset="micro", pretrained_backbone=False).eval()


def test_the_model_kind_is_read_through_every_wrapper(micro):
    ablation = build_model("promptiqa_wo_prompt", preset="micro", pretrained_backbone=False)
    compiled = torch.compile(micro)             # wraps lazily: nothing is compiled until it is called
    ddp_like = torch.nn.Module()
    ddp_like.module = compiled                  # DistributedDataParallel keeps its model in .module
    assert unwrap(ddp_like) is micro and unwrap(compiled) is micro and unwrap(micro) is micro
    assert uses_prompt(micro) and uses_prompt(compiled) and uses_prompt(ddp_like)
    assert not uses_prompt(ablation) and not uses_prompt(torch.compile(ablation))


def test_a_wrapped_model_is_saved_as_the_bare_model_and_scores_in_the_predictor(micro, tmp_path):
    from promptiqa import Predictor

    ddp_like = torch.nn.Module()
    ddp_like.module = torch.compile(micro)
    path = save_checkpoint(tmp_path / "m.pth.tar", ddp_like, prompt_num=3)
    saved = read_checkpoint(path)["state_dict"]
    assert {k[len("module."):] for k in saved} == set(micro.state_dict())   # the official prefix, no wrapper names
    assert uses_prompt(load_model(path, device="cpu"))
    predictor = Predictor(torch.compile(micro), device="cpu")
    assert predictor.model is micro


def test_the_model_kind_and_the_unwrap_are_stated_once():
    stated = [f"{rel}:{n}" for rel, text in _sources(exclude={"promptiqa/models/promptiqa.py"})
              for n, line in enumerate(text.splitlines(), 1)
              if re.search(r'hasattr\([^)]*"encode_prompt"\)|"_orig_mod"|getattr\([^)]*"module"', line)]
    assert stated == []


# ---------------------------------------------------------------- the launch environment, parsed once


@pytest.mark.parametrize("environ, main, distributed", [
    ({}, True, False),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, False, True),
    ({"RANK": "0", "WORLD_SIZE": "1"}, True, False),
    # srun sets SLURM_STEP_NUM_TASKS for the step: training reads it first, and so does the protocol now
    ({"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "2"}, False, True),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, True, False),
])
def test_the_protocol_reads_ranks_as_training_does(monkeypatch, environ, main, distributed):
    from promptiqa.config import TrainConfig
    from promptiqa.distributed import read_launch
    from promptiqa.experiments import protocol

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS",
                 "SLURM_STEP_NUM_TASKS", "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    cfg = TrainConfig(ddp=True)   # a one-process --ddp group is training's own: not a shared group
    launch = read_launch(TrainConfig())
    assert (protocol._is_main(cfg), protocol._launched_distributed(cfg)) == (main, distributed)
    assert (launch.rank == 0, launch.world_size > 1) == (main, distributed)


def test_only_distributed_py_reads_the_launch_environment():
    names = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS",
             "SLURM_LOCALID", "SLURM_STEP_NUM_TASKS"}
    stated = [f"{rel}:{n} {s}" for rel, text in _sources(exclude={"promptiqa/distributed.py"})
              for n, s in _tokens(text, tokenize.STRING) if s.strip("'\"") in names]
    assert stated == []


# ---------------------------------------------------------------- the logged learning rate


def test_the_epoch_line_logs_the_optimisers_rate_during_warm_up(data, train_argv, tmp_path):
    from promptiqa.config import resolve_config
    from promptiqa.engine.trainer import launch

    run = tmp_path / "run"
    launch(resolve_config(train_argv(data, run, epochs=1, lr=1e-3, lr_warmup_steps=1000)))
    logged = [float(m.group(1)) for m in re.finditer(r"epoch 1/1: .*?, lr (\S+),", (run / "log.txt").read_text())]
    rate = read_checkpoint(run / "last.pth.tar")["optimizer"]["param_groups"][0]["lr"]
    assert rate < 1e-4                                  # a few steps into a 1000-step ramp
    assert logged == [float(f"{rate:.3g}")]             # not the schedule's 1e-3, which ignores the ramp


# ---------------------------------------------------------------- the image size


def test_the_image_size_is_stated_once():
    from promptiqa.config import ModelSettings, resolve_config
    from promptiqa.data.images import DEFAULT_IMAGE_SIZE
    from promptiqa.models import PRESETS

    stated = [f"{rel}:{n}" for rel, text in _sources(exclude={"promptiqa/config.py"})
              for n, s in _tokens(text, tokenize.NUMBER) if s == "224"]
    assert stated == []
    assert DEFAULT_IMAGE_SIZE == ModelSettings.image_size == PRESETS["official"]["image_size"] == 224
    assert resolve_config([]).image_size == DEFAULT_IMAGE_SIZE


# ---------------------------------------------------------------- the web app and the demo


def test_the_web_app_builds_its_examples_without_the_demo(tmp_path):
    """The distortion library lives in promptiqa.data: the app's modules, and the bundled examples they build, load
    no promptiqa.demo module."""
    import subprocess
    import sys

    code = f"""
import sys, types, yaml
import promptiqa.app.command, promptiqa.app.page, promptiqa.app.service
from promptiqa.app.command import demo_checkpoint
from promptiqa.app.examples import example_requirements
from promptiqa.app.service import describe_model
train = yaml.safe_load(open("configs/demo.yaml"))["train"]
config = {{k: train[k] for k in ("backbone", "backbone_kwargs", "image_size")}}
demo_model = types.SimpleNamespace(model=types.SimpleNamespace(config=config), image_size=64, device="cpu")
print(len(example_requirements({str(tmp_path)!r}, 32)), demo_checkpoint().as_posix())
print("This is the demo's model" in describe_model(demo_model, "runs/demo", "the demo"))
print(sorted(m for m in sys.modules if m.startswith("promptiqa.demo")))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["10 runs/demo/promptiqa/last.pth.tar", "True", "[]"]


def test_the_demo_dataset_command_keeps_its_documented_spelling(tmp_path):
    import subprocess
    import sys

    from promptiqa.data import synthetic
    from promptiqa.demo import synthetic as alias

    assert alias.distort is synthetic.distort and alias.LEVELS is synthetic.LEVELS
    out = subprocess.run([sys.executable, "-m", "promptiqa.demo.synthetic", "--out", str(tmp_path / "d"), "--size",
                          "16", "--crops_per_photo", "1", "--no_progress"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "d" / "images.csv").is_file() and (tmp_path / "d" / "dataset.json").is_file()


# ---------------------------------------------------------------- dataset facts: the registry


def test_the_task_groups_come_from_the_registry():
    from promptiqa.data.registry import DATASET_SPECS, TASKS
    from promptiqa.experiments.summary import column_groups, task_of

    assert all(spec.task for spec in DATASET_SPECS.values())
    assert [task for task, _ in TASKS] == ["synthetic", "authentic", "face", "AI-generated", "underwater"]
    assert {key: task_of(key) for key in DATASET_SPECS} == {key: spec.task for key, spec in DATASET_SPECS.items()}
    assert task_of("mine") == "other"
    assert column_groups(["uwiqa", "mine", "live", "kadid"]) == [("synthetic", ["live", "kadid"]),
                                                                  ("underwater", ["uwiqa"]), ("other", ["mine"])]


def test_titles_task_groups_and_reference_folders_are_stated_once():
    from promptiqa.data.registry import DATASET_SPECS, TASKS

    facts = {s.title for s in DATASET_SPECS.values()} | {s.short_title for s in DATASET_SPECS.values() if s.short_title}
    facts |= {s.reference_folder[0] for s in DATASET_SPECS.values() if s.reference_folder} - {"images"}
    facts |= {task for task, _ in TASKS}
    # paper/figures.py names the paper's rows of the task averages, by task
    allowed = {"promptiqa/data/registry.py", "promptiqa/paper/figures.py"}
    stated = [f"{rel}:{n} {s}" for rel, text in _sources(exclude=allowed)
              for n, s in _tokens(text, tokenize.STRING) if s.strip("'\"") in facts]
    assert stated == []


def test_relabelling_finds_the_references_where_the_registry_says(tmp_path):
    from promptiqa.data import load_dataset
    from promptiqa.experiments.relabel import reference_files
    from tests.fixtures.datasets import build_fixture

    root = build_fixture("csiq", tmp_path / "csiq", n_refs=3, per_ref=2, seed=0)
    found = reference_files(load_dataset("csiq", root))
    assert sorted(found) == sorted(load_dataset("csiq", root).units) and len(found) == 3
    assert {p.parent.name for p in found.values()} == {"src_imgs"}


# ---------------------------------------------------------------- one CSV writer, one JSON writer

# The gpu check's child-to-parent message keeps Python's JSON, whose NaN strict JSON has not.
WRITER_EXCEPTIONS = {("promptiqa/engine/gpu_check/runner.py", "json.dumps(")}


def test_csv_and_json_are_written_by_fileio_alone():
    stated = [f"{rel}:{n} {call}" for rel, text in _sources(exclude={"promptiqa/fileio.py"})
              for n, line in enumerate(text.splitlines(), 1)
              for call in ("csv.writer(", "csv.DictWriter(", "json.dump(", "json.dumps(") if call in line
              and (rel, call) not in WRITER_EXCEPTIONS]
    assert stated == []


def test_every_csv_we_write_has_one_line_end_and_keeps_its_columns(tmp_path):
    """Outputs of three writers (training's metrics.csv through a real run is test_train's; here the evaluation
    table, the demo's dataset and the app's download) share "\\n" line ends and keep their columns."""
    import subprocess
    import sys

    from promptiqa.app.service import Results
    from promptiqa.evaluation.report import write_csv
    from promptiqa.fileio import csv_text

    table = write_csv(tmp_path / "t.csv", ["dataset", "srocc", "n"], [{"dataset": "a", "srocc": 0.1, "n": 3},
                                                                    {"dataset": "b", "srocc": None}])
    assert table.read_bytes() == b"dataset,srocc,n\na,0.1,3\nb,,\n"
    subprocess.run([sys.executable, "-m", "promptiqa.data.synthetic", "--out", str(tmp_path / "d"), "--size", "16",
                    "--crops_per_photo", "1", "--no_progress", "--requirements", "ssim"], cwd=ROOT, check=True,
                   capture_output=True)
    for name in ("images.csv", "ssim.csv"):
        raw = (tmp_path / "d" / name).read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n"), name
    assert (tmp_path / "d" / "ssim.csv").read_text().splitlines()[0] == "image,score,reference,distortion,level"
    assert csv_text(["image", "x"], [["a,b.png", 1]]) == 'image,x\n"a,b.png",1\n'
    results = Results(["a.png"], [tmp_path / "a.png"], [], np.zeros((1, 0)), 0.0)
    assert results.csv_text() == "image\na.png\n"


# ---------------------------------------------------------------- one sharded prediction loop


def test_one_loop_runs_a_model_over_sharded_images():
    """Predictions (engine/inference.py) and image features (evaluation/features.py) run through predict_sharded;
    test_evaluation checks the two agree (test_feature_bank_scores_like_predict_split) and read alike with workers."""
    stated = [f"{rel}:{n}" for rel, text in _sources(exclude={"promptiqa/data/groups.py"})
              for n, line in enumerate(text.splitlines(), 1) if "sampler=TestShardSampler(" in line]
    assert len(stated) == 1 and stated[0].startswith("promptiqa/engine/inference.py:")
    features = (PACKAGE / "evaluation" / "features.py").read_text()
    assert "predict_sharded(" in features and "ImageLoader" not in features


def test_the_sharded_loop_gathers_every_rank_in_dataset_order(monkeypatch):
    """Two ranks simulated in one process: each runs its own shard, the gather gives both the full, ordered result."""
    from promptiqa.data.images import normalise
    from promptiqa.distributed import DistEnv
    from promptiqa.engine import inference

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 7

        def __getitem__(self, i):
            return torch.full((3, 2, 2), i, dtype=torch.uint8), torch.tensor(0.0), i

    shards = {}
    for rank in (0, 1):
        monkeypatch.setattr(inference, "all_gather_objects", lambda local, env: [local])
        shards[rank] = inference.predict_sharded(Images(), DistEnv(rank=rank, world_size=2),
                                                 lambda x: x.mean(dim=(1, 2, 3)), batch_size=2)
    rows = [np.isfinite(shards[r]) for r in (0, 1)]
    assert not (rows[0] & rows[1]).any() and (rows[0] | rows[1]).all()     # each image scored once, by one rank
    monkeypatch.setattr(inference, "all_gather_objects", lambda local, env: [
        (np.flatnonzero(rows[r]), shards[r][rows[r]]) for r in (0, 1)])
    gathered = inference.predict_sharded(Images(), DistEnv(rank=0, world_size=2), lambda x: x.mean(dim=(1, 2, 3)))
    expected = [float(normalise(torch.full((1, 3, 2, 2), i, dtype=torch.uint8)).mean()) for i in range(7)]
    np.testing.assert_allclose(gathered, expected, rtol=1e-6)
