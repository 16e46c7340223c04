"""benchmarks/gpu_session.sh and what its stages call, checked on the CPU machine: a GPU session is
15 minutes of device time, and a stage that crashes on an argument, overruns its 10-minute call or
comes back without its figures is lost. The script runs here in a copy of the repository with
stand-ins for python3 and nvidia-smi; the bench scripts' result writing runs with a pretend GPU."""
import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_train  # noqa: E402
import results  # noqa: E402


def _stages():
    """The stage names of the script's `case`, with the lines of each."""
    text = SCRIPT.read_text()
    body = text[text.index('case "$stage" in'):]
    stages, name = {}, None
    for ln in body.splitlines()[1:]:
        m = re.match(r"^([a-z0-9-]+)\)", ln)
        if m:
            name = m.group(1)
            stages[name] = []
        elif name and ln.strip() != ";;":
            stages[name].append(ln)
    return stages


def _bench_commands(lines):
    """[(script, argv)] of the `python3 benchmarks/bench_*.py ...` commands in a stage's lines
    (continuation lines joined; a `for mode in ...` loop's $mode expanded to each of its values)."""
    text = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    modes = [None]
    m = re.search(r"for mode in (.*?); do", text)
    if m:
        modes = shlex.split(m.group(1))
    cmds = []
    for ln in text.splitlines():
        m = re.search(r"python3 (benchmarks/bench_\w+\.py)(.*?)(2>&1|\||$)", ln)
        if not m:
            continue
        for mode in modes:
            args = m.group(2).replace("$mode", mode if mode is not None else "")
            cmds.append((m.group(1), shlex.split(args)))
    return cmds


def test_script_syntax_and_stage_list():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    usage = re.search(r'^stages="([\w -]+)"', SCRIPT.read_text(), re.M).group(1).split()
    assert set(usage) == set(_stages()) - {"*"} | {"wheels"}


def test_check_runs_every_gpu_test_file():
    """`check` names its test files (a module whose imports the GPU machine lacks would stop the whole
    collection): every file with a test marked gpu must be among them (tests/test_widgets.py's was not)."""
    check = "\n".join(_stages()["check"])
    marked = re.compile(r"^\s*@pytest\.mark\.gpu|marks=pytest\.mark\.gpu", re.M)
    gpu_files = sorted(p.name for p in (ROOT / "tests").glob("test_*.py") if marked.search(p.read_text()))
    assert gpu_files and [f for f in gpu_files if f"tests/{f}" not in check] == []


class _Parsed(Exception):
    pass


@pytest.mark.parametrize("stage", sorted(set(_stages()) - {"*", "check", "sanitize"}))
def test_every_bench_command_parses(stage, monkeypatch):
    """Each bench command of each stage gets through its script's argument parser (a wrong option or
    choice there would end the stage on the GPU at once)."""
    cmds = _bench_commands(_stages()[stage])
    assert cmds, f"stage {stage} runs no benchmark"
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    for script, argv in cmds:
        name = Path(script).stem
        if name == "bench_widgets":
            pytest.importorskip("ipywidgets")
        module = __import__(name)
        monkeypatch.setattr(sys, "argv", [script, *argv])
        with pytest.raises(_Parsed):
            module.main(argv)


def test_every_staged_bench_writes_what_it_finished():
    """Each bench script a stage runs ends its cases early on the budget's SIGTERM and still writes them
    (bench_ops, bench_modconv and bench_widgets lost everything they had measured)."""
    scripts = {script for lines in _stages().values() for script, _ in _bench_commands(lines)}
    assert scripts and [s for s in sorted(scripts) if "stop_on_sigterm()" not in (ROOT / s).read_text()] == []


def _cost(argv):
    """bench_train's measured cases for these arguments, in units of one fp16 case (2 ticks of 1 kimg;
    float32 without TF32 counted twice: CUDA cores, not tensor cores). The short runs (--sync-debug,
    --profile) are not counted."""
    if "--sync-debug" in argv or "--profile" in argv:
        return 0
    p = argparse.ArgumentParser()
    p.add_argument("--preset")
    p.add_argument("--precision", nargs="+", default=["fp32"])
    p.add_argument("--res", type=int, nargs="+")
    p.add_argument("--cfg", nargs="+")
    p.add_argument("--batch-gpu", type=int, nargs="+")
    p.add_argument("--tf32", action="store_true")
    a, _ = p.parse_known_args(argv)
    cases = [c for c in bench_train.PRESETS[a.preset] if (a.res is None or c["res"] in a.res)
             and (a.cfg is None or c["cfg"] in a.cfg) and (a.batch_gpu is None or c["batch_gpu"] in a.batch_gpu)]
    return sum(len(cases) * (2 if prec == "fp32" and not a.tf32 else 1) for prec in a.precision)


