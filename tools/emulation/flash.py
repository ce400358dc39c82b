"""The emulated board's flash: a block file system of a fixed size with MicroPython's errno numbers.

The ROM (``rom.py``) mounts it at ``/`` at every boot, over the runner's MEMFS directory that mirrors the
node's flash directory on the host (``tools/mpy_runtime/board.mjs``). What a board's littlefs / FAT flash
shows and this one does too:

* errors carry MicroPython's errno numbers (``OSError: [Errno 2] ENOENT``); the WebAssembly VM's own file
  system raises emscripten's (ENOENT 44), which mpremote (and firmware comparing with ``errno``) would misread;
* a fixed size in 4 KiB blocks (``os.statvfs``): a file takes its size rounded up to blocks, a directory one;
  a write, a new file or a directory that does not fit fails with ENOSPC, as on a full flash;
* every change is reported to the board (``emu_io.flash_changed``), which mirrors the flash to the host
  before the node's next console byte leaves.

Runs under MicroPython only (``emu_io`` is the board runner's module).
"""

import emu_io  # type: ignore[import-not-found, unused-ignore]

BLOCK = 4096
ENOSPC = 28
# emscripten's (WASI) errno -> MicroPython's (py/mperrno.h, the Linux numbers)
_ERRNO = {
    2: 13,  # EACCES
    8: 9,  # EBADF
    10: 16,  # EBUSY
    20: 17,  # EEXIST
    22: 27,  # EFBIG
    28: 22,  # EINVAL
    29: 5,  # EIO
    31: 21,  # EISDIR
    33: 24,  # EMFILE
    37: 36,  # ENAMETOOLONG
    43: 19,  # ENODEV
    44: 2,  # ENOENT
    48: 12,  # ENOMEM
    51: 28,  # ENOSPC
    54: 20,  # ENOTDIR
    55: 39,  # ENOTEMPTY
    63: 1,  # EPERM
    69: 30,  # EROFS
    75: 18,  # EXDEV
}

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _oserror(err: OSError) -> OSError:
    code = err.errno if err.errno is not None else 0
    return OSError(_ERRNO.get(code, code))


def _blocks(size: int) -> int:
    return max(1, (size + BLOCK - 1) // BLOCK)


class Flash:
    """``vfs``: the VM's ``os.VfsPosix`` over the MEMFS directory; ``size``: the flash's size in bytes."""

    def __init__(self, vfs: "Any", size: int) -> None:
        self._vfs = vfs
        self.total = max(2, size // BLOCK)

    def __str__(self) -> str:
        return "<EmulatedFlash>"

    def free_blocks(self) -> int:
        return self.total - int(emu_io.flash_used_blocks(BLOCK))

    # -- the VFS protocol (os.mount) ---------------------------------------------------------------------------
    def mount(self, readonly: bool, mkfs: bool) -> None:
        self._vfs.mount(readonly, mkfs)

    def umount(self) -> None:
        self._vfs.umount()

    def statvfs(self, path: str) -> "tuple[int, ...]":
        free = max(0, self.free_blocks())
        return (BLOCK, BLOCK, self.total, free, free, 0, 0, 0, 0, 255)

    def stat(self, path: str) -> "Any":
        try:
            return self._vfs.stat(path)
        except OSError as err:
            raise _oserror(err)

    def ilistdir(self, path: str) -> "Any":
        """(name, type, inode, size) per entry, as littlefs and FAT give them (VfsPosix leaves out the size)."""
        try:
            entries = list(self._vfs.ilistdir(path))
        except OSError as err:
            raise _oserror(err)
        base = path.rstrip("/") + "/" if path else ""
        for entry in entries:
            size = 0
            if entry[1] == 0x8000:
                try:
                    size = int(self._vfs.stat(base + entry[0])[6])
                except OSError:
                    size = 0
            yield (entry[0], entry[1], entry[2], size)

    def chdir(self, path: str) -> None:
        try:
            self._vfs.chdir(path)
        except OSError as err:
            raise _oserror(err)

    def getcwd(self) -> str:
        return str(self._vfs.getcwd())

    def open(self, path: str, mode: str) -> "Any":
        if "r" in mode and "+" not in mode:
            try:
                return self._vfs.open(path, mode)
            except OSError as err:
                raise _oserror(err)
        size = 0
        if "w" not in mode:
            try:
                size = int(self._vfs.stat(path)[6])
            except OSError:
                size = 0
        try:
            exists = bool(self._vfs.stat(path))
        except OSError:
            exists = False
        if not exists and self.free_blocks() < 1:
            raise OSError(ENOSPC)
        try:
            f = self._vfs.open(path, mode)
        except OSError as err:
            raise _oserror(err)
        emu_io.flash_changed()
        return _WritableFile(self, f, size)

    def mkdir(self, path: str) -> None:
        if self.free_blocks() < 1:
            raise OSError(ENOSPC)
        self._change(self._vfs.mkdir, path)

    def rmdir(self, path: str) -> None:
        self._change(self._vfs.rmdir, path)

    def remove(self, path: str) -> None:
        self._change(self._vfs.remove, path)

    def rename(self, old: str, new: str) -> None:
        # Not VfsPosix.rename: with a root directory it resolves both paths into one buffer (the source becomes
        # the target: ENOENT). The board renames in MEMFS itself.
        code = int(emu_io.flash_rename(self._absolute(old), self._absolute(new)))
        if code:
            raise OSError(_ERRNO.get(code, code))
        emu_io.flash_changed()

    def _absolute(self, path: str) -> str:
        if path.startswith("/"):
            return path
        cwd = self.getcwd().rstrip("/")
        return cwd + "/" + path

    def _change(self, op: "Any", path: str) -> None:
        try:
            op(path)
        except OSError as err:
            raise _oserror(err)
        emu_io.flash_changed()


class _WritableFile:
    """A file open for writing: each write is checked against the free blocks and reported as a change."""

    def __init__(self, fs: Flash, f: "Any", size: int) -> None:
        self._fs = fs
        self._f = f
        self._size = size

    def write(self, data: "Any") -> int:
        grow = _blocks(self._size + len(data)) - _blocks(self._size)
        if grow > 0 and grow > self._fs.free_blocks():
            raise OSError(ENOSPC)
        try:
            n = self._f.write(data)
        except OSError as err:
            raise _oserror(err)
        self._size += n if n is not None else len(data)
        emu_io.flash_changed()
        return int(n) if n is not None else len(data)

    def read(self, *args: "Any") -> "Any":
        return self._f.read(*args)

    def readinto(self, buf: "Any", *args: "Any") -> "Any":
        return self._f.readinto(buf, *args)

    def readline(self, *args: "Any") -> "Any":
        return self._f.readline(*args)

    def seek(self, *args: "Any") -> "Any":
        return self._f.seek(*args)

    def tell(self) -> "Any":
        return self._f.tell()

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()
        emu_io.flash_changed()

    def __enter__(self) -> "_WritableFile":
        return self

    def __exit__(self, *exc: "Any") -> None:
        self.close()
