"""From a placement to a running attempt on this machine: the process environment, how the
GPU share is enforced, the run directory, and the executor call; and, after a restart, what
became of attempts that may have been launched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpupool.core.cluster import Allocation, ClusterState
from gpupool.executors import accounts
from gpupool.executors.accounts import Account, AccountError
from gpupool.executors.base import Executor, Handle, LaunchError, LaunchSpec
from gpupool.executors.inventory import LocalInventory
from gpupool.interposer import job_env, sharefile
from gpupool.schemas.jobs import JobSpec, Kind
from gpupool.server.dist_env import distributed_env
from gpupool.server.launch_env import launch_env
from gpupool.server.notebook_launch import (
    Endpoint,
    jupyter_command,
    jupyter_env,
    make_env_dir,
)
from gpupool.server.replica_launch import make_socket_dir, replica_command, socket_dir
from gpupool.server.services import code_store
from gpupool.server.sharing.choose import MIG, MPS, Choice, Offer, Share, choose
from gpupool.server.sharing.mps import MpsError
from gpupool.server.sharing.setup import Sharing
from gpupool.server.workspace import Workspace

log = logging.getLogger("gpupool.launcher")

SHARE_FILE = "gpushare"
"""The interposer's share file (the job's ledger), in the attempt's share dir."""
LIMIT_FILE = "limit"
"""The per-GPU limit the job can read but not change, beside the share file."""
MIG_CLAIMS = "mig-instances"
"""The MIG instances (uuid per line) an attempt holds on this machine, in its run dir."""
INTERPOSER = "interposer"
WHOLE_GPU = "whole GPU"


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose attempt it is: the gpupool user and the Unix account it runs as (None: the
    server's own); ``created``: gpupool created that account (nodes create it if missing)."""

    name: str = ""
    unix_user: str | None = None
    created: bool = False


class Launcher:
    """Starts attempts under ``runs_dir/<job>/<attempt>`` (log: ``runs_dir/<job>/log``).

    ``sharing``: what the machine offers for enforcing GPU shares (MIG, MPS, interposer;
    server/sharing). Without it, only the interposer: ``interposer`` is the path of
    ``libgpushare.so``, else None and ``interposer_missing`` says why not.
    """

    def __init__(
        self,
        runs_dir: Path,
        executor: Executor,
        inventory: LocalInventory,
        state: ClusterState,
        interposer: str | None = None,
        interposer_missing: str = "not built",
        sharing: Sharing | None = None,
        workspace: Workspace | None = None,
    ) -> None:
        self.runs_dir = runs_dir
        self.workspace = workspace or Workspace(runs_dir.parent / "work")
        self.executor = executor
        self.inventory = inventory
        self.state = state
        missing = " ".join(interposer_missing.split()) or "unknown reason"
        self.sharing = sharing or Sharing(Offer(
            "auto", {}, "not configured", interposer, None if interposer else missing))
        self._mps_failed: dict[int, str] = {}
        """Cards whose MPS daemon could not start (until the server restarts), and why."""
        self._mig_claims: dict[str, tuple[int, int]] = self._load_mig_claims()
        """MIG instance uuid → (job, attempt) holding it."""
        self.notebook_secret: Callable[[int, int], str] | None = None
        """(job, attempt) → the secret its Jupyter requires (set by the server: derived
        from the gateway's key); None: notebooks cannot start."""
        self.image_auth: Callable[[int, Path], str | None] = lambda _job, _folder: None
        """(job, folder) → the path of the registry auth file for the job's image, written in
        ``folder`` (set by the server: its team's logins); None: no login."""
        self.endpoints: dict[tuple[int, int], Endpoint] = {}
        """Where the notebooks launched and not yet recorded listen, by (job, attempt)."""
        self._mps_clients: dict[tuple[int, int], tuple[int, int]] = {}
        """(job, attempt) → (card, uid) of attempts that are MPS clients: one card's MPS
        serves one account at a time (its server runs as that user; other users' clients
        wait), so a share of another account on that card uses the interposer instead."""

    @property
    def mechanisms(self) -> list[str]:
        """The share-enforcement mechanisms this machine's nodes offer, best first."""
        return self.sharing.offer.mechanisms()

    def close(self) -> None:
        """The server stops: stop the MPS daemons it started (running jobs keep theirs until
        they end: a daemon told to quit waits for its clients)."""
        self.sharing.close()

    def run_dir(self, job_id: int, attempt: int) -> Path:
        return self.runs_dir / str(job_id) / str(attempt)

    def process_run_dir(self, job_id: int, attempt: int, rank: int | None) -> Path:
        """A process's run dir: the attempt's, or ``rank<N>`` under it for multi-node jobs."""
        run_dir = self.run_dir(job_id, attempt)
        return run_dir if rank is None else run_dir / f"rank{rank}"

    def lookup_specs(
        self, job_id: int, attempt: int, nodes: list[str], procs_per_node: int
    ) -> list[LaunchSpec]:
        """What identifies each process of an attempt (rank order), for lookups after a
        restart (the command and environment are not needed there)."""
        gang = len(nodes) > 1 or procs_per_node > 1  # as ``start`` decides
        specs = []
        for node_rank, node in enumerate(nodes):
            for local in range(procs_per_node if gang else 1):
                rank = node_rank * procs_per_node + local if gang else None
                specs.append(LaunchSpec(
                    job_id=str(job_id), attempt=attempt, command=["-"],
                    log_path=self.log_path(job_id),
                    run_dir=str(self.process_run_dir(job_id, attempt, rank)), node=node))
        return specs

    def start(
        self, job_id: int, name: str, attempt: int, queue: str,
        allocations: tuple[Allocation, ...], spec: JobSpec, owner: Owner | None = None,
    ) -> tuple[list[Handle], str | None]:
        """Launch every process of the attempt (one per node rank and local rank) as
        ``owner``'s account; return their handles (rank order) and the enforcement to record
        on the job. On any failure the processes already started are killed, the share files
        released, and the exception propagates."""
        owner = owner or Owner()
        handles: list[Handle] = []
        enforcement: str | None = None
        try:
            # Several nodes, or several processes on one: every process gets the distributed
            # env (ranks, world size, rendezvous), as torchrun would give it.
            multi = len(allocations) > 1 or spec.procs_per_node > 1
            dist = self._rendezvous(allocations) if multi else None
            auth = (self.image_auth(job_id, self.run_dir(job_id, attempt)) or ""
                    if spec.image else "")
            for node_rank, alloc in enumerate(allocations):
                node_name = self.state.names[alloc.node]
                physical = self.inventory.physical_gpus.get(node_name, ())
                gpus = [physical[g] if g < len(physical) else g for g in alloc.gpus]
                node_spec = self.state.specs[alloc.node]
                base = launch_env(job_id, name, attempt, queue, gpus,
                                  [node_spec.gpus[g] for g in alloc.gpus], alloc.gpu_milli,
                                  alloc.gpu_memory_mib, spec.env)
                share_limit: int | None = None
                visible: tuple[str, ...] = ()
                if node_name in self.inventory.node_interposer:
                    enforcement, share_limit = self._enforce_on_node(node_name, alloc, base)
                else:
                    account = self._account(owner)
                    enforcement = self._enforce(job_id, attempt, alloc, base, spec.env, gpus,
                                                account)
                    if self.workspace.share_dir(job_id, attempt).is_dir():
                        visible = (str(self.workspace.share_dir(job_id, attempt)),)
                command, workdir = list(spec.command), spec.workdir
                if spec.kind == Kind.NOTEBOOK:
                    command, workdir, visible = self._notebook(
                        job_id, attempt, node_name, owner, base, visible)
                elif spec.kind == Kind.SERVICE:
                    command, visible = self._replica(job_id, attempt, node_name, owner,
                                                     command, base, visible)
                procs = spec.procs_per_node if dist is not None else 1
                for local_rank in range(procs):
                    env = dict(base)
                    if dist is not None:
                        env.update(distributed_env(dist[0], dist[1], len(allocations),
                                                   node_rank, procs, local_rank, len(gpus)))
                    rank = node_rank * procs + local_rank if dist is not None else None
                    run_dir = self.process_run_dir(job_id, attempt, rank)
                    launch = LaunchSpec(job_id=str(job_id), attempt=attempt,
                                        command=command, env=env,
                                        workdir=workdir, log_path=self.log_path(job_id),
                                        run_dir=str(run_dir), node=node_name,
                                        share_limit_mib=share_limit,
                                        run_as=owner.unix_user,
                                        owner=owner.name if owner.created else "",
                                        job_dir=str(self.workspace.job_dir(job_id, attempt,
                                                                           rank)),
                                        gpu_devices=tuple(g for g in gpus
                                                          if isinstance(g, int)),
                                        readable=visible,
                                        image=spec.image or "", image_auth=auth,
                                        code_archive=str(code_store.archive_path(
                                            self.runs_dir.parent, spec.code))
                                        if spec.code else "",
                                        private_network=spec.kind == Kind.SERVICE)
                    handles.append(self.executor.launch(launch))
            return handles, enforcement
        except BaseException:
            for handle in handles:
                self.executor.kill(handle)
            self.drop_share_file(job_id, attempt)
            self.endpoints.pop((job_id, attempt), None)
            raise

    def env_dir(self, job_id: int) -> Path:
        """A notebook's own directory on this machine (kept across its attempts)."""
        return self.workspace.env_dir(job_id)

    def _notebook(
        self, job_id: int, attempt: int, node: str, owner: Owner, env: dict[str, str],
        visible: tuple[str, ...],
    ) -> tuple[list[str], str | None, tuple[str, ...]]:
        """A notebook's command, working directory and extra paths to show: JupyterLab on a
        port of its node, in its own directory (this machine's nodes) or the attempt's
        (nodes of other machines: not kept across attempts yet); ``env`` gets Jupyter's
        variables and the secret."""
        if self.notebook_secret is None:
            raise LaunchError("notebooks need the gateway (this server was built without it)")
        endpoint = Endpoint(self.executor.node_address(node), self.executor.free_port(node))
        if node in self.inventory.node_interposer:
            # a node of its own (Ray): no directory kept there yet; the attempt's own (its
            # node's agent chooses where: the working directory it starts in)
            root = "."
        else:
            try:
                root = make_env_dir(self.env_dir(job_id), self._account(owner))
            except OSError as exc:
                raise LaunchError(f"cannot prepare the notebook's directory: {exc}") from None
            visible = (*visible, root)
        env.update(jupyter_env(root, self.notebook_secret(job_id, attempt)))
        self.endpoints[(job_id, attempt)] = endpoint
        command = jupyter_command(self.workspace.python, job_id, endpoint, root)
        return command, (root if root != "." else None), visible

    def _replica(
        self, job_id: int, attempt: int, node: str, owner: Owner, command: list[str],
        env: dict[str, str], visible: tuple[str, ...],
    ) -> tuple[list[str], tuple[str, ...]]:
        """A service replica's command (the front before the service's own) and the paths
        to show (its socket's directory); ``env`` gets ``PORT``. See ``replica_launch``."""
        if node in self.inventory.node_interposer:
            raise LaunchError("services' replicas run on the server's own nodes for now "
                              f"(the gateway cannot reach a replica on {node})")
        port = self.executor.free_port(node)
        where = socket_dir(self.workspace.root, job_id, attempt)
        try:
            socket = make_socket_dir(where, self._account(owner))
        except OSError as exc:
            raise LaunchError(f"cannot prepare the replica's socket directory: {exc}") from None
        env["PORT"] = str(port)
        self.endpoints[(job_id, attempt)] = Endpoint(self.executor.node_address(node), port,
                                                     socket)
        return (replica_command(self.workspace.python, socket, port, command),
                (*visible, str(where)))

    def _rendezvous(self, allocations: tuple[Allocation, ...]) -> tuple[str, int]:
        """MASTER_ADDR and a MASTER_PORT free on rank 0's node."""
        master = self.state.names[allocations[0].node]
        return self.executor.node_address(master), self.executor.free_port(master)

    def log_path(self, job_id: int) -> str:
        return str(self.runs_dir / str(job_id) / "log")

    def _account(self, owner: Owner) -> Account | None:
        """The account an attempt on this machine runs as (None: the server's own)."""
        try:
            return accounts.resolve(owner.unix_user, owner.name, owner.created)
        except AccountError as exc:
            raise LaunchError(str(exc)) from None

    def _enforce(
        self, job_id: int, attempt: int, alloc: Allocation, env: dict[str, str],
        user_env: dict[str, str], cards: list[int], account: Account | None = None,
    ) -> str | None:
        """Enforce the attempt's GPU share on one node with the best mechanism that holds it
        (sharing/choose.py) and return the text to record on the job; add the mechanism's
        variables to ``env``. MIG: claim the instance and select it by uuid. MPS: make sure
        the card's daemon runs (if it cannot start: log, remember, and choose again without
        it). Interposer (also under MPS, for a per-job memory limit): the share file."""
        limit = int(env.get("GPUPOOL_GPU_MEMORY_LIMIT_MIB", "0") or 0)
        share = Share(tuple(cards), alloc.gpu_milli, limit, bool(alloc.gpu_memory_mib))
        uid = account.uid if account is not None else os.geteuid()
        excluded = {card: "its MPS serves another account now" for (card, other)
                    in self._mps_clients.values() if other != uid}
        choice = self._choose(share, excluded)
        daemons = self.sharing.daemons
        if choice.mechanism == MPS and daemons is not None:
            card = cards[0]
            try:
                daemons.ensure(card)
            except MpsError as exc:
                log.warning("job %s: MPS unavailable on GPU %d, falling back: %s",
                            job_id, card, exc)
                self._mps_failed[card] = f"daemon failed: {exc}"
                choice = self._choose(share, excluded)
            else:
                env.update(daemons.client_env(card))
                self._mps_clients[(job_id, attempt)] = (card, uid)
        if choice.mechanism == MIG and choice.instance is not None:
            self._claim_mig(job_id, attempt, choice.instance.uuid)
            env["CUDA_VISIBLE_DEVICES"] = env["NVIDIA_VISIBLE_DEVICES"] = choice.instance.uuid
        if choice.mechanism == INTERPOSER or choice.with_interposer:
            library = self.sharing.offer.interposer
            assert library is not None  # choose() only picks it when offered
            folder = self.workspace.new_share_dir(job_id, attempt)
            path = sharefile.create(folder / SHARE_FILE, limit_mib=limit)
            if account is not None:  # the ledger is the job's to write, the limit is not
                os.chown(path, account.uid, account.gid)
            limit_file = sharefile.write_limit(folder / LIMIT_FILE, limit)
            env.update(job_env(library, path, user_env.get("LD_PRELOAD"), limit_file))
            if choice.with_interposer:
                env["GPUPOOL_LAUNCH_COST_US"] = "0"  # MPS holds the compute share
        return choice.text

    def _enforce_on_node(
        self, node: str, alloc: Allocation, env: dict[str, str]
    ) -> tuple[str | None, int | None]:
        """For nodes that enforce shares themselves (Ray agents): the text to record and the
        memory limit to hand to the node's interposer (None: nothing for the node to do)."""
        if not alloc.gpus:
            return None, None
        if alloc.gpu_milli >= 1000 and not alloc.gpu_memory_mib:
            return WHOLE_GPU, None
        missing = self.inventory.node_interposer[node]
        if missing is not None:
            text = f"none (interposer unavailable on {node}: {' '.join(missing.split())})"
            return (text if len(text) <= 200 else text[:198] + "…)"), None
        return INTERPOSER, int(env.get("GPUPOOL_GPU_MEMORY_LIMIT_MIB", "0") or 0)

    def node_mechanisms(self, node: str) -> list[str]:
        """What ``node`` offers for enforcing shares (its own, on pools like Ray)."""
        if node in self.inventory.node_interposer:
            return [] if self.inventory.node_interposer[node] is not None else [INTERPOSER]
        return self.mechanisms

    def _choose(self, share: Share, excluded: dict[int, str] | None = None) -> Choice:
        return choose(share, self.sharing.offer, self._mig_claims.keys(),
                      {**self._mps_failed, **(excluded or {})})

    def share_file(self, job_id: int, attempt: int) -> Path:
        return self.workspace.share_dir(job_id, attempt) / SHARE_FILE

    def drop_share_file(self, job_id: int, attempt: int) -> None:
        """Release what the attempt holds for its share: the interposer's accounting (its
        share file) and its MIG instances. No-op when it holds neither; call it once the
        attempt's processes are gone, whatever the outcome."""
        self._mps_clients.pop((job_id, attempt), None)
        try:
            sharefile.remove(self.share_file(job_id, attempt))
            self.workspace.drop_share_dir(job_id, attempt)
        except OSError:
            log.warning("job %s: cannot remove its share file", job_id, exc_info=True)
        for uuid in [u for u, held in self._mig_claims.items() if held == (job_id, attempt)]:
            del self._mig_claims[uuid]
        try:
            (self.run_dir(job_id, attempt) / MIG_CLAIMS).unlink(missing_ok=True)
        except OSError:
            log.warning("job %s: cannot remove its MIG claims", job_id, exc_info=True)

    release = drop_share_file

    def mig_in_use(self) -> dict[str, tuple[int, int]]:
        """MIG instance uuid → (job, attempt) for every instance held now."""
        return dict(self._mig_claims)

    def _claim_mig(self, job_id: int, attempt: int, uuid: str) -> None:
        """Hold the instance for the attempt; written to its run dir first, so that a server
        restart knows it is taken (see :meth:`_load_mig_claims`)."""
        path = self.run_dir(job_id, attempt) / MIG_CLAIMS
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(uuid + "\n")
        self._mig_claims[uuid] = (job_id, attempt)

    def _load_mig_claims(self) -> dict[str, tuple[int, int]]:
        """The claims left in run dirs by attempts that have not been released (a claims file
        is deleted on release, so those are attempts still running or not yet recovered)."""
        claims: dict[str, tuple[int, int]] = {}
        if not self.sharing.offer.mig:  # no MIG card: nothing to scan the run dirs for
            return claims
        for path in self.runs_dir.glob(f"*/*/{MIG_CLAIMS}"):
            try:
                held = (int(path.parent.parent.name), int(path.parent.name))
                for uuid in path.read_text().split():
                    claims[uuid] = held
            except (OSError, ValueError):
                log.warning("ignoring unreadable MIG claims %s", path)
        return claims

    def find_handles(
        self, job_id: int, attempt: int, nodes: list[str], procs_per_node: int
    ) -> list[Handle | None]:
        """Per process (rank order), the handle of an attempt launched just before a crash,
        or None where that process was never launched (then :meth:`abandon` the attempt)."""
        return [self.executor.find_handle(spec)
                for spec in self.lookup_specs(job_id, attempt, nodes, procs_per_node)]

    def abandon(
        self, job_id: int, attempt: int, nodes: list[str], procs_per_node: int,
        found: list[Handle | None] | None = None,
    ) -> None:
        """Make sure no process of an attempt that was not wholly found runs its command:
        never-found processes are abandoned, found ones killed."""
        for spec in self.lookup_specs(job_id, attempt, nodes, procs_per_node):
            self.executor.abandon(spec)
        for handle in found or ():
            if handle is not None:
                self.executor.kill(handle)
