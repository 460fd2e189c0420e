"""``promptiqa adapt``'s outputs from its units: the summaries (curves with CIs, matrices, relabel consistency, the
leakage verdicts, the cost), report.md, results.csv, results.json and adapt.png."""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from ..evaluation.leakage import check_leakage
from ..evaluation.report import fmt, markdown_table, write_csv, write_lines
from ..fileio import new_figure, save_figure, write_json
from . import adapt_measures as measures

OUTPUTS = ("report.md", "results.csv", "results.json", "adapt.png")
METHODS = OrderedDict(promptiqa="PromptIQA", fine_tuned="w/o prompt, fine-tuned on the k ISPs",
                      zero_shot="w/o prompt (zero-shot)")
# the leakage guard's verdict (promptiqa.evaluation.leakage) as an answer to "was this dataset trained on?"
TRAINED_ON = {"found": "yes, test images included", "none": "yes, its train split only", "unknown": "unknown",
              "not_trained": "no"}
CSV_COLUMNS = ("measure", "dataset", "method", "k", "against", "metric", "value", "std", "draws_low", "draws_high",
               "images_low", "images_high", "draws", "n", "expected")


def _curves(session, results, opts) -> Dict[str, Dict[str, List[dict]]]:
    """{dataset: {method: [summary per k]}}: means over draws with both bootstrap CIs."""
    curves: Dict[str, Dict[str, List[dict]]] = {}
    for index, data in enumerate(session.datasets):
        units, gt = results["curves"][data.key], np.asarray(data.test.labels, dtype=np.float64)
        per_method: Dict[str, List[dict]] = {m: [] for m in METHODS}
        for k in dict.fromkeys(u["k"] for u in units):
            drawn = [u for u in units if u["k"] == k]
            for i, (method, field) in enumerate((("promptiqa", "pred"), ("fine_tuned", "fine_tuned"))):
                if field in drawn[0]:
                    preds = np.asarray([u[field] for u in drawn])
                    per_method[method].append(dict(k=k, **measures.summarise_curve(
                        preds, gt, opts.bootstrap, [session.cfg.isp_seed, index, k, i])))
        zero = results["zero_shot"].get(data.key)
        if zero is not None:
            per_method["zero_shot"].append(dict(k=None, **measures.summarise_curve(
                np.asarray(zero["pred"])[None], gt, opts.bootstrap, [session.cfg.isp_seed, index, 0, 2])))
        curves[data.key] = {m: rows for m, rows in per_method.items() if rows}
    return curves


def _matrices(results) -> List[dict]:
    out = []
    for m in results["matrices"]:
        entry = {"keys": m["keys"], "n": m["n"]}
        if m["rows"]:
            entry.update(measures.requirement_matrix({k: np.asarray(r["pred"]) for k, r in m["rows"].items()},
                                                     m["labels"]))
        out.append(entry)
    return out


def _cost(run, results) -> Dict[str, Any]:
    """The model calls and seconds of every unit (stored ones included) and of this run's, per kind of unit."""
    units = [u for rows in results["curves"].values() for u in rows] + list(results["zero_shot"].values()) \
        + list(results["relabel"].values()) + [r for m in results["matrices"] for r in m["rows"].values()]
    kinds: Dict[str, dict] = OrderedDict()
    for name, kind in (("kshot", "k-shot draw"), ("zero_shot", "zero-shot pass"), ("relabel", "relabel check"),
                       ("matrix", "matrix row")):
        mine = [c for c in run.units.computed if c["name"].startswith(name + "/")]
        if mine:
            kinds[kind] = {"units": len(mine), "seconds_per_unit": float(np.mean([c["seconds"] for c in mine])),
                           **{f: int(sum(c[f] for c in mine)) for f in ("images_encoded", "prompts_encoded",
                                                                        "finetune_steps")}}
    total = {f: int(sum(u["cost"][f] for u in units)) for f in ("images_encoded", "prompts_encoded",
                                                                  "finetune_steps")}
    return {"units": len(units), "computed": len(run.units.computed), "reused": run.units.reused,
            "this_run": kinds, "all_units": dict(total, seconds=float(sum(u["cost"]["seconds"] for u in units)))}


def _leakage(session, run) -> Dict[str, dict]:
    out = {}
    for data in session.datasets:
        out[data.key] = {"checkpoint": session.leakage[data.key].to_dict()}
        if run.base is not None:
            out[data.key]["baseline"] = check_leakage(data.records, data.split, run.base_info).to_dict()
    return out


