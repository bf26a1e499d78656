"""The MQTT transport of the networked fabric: modules in separate processes (or hosts) through a real MQTT v5
broker (Mosquitto). The protocol — roles, topics, framing, the barrier, catch-up, the gate — is
:mod:`trexsim.fabric.protocol`'s; this module connects (credentials, TLS, last will), subscribes, publishes
framed payloads (QoS 0, or 1 for a participant's first publish on a topic, so that a refusal comes back) and
reads the socket (paho's network thread, or the calling thread once a process serves).
"""

from __future__ import annotations

import queue
import socket
import time
from urllib.parse import urlparse

from trexsim.errors import TrexsimError
from trexsim.fabric.messages import Goodbye
from trexsim.fabric.protocol import (  # noqa: F401 - the protocol's names, as they were importable from here
    _DECODER,
    _ENCODER,
    FABRIC_REJECT_REASONS,
    HELLO_BURST,
    HELLO_REFILL_S,
    ROLES,
    Gate,
    NetworkFabric,
    _Envelope,
    url_credentials,
)
from trexsim.fabric.gate import METER_CEILING_WH, account_members, participant_group

_Gate = Gate  # its name before the protocol had a module of its own
SESSION_TAKEN_OVER = 142  # MQTT v5 DISCONNECT reason code 0x8E


def parse_mqtt_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://[user:pass@]host:port`` (or ``mqtts://`` for TLS) -> (host, port, tls)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise TrexsimError(f"fabric URL {url!r}: expected mqtt://HOST:PORT or mqtts://HOST:PORT")
    tls = parsed.scheme == "mqtts"
    try:
        port = parsed.port or (8883 if tls else 1883)
    except ValueError:
        raise TrexsimError(f"fabric URL {url!r}: the port is not a number") from None
    return parsed.hostname, port, tls



