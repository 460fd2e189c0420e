"""The 10-split protocol (Table 2) and the ablations (Table 6): train and test one run per split seed.

Layout: ``<root>/seed_<seed>/`` is one training run (train.py's files) plus ``test_last/`` and ``test_best/``
(test.py on last.pth.tar and best_model.pth.tar with the run's own splits.json; with --val_fraction also
``test_best_val/`` on best_val_model.pth.tar) and ``DONE.json`` once they are written. A seed with DONE.json is
skipped; one whose training was interrupted resumes from its last.pth.tar. The "w/o mixed training" ablation
trains one model per dataset: ``<root>/seed_<seed>/<dataset>/``.
Run the seeds one after another (default), or one per cluster job (``--seed_index i`` or ``--seeds s``); the whole
script also runs under torchrun (every seed then trains and tests on all processes).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional, Sequence

from ..config import EvalConfig, TrainConfig, evaluation_config, resolve_config
from ..data import SPLIT_SEEDS
from ..distributed import Launch, read_launch
from ..engine import run_folder
from ..entry import command
from ..errors import ConfigError
from ..fileio import write_json
from ..evaluation.runner import run_test
from .summary import group_roots, print_summary, record_method, summarise_roots

DONE_MARKER = "DONE.json"
TEST_CHECKPOINTS = {"last": run_folder.LAST, "best": run_folder.BEST, "best_val": run_folder.BEST_VAL}

# Table 6: each ablation as the train.py settings it changes ("wo_mixed" trains one model per dataset instead).
VARIANTS: Dict[str, Dict[str, object]] = {
    "full": {},
    "wo_mixed": {},
    "wo_prompt": {"model": "promptiqa_wo_prompt"},
    "wo_scaling": {"random_scale_rate": 0.0},
    "wo_flipping": {"random_flipping_rate": 0.0},
    "wo_both": {"random_scale_rate": 0.0, "random_flipping_rate": 0.0},
}
VARIANT_TITLES = {"full": "PromptIQA (full)", "wo_mixed": "w/o mixed training", "wo_prompt": "w/o prompt",
                  "wo_scaling": "w/o random scaling", "wo_flipping": "w/o random flipping",
                  "wo_both": "w/o random scaling & flipping"}
OPTION_OF = {"model": "--model", "random_scale_rate": "--random_scale_rate",
             "random_flipping_rate": "--random_flipping_rate"}


class ProtocolError(ConfigError):
    """A request the protocol scripts refuse (conflicting options, an unknown seed index or variant)."""


def pick_seeds(seeds: Optional[Sequence[int]] = None, seed_index: Optional[int] = None) -> List[int]:
    """The seeds to run: ``seeds``, or SPLIT_SEEDS[seed_index], or all 10 SPLIT_SEEDS."""
    if seeds and seed_index is not None:
        raise ProtocolError("give --seeds or --seed_index, not both")
    if seed_index is not None:
        if not 0 <= seed_index < len(SPLIT_SEEDS):
            raise ProtocolError(f"--seed_index must be in 0..{len(SPLIT_SEEDS) - 1} (SPLIT_SEEDS = "
                                f"{', '.join(map(str, SPLIT_SEEDS))}), got {seed_index}")
        return [SPLIT_SEEDS[seed_index]]
    return list(seeds) if seeds else list(SPLIT_SEEDS)


def test_config(cfg: TrainConfig, folder: Path, which: str) -> EvalConfig:
    """test.py's settings for a finished run: its checkpoint, its own splits.json, its data and device options."""
    return evaluation_config(cfg, checkpoint=str(folder / TEST_CHECKPOINTS[which]),
                             split_file=str(folder / run_folder.SPLITS), save_path=str(folder / f"test_{which}"))


def _launch(cfg: Optional[TrainConfig] = None) -> Launch:
    """This process's rank and world size as training reads them (``read_launch``, the one parser of the launch
    environment); a one-process --ddp group is training's own, so it is not asked for here."""
    return read_launch(dataclasses.replace(cfg or TrainConfig(), ddp=False))


def _is_main(cfg: Optional[TrainConfig] = None) -> bool:
    return _launch(cfg).rank == 0


def _launched_distributed(cfg: TrainConfig) -> bool:
    return _launch(cfg).world_size > 1


