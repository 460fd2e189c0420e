"""New requirements (the paper's Table 3): relabel synthetic datasets with full-reference metrics, then evaluate.

``relabel`` scores every distorted image of a reference-based dataset (TID2013, KADID-10k; LIVE and CSIQ work too)
against its reference with piq, at full resolution, RGB in [0, 1], piq's default settings:
- ``ssim`` (MOS-like: higher is better), ``fsim`` (FSIMc, MOS-like), ``lpips`` (VGG, DMOS-like: lower is better).
LPIPS needs downloaded weights (torchvision's VGG16 and piq's lpips_weights.pt, in torch.hub's cache); offline it
is skipped with a message and the other metrics still run. Each (dataset, metric) becomes a ``csv``-kind label file
``<out_dir>/<dataset>_<metric>.csv`` (image,score,reference; images relative to the file), so the relabelled data
goes through the normal loaders. Its references are the dataset's, so a seed splits it exactly as it splits the
original dataset (csv units are sorted reference names, as are TID2013's and KADID's).

``table3`` evaluates on those files' test splits: PromptIQA with 10 ISPs sampled (interval) from the relabelled
train split, and the paper's baselines from a w/o-prompt checkpoint: zero-shot, and fine-tuned on the same 10 ISPs
(few-shot: all weights, Adam with the training defaults lr 1e-5 and weight decay 1e-5, ``--finetune_steps`` full-batch
steps on the 10 images, L1 loss, train mode). Scores are the raw metric values: no polarity flip, so the requirement
(e.g. DMOS-like LPIPS) is exactly what the prompt says. Output: PLCC in Table 3 layout, plus all metrics in CSV,
each PLCC beside the paper's Table 3 figure with Δ (``promptiqa.paper``): PromptIQA's row, and for our w/o-prompt
baselines the paper's MoNet rows (MoNet is PromptIQA's image encoder); sdt or mdt as the checkpoint was trained
on the source dataset alone or on a mix.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import paper
from ..config import add_options
from ..data import DatasetError, load_dataset, resolve_roots
from ..data.formats.common import FolderIndex
from ..data.registry import DATASET_SPECS
from ..data.images import normalise
from ..data.sampling import DEFAULT_ISP_NUM
from ..devices import autocast, resolve_device
from ..errors import ConfigError, PromptIQAError
from ..evaluation.report import markdown_table, write_csv, write_lines
from ..evaluation.runner import add_eval_options, config_from_args
from ..fileio import write_json

# metric -> (label type, higher is better)
FR_METRICS: "OrderedDict[str, tuple]" = OrderedDict(ssim=("MOS", True), fsim=("MOS", True), lpips=("DMOS", False))
# reference-based datasets: folder of the reference images and their extension (reference id = file stem)
REFERENCE_FILES = {key: spec.reference_folder for key, spec in DATASET_SPECS.items() if spec.reference_folder}
# Table 3's methods by the name paper.TABLE3_ROWS knows them by: the title of each row ({n}: the ISPP size)
METHOD_TITLES = OrderedDict(zero_shot="w/o prompt (zero-shot)", fine_tuned="w/o prompt (fine-tuned on the {n} ISPs)",
                            promptiqa="PromptIQA")


class MetricUnavailable(PromptIQAError, RuntimeError):
    """A full-reference metric that cannot run here (piq missing, LPIPS weights not downloadable)."""


# ---------------------------------------------------------------- full-reference scoring


def _piq():
    try:
        import piq
    except ImportError as err:
        raise MetricUnavailable("full-reference relabelling needs piq: pip install piq") from err
    return piq


def build_fr_metric(name: str, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A function (distorted, reference) -> (B,) scores, both (B, 3, H, W) RGB in [0, 1]."""
    piq = _piq()
    if name == "ssim":
        return lambda x, y: piq.ssim(x, y, data_range=1.0, reduction="none")
    if name == "fsim":
        return lambda x, y: piq.fsim(x, y, data_range=1.0, reduction="none")
    if name == "lpips":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # torchvision's 'pretrained' deprecation
                lpips = piq.LPIPS(reduction="none").to(device).eval()
        except Exception as err:   # URLError, HTTPError, OSError, ...: the weights could not be fetched
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise MetricUnavailable(
                f"LPIPS needs downloaded weights (torchvision's vgg16-397923af.pth and piq's lpips_weights.pt) and "
                f"they could not be fetched ({type(err).__name__}: {err}); offline, copy both files into {cache}. "
                f"Skipping LPIPS") from err
        return lambda x, y: lpips(x, y)
    raise ConfigError(f"unknown full-reference metric {name!r}; choose from {', '.join(FR_METRICS)}")


