"""GPU acceptance, discovery section: what ``gpupool nodes --json`` shows of this machine's
GPUs (model, memory, MIG mode, NVLink peers) against what NVML and ``nvidia-smi`` say when
read directly, not through gpupool.

With ``--fake-gpus`` (a dry run) the API is compared with the declaration instead, and the
direct readings are reported for what they are (usually: no NVML here).

The API has no MIG or NVLink field per GPU: MIG mode shows as the node's ``mig`` mechanism
(offered iff a card is in MIG mode), and NVLink peers, when NVML sees any, are reported as not
shown.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from typing import Any

from gpu_check_common import held, pool
from gpupool.executors.inventory import parse_fake_gpus

SMI_FIELDS = "index,name,memory.total,mig.mode.current,pci.bus_id"


def model_name(raw: str) -> str:
    """A model as gpupool names it: NVML's name without ``NVIDIA `` and with dashes for
    spaces (``NVIDIA H200`` → ``H200``)."""
    return raw.replace("NVIDIA ", "").strip().replace(" ", "-")


def nvml_direct() -> tuple[list[dict[str, Any]], str | None]:
    """Each card as NVML reports it (index, name, memory_mib, mig, bus_id, nvlink_peers),
    and None; or ``([], why)`` without NVML."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py (pynvml) not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], f"NVML: {exc}"
    try:
        cards = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            card: dict[str, Any] = {
                "index": i, "name": name.decode() if isinstance(name, bytes) else str(name),
                "memory_mib": int(pynvml.nvmlDeviceGetMemoryInfo(h).total // 2**20),
                "bus_id": _text(pynvml.nvmlDeviceGetPciInfo(h).busId).lower(),
                "mig": _mig(pynvml, h), "links": _links(pynvml, h)}
            cards.append(card)
        by_bus = {c["bus_id"][-12:]: c["index"] for c in cards}
        for c in cards:
            c["nvlink_peers"] = sorted({by_bus[b[-12:]] for b in c.pop("links")
                                        if b[-12:] in by_bus and by_bus[b[-12:]] != c["index"]})
        return cards, None
    finally:
        pynvml.nvmlShutdown()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _mig(pynvml: Any, handle: Any) -> bool | None:
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError:
        return None  # not supported on this card
    return bool(current == pynvml.NVML_DEVICE_MIG_ENABLE)


def _links(pynvml: Any, handle: Any) -> list[str]:
    """The PCI bus ids at the far end of the card's active NVLinks."""
    found = []
    for link in range(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18)):
        try:
            if pynvml.nvmlDeviceGetNvLinkState(handle, link) != pynvml.NVML_FEATURE_ENABLED:
                continue
            found.append(_text(pynvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link).busId)
                         .lower())
        except pynvml.NVMLError:
            continue
    return found


def smi_direct() -> tuple[list[dict[str, str]], str | None]:
    """``nvidia-smi --query-gpu`` rows, or ``([], why)``."""
    if not shutil.which("nvidia-smi"):
        return [], "nvidia-smi not on PATH"
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={SMI_FIELDS}",
                               "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [], f"nvidia-smi: {exc}"
    if done.returncode != 0:
        return [], f"nvidia-smi exited {done.returncode}: {done.stdout.strip()[:200]}"
    keys = SMI_FIELDS.split(",")
    return [dict(zip(keys, (v.strip() for v in line.split(",")), strict=False))
            for line in done.stdout.splitlines() if line.strip()], None


