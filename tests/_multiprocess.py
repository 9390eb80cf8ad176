"""Run a test's worker function in N fresh processes under ``torch.distributed``.

``run_workers(fn, args, world_size=2, tmp_path=tmp_path)`` starts ``world_size`` fresh
interpreters (``subprocess``, nothing forked from pytest), each calling
``fn(rank, world_size, *args)`` inside an initialised default process group, and returns
the ranks' return values in rank order. Made to be boring under load:

* Rendezvous through a ``FileStore`` in a fresh folder under ``tmp_path``: no ports,
  so no race for a free one.
* A hard timeout for the whole run (also the process group's timeout). When it passes,
  or as soon as one rank fails, the others are killed (a Python stack of each hung rank
  is written to its log first) and the test fails naming the ranks that did not finish,
  their exit codes and the tail of their logs.
* Results come back through files (``torch.save``, then ``torch.load(weights_only=True)``),
  written atomically and read only for a rank that exited 0: return tensors, numbers,
  strings and lists/tuples/dicts of them.
* Teardown: ``dist.barrier()``, ``dist.destroy_process_group()``, flush, then
  ``os._exit(0)`` so that no C++ static destructor (gloo's threads) can abort a finished
  rank at interpreter exit. An exception in ``fn`` is written with its traceback to a
  file, the rank leaves with ``os._exit(1)`` and the parent raises with that traceback.
* Children read stdin from ``/dev/null`` and write stdout/stderr (the C++ side
  included) to per-rank log files, never to pytest's capture.

``fn`` must be importable by name (a module-level function of a test module).

``run_python(args, timeout=...)`` is the same care for a plain fresh interpreter
(``python *args``): stdin from ``/dev/null``, output captured, its own session so that a
timeout kills it and whatever it started, and a timeout that fails the test with the
child's output so far rather than hanging it.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["WorkerFailed", "run_python", "run_workers"]

DEFAULT_TIMEOUT = 120.0
_POLL = 0.05
_LOG_TAIL = 4000

# Fresh interpreter: take the parent's sys.path (before anything of the test is unpickled),
# import this module by the name the parent gave it and run the child side.
_BOOTSTRAP = (
    "import sys, pickle, importlib\n"
    "with open(sys.argv[1], 'rb') as f: spec = pickle.load(f)\n"
    "sys.path[:] = spec['sys_path']\n"
    "importlib.import_module(spec['helper'])._child(spec['dir'], spec['payload'], int(sys.argv[2]))\n"
)


class WorkerFailed(AssertionError):
    """A rank raised, crashed or did not finish in time."""


def run_workers(
    fn: Callable[..., Any],
    args: Sequence[Any] = (),
    *,
    world_size: int,
    tmp_path: os.PathLike | str,
    timeout: float = DEFAULT_TIMEOUT,
    backend: str = "gloo",
    env: dict[str, str] | None = None,
) -> list[Any]:
    """``[fn(r, world_size, *args) for r in ranks]``, each rank in its own process.

    Args:
        fn: Module-level function ``fn(rank, world_size, *args)``; the process group is
            initialised before and torn down after it.
        args: Picklable extra arguments, the same for every rank.
        world_size: Number of processes.
        tmp_path: The test's ``tmp_path``; a fresh sub-folder holds the store, specs,
            results and logs (kept for inspection).
        timeout: Seconds for the whole run, start-up included.
        backend: ``torch.distributed`` backend.
        env: Extra environment variables for the children.

    Raises:
        WorkerFailed: A rank raised (its traceback is in the message), crashed, or had not
            finished after ``timeout`` seconds.
    """
    work = Path(tempfile.mkdtemp(prefix="mp_", dir=tmp_path))
    job = {
        "fn": fn,
        "args": tuple(args),
        "world_size": world_size,
        "backend": backend,
        "timeout": timeout,
        "store": str(work / "store"),
    }
    spec = {"sys_path": list(sys.path), "helper": __name__, "dir": str(work), "payload": pickle.dumps(job)}
    spec_path = work / "spec.pkl"
    spec_path.write_bytes(pickle.dumps(spec))
    child_env = {**os.environ, **_default_env(), **(env or {})}

    procs: list[subprocess.Popen] = []
    killed: list[int] = []
    timed_out = False
    logs = [work / f"rank{r}.log" for r in range(world_size)]
    deadline = time.monotonic() + timeout
    try:
        for rank in range(world_size):
            with open(logs[rank], "wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-c", _BOOTSTRAP, str(spec_path), str(rank)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=child_env, close_fds=True, start_new_session=True,
                ))
        timed_out = _wait(procs, deadline)
    finally:
        killed = _kill(procs)  # anything still running: on the deadline, a failed peer, or an error here

    codes = [p.returncode for p in procs]
    if timed_out or killed or any(c != 0 for c in codes):
        raise WorkerFailed(_report(work, codes, killed, logs, timed_out, timeout))

    import torch

    results = []
    for rank in range(world_size):
        path = work / f"result{rank}.pt"
        if not path.exists():
            raise WorkerFailed(f"rank {rank} exited 0 without writing {path}\n{_tail(logs[rank])}")
        try:
            results.append(torch.load(path, weights_only=True))
        except Exception as e:
            raise WorkerFailed(f"rank {rank} returned what torch.load(weights_only=True) cannot read back "
                               f"(return tensors, numbers, strings, lists/tuples/dicts of them): {e}") from e
    return results


def run_python(args: Sequence[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run([sys.executable, *args], capture_output=True, text=True)`` for a test.

    Raises:
        AssertionError: The child had not exited after ``timeout`` seconds (it and its
            process group are killed; the message holds the tail of its stdout/stderr).
    """
    cmd = [sys.executable, *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_group(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
        try:
            out, err = proc.communicate(timeout=30)  # what it wrote before it was killed
        except subprocess.TimeoutExpired:
            out, err = "", "(output unavailable: the pipes stayed open after the kill)"
        shown = " ".join(a if len(a) < 200 else a[:200] + "..." for a in cmd)
        raise AssertionError(
            f"{shown} did not finish in {timeout:g} s (killed)\n"
            f"--- stdout tail:\n{(out or '')[-_LOG_TAIL:]}\n--- stderr tail:\n{(err or '')[-_LOG_TAIL:]}"
        ) from None
    finally:
        if proc.poll() is None:  # an error in the parent: leave nothing behind
            _signal_group(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _default_env() -> dict[str, str]:
    env = {"PYTHONUNBUFFERED": "1"}
    # One thread per rank: the ranks already share the cores.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if var not in os.environ:
            env[var] = "1"
    # Gloo connects the ranks over the interface of the hostname's address unless told;
    # that address need not be reachable in a sandbox. Loopback always is.
    if "GLOO_SOCKET_IFNAME" not in os.environ:
        names = {name for _, name in socket.if_nameindex()} if hasattr(socket, "if_nameindex") else set()
        for lo in ("lo", "lo0"):
            if lo in names:
                env["GLOO_SOCKET_IFNAME"] = lo
                break
    return env


def _wait(procs: list[subprocess.Popen], deadline: float) -> bool:
    """Wait until all exit, one fails, or the deadline passes; True on the deadline."""
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            return False
        if any(c not in (None, 0) for c in codes):
            # One rank failed: the others are blocked in a collective on it. A short grace
            # lets ranks that were about to finish do so, then the rest are killed.
            grace = time.monotonic() + 2.0
            while time.monotonic() < min(grace, deadline) and any(p.poll() is None for p in procs):
                time.sleep(_POLL)
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(_POLL)


def _kill(procs: list[subprocess.Popen]) -> list[int]:
    """Kill every child still running (and anything it started), stack dump first.

    Returns the ranks that were still running.
    """
    ranks = [r for r, p in enumerate(procs) if p.poll() is None]
    alive = [procs[r] for r in ranks]
    if not alive:
        return []
    dump = getattr(signal, "SIGUSR1", None)
    if dump is not None:
        for p in alive:
            _signal_group(p, dump)  # faulthandler in the child writes its stacks to the log
        end = time.monotonic() + 1.0
        while time.monotonic() < end and any(p.poll() is None for p in alive):
            time.sleep(_POLL)
    for p in alive:
        _signal_group(p, getattr(signal, "SIGKILL", signal.SIGTERM))
    for p in alive:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    return ranks


def _signal_group(p: subprocess.Popen, sig: int) -> None:
    if p.poll() is not None:
        return
    try:
        if hasattr(os, "killpg"):
            os.killpg(p.pid, sig)  # its own session (start_new_session): the group is its pid
        else:
            p.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path) -> str:
    try:
        text = path.read_bytes()[-_LOG_TAIL:].decode(errors="replace")
    except OSError:
        return "(no log)"
    return text if text.strip() else "(empty log)"


def _describe(code: int | None, killed: bool = False) -> str:
    if code is None:
        return "still running after SIGKILL"
    desc = f"exit code {code}"
    if code < 0:
        try:
            desc += f" ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"killed while still running, {desc}" if killed else desc


def _report(work: Path, codes: list[int | None], killed: list[int], logs: list[Path], timed_out: bool,
            timeout: float) -> str:
    world = len(codes)
    # Ranks whose fn raised, in the order they failed: the first is usually the cause, the
    # others the peers it left blocked in a collective.
    raised = sorted((r for r in range(world) if (work / f"error{r}.txt").exists()),
                    key=lambda r: (work / f"error{r}.txt").stat().st_mtime_ns)
    unfinished = [r for r in range(world) if r in killed or codes[r] != 0]
    if timed_out:
        head = f"distributed workers timed out after {timeout:g} s"
    elif raised:
        head = f"rank(s) {', '.join(map(str, raised))} raised (in that order)"
    else:
        head = "distributed workers failed"
    lines = [
        f"{head}; rank(s) that did not finish: "
        + ", ".join(f"{r} ({_describe(codes[r], r in killed)})" for r in unfinished)
        + f"  [run folder: {work}]"
    ]
    for r in raised:
        lines.append(f"--- rank {r} traceback:\n{(work / f'error{r}.txt').read_text(errors='replace')}")
    for r in unfinished:
        if r not in raised:
            lines.append(f"--- rank {r} log tail:\n{_tail(logs[r])}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- child side


def _child(work_dir: str, payload: bytes, rank: int) -> None:
    """Body of one rank; never returns (leaves with ``os._exit``)."""
    code = 1
    try:
        try:
            import faulthandler

            faulthandler.enable(all_threads=True)  # hard crashes print a stack to the log
            if hasattr(signal, "SIGUSR1"):
                faulthandler.register(signal.SIGUSR1, all_threads=True)  # parent asks before killing
        except Exception:
            pass
        code = _run_rank(pickle.loads(payload), rank, Path(work_dir))
    except BaseException:
        import traceback

        tb = traceback.format_exc()
        try:
            sys.stderr.write(tb)
            _write_atomic(Path(work_dir) / f"error{rank}.txt", tb.encode())
        except BaseException:
            pass
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run_rank(spec: dict, rank: int, work: Path) -> int:
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    world = spec["world_size"]
    timeout = timedelta(seconds=spec["timeout"])
    store = dist.FileStore(spec["store"], world)  # rendezvous through a file: no ports to race for
    store.set_timeout(timeout)
    dist.init_process_group(spec["backend"], store=store, rank=rank, world_size=world, timeout=timeout)
    result = spec["fn"](rank, world, *spec["args"])
    tmp = work / f"result{rank}.pt.tmp"
    with open(tmp, "wb") as f:
        torch.save(result, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, work / f"result{rank}.pt")  # present only once complete
    dist.barrier()  # nobody tears down while a peer is still in a collective
    dist.destroy_process_group()
    return 0


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
