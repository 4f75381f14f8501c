"""Hub transport: download, upload, cache, revisions and sha256 verification. It only moves files.

Before a load asks the Hub, one short connection attempt (:func:`unreachable_reason`) tells whether it can be
asked at all; when not, only the cache answers, at once, instead of after the client's retries.

What comes back is paths; which files a checkpoint has, and its config and card, are a layer up
(:mod:`mvssl_hub.hub.remote`), and models are built above that (:mod:`mvssl_hub.hub.loading`,
:mod:`mvssl_hub.hub.weights`). huggingface_hub is imported inside each function
that makes a Hub call, so that importing mvssl_hub does not import it. The endpoint is read when a call
is made (``endpoint=``, else ``huggingface_hub.constants.ENDPOINT``), never cached at import.

A downloaded file whose sha256 does not match is removed from the cache (the snapshot link and the
blob it points to), so a later load fetches it again instead of failing on the bad copy forever.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import urllib.request
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import CheckpointError, CheckpointNotFoundError, HubRepoNotFoundError, HubUnreachableError, IntegrityError
from ..safe_io import looks_local, sha256_file
from .schema import CONFIG_FILE, MODEL_FILE

logger = logging.getLogger(__name__)

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
# How long a load waits to open a connection to the Hub (or the proxy that leads to it) before it takes the Hub
# for unreachable and answers from the cache alone: huggingface_hub would otherwise retry a failed lookup for
# about 25 s before giving up.
PROBE_SECONDS = 2.0


def parse_source(repo_id_or_dir: str | os.PathLike[str], revision: str | None) -> tuple[str, str | None, bool]:
    """(location, revision, is_local). Accepts a folder, ``org/name``, ``hf-hub:org/name[@rev]``."""
    src = os.fspath(repo_id_or_dir)
    if src.startswith("hf-hub:"):
        src = src[len("hf-hub:"):]
        if "@" in src:
            src, rev = src.split("@", 1)
            if revision is not None and revision != rev:
                raise ValueError(f"revision {revision!r} contradicts the one in the name ({rev!r})")
            revision = rev
        return src, revision, False
    if Path(src).exists():
        return src, revision, True
    if looks_local(src):  # a mistyped folder fails at once, without a Hub request
        hint = f" (for the Hub repo, write 'hf-hub:{src}')" if REPO_ID.match(src) else ""
        raise CheckpointNotFoundError(f"{src!r}: no such folder{hint}")
    if REPO_ID.match(src):
        return src, revision, False
    raise CheckpointNotFoundError(f"{src!r} is neither an existing folder nor a Hub repo id 'org/name'")


def hub_endpoint(endpoint: str | None = None) -> str:
    """The Hub endpoint a call uses: ``endpoint``, else huggingface_hub's (``HF_ENDPOINT`` or huggingface.co)."""
    from huggingface_hub import constants

    return (endpoint or constants.ENDPOINT).rstrip("/")


def unreachable_reason(endpoint: str | None = None, timeout: float = PROBE_SECONDS) -> str | None:
    """None when a TCP connection to the Hub opens within ``timeout`` seconds, else why it did not.

    Behind a proxy (``HTTPS_PROXY`` and friends, unless ``NO_PROXY`` exempts the host) the proxy is what must
    answer. The name lookup runs in a thread of its own, so a resolver that hangs costs ``timeout``, not minutes.
    """
    url = urlsplit(hub_endpoint(endpoint))
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parsed.hostname or "", parsed.port or 80
    outcome: dict[str, BaseException | None] = {}

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["error"] = None
        except OSError as e:
            outcome["error"] = e

    probe = threading.Thread(target=connect, name="mvssl-hub-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    if "error" not in outcome:
        return f"no connection to {host}:{port} within {timeout:g} s"
    error = outcome["error"]
    return None if error is None else f"{host}:{port}: {error}"


def is_offline(local_files_only: bool) -> bool:
    """True when no request may be made: ``local_files_only`` or ``HF_HUB_OFFLINE``."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return local_files_only or env or bool(constants.HF_HUB_OFFLINE)


def hub_download(
    repo_id: str, filename: str, revision: str | None, *, cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None, local_files_only: bool = False, force_download: bool = False,
    token: str | bool | None = None, unreachable: str | None = None,
) -> Path:
    """hf_hub_download with errors translated: nothing cached offline -> HubUnreachableError (``unreachable``: why
    the Hub was not asked, when a probe found it down), no such repo or revision -> HubRepoNotFoundError."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision or 'main'}"
    try:
        return Path(hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
            local_files_only=local_files_only or unreachable is not None, force_download=force_download, token=token,
        ))
    except LocalEntryNotFoundError:
        why = f"the Hub at {hub_endpoint(endpoint)} cannot be reached ({unreachable})" if unreachable else (
            "the Hub cannot be reached (offline mode or no connection)")
        raise HubUnreachableError(
            f"{filename} of {where} is not in the local cache{f' {cache_dir}' if cache_dir else ''} and {why}. "
            f"Fetch it once with network access, e.g. mvssl_hub.from_pretrained({repo_id!r}"
            f"{f', revision={revision!r}' if revision else ''}) or `hf download {repo_id}"
            f"{f' --revision {revision}' if revision else ''}`, with HF_HUB_OFFLINE unset."
        ) from None
    except RepositoryNotFoundError:
        raise HubRepoNotFoundError(
            f"the Hub at {hub_endpoint(endpoint)} has no repo {repo_id!r} (or it is private and no token reached it)"
        ) from None
    except RevisionNotFoundError:
        raise HubRepoNotFoundError(f"revision {revision!r} not found in Hub repo {repo_id!r}") from None
    except EntryNotFoundError:
        raise CheckpointNotFoundError(
            f"{where} has no {filename}: not an mvssl-hub checkpoint (expected {MODEL_FILE} and {CONFIG_FILE})"
        ) from None


