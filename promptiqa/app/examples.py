"""The bundled example requirements: ready-made prompts of 10 scored images, one per aspect of quality.

Five aspects (sharpness, noise, JPEG artefacts, contrast, colourfulness), each lost to one distortion of the demo's
generator (promptiqa/data/synthetic.py, the one home of the distortions), each in a MOS form (higher is better)
and its reversed DMOS form (lower is better), like the official demo's CSIQ DMOS example and its reverse. Images are
crops of the photographs scikit-image ships (no download), written at the model's input size so no resampling
hides the distortions; everything is a pure function of the size and the seed.

A prompt holds 5 images of its aspect's distortion (levels 1-5, mildest first) scored by how much of the aspect is
left, and 5 images that keep it (a pristine crop and one image of each other distortion) scored 1: the prompt says
that only this aspect counts.

    python -m promptiqa app --export-examples DIR      # the same prompts as CSVs for `promptiqa score --prompt`
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np

# aspect -> (the distortion that costs it, how the page names it, what the MOS form's score is)
ASPECTS = {
    "sharpness": ("blur", "Sharpness", "SSIM to the sharp original for the blurred images"),
    "noise": ("noise", "Noise", "SSIM to the clean original for the noisy images"),
    "jpeg": ("jpeg", "JPEG artefacts", "SSIM to the original for the JPEG-compressed images"),
    "contrast": ("contrast", "Contrast", "SSIM to the original for the low-contrast images"),
    # SSIM hardly sees desaturation; the fraction of saturation kept is the ratio of Hasler & Suesstrunk's
    # colourfulness to the original's (desaturating towards grey scales both opponent channels by it).
    "colourfulness": ("saturation", "Colourfulness", "the fraction of colour saturation kept for the desaturated "
                                                       "images"),
}
PER_PROMPT = 10              # images per example: the paper's ISPP size
OTHERS_LEVEL = 3             # level index (0-4) of the images of other distortions: clearly visible, yet scored 1
CROPS_PER_PHOTO = 2          # 8 photographs x 2 = 16 references, 10 of them in each prompt
SCORE_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class ExampleRequirement:
    """A bundled requirement: its name, a one-line remark, its image files and scores, and its score scale."""

    name: str
    remark: str
    images: Tuple[Path, ...]
    scores: Tuple[float, ...]
    higher_is_better: bool
    score_range: Tuple[float, float] = SCORE_RANGE

    @property
    def slug(self) -> str:
        """A file-name form of the name (``sharpness_dmos``)."""
        return self.name.lower().replace(" (mos)", "").replace(" (dmos)", "_dmos").replace(" ", "_")


def example_requirements(folder: Path, size: int, seed: int = 0) -> List[ExampleRequirement]:
    """Write the examples' images into ``folder/images`` (``size`` px squares, PNG) and return the 10 requirements,
    MOS form then DMOS form per aspect. Files already there from the same settings are rewritten identically."""
    from promptiqa.data.synthetic import DISTORTIONS, LEVELS, distort, fr_metrics, reference_crops

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    crops = reference_crops(int(size), CROPS_PER_PHOTO, seed)
    examples = []
    for k, (aspect, (kind, title, measure)) in enumerate(ASPECTS.items()):
        others = [d for d in DISTORTIONS if d != kind]
        plan = [(kind, level) for level in range(len(LEVELS[kind]))] + [(None, None)] + \
               [(other, OTHERS_LEVEL) for other in others]
        images, scores = [], []
        for j, (distortion, level) in enumerate(plan[:PER_PROMPT]):
            ref_name, ref = crops[(3 * k + j) % len(crops)]      # ten different references per prompt
            rng = np.random.default_rng([seed, k, j])
            image = ref if distortion is None else distort(ref, distortion, level, rng)
            if distortion != kind:
                score = 1.0
            elif kind == "saturation":
                score = float(LEVELS[kind][level])
            else:
                score = fr_metrics(ref, image)["ssim"]
            tag = "pristine" if distortion is None else f"{distortion}{level + 1}"
            path = folder / "images" / f"{aspect}_{j + 1:02d}_{ref_name}_{tag}.png"
            if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {path}")
            images.append(path)
            scores.append(round(score, 4))
        examples.append(ExampleRequirement(
            f"{title} (MOS)", f"{title} only: {measure}; a pristine image and one of each other distortion keep it "
                              f"and score 1. MOS-like, 0-1, higher is better.", tuple(images), tuple(scores), True))
        examples.append(ExampleRequirement(
            f"{title} (DMOS)", f"The scores of {title} (MOS) reversed (1 - score): DMOS-like, 0-1, lower is better.",
            tuple(images), tuple(round(1.0 - s, 4) for s in scores), False))
    return examples


def write_example_csvs(folder: Path, size: int, seed: int = 0) -> List[Tuple[ExampleRequirement, Path]]:
    """The examples as prompt CSVs (``image,score``, paths relative to the CSV) beside their images in ``folder``,
    with a README.md listing each one's remark and its `promptiqa score` command line."""
    from promptiqa.fileio import atomic_write

    folder = Path(folder)
    _refuse_foreign_files(folder)
    examples = example_requirements(folder, size, seed)
    written = []
    for example in examples:
        path = folder / f"{example.slug}.csv"
        rows = "".join(f"{p.relative_to(folder).as_posix()},{s!r}\n" for p, s in zip(example.images, example.scores))
        atomic_write(path, lambda fh, rows=rows: fh.write("image,score\n" + rows))
        written.append((example, path))
    lines = [f"{EXPORT_TITLE} ({size} px images, seed {seed})", "",
             "| prompt | remark | command |", "|---|---|---|"]
    lines += [f"| `{path.name}` | {example.remark} | `promptiqa score --checkpoint CHECKPOINT --prompt {path.name} "
              f"{command_options(example)} IMAGE_OR_DIR ...` |" for example, path in written]
    atomic_write(folder / "README.md", lambda fh: fh.write("\n".join(lines) + "\n"))
    return written


EXPORT_TITLE = "# PromptIQA's bundled example requirements"   # the first line of an export's README.md


def _refuse_foreign_files(folder: Path) -> None:
    """An export goes into a new or empty folder, or over an earlier export (its README.md says so, and its files
    are rewritten identically); a folder holding anything else is refused before a file is written: the export's
    README.md and CSVs used to replace same-named files of the user's."""
    from promptiqa.fileio import OutputError

    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--export-examples {folder} is a file; give a new or empty folder")
    found = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    readme = folder / "README.md"
    earlier = readme.is_file() and readme.read_text(encoding="utf-8", errors="replace").startswith(EXPORT_TITLE)
    if found and not earlier:
        raise OutputError(f"--export-examples {folder} already holds files ({found[0].relative_to(folder)}"
                          f"{f' and {len(found) - 1} more' if len(found) > 1 else ''}) that an export did not write; "
                          f"give a new or empty folder")


def command_options(example: ExampleRequirement) -> str:
    """The `promptiqa score` options that give an example's prompt CSV its scale and polarity."""
    low, high = example.score_range
    return f"--score_range {low:g} {high:g}" + ("" if example.higher_is_better else " --lower_is_better")


def names(examples: Sequence[ExampleRequirement]) -> List[str]:
    """The examples' names, in order (the page's drop-down)."""
    return [example.name for example in examples]
