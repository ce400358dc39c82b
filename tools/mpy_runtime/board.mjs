// The emulated shelf-node board (runner.mjs --node): the real MicroPython VM behind a console that behaves like a
// board's USB serial port, so stock mpremote, a person at `mpremote repl` and the hub can all use it.
//
// spec (JSON file named by MPY_NODE_SPEC_FILE):
//   {"fd": N, "flash_dir": "/host/dir", "flash_bytes": N, "files": {path: base64}, "epoch_ms": <wall-clock ms of
//    time zero>, "log": "/host/node.log" | null, "max_pending": 65536, "unique_id": "hex", "plan": "/emu/plan.json",
//    "radio_fd": N | null}
//
// What the host side sees on fd N (a pty master) is what a board's console shows:
// * Power on: the ROM (tools/emulation/rom.py, under /rom in MEMFS, outside the flash) builds the board's
//   hardware and mounts the flash at "/"; then boot.py and main.py run from the flash, as on a board. main.py's
//   asyncio.run starts the program (the firmware); when it ends, the friendly REPL is printed and takes input.
// * Console input while the program runs goes to the program (emu_io.read); Ctrl-C interrupts it: the board
//   raises KeyboardInterrupt at the program's next hardware access (clock or console), the traceback is printed
//   and the REPL comes up. (A program that touches no hardware for a second is stopped by the board instead.)
// * The REPL is the VM's own event-driven REPL: friendly, raw (Ctrl-A), Ctrl-B, Ctrl-C. Raw-paste (Ctrl-E 'A'
//   Ctrl-A, with its flow control) is the board's: the WebAssembly VM's own reads stdin, which it cannot, so the
//   board takes the paste and hands it to the raw REPL whole. Ctrl-D at an empty line (or SystemExit) is a soft
//   reboot: "MPY: soft reboot", a fresh interpreter with the flash kept, boot.py, then main.py (friendly REPL) or
//   the raw REPL again (raw REPL, as mpremote expects). machine.reset() is a hard reset: the same, as power on.
//   Each interpreter lives in a worker thread of its own, ended at a reboot (see runBoard).
// * Console output: LF becomes CRLF outside frames (MicroPython's cooked stdout); frames (between 0x00
//   delimiters, written with sys.stdout.buffer.write) pass unchanged. Writes are non-blocking; what the other
//   side does not take is held up to max_pending bytes and dropped beyond (counted, emu_io.dropped()).
// * The flash is a directory on the host: loaded into MEMFS (/flash) at every boot, mounted by the ROM as a
//   block file system of flash_bytes with MicroPython's errno numbers (tools/emulation/flash.py), and mirrored
//   back (changed files by atomic rename, removed files and directories removed) whenever the ROM reports a
//   change: before any console byte leaves and every second, so the host's copy is never older than what the
//   node has said. A reboot or reset mirrors the old interpreter's flash before the next one loads it.
// * The log file gets the console's text (frames left out) and the board's own notes (resets, LED).
//
// * The radio (spec "radio_fd": N, optional): a SOCK_SEQPACKET socket to the node's peripheral on the emulation
//   host's air (tools/emulation/radio/peripheral.py), one frame per message (a type byte, little-endian fields:
//   tools/emulation/bluetooth.py lists them). With it the ROM has a `bluetooth` module (tools/emulation/bluetooth.py)
//   and this runner offers it the JS module `emu_ble`: outgoing frames built three bytes per call, incoming event
//   frames queued (at most RADIO_QUEUE writes; connects and disconnects always), and what the module must know
//   without entering the VM kept here: connections and their MTU, tx credits, advertising. The events reach the
//   program's IRQ handler through the ROM's ble_dispatch, called from the 2 ms poll only while main.py's program
//   runs: the VM is idle between two steps of its event loop then (at the REPL they wait). Every interpreter (power
//   on, soft reboot, hard reset) starts with a MSG_RESET carrying a new generation, written by the main thread
//   before the worker exists: to the radio, the old radio is gone (connections drop, advertising stops); the
//   worker takes no event until the radio's MSG_READY for its generation. The process's end closes the socket.
//
// On stdout, one JSON object per line for the host: {"event": "ready"} once the board has powered on (its
// firmware runs, or its REPL waits, or it failed: then "exit" follows), {"event": "reset",
// "kind": "soft"|"hard"}, {"event": "program", "running": true} when main.py's program starts and {"event":
// "program", "running": false, "ok": bool, "error": "Type"} when it ends,
// {"event": "exit", "ok": false, "error": "..."} when the board cannot run (the ROM failed). SIGTERM / SIGINT
// or the end of stdin (the host is gone) mirror the flash, flush the console and exit.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { install, installEncoded, mkdirs } from "./vmfs.mjs";

