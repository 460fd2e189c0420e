"""ISP experiments on a trained checkpoint: ISP selection (Table 4), prompt perturbations (Table 5), ISPP size (Fig. 3).

Every experiment scores the same test images under many ISPPs, so each dataset's test features are computed once
(``features.FeatureBank``) and each ISPP costs only its own encoding and the fusion blocks. ISPPs always come from
the dataset's train split; random sampling is repeated over ``--draws`` seeds (isp_seed, isp_seed + 1, ...) and
reported as mean ± std (numpy, ddof=0). Tables 4 and 5 set the paper's figures and Δ = ours − paper beside ours
(``promptiqa.paper``), also written as ``<name>_paper.csv``; the paper gives Fig. 3 only as a plot.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .. import paper
from ..config import check_number
from ..data.views import DatasetViews
from ..errors import ConfigError
from ..fileio import write_json
from ..metrics import compute_metrics
from .features import FeatureBank
from .prompts import PERTURBATIONS, check_perturbations
from .report import markdown_table, mean_std, plot_lines, pm, write_csv, write_lines
from .runner import EvalSession, add_eval_options, config_from_args

DEFAULT_SIZES = (3, 5, 7, 8, 10)
# the paper's Table 5: as sampled, its three random rows (images, scores, both: compared as a set) and inverted
DEFAULT_CONDITIONS = ("none", "random_images", "random_scores", "random_images+random_scores", "inverted_scores")
LONG_COLUMNS = ("experiment", "dataset", "condition", "strategy", "isp_num", "draw", "isp_seed", "srocc", "plcc",
                "krcc", "rmse", "n")
# <name>_paper.csv: each figure of the Markdown table beside the paper's
PAPER_COLUMNS = ("dataset", "condition", "strategy", "metric", "ours", "spread", "n", *paper.FIELDS)
METRICS = ("srocc", "plcc")


class ISPExperiments:
    """A session plus one FeatureBank per dataset; ``run`` scores one ISPP setting."""

    def __init__(self, session: EvalSession):
        from tqdm import tqdm

        if not session.uses_prompt:
            raise ConfigError("ISP experiments need a prompted model; this checkpoint is promptiqa_wo_prompt")
        if session.cfg.test_prompt == "official":
            warnings.warn("ISP experiments encode each ISPP once (--test_prompt fixed); 'official' is ignored")
        self.session = session
        cfg, env = session.cfg, session.env
        self.banks: Dict[str, FeatureBank] = {}
        for data in session.datasets:
            with tqdm(total=len(data.test), desc=f"{data.key} features", unit="img", file=sys.stderr,
                      disable=not (env.is_main and cfg.progress)) as bar:
                self.banks[data.key] = FeatureBank(session.model, data.test, env, cfg.batch_size, session.workers,
                                                   cfg.amp, progress=bar)

    def run(self, data: DatasetViews, isp_num: int, strategy: str, seed: int, perturb: Sequence[str] = ()
            ) -> Dict[str, float]:
        """SROCC, PLCC, ... of ``data``'s test split under an ISPP of ``isp_num`` ISPs sampled as asked."""
        prompt = self.session.prompt(data, isp_num=isp_num, strategy=strategy, seed=seed, perturb=list(perturb))
        pred = self.banks[data.key].score(prompt.images, prompt.scores)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            metrics = compute_metrics(pred, data.test.labels)
        return dict(metrics, n=len(pred))


def _row(experiment, data, condition, strategy, isp_num, draw, seed, metrics) -> dict:
    return dict(experiment=experiment, dataset=data.key, condition=condition, strategy=strategy, isp_num=isp_num,
                draw=draw, isp_seed=seed, **metrics)


def _random_rows(exp: ISPExperiments, experiment: str, data: DatasetViews, isp_num: int, draws: int, condition="none",
                 perturb=()) -> List[dict]:
    seed0 = exp.session.cfg.isp_seed
    return [_row(experiment, data, condition, "random", isp_num, d, seed0 + d,
                 exp.run(data, isp_num, "random", seed0 + d, perturb)) for d in range(draws)]


def _compared(key: str, condition: str, strategy: str, metric: str, n: int, comparison: paper.Comparison) -> dict:
    return dict(dataset=key, condition=condition, strategy=strategy, metric=metric, ours=comparison.ours,
                spread=comparison.spread, n=n, **comparison.fields())


def _paper_lines(name: str, found: Sequence[paper.Comparison]) -> List[list]:
    """The table rows '<name>: paper' and '<name>: Δ' under a row of ours (none when the paper has no figure)."""
    if not any(x.paper is not None for x in found):
        return []
    return [[f"{name}: paper"] + [x.paper_text() for x in found], [f"{name}: Δ"] + [x.delta_text() for x in found]]


