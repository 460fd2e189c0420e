"""Weights by name: ``hf:REPO[/FILE][@REVISION]`` through a local Hugging Face cache, with no network.

huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once, at import, so each case runs in a subprocess with its own
environment: a cache laid out as the hub writes it (blobs, snapshots/<rev>/FILE -> ../../blobs/<hash>, refs/main).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promptiqa.hub import (DEFAULT_FILE, PROXY_VARIABLES, RELEASE_REPO, HubError, HubFile, endpoint_unreachable,
                           parse_reference)
from promptiqa.models import load_model
from tests.helpers import _micro_checkpoint, _write_image

ROOT = Path(__file__).resolve().parents[1]
REVISION = "0123456789abcdef0123456789abcdef01234567"
# References the hub cannot serve: each is one error line of ours (the hub library raised a traceback on most).
MALFORMED = ("hf:../../x", "hf:me/my model", "hf:me/" + "a" * 10000, "hf:me/model/../w.pth", "hf:me/model@a..b",
             "hf:me/m--x", "hf:me/model/x\tab.pth")

# Runs the command line and the API inside one interpreter that sees the test's HF_* variables from the start.
PROBE = r"""
import contextlib, io, json, sys
from promptiqa.cli import main
from promptiqa.hub import cached_release
calls, result = json.loads(sys.argv[1]), {}
for key, args in calls.items():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    result[key] = [rc, out.getvalue(), err.getvalue()]
release = cached_release()
result["cached_release"] = str(release) if release else None
if len(sys.argv) > 2:
    from promptiqa import Predictor
    p = Predictor.from_pretrained(device="cpu")
    p.set_prompt(json.loads(sys.argv[2]), [1, 2, 3, 4, 5])
    result["from_pretrained"] = p.score(json.loads(sys.argv[3])).tolist()