@pytest.mark.parametrize("stage", [s for s in sorted(_stages()) if s.startswith("train")])
def test_training_stages_fit_one_call(stage):
    """At most three measured training cases per stage: one StyleGAN3 case at 256 px (its two ticks, the
    network build, cuDNN's autotuning) is estimated at 1-2 minutes on an H200, so five (the old
    train256) or three in float32 (the old train-fp32) could overrun the 10-minute call."""
    cost = sum(_cost(argv) for script, argv in _bench_commands(_stages()[stage]) if script.endswith("bench_train.py"))
    assert 0 < cost <= 3, f"{stage}: {cost} case units"


# ---------------------------------------------------------------------------------------------
# The script itself, in a copy of the repository (stand-ins on PATH)


def _copy(tmp_path):
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    shutil.copy(SCRIPT, repo / "benchmarks" / "gpu_session.sh")
    (repo / "benchmarks" / "RESULTS.md").write_text("# results\n")
    fixtures = tmp_path / "fixtures"
    fixtures.mkdir()
    (fixtures / "ops.json").write_text("{}")
    return repo, fixtures


def _stub(bindir, name, body):
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text("#!/bin/sh\n" + textwrap.dedent(body))
    (bindir / name).chmod(0o755)


def _run(repo, stage, env, timeout):
    return _run_stages(repo, [stage], env, timeout)


def _run_stages(repo, stages, env, timeout):
    """(CompletedProcess-like) bash gpu_session.sh STAGES in `repo`; on a timeout its whole process group
    is killed (a stand-in left sleeping would hold the output pipes open)."""
    with subprocess.Popen(["bash", "benchmarks/gpu_session.sh", *stages], cwd=repo, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            err += f"\n(killed after {timeout} s)"
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _env(bindir, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "OUT", "SG3_STAGE_S", "VIRTUAL_ENV")}
    env["PATH"] = f"{bindir}:{env['PATH']}"
    env.update(kw)
    return env


_FAKE_PIP = """\
    # pip download: one empty wheel per name after the options
    dest=; seen=
    for a in "$@"; do
        if [ "$seen" = d ]; then dest=$a; seen=; continue; fi
        case "$a" in -d) seen=d;; -*|download|pip|cp|3.12|manylinux*) ;; *) [ -n "$dest" ] && : > "$dest/$a-1.0-py3-none-any.whl";; esac
    done
    """


def test_wheels_stage_uses_python3_without_a_venv(tmp_path):
    """make's Python is python3 where python3 has torch (tools/python.sh): no .venv is made, so the
    wheels stage must not insist on .venv/bin/python (it printed 'No such file', fetched nothing and
    still exited 0; the GPU run then had no ipywidgets for bench_widgets)."""
    repo, fixtures = _copy(tmp_path)
    _stub(tmp_path / "bin", "python3", "mkdir -p .whl\n" + _FAKE_PIP)
    r = _run(repo, "wheels", _env(tmp_path / "bin", SG3_FIXTURES=str(fixtures)), 60)
    assert r.returncode == 0, r.stderr
    assert (repo / ".whl" / "ipywidgets-1.0-py3-none-any.whl").exists(), r.stderr
    assert (repo / ".fixtures" / "ops.json").exists()
    assert {"/.whl/", "/.fixtures/", "/.kcache/"} <= set((repo / ".git" / "info" / "exclude").read_text().split())


def test_wheels_stage_fails_when_a_download_fails(tmp_path):
    repo, fixtures = _copy(tmp_path)
    _stub(tmp_path / "bin", "python3", "echo 'ERROR: No matching distribution found' >&2\nexit 1\n")
    r = _run(repo, "wheels", _env(tmp_path / "bin", SG3_FIXTURES=str(fixtures)), 60)
    assert r.returncode != 0
    r = _run(repo, "wheels", _env(tmp_path / "bin", SG3_FIXTURES=str(tmp_path / "missing")), 60)
    assert r.returncode != 0, "no fixtures to copy must fail the stage"


