"""The web app (``promptiqa app``) through gradio_client, against a real server on a free port of 127.0.0.1.

The server runs the command line in a subprocess with a micro-preset checkpoint, exactly as a user starts it; each
gradio_client.Client is one browser session. Scores are compared with the Predictor's and with ``promptiqa score``'s
for the same files (uploads reach the Predictor as file paths: the same decoding).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from promptiqa import Predictor
from promptiqa.cli import main as cli_main
from tests.fixtures.launchers import free_port
from tests.helpers import AppServer, _png_header


def client(app_server):
    """A new browser session."""
    from gradio_client import Client

    return Client(app_server.url, verbose=False, download_files=str(app_server.folder / "downloads"))


def upload(paths):
    from gradio_client import handle_file

    return [handle_file(str(p)) for p in paths]


def table(names, scores):
    from promptiqa.app.prompt_table import TABLE_HEADERS

    return {"headers": TABLE_HEADERS, "data": [["", n, str(s)] for n, s in zip(names, scores)], "metadata": None}


def add_table_requirement(session, images, scores, name="stars", low="1", high="5", order="higher is better"):
    status, summary, _, _ = session.predict(name, upload(images), table([Path(p).name for p in images], scores), low,
                                            high, order, api_name="/add_requirement")
    return status, summary


def score(session, images):
    """(message, {requirement: [scores]} from the CSV download, image names, the page's table HTML)."""
    message, table_html, _, csv_path = session.predict(upload(images), api_name="/score")
    if not isinstance(csv_path, str):   # an error: the page keeps what it showed (gradio_client sees an update)
        return message, None, None, table_html
    rows = list(csv.reader(io.StringIO(Path(csv_path).read_text())))
    columns = {name: [float(r[k]) for r in rows[1:]] for k, name in enumerate(rows[0]) if k > 0}
    return message, columns, [r[0] for r in rows[1:]], table_html


def test_scores_equal_the_predictor_and_the_command_line(app_server, app_files, tmp_path):
    page = app_server.config()
    assert json.loads(page)["title"] == "PromptIQA" and "micro.pth.tar" in page and "Limits:" in page   # title, model, stated limits
    session = client(app_server)
    status, summary = add_table_requirement(session, app_files["prompt"], app_files["stars"])
    assert status.startswith("Added requirement **stars**: 5 images") and "1-5, higher is better" in summary
    # the prompt CSV with its images, as DMOS (lower is better), 0-10
    status, summary, _, _ = session.predict("dmos", upload([app_files["csv"], *app_files["prompt"]]), "", "0", "10",
                                         "lower is better", api_name="/add_prompt_file")
    assert status.startswith("Added requirement **dmos**"), status
    # a saved prompt (.pt) made by the API from the same images
    reference = Predictor.from_checkpoint(app_files["ckpt"], device="cpu")
    reference.set_prompt(app_files["prompt"], app_files["stars"], score_range=(1, 5))
    reference.save_prompt(tmp_path / "saved.pt")
    status, _, _, _ = session.predict("saved", upload([tmp_path / "saved.pt"]), "", "", "", "higher is better",
                                   api_name="/add_prompt_file")
    assert status.startswith("Added requirement **saved**"), status

    message, columns, names, table_html = score(session, app_files["queries"])
    assert message.startswith(f"Scored {len(app_files['queries'])} images under 3 requirements"), message
    assert names == [p.name for p in app_files["queries"]] and list(columns) == ["stars", "dmos", "saved"]
    expected = reference.score(app_files["queries"], workers=0)
    assert np.abs(np.array(columns["stars"]) - expected).max() <= 1e-6
    assert np.abs(np.array(columns["saved"]) - expected).max() <= 1e-6
    reference.set_prompt(app_files["prompt"], app_files["stars"], name="dmos", score_range=(0, 10),
                         higher_is_better=False)
    assert np.abs(np.array(columns["dmos"]) - reference.score(app_files["queries"], prompt="dmos")).max() <= 1e-6
    assert f"{expected[0]:.4f}</td>" in table_html and "data:image/png;base64," in table_html   # shown, thumbnails

    # the same files scored by `promptiqa score` give the same numbers, to the CSV's last digit
    out = tmp_path / "cli.csv"
    with contextlib.redirect_stderr(io.StringIO()):
        assert cli_main(["score", "--checkpoint", str(app_files["ckpt"]), "--prompt", str(app_files["csv"]),
                         "--score_range", "1", "5", "--device", "cpu", "--workers", "0", "--out", str(out),
                         *map(str, app_files["queries"])]) == 0
    cli = [row.split(",")[1] for row in out.read_text().splitlines()[1:]]
    assert cli == [f"{v:.6f}" for v in columns["stars"]]


def test_bad_inputs_show_the_page_error_and_the_next_call_works(app_server, app_files, tmp_path):
    session = client(app_server)
    prompt, stars = app_files["prompt"], app_files["stars"]
    cases = {
        "upload at least 2 prompt images (got 1)": (prompt[:1], stars[:1], "", ""),
        "row 2 (p1.png): score 'abc' is not a number": (prompt, [1, "abc", 3, 4, 5], "", ""),
        "all 5 prompt scores equal 3": (prompt, [3] * 5, "", ""),
        "give both ends of the score range": (prompt, stars, "1", ""),
        "broken.jpg": ([*prompt[:3], app_files["junk"]], stars[:4], "", ""),
    }
    for expected, (images, scores, low, high) in cases.items():
        status, summary = add_table_requirement(session, images, scores, low=low, high=high)
        assert status.startswith("**Error:** ") and expected in status, (expected, status)
        assert str(app_server.tmp) not in status and "Traceback" not in status     # names as uploaded, one line
        assert summary.startswith("No requirement yet")
    message, columns, _, _ = score(session, app_files["queries"][:1])
    assert message == "**Error:** add a requirement first (section 1): scores only mean something under one"
    # an upload that is no image, when scoring: the page names it; the server keeps serving this session
    status, _ = add_table_requirement(session, prompt, stars)
    assert status.startswith("Added requirement **stars**"), status
    message, columns, _, _ = score(session, [app_files["queries"][0], app_files["junk"]])
    assert message.startswith("**Error:** ") and "broken.jpg" in message and columns is None, message
    message, columns, names, _ = score(session, app_files["queries"][:2])
    assert message.startswith("Scored 2 images") and len(columns["stars"]) == 2, message
    status, _, _, _ = session.predict("x", upload([app_files["prompt"][0]]), "", "", "", "higher is better",
                                   api_name="/add_prompt_file")
    assert status.startswith("**Error:** upload exactly one prompt file"), status
    # the official demo's example.json: an entry must be chosen when it holds several
    example = tmp_path / "example.json"
    example.write_text(json.dumps([{"Example_id": f"Example{k}", "ISPP": [[f"./{p.name}", (s - 1) / 4 if k == 1 else
                                                                          (5 - s) / 4] for p, s in zip(prompt, stars)]}
                                   for k in (1, 2)]))
    status, _, _, _ = session.predict("", upload([example, *prompt]), "", "", "", "higher is better",
                                   api_name="/add_prompt_file")
    assert status.startswith("**Error:** ") and "holds 2 prompts (Example1, Example2)" in status, status
    assert str(app_server.tmp) not in status
    status, summary, _, _ = session.predict("", upload([example, *prompt]), "Example2", "", "", "higher is better",
                                         api_name="/add_prompt_file")
    assert status.startswith("Added requirement **example**: 5 images"), status
    assert "0-1, higher is better" in summary


def test_an_uploaded_prompt_file_reads_only_the_files_uploaded_with_it(app_server, app_files, tmp_path):
    """A prompt CSV or JSON naming server paths (/etc/hostname, ../..) made the app open them: an existence oracle
    over the disk, and the server's images usable as prompt images. They resolve only among the uploads now, and a
    path that exists on the server reads exactly like one that does not. A saved prompt of more pairs than a
    requirement may hold (50) is refused (every scoring would fuse them all)."""
    import torch

    from promptiqa.predict import Predictor

    session, prompt = client(app_server), app_files["prompt"]
    outside = ["/etc/hostname", "/no/such/file.png", "../../../../etc/hostname", str(app_files["queries"][0])]
    messages = []
    for i, path in enumerate(outside):
        sheet = tmp_path / f"prompt{i}.csv"
        sheet.write_text("image,score\n" + "".join(f"{p.name},{k + 1}\n" for k, p in enumerate(prompt[:3]))
                         + f"{path},5\n")
        status, _, _, _ = session.predict("", upload([sheet, *prompt[:3]]), "", "", "", "higher is better",
                                          api_name="/add_prompt_file")
        assert status.startswith("**Error:** ") and "is not among the uploaded files" in status, status
        messages.append(status.replace(path, "PATH").replace(sheet.name, "SHEET"))
    assert len(set(messages)) == 1, messages        # existing and missing server files read alike: no oracle
    example = tmp_path / "example.json"
    example.write_text(json.dumps([[f"./{p.name}", k / 3] for k, p in enumerate(prompt[:3])] + [["/etc/hostname", 1]]))
    status, _, _, _ = session.predict("", upload([example, *prompt[:3]]), "", "", "", "higher is better",
                                      api_name="/add_prompt_file")
    assert "is not among the uploaded files" in status, status
    # a saved prompt of 55 pairs (a 5-pair prompt of this model, its tokens repeated)
    predictor = Predictor.from_checkpoint(app_files["ckpt"], device="cpu")
    predictor.set_prompt(prompt, app_files["stars"])
    saved = predictor.save_prompt(tmp_path / "big.pt")
    obj = torch.load(saved, weights_only=True)
    obj["prompt"] = obj["prompt"].repeat(1, 11, 1)
    torch.save(obj, saved)
    status, _, _, _ = session.predict("", upload([saved]), "", "", "", "higher is better",
                                      api_name="/add_prompt_file")
    assert status.startswith("**Error:** ") and "big.pt holds 55 pairs; at most 50 per requirement" in status, status
    status, _ = add_table_requirement(session, prompt, app_files["stars"])   # the session goes on
    assert status.startswith("Added requirement **stars**"), status
    # an image whose header declares 900 megapixels (it blocked the page 74 s): refused from its header, at once
    import time


    big = _png_header(tmp_path / "big.png", 30000, 30000)
    start = time.monotonic()
    message, columns, _, _ = score(session, [app_files["queries"][0], big])
    assert message.startswith("**Error:** ") and "image too large: 900,000,000 pixels" in message, message
    assert time.monotonic() - start < 20


def test_sessions_keep_their_own_requirements_and_examples_match_the_export(app_server, app_files, tmp_path):
    first, second = client(app_server), client(app_server)
    add_table_requirement(first, app_files["prompt"], app_files["stars"], name="mine")
    status, summary, _ = second.predict("Noise (MOS)", api_name="/add_example")
    assert status.startswith("Added requirement **Noise (MOS)**: 10 images (bundled example), scale 0-1, higher")
    assert "mine" not in summary
    _, mine, _, _ = score(first, app_files["queries"])
    _, noise, _, _ = score(second, app_files["queries"])
    assert list(mine) == ["mine"] and list(noise) == ["Noise (MOS)"]

    # the examples as prompt CSVs for the command line (at the model's input size): the same scores
    export = tmp_path / "examples"
    with contextlib.redirect_stdout(io.StringIO()) as said:
        assert cli_main(["app", "--checkpoint", str(app_files["ckpt"]), "--export-examples", str(export)]) == 0
    assert "wrote 10 example requirements (64 px images" in said.getvalue()
    assert sorted(p.name for p in export.glob("*.csv"))[:2] == ["colourfulness.csv", "colourfulness_dmos.csv"]
    with contextlib.redirect_stdout(io.StringIO()):   # over an earlier export: rewritten (identically)
        assert cli_main(["app", "--checkpoint", str(app_files["ckpt"]), "--export-examples", str(export)]) == 0
    mine_folder = tmp_path / "mine"                     # a folder of the user's: its README.md and CSVs are kept
    mine_folder.mkdir()
    (mine_folder / "README.md").write_text("my notes\n")
    (mine_folder / "noise.csv").write_text("image,score\nx.png,1\n")
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert cli_main(["app", "--checkpoint", str(app_files["ckpt"]), "--export-examples", str(mine_folder)]) == 1
    assert "already holds files (README.md and 1 more) that an export did not write" in err.getvalue()
    assert (mine_folder / "README.md").read_text() == "my notes\n" and sorted(os.listdir(mine_folder)) == \
        ["README.md", "noise.csv"]
    out = tmp_path / "noise.csv"
    with contextlib.redirect_stderr(io.StringIO()):
        assert cli_main(["score", "--checkpoint", str(app_files["ckpt"]), "--prompt", str(export / "noise.csv"),
                         "--score_range", "0", "1", "--device", "cpu", "--out", str(out),
                         *map(str, app_files["queries"])]) == 0
    assert [row.split(",")[1] for row in out.read_text().splitlines()[1:]] == [f"{v:.6f}" for v in
                                                                                noise["Noise (MOS)"]]
    # a zip of images scores as its files do, named archive:member
    import zipfile
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for q in app_files["queries"]:
            zf.write(q, f"photos/{q.name}")
        zf.writestr("photos/notes.txt", "not an image")
    message, zipped, names, _ = score(second, [archive])
    assert names == [f"batch.zip:photos/{q.name}" for q in app_files["queries"]] and "notes.txt" in message
    assert zipped["Noise (MOS)"] == noise["Noise (MOS)"]
    # removing a requirement is per session too
    status, summary, _ = first.predict("mine", api_name="/remove_requirement")
    assert status == "Removed requirement **mine**." and summary.startswith("No requirement yet")
    assert score(second, app_files["queries"][:1])[0].startswith("Scored 1 image under 1 requirement")


def test_without_a_model_the_page_says_how_to_get_one(tmp_path):
    app = AppServer(tmp_path, "--device", "cpu")    # empty working folder, empty Hugging Face cache
    try:
        page = json.loads(app.config())
        text = " ".join(str(c.get("props", {}).get("value", "")) for c in page["components"])
        assert "**No model is loaded**" in text and "bash scripts/demo.sh" in text and "hf:Zevin2023/PromptIQA" in text
    finally:
        code = app.stop()
    assert code == 130 and app.leftovers() == [], app.log.read_text()
    assert "Traceback" not in app.log.read_text()


def test_the_default_model_is_the_demos_prompted_model(app_files, tmp_path, monkeypatch):
    from promptiqa.app.command import choose_checkpoint

    monkeypatch.chdir(tmp_path)
    assert choose_checkpoint("hf:Zevin2023/PromptIQA") == ("hf:Zevin2023/PromptIQA", "the authors' release")
    demo = tmp_path / "runs" / "demo" / "promptiqa" / "last.pth.tar"   # where bash scripts/demo.sh leaves it
    demo.parent.mkdir(parents=True)
    demo.write_bytes(app_files["ckpt"].read_bytes())
    (tmp_path / "runs" / "demo" / "baseline").mkdir()
    chosen, origin = choose_checkpoint(None)
    assert Path(chosen).resolve() == demo and origin.startswith("the demo's prompted model")


def test_a_checkpoint_that_cannot_load_is_one_error_line(tmp_path, capsys):
    missing = tmp_path / "nowhere.pth.tar"
    assert cli_main(["app", "--checkpoint", str(missing), "--port", str(free_port())]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: checkpoint not found: {missing}") and "hf:Zevin2023" in err[0]
    assert cli_main(["app", "--port", "70000"]) == 1
    assert capsys.readouterr().err.strip() == "error: --port 70000: expected a port number, 0 to 65535"


def test_the_model_line_says_what_a_64_pixel_model_means_for_photographs():
    import torch

    from promptiqa.app.service import describe_model
    from promptiqa.demo.run import DEFAULT_CONFIG, DemoConfig
    from promptiqa.models import build_model

    train = DemoConfig.from_yaml(DEFAULT_CONFIG).train   # the demo's model as configs/demo.yaml makes it
    torch.manual_seed(0)
    demo = Predictor(build_model("promptiqa", backbone=train["backbone"], image_size=train["image_size"],
                                 backbone_kwargs=train["backbone_kwargs"]), device="cpu")
    line = describe_model(demo, "runs/demo/promptiqa/last.pth.tar", "the demo's prompted model")
    size = train["image_size"]
    assert f"**Every image is resized to {size}x{size} pixels before it is scored**: fine detail" in line
    assert "This is the demo's model: it learnt the demo's synthetic requirements" in line
    larger = Predictor(build_model("promptiqa", preset="tiny"), device="cpu")    # 112 px: no such note
    assert "resized" not in describe_model(larger, "tiny.pth.tar", "--checkpoint")