def evict_cached_file(path: Path) -> None:
    """Remove a cached file: the snapshot link and, when it links into its own repo's ``blobs/`` folder, the
    blob itself. A link that leads anywhere else (a poisoned cache) loses only the link: nothing outside the
    cache's repo folder is ever deleted."""
    path = Path(path)
    blob = path.resolve() if path.is_symlink() else None
    snapshots = next((p for p in path.parents if p.name == "snapshots"), None)
    path.unlink(missing_ok=True)
    if blob is not None and snapshots is not None and blob.parent == (snapshots.parent / "blobs").resolve():
        blob.unlink(missing_ok=True)


def fetch_verified(
    repo_id: str, filename: str, commit: str | None, sha256: str, *, cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None, local_files_only: bool = False, token: str | bool | None = None,
    force_download: bool = False, unreachable: str | None = None,
) -> Path:
    """Download (or take from the cache) one file and check its sha256 before it is used.

    A cached file that fails the check is evicted and re-downloaded once, with a warning that says so;
    a fresh download that fails it is evicted too (the next call fetches again) and raises
    IntegrityError naming the file and both hashes. Offline (or ``unreachable``: why the Hub is not asked), a
    bad cached copy is an IntegrityError.
    """
    from huggingface_hub import try_to_load_from_cache

    kw: dict[str, Any] = dict(cache_dir=cache_dir, endpoint=endpoint, token=token)
    was_cached = (not force_download
                  and isinstance(try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=commit), str))
    local_files_only = local_files_only or unreachable is not None
    path = hub_download(repo_id, filename, commit, local_files_only=local_files_only, force_download=force_download,
                        unreachable=unreachable, **kw)
    found = sha256_file(path)
    if found == sha256:
        return path
    where = f"{repo_id}@{commit}"
    served = (f"{filename} downloaded from {where} has sha256 {{found}}, expected {sha256}: the served file is not "
              "the one the checkpoint was published with (removed from the cache; a later load fetches it again)")
    logger.warning("%s of %s: sha256 %s, expected %s; evicting it from the cache", filename, where, found, sha256)
    if not was_cached:
        evict_cached_file(path)
        raise IntegrityError(served.format(found=found))
    if local_files_only:
        raise IntegrityError(
            f"cached {filename} of {where} at {path} is corrupted: sha256 {found}, expected {sha256}. Offline, so it "
            f"was not re-downloaded: delete {path.resolve()} and load again with network access."
        )
    warnings.warn(
        f"cached {filename} of {where} at {path} is corrupted (sha256 {found}, expected {sha256}); re-downloading it",
        RuntimeWarning, stacklevel=3,
    )
    evict_cached_file(path)
    path = hub_download(repo_id, filename, commit, local_files_only=False, force_download=True, **kw)
    found = sha256_file(path)
    if found != sha256:
        evict_cached_file(path)
        raise IntegrityError(served.format(found=found))
    return path


def snapshot_commit(path: Path) -> str:
    """The commit sha a cached file belongs to (``.../snapshots/<sha>/<file>``)."""
    name = path.parent.name
    if not COMMIT_SHA.match(name):
        raise CheckpointError(f"cannot tell the commit of cached file {path}")
    return name


def upload_files(
    folder: Path, names: list[str], data: dict[str, bytes], repo_id: str, *, message: str,
    revision_tag: str | None = None, private: bool = False, token: str | bool | None = None,
    endpoint: str | None = None,
) -> str:
    """Upload the files ``names`` of ``folder`` and the in-memory files ``data`` (path in repo -> bytes) as one
    commit (repo created if needed), tag it ``revision_tag``, return the commit sha. An existing tag is never
    moved: ValueError, before anything is created or sent."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    api = HfApi(endpoint=endpoint, token=token)
    if revision_tag is not None:
        try:
            existing = {t.name for t in api.list_repo_refs(repo_id).tags}
        except GatedRepoError:
            raise  # exists, but this token may not read it: not "missing"
        except RepositoryNotFoundError:
            existing = set()  # the repo does not exist yet; 401/403/5xx and other errors propagate
        if revision_tag in existing:
            raise ValueError(f"tag {revision_tag!r} already exists in {repo_id}; a recipe version is published once")
    api.create_repo(repo_id, private=private, exist_ok=True)
    ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in names]
    ops += [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content) for name, content in data.items()]
    info = api.create_commit(repo_id, operations=ops, commit_message=message)
    logger.info("pushed %s to %s@%s%s", folder, repo_id, info.oid, f" (tag {revision_tag})" if revision_tag else "")
    if revision_tag is not None:
        api.create_tag(repo_id, tag=revision_tag, revision=info.oid)
    return info.oid


__all__ = [
    "COMMIT_SHA", "PROBE_SECONDS", "REPO_ID", "evict_cached_file", "fetch_verified", "hub_download", "hub_endpoint",
    "is_offline", "parse_source", "snapshot_commit", "unreachable_reason", "upload_files",
]
