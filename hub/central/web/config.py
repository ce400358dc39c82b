"""``[web]`` of ``central.toml``: the central page and API as ``smartshelf central serve`` serves them.

The hub's ``[web]`` settings (``hub.config.web.parse_web``: host, port, tls, certificate, private_key, http_port,
threads, api_threads, the connection limits and timeouts; HTTPS by default, plain HTTP only on a loopback host), but
for the live-update ones (central has no live stream), and one of central's own:

```toml
[web]
host = "0.0.0.0"
port = 8443
tls = "auto"                 # the operator's certificate and private_key, or a self-signed pair generated in
                             # central-web.tls/ beside central.toml
offline_after_s = 900        # a hub silent for this long shows as "silent" (it sends a snapshot every few minutes)
```

The database is ``[database]`` of the same file (``hub.central.config``); the broker is not used by the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hub.central.config import CentralConfig, load_central_config
from hub.config.checks import FileChecks, read_toml
from hub.config.web import WEB_KEYS, WebConfig, parse_web

LIVE_KEYS = ("max_live_clients", "max_live_per_session", "max_live_per_user")
CENTRAL_KEYS = ("offline_after_s",)
KNOWN = tuple(k for k in WEB_KEYS if k not in LIVE_KEYS) + CENTRAL_KEYS
DEFAULT_OFFLINE_AFTER_S = 900.0


@dataclass(frozen=True, slots=True)
class CentralWebConfig:
    central: CentralConfig
    web: WebConfig
    offline_after_s: float = DEFAULT_OFFLINE_AFTER_S

    @property
    def self_signed_base(self) -> Path:
        """Where a generated certificate lives: ``central-web.tls/`` beside central.toml."""
        return self.central.path.with_name("central-web")


def load_web_config(path: Path | str) -> CentralWebConfig:
    """``central.toml`` with its ``[web]`` table (defaults when absent); ``ConfigError`` naming the setting."""
    path = Path(path)
    central = load_central_config(path)
    f = FileChecks(str(path))
    raw = read_toml(path, f.display).get("web", {})
    if not isinstance(raw, dict):
        raise f.fail("web", "must be a table ([web])")
    f.unknown(raw, KNOWN, "web.")
    offline = f.seconds("web.offline_after_s", raw.get("offline_after_s", DEFAULT_OFFLINE_AFTER_S))
    if offline < 10:
        raise f.fail("web.offline_after_s", f"must be at least 10 seconds, not {offline:g}")
    web = parse_web(f, {k: v for k, v in raw.items() if k not in CENTRAL_KEYS}, path.parent)
    return CentralWebConfig(central, web, offline)