def _csv_rows(curves, matrices, relabel) -> List[dict]:
    rows = []
    for key, methods in curves.items():
        for method, points in methods.items():
            for p in points:
                for metric in ("srocc", "plcc"):
                    rows.append(dict(measure="kshot", dataset=key, method=method, k=p["k"], metric=metric,
                                     value=p[metric], std=p[f"{metric}_std"], draws=p["draws"], n=p["n"],
                                     **{f"{side}_{end}": p[f"{metric}_{side}_{end}"] for side in ("draws", "images")
                                        for end in ("low", "high")}))
    for m in matrices:
        for p in m.get("rows", ()):
            rows += [dict(measure="matrix", dataset=p, method="promptiqa", against=c, metric="srocc", value=v, n=m["n"])
                     for c, v in m["srocc"][p].items()]
            rows.append(dict(measure="margin", dataset=p, method="promptiqa", metric="srocc", value=m["margin"][p],
                             n=m["n"]))
    for key, unit in relabel.items():
        rows += [dict(measure="relabel", dataset=key, method="promptiqa", against=t, metric="spearman",
                      value=v["spearman"], expected=v["expected"]) for t, v in unit["transforms"].items()]
    return rows


def _ci(p: dict, metric: str) -> str:
    return (f"{fmt(p[metric], 3)} [{fmt(p[f'{metric}_draws_low'], 3)}, {fmt(p[f'{metric}_draws_high'], 3)}] "
            f"[{fmt(p[f'{metric}_images_low'], 3)}, {fmt(p[f'{metric}_images_high'], 3)}]")


def _markdown(session, run, opts, curves, matrices, relabel, leakage, cost, seconds) -> List[str]:
    cfg = session.cfg
    sampling = ("interval sampling: one ISPP per k" if cfg.isp_strategy == "interval" else
                f"random sampling: {opts.draws} draws per k, seeds {cfg.isp_seed}..{cfg.isp_seed + opts.draws - 1}")
    lines = [f"# Requirement adaptation of {cfg.checkpoint}", "",
             f"Prompts sampled from each dataset's train split, scored on its test split ({sampling}); "
             f"baseline: {opts.baseline or 'none'}. Each figure: the mean over draws [95% bootstrap CI over draws] "
             f"[95% bootstrap CI over test images], {opts.bootstrap} resamples.", "", "## Datasets", ""]
    table = []
    for data in session.datasets:
        verdicts = leakage[data.key]
        status = verdicts["checkpoint"]["status"]
        table.append([data.key, len(data.train), len(data.test), data.split_source, TRAINED_ON[status],
                      verdicts["checkpoint"]["leaked"] if status == "found" else status,
                      verdicts.get("baseline", {}).get("status", "–")])
    lines += [markdown_table(["dataset", "train", "test", "split", "in the checkpoint's training data",
                              "leakage (checkpoint)", "leakage (baseline)"], table), ""]
    for key, methods in curves.items():
        lines += [f"## k-shot curve: {key}", ""]
        table = []
        for method, points in methods.items():
            table += [[METHODS[method], "–" if p["k"] is None else p["k"], p["draws"], _ci(p, "srocc"), _ci(p, "plcc")]
                      for p in points]
        lines += [markdown_table(["method", "k", "draws", "SROCC", "PLCC"], table), ""]
    for m in matrices:
        lines += [f"## Requirement matrix: {', '.join(m['keys'])}", ""]
        if "rows" not in m:
            lines += [f"Only {m['n']} common test image(s): no matrix.", ""]
            continue
        lines += [f"SROCC on the {m['n']} test images the datasets share: the prompt of each (rows) against the labels "
                  f"of each (columns); margin = own column minus the best other.", "",
                  markdown_table(["prompt \\ labels", *m["columns"], "margin"],
                                 [[p, *[m["srocc"][p][c] for c in m["columns"]], m["margin"][p]] for p in m["rows"]]),
                  ""]
    lines += ["## Relabel consistency", "",
              "Spearman correlation of the predictions under the ISPP with its scores s transformed against those "
              "under the ISPP as it is (a model following its prompt: +1 for the increasing transforms, -1 for the "
              "reversal).", "",
              markdown_table(["dataset", *[f"{t} ({measures.TRANSFORM_TEXT[t]})" for t in measures.TRANSFORMS]],
                             [[k, *[u["transforms"][t]["spearman"] for t in measures.TRANSFORMS]]
                              for k, u in relabel.items()]), ""]
    lines += ["## Cost", "",
              f"{cost['units']} units: {cost['computed']} computed by this run, {cost['reused']} reused from "
              f"{Path(cfg.save_path) / 'units'}; this run took {seconds:.1f} s on {session.env.device} "
              f"(world size {session.env.world_size}). All units together: "
              f"{cost['all_units']['images_encoded']} images through an image encoder, "
              f"{cost['all_units']['prompts_encoded']} prompt encodings, {cost['all_units']['finetune_steps']} "
              f"fine-tuning steps, {cost['all_units']['seconds']:.1f} s.", ""]
    if cost["this_run"]:
        lines += [markdown_table(["unit (this run)", "units", "s per unit", "images encoded", "prompts encoded",
                                  "fine-tuning steps"],
                                 [[k, v["units"], v["seconds_per_unit"], v["images_encoded"], v["prompts_encoded"],
                                   v["finetune_steps"]] for k, v in cost["this_run"].items()]), ""]
    return lines


