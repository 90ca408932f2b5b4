"""Atomic writes and the output-path check: what sits at ``-o`` is never replaced unless it is a
regular file, permissions survive a rewrite, SIGTERM leaves no temporary file, and ``lrgmm fit``
/ ``lrgmm edit-fit`` refuse a bad output path before any work.

Only harmless things are created, inside the test's own folder (a FIFO, a socket, links and, when
running as root, a character device made with mknod): nothing outside tmp_path is ever a target.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from lrgmm import cli
from lrgmm.cli import main
from lrgmm.errors import LrgmmError, OutputPathError
from lrgmm.io.atomic import atomic_write, atomic_write_bytes, check_writable_target

ROOT = os.geteuid() == 0
SRC = Path(__file__).resolve().parents[1] / "src"


def _make(kind: str, path: Path) -> None:
    """Put a ``kind`` of thing at ``path``."""
    if kind == "character device":
        if not ROOT:
            pytest.skip("mknod needs root")
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # what /dev/null is, but in tmp_path
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    elif kind == "folder":
        path.mkdir()
        (path / "keep.txt").write_text("mine")
    elif kind == "symlink":
        (path.parent / "real.lrgmm").write_bytes(b"the real file")
        path.symlink_to(path.parent / "real.lrgmm")
    elif kind == "dangling symlink":
        path.symlink_to(path.parent / "nowhere")
    else:
        raise AssertionError(kind)


def _snapshot(path: Path):
    st = os.lstat(path)
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    return stat.S_IFMT(st.st_mode), st.st_ino, link


KINDS = ["character device", "fifo", "socket", "folder", "symlink", "dangling symlink"]
KIND_WORDS = {"character device": "character device", "fifo": "FIFO", "socket": "socket", "folder": "folder",
              "symlink": "symbolic link", "dangling symlink": "symbolic link"}


@pytest.mark.parametrize("kind", KINDS)
def test_only_a_regular_file_is_replaced(kind, tmp_path):
    target = tmp_path / "x"
    _make(kind, target)
    before = _snapshot(target)
    calls = []
    with pytest.raises(OutputPathError, match=f"{target}.*{KIND_WORDS[kind]}"):
        atomic_write(target, lambda tmp: calls.append(Path(tmp).write_bytes(b"\0" * 1024)))
    assert calls == []  # refused before any work
    assert _snapshot(target) == before  # same kind of thing, same inode, same link
    assert not list(tmp_path.glob(".*.tmp"))
    if kind == "symlink":
        assert (tmp_path / "real.lrgmm").read_bytes() == b"the real file"  # not written through
    with pytest.raises(OutputPathError):
        check_writable_target(target)
    assert issubclass(OutputPathError, LrgmmError) and issubclass(OutputPathError, OSError)


@pytest.mark.parametrize("name, pattern", [("", "no output file name"), ("out/", "names a folder")])
def test_empty_and_folder_names(name, pattern, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputPathError, match=pattern):
        check_writable_target(name)
    with pytest.raises(OutputPathError, match=pattern):
        atomic_write_bytes(name, b"x")
    assert list(tmp_path.iterdir()) == []


def test_folders_on_the_way(tmp_path, monkeypatch):
    # Missing folders are fine (the write creates them); the check itself creates nothing.
    deep = tmp_path / "a" / "b" / "m.lrgmm"
    assert check_writable_target(deep) == deep
    assert not (tmp_path / "a").exists()
    atomic_write_bytes(deep, b"model")
    assert deep.read_bytes() == b"model"
    # A file where a folder should be.
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OutputPathError, match=r"notes\.txt is a file, not a folder"):
        check_writable_target(tmp_path / "notes.txt" / "sub" / "m.lrgmm")
    # A folder this process may not write in (simulated: root may write anywhere).
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    with pytest.raises(OutputPathError, match=f"no permission to write in the folder {locked}"):
        atomic_write_bytes(locked / "m.lrgmm", b"x")
    assert list(locked.iterdir()) == []


def test_read_only_file_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "m.lrgmm"
    target.write_bytes(b"protected")
    target.chmod(0o444)
    real_access = os.access
    # Root passes every access check, so the refusal is simulated there.
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == target else real_access(p, mode))
    with pytest.raises(OutputPathError, match="read-only"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"protected"


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_replacing_keeps_the_permission_bits(mode, tmp_path):
    target = tmp_path / "m.lrgmm"
    target.write_bytes(b"old")
    target.chmod(mode)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == mode


@pytest.mark.skipif(not ROOT, reason="changing a file's owner needs root")
def test_replacing_keeps_the_owner(tmp_path):
    target = tmp_path / "m.lrgmm"
    target.write_bytes(b"old")
    os.chown(target, 4321, 4322)
    atomic_write_bytes(target, b"new")
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (4321, 4322)


def test_new_file_gets_the_umask_without_touching_it(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        # Reading the umask means setting it, which races with other threads creating files.
        def no_umask(mask):
            raise AssertionError("atomic_write changed the process umask")

        monkeypatch.setattr(os, "umask", no_umask)
        path = atomic_write_bytes(tmp_path / "new.png", b"x")
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_folder_is_synced_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        return real_fsync(fd)

    def replace(a, b):
        events.append(("replace", Path(b).name))
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_bytes(tmp_path / "m.lrgmm", b"x")
    assert events == [("fsync", "file"), ("replace", "m.lrgmm"), ("fsync", "folder")]


def test_target_swapped_during_the_write_is_not_replaced(tmp_path):
    target = tmp_path / "m.lrgmm"

    def write(tmp):
        Path(tmp).write_bytes(b"model")
        os.mkfifo(target)  # something else appears under the name meanwhile

    with pytest.raises(OutputPathError, match="FIFO"):
        atomic_write(target, write)
    assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.lrgmm"]  # no temporary file left


def test_sigterm_during_a_write_removes_the_temporary_file(tmp_path):
    """A real SIGTERM to a process in the middle of a write: exit status 143, no .tmp left."""
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from lrgmm.io.atomic import atomic_write

        def slow(tmp):
            Path(tmp).write_bytes(b"half a model")
            print("writing", flush=True)
            time.sleep(60)

        atomic_write(sys.argv[1], slow)
        """
    )
    target = tmp_path / "m.lrgmm"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert len(list(tmp_path.glob(".m.lrgmm.*.tmp"))) == 1
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_sigterm_handler_is_restored_and_a_custom_one_kept(tmp_path):
    assert threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM)
    atomic_write_bytes(tmp_path / "a", b"x")
    assert signal.getsignal(signal.SIGTERM) is before

    seen = []

    def mine(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        def write(tmp):
            Path(tmp).write_bytes(b"x")
            signal.raise_signal(signal.SIGTERM)  # handled by the program's own handler

        atomic_write(tmp_path / "b", write)
        assert signal.getsignal(signal.SIGTERM) is mine and seen == [signal.SIGTERM]
        assert (tmp_path / "b").read_bytes() == b"x"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_writes_from_other_threads(tmp_path):
    errors = []

    def work(i):
        try:
            atomic_write_bytes(tmp_path / f"f{i}", bytes([i]))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sorted(p.name for p in tmp_path.iterdir()) == ["f0", "f1", "f2", "f3"]


# --------------------------------------------------------------------- the command line


BAD_OUTPUTS = {
    "fifo": lambda p: (_make("fifo", p), p)[1],
    "character device": lambda p: (_make("character device", p), p)[1],
    "folder": lambda p: (_make("folder", p), p)[1],
    "symlink": lambda p: (_make("symlink", p), p)[1],
    "empty": lambda p: "",
    "parent is a file": lambda p: (p.write_text("x"), p / "m.lrgmm")[1],
}


@pytest.fixture
def no_work(monkeypatch):
    """Fitting or loading anything fails the test: the output check must come first."""
    from lrgmm.pipeline import FacePipeline

    def started(*a, **k):
        raise AssertionError("work started before the output path was checked")

    monkeypatch.setattr(FacePipeline, "fit", started)
    monkeypatch.setattr(FacePipeline, "encode", started)
    monkeypatch.setattr(cli, "_load_for_edit", started)


# An empty -o is refused by the argument parser itself (tests/test_cli.py::test_empty_output_path).
@pytest.mark.parametrize("bad", [name for name in BAD_OUTPUTS if name != "empty"])
def test_fit_and_edit_fit_check_the_output_first(bad, tmp_path, capsys, no_work, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    out = BAD_OUTPUTS[bad](tmp_path / "x")
    before = sorted(os.listdir(tmp_path))
    for argv in (["fit", "photos", "-o", str(out), "--quiet"],
                 ["edit-fit", "model.lrgmm", "--attribute", "gender", "-o", str(out), "--quiet"]):
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.startswith("error: ") and "Traceback" not in err and ".tmp" not in err
        assert (str(out) or "no output file name") in err
        assert sorted(os.listdir(tmp_path)) == before
