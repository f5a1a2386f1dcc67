"""User errors give one line naming the culprit: read-only and full disks, checkpoints that do
not fit their model_config or are not checkpoints, torn metrics logs, bad output paths and
sizes; SIGTERM saves like Ctrl-C; a failed start leaves nothing behind."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from helpers import tiny_config
from densemtl.cli.main import main
from densemtl.config import config_from_dict
from densemtl.engine import Trainer, load_checkpoint, save_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src"
# the smallest model whose checkpoint has no optimiser state: ResNet-18 STL, SGD without momentum
SMALL = {"model.name": "stl", "tasks": "S", "optim.name": "sgd", "optim.momentum": 0.0, "schedule.iterations": 1,
         "train.eval_every": 0, "train.checkpoint_every": 1}


def _one_line_error(err: str) -> str:
    """The single ``densemtl CMD: error: ...`` line of stderr (progress bars aside)."""
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip() and not ln.startswith("eval:")]
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def small_run(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    Trainer(config_from_dict(tiny_config(synth_root, out, **SMALL))).train()
    img = (np.random.default_rng(0).random((37, 53, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(out / "x.png")
    return out / "t" / "r"


# --- item 7: read-only folder and full disk -----------------------------------------------------------
def _namespaces_work() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    r = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt 2>/dev/null || "
                        "mount -t tmpfs -o size=4k tmpfs /tmp"], capture_output=True)
    return r.returncode == 0


NEED_NS = pytest.mark.skipif(not _namespaces_work(), reason="needs `unshare -rm` (a user and mount namespace) to mount "
                             "a small read-only and a small full tmpfs; chmod cannot make a folder read-only for root")

WRITE_DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from densemtl.cli.main import main
    commands, result, inspect = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    results = {}
    for name, argv in commands.items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code
            except BaseException as e:  # an escaped exception is a failure of the test, reported
                rc, err = "raised", io.StringIO(repr(e))
        results[name] = [rc, err.getvalue()]
    from pathlib import Path
    from densemtl.engine import load_checkpoint
    for folder in inspect:  # what the commands left on the (private) file systems
        results[folder] = {p.name: (load_checkpoint(p)["iteration"] if p.suffix == ".pt" else None)
                           for p in sorted(Path(folder).iterdir())}
    json.dump(results, open(result, "w"))
    """
)


def _run_in_namespace(tmp_path, mounts: str, commands: dict, inspect=()) -> dict:
    """Mount ``mounts`` (shell) in a private mount namespace, run each densemtl command there and
    report ``{name: [exit code, stderr]}`` and, for each folder of ``inspect``, its files."""
    driver, result = tmp_path / "driver.py", tmp_path / "result.json"
    driver.write_text(WRITE_DRIVER)
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    script = f"set -e\n{mounts}\nexec {sys.executable} {driver} '{json.dumps(commands)}' {result} '{json.dumps(list(map(str, inspect)))}'"
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(result.read_text())


@pytest.mark.slow
@NEED_NS
def test_read_only_and_full_disk_name_the_path_and_the_cause(small_run, synth_root, tmp_path):
    ro, full = tmp_path / "ro", tmp_path / "full"
    ro.mkdir(), full.mkdir()
    img, run = str(small_run.parents[1] / "x.png"), str(small_run)
    mounts = (f"mount -t tmpfs -o ro,size=1m tmpfs {ro}\nmount -t tmpfs -o size=64k tmpfs {full}\n"
              f"mkdir {full}/out\nhead -c 1000000 /dev/zero > {full}/filler 2>/dev/null || true")
    cmds = {}
    for disk, d, cause in (("ro", ro, "Read-only file system"), ("full", full, "No space left on device")):
        out = d / "out" if disk == "full" else d
        cmds[f"{disk} export"] = (["export", run, "--onnx", str(out / "m.onnx")], out / "m.onnx", cause)
        cmds[f"{disk} predict"] = (["predict", run, img, "--out", str(out / "p")], out / "p", cause)
        cmds[f"{disk} predict existing folder"] = (["predict", run, img, "--out", str(out)], out, cause)
        cmds[f"{disk} eval --json"] = (["eval", run, "--no-boundary", "--json", str(out / "m.json")], out / "m.json", cause)
        cmds[f"{disk} data synth"] = (["data", "synth", "--out", str(out / "s"), "--num", "2", "--size", "48x32",
                                       "--workers", "1"], out / "s", cause)
    got = _run_in_namespace(tmp_path, mounts, {k: v[0] for k, v in cmds.items()})
    for name, (_, path, cause) in cmds.items():
        rc, err = got[name]
        line = _one_line_error(err)
        assert rc == 2, (name, err)
        assert str(path) in line and cause in line and ("write elsewhere" in line), (name, line)
        assert "inline_container" not in line and ".tmp-" not in line, (name, line)