const FORCED_EXIT = 0x100; // what the VM's REPL returns for Ctrl-D at an empty line and for SystemExit
const CTRL_A = 1, CTRL_B = 2, CTRL_C = 3, CTRL_D = 4, CTRL_E = 5;
const INPUT_MAX = 4096; // the board's receive buffer: bytes the program or the REPL has not taken yet
const PASTE_WINDOW = 256; // raw-paste flow control: bytes the host may send ahead
const PASTE_MAX = 256 * 1024; // the largest raw-paste the board takes
const BACKSTOP_MS = 1000;
const POLL_MS = 2;
const FLASH_MEM = "/flash";
const ROM_MEM = "/rom";
// machine.reset_cause() values (MicroPython's machine constants on ESP32 / RP2)
const CAUSE = { power: 1, hard: 2, wdt: 3, soft: 5 };
// The radio's frames this runner reads or writes itself (tools/emulation/bluetooth.py MSG_*: keep in step).
const RADIO = {
  RESET: 0x01, ACTIVE: 0x02, ADVERTISE: 0x08, ADV_STOP: 0x09, NOTIFY: 0x0a,
  READY: 0x81, CONNECTED: 0x82, DISCONNECTED: 0x83, WRITE: 0x84, MTU_EXCHANGED: 0x85, SENT: 0x86,
};
const RADIO_CREDITS = 8; // bluetooth.TX_CREDITS: notifications in flight before gatts_notify raises ENOMEM
const RADIO_QUEUE = 256; // client writes waiting for the program's IRQ handler; more are dropped and counted
const RADIO_PENDING_MAX = 256 * 1024; // outgoing bytes held while the radio does not read; more are dropped
const RADIO_FRAME_MAX = 64 * 1024;
const MIN_MTU = 23;

function status(obj) {
  try { fs.writeSync(1, JSON.stringify(obj) + "\n"); } catch (e) { /* the host is gone */ }
}

class Console {
  constructor(fd, logPath, maxPending) {
    this.fd = fd;
    this.log = logPath ? fs.openSync(logPath, "a") : null;
    this.maxPending = maxPending;
    this.buf = [];
    this.flushQueued = false;
    this.inFrame = false;
    this.last = 0;
    this.logInFrame = false;
    this.pending = [];
    this.pendingBytes = 0;
    this.dropped = 0;
    this.retry = null;
    this.readBuf = Buffer.alloc(4096);
    this.beforeWrite = () => {};
  }

  // Bytes the VM printed (or the board's own text): LF -> CRLF outside frames.
  put(bytes) {
    for (const b of bytes) {
      if (b === 0) this.inFrame = !this.inFrame;
      else if (!this.inFrame && b === 10 && this.last !== 13) this.buf.push(13);
      this.buf.push(b);
      this.last = b;
    }
    this.queue();
  }

  text(s) { this.put(Buffer.from(s, "utf8")); }

  // Bytes that must pass exactly as they are (raw-paste replies and flow control); not logged.
  raw(bytes) {
    this.flush();
    this.send(Buffer.from(bytes));
  }

  close() {
    if (this.log !== null) { try { fs.closeSync(this.log); } catch (e) { /* already closed */ } this.log = null; }
  }

  note(s) {
    if (this.log === null) return;
    this.flush(); // what the console said before this note is logged before it
    try { fs.writeSync(this.log, s); } catch (e) { /* disk full: keep running */ }
  }

  queue() {
    if (!this.flushQueued) { this.flushQueued = true; setImmediate(() => this.flush()); }
  }

  flush() {
    this.flushQueued = false;
    if (!this.buf.length) return;
    this.beforeWrite(); // what the node stored reaches the host's disk before anything it says
    const data = Buffer.from(this.buf);
    this.buf = [];
    if (this.log !== null) {
      const text = [];
      for (const b of data) {
        if (b === 0) this.logInFrame = !this.logInFrame;
        else if (!this.logInFrame && b !== 13) text.push(b);
      }
      if (text.length) this.note(Buffer.from(text));
    }
    this.send(data);
  }

  send(data) {
    if (this.pendingBytes + data.length > this.maxPending) { this.dropped += data.length; return; }
    this.pending.push(data);
    this.pendingBytes += data.length;
    if (this.retry === null) this.drain();
  }

