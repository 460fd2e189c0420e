"""The engine's parts on their own: the per-group BatchNorm rule, the AMP table, the best-epoch rule, plots that
leave the process's matplotlib backend alone, and warnings scoped to a run (CPU, micro model, no training)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from promptiqa.config import resolve_config
from promptiqa.devices import autocast, cpu_facts, cpu_name, cpu_vector_extensions
from promptiqa.distributed import DistEnv, quiet_unless_main
from promptiqa.engine.run_folder import best_epoch, selection_score
from promptiqa.engine.virtual_ranks import GroupBatchNorm2d, batchnorm_groups, group_batchnorm_layers
from promptiqa.errors import ConfigError
from promptiqa.models import build_model

ROOT = Path(__file__).resolve().parents[1]
BN_BUFFERS = ("cnn.1.running_mean", "cnn.9.running_var", "cnn.5.num_batches_tracked")


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_batched_groups_equal_separate_groups():
    torch.manual_seed(0)
    model = build_model("promptiqa", preset="micro", drop=0.0).train()
    keys = list(model.state_dict())
    GroupBatchNorm2d.convert(model)
    assert list(model.state_dict()) == keys and len(group_batchnorm_layers(model)) == 3   # the checkpoint layout
    layers = group_batchnorm_layers(model)
    images, scores = torch.rand(8, 3, 64, 64) * 2 - 1, torch.rand(8)
    start = _state(model)
    first = model(images[:4], scores[:4])
    after_first = _state(model)
    second = model(images[4:], scores[4:])
    model.load_state_dict(start)
    with batchnorm_groups(layers, 2):
        both = model(images, scores, groups=2)
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-5, rtol=0)
    # running statistics follow the first group only, as DDP's buffer broadcast from rank 0 makes them
    for key in BN_BUFFERS:
        torch.testing.assert_close(model.state_dict()[key], after_first[key], atol=1e-6, rtol=0)
    # the accumulated path: a later group is normalised with its own statistics and leaves the running ones alone
    model.load_state_dict(after_first)
    with batchnorm_groups(layers, 1, update_running=False):
        again = model(images[4:], scores[4:])
    assert torch.equal(again, second)
    for key in BN_BUFFERS:
        assert torch.equal(model.state_dict()[key], after_first[key]), key
    # outside the rule the layers are plain BatchNorm: one batch of 8 shares its statistics
    model.load_state_dict(start)
    assert not torch.allclose(model(images, scores, groups=2), both, atol=1e-3)


def test_group_batchnorm_is_batchnorm_in_eval_mode():
    torch.manual_seed(0)
    plain = build_model("promptiqa", preset="micro").eval()
    grouped = GroupBatchNorm2d.convert(build_model("promptiqa", preset="micro").eval())
    grouped.load_state_dict(plain.state_dict())
    images, scores = torch.rand(6, 3, 64, 64) * 2 - 1, torch.rand(6)
    with torch.no_grad(), batchnorm_groups(group_batchnorm_layers(grouped), 2):
        assert torch.equal(grouped(images, scores, groups=2), plain(images, scores, groups=2))


def test_fp16_is_refused_everywhere_with_the_reason(tmp_path, capsys, monkeypatch):
    from promptiqa.cli import COMMANDS, command_parser, main

    reason = "fp16 is not offered: MAL's unscaled attention energies overflow float16"
    with pytest.raises(SystemExit) as exit_:                               # train.py's command line: a usage error
        resolve_config(["--amp", "fp16"])
    assert exit_.value.code == 2 and f"argument --amp: {reason}" in capsys.readouterr().err
    # every command that takes --amp or --eval_amp (itself, or through the command its rest goes to): a usage error,
    # before anything is written
    needs = {"ablation": ["--variant", "all"]}   # what a command asks for before it parses the rest
    monkeypatch.chdir(tmp_path)
    refused = []
    for name, command in COMMANDS.items():
        parsers = [command_parser(name)] + ([command_parser(command.rest_to)] if getattr(command, "rest_to", None)
                                            else [])
        for option in sorted({o for p in parsers for a in p._actions for o in a.option_strings} & {"--amp",
                                                                                                   "--eval_amp"}):
            assert main([name, *needs.get(name, []), option, "fp16"]) == 2, (name, option)
            assert f"argument {option}: {reason}" in capsys.readouterr().err, (name, option)
            refused.append(f"{name} {option}")
    assert {"train --amp", "train --eval_amp", "test --amp", "score --amp", "benchmark --amp",
            "ten-splits --amp", "ablation --eval_amp", "relabel-eval --amp"} <= set(refused)
    assert list(tmp_path.iterdir()) == []
    import runpy

    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "benchmark_score.py"))
    with pytest.raises(SystemExit) as exit_:                               # and the stand-alone benchmark script
        script["main"](["--amp", "fp16"])
    assert exit_.value.code == 2 and f"argument --amp: {reason}" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=f"--amp: {reason}"):             # every config object (test.py's too)
        from promptiqa.evaluation.runner import EvalConfig
        EvalConfig(checkpoint="x", dataset=["live"], amp="fp16").validate()
    with pytest.raises(ConfigError, match=reason):                         # the one autocast
        autocast(torch.device("cpu"), "fp16")
    from promptiqa.predict import Predictor, PredictorError
    with pytest.raises(PredictorError, match=reason):                      # scoring
        Predictor(build_model("promptiqa", preset="micro"), device="cpu", amp="fp16")
    assert resolve_config(["--amp", "bf16"]).amp == "bf16"


def test_best_epoch_is_the_earliest_of_the_largest_sum():
    rows = {"live": {"srocc": 0.9, "plcc": 0.8}, "csiq": {"srocc": float("nan"), "plcc": 0.5}}
    assert selection_score(rows) == pytest.approx(2.2)                    # NaN counts as 0
    assert best_epoch({1: 1.5, 2: 1.7, 3: 1.7, 4: 1.6}) == 2
    assert best_epoch({3: 1.0}) == 3


def test_summary_reads_the_best_epoch_by_the_same_rule(tmp_path):
    from promptiqa.experiments.summary import select_epochs

    rows = [dict(epoch=e, dataset=d, split="test", srocc=s, plcc=p) for e, d, s, p in [
        (1, "live", 0.5, 0.5), (1, "csiq", 0.5, 0.5), (2, "live", 0.9, 0.9), (2, "csiq", 0.1, 0.1),
        (3, "live", 0.7, 0.7), (3, "csiq", float("nan"), 0.1)]]
    assert select_epochs(rows) == {"last": 3, "best": 1}                  # 2.0 at epochs 1 and 2: the earlier
    val = [dict(r, split="val", srocc=r["epoch"] / 4, plcc=r["epoch"] / 4) for r in rows]   # rises: epoch 3
    assert select_epochs(rows, val) == {"last": 3, "best": 1, "best_val": 3}


def test_plots_leave_the_matplotlib_backend_alone(tmp_path):
    history = [dict(epoch=e, dataset=d, split=s, srocc=0.5 + e / 10, plcc=0.6, loss=1 / e)
               for e in (1, 2) for d in ("live", "csiq") for s in ("train", "test")]
    code = f"""