@pytest.mark.slow
@NEED_NS
def test_checkpoint_on_a_full_disk_keeps_the_previous_one(synth_root, small_run, tmp_path):
    size = (small_run / "checkpoints" / "last.pt").stat().st_size
    disk = tmp_path / "disk"
    disk.mkdir()
    cfg = tmp_path / "c.yaml"  # room for one checkpoint and the logs, not for the next one's temporary file
    cfg.write_text(yaml.safe_dump(tiny_config(synth_root, disk, **{**SMALL, "schedule.iterations": 3})))
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg_ro = tmp_path / "c_ro.yaml"  # and a run whose output folder is read-only
    cfg_ro.write_text(yaml.safe_dump(tiny_config(synth_root, ro, **SMALL)))
    ckpts = disk / "t" / "r" / "checkpoints"
    got = _run_in_namespace(tmp_path, f"mount -t tmpfs -o size={int(size * 1.5) + 2**20} tmpfs {disk}\n"
                                      f"mount -t tmpfs -o ro tmpfs {ro}",
                            {"train": ["train", str(cfg)], "train read-only": ["train", str(cfg_ro)]}, inspect=[ckpts])
    rc, err = got["train"]
    line = _one_line_error(err)
    assert rc == 2 and f"{ckpts / 'last.pt'}: No space left on device (free space" in line, line
    assert "the checkpoint was not written; the previous one is unchanged" in line and "inline_container" not in line
    assert got[str(ckpts)] == {"last.pt": 1}  # the first checkpoint, whole; no temporary file left
    rc, err = got["train read-only"]
    assert rc == 2 and f"{ro / 't'}: Read-only file system (write elsewhere)" in _one_line_error(err)


def test_failed_checkpoint_write_is_an_os_error_naming_the_file(tmp_path, monkeypatch):
    """Without namespaces: the write fails as on a full disk (ENOSPC from the file's write,
    which torch reports as a RuntimeError from its zip writer); the old file stays."""
    import errno

    import densemtl.engine.checkpoint as ck
    from densemtl.fileio import os_error_message

    path = save_checkpoint({"iteration": 1}, tmp_path / "last.pt")

    def full_write(obj, p):
        with open(p, "wb") as f:
            f.write(b"PK")
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 768 vs 662")

    monkeypatch.setattr(ck, "_write", full_write)
    with pytest.raises(OSError) as e:
        save_checkpoint({"iteration": 2}, path)
    msg = os_error_message(e.value)
    assert msg.startswith(f"{path}: No space left on device (free space") and "previous one is unchanged" in msg
    assert "inline_container" not in msg
    assert load_checkpoint(path)["iteration"] == 1 and not list(tmp_path.glob(".*tmp*"))


