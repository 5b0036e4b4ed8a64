"""Names the CLI shows in its help and offers in shell completion, kept here so that building
the help does not import what defines them: the placement policies live in
``gpupool.plugins.profiles``, which imports numpy and the scheduling core.
``tests/test_cli_fast.py`` checks that these tuples equal the real ones."""

from __future__ import annotations

from collections.abc import Callable

POLICIES = ("random", "dotprod", "clustering", "packing", "bestfit", "fgd", "binpack", "spread",
            "gpupool")
"""Every placement policy, as ``gpupool.plugins.profiles.POLICIES`` (same order)."""

STUDY_VARIANTS = ("gpupool-file", "gpupool-place-all")
"""``gpupool.plugins.profiles.STUDY_VARIANTS``: policies of the simulator's studies only."""

FGD_STUDY_POLICIES = ("random", "dotprod", "clustering", "packing", "bestfit", "fgd")
"""``gpupool.plugins.profiles.FGD_STUDY_POLICIES``: the six policies of the FGD paper."""

QUEUE_ORDERS = ("fifo", "fairshare")
"""``gpupool.server.settings.QUEUE_ORDERS``: how ``gpupool up --queue-order`` orders queues."""


def completer(names: tuple[str, ...]) -> Callable[[str], list[str]]:
    """A Typer ``autocompletion`` callback offering the ``names`` that start with what is
    typed."""

    def complete(incomplete: str) -> list[str]:
        return [name for name in names if name.startswith(incomplete)]

    return complete
