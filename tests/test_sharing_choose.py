"""The choice of the share-enforcement mechanism and the MIG match (issue 8, mechanisms 1
and 2): pure functions, table-driven; plus what `gpupool up` detects and prints, with the
NVML probe replaced by a declared MIG layout (no NVIDIA driver on the test machine)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpupool.core.cluster import GpuSpec, NodeSpec
from gpupool.executors.inventory import LocalInventory, MigInstance, mig_profile_name
from gpupool.server.launch_env import mps_thread_percentage
from gpupool.server.sharing import (
    Offer,
    Share,
    SharingModeError,
    check_mode,
    choose,
    detect,
    match_mig,
    startup_lines,
)


def mig(uuid: str, profile: str, memory_mib: int, slices: int, card: int = 0) -> MigInstance:
    return MigInstance(card, f"MIG-{uuid}", profile, memory_mib, slices, 7)


# An A100-80GB partitioned as NVML reports it (instance memory a little below the nominal).
G1A, G1B = mig("1a", "1g.10gb", 9728, 1), mig("1b", "1g.10gb", 9728, 1)
G2 = mig("2a", "2g.20gb", 19968, 2)
G3 = mig("3a", "3g.40gb", 40192, 3)
A100 = (G3, G1B, G2, G1A)  # deliberately not in size order


@pytest.mark.parametrize(
    ("milli", "memory", "in_use", "expected"),
    [
        (100, 8192, (), G1A),  # smallest that holds it; uuid breaks the tie
        (100, 8192, ("MIG-1a",), G1B),  # the first is taken
        (100, 8192, ("MIG-1a", "MIG-1b"), G2),  # rounded up to the next free size
        (142, 9728, (), G1A),  # 142/1000 of 7 slices <= 1 slice, memory exactly the instance's
        (143, 9728, (), G2),  # 143/1000 > 1/7: one slice is not enough compute
        (100, 10240, (), G2),  # a nominal "10 GB" does not fit 1g.10gb's 9,728 MiB
        (250, 20480, (), G3),  # 0.25 of 80 GiB: 20,480 MiB > 2g.20gb's 19,968 MiB
        (0, 19968, (), G2),  # memory-only share
        (250, 0, (), G2),  # compute-only share (no card size known)
        (500, 40960, (), None),  # 0.5: more compute and memory than any instance
        (400, 30000, ("MIG-3a",), None),  # the only fitting instance is in use
        (1000, 0, (), None),
    ],
)
def test_match_mig_takes_the_smallest_free_instance_that_holds_the_share(
    milli: int, memory: int, in_use: tuple[str, ...], expected: MigInstance | None
) -> None:
    assert match_mig(milli, memory, A100, set(in_use)) == expected


def test_match_mig_on_no_instances() -> None:
    assert match_mig(100, 0, (), ()) is None


LIB = "/lib/libgpushare.so"
FULL = Offer("auto", {0: A100}, None, LIB, None)  # card 0 in MIG mode; MPS and interposer
PLAIN = Offer("auto", {}, None, LIB, None)  # MPS and interposer
LIB_ONLY = Offer("auto", {}, "nvidia-cuda-mps-control not found", LIB, None)
NOTHING = Offer("auto", {}, "nvidia-cuda-mps-control not found", None, "no C compiler")
QUARTER = Share((0,), 250, 20480)
TENTH = Share((0,), 100, 8192)
ON_CARD_1 = Share((1,), 250, 20480)


@pytest.mark.parametrize(
    ("share", "offer", "in_use", "failed", "mechanism", "text"),
    [
        (Share((), 0, 0), FULL, (), {}, None, None),
        (Share((0,), 1000, 0), FULL, (), {}, "whole GPU", "whole GPU"),
        (Share((0, 1), 1000, 0), NOTHING, (), {}, "whole GPU", "whole GPU"),
        (TENTH, FULL, (), {}, "mig", "mig 1g.10gb (MIG-1a)"),
        (TENTH, FULL, ("MIG-1a", "MIG-1b", "MIG-2a", "MIG-3a"), {}, "interposer",
         "interposer (mig: no free MIG instance of GPU 0 holds 0.1 of the compute and "
         "8192 MiB)"),
        # card 1 is not partitioned: MPS, with the interposer for a per-job memory limit
        (ON_CARD_1, FULL, (), {}, "mps",
         "mps + interposer (per GPU: 25% of SMs, 20480 MiB per process and per job)"),
        (QUARTER, PLAIN, (), {}, "mps",
         "mps + interposer (per GPU: 25% of SMs, 20480 MiB per process and per job)"),
        (QUARTER, Offer("auto", {}, None, None, "no C compiler"), (), {}, "mps",
         "mps (per GPU: 25% of SMs, 20480 MiB per process)"),
        (Share((0,), 0, 4096, True), Offer("auto", {}, None, None, "x"), (), {}, "mps",
         "mps (per GPU: 4096 MiB per process)"),  # memory only: compute not capped
        (Share((0,), 1000, 4096, True), LIB_ONLY, (), {}, "interposer", "interposer"),
        (QUARTER, PLAIN, (), {0: "daemon failed: exit 1"}, "interposer",
         "interposer (mps: daemon failed: exit 1)"),
        (QUARTER, LIB_ONLY, (), {}, "interposer", "interposer"),  # MPS not offered: no note
        (QUARTER, NOTHING, (), {}, "none",
         "none (interposer unavailable: no C compiler; mps unavailable: "
         "nvidia-cuda-mps-control not found)"),
        (Share((0, 1), 1000, 4096, True), PLAIN, (), {}, "interposer",
         "interposer (mps: one daemon per GPU, the share spans 2 GPUs)"),
        # forced modes
        (QUARTER, Offer("none", {0: A100}, None, LIB, None), (), {}, "none",
         "none (sharing disabled: GPUPOOL_SHARING=none)"),
        (TENTH, Offer("mig", {0: A100}, None, LIB, None), (), {}, "mig",
         "mig 1g.10gb (MIG-1a)"),
        (Share((0,), 500, 40960), Offer("mig", {0: A100}, None, LIB, None), (), {}, "none",
         "none (mig: no free MIG instance of GPU 0 holds 0.5 of the compute and 40960 MiB; "
         "GPUPOOL_SHARING=mig)"),
        (ON_CARD_1, Offer("mig", {0: A100}, None, LIB, None), (), {}, "none",
         "none (mig: GPU 1 is not in MIG mode; GPUPOOL_SHARING=mig)"),
        (TENTH, Offer("mps", {0: A100}, None, LIB, None), (), {}, "none",
         "none (mps: the GPU is in MIG mode; GPUPOOL_SHARING=mps)"),
        (QUARTER, Offer("mps", {}, "not found", LIB, None), (), {}, "none",
         "none (mps unavailable: not found; GPUPOOL_SHARING=mps)"),
        (QUARTER, Offer("mps", {}, None, LIB, None), (), {0: "daemon failed"}, "none",
         "none (mps: daemon failed; GPUPOOL_SHARING=mps)"),
        (TENTH, Offer("interposer", {0: A100}, None, LIB, None), (), {}, "interposer",
         "interposer"),
        (QUARTER, Offer("interposer", {}, None, None, "no C compiler"), (), {}, "none",
         "none (interposer unavailable: no C compiler; GPUPOOL_SHARING=interposer)"),
    ],
)
def test_choose_takes_the_best_mechanism_that_holds_the_share_and_says_why_not_better(
    share: Share, offer: Offer, in_use: tuple[str, ...], failed: dict[int, str],
    mechanism: str | None, text: str | None,
) -> None:
    choice = choose(share, offer, set(in_use), failed)
    assert (choice.mechanism, choice.text) == (mechanism, text)
    assert (choice.instance is not None) == (mechanism == "mig")
    assert choice.with_interposer == (text is not None and text.startswith("mps + "))


def test_enforcement_text_fits_the_column() -> None:
    long_why = "x" * 500
    choice = choose(QUARTER, Offer("auto", {}, long_why, None, long_why))
    assert choice.text is not None and len(choice.text) == 200 and choice.text.endswith("…)")


@pytest.mark.parametrize(
    ("offer", "offered"),
    [
        (FULL, ["mig", "mps", "interposer"]),
        (PLAIN, ["mps", "interposer"]),
        (LIB_ONLY, ["interposer"]),
        (NOTHING, []),
        (Offer("mps", {0: A100}, None, LIB, None), ["mps"]),
        (Offer("none", {0: A100}, None, LIB, None), []),
    ],
)
def test_offer_lists_what_the_node_offers_best_first(offer: Offer, offered: list[str]) -> None:
    assert offer.mechanisms() == offered


@pytest.mark.parametrize(("raw", "mode"), [("", "auto"), (" MPS ", "mps"), ("none", "none")])
def test_sharing_mode_is_normalised(raw: str, mode: str) -> None:
    assert check_mode(raw) == mode


def test_a_bad_sharing_mode_names_the_choices() -> None:
    with pytest.raises(SharingModeError, match="auto, mig, mps, interposer, none"):
        check_mode("hami")


@pytest.mark.parametrize(
    ("milli", "percentage"), [(0, None), (1, 1), (250, 25), (994, 99), (999, 99), (1000, None)]
)
def test_mps_thread_percentage(milli: int, percentage: int | None) -> None:
    assert mps_thread_percentage(milli) == percentage


@pytest.mark.parametrize(
    ("name", "profile"),
    [("NVIDIA A100-SXM4-80GB MIG 1g.10gb", "1g.10gb"), ("NVIDIA H100 MIG 3g.40gb", "3g.40gb"),
     ("A100", "2g.19gb")],
)
def test_mig_profile_name(name: str, profile: str) -> None:
    assert mig_profile_name(name, 2, 19968) == profile


def inventory(source: str) -> LocalInventory:
    gpus = (GpuSpec("A100", 81920),) * 2 if source != "none" else ()
    return LocalInventory((NodeSpec("n", 8000, 64000, gpus),), {"n": (0, 1)}, source)


def control_binary(tmp_path: Path) -> str:
    path = tmp_path / "nvidia-cuda-mps-control"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def test_detect_on_real_gpus_offers_mig_mps_and_the_interposer(tmp_path: Path) -> None:
    sharing = detect("auto", inventory("nvml"), tmp_path, (True, LIB), control_binary(tmp_path),
                     mig_probe=lambda: {0: A100})
    assert sharing.offer.mechanisms() == ["mig", "mps", "interposer"]
    assert sharing.daemons is not None and sharing.daemons.base_dir == tmp_path / "mps"
    lines = startup_lines(sharing)
    assert lines[0] == "GPU sharing (auto): mig, mps, interposer offered"
    assert "  mig on GPU 0: 3g.40gb, 1g.10gb, 2g.20gb, 1g.10gb" in lines
    assert f"GPU shares enforced by the interposer {LIB}" in lines


def test_detect_does_not_offer_mps_on_fake_gpus_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    control = control_binary(tmp_path)
    probed: list[bool] = []

    def probe() -> dict[int, tuple[MigInstance, ...]]:
        probed.append(True)
        return {0: A100}

    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ.get('PATH', '')}")
    auto = detect("auto", inventory("fake"), tmp_path, (True, LIB), mig_probe=probe)
    assert auto.offer.mechanisms() == ["interposer"] and auto.daemons is None
    assert "fake GPUs" in str(auto.offer.mps_why) and not probed  # no NVML for fake GPUs
    forced = detect("mps", inventory("fake"), tmp_path, (True, LIB))
    assert forced.offer.mechanisms() == ["mps"] and forced.daemons is not None
    assert forced.daemons.control == control  # found on PATH
    configured = detect("auto", inventory("fake"), tmp_path, (True, LIB), control)
    assert configured.offer.mechanisms() == ["mps", "interposer"]


@pytest.mark.parametrize(
    ("control", "why"),
    [("/nonexistent/mps-control", "is not an executable file"), ("", "not found on PATH")],
)
def test_detect_says_why_mps_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, control: str, why: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-cuda-mps-control there
    sharing = detect("auto", inventory("nvml"), tmp_path, (False, "no C compiler"), control,
                     mig_probe=dict)
    assert why in str(sharing.offer.mps_why)
    lines = startup_lines(sharing)
    assert lines[0] == "GPU sharing (auto): nothing offered"
    assert any(line.startswith("  mps unavailable: ") and why in line for line in lines)
    assert lines[-1] == "GPU shares NOT enforced (interposer unavailable: no C compiler)"


def test_detect_on_ray_offers_nothing_yet(tmp_path: Path) -> None:
    sharing = detect("auto", inventory("nvml"), tmp_path, (True, LIB), control_binary(tmp_path),
                     "Ray", mig_probe=lambda: {0: A100})
    assert sharing.offer.mechanisms() == []
    assert sharing.offer.mps_why == "not deployed to Ray nodes yet"
