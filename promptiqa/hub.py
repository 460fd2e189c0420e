"""Checkpoints by name: ``hf:REPO[/FILE][@REVISION]`` references to files on the Hugging Face Hub.

``hf:Zevin2023/PromptIQA`` is the authors' release (FILE defaults to ``best_model.pth.tar``, the name the official
loader expects). A file is downloaded once, through ``huggingface_hub``, into its standard cache (``HF_HOME``,
``HF_HUB_CACHE``); later loads find it there without touching the network, so they work offline. ``HF_ENDPOINT``
selects a mirror, ``HF_HUB_OFFLINE=1`` forbids downloads. Every tool resolves ``--checkpoint`` through
``resolve_checkpoint``, so local files and references are accepted alike.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .errors import PromptIQAError

HF_PREFIX = "hf:"
RELEASE_REPO = "Zevin2023/PromptIQA"
DEFAULT_FILE = "best_model.pth.tar"
# How long one connection attempt to the endpoint may take before a download is given up: huggingface_hub retries a
# failed request five times with back-off (about 25 s and six warning lines before its error), which an offline
# machine should not wait through.
REACH_TIMEOUT_S = 3.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
RELEASE = HF_PREFIX + RELEASE_REPO
# A reference longer than this is refused before anything is looked up (the hub's own names are far shorter).
MAX_REFERENCE = 1000
# Characters git refuses in branch and tag names (git check-ref-format), so no revision can hold them.
REVISION_FORBIDDEN = frozenset("~^:?*[\\")


class HubError(PromptIQAError, FileNotFoundError):
    """A ``hf:`` reference that is malformed, or whose file is neither in the cache nor downloadable."""


@dataclass(frozen=True)
class HubFile:
    """One file of a Hugging Face model repository at a revision (None: the default branch)."""

    repo: str
    filename: str = DEFAULT_FILE
    revision: Optional[str] = None

    def __str__(self) -> str:
        return f"{HF_PREFIX}{self.repo}/{self.filename}" + (f"@{self.revision}" if self.revision else "")

    @property
    def url(self) -> str:
        """The file's download URL on the configured endpoint (HF_ENDPOINT, default https://huggingface.co)."""
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo, self.filename, revision=self.revision or "main")


def parse_reference(text: Union[str, os.PathLike]) -> Optional[HubFile]:
    """The HubFile a ``hf:OWNER/NAME[/FILE][@REVISION]`` string names; None for anything else (a local path). A
    malformed reference (a repository name the hub would refuse, ``.`` or ``..`` segments, white space or control
    characters, more than MAX_REFERENCE characters) is one HubError, before the hub library sees it."""
    text = os.fspath(text)
    if not text.startswith(HF_PREFIX):
        return None
    rest, at, revision = text[len(HF_PREFIX):].rpartition("@") if "@" in text else (text[len(HF_PREFIX):], "", "")
    if len(text) > MAX_REFERENCE:
        raise _malformed(text, f"{len(text)} characters, at most {MAX_REFERENCE}")
    parts = rest.strip("/").split("/")
    if len(parts) < 2 or not all(parts) or (at and not revision):
        raise _malformed(text, "")
    ref = HubFile("/".join(parts[:2]), "/".join(parts[2:]) or DEFAULT_FILE, revision or None)
    reason = _reference_fault(text, ref, parts[2:])
    if reason:
        raise _malformed(text, reason)
    return ref