  drain() {
    this.retry = null;
    while (this.pending.length) {
      const buf = this.pending[0];
      let n;
      try { n = fs.writeSync(this.fd, buf); } catch (e) {
        if (e.code === "EAGAIN" || e.code === "EWOULDBLOCK") { this.retry = setTimeout(() => this.drain(), 20); return; }
        this.dropped += this.pendingBytes; this.pending.length = 0; this.pendingBytes = 0; return; // EIO: nobody can read it
      }
      this.pendingBytes -= n;
      if (n < buf.length) this.pending[0] = buf.subarray(n); else this.pending.shift();
    }
  }

  // What has arrived from the other side (null: nothing now).
  read() {
    let n = 0;
    try { n = fs.readSync(this.fd, this.readBuf, 0, this.readBuf.length, null); } catch (e) {
      if (e.code === "EAGAIN" || e.code === "EWOULDBLOCK" || e.code === "EIO") return null;
      throw e;
    }
    return n > 0 ? Buffer.from(this.readBuf.subarray(0, n)) : null;
  }
}

// The board's end of the radio link (one per interpreter: the worker's). Frames are whole SOCK_SEQPACKET messages,
// so a worker ended mid-way never leaves half a frame behind.
class RadioLink {
  constructor(fd, gen) {
    this.fd = fd;
    this.gen = gen; // this interpreter's MSG_RESET generation: events count from the radio's MSG_READY for it
    this.synced = false;
    this.closed = false;
    this.readBuf = Buffer.alloc(RADIO_FRAME_MAX);
    this.queue = []; // event frames for the ROM (CONNECTED, DISCONNECTED, WRITE, MTU_EXCHANGED)
    this.cur = null; // the frame the ROM is reading (emu_ble.next)
    this.out = null; // the frame the ROM is building (emu_ble.begin .. end)
    this.pending = [];
    this.pendingBytes = 0;
    this.retry = null;
    this.conns = new Map(); // connection handle -> ATT MTU
    this.credits = RADIO_CREDITS;
    this.advertising = false;
    this.mac = null; // the radio's address (display order), from MSG_READY
    this.dropped = 0;
  }

  // What the radio has sent (from the poll): the state is updated at once, events are queued for the ROM.
  read() {
    while (!this.closed) {
      let n;
      try { n = fs.readSync(this.fd, this.readBuf, 0, this.readBuf.length, null); } catch (e) {
        if (e.code === "EAGAIN" || e.code === "EWOULDBLOCK") return;
        this.gone();
        return;
      }
      if (n === 0) { this.gone(); return; }
      this.take(Buffer.from(this.readBuf.subarray(0, n)));
    }
  }

  take(f) {
    const type = f[0];
    if (!this.synced) { // what the radio says before it has seen this interpreter's reset was for the last one
      if (type === RADIO.READY && f.length >= 12 && f.readUInt32LE(1) === this.gen) {
        this.synced = true;
        this.mac = [...f.subarray(6, 12)];
      }
      return;
    }
    switch (type) {
      case RADIO.SENT:
        this.credits = Math.min(RADIO_CREDITS, this.credits + f.readUInt16LE(1));
        return;
      case RADIO.CONNECTED:
        this.conns.set(f.readUInt16LE(1), MIN_MTU);
        this.advertising = false; // a connection ends (legacy) advertising
        break;
      case RADIO.DISCONNECTED:
        this.conns.delete(f.readUInt16LE(1));
        break;
      case RADIO.MTU_EXCHANGED: {
        const conn = f.readUInt16LE(1);
        if (this.conns.has(conn)) this.conns.set(conn, f.readUInt16LE(3));
        break;
      }
      case RADIO.WRITE:
        if (this.queue.length >= RADIO_QUEUE) { this.dropped++; return; }
        break;
      default:
        return;
    }
    this.queue.push(f);
  }

  gone() { // the host's radio closed its end (the emulator stops): nothing is connected any more
    this.closed = true;
    this.conns.clear();
    this.advertising = false;
    this.pending = [];
    this.pendingBytes = 0;
  }

  // A frame the ROM built: the state it implies, then out (or held while the socket is full).
  send(f) {
    if (f[0] === RADIO.ADVERTISE) this.advertising = true;
    else if (f[0] === RADIO.ADV_STOP) this.advertising = false;
    else if (f[0] === RADIO.ACTIVE && !f[1]) { // the stack stops: its connections and buffers with it, no IRQs
      this.advertising = false;
      this.conns.clear();
      this.credits = RADIO_CREDITS;
      this.queue = [];
    }
    if (this.closed) return;
    if (this.pendingBytes + f.length > RADIO_PENDING_MAX) { // the radio stalled: the frame is lost, not its credit
      if (f[0] === RADIO.NOTIFY) this.credits = Math.min(RADIO_CREDITS, this.credits + 1);
      return;
    }
    this.pending.push(f);
    this.pendingBytes += f.length;
    if (this.retry === null) this.drain();
  }

