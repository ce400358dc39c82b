// What the request mode (runner.mjs) and the emulated board (board.mjs) share: the project's MicroPython-side
// packages read from the host once, and their copy into an interpreter's MEMFS.
import fs from "node:fs";
import path from "node:path";

// [[hostDir, packageName], ...] -> [[packageName/relative/path, Buffer], ...] (.py, .json, .hex, .txt files)
export function collect(roots) {
  const files = [];
  const walk = (dir, rel, pkg) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      if (entry.name.startsWith(".") || entry.name === "__pycache__") continue;
      const full = path.join(dir, entry.name);
      const relPath = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) walk(full, relPath, pkg);
      else if (/\.(py|json|hex|txt)$/.test(entry.name)) files.push([`${pkg}/${relPath}`, fs.readFileSync(full)]);
    }
  };
  for (const [dir, pkg] of roots) walk(dir, "", pkg);
  return files;
}

export function mkdirs(FS, p) {
  let cur = "";
  for (const part of p.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}

// Write collected files under `base` (e.g. "/lib") in an interpreter's MEMFS.
export function install(FS, base, files) {
  for (const [rel, data] of files) {
    const target = `${base}/${rel}`;
    mkdirs(FS, path.posix.dirname(target));
    FS.writeFile(target, data);
  }
}

// {path: base64} -> MEMFS files at those absolute paths.
export function installEncoded(FS, encoded) {
  for (const [p, b64] of Object.entries(encoded || {})) {
    mkdirs(FS, path.posix.dirname(p));
    FS.writeFile(p, Buffer.from(b64, "base64"));
  }
}

export const SETUP = "import sys\nif '/lib' not in sys.path:\n    sys.path.append('/lib')\nresult = None\n";
