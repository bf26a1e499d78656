"""``trexsim broker``: a Mosquitto configuration with authentication and per-client ACLs from a simulation config.

:func:`write_broker_files` writes into one folder:

- ``mosquitto.conf``: a listener (127.0.0.1 by default), ``allow_anonymous false``, client ids bound to
  the login (``use_username_as_clientid true``), the password and ACL files, TCP_NODELAY on, no
  persistence, unlimited in-flight and a deep queue per client.
- ``passwd``: the participant accounts of the requested layouts (:func:`participant_accounts`: one per
  household, or one per group ``grp-<g>-of-<G>`` of a split into G processes), and ``coordinator``,
  ``controller``, ``market``, ``observer`` — hashed in Mosquitto's own
  PBKDF2-SHA512 format (``$7$``), so no ``mosquitto_passwd`` run is needed.
- ``acl``: per-account rules (see :func:`acl_rules`; docs/fabric.md, "Security model").
- ``credentials.json`` (mode 0600): URL, namespace and every account's password, for the modules.

Run as root, Mosquitto drops privileges to its own user before reading the password and ACL
files, so they are handed to that user (mode 0600) and the folder must be reachable by it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from trexsim.errors import TrexsimError
from trexsim.fabric import topics

DEFAULT_PORT = 1883
MAX_PACKET_BYTES = 8 << 20  # the broker's limit; the fabric refuses anything over its own (1 MiB) first


@dataclass
class BrokerFiles:
    directory: Path
    conf: Path
    passwd: Path
    acl: Path
    credentials: Path
    host: str
    port: int
    namespace: str
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def default_namespace(study_name: str) -> str:
    return f"trexsim/{study_name.replace(' ', '_')}"


def mosquitto_hash(password: str, iterations: int = 101) -> str:
    """A password line's hash as Mosquitto 2 writes it: ``$7$<iterations>$<salt b64>$<PBKDF2-SHA512 b64>``."""
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def participant_accounts(participant_ids: list[str], groups: list[int]) -> list[str]:
    """The participant accounts of the layouts asked for, and only those: accounts follow who holds each household.

    No ``groups``: one account per household (each household in its own process, ``trexsim node participant``).
    Each G in ``groups``: the G processes of a split into G contiguous groups, ``grp-<g>-of-<G>`` (a group of one
    household: the household's own id). A household in a group of several has no account of its own."""
    n = len(participant_ids)
    out: list[str] = []
    for n_groups in sorted({int(g) for g in groups if int(g) >= 1}) or [n]:
        bounds = [len(part) for part in _array_split(n, n_groups)]
        start = 0
        for g, size in enumerate(bounds):
            if size:
                account = participant_ids[start] if size == 1 else topics.group_account(g, n_groups)
                if account not in out:
                    out.append(account)
            start += size
    return out


def _array_split(n: int, parts: int) -> list[range]:
    """``numpy.array_split(range(n), parts)`` as ranges (the fabric's contiguous groups)."""
    size, extra = divmod(n, parts)
    out, start = [], 0
    for g in range(parts):
        length = size + (1 if g < extra else 0)
        out.append(range(start, start + length))
        start += length
    return out


def check_account_names(participant_ids: list[str]) -> None:
    for pid in participant_ids:
        bad = set(pid) & topics.FORBIDDEN_IN_ACCOUNT
        if bad or not pid or pid in topics.MODULE_ACCOUNTS or pid == "observer" or topics.parse_group_account(pid):
            raise TrexsimError(f"participant id {pid!r} cannot be an MQTT account: it must not contain '/', '+', '#' "
                               f"and must not be controller, market, coordinator, observer or grp-<g>-of-<G>")


def acl_rules(account: str, ns: str) -> list[str]:
    """The ACL lines of one account (``topic read|write|readwrite PATTERN``)."""
    if account == "coordinator":  # controller, grid, market and recorder in one process
        return [f"topic readwrite {ns}/#"]
    if account == "controller":
        return [f"topic write {ns}/sim/#", f"topic read {ns}/fabric/#", f"topic read {ns}/grid/#",
                f"topic write {ns}/p/+/settlements"]  # catch-up of a rejoining module
    if account == "market":  # market, grid and recorder
        return [f"topic read {ns}/sim/#", f"topic read {ns}/p/+/orders", f"topic read {ns}/p/+/meter",
                f"topic write {ns}/p/+/settlements", f"topic write {ns}/market/#", f"topic write {ns}/grid/#",
                f"topic write {ns}/fabric/hello/market", f"topic write {ns}/fabric/ack/market"]
    if account == "observer":  # public information only
        return [f"topic read {ns}/sim/#", f"topic read {ns}/grid/#", f"topic read {ns}/market/#"]
    return [f"topic write {ns}/p/{account}/orders", f"topic write {ns}/p/{account}/meter",
            f"topic write {ns}/p/{account}/round", f"topic write {ns}/p/{account}/tc_plan", f"topic read {ns}/tc/#",
            f"topic read {ns}/p/{account}/settlements", f"topic read {ns}/sim/#", f"topic read {ns}/grid/#",
            f"topic read {ns}/market/#", f"topic write {ns}/fabric/hello/{account}",
            f"topic write {ns}/fabric/ack/{account}"]


