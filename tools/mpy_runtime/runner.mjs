// Long-lived MicroPython (WebAssembly) worker for tests, benchmarks and emulated nodes.
//
// Request mode (default): one JSON object per line on stdin, one JSON object per line on stdout.
//   request  {"id": N, "code": "...", "fresh": true, "timeout_ms": 60000}
//   response {"id": N, "ok": true, "result": <JSON>, "stdout": "..."}
//            {"id": N, "ok": false, "error": {"type": "ValueError", "traceback": "..."}, "stdout": "..."}
// Every request with "fresh" (the default) runs in a new interpreter whose MEMFS holds the project's
// MicroPython-side packages under /lib, so no state leaks between tests; loading one takes a few ms.
// The code may use top-level `await`; it sets the global `result` to a JSON-serialisable value.
//
// Node mode (`--node`, spec in the JSON file named by MPY_NODE_SPEC_FILE): one interpreter runs one long-lived
// program (an emulated shelf node) and its console is bridged to a file descriptor (a pty master):
//   spec {"code": "...", "fd": N, "flash_dir": "/host/dir", "flash_root": "/flash", "files": {path: base64},
//         "epoch_ms": <wall-clock ms of time zero>, "log": "/host/node.log" | null, "max_pending": 65536}
// * Console out (print, sys.stdout.buffer.write) goes to fd N, as a board's console goes to USB. Writes are
//   non-blocking; bytes the other side does not take are held up to max_pending and dropped beyond (counted).
// * The Python side reads fd N through the registered module `emu_io`: read() returns the bytes available
//   now as hex ("" if none; never blocks), clock_ms() the milliseconds since epoch_ms (monotonic), led(on)
//   logs the LED.
// * flash_dir is copied into MEMFS at flash_root at start and mirrored back (changed files written with an
//   atomic rename, removed files removed) before any console bytes are written and every second, so the
//   host's copy is never older than what the node has sent. MEMFS has no hooks; this is the emulated flash.
// * The log file gets the console's text (frames, which lie between 0x00 bytes, are left out).
// * On stdout: {"event": "ready"} once the program runs, {"event": "exit", "ok": bool, "error": "..."} when it
//   ends. SIGTERM / SIGINT or the end of stdin (the host is gone) flush everything and exit.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";

const roots = JSON.parse(process.env.MPY_LIB_ROOTS || "[]"); // [[hostDir, packageName], ...]
const heapBytes = parseInt(process.env.MPY_HEAP_BYTES || String(8 * 1024 * 1024), 10);

function collect(hostDir, pkg) {
  const files = [];
  const walk = (dir, rel) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      if (entry.name.startsWith(".") || entry.name === "__pycache__") continue;
      const full = path.join(dir, entry.name);
      const relPath = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) walk(full, relPath);
      else if (/\.(py|json|hex|txt)$/.test(entry.name)) files.push([`${pkg}/${relPath}`, fs.readFileSync(full)]);
    }
  };
  walk(hostDir, "");
  return files;
}

const libFiles = roots.flatMap(([dir, pkg]) => collect(dir, pkg));