def reference_files(ds) -> Dict[str, Path]:
    """{reference id: reference image path} of a reference-based dataset."""
    if ds.key not in REFERENCE_FILES:
        raise DatasetError(ds.key, "full-reference relabelling needs a built-in reference-based dataset",
                           expected=", ".join(REFERENCE_FILES))
    folder, extension = REFERENCE_FILES[ds.key]
    index = FolderIndex(Path(ds.root))
    names = index.names_in(folder) or []
    by_id = {os.path.splitext(n)[0].upper(): n for n in names if n.lower().endswith(extension)}
    out, missing = {}, []
    for ref in ds.units:
        name = by_id.get(ref.upper()) or by_id.get(os.path.splitext(ref)[0].upper())
        if name is None:
            missing.append(ref)
        else:
            out[ref] = index.find(f"{folder}/{name}")
    if missing:
        raise DatasetError(ds.key, f"{len(missing)} reference image(s) not found in {folder}/, e.g. {missing[0]!r}",
                           ds.root)
    return out


def _read_rgb01(path) -> torch.Tensor:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"OpenCV could not read {path}")
    return torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).float().div(255.0)


@torch.no_grad()
def fr_scores(ds, metrics: Dict[str, Callable], device: torch.device, batch_size: int = 16,
              progress=None) -> Dict[str, np.ndarray]:
    """Every record's score under each metric (record order), each distorted image against its reference."""
    refs = reference_files(ds)
    out = {name: np.full(len(ds.records), np.nan) for name in metrics}
    by_ref: Dict[str, List[int]] = {}
    for i, r in enumerate(ds.records):
        by_ref.setdefault(r.reference, []).append(i)
    for ref, indices in by_ref.items():
        reference = _read_rgb01(refs[ref]).to(device)
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            images = [_read_rgb01(ds.records[i].path) for i in chunk]
            for i, image in zip(chunk, images):
                if image.shape != reference.shape:
                    raise DatasetError(ds.key, f"{ds.records[i].name} is {tuple(image.shape[1:])} but its reference "
                                               f"{refs[ref].name} is {tuple(reference.shape[1:])}", ds.root)
            x = torch.stack(images).to(device)
            y = reference.unsqueeze(0).expand_as(x)
            for name, fn in metrics.items():
                out[name][chunk] = fn(x, y).flatten().double().cpu().numpy()
            if progress is not None:
                progress.update(len(chunk))
    return out


def build_fr_metrics(names: Sequence[str], device: torch.device) -> Dict[str, Callable]:
    """The metrics of ``names`` that can run here; each one that cannot is reported on stderr and left out."""
    runnable: Dict[str, Callable] = {}
    for name in names:
        try:
            runnable[name] = build_fr_metric(name, device)
        except MetricUnavailable as err:
            print(f"WARNING: {err}", file=sys.stderr, flush=True)
    return runnable


