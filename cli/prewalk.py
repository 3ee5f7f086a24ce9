"""``pytorrent create DIR``: walk DIR in a forked process while the command starts up.

Start-up (imports, the argument parser) takes one core for some 20 ms while the other is
idle, and the walk of a directory of 5,000 files takes about 22 ms of CPU, which the
command otherwise spends while its hashing workers want both cores. So ``cli.main``,
before it imports anything else, guesses from ``sys.argv`` whether the command is
``create`` of a directory and, if so, forks a walker: it walks the directory as
:func:`torrent.create.scan` does (names sorted, links followed) and writes the files it
finds down a pipe, 256 at a time, while the parent imports and parses. It imports
nothing (importing ``torrent.create`` took it 8-12 ms, and then its walk ended after the
workers had started), so it gives up on anything that is not plain: a name the parser
would need to look at, a special file, a link loop, any error.

The guess is only a guess: the parent keeps the walk only when argparse's result names
the same path (the walk depends on nothing else), and otherwise discards it
(:func:`keep_only`). A walker that gave up ends without its last record: the parent
then walks itself (after the files it was given, which it checks are the same) and
reports whatever it finds exactly as it would have without a walker.

The walker ignores Ctrl-C (the parent decides, and discards it), and ends at its next
write once the parent is gone (the pipe then has no reader).

A record is 4 bytes of length (little-endian) and a marshalled list of
``(path, fs_path, length)`` tuples; a length of 0 ends a complete walk.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

#: Files per record.
CHUNK = 256
#: The pipe's size: a walk of some 15,000 files fits, so the walker never waits for the
#: parent to be done with its imports.
PIPE_SIZE = 1 << 20

#: ``create``'s options that take a value, and those that do not (``cli/cmd_create.py``).
_VALUED = frozenset(
    {
        *("-t", "--tracker", "-o", "--output", "-l", "--piece-length", "--comment", "--source"),
        *("-w", "--web-seed", "--format", "--name", "--threads"),
    }
)
_FLAGS = frozenset({"--tier", "-f", "--force", "--private", "--no-date"})
#: Options before the command (``cli/main.py``).
TOP_FLAGS = frozenset({"--debug", "--no-uvloop"})


def guess_path(args: Sequence[str]) -> str | None:
    """The PATH of ``create [OPTIONS] PATH [OPTIONS]`` in ``args``, or None when ``args``
    are anything else or anything less plain (an abbreviated or unknown option, ``--``,
    ``--opt=value``, grouped short flags, a second positional)."""
    i = 0
    while i < len(args) and args[i] in TOP_FLAGS:
        i += 1
    if i >= len(args) or args[i] != "create":
        return None
    path = None
    i += 1
    while i < len(args):
        arg = args[i]
        if arg in _VALUED:
            i += 2
            continue
        if arg.startswith("-"):
            if arg not in _FLAGS:
                return None
        elif path is None:
            path = arg
        else:
            return None
        i += 1
    return None if i > len(args) else path


class Walker:
    """A walk of :attr:`path` under way in the child process :attr:`pid`."""

    def __init__(self, path: str, pid: int, fd: int) -> None:
        self.path = path
        self.pid = pid
        self._fd = fd  # the pipe's read end; -1 once closed

    def chunks(self) -> Iterator[list[tuple[tuple[str, ...], str, int]] | None]:
        """The walk's files, a list at a time, in torrent order; a final None says the walk
        failed or ended early (then the caller walks itself)."""
        import marshal

        fd, self._fd = self._fd, -1
        try:
            with open(fd, "rb") as pipe:
                while True:
                    head = pipe.read(4)
                    size = int.from_bytes(head, "little")
                    if len(head) < 4:
                        yield None
                        return
                    if size == 0:
                        return
                    data = pipe.read(size)
                    if len(data) < size:
                        yield None
                        return
                    yield marshal.loads(data)
        finally:
            self._end()

    def discard(self) -> None:
        """Stop the walker (if it still runs) and reap it."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._end()

    def _end(self) -> None:
        import _signal  # type: ignore[import-not-found]  # signal without its enum import

        if self.pid:
            try:
                os.kill(self.pid, _signal.SIGKILL)
            except ProcessLookupError:  # pragma: no cover - it is ours until reaped
                pass
            os.waitpid(self.pid, 0)
            self.pid = 0


