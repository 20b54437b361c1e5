"""scripts/tpu_vm.py: the dry-run commands, the slice table, quoting, the plan gate, and the worker scripts run
under bash on this machine with a stand-in trainer (nohup, pid file, SIGTERM from stop)."""

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "tpu_vm.py"
_spec = importlib.util.spec_from_file_location("tpu_vm", SCRIPT)
tpu_vm = importlib.util.module_from_spec(_spec)
sys.modules["tpu_vm"] = tpu_vm  # dataclasses look their module up there
_spec.loader.exec_module(tpu_vm)

BUCKET = ["--bucket", "gs://my-bucket"]
needs_bash = pytest.mark.skipif(
    shutil.which("bash") is None or not Path("/proc/self/status").exists(), reason="needs bash and /proc"
)


def forbidden(argv, **kw):
    raise AssertionError(f"a command ran in dry-run mode: {argv}")


def dry(capsys, *argv: str) -> list[str]:
    """The lines printed by ``main([*argv, --dry-run])``; fails if anything is executed."""
    rc = tpu_vm.main([*argv, "--dry-run"], run=forbidden)
    out = capsys.readouterr().out
    assert rc == 0, out
    return out.splitlines()


def commands(lines: list[str]) -> list[list[str]]:
    """Each printed command as argv (``cd DIR && `` prefixes dropped); notes left out."""
    out = []
    for line in lines:
        if line.startswith("#"):
            continue
        argv = shlex.split(line)
        if argv[:1] == ["cd"]:
            assert argv[2] == "&&", line
            argv = argv[3:]
        out.append(argv)
    return out


def flag(argv: list[str], name: str) -> str:
    """The value of ``--name=VALUE`` in argv."""
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    return value


def ssh_scripts(cmds: list[list[str]]) -> list[str]:
    return [flag(c, "command") for c in cmds if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]]


def plan_argv(cmds: list[list[str]]) -> list[str]:
    (plan,) = [c for c in cmds if "tempr1_jax.plan" in c]
    return plan


def trainer_argv(script: str) -> list[str]:
    """The words of the nohup'd trainer command in a train script (shell syntax, $HOME left unexpanded)."""
    words = shlex.split(script)
    start = words.index("nohup") + 1
    return words[start : words.index(">>", start)]


def bash_syntax_ok(script: str) -> None:
    r = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, (r.stderr, script)


# ----------------------------------------------------------------------------------------------------------
# The slice table
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accel, workers, per_worker",
    [
        ("v4-8", 1, 4),
        ("v4-16", 2, 4),
        ("v4-32", 4, 4),
        ("v4-256", 32, 4),
        ("v5p-8", 1, 4),
        ("v5p-16", 2, 4),
        ("v5p-128", 16, 4),
        ("v5litepod-1", 1, 1),
        ("v5litepod-4", 1, 4),
        ("v5litepod-8", 1, 8),
        ("v5litepod-16", 4, 4),
        ("v5litepod-256", 64, 4),
        ("v6e-8", 1, 8),
        ("v6e-16", 4, 4),
        ("v6e-256", 64, 4),
    ],
)
def test_slice_table(accel, workers, per_worker):
    s = tpu_vm.slice_of(accel)
    assert (s.workers, s.chips_per_worker) == (workers, per_worker)


@pytest.mark.parametrize(
    "accel, why",
    [
        ("v3-8", "unknown accelerator type 'v3-8'"),
        ("tpu", "unknown accelerator type 'tpu'"),
        ("v4-12", "multiple of 8"),
        ("v6e-2", "N one of"),
        ("v5litepod-x", "unknown accelerator type"),
    ],
)
def test_unknown_accelerator_is_a_one_line_error(capsys, accel, why):
    rc = tpu_vm.main(["create", "--accelerator-type", accel, *BUCKET, "--dry-run"], run=forbidden)
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1 and why in captured.err


# ----------------------------------------------------------------------------------------------------------
# Dry runs
# ----------------------------------------------------------------------------------------------------------