def cli_nodes(env: dict[str, str]) -> tuple[list[dict[str, Any]], str | None]:
    """``gpupool nodes --json`` against the server in ``env``; ``([], why)`` on failure."""
    done = subprocess.run([sys.executable, "-m", "gpupool.cli.main", "nodes", "--json"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        return [], f"exit {done.returncode}: {(done.stderr or done.stdout)[-300:]}"
    try:
        return list(json.loads(done.stdout)), None
    except ValueError as exc:
        return [], f"not JSON ({exc}): {done.stdout[:200]}"


def run(fake_gpus: str) -> dict[str, Any]:
    nvml, nvml_why = nvml_direct()
    smi, smi_why = smi_direct()
    with pool(fake_gpus) as p:
        nodes, cli_why = cli_nodes(p.server.env)
    found: dict[str, Any] = {"fake_gpus": fake_gpus or None, "nodes": nodes, "nvml": nvml,
                             "nvml_why": nvml_why, "nvidia_smi": smi, "nvidia_smi_why": smi_why}
    found["checks"] = verdict(fake_gpus, nodes, cli_why, nvml, nvml_why, smi, smi_why)
    return found


def verdict(fake_gpus: str, nodes: list[dict[str, Any]], cli_why: str | None,
            nvml: list[dict[str, Any]], nvml_why: str | None, smi: list[dict[str, str]],
            smi_why: str | None) -> dict[str, str]:
    """Per check: "held…", "failed: why" or "skipped: why" (see the module)."""
    out: dict[str, str] = {}
    if cli_why is not None:
        return {"gpupool nodes --json": f"failed: {cli_why}"}
    api = [g for n in nodes for g in n["gpus"]]
    sources = sorted({n["source"] for n in nodes})
    mechanisms = sorted({m for n in nodes for m in n.get("mechanisms", [])})
    out["gpupool nodes --json"] = (f"held: {len(nodes)} node(s), {len(api)} GPU(s), source "
                                   f"{'/'.join(sources)}, mechanisms {mechanisms}")
    if fake_gpus:
        want = [{"model": g.model, "memory_mib": g.memory_mib} for g in parse_fake_gpus(fake_gpus)]
        out["source"] = held(sources == ["fake"], f"source {sources} for declared fake GPUs")
        basis = "the declaration"
    elif nvml_why is not None:
        out["source"] = held(sources == ["nvml"], f"source {sources}; NVML here: {nvml_why}")
        return out | {"matches NVML": f"skipped: {nvml_why}"}
    else:
        want = [{"model": model_name(c["name"]), "memory_mib": c["memory_mib"]} for c in nvml]
        out["source"] = held(sources == ["nvml"], f"source {sources}")
        basis = "NVML"
    got = [{"model": g["model"], "memory_mib": g["memory_mib"]} for g in api]
    out["GPU count"] = held(len(got) == len(want), f"{len(got)} shown, {len(want)} by {basis}")
    out["model"] = held([g["model"] for g in got] == [w["model"] for w in want],
                        f"shown {[g['model'] for g in got]}, {basis} {[w['model'] for w in want]}")
    out["memory"] = held(all(abs(g["memory_mib"] - w["memory_mib"]) <= 1
                             for g, w in zip(got, want, strict=False)) and len(got) == len(want),
                         f"shown {[g['memory_mib'] for g in got]} MiB, {basis} "
                         f"{[w['memory_mib'] for w in want]} MiB")
    if fake_gpus:
        out["MIG mode"] = "skipped: fake GPUs have no MIG mode"
        out["NVLink peers"] = "skipped: fake GPUs have no NVLink"
    else:
        out["MIG mode"] = _mig_check(nvml, mechanisms)
        out["NVLink peers"] = _nvlink_check(nvml)
    out["nvidia-smi agrees with NVML"] = _smi_check(smi, smi_why, nvml)
    return out


def _mig_check(nvml: list[dict[str, Any]], mechanisms: list[str]) -> str:
    on = [c["index"] for c in nvml if c["mig"]]
    if on:
        return held("mig" in mechanisms, f"NVML: MIG on for GPU {on}; API mechanisms "
                    f"{mechanisms}")
    return held("mig" not in mechanisms, f"NVML: MIG off on every card "
                f"({[c['mig'] for c in nvml]}); API mechanisms {mechanisms}")


def _nvlink_check(nvml: list[dict[str, Any]]) -> str:
    peers = {c["index"]: c["nvlink_peers"] for c in nvml if c["nvlink_peers"]}
    if not peers:
        return f"skipped: NVML sees no NVLink peer ({len(nvml)} GPU(s)): nothing to show"
    return f"failed: NVML sees NVLink peers {peers}; gpupool nodes has no field for them"


def _smi_check(smi: list[dict[str, str]], why: str | None, nvml: list[dict[str, Any]]) -> str:
    if why is not None:
        return f"skipped: {why}"
    if not nvml:
        return f"skipped: nothing read through NVML to compare ({len(smi)} row(s) from smi)"
    rows = [(r.get("name", ""), int(float(r.get("memory.total", "0") or 0))) for r in smi]
    mine = [(c["name"], c["memory_mib"]) for c in nvml]
    same = len(rows) == len(mine) and all(
        a[0] == b[0] and abs(a[1] - b[1]) <= max(1, b[1] // 100)
        for a, b in zip(rows, mine, strict=False))
    return held(same, f"nvidia-smi {rows}, NVML {mine}")
