"""MLServer behind the guard under KServe: with the environment devmlops renders for the model container
(``core/render.py: MLSERVER_LOOPBACK_ENV``), a real MLServer (1.7.1, the version of the model-server image) opens
its HTTP, gRPC and metrics listeners on the loopback address only, so from the Pod network the guard is the only
way in. The control: told 0.0.0.0, the same server listens on every interface, which the check sees."""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path

import pytest

from devmlops.core.render import MLSERVER_LOOPBACK_ENV
from devmlops.harness.processes import free_port
from tests.support.modelservers import mlserver
from tests.unit.adapters.test_servingverify import guarded_plan, initializer

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp*
_PORTS = ("MLSERVER_HTTP_PORT", "MLSERVER_GRPC_PORT", "MLSERVER_METRICS_PORT")


def _address(hex_address: str) -> str:
    """A /proc/net/tcp{,6} local address (hex, host byte order per 32-bit word) as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words)


def loopback(address: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (gRPC listens on ::ffff:127.0.0.1)."""
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def listening_on(port: int) -> set[str]:
    """Every local address some socket listens on at ``port`` (IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == _LISTEN and int(hex_port, 16) == port:
                found.add(_address(address))
    return found


@pytest.mark.parametrize("host", ["as-rendered", "0.0.0.0"])  # noqa: S104 - the control
def test_mlserver_with_the_rendered_environment_listens_on_loopback_only(tmp_path: Path, host: str) -> None:
    env = dict(MLSERVER_LOOPBACK_ENV)
    assert env["MLSERVER_HOST"] == "127.0.0.1"
    env.update({name: str(free_port()) for name in _PORTS})  # the rendered ports may be taken on a shared machine
    if host != "as-rendered":
        env["MLSERVER_HOST"] = host
    with mlserver(tmp_path, env=env):
        found = {name: listening_on(int(env[name])) for name in _PORTS}
    assert all(found.values()), found  # every listener was seen
    only_loopback = {name: all(loopback(a) for a in addresses) for name, addresses in found.items()}
    assert only_loopback == dict.fromkeys(_PORTS, host == "as-rendered"), found


def test_a_settings_json_at_the_models_root_overrides_the_rendered_host(tmp_path: Path) -> None:
    """The residual docs/threat-model.md names, measured: MLServer reads settings.json in the folder it serves (under
    KServe, the model's own verified bytes) over its environment, so a signed model can open its server."""
    env = dict(MLSERVER_LOOPBACK_ENV)
    env.update({name: str(free_port()) for name in _PORTS})
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "settings.json").write_text('{"host": "0.0.0.0"}')
    with mlserver(tmp_path, env=env):
        found = {name: listening_on(int(env[name])) for name in _PORTS}
    assert all(found.values()), found
    assert not any(loopback(a) for addresses in found.values() for a in addresses), found


def test_the_storage_initializer_of_a_guarded_model_keeps_those_settings_from_mlserver(tmp_path: Path) -> None:
    """The fix where the bytes load: the same settings.json, now in a signed model, with the plan devmlops renders for
    a guarded KServe model, is refused by the real storage-initializer command before anything reaches the folder
    MLServer serves; MLServer on that folder listens on loopback only. The control: the plan of an unguarded model
    lets the file through (it is signed), and it lands where MLServer would read it."""
    files = {"model.joblib": b"weights", "settings.json": b'{"host": "0.0.0.0"}'}
    model, guarded = guarded_plan(tmp_path / "signed", files)
    refused = initializer(f"devmlops+file://{model}", tmp_path / "models", guarded)
    assert refused.returncode == 1
    assert "the model has a settings.json at its root" in refused.stderr
    assert not (tmp_path / "models" / "settings.json").exists()
    plain = json.dumps({k: v for k, v in json.loads(guarded).items() if k != "mlserverGuarded"})
    control = initializer(f"devmlops+file://{model}", tmp_path / "control" / "models", plain)
    assert control.returncode == 0, control.stderr
    assert (tmp_path / "control" / "models" / "settings.json").read_bytes() == files["settings.json"]
    env = dict(MLSERVER_LOOPBACK_ENV)
    env.update({name: str(free_port()) for name in _PORTS})
    with mlserver(tmp_path, env=env):
        found = {name: listening_on(int(env[name])) for name in _PORTS}
    assert all(found.values()), found
    assert all(loopback(a) for addresses in found.values() for a in addresses), found