@contextmanager
def shared_process_group(cfg: TrainConfig):
    """Under torchrun/SLURM, one process group for every seed's training and testing (None otherwise).

    Destroying and re-creating the default group between phases races: a rank that re-joins first reads the other
    rank's stale rendezvous address from the store. So the group is created once here; training and test.py find
    it initialised, do not own it, and leave it for this context to destroy.
    """
    if not _launched_distributed(cfg):
        yield None
        return
    from ..distributed import cleanup, init_distributed

    env = init_distributed(cfg)
    try:
        yield env
    finally:
        cleanup(env)


def run_one(cfg: TrainConfig, folder: Path, tests: Sequence[str] = ("last", "best"),
            log: Callable[[str], None] = print, env=None) -> bool:
    """Train (resuming an interrupted run) and test one run in ``folder``; True once it is done (DONE.json)."""
    from ..engine.trainer import launch

    folder = Path(folder)
    marker = folder / DONE_MARKER
    if marker.is_file():
        log(f"{folder}: already done ({DONE_MARKER}); skipped")
        return True
    started = time.time()
    cfg = dataclasses.replace(cfg, save_path=str(folder), resume=None, overwrite=False)
    if not (folder / run_folder.SUMMARY).is_file():
        if (folder / run_folder.LAST).is_file():
            cfg = dataclasses.replace(cfg, resume=str(folder / run_folder.LAST))
            log(f"{folder}: resuming the interrupted training")
        elif run_folder.existing_run_files(folder):
            # killed before its first checkpoint: nothing to resume, start it again
            cfg = dataclasses.replace(cfg, overwrite=True)
            log(f"{folder}: the interrupted training saved no checkpoint; starting it again")
        outcome = launch(cfg)
        # every in-process rank gets the outcome; only --multiprocessing-distributed's parent gets None and then
        # reads the file the spawned rank 0 wrote (other ranks must not: rank 0 may not have written it yet)
        finished = not outcome["stopped"] if outcome is not None else (folder / run_folder.SUMMARY).is_file()
        if not finished:
            log(f"{folder}: training stopped before the end; run the same command again to resume")
            return False
    for which in tests:
        run_test(test_config(cfg, folder, which), env=env)
    if _is_main(cfg):
        write_json(marker, {"seed": cfg.seed, "datasets": list(cfg.dataset), "tests": list(tests),
                            "seconds": time.time() - started, "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    return True


def run_seeds(cfg: TrainConfig, root: Path, seeds: Sequence[int], tests: Sequence[str] = ("last", "best"),
              per_dataset: bool = False, log: Callable[[str], None] = print) -> Dict[int, bool]:
    """Run every seed in ``root`` (one mixed run per seed, or one run per dataset when ``per_dataset``)."""
    done = {}
    log = log if _is_main(cfg) else (lambda message: None)
    with shared_process_group(cfg) as env:
        for seed in seeds:
            seed_cfg = dataclasses.replace(cfg, seed=int(seed))
            folder = Path(root) / f"seed_{seed}"
            log(f"=== seed {seed}: {folder}")
            if per_dataset:
                ok = True
                for key in cfg.dataset:
                    ok = run_one(dataclasses.replace(seed_cfg, dataset=[key]), folder / key, tests, log, env) and ok
                    if not ok:
                        break
            else:
                ok = run_one(seed_cfg, folder, tests, log, env)
            done[int(seed)] = ok
            if not ok:   # interrupted (e.g. a pre-empted job): stop here, the next invocation resumes
                break
    return done


def _protocol_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                epilog="Every other option is train.py's (see python train.py --help) and is passed "
                                       "through; --seed is replaced by --seeds/--seed_index, --save_path is the root.")
    p.add_argument("--seeds", nargs="+", type=int, help=f"split seeds (default the 10 of SPLIT_SEEDS: {SPLIT_SEEDS})")
    p.add_argument("--seed_index", type=int, help="run only SPLIT_SEEDS[i] (one seed per cluster job)")
    p.add_argument("--tests", nargs="*", choices=sorted(TEST_CHECKPOINTS), default=None,
                   help="checkpoints to run test.py on after training (default: last best, and best_val with "
                        "--val_fraction; none: --tests)")
    return p


def _train_config(rest: Sequence[str], forbidden: Dict[str, str]) -> TrainConfig:
    for flag, why in forbidden.items():
        if any(arg == flag or arg.startswith(flag + "=") for arg in rest):
            raise ProtocolError(f"{flag} cannot be given here: {why}")
    return resolve_config(list(rest))


def pick_tests(tests: Optional[Sequence[str]], cfg: TrainConfig) -> List[str]:
    """The checkpoints test.py runs on: ``tests``, or last and best (and best_val with --val_fraction)."""
    if tests is None:
        return ["last", "best"] + (["best_val"] if cfg.val_fraction else [])
    if "best_val" in tests and not cfg.val_fraction and not cfg.split_file:
        raise ProtocolError("--tests best_val needs --val_fraction F (a run without a validation part writes no "
                            f"{run_folder.BEST_VAL})")
    return list(tests)


def build_ten_splits_parser() -> argparse.ArgumentParser:
    """The ten-splits command's own options; the rest goes to train.py's parser."""
    p = _protocol_parser("Train and test PromptIQA on the 10 split seeds (Table 2), skipping finished seeds")
    p.add_argument("--save_path", default="runs/ten_splits", help="root folder; seed s goes to <root>/seed_<s>")
    return p


def ten_splits_main(argv: Optional[Sequence[str]] = None) -> int:
    """scripts/ten_splits.py: train + test on the 10 split seeds, then summarise the finished ones (Table 2)."""
    p = build_ten_splits_parser()
    args, rest = p.parse_known_args(argv)
    cfg = _train_config(rest, {"--seed": "use --seeds or --seed_index"})
    seeds = pick_seeds(args.seeds, args.seed_index)
    if _is_main(cfg):
        record_method(args.save_path, "PromptIQA")
    done = run_seeds(cfg, Path(args.save_path), seeds, pick_tests(args.tests, cfg))
    if _is_main(cfg):
        if args.seed_index is None:
            _summarise_with_notes([args.save_path], Path(args.save_path) / "summary", "PromptIQA over split seeds")
        else:   # one job of an array: concurrent jobs must not write the same summary files
            print(f"when every job has finished: {command('summarise')} {args.save_path}")
    return 0   # a seed stopped resumably (a signal, --stop_after_steps) is not an error: train.py exits 0 too


def build_ablation_parser() -> argparse.ArgumentParser:
    """The ablation command's own options; the rest goes to train.py's parser."""
    p = _protocol_parser("Ablations of Table 6: " + ", ".join(f"{k} ({v})" for k, v in VARIANT_TITLES.items()))
    p.add_argument("--variant", nargs="+", choices=list(VARIANTS) + ["all"], metavar="NAME",
                   help=f"variant(s) to train and test: {', '.join(VARIANTS)}, or all; omit with --summarise")
    p.add_argument("--save_path", default="runs/ablation", help="root folder; variant v, seed s: <root>/v/seed_<s>")
    p.add_argument("--summarise", action="store_true", help="only write the summary across the variants found")
    return p


def ablation_main(argv: Optional[Sequence[str]] = None) -> int:
    """scripts/ablation.py: the Table 6 variants, each over split seeds, then a summary across variants."""
    p = build_ablation_parser()
    args, rest = p.parse_known_args(argv)
    root = Path(args.save_path)
    if not args.summarise:
        if not args.variant:
            raise ProtocolError("give --variant NAME (or all), or --summarise")
        variants = list(VARIANTS) if "all" in args.variant else list(dict.fromkeys(args.variant))
        seeds = pick_seeds(args.seeds, args.seed_index)
        for variant in variants:
            forbidden = {"--seed": "use --seeds or --seed_index"}
            forbidden.update({OPTION_OF[f]: f"variant {variant} sets it" for f in VARIANTS[variant]})
            cfg = dataclasses.replace(_train_config(rest, forbidden), **VARIANTS[variant])
            if _is_main(cfg):
                record_method(root / variant, VARIANT_TITLES[variant], variant)
            done = run_seeds(cfg, root / variant, seeds, pick_tests(args.tests, cfg), per_dataset=variant == "wo_mixed")
            if not all(done.values()) or len(done) != len(seeds):
                return 0   # stopped resumably, as ten-splits: the same command resumes; no summary of half a run
    if _is_main():
        present = [v for v in VARIANTS if (root / v).is_dir()]
        if not present:
            raise ProtocolError(f"no variant folders under {root}")
        for v in present:   # folders of versions that recorded no label get theirs
            record_method(root / v, VARIANT_TITLES[v], v)
        _summarise_with_notes([root / v for v in present], root / "summary", "Ablations (Table 6)")
    return 0


def _summarise_with_notes(folders: Sequence, prefix: Path, title: str) -> None:
    """Write and print the summary over the finished seeds, each folder under its recorded label (as `summarise`
    would label it); what it skipped (unfinished runs) becomes 'note:' lines."""
    roots, rows = group_roots(folders)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = summarise_roots(roots, prefix, title, paper_rows=rows)
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    print_summary(summary, prefix, title)