  drain() {
    this.retry = null;
    while (this.pending.length && !this.closed) {
      try { fs.writeSync(this.fd, this.pending[0]); } catch (e) {
        if (e.code === "EAGAIN" || e.code === "EWOULDBLOCK" || e.code === "ENOBUFS") {
          this.retry = setTimeout(() => this.drain(), 5);
          return;
        }
        this.gone();
        return;
      }
      this.pendingBytes -= this.pending.shift().length;
    }
  }

  // emu_ble: the ROM's bluetooth module's view (ints and booleans only: no allocation in the VM per call).
  module() {
    return {
      next: () => { this.cur = this.queue.length ? this.queue.shift() : null; return this.cur === null ? 0 : this.cur[0]; },
      size: () => (this.cur === null ? 0 : this.cur.length - 1),
      get: (off, n) => {
        let v = 0;
        for (let i = n - 1; i >= 0; i--) v = v * 256 + (this.cur !== null && 1 + off + i < this.cur.length ? this.cur[1 + off + i] : 0);
        return v;
      },
      begin: (type) => { this.out = [type]; },
      put: (v, n) => { for (let i = 0; i < n; i++) { this.out.push(v & 0xff); v = Math.floor(v / 256); } },
      end: () => { const f = Buffer.from(this.out); this.out = null; this.send(f); },
      mtu: (conn) => this.conns.get(conn) || 0, // 0: not connected
      connections: () => this.conns.size,
      advertising: () => this.advertising,
      take: () => { if (this.credits <= 0) return false; this.credits--; return true; },
      give: () => { this.credits = Math.min(RADIO_CREDITS, this.credits + 1); },
      mac: (i) => (this.mac === null ? -1 : this.mac[i]),
      dropped: () => this.dropped,
    };
  }
}

// The main thread's MSG_RESET before each interpreter: blocking (briefly) if the socket is full, since the new
// worker's frames must follow it.
function radioReset(fd, gen) {
  const f = Buffer.alloc(5);
  f[0] = RADIO.RESET;
  f.writeUInt32LE(gen >>> 0, 1);
  const deadline = Date.now() + 2000;
  for (;;) {
    try { fs.writeSync(fd, f); return; } catch (e) {
      if ((e.code !== "EAGAIN" && e.code !== "EWOULDBLOCK" && e.code !== "ENOBUFS") || Date.now() > deadline) return;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    }
  }
}

// The flash's host directory <-> an interpreter's MEMFS directory FLASH_MEM.
class HostFlash {
  constructor(dir) {
    this.dir = dir;
    this.files = new Map(); // rel -> contents last written to (or read from) the host
    this.dirs = new Set();
  }

  load(FS) {
    this.files.clear();
    this.dirs.clear();
    mkdirs(FS, FLASH_MEM);
    fs.mkdirSync(this.dir, { recursive: true });
    const walk = (hostDir, rel) => {
      for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
        if (entry.name.endsWith(".sync-tmp")) continue;
        const r = rel ? `${rel}/${entry.name}` : entry.name;
        const h = path.join(hostDir, entry.name);
        if (entry.isDirectory()) { FS.mkdir(`${FLASH_MEM}/${r}`); this.dirs.add(r); walk(h, r); }
        else { const data = fs.readFileSync(h); FS.writeFile(`${FLASH_MEM}/${r}`, data); this.files.set(r, data); }
      }
    };
    walk(this.dir, "");
  }

  sync(FS) {
    const seenFiles = new Set();
    const seenDirs = new Set();
    const walk = (rel) => {
      const memDir = rel ? `${FLASH_MEM}/${rel}` : FLASH_MEM;
      for (const name of FS.readdir(memDir)) {
        if (name === "." || name === "..") continue;
        const r = rel ? `${rel}/${name}` : name;
        const h = path.join(this.dir, r);
        if (FS.isDir(FS.stat(`${memDir}/${name}`).mode)) {
          seenDirs.add(r);
          if (!this.dirs.has(r)) { fs.mkdirSync(h, { recursive: true }); this.dirs.add(r); }
          walk(r);
          continue;
        }
        seenFiles.add(r);
        const data = Buffer.from(FS.readFile(`${memDir}/${name}`));
        const prev = this.files.get(r);
        if (prev !== undefined && prev.equals(data)) continue;
        fs.writeFileSync(h + ".sync-tmp", data);
        fs.renameSync(h + ".sync-tmp", h);
        this.files.set(r, data);
      }
    };
    walk("");
    for (const r of [...this.files.keys()]) {
      if (seenFiles.has(r)) continue;
      try { fs.unlinkSync(path.join(this.dir, r)); } catch (e) { /* already gone */ }
      this.files.delete(r);
    }
    const gone = [...this.dirs].filter((r) => !seenDirs.has(r)).sort((a, b) => b.length - a.length);
    for (const r of gone) {
      try { fs.rmSync(path.join(this.dir, r), { recursive: true, force: true }); } catch (e) { /* best effort */ }
      this.dirs.delete(r);
    }
  }

  // Blocks in use on the emulated block device: each file its size rounded up to blocks (at least one), each
  // directory one.
  usedBlocks(FS, block) {
    let used = 1; // the root directory
    const walk = (memDir) => {
      for (const name of FS.readdir(memDir)) {
        if (name === "." || name === "..") continue;
        const st = FS.stat(`${memDir}/${name}`);
        if (FS.isDir(st.mode)) { used += 1; walk(`${memDir}/${name}`); }
        else used += Math.max(1, Math.ceil(st.size / block));
      }
    };
    walk(FLASH_MEM);
    return used;
  }
}

