// Long-lived MicroPython (WebAssembly) worker for tests, benchmarks and emulated nodes.
//
// Protocol: one JSON object per line on stdin, one JSON object per line on stdout.
//   request  {"id": N, "code": "...", "fresh": true, "timeout_ms": 60000}
//   response {"id": N, "ok": true, "result": <JSON>, "stdout": "..."}
//            {"id": N, "ok": false, "error": {"type": "ValueError", "traceback": "..."}, "stdout": "..."}
// Every request with "fresh" (the default) runs in a new interpreter whose MEMFS holds the project's
// MicroPython-side packages under /lib, so no state leaks between tests; loading one takes a few ms.
// The code may use top-level `await`; it sets the global `result` to a JSON-serialisable value.
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

// Python-side wrapper: runs the request's code, captures the traceback with MicroPython's own
// sys.print_exception, and serialises `result` with MicroPython's json module.
const PRELUDE = `
import sys, io, json
if '/lib' not in sys.path:
    sys.path.append('/lib')
`;

function wrap(code) {
  const indented = code.split("\n").map((l) => "    " + l).join("\n");
  return `${PRELUDE}
result = None
__err = None
async def __body():
    global result
${indented.length ? indented.replace(/^/, "") : "    pass"}
    return result
try:
    __r = await __body()
    if __r is not None:
        result = __r
    __out = json.dumps({'ok': True, 'result': result})
except BaseException as __e:
    __buf = io.StringIO()
    sys.print_exception(__e, __buf)
    __out = json.dumps({'ok': False, 'error': {'type': type(__e).__name__, 'traceback': __buf.getvalue()}})
`;
}

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
    await mp.runPythonAsync(wrap(req.code));
    reply = JSON.parse(mp.globals.get("__out"));
  } catch (e) {
    // The wrapper catches Python exceptions; reaching here means the runtime itself failed
    // (syntax error in the wrapped code, fatal error, out of memory in the VM).
    reply = { ok: false, error: { type: e.type || e.name || "RuntimeError", traceback: String(e.message || e) } };
    current = null;
  }
  reply.id = req.id;
  reply.stdout = Buffer.concat(out).toString("utf8");
  return reply;
}

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