def selection(exp: ISPExperiments, draws: int) -> Dict[str, object]:
    """Table 4: interval sampling vs random sampling (mean ± std over ``draws``), n = the session's ISPP size; the
    paper's figures beside them."""
    s = exp.session
    rows, table, compared = [], [], []
    for data in s.datasets:
        interval = _row("selection", data, "none", "interval", s.isp_num, 0, None,
                        exp.run(data, s.isp_num, "interval", 0))
        randoms = _random_rows(exp, "selection", data, s.isp_num, draws)
        rows += [interval] + randoms
        r = {m: mean_std([x[m] for x in randoms]) for m in METRICS}
        table.append([data.key, interval["srocc"], interval["plcc"], pm(r["srocc"]["mean"], r["srocc"]["std"]),
                      pm(r["plcc"]["mean"], r["plcc"]["std"])])
        found = []   # in the table's column order
        for m in METRICS:
            found.append(paper.Comparison(interval[m], paper.table4_figure("interval", data.key, m)))
            compared.append(_compared(data.key, "none", "interval", m, 1, found[-1]))
        for m in METRICS:
            found.append(paper.Comparison(r[m]["mean"], paper.table4_figure("random", data.key, m),
                                          paper.spread_of(draws, r[m]["std"])))
            compared.append(_compared(data.key, "none", "random", m, draws, found[-1]))
        table += _paper_lines(data.key, found)
    header = ["dataset", "interval SROCC", "interval PLCC", f"random SROCC ({draws} draws)",
              f"random PLCC ({draws} draws)"]
    return {"rows": rows, "markdown": markdown_table(header, table), "paper": compared,
            "caption": f"ISP selection (Table 4): {s.isp_num} ISPs from the train split; random sampling as mean ± "
                       f"std over {draws} draws (seeds {s.cfg.isp_seed}..{s.cfg.isp_seed + draws - 1}). Paper: "
                       f"Table 4 (random: the mean ± std over the paper's draws; Δ from the means). "
                       f"{paper.rule('draws')}."}


def sizes(exp: ISPExperiments, isp_nums: Sequence[int], strategy: str, draws: int, plot_path: Optional[Path] = None
          ) -> Dict[str, object]:
    """Fig. 3: performance against the ISPP size n, one per ``isp_nums`` (interval sampling, or random averaged over
    ``draws``)."""
    s = exp.session
    rows = []
    curves = {"srocc": {}, "plcc": {}}
    table = []
    for data in s.datasets:
        means = {"srocc": [], "plcc": []}
        for isp_num in isp_nums:
            if strategy == "interval":
                these = [_row("size", data, "none", "interval", isp_num, 0, None,
                              exp.run(data, isp_num, "interval", 0))]
            else:
                these = _random_rows(exp, "size", data, isp_num, draws)
            rows += these
            for m in means:
                means[m].append(mean_std([x[m] for x in these])["mean"])
        for m in means:
            curves[m][data.key] = means[m]
        table.append([data.key] + [v for pair in zip(means["srocc"], means["plcc"]) for v in pair])
    if len(s.datasets) > 1:
        table.append(["average"] + [float(np.nanmean([r[i] for r in table])) for i in range(1, 1 + 2 * len(isp_nums))])
    header = ["dataset"] + [f"n={isp_num} {m}" for isp_num in isp_nums for m in ("SROCC", "PLCC")]
    if plot_path is not None:
        plot_lines(list(isp_nums), curves, plot_path, xlabel="ISPP size n", title="PromptIQA vs ISPP size:")
    what = "interval sampling" if strategy == "interval" else f"random sampling, mean over {draws} draws"
    return {"rows": rows, "markdown": markdown_table(header, table),
            "caption": f"ISPP size (Fig. 3): n in {list(isp_nums)}, {what}. The paper gives Fig. 3 only as a plot: "
                       f"no paper figures to set beside these"}