function mkdirs(FS, p) {
  let cur = "";
  for (const part of p.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}

// Each request's code runs at the interpreter's top level (module globals, top-level `await` allowed), so it
// reads exactly as a test wrote it. A Python exception comes back as a PythonError carrying MicroPython's own
// traceback; `result` is then serialised with MicroPython's json module.
const SETUP = "import sys\nif '/lib' not in sys.path:\n    sys.path.append('/lib')\nresult = None\n";
const SERIALISE = "import json as __json\n__out = __json.dumps(result)\n";

let current = null;

async function fresh() {
  const out = [];
  const mp = await loadMicroPython({
    heapsize: heapBytes,
    linebuffer: false,
    stdout: (b) => out.push(Buffer.from(b)),
    stderr: (b) => out.push(Buffer.from(b)),
  });
  for (const [rel, data] of libFiles) {
    const target = `/lib/${rel}`;
    mkdirs(mp.FS, path.posix.dirname(target));
    mp.FS.writeFile(target, data);
  }
  return { mp, out };
}

async function handle(req) {
  if (req.fresh !== false || current === null) current = await fresh();
  const { mp, out } = current;
  out.length = 0;
  for (const [p, b64] of Object.entries(req.files || {})) {
    mkdirs(mp.FS, path.posix.dirname(p));
    mp.FS.writeFile(p, Buffer.from(b64, "base64"));
  }
  let reply;
  try {
    mp.runPython(SETUP);
    await mp.runPythonAsync(req.code);
    mp.runPython(SERIALISE);
    const text = mp.globals.get("__out");
    try {
      reply = { ok: true, result: JSON.parse(text) };
    } catch (parseError) {
      // MicroPython's json writes the repr of objects it cannot serialise instead of raising.
      reply = { ok: false, error: { type: "TypeError", traceback: "result is not JSON-serialisable: " + text } };
    }
  } catch (e) {
    if (e.name === "PythonError") {
      reply = { ok: false, error: { type: e.type, traceback: String(e.message) } };
    } else {
      // The runtime itself failed (fatal error, out of memory in the VM): start a new interpreter next time.
      reply = { ok: false, error: { type: e.name || "RuntimeError", traceback: String(e.message || e) } };
      current = null;
    }
  }
  reply.id = req.id;
  reply.stdout = Buffer.concat(out).toString("utf8");
  return reply;
}

function requestMode() {
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  let chain = Promise.resolve();
  rl.on("line", (line) => {
    if (!line.trim()) return;
    chain = chain.then(async () => {
      let req;
      try { req = JSON.parse(line); } catch (e) {
        process.stdout.write(JSON.stringify({ id: null, ok: false, error: { type: "HarnessError", traceback: "bad request: " + e } }) + "\n");
        return;
      }
      const reply = await handle(req);
      process.stdout.write(JSON.stringify(reply) + "\n");
    });
  });
  rl.on("close", () => chain.then(() => process.exit(0)));
  process.stdout.write(JSON.stringify({ id: 0, ok: true, result: { ready: true, files: libFiles.length } }) + "\n");
}

function status(obj) {
  try { fs.writeSync(1, JSON.stringify(obj) + "\n"); } catch (e) { /* the host is gone */ }
}

function isDir(FS, p) {
  return FS.isDir(FS.stat(p).mode);
}

async function nodeMode(spec) {
  const fd = spec.fd;
  const root = spec.flash_root || "/flash";
  const flashDir = spec.flash_dir;
  const maxPending = spec.max_pending || 65536;
  const epoch = spec.epoch_ms;
  const log = spec.log ? fs.openSync(spec.log, "a") : null;
  let consoleBuf = [];
  let flushQueued = false;
  const pending = [];
  let pendingBytes = 0;
  let dropped = 0;
  let inFrame = false;
  let retryTimer = null;
  let exiting = false;

  const writeLog = (data) => {
    if (log === null) return;
    const text = [];
    for (const b of data) {
      if (b === 0) inFrame = !inFrame;
      else if (!inFrame) text.push(b);
    }
    if (text.length) { try { fs.writeSync(log, Buffer.from(text)); } catch (e) { /* disk full: keep running */ } }
  };

  const mp = await loadMicroPython({
    heapsize: heapBytes,
    linebuffer: false,
    stdout: (b) => { for (const x of b) consoleBuf.push(x); queueFlush(); },
    stderr: (b) => { for (const x of b) consoleBuf.push(x); queueFlush(); },
  });
  const FS = mp.FS;
  for (const [rel, data] of libFiles) {
    const target = `/lib/${rel}`;
    mkdirs(FS, path.posix.dirname(target));
    FS.writeFile(target, data);
  }
  for (const [p, b64] of Object.entries(spec.files || {})) {
    mkdirs(FS, path.posix.dirname(p));
    FS.writeFile(p, Buffer.from(b64, "base64"));
  }

  // The emulated flash: host directory <-> MEMFS.
  const synced = new Map();
  mkdirs(FS, root);
  if (flashDir) {
    const load = (hostDir, memDir, rel) => {
      for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
        if (entry.name.endsWith(".sync-tmp")) continue;
        const h = path.join(hostDir, entry.name);
        const m = `${memDir}/${entry.name}`;
        const r = rel ? `${rel}/${entry.name}` : entry.name;
        if (entry.isDirectory()) { mkdirs(FS, m); load(h, m, r); }
        else { const data = fs.readFileSync(h); FS.writeFile(m, data); synced.set(r, Buffer.from(data)); }
      }
    };
    fs.mkdirSync(flashDir, { recursive: true });
    load(flashDir, root, "");
  }
  const syncFlash = () => {
    if (!flashDir) return;
    const seen = new Set();
    const walk = (memDir, rel) => {
      for (const name of FS.readdir(memDir)) {
        if (name === "." || name === "..") continue;
        const m = `${memDir}/${name}`;
        const r = rel ? `${rel}/${name}` : name;
        if (isDir(FS, m)) { fs.mkdirSync(path.join(flashDir, r), { recursive: true }); walk(m, r); continue; }
        seen.add(r);
        const data = Buffer.from(FS.readFile(m));
        const prev = synced.get(r);
        if (prev !== undefined && prev.equals(data)) continue;
        const h = path.join(flashDir, r);
        fs.writeFileSync(h + ".sync-tmp", data);
        fs.renameSync(h + ".sync-tmp", h);
        synced.set(r, data);
      }
    };
    walk(root, "");
    for (const r of [...synced.keys()]) {
      if (!seen.has(r)) { try { fs.unlinkSync(path.join(flashDir, r)); } catch (e) { /* already gone */ } synced.delete(r); }
    }
  };

  const drain = () => {
    retryTimer = null;
    while (pending.length) {
      const buf = pending[0];
      let n;
      try { n = fs.writeSync(fd, buf); } catch (e) {
        if (e.code === "EAGAIN" || e.code === "EWOULDBLOCK") { retryTimer = setTimeout(drain, 20); return; }
        dropped += pendingBytes; pending.length = 0; pendingBytes = 0; return; // EIO: nobody can ever read it
      }
      pendingBytes -= n;
      if (n < buf.length) pending[0] = buf.subarray(n); else pending.shift();
    }
  };
  const flushConsole = () => {
    flushQueued = false;
    if (!consoleBuf.length) return;
    syncFlash(); // what the node stored reaches the host's disk before anything it sends
    const data = Buffer.from(consoleBuf);
    consoleBuf = [];
    writeLog(data);
    if (pendingBytes + data.length > maxPending) { dropped += data.length; return; }
    pending.push(data);
    pendingBytes += data.length;
    if (retryTimer === null) drain();
  };
  function queueFlush() {
    if (!flushQueued) { flushQueued = true; setImmediate(flushConsole); }
  }

  const readBuf = Buffer.alloc(4096);
  mp.registerJsModule("emu_io", {
    read: () => {
      let n = 0;
      try { n = fs.readSync(fd, readBuf, 0, readBuf.length, null); } catch (e) {
        if (e.code === "EAGAIN" || e.code === "EWOULDBLOCK" || e.code === "EIO") return "";
        throw e;
      }
      return readBuf.subarray(0, n).toString("hex");
    },
    clock_ms: () => Math.floor(performance.timeOrigin + performance.now() - epoch),
    led: (on) => { if (log !== null) fs.writeSync(log, on ? "[led on]\n" : "[led off]\n"); },
    dropped: () => dropped,
  });

  const shutdown = (code, info) => {
    if (exiting) return;
    exiting = true;
    try { flushConsole(); drain(); syncFlash(); } catch (e) { /* best effort */ }
    if (info) status(info);
    process.exit(code);
  };
  process.on("SIGTERM", () => shutdown(0, null));
  process.on("SIGINT", () => shutdown(0, null));
  process.stdin.on("end", () => shutdown(0, null));
  process.stdin.on("error", () => shutdown(0, null));
  process.stdin.resume();
  setInterval(() => { try { syncFlash(); } catch (e) { status({ event: "warning", error: String(e) }); } }, 1000);

  status({ event: "ready" });
  try {
    mp.runPython(SETUP);
    await mp.runPythonAsync(spec.code);
    shutdown(0, { event: "exit", ok: true, error: "" });
  } catch (e) {
    const err = String(e.message || e);
    if (e.name === "PythonError") {
      // As on a board: the traceback goes to the console (the pty), then the program has ended.
      try { mp.runPython("print(" + JSON.stringify(err) + ")"); } catch (printError) { /* console gone */ }
    }
    shutdown(1, { event: "exit", ok: false, error: err });
  }
}

if (process.argv.includes("--node")) {
  nodeMode(JSON.parse(fs.readFileSync(process.env.MPY_NODE_SPEC_FILE, "utf8"))).catch((e) => {
    status({ event: "exit", ok: false, error: String(e && e.stack || e) });
    process.exit(1);
  });
} else {
  requestMode();
}