def test_unknown_stage_stops_before_the_prelude(tmp_path):
    """A mistyped stage used to install the wheels and build the kernels (a minute) before saying so."""
    repo, _ = _copy(tmp_path)
    called = tmp_path / "python3-called"
    _stub(tmp_path / "bin", "python3", f": > {called}\n")
    _stub(tmp_path / "bin", "nvidia-smi", f": > {called}\n")
    for stage in ("trian256", ""):
        r = _run(repo, stage, _env(tmp_path / "bin", OUT=str(tmp_path / "out")), 60)
        assert r.returncode == 2 and "usage: gpu_session.sh wheels|check|" in r.stderr
    assert not called.exists()


def test_several_stages_share_one_budget(tmp_path):
    """`gpu_session.sh check ops`: the stages run in order, each with what the earlier ones left; a
    mistyped name among them stops everything before the first stage starts."""
    repo, _ = _copy(tmp_path)
    _stub(tmp_path / "bin", "python3", "case \"$*\" in *pytest*) exec sleep 300;; esac\necho \"python3 $*\"\n")
    _stub(tmp_path / "bin", "nvidia-smi", "echo 'NVIDIA H200, 580.00, 143771 MiB, 1980 MHz'\n")
    out = tmp_path / "out"
    r = _run_stages(repo, ["check", "opz"], _env(tmp_path / "bin", OUT=str(out)), 60)
    assert r.returncode == 2 and not out.exists()
    start = time.monotonic()
    r = _run_stages(repo, ["check", "ops"], _env(tmp_path / "bin", OUT=str(out), SG3_STAGE_S="6"), 60)
    assert time.monotonic() - start < 40, r.stdout[-2000:]
    assert "stopped at the stage budget" in (out / "check.log").read_text()
    ops = (out / "ops.log").read_text()
    assert "skipped, the stage budget" in ops and "bench_ops.py" in ops


def test_stage_ends_itself_before_the_call_limit(tmp_path):
    """A stage whose commands hang (a kernel that never returns, a compile that runs on) stops at its
    budget (SG3_STAGE_S) and still returns its log and RESULTS.md, instead of being killed at the
    device call's limit with the rest of the call's time."""
    repo, _ = _copy(tmp_path)
    _stub(tmp_path / "bin", "python3", "exec sleep 300\n")
    _stub(tmp_path / "bin", "nvidia-smi", "echo 'NVIDIA H200, 580.00, 143771 MiB, 1980 MHz'\n")
    out = tmp_path / "out"
    start = time.monotonic()
    r = _run(repo, "ops", _env(tmp_path / "bin", OUT=str(out), SG3_STAGE_S="4"), 60)
    assert time.monotonic() - start < 40, r.stdout[-2000:]
    assert (out / "RESULTS.md").read_text() == "# results\n"
    assert "stage budget" in (out / "ops.log").read_text()


# ---------------------------------------------------------------------------------------------
# What the bench scripts write on a GPU (a pretend one: torch.cuda answers, training is faked)


def _pretend_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(results, "RESULTS", tmp_path / "RESULTS.md")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")


def _fake_case(case, work, precision, sync_debug=False, compile_mode="none", tf32=False, profile=False):
    return dict(case, sec_per_kimg=1.0, mem_peak_gb=2.0, wall_s=3.0, precision=precision + (" +tf32" if tf32 else ""),
                compile=compile_mode, first_tick_s=4.0)


@pytest.mark.parametrize("tf32, want", [(False, "TF32 convolutions off / matmuls off"),
                                        (True, "TF32 convolutions on / matmuls on")])
def test_training_machine_line_gives_the_runs_tf32(monkeypatch, tmp_path, tf32, want):
    """train() sets TF32 for the run (off unless tf32) and restores torch's defaults after it: the
    machine line, written after training, said 'convolutions on' for float32 runs that had it off."""
    _pretend_gpu(monkeypatch, tmp_path)
    monkeypatch.setattr(bench_train, "run_case", _fake_case)
    bench_train.main(["--preset", "gpu", "--res", "256", "--cfg", "stylegan3-t", "--batch-gpu", "16"]
                     + (["--tf32"] if tf32 else []))
    text = results.RESULTS.read_text()
    assert "- machine: NVIDIA H200, driver" in text and want in text