def relabel(key: str, root, metrics: Dict[str, Callable], out_dir, device: Optional[torch.device] = None,
            batch_size: int = 16, log: Callable[[str], None] = print, progress: bool = True) -> Dict[str, Path]:
    """Write ``<out_dir>/<key>_<metric>.csv`` for each metric (from ``build_fr_metrics``); returns {metric: path}."""
    from tqdm import tqdm

    device = device or torch.device("cpu")
    ds = load_dataset(key, root)
    if not metrics:
        return {}
    with tqdm(total=len(ds.records), desc=f"{key} {'+'.join(metrics)}", unit="img", file=sys.stderr,
              disable=not progress) as bar:
        scores = fr_scores(ds, metrics, device, batch_size, progress=bar)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, values in scores.items():
        path = out_dir / f"{key}_{name}.csv"
        rows = [dict(image=_relative(r.path, out_dir), score=float(v), reference=r.reference)
                for r, v in zip(ds.records, values)]
        write_csv(path, ("image", "score", "reference"), rows)
        label, higher = FR_METRICS[name]
        log(f"{key}: {name} ({label}-like, {'higher' if higher else 'lower'} is better) for {len(rows)} images, "
            f"{np.min(values):.4g} to {np.max(values):.4g} -> {path}")
        written[name] = path
    return written


def _relative(path: str, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:   # another drive (Windows): absolute paths are accepted too
        return Path(path).as_posix()


def build_relabel_parser() -> argparse.ArgumentParser:
    """The relabel command's command line."""
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description="Relabel reference-based datasets with SSIM, FSIM and LPIPS (piq)",
                                argument_default=None)
    add_options(p, ("data_root", "datasets_config", "device"))
    p.add_argument("--dataset", nargs="+", default=["tid2013", "kadid"], choices=sorted(REFERENCE_FILES))
    p.add_argument("--metrics", nargs="+", default=list(FR_METRICS), choices=list(FR_METRICS))
    p.add_argument("--out_dir", default="data/relabelled", help="where the csv label files go")
    p.add_argument("--batch_size", type=int, default=16, help="distorted images per metric call")
    return p


def relabel_main(argv: Optional[Sequence[str]] = None) -> int:
    """scripts/relabel_fr.py relabel."""
    p = build_relabel_parser()
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    roots = resolve_roots(args.dataset, config=args.datasets_config, overrides=args.data_root or [])
    metrics = build_fr_metrics(args.metrics, device)
    written = {}
    for key in args.dataset:
        for metric, path in relabel(key, roots[key], metrics, args.out_dir, device, args.batch_size).items():
            written[f"{key}_{metric}"] = path
    write_json(Path(args.out_dir) / "relabel.json",
               {"datasets": {k: roots[k] for k in args.dataset}, "metrics": {m: FR_METRICS[m][0] for m in metrics},
                "skipped": [m for m in args.metrics if m not in metrics],
                "written": {k: str(v) for k, v in written.items()}, "piq": getattr(_piq(), "__version__", None)})
    if written:
        print("use them as datasets: " + " ".join(f"--data_root {k}={v}" for k, v in written.items()))
    skipped = [m for m in args.metrics if m not in metrics]
    if skipped:
        print(f"skipped (see the warnings above): {', '.join(skipped)}", file=sys.stderr)
    return 0 if written else 4


# ---------------------------------------------------------------- Table 3