def test_v4_32_train_dry_run(capsys):
    lines = dry(capsys, "train", "--accelerator-type", "v4-32", *BUCKET)
    assert lines[0] == "# v4-32: 4 worker(s) x 4 chip(s) = 16 chips (TPU v4), runtime tpu-ubuntu2204-base"
    cmds = commands(lines)
    assert len(cmds) == 2
    plan = plan_argv(cmds)
    assert plan[plan.index("--devices") + 1] == "16" and plan[plan.index("--device-kind") + 1] == "TPU v4"
    assert plan[plan.index("--config") + 1] == "configs/tempr1_7b.py:gs://my-bucket/tempr1"
    ssh = cmds[1]
    assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "tempr1"]
    assert "--worker=all" in ssh and "--zone=us-central2-b" in ssh
    (script,) = ssh_scripts(cmds)
    bash_syntax_ok(script)
    assert trainer_argv(script) == [
        "$HOME/tempr1_venv/bin/python",
        "-m",
        "tempr1_jax.train",
        "--config=configs/tempr1_7b.py:gs://my-bucket/tempr1",
        "--config.model.path=$HOME/models/Qwen2.5-VL-7B-Instruct",
        "--config.distributed.mode=on",
        "--workdir=/mnt/gcs/runs/tempr1_7b",
    ]
    assert "mountpoint -q /mnt/gcs" in script


def test_v4_32_setup_addresses_all_workers(capsys):
    cmds = commands(dry(capsys, "setup", "--accelerator-type", "v4-32", *BUCKET))
    assert cmds[0][:4] == ["git", "-C", str(ROOT), "archive"]
    remote = [c for c in cmds if c[0] == "gcloud"]
    assert [c[4] for c in remote] == ["scp", "ssh", "ssh", "ssh", "ssh"]  # code, code, env, mount, model
    assert all("--worker=all" in c for c in remote)
    scripts = ssh_scripts(cmds)
    for s in scripts:
        bash_syntax_ok(s)
    install = shlex.split(scripts[1])
    i = install.index("-e")
    assert install[i + 1 : i + 3] == ["$HOME/tempr1_jax[train]", "jax[tpu]"]  # the training stack: the train extra
    assert install[i + 3 : i + 5] == ["-f", "https://storage.googleapis.com/jax-releases/libtpu_releases.html;"]
    assert "gcsfuse --implicit-dirs --rename-dir-limit=1000000 my-bucket /mnt/gcs" in scripts[2]
    assert "gcloud storage rsync -r gs://my-bucket/models/Qwen2.5-VL-7B-Instruct" in scripts[3]


def test_setup_from_git(capsys):
    cmds = commands(
        dry(
            capsys,
            "setup",
            *BUCKET,
            "--repo",
            "https://example.org/x.git",
            "--ref",
            "v1.2",
            "--model-path",
            "/mnt/gcs/models/Qwen",
        )
    )
    scripts = ssh_scripts(cmds)
    assert all(c[0] == "gcloud" for c in cmds) and len(scripts) == 3  # no tarball; no model copy for a path
    assert "git clone -q https://example.org/x.git" in scripts[0] and "fetch -q origin v1.2" in scripts[0]


def test_v5p_8_is_one_worker(capsys):
    lines = dry(capsys, "train", "--accelerator-type", "v5p-8", "--zone", "us-east5-a", *BUCKET)
    assert lines[0].startswith("# v5p-8: 1 worker(s) x 4 chip(s) = 4 chips (TPU v5), runtime v2-alpha-tpuv5")
    cmds = commands(lines)
    plan = plan_argv(cmds)
    assert plan[plan.index("--devices") + 1] == "4"
    assert not any("distributed" in a for a in trainer_argv(flag(cmds[1], "command")))  # one process: no init
    assert "--worker=all" in cmds[1] and "--zone=us-east5-a" in cmds[1]
    lines = dry(capsys, "create", "--accelerator-type", "v5p-8", "--zone", "us-east5-a", *BUCKET, "--spot")
    assert commands(lines)[-1] == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "create",
        "tempr1",
        "--zone=us-east5-a",
        "--accelerator-type=v5p-8",
        "--version=v2-alpha-tpuv5",
        "--spot",
    ]