class MqttFabric(NetworkFabric):
    """A fabric over an MQTT v5 broker. ``url`` like ``mqtt://127.0.0.1:1883`` or ``mqtts://user:pass@host:8883``.

    ``role``: what this process holds (see the module doc). ``account``: the name on its topics and, with
    a password, its broker user name (default: the role's name; required for ``participants``).
    ``participant_ids``: the roster, needed where the market runs (coordinator, market) to check who
    may speak for whom. ``timeout_s``: the longest wait for the broker or for an essential module;
    ``barrier_timeout_s``: how long a round waits for a participant process.
    """

    def __init__(self, url: str, namespace: str = "trexsim", *, role: str = "coordinator", account: str | None = None,
                 username: str | None = None, password: str | None = None, participant_ids: list[str] | None = None,
                 timeout_s: float = 30.0, barrier_timeout_s: float = 10.0, max_message_bytes: int = 1 << 20,
                 ca_file: str | None = None, client_id: str | None = None, roster_size: int = 0,
                 accounts: list[str] | None = None):
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        from paho.mqtt.subscribeoptions import SubscribeOptions

        if role not in ROLES:
            raise TrexsimError(f"fabric role {role!r}: expected one of {', '.join(ROLES)}")
        host, port, tls = parse_mqtt_url(url)
        url_user, url_password = url_credentials(url)
        username = username or url_user
        password = password if password is not None else url_password
        self._init_state(role, account, username, namespace, timeout_s, barrier_timeout_s, max_message_bytes, client_id,
                         participant_ids, roster_size, accounts)
        self._mqtt = mqtt
        self._taken_over = False  # another process logged in with this account: stop, never reconnect
        # a participant publishes at QoS 1 so that the broker's refusal ("Not authorized") comes back to it
        # in the PUBACK; the controller's and market's publishes go at QoS 0 (no PUBACK for each of the
        # ~100 messages of a round: their topics are theirs by the generated ACLs)
        self._publish_qos = 1 if role == "participants" else 0
        # topics the broker has accepted a QoS 1 publish on: later publishes there go at QoS 0 (the ACLs do
        # not change during a run, and each PUBACK was a wake-up of the participant process and broker work)
        self._confirmed_topics: set[str] = set()
        self._own_loop = False  # True once serve() runs the network in this thread (no paho thread)
        self._mid_topic: dict[int, str] = {}

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.sender, protocol=mqtt.MQTTv5)
        if username is not None or password is not None:
            client.username_pw_set(username or self.account, password)
        if tls:
            client.tls_set(ca_certs=ca_file)
        elif ca_file:
            raise TrexsimError(f"a CA file ({ca_file}) needs a TLS URL: mqtts://HOST:PORT")
        client.max_inflight_messages_set(1000)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        if role in ("participants", "market"):
            # the broker announces our departure if the connection drops (crash, kill, network)
            client.will_set(self._mqtt_topic_hello(), _ENCODER.encode(_Envelope(self.sender, -1, Goodbye(self.sender, self.account))), qos=1)
        self._client = client
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        try:
            client.connect(host, port, keepalive=30, clean_start=True, properties=props)
        except OSError as exc:
            raise TrexsimError(f"cannot reach the MQTT broker at {host}:{port}: {exc}") from None
        # every round is a chain of small dependent messages: Nagle's algorithm would hold each one
        # back waiting for an ACK (≈ 40 ms a message here; TREX-Core lost most of its speed to this)
        sock = client.socket()
        if sock is not None and hasattr(sock, "setsockopt"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.loop_start()
        if not self._connected.wait(self.timeout_s) or self._error:
            client.loop_stop()
            raise TrexsimError(f"MQTT broker at {host}:{port} refused the connection of {self.account!r}: "
                               f"{self._error or 'timed out'}")
        # deliveries at QoS 0: the broker sends each message once over the live TCP connection and
        # nobody acknowledges it (at QoS 1 every delivery cost the receiver a PUBACK and the broker
        # its bookkeeping; the barrier's acks, not MQTT's, tell the controller what arrived)
        subscriptions = [(t, SubscribeOptions(qos=0, noLocal=True)) for t in self._subscriptions()]
        client.subscribe(subscriptions)
        if not self._subscribed.wait(self.timeout_s) or self._error:
            client.loop_stop()
            raise TrexsimError(f"MQTT broker at {host}:{port} refused the subscriptions of {self.account!r} "
                               f"({', '.join(t for t, _ in subscriptions)}): {self._error or 'timed out'}")


    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._error = str(reason_code)
        elif self._subscribed.is_set():
            # a reconnect: a clean start left no subscriptions on the broker, so take them again
            from paho.mqtt.subscribeoptions import SubscribeOptions

            client.subscribe([(t, SubscribeOptions(qos=0, noLocal=True)) for t in self._subscriptions()])
        self._connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            self._error = ", ".join(failed)
        self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.disconnects += 1
        if reason_code == SESSION_TAKEN_OVER:
            # another process logged in with this account (the broker binds client ids to logins): that one is
            # the account's process now; reconnecting would cut it off in turn
            client._reconnect_on_failure = False
            self._taken_over = True
            self._error = (f"another connection logged in as {self.account!r} (the broker's client id is the login): "
                           "this process stops")
        elif reason_code.is_failure and self._error is None:  # keep the first reason (e.g. the CONNACK's)
            self._error = f"disconnected: {reason_code}"
        self._connected.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        topic = self._mid_topic.pop(mid, None)
        if topic is None:  # a QoS 0 publish
            return
        if reason_code.is_failure:  # MQTT v5: the broker says why (e.g. "Not authorized")
            self.refused_publishes.append((topic, str(reason_code)))
        else:
            self._confirmed_topics.add(topic)

    def _on_message(self, client, userdata, msg) -> None:
        self._inbox.put((msg.topic, msg.payload))

    def close(self) -> None:
        self._client.disconnect()
        if self._own_loop:
            self._client.loop(timeout=0.1)  # let the DISCONNECT out
        self._client.loop_stop()

    # ------------------------------------------------------------------ the network in this thread (serve)
    def _run_network_here(self) -> None:
        """Stop paho's network thread and read the socket in this one (serve, settle, wait_for_hellos, poll).

        Each message then costs the process one wake-up instead of two (paho's thread, then this one,
        through a queue), and each publish goes straight to the socket instead of waking paho's thread:
        with 50 processes on two cores those thread hand-overs were most of a round's time.
        """
        if not self._own_loop:
            self._client.loop_stop()
            self._own_loop = True

    def _take(self, timeout_s: float) -> tuple[str, bytes]:
        """The next (MQTT topic, payload), waiting up to ``timeout_s``; raises queue.Empty."""
        if not self._own_loop:
            return self._inbox.get(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        mqtt = self._mqtt
        polled = False
        while True:
            try:
                return self._inbox.get_nowait()
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0 and polled:
                raise queue.Empty
            polled = True  # the socket is read at least once, even with no time left
            rc = self._client.loop(timeout=min(max(left, 0.0), 1.0))
            if self._taken_over:
                raise TrexsimError(f"{self.account}: {self._error}")
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                # connection lost: retry as paho's thread would (the barrier takes us back when acks resume)
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
                try:
                    self._client.reconnect()
                except OSError:
                    pass

    # ------------------------------------------------------------------ sending
    def _transmit(self, topic: str, payload: bytes) -> None:
        qos = 0 if topic in self._confirmed_topics else self._publish_qos
        info = self._client.publish(topic, payload, qos=qos)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            raise TrexsimError(f"MQTT publish on {topic} failed: {self._mqtt.error_string(info.rc)}"
                               f"{': ' + self._error if self._error else ''}")
        if qos:  # a QoS 0 publish has no PUBACK to tell a refusal by (and may be reported before this line)
            self._mid_topic[info.mid] = topic

    def _flush_network(self) -> None:
        if self._own_loop:
            self._client.loop(timeout=0.1)

    def _stop_round_start_broadcast(self) -> None:
        """Round starts come in bundles now: no wake-up for the broadcast copy."""
        self._client.unsubscribe(f"{self.ns}/sim/round_start")


__all__ = ["FABRIC_REJECT_REASONS", "HELLO_BURST", "HELLO_REFILL_S", "METER_CEILING_WH", "ROLES", "SESSION_TAKEN_OVER",
           "Gate", "MqttFabric", "NetworkFabric", "account_members", "parse_mqtt_url", "participant_group",
           "url_credentials", "_DECODER", "_ENCODER", "_Envelope", "_Gate"]