def plot(curves, matrices, path: Path) -> Path:
    """One panel per dataset (SROCC against k: bands of the CI over test images, lighter, and over draws) and one
    heat map per requirement matrix."""
    shown = [m for m in matrices if "rows" in m]
    panels = len(curves) + len(shown)
    columns = min(3, panels)
    rows = math.ceil(panels / columns)
    fig = new_figure(figsize=(4.6 * columns, 4.0 * rows))
    axes = list(fig.subplots(rows, columns, squeeze=False).flat)
    for ax in axes[panels:]:
        ax.axis("off")
    for ax, (key, methods) in zip(axes, curves.items()):
        for method, points in methods.items():
            if method == "zero_shot":
                ax.axhline(points[0]["srocc"], color="grey", linestyle="--", label=METHODS[method])
                continue
            k = [p["k"] for p in points]
            line, = ax.plot(k, [p["srocc"] for p in points], marker="o", label=METHODS[method])
            for side, alpha in (("images", 0.12), ("draws", 0.25)):
                ax.fill_between(k, [p[f"srocc_{side}_low"] for p in points], [p[f"srocc_{side}_high"] for p in points],
                                color=line.get_color(), alpha=alpha, linewidth=0)
        ks = sorted({p["k"] for points in methods.values() for p in points if p["k"] is not None})
        ax.set(xscale="log", xlabel="prompt size k", ylabel="SROCC (test split)", title=key)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    for ax, m in zip(axes[len(curves):], shown):
        values = np.asarray([[m["srocc"][p][c] for c in m["columns"]] for p in m["rows"]], dtype=np.float64)
        image = ax.imshow(values, cmap="RdBu", vmin=-1, vmax=1)
        ax.set_xticks(range(len(m["columns"])), m["columns"], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(m["rows"])), m["rows"], fontsize=7)
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, "–" if math.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
        ax.set(xlabel="labels", ylabel="prompt", title=f"requirement matrix ({m['n']} images)")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def write_report(out: Path, session, run, results, opts, seconds: float) -> Dict[str, Any]:
    """Write the four outputs into ``out``, print the report; returns what results.json holds."""
    curves = _curves(session, results, opts)
    matrices = _matrices(results)
    relabel = results["relabel"]
    leakage = _leakage(session, run)
    cost = _cost(run, results)
    lines = _markdown(session, run, opts, curves, matrices, relabel, leakage, cost, seconds)
    write_lines(out / "report.md", lines)
    write_csv(out / "results.csv", CSV_COLUMNS, _csv_rows(curves, matrices, relabel))
    details = {"config": session.cfg.to_dict(), "checkpoint": session.describe(), "baseline": opts.baseline,
               "k": opts.k, "draws": opts.draws, "bootstrap": opts.bootstrap, "finetune_steps": opts.finetune_steps,
               "isp_num": session.isp_num, "settings": run.settings(), "leakage": leakage, "curves": curves,
               "matrices": [{k: v for k, v in m.items()} for m in matrices],
               "relabel": {k: u["transforms"] for k, u in relabel.items()}, "cost": cost, "seconds": seconds}
    write_json(out / "results.json", details)
    written = [out / "report.md", out / "results.csv", out / "results.json"]
    if session.cfg.plot:
        written.append(plot(curves, matrices, out / "adapt.png"))
    print("\n".join(lines))
    print("wrote " + ", ".join(map(str, written)))
    return details