def test_create_queued_and_project(capsys):
    cmds = commands(
        dry(
            capsys,
            "create",
            "--accelerator-type",
            "v6e-16",
            "--queued",
            "--spot",
            "--project",
            "p1",
            *BUCKET,
            "--skip-plan",
        )
    )
    assert cmds == [
        [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "create",
            "tempr1",
            "--zone=us-central2-b",
            "--project=p1",
            "--node-id=tempr1",
            "--accelerator-type=v6e-16",
            "--runtime-version=v2-alpha-tpuv6e",
            "--spot",
        ]
    ]
    cmds = commands(dry(capsys, "delete", "--queued", "--yes"))
    assert cmds == [
        [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "delete",
            "tempr1",
            "--zone=us-central2-b",
            "--force",
            "--quiet",
        ]
    ]


def test_passthrough_overrides_reach_plan_and_trainer(capsys):
    over = ["--config.grpo.beta=0", "--config.train.steps_per_run=10", "--config.rollout.top_k=5"]
    cmds = commands(dry(capsys, "train", *BUCKET, *over))
    plan = plan_argv(cmds)
    assert [a for a in plan if a.startswith("--config.") and "model.path" not in a] == over
    (script,) = ssh_scripts(cmds)
    assert trainer_argv(script)[-4:-1] == over
    # a distributed.* override replaces the launcher's distributed.mode=on
    (script,) = ssh_scripts(commands(dry(capsys, "train", *BUCKET, "--config.distributed.mode=off")))
    assert [a for a in trainer_argv(script) if "distributed" in a] == ["--config.distributed.mode=off"]


@pytest.mark.parametrize(
    "argv, why",
    [
        (["train", *BUCKET, "--config.grpo.beta", "0"], "unexpected argument '--config.grpo.beta'"),
        (["train", *BUCKET, "--bogus=1"], "unexpected argument '--bogus=1'"),
        (["logs", "--config.grpo.beta=0"], "for create and train"),
        (["train", *BUCKET, "--config.model.path=/x"], "--model-path"),
        (["train"], "--bucket gs://BUCKET is required"),
        (["train", *BUCKET, "--workdir", "gs://other/runs/x"], "not in --bucket"),
        (["setup", *BUCKET, "--remote-dir", "/"], "under the worker's $HOME"),
        (["setup", *BUCKET, "--venv", "../x"], "under the worker's $HOME"),
        (["logs", "--worker", "4"], "v4-32 has workers 0..3"),
        (["create", *BUCKET, "--queued", "--preemptible"], "--spot instead"),
    ],
)
def test_bad_flags_are_one_line_errors(capsys, argv, why):
    assert tpu_vm.main([*argv, "--dry-run"], run=forbidden) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and why in err


def test_paths_with_spaces_survive_both_shells(capsys):
    cmds = commands(
        dry(
            capsys,
            "train",
            *BUCKET,
            "--data-root",
            "gs://my-bucket/my data",
            "--workdir",
            "gs://my-bucket/runs/my run",
            "--model-path",
            "/mnt/nfs/Qwen VL",
            "--config.x.y=a b'c",
        )
    )
    plan = plan_argv(cmds)
    assert plan[plan.index("--config") + 1] == "configs/tempr1_7b.py:gs://my-bucket/my data"
    assert "--config.model.path=/mnt/nfs/Qwen VL" in plan
    (script,) = ssh_scripts(cmds)
    bash_syntax_ok(script)
    assert trainer_argv(script)[3:] == [
        "--config=configs/tempr1_7b.py:gs://my-bucket/my data",
        "--config.model.path=/mnt/nfs/Qwen VL",
        "--config.distributed.mode=on",
        "--config.x.y=a b'c",
        "--workdir=/mnt/gcs/runs/my run",
    ]