export class Board {
  // boot: how this interpreter starts: {kind: "power" | "soft" | "hard", raw (a soft reboot from the raw REPL),
  // input (console bytes the last interpreter had not taken), pending (console bytes it had not got out)}
  constructor(spec, romFiles, heapBytes, boot) {
    this.spec = spec;
    this.rom = romFiles;
    this.heap = heapBytes;
    this.boot = boot;
    this.console = new Console(spec.fd, spec.log, spec.max_pending || 65536);
    this.console.beforeWrite = () => this.syncFlash();
    this.flash = new HostFlash(spec.flash_dir);
    this.radio = spec.radio_fd == null ? null : new RadioLink(spec.radio_fd, boot.radioGen);
    this.vm = null; // the interpreter: {mp, rom, dirty, mute, skip, program (main.py's task runs), bleDispatch}
    this.mode = "off"; // off | boot | program | repl
    this.raw = false; // the REPL is in raw mode
    this.rawEmpty = true; // ... with an empty line
    this.probe = []; // bytes held while a raw-paste request may be arriving
    this.paste = null; // a raw-paste being received: {data, window, aborted}
    this.replQueue = [...boot.input];
    this.programInput = [];
    this.inputDropped = 0;
    this.interrupting = false;
    this.backstop = null;
    this.resetRequest = null;
    this.resetCause = CAUSE[boot.kind];
    this.pumping = false;
    this.exiting = false;
  }

  // -- power on, reboots, shutdown ------------------------------------------------------------------------------
  async start() {
    const { kind, raw } = this.boot;
    if (this.boot.pending.length) this.console.send(Buffer.from(this.boot.pending));
    if (kind === "soft") this.console.text("MPY: soft reboot\r\n");
    if (kind !== "power") {
      this.console.note(`[${kind} reset]\n`);
      status({ event: "reset", kind });
    }
    this.mode = "boot";
    setInterval(() => this.poll(), POLL_MS);
    setInterval(() => { try { this.syncFlash(); } catch (e) { status({ event: "warning", error: String(e) }); } }, 1000);
    let vm;
    try {
      vm = await this.newVM();
    } catch (e) {
      // The board cannot start (its ROM or hardware failed): as on a board, the traceback is on the console.
      const err = e.name === "PythonError" ? e.message : String((e && e.stack) || e);
      this.console.text(err + "\n");
      if (kind === "power") status({ event: "ready" });
      this.shutdown(1, { event: "exit", ok: false, error: err });
      return;
    }
    this.bootScripts(vm, raw);
    if (kind === "power") status({ event: "ready" }); // the firmware runs, or the REPL waits, or it reset already
  }

  bootScripts(vm, raw) {
    if (this.runFile(vm, "boot.py")) return this.afterSystemExit();
    if (!raw) {
      if (this.runFile(vm, "main.py")) return this.afterSystemExit();
      if (vm.program) return; // the firmware runs; the REPL comes when it ends
    }
    this.enterRepl(vm, raw);
  }