def finetune_few_shot(model, images: torch.Tensor, scores: torch.Tensor, steps: int, lr: float = 1e-5,
                      weight_decay: float = 1e-5, seed: int = 0, amp: str = "none", env=None):
    """A copy of a w/o-prompt model fine-tuned on the ISPs (uint8 images, as an ISPP holds them): ``steps``
    full-batch Adam steps, L1 loss, train mode."""
    tuned = copy.deepcopy(model)
    device = next(tuned.parameters()).device
    tuned.train()
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(tuned.parameters(), lr=lr, weight_decay=weight_decay)
    x, y = normalise(images.to(device)), scores.to(device).float()
    for _ in range(steps):
        with autocast(device, amp):
            pred = tuned(x)
        loss = F.l1_loss(pred.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.set_rng_state(generator_state)
    tuned.eval()
    if env is not None and env.distributed:   # every rank scores with rank 0's weights
        import torch.distributed as dist

        for tensor in list(tuned.parameters()) + list(tuned.buffers()):
            dist.broadcast(tensor.data, src=0)
    return tuned


def find_relabelled(labels_dir, only: Optional[Sequence[str]] = None) -> "OrderedDict[str, tuple]":
    """{name: (source dataset, metric, path)} of ``<source>_<metric>.csv`` files, in Table 3 order."""
    labels_dir = Path(labels_dir)
    found = OrderedDict()
    for source in ("tid2013", "kadid", "live", "csiq"):
        for metric in FR_METRICS:
            name = f"{source}_{metric}"
            path = labels_dir / f"{name}.csv"
            if path.is_file() and (not only or name in only or source in only):
                found[name] = (source, metric, path)
    if not found:
        raise FileNotFoundError(f"no relabelled <dataset>_<metric>.csv files in {labels_dir} "
                                f"(run scripts/relabel_fr.py relabel first)")
    return found


def table3(cfg, labels_dir, baseline: Optional[str] = None, finetune_steps: int = 50, finetune_lr: float = 1e-5,
           finetune_weight_decay: float = 1e-5, only: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, dict]]:
    """Evaluate PromptIQA (and the w/o-prompt baselines) on the relabelled test splits; writes table3.* (main rank)."""
    from ..models import load_model, uses_prompt
    from ..evaluation.leakage import check_leakage
    from ..evaluation.runner import EvalSession, evaluate_dataset

    started = time.time()
    found = find_relabelled(labels_dir, only)
    cfg = dataclasses.replace(cfg, dataset=list(found),
                              data_root=list(cfg.data_root) + [f"{name}={path}" for name, (_, _, path) in found.items()],
                              isp_num=DEFAULT_ISP_NUM if cfg.isp_num is None else cfg.isp_num)
    session = EvalSession(cfg, trained_keys={name: source for name, (source, _, _) in found.items()})
    try:
        if not session.uses_prompt:
            raise ConfigError("--checkpoint must be a PromptIQA model (the w/o-prompt model goes to --baseline)")
        base, base_info = None, None
        trained_on = {"promptiqa": session.describe()["trained_on"]}
        if baseline:
            base, base_info = load_model(baseline, device=session.env.device, with_info=True)
            if uses_prompt(base):
                raise ConfigError(f"--baseline {baseline} is a prompted model; the baselines are the w/o-prompt model "
                                 f"(scripts/ablation.py --variant wo_prompt)")
            if int(base.image_size) != session.image_size:
                raise ConfigError(f"--baseline takes {base.image_size}px images, --checkpoint {session.image_size}px")
            trained_on["zero_shot"] = trained_on["fine_tuned"] = sorted((base_info.get("config") or {}).get("splits")
                                                                        or {})
        results: Dict[str, Dict[str, dict]] = {}
        for data in session.datasets:
            prompt = session.prompt(data)
            rows = {"promptiqa": evaluate_dataset(session, data, prompt)}
            if base is not None:
                leak = check_leakage(data.records, data.split, base_info, trained_key=found[data.key][0])
                if leak.warns:
                    session.warn(f"baseline: {leak.warning}")
                rows["zero_shot"] = evaluate_dataset(session, data, None, model=base)
                tuned = finetune_few_shot(base, prompt.images, prompt.scores, finetune_steps, finetune_lr,
                                          finetune_weight_decay, seed=cfg.isp_seed, amp=cfg.amp, env=session.env)
                rows["fine_tuned"] = evaluate_dataset(session, data, None, model=tuned)
            for method, result in rows.items():
                result.update(method=method, comparison=paper.Comparison(result["metrics"]["plcc"], paper.table3_figure(
                    method, paper.table3_training(trained_on[method], found[data.key][0]), *found[data.key][:2])))
            results[data.key] = {METHOD_TITLES[m].format(n=len(prompt.scores)): r for m, r in rows.items()}
        if session.env.is_main:
            _write_table3(session, found, results, Path(cfg.save_path), dict(
                baseline=baseline, finetune_steps=finetune_steps, finetune_lr=finetune_lr,
                finetune_weight_decay=finetune_weight_decay, seconds=time.time() - started))
        return results
    finally:
        session.close()