print(json.dumps(result))
"""


def put_in_hf_cache(hf_home: Path, repo: str, filename: str, data: bytes, revision: str = REVISION) -> Path:
    """Store ``data`` as the hub's cache does: blobs/<sha256>, snapshots/<rev>/<filename> a relative symlink to it,
    refs/main holding the revision. Returns the snapshot path."""
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    snapshot = folder / "snapshots" / revision / filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    return snapshot


def _probe(hf_home: Path, calls: dict, *extra: str, endpoint: str = "", offline: bool = True) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and not k.lower().endswith("_proxy")}
    env.update(HF_HOME=str(hf_home), PYTHONPATH=str(ROOT), **({"HF_HUB_OFFLINE": "1"} if offline else {}))
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    calls = {k: [str(a) for a in v] for k, v in calls.items()}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(calls), *extra], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def scoring(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    ckpt = _micro_checkpoint(root / "micro.pth.tar", seed=4)
    prompt = [_write_image(root / "prompt" / f"p{i}.png", seed=40 + i) for i in range(5)]
    (root / "prompt" / "prompt.csv").write_text("image,score\n" + "".join(f"{p.name},{i + 1}\n"
                                                                          for i, p in enumerate(prompt)))
    queries = [_write_image(root / f"q{i}.png", seed=60 + i) for i in range(3)]
    return dict(root=root, ckpt=ckpt, prompt=prompt, csv=root / "prompt" / "prompt.csv", queries=queries)


def test_references_parse():
    assert parse_reference("checkpoints/best_model.pth.tar") is None
    assert parse_reference("hf:Zevin2023/PromptIQA") == HubFile(RELEASE_REPO, DEFAULT_FILE, None)
    assert parse_reference("hf:me/model/sub/w.pth@v2") == HubFile("me/model", "sub/w.pth", "v2")
    assert str(parse_reference(f"hf:me/model@{REVISION}")) == f"hf:me/model/{DEFAULT_FILE}@{REVISION}"
    assert parse_reference("hf:me/model@refs/pr/1").revision == "refs/pr/1"   # a pull request's ref is a revision
    for bad in ("hf:", "hf:onlyowner", "hf:me//x", "hf:me/model@", *MALFORMED):
        with pytest.raises(HubError, match="expected hf:OWNER/NAME"):
            parse_reference(bad)
    reasons = {ref: str(pytest.raises(HubError, parse_reference, ref).value) for ref in MALFORMED}
    assert "repository '../..': the hub's names are" in reasons["hf:../../x"]
    assert "white space or a control character" in reasons["hf:me/my model"]
    assert "(10006 characters): 10006 characters, at most 1000" in reasons["hf:me/" + "a" * 10000]
    assert "file '../w.pth': '.', '..'" in reasons["hf:me/model/../w.pth"]
    assert "revision 'a..b': not a branch" in reasons["hf:me/model@a..b"]
    assert "repository 'me/m--x'" in reasons["hf:me/m--x"]


def test_released_weights_load_by_name_from_the_cache_offline(scoring, tmp_path):
    hf_home = tmp_path / "hf"
    snapshot = put_in_hf_cache(hf_home, RELEASE_REPO, DEFAULT_FILE, scoring["ckpt"].read_bytes())
    put_in_hf_cache(hf_home, "someone/other", "weights/w.pth.tar", scoring["ckpt"].read_bytes())
    score = ["score", "--prompt", scoring["csv"], "--quiet", *scoring["queries"]]
    result = _probe(hf_home, {
        "local": [*score, "--checkpoint", scoring["ckpt"]],
        "release": [*score, "--checkpoint", "hf:Zevin2023/PromptIQA"],
        "file_and_revision": [*score, "--checkpoint", f"hf:Zevin2023/PromptIQA/{DEFAULT_FILE}@{REVISION}"],
        "other_repo": [*score, "--checkpoint", "hf:someone/other/weights/w.pth.tar"],
    }, json.dumps([str(p) for p in scoring["prompt"]]), json.dumps([str(p) for p in scoring["queries"]]))
    rc, local, err = result["local"]
    assert rc == 0 and len(local.splitlines()) == 4, err
    for key in ("release", "file_and_revision", "other_repo"):
        assert result[key][0] == 0, result[key][2]
        assert result[key][1] == local, key                 # the same model, so the same scores, to the digit
    assert Path(result["cached_release"]) == snapshot       # the app's default-model lookup finds it, offline
    expected = [float(row.split(",")[1]) for row in local.splitlines()[1:]]
    assert result["from_pretrained"] == pytest.approx(expected, abs=1e-6)


def test_an_empty_cache_offline_explains_what_to_do(scoring, tmp_path):
    score = ["score", "--prompt", scoring["csv"], "--quiet", scoring["queries"][0]]
    result = _probe(tmp_path / "empty", {
        "release": [*score, "--checkpoint", "hf:Zevin2023/PromptIQA"],
        "revision": [*score, "--checkpoint", "hf:me/model/w.pt@v2"],
        "missing_file": [*score, "--checkpoint", tmp_path / "nowhere.pth.tar"],
        "malformed": [*score, "--checkpoint", "hf:justaname"],
        **{f"malformed_{i}": [*score, "--checkpoint", ref] for i, ref in enumerate(MALFORMED)},
    }, endpoint="https://mirror.example.org")
    assert result["cached_release"] is None
    for key in ("release", "revision", "missing_file", "malformed", *(f"malformed_{i}" for i in range(len(MALFORMED)))):
        rc, out, err = result[key]
        assert rc == 1 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: "), (key, err)
    err = result["release"][2]
    # what was tried, the URL (on the chosen endpoint), where to put the file, and the mirror variable
    assert f"hf:Zevin2023/PromptIQA/{DEFAULT_FILE}: not in the Hugging Face cache ({tmp_path / 'empty' / 'hub'})" in err
    assert "HF_HUB_OFFLINE is set" in err
    assert f"https://mirror.example.org/Zevin2023/PromptIQA/resolve/main/{DEFAULT_FILE}" in err
    assert f"save it as checkpoints/{DEFAULT_FILE}" in err and "HF_ENDPOINT" in err
    assert "https://mirror.example.org/me/model/resolve/v2/w.pt" in result["revision"][2]
    missing = result["missing_file"][2]
    assert f"checkpoint not found: {tmp_path / 'nowhere.pth.tar'}" in missing
    assert "--checkpoint hf:Zevin2023/PromptIQA" in missing and "/Zevin2023/PromptIQA/resolve/main/" in missing
    assert "expected hf:OWNER/NAME[/FILE][@REVISION]" in result["malformed"][2]
    for i, ref in enumerate(MALFORMED):  # refused by our parser, before the hub library could raise its own traceback
        err = result[f"malformed_{i}"][2]
        assert "expected hf:OWNER/NAME[/FILE][@REVISION]" in err and len(err) < 600, err


def _closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_hub_fails_at_once_without_retry_noise(scoring, tmp_path):
    """No HF_HUB_OFFLINE, and the endpoint down: one error line within seconds, not huggingface_hub's five retries
    (about 25 s and six warning lines before this check)."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    score = ["score", "--prompt", scoring["csv"], "--quiet", scoring["queries"][0]]
    start = time.monotonic()
    result = _probe(tmp_path / "empty", {"release": [*score, "--checkpoint", "hf:Zevin2023/PromptIQA"]},
                    endpoint=endpoint, offline=False)
    rc, out, err = result["release"]
    assert rc == 1 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"({endpoint} was unreachable: " in err and "Retrying" not in err
    assert f"{endpoint}/Zevin2023/PromptIQA/resolve/main/{DEFAULT_FILE}" in err
    assert time.monotonic() - start < 20      # the interpreter and torch start-up included


def test_the_reachability_check_opens_one_connection_and_leaves_proxies_to_the_client(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert endpoint_unreachable(f"http://127.0.0.1:{server.getsockname()[1]}") is None
    closed = f"http://127.0.0.1:{_closed_port()}"
    assert endpoint_unreachable(closed).startswith(f"{closed} was unreachable: ")
    assert endpoint_unreachable("no-scheme-or-host") == "HF_ENDPOINT 'no-scheme-or-host' names no host"
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert endpoint_unreachable(closed) is None          # only the proxy can tell


def test_load_model_takes_local_paths_as_before(scoring):
    model, info = load_model(scoring["ckpt"], device="cpu", with_info=True)
    assert info["source"] == str(scoring["ckpt"]) and model.image_size == 64