#: The walker :func:`start` forked, until :func:`take` or :func:`keep_only` hands it over.
_started: Walker | None = None


def start(argv: Sequence[str]) -> None:
    """Fork a walker when ``argv`` (``sys.argv``) looks like ``create DIR``."""
    global _started
    path = guess_path(argv[1:])
    if path is None or not hasattr(os, "fork") or not os.path.isdir(path):
        return
    import _signal  # signal without its enum import

    read, write = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, AttributeError, OSError):  # pragma: no cover - not Linux, or a lower limit
        pass
    # SIGINT is blocked across the fork: the child must not see it before it ignores it.
    mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGINT})
    pid = 0
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child (covered by the whole-process tests)
            code = 1
            try:
                _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
                _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
                os.close(read)
                _walk_into(path, write)
                code = 0
            finally:
                os._exit(code)
    except BaseException:
        os.close(read)
        raise
    finally:  # the parent's (the child never leaves the block above)
        _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)
        os.close(write)
    _started = Walker(path, pid, read)


def _walk_into(path: str, fd: int) -> None:
    """The child's work: walk ``path`` as :func:`torrent.create.scan` does, write its files
    to ``fd``. Anything but plain names, regular files and directories (and any error) ends
    it without the final record: the parent then walks itself, and says what it finds."""
    import marshal
    import stat
    from _operator import attrgetter

    rows: list[tuple[tuple[str, ...], str, int]] = []
    by_name = attrgetter("name")
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)

    def flush() -> None:
        data = marshal.dumps(rows)
        _write_all(fd, len(data).to_bytes(4, "little") + data)
        rows.clear()

    def walk(directory: str, prefix: tuple[str, ...], ancestors: frozenset[tuple[int, int]]) -> None:
        base = directory if directory.endswith(os.sep) else directory + os.sep
        # Listed through a descriptor, each entry's stat() looks its name up in that
        # directory rather than its whole path: 5,000 files, about 2 ms less.
        dir_fd = os.open(directory, flags)
        try:
            with os.scandir(dir_fd) as it:
                entries = sorted(it, key=by_name)
            walk_entries(base, entries, prefix, ancestors)
        finally:
            os.close(dir_fd)

    def walk_entries(
        base: str,
        entries: list[os.DirEntry[str]],
        prefix: tuple[str, ...],
        ancestors: frozenset[tuple[int, int]],
    ) -> None:
        for entry in entries:
            name = entry.name
            if not name.isascii() or "\\" in name or len(name) > 200 or name[1:2] == ":":
                raise LookupError(name)
            st = entry.stat()
            if stat.S_ISREG(st.st_mode):
                rows.append(((*prefix, name), base + name, st.st_size))
                if len(rows) >= CHUNK:
                    flush()
            elif stat.S_ISDIR(st.st_mode):
                ident = (st.st_dev, st.st_ino)
                if ident in ancestors:
                    raise LookupError(name)
                walk(base + name, (*prefix, name), ancestors | {ident})
            else:
                raise LookupError(name)

    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return
    walk(path, (), frozenset({(st.st_dev, st.st_ino)}))
    if rows:
        flush()
    _write_all(fd, bytes(4))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def keep_only(path: str | None) -> None:
    """Discard the walker unless it walks ``path`` (None: discard it whatever it walks)."""
    global _started
    if _started is not None and _started.path != path:
        _started.discard()
        _started = None


def take(path: str) -> Walker | None:
    """The walker of ``path``, handed over once (the caller then reads or discards it)."""
    global _started
    walker = _started
    if walker is None or walker.path != path:
        return None
    _started = None
    return walker