  // A soft reboot or hard reset: a fresh interpreter (a new worker, see runBoard) on the same flash. This one
  // mirrors its flash, gets its console bytes out (or hands them on) and stops taking input.
  reboot(kind, raw) {
    if (this.exiting) return;
    this.exiting = true;
    this.mode = "off";
    this.syncFlash();
    this.vm = null;
    this.console.flush();
    this.console.drain();
    clearTimeout(this.console.retry); // what could not go out is the next interpreter's to send, not this one's
    const pending = [...Buffer.concat(this.console.pending)];
    this.console.pending = [];
    this.console.pendingBytes = 0;
    this.console.close();
    parentPort.postMessage({ type: "reboot", boot: { kind, raw, input: this.replQueue, pending } });
  }

  shutdown(code, info) {
    if (this.exiting) return;
    this.exiting = true;
    try { this.syncFlash(); this.console.flush(); this.console.drain(); } catch (e) { /* best effort */ }
    if (info) status(info);
    parentPort.postMessage({ type: "exit", code });
  }

  syncFlash() {
    const vm = this.vm;
    if (vm === null || !vm.dirty) return;
    this.flash.sync(vm.mp.FS); // throws: still dirty, tried again at the next console write or second
    vm.dirty = false;
  }

  // -- the interpreter ------------------------------------------------------------------------------------------
  io(vm) {
    const epoch = this.spec.epoch_ms;
    const live = () => vm === this.vm && !this.interrupting;
    return {
      // the program's console input as hex ("" if none); null once Ctrl-C asked it to stop
      read: () => {
        if (!live()) return null;
        if (!this.programInput.length) return "";
        const data = Buffer.from(this.programInput);
        this.programInput.length = 0;
        return data.toString("hex");
      },
      // ms since the emulation's epoch; -1 once the program must stop (Ctrl-C, or a reboot is under way)
      clock_ms: () => (live() ? Math.floor(performance.timeOrigin + performance.now() - epoch) : -1),
      led: (on) => this.console.note(on ? "[led on]\n" : "[led off]\n"),
      dropped: () => this.console.dropped,
      flash_changed: () => { vm.dirty = true; },
      flash_used_blocks: (block) => this.flash.usedBlocks(vm.mp.FS, block),
      // rename within the flash (paths absolute on the flash); 0 or emscripten's errno
      flash_rename: (from, to) => {
        try { vm.mp.FS.rename(FLASH_MEM + from, FLASH_MEM + to); } catch (e) { return e.errno || 29; }
        return 0;
      },
      reset: (kind) => { if (vm === this.vm) this.resetRequest = kind; },
      reset_cause: () => this.resetCause,
      unique_id: () => this.spec.unique_id || "",
      // main.py's asyncio.run started the program / the program's task ended ("" or the exception's type). The
      // ROM calls these from inside the VM; the board acts once the VM has returned.
      program_started: () => this.startProgram(vm),
      program_ended: (error) => { setImmediate(() => this.programEnded(vm, String(error || ""))); },
    };
  }

  async newVM() {
    const vm = { mp: null, rom: null, dirty: false, mute: false, skip: 0, program: false, bleDispatch: null };
    const out = (b) => {
      if (vm !== this.vm || vm.mute) return;
      if (vm.skip > 0) {
        const n = Math.min(vm.skip, b.length);
        vm.skip -= n;
        b = b.subarray(n);
      }
      if (b.length) this.console.put(b);
    };
    vm.mp = await loadMicroPython({ heapsize: this.heap, linebuffer: false, stdout: out, stderr: out });
    const FS = vm.mp.FS;
    install(FS, ROM_MEM, this.rom);
    installEncoded(FS, this.spec.files);
    this.flash.load(FS);
    vm.mp.registerJsModule("emu_io", this.io(vm));
    if (this.radio !== null) vm.mp.registerJsModule("emu_ble", this.radio.module());
    this.vm = vm;
    vm.mp.runPython(
      "import sys\nsys.path[:] = ['/rom', '.frozen']\nimport tools.emulation.rom\n" +
      `tools.emulation.rom.boot(${JSON.stringify(this.spec.plan || "/emu/plan.json")}, ${this.spec.flash_bytes | 0})\n` +
      "del sys, tools\n",
    );
    vm.rom = vm.mp.pyimport("tools.emulation.rom");
    if (this.radio !== null) vm.bleDispatch = vm.rom.ble_dispatch; // looked up once: a lookup allocates in the VM
    return vm;
  }

  // Run boot.py / main.py from the flash; a SystemExit (machine.reset / soft_reset) is a reset: true then.
  runFile(vm, name) {
    try {
      vm.rom.run_file(name);
    } catch (e) {
      if (e.name === "PythonError" && e.type === "SystemExit") return true;
      this.console.text(e.name === "PythonError" ? e.message : String(e) + "\n");
    }
    return false;
  }