import json, sys, matplotlib
matplotlib.use("pdf")
import numpy as np
from promptiqa.engine.run_folder import plot_curves
from promptiqa.evaluation.report import plot_lines, plot_scatter
out = sys.argv[1]
plot_curves(json.loads(sys.argv[2]), out + "/curves.png")
plot_scatter({{"live": dict(gt=np.arange(5.0), pred=np.arange(5.0), srocc=1.0, plcc=1.0)}}, out + "/scatter.png")
plot_lines([1, 2], {{"srocc": {{"a": [0.1, 0.2]}}}}, out + "/lines.png", xlabel="n")
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path), json.dumps(history)], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["pdf", "False"]
    for name in ("curves.png", "scatter.png", "lines.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_other_ranks_are_quiet_only_inside_the_run():
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_unless_main(DistEnv(rank=1, world_size=2)):
            warnings.warn("from rank 1")
        with quiet_unless_main(DistEnv(rank=0, world_size=2)):
            warnings.warn("from rank 0")
        warnings.warn("after the run")
    assert [str(w.message) for w in caught] == ["from rank 0", "after the run"]
    assert warnings.filters == before


X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_bf16 sha_ni
"""
ARM_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes sha2 asimddp sve bf16 i8mm
Model\t\t: Neoverse-V1
"""


def test_the_cpu_facts_name_the_model_and_the_vector_extensions_that_change_the_kernels():
    assert cpu_name(X86_CPUINFO) == "AMD EPYC 9654 96-Core Processor" and cpu_name(ARM_CPUINFO) == "Neoverse-V1"
    assert cpu_vector_extensions(X86_CPUINFO) == ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
                                                  "avx512vl", "avx512_bf16"]
    assert cpu_vector_extensions(ARM_CPUINFO) == ["asimd", "asimddp", "bf16", "i8mm", "sve"]
    facts = cpu_facts()
    assert facts["torch_threads"] == torch.get_num_threads() and facts["cores"] == os.cpu_count()
    assert facts["torch_build"] == (f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only")
    assert facts["model"] == cpu_name() and facts["vector_extensions"] == cpu_vector_extensions()
