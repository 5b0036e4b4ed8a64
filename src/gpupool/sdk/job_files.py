"""The files that travel with jobs, over the wire: a code archive up (``PUT /code/{digest}``
unless the team has it), one attempt's artifacts down (``GET /jobs/{id}/artifacts/{n}``).
Raw bytes, not models: the blocking client's ``upload_code`` and ``download_artifacts``
call these with its httpx client; transport errors pass through to it."""

from __future__ import annotations

from pathlib import Path

import httpx

from gpupool.sdk import _wire as wire
from gpupool.sdk import code_pack
from gpupool.sdk.code_pack import CodeUpload
from gpupool.sdk.errors import ApiError

LONG_S = 300.0
"""The least time a transfer of a whole archive is given."""


def upload(http: httpx.Client, folder: str | Path, limit_mib: int,
           timeout: float) -> CodeUpload:
    """See ``Client.upload_code``."""
    found = code_pack.listing(folder, limit_mib)
    before = code_pack.known(found)  # the same tree as a pack before: no packing
    if before is not None and http.head(f"{wire.API}/code/{before[0]}").status_code == 200:
        return CodeUpload(before[0], before[1], before[2], False)
    packed = code_pack.pack(found, limit_mib)
    path = f"{wire.API}/code/{packed.digest}"
    seen = http.head(path)
    if seen.status_code == 200:
        code_pack.remember(found, packed)
        return CodeUpload(packed.digest, packed.files, len(packed.data), False)
    if seen.status_code != 404:
        raise ApiError(seen.status_code, wire.error_message(seen))
    sent = http.put(path, content=packed.data, headers={"Content-Type": "application/gzip"},
                    timeout=max(timeout, LONG_S))
    if sent.status_code not in (200, 201):
        raise ApiError(sent.status_code, wire.error_message(sent))
    code_pack.remember(found, packed)
    return CodeUpload(packed.digest, packed.files, len(packed.data), sent.status_code == 201)


def download(http: httpx.Client, job: str, attempt: int, to: str | Path,
             timeout: float) -> Path:
    """Save the attempt's artifacts archive at ``to`` (a folder: a file named after the job
    and attempt in it); the path. ApiError when the server refuses."""
    target = Path(to)
    if target.is_dir():
        target = target / f"job-{job}-attempt-{attempt}-artifacts.tar.gz"
    with http.stream("GET", f"{wire.API}/jobs/{job}/artifacts/{attempt}",
                     timeout=max(timeout, LONG_S)) as answer:
        if answer.status_code != 200:
            answer.read()
            raise ApiError(answer.status_code, wire.error_message(answer))
        with open(target, "wb") as out:
            for chunk in answer.iter_bytes():
                out.write(chunk)
    return target
