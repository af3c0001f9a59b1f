"""`recsys data download`: fetch an official MovieLens zip, verify it, unpack it atomically.

The zip comes from GroupLens over HTTPS (`DEFAULT_BASE_URL`, or a mirror given by
`--base-url` / `$RECSYS_MOVIELENS_URL`). Its md5 is checked against the checksum GroupLens
publishes beside each zip (`<zip>.md5`), or against `--md5` when the caller pins one. The zip
is streamed to a temporary file beside the output, checked, and unpacked into a staging
directory that replaces `out` only when everything succeeded. MovieLens' terms forbid
redistribution, so the project ships this downloader, never the files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
from tqdm import tqdm

from recsys.atomic import atomic_dir
from recsys.errors import UserError

DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens/"
BASE_URL_ENV = "RECSYS_MOVIELENS_URL"
DATASETS = {
    "movielens-100k": "ml-100k.zip",
    "movielens-1m": "ml-1m.zip",
    "movielens-20m": "ml-20m.zip",
}
MANUAL = "https://grouplens.org/datasets/movielens/"
MD5_RE = re.compile(r"\b[0-9a-fA-F]{32}\b")


def _get(client: httpx.Client, url: str) -> httpx.Response:
    try:
        response = client.get(url)
    except httpx.HTTPError as e:
        raise UserError(_offline(url, e)) from e
    if response.status_code != 200:
        raise UserError(f"could not download {url}: HTTP {response.status_code}")
    return response


def _offline(url: str, error: Exception) -> str:
    return (
        f"could not reach {url} ({type(error).__name__}: {error}). Are you offline? Download "
        f"the zip by hand from {MANUAL}, unzip it and pass the folder to "
        "`recsys data prepare --format movielens --input DIR`"
    )


def published_md5(client: httpx.Client, zip_url: str) -> str:
    """The md5 GroupLens publishes beside the zip (`<zip>.md5`)."""
    text = _get(client, zip_url + ".md5").text
    found = MD5_RE.search(text)
    if found is None:
        raise UserError(f"{zip_url}.md5 holds no md5 digest (got {text[:80]!r}); pass --md5")
    return found.group(0).lower()


def _fetch(client: httpx.Client, url: str, target: Path, progress: bool) -> tuple[str, str]:
    """Stream `url` into `target`; return its (md5, sha256)."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise UserError(f"could not download {url}: HTTP {response.status_code}")
            total = int(response.headers.get("content-length", 0)) or None
            bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=url.rsplit("/", 1)[-1],
                disable=not progress,
            )
            with target.open("wb") as f, bar:
                for chunk in response.iter_bytes(1 << 20):
                    f.write(chunk)
                    md5.update(chunk)
                    sha.update(chunk)
                    bar.update(len(chunk))
    except httpx.HTTPError as e:
        raise UserError(_offline(url, e)) from e
    return md5.hexdigest(), sha.hexdigest()


def _members(archive: zipfile.ZipFile, source: str) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The files of the zip with their paths below its single top folder (if any).

    Absolute paths and `..` are refused: a zip must not write outside the output folder.
    """
    files = [info for info in archive.infolist() if not info.is_dir()]
    paths = [PurePosixPath(info.filename) for info in files]
    for path in paths:
        if path.is_absolute() or ".." in path.parts:
            raise UserError(f"{source}: refusing to unpack unsafe member path {str(path)!r}")
    tops = {path.parts[0] for path in paths if len(path.parts) > 1}
    strip = len(tops) == 1 and all(len(path.parts) > 1 for path in paths)
    return [
        (info, PurePosixPath(*path.parts[1:]) if strip else path)
        for info, path in zip(files, paths, strict=True)
    ]


def download(
    name: str,
    out: str | Path,
    *,
    base_url: str | None = None,
    md5: str | None = None,
    timeout: float = 30.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Download data set `name` (one of `DATASETS`) and unpack it into `out`.

    Returns what was fetched: url, md5, sha256, files. Nothing is written to `out` unless
    the checksum matched and the zip unpacked completely.
    """
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r}; expected one of {', '.join(sorted(DATASETS))}")
    base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    url = base.rstrip("/") + "/" + DATASETS[name]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        expected = md5.lower() if md5 else published_md5(client, url)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.zip-", dir=out.parent)
        os.close(fd)
        zip_path = Path(tmp)
        try:
            got_md5, got_sha = _fetch(client, url, zip_path, progress)
            if got_md5 != expected:
                raise UserError(
                    f"checksum mismatch for {url}: md5 {got_md5}, expected {expected} "
                    f"({'--md5' if md5 else url + '.md5'}); the download is corrupt or altered, "
                    "nothing was written"
                )
            files = _unpack(zip_path, {"url": url, "md5": got_md5, "sha256": got_sha}, out)
        finally:
            zip_path.unlink(missing_ok=True)
    info = {"name": name, "url": url, "md5": got_md5, "sha256": got_sha, "out": str(out)}
    return {**info, "files": files}


def _unpack(zip_path: Path, record: dict[str, str], out: Path) -> list[str]:
    """Unpack into a staging folder that replaces `out` only once every file is written."""
    url = record["url"]
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise UserError(f"{url}: not a valid zip file ({e})") from e
    with archive, atomic_dir(out) as staging:
        names = []
        for info, rel in _members(archive, url):
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, target.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            names.append(str(rel))
        when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        provenance = {**record, "downloaded_at": when}
        (staging / ".download.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return sorted(names)
