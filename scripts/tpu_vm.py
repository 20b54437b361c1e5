#!/usr/bin/env python3
"""Cloud TPU VM launcher: a slice from nothing to a multi-host ``tempr1_jax.train`` run and back (docs/tpu_vm.md).

    python scripts/tpu_vm.py create --accelerator-type v4-32 --bucket gs://B [--spot] [--dry-run]
    python scripts/tpu_vm.py setup  --accelerator-type v4-32 --bucket gs://B [--repo URL --ref REF]
    python scripts/tpu_vm.py train  --accelerator-type v4-32 --bucket gs://B [--config.a.b=v ...]
    python scripts/tpu_vm.py logs | status | stop | delete

Each subcommand builds a list of commands (argv lists: the local plan, ``git``, ``gcloud``) and runs them in
order, stopping at the first failure; ``--dry-run`` prints them instead, shell-quoted, one per line, and runs
nothing. Commands for the workers are shell scripts passed to ``gcloud compute tpus tpu-vm ssh --command``
(``--worker=all``: every worker runs the same one). Standard library only: it runs on any machine with gcloud.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Every default of the launcher, in one place. Paths on the workers that do not start with "/" are relative to
# the worker's $HOME. "" means "derived": from --bucket, the accelerator type or the config (see the flag help).
DEFAULTS: dict[str, object] = {
    "name": "tempr1",  # the TPU VM (node) name; also the queued resource's name with --queued
    "zone": "us-central2-b",  # v4's zone; v5e/v5p/v6e live in other zones (Cloud TPU "regions and zones")
    "accelerator_type": "v4-32",
    "runtime_version": "",  # "": the generation's runtime from TPU_GENERATIONS
    "project": "",  # "": gcloud's configured project
    "bucket": "",  # gs://BUCKET: data, model and the run directory; required by setup and train
    "mount": "/mnt/gcs",  # where every worker mounts --bucket with gcsfuse (the workdir lives there)
    "config": "configs/tempr1_7b.py",
    "data_root": "",  # "": gs://BUCKET/tempr1 (samples/ and frames/; the data pipeline reads gs:// itself)
    "model_path": "",  # "": gs://BUCKET/models/Qwen2.5-VL-7B-Instruct (a Hugging Face directory)
    "local_model_dir": "",  # "": models/<basename of --model-path>: where setup copies a gs:// model
    "workdir": "",  # "": gs://BUCKET/runs/<config file stem>
    "repo": "",  # "": a tarball of this checkout's HEAD (git archive), copied with scp; else a git URL
    "ref": "main",  # the git ref checked out with --repo
    "remote_dir": "tempr1_jax",  # the code on each worker
    "venv": "tempr1_venv",  # the Python environment on each worker
    "python_version": "3.11",  # the project needs >= 3.11; uv fetches it (the TPU images' python3 is older)
    "jax_find_links": "https://storage.googleapis.com/jax-releases/libtpu_releases.html",  # libtpu wheels
    "log_file": "tempr1_train.log",  # per worker, on its own disk (nohup output of the trainer)
    "pid_file": "tempr1_train.pid",
    "grace_s": 1200,  # stop: seconds between SIGTERM (the trainer checkpoints) and SIGKILL
    "log_lines": 200,
    "plan_cmd": f"{shlex.quote(sys.executable)} -m tempr1_jax.plan",
}


@dataclasses.dataclass(frozen=True)
class Generation:
    """One TPU generation: how to read ``<prefix>-N`` and what to create it with."""

    counts: str  # what N counts: "cores" (TensorCores, 2 per chip) or "chips"
    sizes: tuple[int, ...]  # accepted N (() for "any multiple of 8")
    chips_per_worker: int  # chips per TPU VM (gcloud worker) in a multi-host slice
    max_single_worker: int  # largest N that is one VM
    runtime: str  # --version / --runtime-version (https://cloud.google.com/tpu/docs/runtimes)
    device_kind: str  # jax.devices()[0].device_kind on that chip, passed to the planner


# Sources (checked 2026): v4 https://cloud.google.com/tpu/docs/v4 (2 TensorCores per chip, 4 chips per host:
# v4-8 = 4 chips = 1 host, v4-32 = 16 chips = 4 hosts); v5p https://cloud.google.com/tpu/docs/v5p (table
# Topology/Cores/Chips/Hosts: 2x2x1 = 8 cores = 4 chips = 1 host, 2x2x2 = 16 = 8 = 2); v5e
# https://cloud.google.com/tpu/docs/v5e (accelerator type "v$VERSION-$CHIP_COUNT", slices of 1..256 chips, "each
# TPU VM in a v5e slice contains 1, 4 or 8 chips"); v6e https://cloud.google.com/tpu/docs/v6e (table
# Topology/Chips/Hosts/VMs: v6e-1, -4, -8 = 1 VM; 4x4 = 16 chips = 2 hosts = 4 VMs, ... 16x16 = 256 = 64 VMs).
# gcloud's --worker counts VMs; the v5e page's "hosts" column counts 8-chip machines, and its multi-host VMs hold
# 4 chips like v6e's (v5litepod-16 = 4 workers; the VM count of v5e is by analogy with v6e's table).
TPU_GENERATIONS: dict[str, Generation] = {
    "v4": Generation("cores", (), 4, 8, "tpu-ubuntu2204-base", "TPU v4"),
    "v5p": Generation("cores", (), 4, 8, "v2-alpha-tpuv5", "TPU v5"),
    "v5litepod": Generation("chips", (1, 4, 8, 16, 32, 64, 128, 256), 4, 8, "v2-alpha-tpuv5-lite", "TPU v5 lite"),
    "v6e": Generation("chips", (1, 4, 8, 16, 32, 64, 128, 256), 4, 8, "v2-alpha-tpuv6e", "TPU v6 lite"),
}


class LaunchError(Exception):
    """A bad flag or value: printed as one ``error: ...`` line."""


@dataclasses.dataclass(frozen=True)
class Slice:
    accelerator_type: str
    workers: int
    chips_per_worker: int
    generation: Generation

    @property
    def chips(self) -> int:
        return self.workers * self.chips_per_worker


def slice_of(accelerator_type: str) -> Slice:
    """Workers and chips of ``v4-32`` (4 workers x 4 chips), ``v5p-8``, ``v5litepod-16``, ``v6e-8``...."""
    prefix, _, n = accelerator_type.rpartition("-")
    gen = TPU_GENERATIONS.get(prefix)
    known = ", ".join(f"{p}-N" for p in TPU_GENERATIONS)
    if gen is None or not n.isdigit():
        raise LaunchError(f"unknown accelerator type {accelerator_type!r}: known are {known}")
    size = int(n)
    if gen.counts == "cores":
        if size < 8 or size % 8:
            raise LaunchError(
                f"accelerator type {accelerator_type!r}: {prefix}-N counts TensorCores (2 per chip, "
                "4 chips per worker): N must be a multiple of 8"
            )
        chips = size // 2
    else:
        if size not in gen.sizes:
            raise LaunchError(
                f"accelerator type {accelerator_type!r}: {prefix}-N counts chips, N one of "
                f"{', '.join(map(str, gen.sizes))}"
            )
        chips = size
    if size <= gen.max_single_worker:
        return Slice(accelerator_type, 1, chips, gen)
    return Slice(accelerator_type, chips // gen.chips_per_worker, gen.chips_per_worker, gen)


# ----------------------------------------------------------------------------------------------------------
# Steps: what a subcommand runs (or prints)
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Step:
    argv: tuple[str, ...] = ()  # the command; empty for a note
    kind: str = "run"  # "run", "plan" (non-zero exit: the config does not fit; stop) or "note" (a comment)
    note: str = ""
    cwd: str | None = None  # run in this directory (printed as "cd DIR && ...")

    def line(self) -> str:
        if self.kind == "note":
            return f"# {self.note}"
        return (f"cd {shlex.quote(self.cwd)} && " if self.cwd else "") + shlex.join(self.argv)


def home(path: str) -> str:
    """A worker path for a shell script: relative paths are under the worker's ``$HOME``."""
    return shlex.quote(path) if path.startswith("/") else '"$HOME"/' + shlex.quote(path)