  afterSystemExit() {
    const kind = this.resetRequest || "soft";
    this.resetRequest = null;
    return this.reboot(kind, false);
  }

  enterRepl(vm, raw) {
    vm.mute = raw;
    vm.mp.replInit();
    vm.mute = false;
    this.mode = "repl";
    this.raw = false;
    if (raw) this.replQueue.unshift(CTRL_A);
    this.pump();
  }

  // -- the program (main.py's asyncio.run: tools/emulation/rom.py) ---------------------------------------------
  startProgram(vm) {
    if (vm !== this.vm || vm.program) return;
    vm.program = true;
    this.mode = "program";
    status({ event: "program", running: true });
    const queued = this.replQueue;
    this.replQueue = [];
    this.input(queued); // what arrived while booting: the program's (or, after a Ctrl-C, the REPL's)
  }

  // The program's task ended (the ROM has printed its traceback and stopped the VM's event loop): SystemExit is
  // a reset; anything else leaves the board at the friendly REPL, in the same interpreter, as on a board.
  programEnded(vm, error) {
    if (vm !== this.vm || !vm.program) return;
    vm.program = false;
    clearTimeout(this.backstop);
    this.interrupting = false;
    if (error === "SystemExit") return this.afterSystemExit();
    status({ event: "program", running: false, ok: !error, error });
    this.enterRepl(vm, false);
  }

  interrupt() {
    const vm = this.vm;
    if (this.mode !== "program" || this.interrupting || vm === null) return;
    this.interrupting = true;
    this.backstop = setTimeout(() => {
      if (vm !== this.vm || !vm.program) return;
      vm.rom.stop_program();
      this.console.text("KeyboardInterrupt: (the program touched no hardware for a second: stopped by the board)\n");
      this.programEnded(vm, "KeyboardInterrupt");
    }, BACKSTOP_MS);
  }

  // -- console input --------------------------------------------------------------------------------------------
  poll() {
    if (this.exiting) return;
    let data;
    while ((data = this.console.read()) !== null) this.input(data);
    if (this.radio !== null) {
      this.radio.read();
      this.dispatchRadio();
    }
  }

  // The radio's events to the program's IRQ handler: only while the program runs (the VM is idle between two steps
  // of its event loop; at the REPL, or while a Ctrl-C stops the program, they wait).
  dispatchRadio() {
    const vm = this.vm;
    if (vm === null || !vm.program || this.mode !== "program" || this.interrupting) return;
    if (!this.radio.synced || !this.radio.queue.length) return;
    try {
      vm.bleDispatch();
    } catch (e) {
      this.console.text((e.name === "PythonError" ? e.message : String((e && e.stack) || e)) + "\n");
    }
  }

  input(data) {
    for (const b of data) {
      if (this.mode === "program" && !this.interrupting) {
        if (b === CTRL_C) this.interrupt();
        else if (this.programInput.length < INPUT_MAX) this.programInput.push(b);
        else this.inputDropped++;
      } else if (this.replQueue.length < INPUT_MAX) this.replQueue.push(b);
      else this.inputDropped++;
    }
    if (this.mode === "repl") this.pump();
  }