_STOPPED_RUN = """
import os, signal, sys, pathlib
sys.path.insert(0, {bench!r})
import torch, bench_train, results
results.RESULTS = pathlib.Path({out!r})
calls = []
def fake(case, *a, **k):
    calls.append(case)
    if len(calls) == 2:  # gpu_session.sh's deadline: timeout sends SIGTERM during the second case
        os.kill(os.getpid(), signal.SIGTERM)
        import time; time.sleep(5)
    return dict(case, sec_per_kimg=1.0, mem_peak_gb=2.0, wall_s=3.0, precision=a[0], compile="none", first_tick_s=4.0)
bench_train.run_case = fake
bench_train.main(["--preset", "gpu", "--res", "256", "--no-write"] if {no_write} else ["--preset", "gpu", "--res", "256"])
"""


def test_training_stopped_at_the_deadline_writes_the_finished_cases(tmp_path):
    out = tmp_path / "RESULTS.md"
    r = subprocess.run([sys.executable, "-c", _STOPPED_RUN.format(bench=str(ROOT / "benchmarks"), out=str(out),
                                                                  no_write=False)],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.exists(), r.stderr[-2000:]
    text = out.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| stylegan")]
    assert len(rows) == 1 and "| stylegan3-t | 256 | 32 | 16 |" in rows[0]
    assert "stopped" in text and "1 of 5 cases" in text
    assert r.returncode != 0  # the stage's log shows the stop too


_STOPPED_AT = """
import os, signal, sys, pathlib
sys.path.insert(0, {bench!r})
import results, {module}
results.RESULTS = pathlib.Path({out!r})
real, calls = {module}.{fn}, []
def stopped_once(*a, **k):
    calls.append(1)
    if len(calls) == {at}:  # gpu_session.sh's deadline: timeout sends SIGTERM during this call
        os.kill(os.getpid(), signal.SIGTERM)
        import time; time.sleep(5)
    return real(*a, **k)
{module}.{fn} = stopped_once
{module}.main({argv!r})
"""


@pytest.mark.parametrize("module, fn, at, argv, row, n_rows, done", [
    ("bench_ops", "bench_one", 2, ["--device", "cpu", "--res", "16", "--iters", "1", "--warmup", "0"],
     "| 16 | ", 1, "1 of 5 cases"),
    ("bench_modconv", "measure", 3, ["--device", "cpu", "--cfg", "stylegan2", "--res", "8", "--batch", "1",
                                     "--iters", "1", "--warmup", "0"], "| stylegan2 | 8 | ", 2, "1 of "),  # + summary
    ("bench_widgets", "bench", 2, ["--updates", "2"], "| LatentExplorer", 1, "1 of 5 cases"),
])
def test_bench_stopped_at_the_deadline_writes_the_finished_cases(tmp_path, module, fn, at, argv, row, n_rows,
                                                                  done):
    """bench_ops, bench_modconv (the ops stage) and bench_widgets (generate's first) wrote their section only
    at the very end: the stage budget's SIGTERM (a later stage of a shared call, a slow kernel build)
    lost every figure they had measured."""
    if module == "bench_widgets":
        pytest.importorskip("ipywidgets")
    if module == "bench_modconv":
        layers = len(__import__("bench_modconv").synthesis_layers("stylegan2", 8, "fp32"))
        done += f"{layers} cases"
    out = tmp_path / "RESULTS.md"
    code = _STOPPED_AT.format(bench=str(ROOT / "benchmarks"), out=str(out), module=module, fn=fn, at=at, argv=argv)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.exists(), r.stderr[-2000:]
    text = out.read_text()
    assert "- machine: " in text and "- command: `python benchmarks/" in text
    assert len([ln for ln in text.splitlines() if ln.startswith(row)]) == n_rows, text
    assert "stopped by signal 15" in text and done in text, text
    assert r.returncode == 128 + signal.SIGTERM, r.stderr[-2000:]


def test_widgets_bench_records_its_figures(monkeypatch, tmp_path):
    """bench_widgets printed its latencies only: the GPU figure (1024 px, under 50 ms) needs a
    RESULTS.md section with the machine line, as the other benchmarks write."""
    pytest.importorskip("ipywidgets")
    import bench_widgets
    monkeypatch.setattr(results, "RESULTS", tmp_path / "RESULTS.md")
    bench_widgets.main(["--updates", "2"])
    text = results.RESULTS.read_text()
    assert "## Widgets" in text and "- machine: " in text and "- command: `python benchmarks/bench_widgets.py" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| LatentExplorer") or ln.startswith("| StyleMixer")
            or ln.startswith("| Interpolator")]
    assert len(rows) == 5
