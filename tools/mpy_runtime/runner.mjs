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
// Node mode (`--node`): one emulated shelf-node board whose console is a pty; see board.mjs. MPY_LIB_ROOTS are then
// the board's ROM (the emulated hardware, outside its flash), MPY_NODE_SPEC_FILE names the board's spec.
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
import fs from "node:fs";
import readline from "node:readline";
import { runBoard } from "./board.mjs";
import { collect, install, installEncoded, SETUP } from "./vmfs.mjs";

const roots = JSON.parse(process.env.MPY_LIB_ROOTS || "[]"); // [[hostDir, packageName], ...]
const heapBytes = parseInt(process.env.MPY_HEAP_BYTES || String(8 * 1024 * 1024), 10);

const libFiles = collect(roots);

// Each request's code runs at the interpreter's top level (module globals, top-level `await` allowed), so it
// reads exactly as a test wrote it. A Python exception comes back as a PythonError carrying MicroPython's own
// traceback; `result` is then serialised with MicroPython's json module.
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
  install(mp.FS, "/lib", libFiles);
  return { mp, out };
}

async function handle(req) {
  if (req.fresh !== false || current === null) current = await fresh();
  const { mp, out } = current;
  out.length = 0;
  installEncoded(mp.FS, req.files);
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

if (process.argv.includes("--node")) {
  const spec = JSON.parse(fs.readFileSync(process.env.MPY_NODE_SPEC_FILE, "utf8"));
  runBoard(spec, libFiles, heapBytes).catch((e) => {
    try { fs.writeSync(1, JSON.stringify({ event: "exit", ok: false, error: String((e && e.stack) || e) }) + "\n"); } catch (w) { /* gone */ }
    process.exit(1);
  });
} else {
  requestMode();
}