def test_local_workdir_skips_the_mount_check(capsys):
    (script,) = ssh_scripts(commands(dry(capsys, "train", *BUCKET, "--workdir", "/mnt/nfs/runs/a")))
    assert "mountpoint" not in script and trainer_argv(script)[-1] == "--workdir=/mnt/nfs/runs/a"


def test_logs_status_stop(capsys):
    (logs,) = commands(dry(capsys, "logs"))
    assert "--worker=0" in logs and flag(logs, "command") == 'tail -n 200 -F "$HOME"/tempr1_train.log'
    status = commands(dry(capsys, "status"))
    assert status[0][3:6] == ["tpu-vm", "describe", "tempr1"] and "--worker=all" in status[1]
    (stop,) = commands(dry(capsys, "stop", "--grace", "30"))
    assert "--worker=all" in stop and "kill -TERM" in flag(stop, "command")
    for c in (logs, *status[1:], stop):
        bash_syntax_ok(flag(c, "command"))


def test_skip_plan(capsys):
    lines = dry(capsys, "train", *BUCKET, "--skip-plan")
    assert "# plan skipped (--skip-plan)" in lines and not any("tempr1_jax.plan" in line for line in lines)


@pytest.mark.parametrize("sub", list(tpu_vm.BUILDERS))
def test_dry_run_executes_nothing(capsys, monkeypatch, sub):
    def boom(*a, **k):
        raise AssertionError("subprocess called in dry-run")

    monkeypatch.setattr(subprocess, "run", boom)
    monkeypatch.setattr(subprocess, "Popen", boom)
    extra = BUCKET if sub in ("create", "setup", "train") else []
    assert dry(capsys, sub, *extra)


# ----------------------------------------------------------------------------------------------------------
# The plan gate (real planner subprocesses; gcloud recorded, never run)
# ----------------------------------------------------------------------------------------------------------


def recording_runner(calls: list):
    """Runs the (injected) plan command for real; records everything else and reports success."""

    def run(argv, cwd=None):
        calls.append(argv)
        if argv[0] == sys.executable:
            return subprocess.run(argv, cwd=cwd)
        return subprocess.CompletedProcess(argv, 0)

    return run


@pytest.mark.parametrize("sub", ["create", "train"])
def test_failing_plan_stops_the_launch(capsys, sub):
    plan = f"{shlex.quote(sys.executable)} -c 'import sys; print(\"does not fit\"); sys.exit(3)'"
    calls: list = []
    rc = tpu_vm.main([sub, *BUCKET, "--plan-cmd", plan], run=recording_runner(calls))
    assert rc == 1 and len(calls) == 1 and calls[0][0] == sys.executable
    assert "the plan exited 3" in capsys.readouterr().err


def test_passing_plan_then_gcloud(capsys):
    calls: list = []
    rc = tpu_vm.main(
        ["create", *BUCKET, "--plan-cmd", f"{shlex.quote(sys.executable)} -c pass"], run=recording_runner(calls)
    )
    assert rc == 0 and [c[0] for c in calls] == [sys.executable, "gcloud"]
    assert calls[0][-4:] == ["--devices", "16", "--device-kind", "TPU v4"]


def test_failing_command_stops_the_rest(capsys):
    calls: list = []

    def run(argv, cwd=None):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 1 if argv[0] == "git" else 0)

    assert tpu_vm.main(["setup", *BUCKET], run=run) == 1
    assert len(calls) == 1 and "exit 1 from git" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# The worker scripts, run here under bash with a stand-in trainer
# ----------------------------------------------------------------------------------------------------------


def fake_worker(home: Path) -> Path:
    """A $HOME with the code dir and a venv whose python records its argv and exits on SIGTERM."""
    (home / "tempr1_jax").mkdir(parents=True)
    py = home / "tempr1_venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(
        '#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$HOME/argv.txt"\n'
        "trap 'echo TERM > \"$HOME/term.txt\"; exit 0' TERM\necho started\n"
        "for i in $(seq 600); do sleep 0.1; done\n"
    )
    py.chmod(0o755)
    return home