def perturbations(exp: ISPExperiments, conditions: Sequence[str]) -> Dict[str, object]:
    """Table 5: the ISPP as sampled vs perturbed (each condition a perturbation or several joined with '+'); the
    paper's figures beside them, its three random rows as a set."""
    s = exp.session
    rows, table, compared = [], [], []
    keys = [d.key for d in s.datasets]
    for condition in conditions:
        perturb = check_perturbations([p for p in condition.split("+")])
        line, found = [condition], []
        for data in s.datasets:
            metrics = exp.run(data, s.isp_num, s.cfg.isp_strategy, s.cfg.isp_seed, perturb)
            rows.append(_row("perturb", data, condition, s.cfg.isp_strategy, s.isp_num, 0, s.cfg.isp_seed, metrics))
            line += [metrics["srocc"], metrics["plcc"]]
            for m in METRICS:
                found.append(paper.Comparison(metrics[m], paper.table5_figure(condition, data.key, m)))
                compared.append(_compared(data.key, condition, s.cfg.isp_strategy, m, 1, found[-1]))
        table += [line] + _paper_lines(condition, found)
    header = ["ISPP"] + [f"{k} {m}" for k in keys for m in ("SROCC", "PLCC")]
    return {"rows": rows, "markdown": markdown_table(header, table), "paper": compared,
            "caption": f"Prompt perturbations (Table 5): {s.isp_num} ISPs, {s.cfg.isp_strategy} sampling, seed "
                       f"{s.cfg.isp_seed}; random_images: images of uniform random pixels 0..255 (the paper's random "
                       f"images), other_images: other train-split images of the same dataset, random_scores: U(0,1), "
                       f"inverted_scores: 1 - s. Paper: Table 5 (none: its standard row); a condition of random "
                       f"perturbations only stands beside the range low..high of the paper's three random rows, "
                       f"which are compared as a set (the paper's text does not say which row randomises what), Δ "
                       f"being the distance outside that range (0 inside). {paper.rule('seeds')}."}


def build_isp_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(allow_abbrev=False,
                                description="ISP experiments: selection (Table 4), perturb (Table 5), size (Fig. 3)")
    sub = p.add_subparsers(dest="experiment", required=True)
    helps = {"selection": "interval vs random ISP sampling (Table 4)",
             "perturb": "the ISPP as sampled vs perturbed (Table 5)",
             "size": "performance against the ISPP size n (Fig. 3)"}
    for name, text in helps.items():
        sp = add_eval_options(sub.add_parser(name, help=text, description=text, argument_default=None,
                                            allow_abbrev=False))
        if name in ("selection", "size"):
            sp.add_argument("--draws", type=int, default=10, help="random draws (seeds isp_seed, isp_seed+1, ...)")
        if name == "size":
            sp.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES), help="ISPP sizes n")
        if name == "perturb":
            sp.add_argument("--conditions", nargs="+", default=list(DEFAULT_CONDITIONS),
                            help=f"none, {', '.join(PERTURBATIONS)}, or several joined with '+' (default: "
                                 f"{' '.join(DEFAULT_CONDITIONS)})")
    return p


def isp_main(argv: Optional[Sequence[str]] = None) -> int:
    """scripts/isp_experiments.py."""
    args = build_isp_parser().parse_args(argv)
    cfg = config_from_args(args)
    if args.save_path is None:
        cfg = dataclasses.replace(cfg, save_path="runs/isp")
    if cfg.perturb:
        raise ConfigError("--perturb is test.py's; the perturb experiment takes --conditions (none, random_images, ...)")
    for name in ("draws", "sizes"):
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values]:
            check_number(name, value)
    session = EvalSession(cfg)
    try:
        exp = ISPExperiments(session)
        out = Path(cfg.save_path)
        if session.env.is_main:
            out.mkdir(parents=True, exist_ok=True)
        name = {"selection": "isp_selection", "perturb": "isp_perturbations", "size": "isp_size"}[args.experiment]
        if args.experiment == "selection":
            result = selection(exp, args.draws)
        elif args.experiment == "size":
            result = sizes(exp, args.sizes, cfg.isp_strategy, args.draws,
                           out / f"{name}.png" if session.env.is_main else None)
        else:
            result = perturbations(exp, args.conditions)
        if session.env.is_main:
            write_csv(out / f"{name}.csv", LONG_COLUMNS, result["rows"])
            if "paper" in result:
                write_csv(out / f"{name}_paper.csv", PAPER_COLUMNS, result["paper"])
            write_lines(out / f"{name}.md", [result["caption"], "", result["markdown"]])
            leakage = {d.key: session.leakage[d.key].to_dict() for d in session.datasets}
            write_json(out / f"{name}.json", {"config": cfg.to_dict(), "checkpoint": session.describe(),
                                              "isp_num": session.isp_num, "leakage": leakage})
            print(result["caption"])
            print(result["markdown"])
            for d in session.datasets:
                if session.leakage[d.key].warns:
                    session.warn(session.leakage[d.key].warning)
            files = [f"{name}.csv", f"{name}.md", f"{name}.json"] + ([f"{name}.png"] if args.experiment == "size"
                                                                       else [f"{name}_paper.csv"])
            print("wrote " + ", ".join(str(out / f) for f in files))
    finally:
        session.close()
    return 0