def gcloud(args: argparse.Namespace, *words: str) -> list[str]:
    argv = ["gcloud", "compute", "tpus", *words, f"--zone={args.zone}"]
    return argv + ([f"--project={args.project}"] if args.project else [])


def ssh(args: argparse.Namespace, *script: str, worker: str = "all") -> Step:
    """``tpu-vm ssh --worker=... --command=SCRIPT``: the script's parts joined by "; " (one line)."""
    command = "; ".join(script)
    return Step((*gcloud(args, "tpu-vm", "ssh", args.name), f"--worker={worker}", f"--command={command}"))


def split_gs(url: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, rest = url[len("gs://") :].partition("/")
    return bucket, rest.strip("/")


def bucket_url(args: argparse.Namespace) -> str:
    b = args.bucket.rstrip("/")
    if not b.startswith("gs://") or not split_gs(b)[0]:
        raise LaunchError(f"{args.command}: --bucket gs://BUCKET is required (got {args.bucket!r})")
    return b


def data_root(args: argparse.Namespace) -> str:
    return args.data_root or f"{bucket_url(args)}/tempr1"


def model_path(args: argparse.Namespace) -> str:
    return args.model_path or f"{bucket_url(args)}/models/Qwen2.5-VL-7B-Instruct"


def worker_model_dir(args: argparse.Namespace) -> str:
    """The model directory as the workers see it: setup copies a gs:// model to local disk."""
    path = model_path(args)
    if not path.startswith("gs://"):
        return path
    return args.local_model_dir or f"models/{os.path.basename(path.rstrip('/'))}"


def worker_workdir(args: argparse.Namespace) -> str:
    """The run directory on the workers: gs://BUCKET/x becomes <mount>/x (the trainer writes through os.path,
    so a bucket is reached through the gcsfuse mount); a path is taken as it is (an NFS mount, say)."""
    stem = os.path.splitext(os.path.basename(args.config))[0]
    url = args.workdir or f"{bucket_url(args)}/runs/{stem}"
    if not url.startswith("gs://"):
        return url
    bucket, rest = split_gs(url)
    if bucket != split_gs(bucket_url(args))[0]:
        raise LaunchError(f"--workdir {url}: not in --bucket {args.bucket} (the bucket mounted at {args.mount})")
    return f"{args.mount.rstrip('/')}/{rest}" if rest else args.mount


def shape_note(args: argparse.Namespace) -> Step:
    s = slice_of(args.accelerator_type)
    return Step(
        kind="note",
        note=f"{s.accelerator_type}: {s.workers} worker(s) x {s.chips_per_worker} chip(s) = "
        f"{s.chips} chips ({s.generation.device_kind}), runtime {runtime(args)}",
    )


def runtime(args: argparse.Namespace) -> str:
    return args.runtime_version or slice_of(args.accelerator_type).generation.runtime


def plan_step(args: argparse.Namespace) -> list[Step]:
    """``python -m tempr1_jax.plan`` here, on the config the workers will run; exits non-zero when it does not fit."""
    if args.skip_plan:
        return [Step(kind="note", note="plan skipped (--skip-plan)")]
    s = slice_of(args.accelerator_type)
    try:
        cmd = shlex.split(args.plan_cmd)
    except ValueError as e:
        raise LaunchError(f"--plan-cmd {args.plan_cmd!r}: {e}") from None
    if not cmd:
        raise LaunchError("--plan-cmd is empty")
    model = args.plan_model_path or model_path(args)
    argv = [
        *cmd,
        "--config",
        f"{args.config}:{data_root(args)}",
        f"--config.model.path={model}",
        *args.overrides,
        "--devices",
        str(s.chips),
        "--device-kind",
        args.device_kind or s.generation.device_kind,
    ]
    return [Step(tuple(argv), kind="plan", cwd=REPO_ROOT)]


# ----------------------------------------------------------------------------------------------------------
# The subcommands
# ----------------------------------------------------------------------------------------------------------


def build_create(args: argparse.Namespace) -> list[Step]:
    """The plan, then ``tpu-vm create`` (or ``queued-resources create`` with --queued)."""
    if args.queued and args.preemptible:
        raise LaunchError("--preemptible: queued resources take --spot instead")
    steps = [shape_note(args), *plan_step(args)]
    if args.queued:  # waits in Cloud TPU's queue until the slice is free instead of failing on no capacity
        argv = gcloud(args, "queued-resources", "create", args.name) + [
            f"--node-id={args.name}",
            f"--accelerator-type={args.accelerator_type}",
            f"--runtime-version={runtime(args)}",
        ]
    else:
        argv = gcloud(args, "tpu-vm", "create", args.name) + [
            f"--accelerator-type={args.accelerator_type}",
            f"--version={runtime(args)}",
        ]
    argv += ["--spot"] * args.spot + ["--preemptible"] * args.preemptible
    return [*steps, Step(tuple(argv))]


def build_setup(args: argparse.Namespace) -> list[Step]:
    """On every worker: the code, a Python >= 3.11 venv with the project and jax[tpu], the bucket mounted with
    gcsfuse, and a gs:// model directory copied to local disk."""
    d, v, q = home(args.remote_dir), home(args.venv), shlex.quote
    links = f" -f {q(args.jax_find_links)}" if args.jax_find_links else ""
    env = ssh(
        args,
        "set -eu",
        "python3 -m pip install -q --user -U uv || curl -LsSf https://astral.sh/uv/install.sh | sh",
        'UV="$HOME"/.local/bin/uv',
        f'[ -x {v}/bin/python ] || "$UV" venv -q --python {q(args.python_version)} {v}',
        f'"$UV" pip install -q --python {v}/bin/python -e {d}"[train]" "jax[tpu]"{links}',
        f'echo "$(hostname): jax $({v}/bin/python -c "import jax; print(jax.__version__)")"',
    )
    bucket, m = split_gs(bucket_url(args))[0], q(args.mount)
    apt = "sudo apt-get -o DPkg::Lock::Timeout=600"
    mount = ssh(
        args,
        "set -eu",
        "if ! command -v gcsfuse >/dev/null; then "
        'echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt '
        'gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null; '
        "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg "
        f"| sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null; {apt} update -q; {apt} install -y -q gcsfuse; fi",
        f"sudo mkdir -p {m}",
        f'sudo chown "$(id -u):$(id -g)" {m}',
        # --rename-dir-limit: orbax commits a checkpoint by renaming its directory; gcsfuse refuses that by default
        f"mountpoint -q {m} || gcsfuse --implicit-dirs --rename-dir-limit=1000000 {q(bucket)} {m}",
        f'echo "$(hostname): gs://{bucket} on "{m}',
    )
    steps = [shape_note(args), *code_steps(args), env, mount]
    model = model_path(args)
    if model.startswith("gs://"):
        local = home(worker_model_dir(args))
        rsync = f"gcloud storage rsync -r {q(model)} {local}"
        steps.append(ssh(args, "set -eu", f"mkdir -p {local}", rsync, f'echo "$(hostname): model in "{local}'))
    return steps


def code_steps(args: argparse.Namespace) -> list[Step]:
    """The code on every worker: ``git clone`` + checkout of --ref, or this checkout's HEAD as a tarball."""
    d, q = home(args.remote_dir), shlex.quote
    if args.repo:
        return [
            ssh(
                args,
                "set -eu",
                f"[ -d {d}/.git ] || git clone -q {q(args.repo)} {d}",
                f"git -C {d} fetch -q origin {q(args.ref)}",
                f"git -C {d} checkout -q --detach FETCH_HEAD",
                f'echo "$(hostname): $(git -C {d} rev-parse --short HEAD)"',
            )
        ]
    tarball = os.path.join(tempfile.gettempdir(), "tempr1_jax.tar.gz")
    scp = gcloud(args, "tpu-vm", "scp", tarball, f"{args.name}:tempr1_jax.tar.gz") + ["--worker=all"]
    return [
        Step(("git", "-C", REPO_ROOT, "archive", "--format=tar.gz", f"--output={tarball}", "HEAD")),
        Step(tuple(scp)),
        ssh(
            args,
            "set -eu",
            f"rm -rf {d}",
            f"mkdir -p {d}",
            f'tar -xzf "$HOME"/tempr1_jax.tar.gz -C {d}',
            f'echo "$(hostname): code in "{d}',
        ),
    ]


def build_train(args: argparse.Namespace) -> list[Step]:
    """The plan, then the trainer on every worker under nohup (an ssh disconnect does not stop it), one log and
    pid file per worker; the same workdir everywhere, so a rerun resumes from its latest checkpoint."""
    q, workdir, model = shlex.quote, worker_workdir(args), worker_model_dir(args)
    config = q(f"--config={args.config}:{data_root(args)}")
    trainer = [f"{home(args.venv)}/bin/python -m tempr1_jax.train {config}", "--config.model.path=" + home(model)]
    if slice_of(args.accelerator_type).workers > 1 and not any(
        o.startswith("--config.distributed.") for o in args.overrides
    ):
        # JAX finds a Cloud TPU VM slice's workers through the GCE metadata server, which distributed.mode="auto"
        # does not consult (it looks at environment variables): "on" calls jax.distributed.initialize() anyway
        trainer.append("--config.distributed.mode=on")
    trainer += [*map(q, args.overrides), q(f"--workdir={workdir}")]
    pid, log, m = home(args.pid_file), home(args.log_file), q(args.mount)
    script = [f"cd {home(args.remote_dir)} || exit 1"]
    if workdir == args.mount or workdir.startswith(args.mount.rstrip("/") + "/"):
        script.append(f'mountpoint -q {m} || {{ echo "$(hostname): "{m}" is not mounted: run setup"; exit 1; }}')
    script += [
        f'if {running(args.pid_file)}; then echo "$(hostname): already training (pid $(cat {pid})): stop it first"; '
        "exit 1; fi",
        f"nohup {' '.join(trainer)} >> {log} 2>&1 < /dev/null & echo $! > {pid}",  # "&" ends the command
        f'echo "$(hostname): started pid $!, log "{log}',
    ]
    return [shape_note(args), *plan_step(args), ssh(args, *script)]


def build_logs(args: argparse.Namespace) -> list[Step]:
    """Follow one worker's log (worker 0 by default; Ctrl-C leaves the run going)."""
    workers = slice_of(args.accelerator_type).workers
    if not 0 <= args.worker < workers:
        raise LaunchError(f"--worker {args.worker}: {args.accelerator_type} has workers 0..{workers - 1}")
    return [ssh(args, f"tail -n {args.lines} -F {home(args.log_file)}", worker=str(args.worker))]


def running(pid_file: str) -> str:
    """Shell test: the pid in ``pid_file`` (under $HOME) is a live process."""
    pid = home(pid_file)
    return f'[ -f {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null'


def build_status(args: argparse.Namespace) -> list[Step]:
    """The node's state, then on every worker whether the trainer runs and its last log lines."""
    steps = []
    if args.queued:
        steps.append(Step((*gcloud(args, "queued-resources", "describe", args.name), "--format=value(state.state)")))
    steps.append(Step((*gcloud(args, "tpu-vm", "describe", args.name), "--format=value(state,health)")))
    pid, log = home(args.pid_file), home(args.log_file)
    check = (
        f'if {running(args.pid_file)}; then echo "$(hostname): training (pid $(cat {pid}))"; '
        'else echo "$(hostname): not training"; fi'
    )
    return [*steps, ssh(args, check, f"tail -n 2 {log} 2>/dev/null || true")]


def build_stop(args: argparse.Namespace) -> list[Step]:
    """SIGTERM on every worker (the trainer finishes its step and checkpoints), SIGKILL after --grace seconds."""
    pid, g = home(args.pid_file), int(args.grace)
    wait = f'i=0; while kill -0 "$p" 2>/dev/null && [ "$i" -lt {g} ]; do sleep 1; i=$((i+1)); done'
    stop = (
        f'p=$(cat {pid}); kill -TERM "$p"; echo "$(hostname): SIGTERM to $p, waiting up to {g} s for its checkpoint"; '
        f'{wait}; if kill -0 "$p" 2>/dev/null; then kill -KILL "$p"; echo "$(hostname): SIGKILL after {g} s"; '
        'else echo "$(hostname): stopped"; fi'
    )
    return [ssh(args, f'if {running(args.pid_file)}; then {stop}; else echo "$(hostname): not training"; fi')]


def build_delete(args: argparse.Namespace) -> list[Step]:
    """Delete the slice (with --queued: the queued resource and its node). gcloud asks unless --yes."""
    if args.queued:
        argv = gcloud(args, "queued-resources", "delete", args.name) + ["--force"]
    else:
        argv = gcloud(args, "tpu-vm", "delete", args.name)
    return [Step(tuple(argv + ["--quiet"] * args.yes))]


BUILDERS: dict[str, Callable[[argparse.Namespace], list[Step]]] = {
    "create": build_create,
    "setup": build_setup,
    "train": build_train,
    "logs": build_logs,
    "status": build_status,
    "stop": build_stop,
    "delete": build_delete,
}


# ----------------------------------------------------------------------------------------------------------
# Flags, running
# ----------------------------------------------------------------------------------------------------------

HELP = {
    "create": "plan, then create the TPU VM slice",
    "setup": "install code, Python env, jax[tpu], gcsfuse mount and the model on every worker",
    "train": "plan, then start the trainer on every worker (nohup; --config.KEY=VALUE passes through)",
    "logs": "follow the trainer log of one worker (0)",
    "status": "node state, and whether each worker trains",
    "stop": "SIGTERM the trainers (they checkpoint), SIGKILL after --grace seconds",
    "delete": "delete the slice",
}
PASSTHROUGH = ("create", "train")  # subcommands that take --config.KEY=VALUE (the plan and the trainer see them)


def build_parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("slice")
    g.add_argument("--name", default=d["name"], help="TPU VM (node) name (default %(default)s)")
    g.add_argument("--zone", default=d["zone"], help="default %(default)s")
    g.add_argument("--project", default=d["project"], help="GCP project (default: gcloud's)")
    g.add_argument(
        "--accelerator-type",
        default=d["accelerator_type"],
        help=f"{', '.join(p + '-N' for p in TPU_GENERATIONS)} (default %(default)s)",
    )
    g.add_argument("--queued", action="store_true", help="use a queued resource (create waits for capacity)")
    g.add_argument("--log-file", default=d["log_file"], help="trainer log on each worker (default ~/%(default)s)")
    g.add_argument("--pid-file", default=d["pid_file"], help="trainer pid on each worker (default ~/%(default)s)")
    g.add_argument("--dry-run", action="store_true", help="print the commands, one per line; run nothing")

    paths = argparse.ArgumentParser(add_help=False)
    g = paths.add_argument_group("job")
    g.add_argument("--bucket", default=d["bucket"], help="gs://BUCKET holding data, model and runs")
    g.add_argument("--mount", default=d["mount"], help="gcsfuse mount point of --bucket (default %(default)s)")
    g.add_argument("--config", default=d["config"], help="config file, relative to the repo (default %(default)s)")
    g.add_argument("--data-root", default=d["data_root"], help="the config's data root (default gs://BUCKET/tempr1)")
    g.add_argument(
        "--model-path",
        default=d["model_path"],
        help="Hugging Face model dir: gs:// (copied by setup) or a worker path "
        "(default gs://BUCKET/models/Qwen2.5-VL-7B-Instruct)",
    )
    g.add_argument(
        "--local-model-dir",
        default=d["local_model_dir"],
        help="where setup copies a gs:// model (default ~/models/<basename>)",
    )
    g.add_argument("--remote-dir", default=d["remote_dir"], help="code dir on workers (default ~/%(default)s)")
    g.add_argument("--venv", default=d["venv"], help="venv on workers (default ~/%(default)s)")

    plan = argparse.ArgumentParser(add_help=False)
    g = plan.add_argument_group("plan (python -m tempr1_jax.plan, run here before create/train)")
    g.add_argument("--plan-cmd", default=d["plan_cmd"], help="planner command (default: %(default)s)")
    g.add_argument("--plan-model-path", default="", help="model.path given to the planner (default --model-path)")
    g.add_argument("--device-kind", default="", help="device kind for the planner (default: from the table)")
    g.add_argument("--skip-plan", action="store_true", help="launch without the plan")

    parser = argparse.ArgumentParser(prog="tpu_vm.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(BUILDERS) + "}")
    parents = {
        "create": [common, paths, plan],
        "setup": [common, paths],
        "train": [common, paths, plan],
        "logs": [common],
        "status": [common],
        "stop": [common],
        "delete": [common],
    }
    cmd = {
        name: sub.add_parser(name, parents=ps, help=HELP[name], description=HELP[name], allow_abbrev=False)
        for name, ps in parents.items()
    }
    cmd["create"].add_argument(
        "--runtime-version",
        default=d["runtime_version"],
        help="TPU software version (default: the generation's, e.g. tpu-ubuntu2204-base)",
    )
    cmd["create"].add_argument("--spot", action="store_true", help="Spot VM: cheaper, can be preempted")
    cmd["create"].add_argument("--preemptible", action="store_true", help="preemptible TPU (older than --spot)")
    cmd["setup"].add_argument("--repo", default=d["repo"], help="git URL to clone (default: scp this checkout's HEAD)")
    cmd["setup"].add_argument("--ref", default=d["ref"], help="git ref with --repo (default %(default)s)")
    cmd["setup"].add_argument("--python-version", default=d["python_version"], help="default %(default)s")
    cmd["setup"].add_argument(
        "--jax-find-links",
        default=d["jax_find_links"],
        help="extra wheel page for libtpu ('' for none; default %(default)s)",
    )
    cmd["train"].add_argument(
        "--workdir",
        default=d["workdir"],
        help="run directory: gs://BUCKET/... (through the mount) or a worker path "
        "(default gs://BUCKET/runs/<config stem>)",
    )
    cmd["logs"].add_argument("--worker", type=int, default=0, help="worker to follow (default 0)")
    cmd["logs"].add_argument("--lines", type=int, default=d["log_lines"], help="default %(default)s")
    cmd["stop"].add_argument("--grace", type=int, default=d["grace_s"], help="seconds before SIGKILL (%(default)s)")
    cmd["delete"].add_argument("--yes", action="store_true", help="no confirmation (gcloud --quiet)")
    for name in ("setup", "train"):
        cmd[name].set_defaults(runtime_version=d["runtime_version"])
    for name in ("logs", "status", "stop", "delete", "setup"):
        cmd[name].set_defaults(skip_plan=True)
    return parser


def check_args(args: argparse.Namespace, extra: Sequence[str]) -> None:
    """Passthrough overrides (``--config.KEY=VALUE``, create/train only) into ``args.overrides``; sane paths."""
    bad = [a for a in extra if not (a.startswith("--config.") and "=" in a)]
    if bad or (extra and args.command not in PASSTHROUGH):
        raise LaunchError(
            f"{args.command}: unexpected argument {(bad or list(extra))[0]!r} (config overrides are "
            f"--config.KEY=VALUE, for {' and '.join(PASSTHROUGH)})"
        )
    if any(a.startswith("--config.model.path=") for a in extra):
        raise LaunchError(f"{args.command}: give the model with --model-path, not --config.model.path")
    args.overrides = list(extra)
    slice_of(args.accelerator_type)
    for flag in ("remote_dir", "venv", "log_file", "pid_file"):  # setup runs rm -rf on remote_dir
        value = getattr(args, flag, None)
        if value is not None and (not value or value.startswith("/") or ".." in value.split("/")):
            raise LaunchError(f"--{flag.replace('_', '-')} {value!r}: must be a path under the worker's $HOME")


def execute(steps: Sequence[Step], dry_run: bool, run: Callable[..., subprocess.CompletedProcess]) -> int:
    """Print (dry run) or run the steps in order; the first failure stops the rest."""
    if dry_run:
        for s in steps:
            print(s.line())
        return 0
    for s in steps:
        print(s.line() if s.kind == "note" else f"+ {s.line()}", file=sys.stderr, flush=True)
        if s.kind == "note":
            continue
        try:
            rc = run(list(s.argv), cwd=s.cwd).returncode
        except OSError as e:
            print(f"error: cannot run {s.argv[0]}: {e}", file=sys.stderr)
            return 1
        if rc != 0 and s.kind == "plan":
            print(
                f"error: the plan exited {rc}: the config does not fit this slice (or the planner failed); "
                "nothing launched (--skip-plan to launch anyway)",
                file=sys.stderr,
            )
            return 1
        if rc != 0:
            print(f"error: exit {rc} from {s.argv[0]} ... (the steps after it did not run)", file=sys.stderr)
            return 1
    return 0


def main(argv: Sequence[str] | None = None, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> int:
    """The CLI; ``run(argv, cwd=...)`` runs one command (tests inject their own)."""
    args, extra = build_parser().parse_known_args(argv)
    try:
        check_args(args, extra)
        steps = BUILDERS[args.command](args)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return execute(steps, args.dry_run, run)


if __name__ == "__main__":
    sys.exit(main())