  // Feed the REPL one byte at a time, in order; a reboot it asks for happens in between. Bytes that only add to
  // the raw REPL's line go in with the plain call; anything that may run code with the asyncified one.
  async pump() {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.mode === "repl" && this.replQueue.length) {
        const b = this.replQueue.shift();
        if (this.paste !== null) {
          await this.pasteByte(b);
          continue;
        }
        for (const c of this.raw ? this.rawFilter(b) : [b]) {
          if (!(await this.feed(c))) break;
        }
      }
    } finally {
      this.pumping = false;
    }
    if (this.mode === "repl" && this.replQueue.length) this.pump();
  }

  // One byte into the VM's REPL; false once it asked for a reboot.
  async feed(c) {
    const vm = this.vm;
    const r = this.raw && c !== CTRL_D ? vm.mp.replProcessChar(c) : await vm.mp.replProcessCharWithAsyncify(c);
    if (vm !== this.vm) return false;
    this.track(c);
    if (r & FORCED_EXIT) {
      const kind = this.resetRequest || "soft";
      this.resetRequest = null;
      this.reboot(kind, kind === "soft" && this.raw);
      return false;
    }
    return true;
  }

  track(c) {
    if (!this.raw) {
      if (c === CTRL_A) { this.raw = true; this.rawEmpty = true; }
      return;
    }
    if (c === CTRL_B) this.raw = false;
    else this.rawEmpty = c === CTRL_A || c === CTRL_C || c === CTRL_D;
  }

  // Raw REPL: a raw-paste request (Ctrl-E 'A' Ctrl-A at an empty line) never reaches the VM (its own raw-paste
  // reads stdin, which this VM cannot): the board answers it and takes the paste itself (pasteByte). Anything
  // else is fed as it came.
  rawFilter(b) {
    if (this.probe.length === 0 && !(this.rawEmpty && b === CTRL_E)) return [b];
    this.probe.push(b);
    const expect = [CTRL_E, 0x41, CTRL_A];
    const n = this.probe.length;
    if (this.probe[n - 1] !== expect[n - 1]) {
      const held = this.probe;
      this.probe = [];
      return held;
    }
    if (n < 3) return [];
    this.probe = [];
    this.paste = { data: [], window: 0, aborted: false };
    this.console.raw([0x52, 0x01, PASTE_WINDOW & 0xff, PASTE_WINDOW >> 8]); // "R\x01" + the window size (LE)
    return [];
  }

  // Raw-paste mode as MicroPython specifies it: the host sends at most a window of bytes ahead, the board grants
  // another window with \x01 as it takes them, \x04 ends the paste (acknowledged with \x04); the code then runs
  // as the raw REPL runs a line, without its "OK". A paste over PASTE_MAX is refused (\x04 at once, then the
  // error as the command's output); Ctrl-C abandons the paste (KeyboardInterrupt, as MicroPython's reader does).
  async pasteByte(b) {
    const paste = this.paste;
    if (b === CTRL_C) { // the host gave up (mpremote killed and started again): back to the raw REPL's empty line
      this.paste = null;
      this.console.raw([CTRL_D]);
      this.console.text("KeyboardInterrupt: \r\n");
      this.console.raw([CTRL_D, 0x3e]);
      return;
    }
    if (b !== CTRL_D) {
      if (paste.aborted) return;
      if (paste.data.length >= PASTE_MAX) {
        paste.aborted = true;
        this.console.raw([CTRL_D]);
        return;
      }
      paste.data.push(b);
      if (++paste.window === PASTE_WINDOW) {
        paste.window = 0;
        this.console.raw([CTRL_A]);
      }
      return;
    }
    this.paste = null;
    if (paste.aborted) {
      this.console.raw([CTRL_D]);
      this.console.text(`MemoryError: raw-paste larger than ${PASTE_MAX} bytes\r\n`);
      this.console.raw([CTRL_D, 0x3e]);
      return;
    }
    this.console.raw([CTRL_D]);
    const vm = this.vm;
    for (const c of paste.data) vm.mp.replProcessChar(c);
    vm.skip = 2; // the raw REPL's "OK"
    await this.feed(CTRL_D);
  }
}

// The board's process: one worker thread per interpreter. The npm loader keeps its interpreter in globals (one
// per JS realm), and an interpreter leaves timers behind; a reboot therefore ends the whole worker (terminate()
// stops everything it scheduled) and starts the next with what it handed on.
export async function runBoard(spec, romFiles, heapBytes) {
  let worker = null;
  let stopping = false;
  let radioGen = 0;
  const launch = (boot) => {
    if (spec.radio_fd != null) {
      radioGen += 1;
      radioReset(spec.radio_fd, radioGen);
      boot.radioGen = radioGen;
    }
    const w = new Worker(new URL(import.meta.url), { workerData: { spec, romFiles, heapBytes, boot } });
    worker = w;
    w.on("message", (m) => {
      if (m.type === "reboot") {
        worker = null;
        w.terminate().then(() => (stopping ? process.exit(0) : launch(m.boot)));
      } else if (m.type === "exit") {
        process.exit(m.code);
      }
    });
    w.on("error", (e) => {
      status({ event: "exit", ok: false, error: String((e && e.stack) || e) });
      process.exit(1);
    });
  };
  // SIGTERM / SIGINT / the host gone: the worker mirrors its flash and flushes its console, then the process ends.
  const stop = () => {
    if (stopping) return;
    stopping = true;
    if (worker !== null) worker.postMessage({ type: "shutdown" });
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  process.stdin.on("end", stop);
  process.stdin.on("error", stop);
  process.stdin.resume();
  launch({ kind: "power", raw: false, input: [], pending: [] });
}

if (!isMainThread && workerData && workerData.boot) {
  const { spec, romFiles, heapBytes, boot } = workerData;
  const board = new Board(spec, romFiles, heapBytes, boot);
  parentPort.on("message", (m) => { if (m.type === "shutdown") board.shutdown(0, null); });
  board.start();
}
