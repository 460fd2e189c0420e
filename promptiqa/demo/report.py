"""The demo's outputs: the per-requirement table, the prompt x labels matrices, the targets, each figure against the
README's published range, results.json/.md and results.png."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

import numpy as np

from ..evaluation.report import fmt, markdown_table, text_table
from ..fileio import write_json
from . import published
from ..data.synthetic import requirement

if TYPE_CHECKING:
    from .run import DemoConfig

KEY_PREFIX = "demo_"        # requirement r is registered as the dataset demo_<r>
MODELS = {"promptiqa": "PromptIQA", "promptiqa_wo_prompt": "w/o prompt"}


def dataset_key(req: str) -> str:
    """The dataset key requirement ``req`` is registered under."""
    return KEY_PREFIX + req


class Report:
    """Writes and prints a finished demo run's results (``write``) into ``out``."""

    def __init__(self, cfg: "DemoConfig", out: Path, times: Dict[str, float]):
        self.cfg, self.out, self.times = cfg, out, times

    @staticmethod
    def key(req: str) -> str:
        return dataset_key(req)

    @property
    def single_aspects(self) -> List[str]:
        """The training requirements that penalise one aspect each: the specificity matrix's rows and columns."""
        return [r for r in self.cfg.train_requirements if len(requirement(r).aspects) == 1]

    def write(self, results: Dict[str, Any], scored: List[dict]) -> dict:
        """results.json, results.md, results.png and the printed tables; returns what results.json holds."""
        cfg = self.cfg
        prompted, baseline = results["promptiqa"], results.get("promptiqa_wo_prompt")
        n_pool = len(prompted.test_images)
        header = ["requirement", "in training", "held-out set", "PromptIQA SROCC", "(all held-out)", "PLCC"]
        if baseline:
            header += ["w/o prompt SROCC", "(all held-out)"]
        rows = []
        for req in cfg.requirements:
            key = self.key(req)
            r = prompted.requirements[key]
            row = [req, "yes" if r.seen else "no (unseen)", f"{len(r.images)} images", r.metrics["srocc"],
                   r.srocc_pool, r.metrics["plcc"]]
            if baseline:
                b = baseline.requirements[key]
                row += [b.metrics["srocc"], b.srocc_pool]
            rows.append(row)
        effect_row = [f"prompt effect ({cfg.mirror[0]} vs {cfg.mirror[1]} prompt)", "", "", prompted.prompt_effect,
                      "", ""]
        if baseline:
            effect_row += [baseline.prompt_effect, ""]
        targets = self.targets(prompted)
        summary = {
            "config": asdict(cfg), "times_s": self.times, "targets": targets, "n_test_images": n_pool,
            "models": {k: v.to_dict() for k, v in results.items()}, "scored": scored,
        }
        summary["published"] = against = published.compare(summary, cfg.published)
        range_lines = self._published_lines(against)
        write_json(self.out / "results.json", summary)
        cross_header = ["prompt \\ labels"] + cfg.requirements
        matrix = self._matrix(prompted.cross)
        refs = len({Path(n).name.split("_")[0] for n in prompted.test_images})
        md = ["# PromptIQA demo results", "",
              f"{n_pool} held-out images ({refs} references); an aspect requirement's own held-out set is the "
              f"images it penalises plus as many it does not. Total wall time {self.times['total']:.0f} s.", "",
              markdown_table(header, rows + [effect_row]), "",
              "SROCC of PromptIQA's predictions under each requirement's prompt (rows) against each requirement's "
              "labels (columns), each column on that requirement's own held-out set:", "",
              markdown_table(cross_header, matrix), "",
              f"The same over all {n_pool} held-out images (an aspect requirement's labels are then mostly tied):", "",
              markdown_table(cross_header, self._matrix(prompted.cross_pool)), "",
              "Targets:", ""] + [f"- {'met' if t['met'] else 'NOT met'}: {t['what']} (measured {fmt(t['value'])})"
                                for t in targets] + [""] + range_lines + ["",
              "Times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in self.times.items())]
        (self.out / "results.md").write_text("\n".join(md) + "\n")
        self.plot(results, self.out / "results.png")
        print()
        print(text_table(header, rows + [effect_row]))
        print()
        print("PromptIQA SROCC, prompt of one requirement (rows) against the labels of each (columns), on each "
              "column's held-out set:")
        print(text_table(cross_header, matrix))
        print()
        print(f"scored through the CLI under the '{cfg.score_requirement}' prompt ({self.out}/scores_"
              f"{cfg.score_requirement}.csv):")
        print(text_table(["image", "predicted", "true"], [[s["image"], s["predicted"], s["true"]] for s in scored]))
        print()
        for t in targets:
            print(f"{'met' if t['met'] else 'NOT met'}: {t['what']} (measured {fmt(t['value'])})")
        print()
        print("\n".join(range_lines))
        print(f"times: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.times.items()))
        print(f"wrote {self.out / 'results.md'}, {self.out / 'results.json'}, {self.out / 'results.png'}")
        return summary

    def _published_lines(self, against: List[dict]) -> List[str]:
        """Each figure against the README's range over seeds (configs/demo.yaml's ``published``)."""
        pub = self.cfg.published
        if not pub:
            return ["No published range for this configuration (configs/demo.yaml: published)."]
        outside = [a for a in against if not a["inside"]]
        lines = [f"Against the README's range over seeds {', '.join(map(str, pub['seeds']))} "
                 f"({pub.get('machine') or 'machine not recorded'}); figures vary with the CPU: "
                 f"{len(against) - len(outside)} of {len(against)} inside"]
        lines += [f"- {'inside' if a['inside'] else 'OUTSIDE'}: {a['figure']} {fmt(a['value'])} "
                  f"(published median {fmt(a['median'])}, range {fmt(a['min'])} to {fmt(a['max'])})" for a in against]
        return lines

    def _matrix(self, cross: Dict[str, Dict[str, float]]) -> List[list]:
        keys = [self.key(r) for r in self.cfg.requirements]
        return [[p[len(KEY_PREFIX):]] + [cross[p][l] for l in keys] for p in keys]

    def targets(self, prompted) -> List[dict]:
        """The demo's claims, checked against configs/demo.yaml's thresholds: the prompt effect of the mirror pair,
        each single-aspect prompt's SROCC on its own set and its margin over the other single-aspect labels, and
        each unseen requirement's SROCC."""
        t = self.cfg.targets
        out = [dict(what=f"prompt effect <= {t['prompt_effect']:g}", value=prompted.prompt_effect,
                    met=bool(prompted.prompt_effect <= t["prompt_effect"]))]
        singles = self.single_aspects
        for req in singles:
            row = prompted.cross[self.key(req)]
            own = row[self.key(req)]
            out.append(dict(what=f"SROCC >= {t['own_srocc']:g} on {req} (its own prompt, its held-out set)",
                            value=own, met=bool(own >= t["own_srocc"])))
            if len(singles) > 1:
                other = max(row[self.key(o)] for o in singles if o != req)
                out.append(dict(what=f"{req} prompt: own SROCC - best other single-aspect SROCC >= {t['margin']:g}",
                                value=own - other, met=bool(own - other >= t["margin"])))
        for req in self.cfg.unseen_requirements:
            s = prompted.requirements[self.key(req)].metrics["srocc"]
            out.append(dict(what=f"SROCC >= {t['unseen_srocc']:g} on {req} (unseen; its own prompt, its held-out "
                                 f"set)", value=s, met=bool(s >= t["unseen_srocc"])))
        return out

    def plot(self, results: Dict[str, Any], path: Path) -> None:
        from ..fileio import new_figure

        cfg = self.cfg
        reqs = cfg.requirements
        fig = new_figure(figsize=(17, 5))
        axes = fig.subplots(1, 3, gridspec_kw=dict(width_ratios=[1.2, 1.1, 0.9]))
        x = np.arange(len(reqs))
        width = 0.8 / len(results)
        for i, (model, res) in enumerate(results.items()):
            values = [res.requirements[self.key(r)].metrics["srocc"] for r in reqs]
            axes[0].bar(x + (i - (len(results) - 1) / 2) * width, values, width, label=MODELS[model])
        axes[0].set_xticks(x, [r if r in cfg.train_requirements else f"{r}\n(unseen)" for r in reqs], rotation=45,
                           ha="right", fontsize=8)
        axes[0].axhline(0, color="black", linewidth=0.6)
        axes[0].axhline(cfg.targets["own_srocc"], color="grey", linewidth=0.6, linestyle="--")
        axes[0].set(ylabel="SROCC (own prompt, own held-out set)", ylim=(-1, 1), title="per requirement")
        axes[0].legend(fontsize=8)
        prompted = results["promptiqa"]
        matrix = np.array([row[1:] for row in self._matrix(prompted.cross)], dtype=float)
        image = axes[1].imshow(matrix, cmap="RdBu", vmin=-1, vmax=1)
        for (i, j), v in np.ndenumerate(matrix):
            axes[1].text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
        axes[1].set_xticks(x, reqs, rotation=45, ha="right", fontsize=8)
        axes[1].set_yticks(x, reqs, fontsize=8)
        axes[1].set(xlabel="labels (each on its own held-out set)", ylabel="prompt", title="PromptIQA SROCC")
        fig.colorbar(image, ax=axes[1], fraction=0.046)
        a, b = (self.key(r) for r in cfg.mirror)
        for model, res in results.items():
            axes[2].scatter(res.requirements[a].pred_pool, res.requirements[b].pred_pool, s=8, alpha=0.6,
                            label=f"{MODELS[model]} (prompt effect {fmt(res.prompt_effect, 2)})")
        axes[2].set(xlabel=f"prediction under the {cfg.mirror[0]} prompt",
                    ylabel=f"prediction under the {cfg.mirror[1]} prompt", title="same images, mirrored requirements")
        axes[2].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