def _write_table3(session, found, results, out: Path, extra: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    order = list(dict.fromkeys(m for rows in results.values() for m in rows))   # METHOD_TITLES' order
    order = [m for m in order if m != METHOD_TITLES["promptiqa"]] + [METHOD_TITLES["promptiqa"]]
    columns = list(results)
    header = ["method"] + [f"{DATASET_SPECS[found[c][0]].column_title} {found[c][1].upper()}" for c in columns]
    table, sources = [], []
    for m in order:
        cells = [results[c].get(m) for c in columns]
        table.append([m] + [r["metrics"]["plcc"] if r else None for r in cells])
        compared = [r["comparison"] if r else paper.Comparison(float("nan"), None) for r in cells]
        if any(x.paper is not None for x in compared):
            table += [[f"{m}: paper"] + [x.paper_text() for x in compared], [f"{m}: Δ"] + [x.delta_text() for x in
                                                                                          compared]]
            sources.append(f"{m}: {', '.join(dict.fromkeys(x.paper.source for x in compared if x.paper))}")
    caption = (f"New requirements (Table 3): PLCC on the relabelled test splits; ISPPs of {session.isp_num} ISPs "
               f"({session.cfg.isp_strategy} sampling) from each relabelled train split; SSIM and FSIM are MOS-like, "
               f"LPIPS DMOS-like (lower is better, scores not flipped).")
    if sources:
        caption += (f" Paper: {'; '.join(sources)} (our w/o-prompt baselines beside the paper's MoNet rows; – where "
                    f"the paper has no figure). {paper.rule('seeds')}.")
    write_lines(out / "table3.md", [caption, "", markdown_table(header, table)])
    rows = [dict(method=m, dataset=c, source=found[c][0], requirement=found[c][1], **results[c][m]["metrics"],
                 n=results[c][m]["n"], **results[c][m]["comparison"].fields("plcc"))
            for c in columns for m in order if m in results[c]]
    write_csv(out / "table3.csv", ("method", "dataset", "source", "requirement", "srocc", "plcc", "krcc", "rmse", "n",
                                   *paper.field_names("plcc")), rows)
    write_json(out / "table3.json", dict(config=session.cfg.to_dict(), checkpoint=session.describe(), **extra,
                                         leakage={d.key: session.leakage[d.key].to_dict() for d in session.datasets}))
    print(caption)
    print(markdown_table(header, table))
    for d in session.datasets:
        if session.leakage[d.key].warns:
            session.warn(session.leakage[d.key].warning)
    print(f"wrote {out / 'table3.md'}, {out / 'table3.csv'}, {out / 'table3.json'}")


def build_table3_parser() -> argparse.ArgumentParser:
    """The relabel-eval (Table 3) command's command line."""
    p = add_eval_options(argparse.ArgumentParser(allow_abbrev=False,
                                                 description="Table 3: PromptIQA and the w/o-prompt baselines on "
                                                             "requirements relabelled with SSIM/FSIM/LPIPS",
                                                 argument_default=None), checkpoint_required=True)
    p.add_argument("--labels_dir", default="data/relabelled", help="the relabel step's --out_dir")
    p.add_argument("--baseline", help="a w/o-prompt checkpoint (scripts/ablation.py --variant wo_prompt)")
    p.add_argument("--finetune_steps", type=int, default=50, help="few-shot fine-tuning steps on the ISPs")
    p.add_argument("--finetune_lr", type=float, default=1e-5)
    p.add_argument("--finetune_weight_decay", type=float, default=1e-5)
    p.add_argument("--only", nargs="+", help="restrict to these relabelled names or source datasets")
    return p


def table3_main(argv: Optional[Sequence[str]] = None) -> int:
    """scripts/relabel_fr.py table3."""
    p = build_table3_parser()
    args = p.parse_args(argv)
    if args.dataset:
        raise ConfigError("table3 takes its datasets from --labels_dir (restrict them with --only)")
    cfg = config_from_args(args)
    if args.save_path is None:
        cfg = dataclasses.replace(cfg, save_path="runs/table3")
    table3(cfg, args.labels_dir, args.baseline, args.finetune_steps, args.finetune_lr, args.finetune_weight_decay,
           args.only)
    return 0