def test_path_under_a_file_is_named(small_run, tmp_path, capsys):
    """ENOTDIR (a part of the path is a file) needs no privileges."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for argv in (["eval", str(small_run), "--no-boundary", "--json", str(blocker / "m.json")],
                 ["data", "synth", "--out", str(blocker / "s"), "--num", "2", "--size", "48x32", "--workers", "1"]):
        assert main(argv) == 2
        line = _one_line_error(capsys.readouterr().err)
        assert str(blocker) in line and "Not a directory (a part of the path is a file, not a folder)" in line, line


# --- item 9: a checkpoint whose model_config disagrees with its weights ----------------------------------------
@pytest.mark.slow
def test_checkpoint_whose_config_does_not_fit_its_weights(small_run, tmp_path, capsys):
    ck = load_checkpoint(small_run / "checkpoints" / "last.pt")
    ck.pop("path")
    bad = json.loads(json.dumps(ck["model_config"]))
    bad["num_classes"] = 5  # the semseg head holds 8 classes
    f = save_checkpoint({**ck, "model_config": bad}, tmp_path / "edited.pt")
    img = str(small_run.parents[1] / "x.png")
    for argv in (["eval", str(f), "--no-boundary"], ["predict", str(f), img, "--out", str(tmp_path / "p")],
                 ["export", str(f), "--onnx", str(tmp_path / "m.onnx")]):
        assert main(argv) == 2
        line = _one_line_error(capsys.readouterr().err)
        assert str(f) in line and "do not fit the model its model_config describes" in line, line
        assert "shape mismatch" in line and "(8, " in line and "(5, " in line and "Error(s) in loading" not in line, line
    missing = dict(ck["model"])
    key = sorted(missing)[0]
    del missing[key]
    f2 = save_checkpoint({**ck, "model": missing}, tmp_path / "missing.pt")
    assert main(["predict", str(f2), img, "--out", str(tmp_path / "p")]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"1 tensor(s) missing, e.g. {key}" in line and str(f2) in line


# --- item 11: a torn last line in metrics.jsonl -----------------------------------------------------------------
@pytest.mark.slow
def test_torn_last_metrics_line_neither_blocks_resume_nor_the_table(synth_root, tmp_path, capsys):
    Trainer(config_from_dict(tiny_config(synth_root, tmp_path, **{**SMALL, "schedule.iterations": 2, "train.eval_every": 1}))).train()
    run = tmp_path / "t" / "r"
    log = run / "metrics.jsonl"
    n = len(log.read_text().splitlines())
    with open(log, "a") as f:
        f.write('{"type": "eval", "iter": 3, "score": 0.5, "semseg/mIoU": 1')  # a crash while appending
    capsys.readouterr()
    assert main(["table", str(tmp_path / "t")]) == 0
    out, err = capsys.readouterr()
    assert "| STL (resnet18) |" in out and f"{log}:{n + 1}: last line is incomplete" in err
    assert main(["train", "--resume", str(run), "schedule.iterations=3"]) == 0
    assert "last line is incomplete" in capsys.readouterr().err
    recs = [json.loads(x) for x in log.read_text().splitlines()]  # the torn line is gone, the run went on
    assert [r["iter"] for r in recs if r["type"] == "train"] == [1, 2, 3]
    # a bad line before the end is corruption: an error naming the file and line
    lines = log.read_text().splitlines()
    lines[1] = lines[1][:10]
    log.write_text("\n".join(lines) + "\n")
    assert main(["train", "--resume", str(run), "schedule.iterations=4"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert f"{log}:2: not a JSON record" in line
    assert main(["table", str(tmp_path / "t")]) == 2
    assert f"skipping {log}:2: not a JSON record" in capsys.readouterr().err


# --- item 12: --out that is a file, --size that is not HxW ---------------------------------------------------------
def test_output_paths_and_sizes_are_checked_when_parsing(small_run, tmp_path, capsys):
    afile = tmp_path / "o"
    afile.write_text("not a folder")
    img = str(small_run.parents[1] / "x.png")
    for argv in (["predict", str(small_run), img, "--out", str(afile)],
                 ["data", "synth", "--out", str(afile), "--num", "2"],
                 ["eval", str(small_run), "--save-predictions", str(afile)]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"{afile} is an existing file; expected a folder" in err and "Traceback" not in err
    for argv in (["eval", str(small_run), "--json", str(tmp_path)], ["table", str(small_run), "--csv", str(tmp_path)]):
        with pytest.raises(SystemExit):
            main(argv)
        assert f"{tmp_path} is a folder; expected a file path" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", str(small_run), img, "--out", str(tmp_path / "p"), "--size", "big"])
    assert "argument --size: expected HxW with two positive integers (height x width), e.g. 448x576; got 'big'" in \
        capsys.readouterr().err
    assert afile.read_text() == "not a folder"


# --- item 13: convert / eval on random bytes or a malicious pickle ---------------------------------------------------
def test_random_bytes_and_pickled_code_are_not_checkpoints(tmp_path, capsys):
    rnd = tmp_path / "random.pkl"
    rnd.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    flag = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": Payload()}, evil)
    for f, needle in ((rnd, "not a checkpoint: neither a torch.save zip archive nor a pickle"),
                      (evil, "holds Python objects other than tensors, which are not loaded")):
        for argv in (["convert", "official", str(f), "--out", str(tmp_path / "o.pt")], ["eval", str(f)]):
            assert main(argv) == 2
            line = _one_line_error(capsys.readouterr().err)
            assert str(f) in line and needle in line and "weights_only" not in line, line
    assert not flag.exists() and not (tmp_path / "o.pt").exists()


# --- item 14: SIGTERM, stale temporary files, no empty run directory -----------------------------------------
@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_143(synth_root, tmp_path):
    """As a scheduler does: SIGTERM to every process of the job, DataLoader workers included."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(synth_root, tmp_path, **{**SMALL, "schedule.iterations": 10000,
                                                                       "train.checkpoint_every": 0, "data.num_workers": 2})))
    proc = subprocess.Popen([sys.executable, "-m", "densemtl", "train", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            start_new_session=True)
    log = tmp_path / "t/r/metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (log.is_file() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "interrupted at iteration" in out and "--resume" in out and "Traceback" not in out
    assert load_checkpoint(tmp_path / "t/r/checkpoints/last.pt")["iteration"] >= 2


def test_a_swallowed_sigterm_stops_training_at_the_next_step():
    """Python swallows an exception raised by a signal handler in some places (e.g. in the
    fork handlers run while a DataLoader worker starts): the next step raises it; a second
    SIGTERM (while the checkpoint is saved) is ignored."""
    from densemtl.engine.signals import Terminated, TerminationHook, exit_code

    hook = TerminationHook()
    hook.before_train(None)
    try:
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs here
        hook._handle(signal.SIGTERM, None)  # a second one: ignored (returns)
        with pytest.raises(Terminated) as e:
            hook.after_step(None, {})
        assert exit_code(e.value) == 143 and exit_code(KeyboardInterrupt()) == 130
    finally:
        hook.after_train(None)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_swallowed_ctrl_c_stops_training_at_the_next_step():
    """The same for SIGINT: Python's own Ctrl-C handler raised a KeyboardInterrupt that, once
    swallowed, was lost and training went on (784 more steps once on a loaded machine)."""
    from densemtl.engine.signals import TerminationHook, exit_code

    before = signal.getsignal(signal.SIGINT)
    hook = TerminationHook()
    hook.before_train(None)
    try:
        try:  # the interrupt, swallowed where the signal arrived
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass
        with pytest.raises(KeyboardInterrupt) as e:
            hook.after_step(None, {})
        assert exit_code(e.value) == 130
    finally:
        hook.after_train(None)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.slow
def test_stale_temporary_checkpoint_is_removed_on_resume(synth_root, tmp_path, capsys):
    Trainer(config_from_dict(tiny_config(synth_root, tmp_path, **SMALL))).train()
    run = tmp_path / "t" / "r"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that is no longer running
    stale = run / "checkpoints" / f".last.pt.tmp-{dead.pid}"
    stale.write_bytes(b"PK\x03\x04 half a checkpoint")
    alive = run / "checkpoints" / f".best.pt.tmp-{os.getppid()}"  # a live writer's file is left alone
    alive.write_bytes(b"PK")
    assert main(["train", "--resume", str(run), "schedule.iterations=2"]) == 0
    assert not stale.exists() and alive.exists()
    assert f"removed {stale}: left by an interrupted checkpoint write" in capsys.readouterr().out


def test_failed_start_leaves_no_run_directory(synth_root, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    for f in (data / "images").glob("*.png"):
        f.write_bytes(b"not a png")  # every image unreadable: the first batch fails
    out = tmp_path / "runs"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(data, out, **SMALL)))
    assert main(["train", str(cfg)]) == 2
    assert "images/" in capsys.readouterr().err  # the data error names the file
    assert not out.exists()
    # an existing output folder stays; only what the failed run created goes
    (out / "t" / "other").mkdir(parents=True)
    assert main(["train", str(cfg)]) == 2
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["t", "t/other"]