def bash(script: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", script],
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def wait_for(path: Path, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.05)
    assert path.exists(), path


@needs_bash
def test_train_and_stop_scripts_under_bash(capsys, tmp_path):
    home = fake_worker(tmp_path / "home dir")
    workdir = tmp_path / "runs" / "my run"
    (train,) = ssh_scripts(
        commands(dry(capsys, "train", *BUCKET, "--workdir", str(workdir), "--skip-plan", "--config.grpo.beta=0"))
    )
    r = bash(train, home)
    assert r.returncode == 0 and "started pid" in r.stdout, r
    wait_for(home / "argv.txt")
    time.sleep(0.2)
    assert (home / "argv.txt").read_text().splitlines() == [
        "-m",
        "tempr1_jax.train",
        "--config=configs/tempr1_7b.py:gs://my-bucket/tempr1",
        f"--config.model.path={home}/models/Qwen2.5-VL-7B-Instruct",
        "--config.distributed.mode=on",
        "--config.grpo.beta=0",
        f"--workdir={workdir}",
    ]
    pid = int((home / "tempr1_train.pid").read_text())
    again = bash(train, home)  # a second start on a worker that trains is refused
    assert again.returncode == 1 and "already training" in again.stdout
    (status,) = ssh_scripts(commands(dry(capsys, "status")))
    assert f"training (pid {pid})" in bash(status, home).stdout
    (stop,) = ssh_scripts(commands(dry(capsys, "stop", "--grace", "30")))
    r = bash(stop, home)
    assert r.returncode == 0 and "stopped" in r.stdout, r
    assert (home / "term.txt").read_text().strip() == "TERM"  # SIGTERM, not SIGKILL
    assert "started" in (home / "tempr1_train.log").read_text()
    assert "not training" in bash(status, home).stdout


@needs_bash
def test_stop_escalates_to_sigkill(capsys, tmp_path):
    home = fake_worker(tmp_path / "h")
    py = home / "tempr1_venv" / "bin" / "python"
    py.write_text(py.read_text().replace("exit 0' TERM", "echo ignored' TERM"))  # a trainer that ignores TERM
    (train,) = ssh_scripts(commands(dry(capsys, "train", *BUCKET, "--workdir", str(tmp_path / "w"), "--skip-plan")))
    assert bash(train, home).returncode == 0
    wait_for(home / "argv.txt")
    time.sleep(0.2)
    (stop,) = ssh_scripts(commands(dry(capsys, "stop", "--grace", "1")))
    r = bash(stop, home)
    assert "SIGKILL after 1 s" in r.stdout, r
    pid = int((home / "tempr1_train.pid").read_text())
    end = time.monotonic() + 10
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    assert not alive(pid)


def alive(pid: int) -> bool:
    """Running and not a zombie (a killed orphan stays one until init reaps it)."""
    try:
        return "\tZ" not in Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0]
    except FileNotFoundError:
        return False


# ----------------------------------------------------------------------------------------------------------
# Help and the documented commands
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["", *tpu_vm.BUILDERS])
def test_help(sub):
    r = subprocess.run(
        [sys.executable, str(SCRIPT), *([sub] if sub else []), "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stdout.startswith("usage: tpu_vm.py"), r.stderr


def documented_commands() -> list[str]:
    """Every ``python scripts/tpu_vm.py ...`` line of docs/tpu_vm.md's code blocks."""
    text = (ROOT / "docs" / "tpu_vm.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.strip() for b in blocks for line in b.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith("python scripts/tpu_vm.py")]


def test_docs_have_every_subcommand():
    used = {shlex.split(c)[2] for c in documented_commands()}
    assert used == set(tpu_vm.BUILDERS)


@pytest.mark.parametrize("line", documented_commands())
def test_documented_command_dry_runs(capsys, line):
    argv = shlex.split(line)[2:]
    assert dry(capsys, *[a for a in argv if a != "--dry-run"])