def write_broker_files(participant_ids: list[str], directory: str | Path, namespace: str, *, port: int = DEFAULT_PORT,
                       host: str = "127.0.0.1", groups: list[int] | tuple[int, ...] = (),
                       certfile: str | Path | None = None, keyfile: str | Path | None = None) -> BrokerFiles:
    """Write mosquitto.conf, passwd, acl and credentials.json for these participants into ``directory``.

    With ``certfile`` and ``keyfile`` (PEM) the listener speaks TLS (clients: ``mqtts://``); both are
    copied into ``directory`` so that mosquitto's own user can read them."""
    if (certfile is None) != (keyfile is None):
        raise TrexsimError("TLS needs both --certfile and --keyfile")
    check_account_names(participant_ids)
    directory = Path(directory).resolve()
    _check_reachable(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ns = namespace.rstrip("/")
    accounts = ["coordinator", "controller", "market", "observer"] + participant_accounts(participant_ids, list(groups))
    # passwords come from the operating system's generator, never from the simulation's seed: a
    # reproducible password would be a known one
    passwords = {a: secrets.token_urlsafe(18) for a in accounts}
    files = BrokerFiles(directory, directory / "mosquitto.conf", directory / "passwd", directory / "acl",
                        directory / "credentials.json", host, int(port), ns, tls=certfile is not None)
    tls_lines = []
    if certfile is not None:
        for source, name in ((certfile, "server-cert.pem"), (keyfile, "server-key.pem")):
            try:
                shutil.copyfile(source, directory / name)
            except OSError as exc:
                raise TrexsimError(f"cannot read {source}: {exc.strerror or exc}") from None
        tls_lines = [f"certfile {directory / 'server-cert.pem'}", f"keyfile {directory / 'server-key.pem'}"]
    files.passwd.write_text("".join(f"{a}:{mosquitto_hash(p)}\n" for a, p in passwords.items()))
    acl = ["# generated by trexsim broker: one block per account"]
    for a in accounts:
        acl.append(f"\nuser {a}")
        acl.extend(acl_rules(a, ns))
    files.acl.write_text("\n".join(acl) + "\n")
    files.conf.write_text("\n".join([
        "# generated by trexsim broker",
        "per_listener_settings false",
        f"listener {int(port)} {host}",
        *tls_lines,
        "allow_anonymous false",
        # the client id is the login: no account can take (and so cut off) another account's connection
        "use_username_as_clientid true",
        f"password_file {files.passwd}",
        f"acl_file {files.acl}",
        "persistence false",
        # every round is a chain of small dependent messages: no Nagle delay, no in-flight cap
        "set_tcp_nodelay true",
        "max_inflight_messages 0",
        "max_queued_messages 100000",
        f"max_packet_size {MAX_PACKET_BYTES}",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "",
    ]))
    with open(files.credentials, "w", opener=lambda path, flags: os.open(path, flags, 0o600)) as fh:
        json.dump({"url": files.url, "namespace": ns, "accounts": passwords}, fh, indent=2)
    os.chmod(files.credentials, 0o600)
    _hand_to_mosquitto_user(files)
    return files


def _hand_to_mosquitto_user(files: BrokerFiles) -> None:
    """Started as root, Mosquitto reads its password and ACL files as user ``mosquitto``: give them to it."""
    private = [files.passwd, files.acl] + ([files.directory / "server-key.pem", files.directory / "server-cert.pem"]
                                           if files.tls else [])
    for f in private:
        os.chmod(f, 0o600)
    os.chmod(files.conf, 0o644)
    if os.geteuid() != 0:
        return
    import pwd

    try:
        user = pwd.getpwnam("mosquitto")
    except KeyError:
        return  # no such user: mosquitto keeps running as root
    for f in private:
        os.chown(f, user.pw_uid, user.pw_gid)
    os.chmod(files.directory, os.stat(files.directory).st_mode | stat.S_IXOTH)


def _check_reachable(directory: Path) -> None:
    """As root, the folder must be reachable by the user mosquitto drops to (checked before anything is written)."""
    if os.geteuid() != 0:
        return
    for parent in directory.parents:
        if parent.exists() and not os.stat(parent).st_mode & stat.S_IXOTH:
            raise TrexsimError(f"mosquitto drops privileges to user 'mosquitto' and cannot reach {directory}: "
                               f"{parent} is not traversable by other users; choose --dir under a path it can reach "
                               f"(e.g. /tmp or /var/lib)")


def find_mosquitto() -> str:
    path = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
                                             if os.path.exists(p)), None)
    if path is None:
        raise TrexsimError("mosquitto is not installed (Debian/Ubuntu: apt-get install mosquitto)")
    return path


def start_broker(files: BrokerFiles, wait_s: float = 10.0, **popen) -> subprocess.Popen:
    """Start Mosquitto on ``files.conf`` and wait until it accepts connections."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.STDOUT)
    proc = subprocess.Popen([find_mosquitto(), "-c", str(files.conf)], **popen)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise TrexsimError(f"mosquitto stopped at start (exit {proc.returncode}): {output.strip()}")
        try:
            socket.create_connection((files.host, files.port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise TrexsimError(f"mosquitto did not accept connections on {files.host}:{files.port} within {wait_s} s")


def load_credentials(path: str | Path) -> dict:
    """Read a credentials.json written by ``trexsim broker``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrexsimError(f"cannot read credentials {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("accounts"), dict):
        raise TrexsimError(f"credentials {path}: expected {{url, namespace, accounts: {{name: password}}}}")
    return data


def account_password(credentials: dict, account: str, source: str = "credentials") -> str:
    try:
        return credentials["accounts"][account]
    except KeyError:
        raise TrexsimError(f"{source} hold no account {account!r} (trexsim broker --groups G adds the accounts "
                           f"of a split into G processes)") from None