def _reference_fault(text: str, ref: HubFile, file_parts) -> Optional[str]:
    """Why a well-shaped reference is still not one the hub can serve, or None."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if any(ch.isspace() or not ch.isprintable() for ch in text):
        return "white space or a control character"
    try:
        validate_repo_id(ref.repo)
    except HFValidationError:
        return (f"repository {ref.repo!r}: the hub's names are letters, digits, '-', '_' and '.', at most 96 "
                f"characters, without '--' or '..', not starting or ending with '-' or '.'")
    if any(part in (".", "..") for part in file_parts) or "\\" in ref.filename:
        return f"file {ref.filename!r}: '.', '..' and backslashes are not file names on the hub"
    if ref.revision and (".." in ref.revision or ref.revision.startswith("/") or REVISION_FORBIDDEN & set(ref.revision)):
        return f"revision {ref.revision!r}: not a branch, tag or commit name"
    return None


def _malformed(text: str, reason: str) -> HubError:
    shown = text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"
    return HubError(f"{shown}: {reason + '; ' if reason else ''}expected hf:OWNER/NAME[/FILE][@REVISION], e.g. "
                    f"{RELEASE} (the authors' release; FILE defaults to {DEFAULT_FILE})")


def cached_file(ref: HubFile) -> Optional[Path]:
    """The file's path in the Hugging Face cache when it has been downloaded before, else None (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(ref.repo, ref.filename, revision=ref.revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def cached_release() -> Optional[Path]:
    """The authors' released weights when they are in the Hugging Face cache, else None (no network)."""
    return cached_file(HubFile(RELEASE_REPO))


def fetch(ref: HubFile) -> Path:
    """The local path of ``ref``: from the cache when it is there, else downloaded into it once."""
    found = cached_file(ref)
    if found is not None:
        return found
    from huggingface_hub import constants, errors, hf_hub_download

    if constants.HF_HUB_OFFLINE:
        raise _not_fetched(ref, "HF_HUB_OFFLINE is set")
    unreachable = endpoint_unreachable(constants.ENDPOINT)
    if unreachable:
        raise _not_fetched(ref, unreachable)
    try:
        return Path(hf_hub_download(ref.repo, ref.filename, revision=ref.revision))
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.RemoteEntryNotFoundError) as err:
        reason = f"the hub has no such {_what(err)} ({type(err).__name__})"
    except errors.LocalEntryNotFoundError:  # the endpoint stopped answering after the check, and nothing cached
        reason = f"{constants.ENDPOINT} was unreachable"
    except Exception as err:  # an HTTP error (gated repository, no token), a full disk, ...
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    raise _not_fetched(ref, reason)


def endpoint_unreachable(endpoint: str, timeout: float = REACH_TIMEOUT_S) -> Optional[str]:
    """Why ``endpoint`` cannot be reached (no name resolution, connection refused, no answer within ``timeout``), or
    None when a connection opens. One attempt, so that an offline machine fails at once; behind a proxy (the
    *_PROXY variables) the hub client is left to find out, since only the proxy can reach the endpoint."""
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return None
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    if not url.hostname:
        return f"HF_ENDPOINT {endpoint!r} names no host"
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError as err:
        return f"{endpoint} was unreachable: {err.strerror or err or type(err).__name__}"
    return None


def _not_fetched(ref: HubFile, reason: str) -> "HubError":
    """The one error of a reference that is neither cached nor downloadable: what was tried, why, and what to do."""
    from huggingface_hub import constants

    return HubError(f"{ref}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and could not be downloaded "
                    f"({reason}); download {ref.url}, save it as checkpoints/{Path(ref.filename).name} and pass that "
                    f"path instead, or set HF_ENDPOINT to a mirror of the hub")


def _what(err: Exception) -> str:
    from huggingface_hub import errors

    if isinstance(err, errors.RevisionNotFoundError):
        return "revision"
    return "file" if isinstance(err, errors.RemoteEntryNotFoundError) else "repository (or it is private)"


def resolve_checkpoint(path: Union[str, os.PathLike]) -> Path:
    """A local checkpoint path for ``path``: an existing file as it is, a ``hf:`` reference fetched (or found in the
    cache). A missing file is a FileNotFoundError that says where the released weights come from."""
    ref = parse_reference(path)
    if ref is not None:
        return fetch(ref)
    path = Path(path)
    if not path.is_file():
        release = HubFile(RELEASE_REPO)
        raise FileNotFoundError(f"checkpoint not found: {path} (the authors' released weights: --checkpoint {RELEASE} "
                                f"downloads them once into the Hugging Face cache, or save {release.url} there)")
    return path
